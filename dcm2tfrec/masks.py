"""Segmentation masks: read a mask file (PNG, NumPy .npy or single-frame DICOM) and give it the
geometry of its image, resized with nearest neighbour so that label values survive."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np

from .config import ImageSpec
from .errors import DicomError, MaskError
from .image import place, scaled_size

#: Contour files (``--mask-col``): one ``x y`` point per line, blank lines between polygons.
CONTOUR_SUFFIXES = (".txt",)


def read_contours(path: Path) -> list[np.ndarray]:
    """The polygons of a contour file (the i-contour format): ``x y`` per line in image pixel
    coordinates, polygons separated by blank lines; MaskError for anything else."""
    polygons: list[list[tuple[float, float]]] = [[]]
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise MaskError(f"cannot read {path.name} as a contour file: {exc}") from None
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            polygons.append([])
            continue
        try:
            x, y = (float(v) for v in fields)
        except ValueError:
            raise MaskError(f"{path.name} line {number}: expected 'x y', got {line.strip()!r}") from None
        if not (np.isfinite(x) and np.isfinite(y)):
            raise MaskError(f"{path.name} line {number}: the point is not finite")
        polygons[-1].append((x, y))
    found = [np.array(p, dtype=np.float64) for p in polygons if p]
    if not found or any(len(p) < 3 for p in found):
        raise MaskError(f"{path.name}: every polygon needs at least 3 points")
    return found


def fill_contours(polygons: list[np.ndarray], rows: int, cols: int, name: str) -> np.ndarray:
    """The polygons filled (label 1) with the even-odd rule at the image's resolution: a pixel is
    inside when a ray from its centre crosses the edges an odd number of times; MaskError for a
    point outside the image."""
    for polygon in polygons:
        outside = (
            (polygon[:, 0] < 0)
            | (polygon[:, 0] > cols - 1)
            | (polygon[:, 1] < 0)
            | (polygon[:, 1] > rows - 1)
        )
        if outside.any():
            px, py = polygon[int(np.argmax(outside))]
            raise MaskError(f"{name}: the point ({px:g}, {py:g}) lies outside the image of {rows} x {cols}")
    mask = np.zeros((rows, cols), np.uint8)
    centres = np.arange(cols, dtype=np.float64)
    for row in range(rows):
        crossings: list[float] = []
        for polygon in polygons:
            start, end = polygon, np.roll(polygon, -1, axis=0)
            spans = (np.minimum(start[:, 1], end[:, 1]) <= row) & (row < np.maximum(start[:, 1], end[:, 1]))
            a, b = start[spans], end[spans]
            crossings += list(a[:, 0] + (row - a[:, 1]) * (b[:, 0] - a[:, 0]) / (b[:, 1] - a[:, 1]))
        inside = np.zeros(cols, bool)
        for x in crossings:
            inside ^= centres >= x
        mask[row] = inside
    return mask


def read_mask(path: Path) -> np.ndarray:
    """A uint8 label image (labels 0..255) from a PNG, a ``.npy`` array or a DICOM file: 2-D, or
    (frames, rows, columns) for a multi-frame DICOM file or a 3-D array (one mask per frame)."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            mask = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise MaskError(f"cannot read {path.name} as a NumPy array: {exc}") from None
    elif suffix == ".png":
        mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if mask is None:
            raise MaskError(f"cannot read {path.name} as a PNG")
    else:
        from .dicom import iter_frames

        try:
            frames = [f.pixels for f in iter_frames(path, ImageSpec(frames="all", exact_decode=True))]
        except DicomError as exc:
            raise MaskError(f"{path.name}: {exc}") from None
        mask = np.stack(frames) if len(frames) > 1 else frames[0]
    if mask.ndim in (3, 4) and mask.shape[-1] in (3, 4) and (mask[..., :3] == mask[..., :1]).all():
        mask = mask[..., 0]
    if mask.ndim not in (2, 3) or (mask.ndim == 3 and mask.shape[-1] in (3, 4)):  # colour, not a stack
        raise MaskError(f"{path.name}: a mask must be one channel, this one has shape {mask.shape}")
    if mask.dtype == bool:
        mask = mask.astype(np.uint8)
    if mask.dtype.kind not in "ui" or mask.size == 0 or mask.min() < 0 or mask.max() > 255:
        raise MaskError(f"{path.name}: mask values must be integer labels 0..255 ({mask.dtype} given)")
    return mask.astype(np.uint8)


def frame_mask(mask: np.ndarray, frame: int, frames: int, name: str) -> np.ndarray:
    """The 2-D mask of frame ``frame`` (of ``frames``): a 2-D mask serves every frame, a stack of
    masks must have one per frame."""
    if mask.ndim == 2:
        return mask
    if mask.shape[0] != frames:
        raise MaskError(f"mask {name} has {mask.shape[0]} frames, the image {frames}")
    return mask[frame]


def fit_mask(mask: np.ndarray, decoded: tuple[int, int], spec: ImageSpec) -> np.ndarray:
    """Resize (nearest neighbour) and pad / crop ``mask`` exactly as the image, which was decoded
    at ``decoded`` (height, width), was: same scaled size, same placement; one channel."""
    height, width = decoded
    size = scaled_size(width, height, spec)
    scaled = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST_EXACT)
    return place(scaled, dataclasses.replace(spec, channels=1))


def empty_mask(spec: ImageSpec) -> np.ndarray:
    """The mask of a row without one: all zero, the output size."""
    return np.zeros((spec.height, spec.width, 1), dtype=np.uint8)
