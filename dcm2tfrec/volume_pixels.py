"""A volume's pixels (``--volume``) as pure functions: one window for every slice, resampling along
the slice axis (linear in modality values, before the window), and the spacing after resizing."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator

import numpy as np
from pydicom.dataset import Dataset

from .config import ImageSpec, Window
from .image import place, scale, scaled_size
from .pixels import colour_transform, display, has_voi, is_colour, modality_values


def display_header(middle_pixels: np.ndarray, middle: Dataset, spec: ImageSpec) -> Dataset:
    """The header every slice's values are shown through, so that one volume has one window: the
    middle slice's own VOI (``--window auto``), else a LINEAR window over its modality values'
    fallback percentiles (``auto``) or min-max (``none``). A fixed window needs none of this."""
    if spec.bits == 16 or spec.window.mode == "fixed" or (spec.window.mode == "auto" and has_voi(middle)):
        return middle
    modality = modality_values(scale(middle_pixels, spec), middle)
    q = spec.fallback_percentiles if spec.window.mode == "auto" else (0.0, 100.0)
    lo, hi = (float(v) for v in np.percentile(modality, q))
    header = Dataset()
    for keyword in ("PhotometricInterpretation", "PresentationLUTShape", "BitsStored", "PixelRepresentation"):
        if keyword in middle:
            setattr(header, keyword, middle.get(keyword))
    header.WindowCenter, header.WindowWidth = (lo + hi) / 2 + 0.5, max(hi - lo, 0.0) + 1
    header.VOILUTFunction = "LINEAR"
    return header


def display_spec(spec: ImageSpec) -> ImageSpec:
    """The spec the slices are shown with: a fixed window as given, else the display header's."""
    return spec if spec.window.mode == "fixed" else dataclasses.replace(spec, window=Window())


def slice_values(pixels: np.ndarray, header: Dataset, spec: ImageSpec) -> np.ndarray:
    """A slice at its scaled size, in the values resampling interpolates: modality values (grey,
    with the slice's own rescale) or output intensities (colour)."""
    if is_colour(pixels, header):
        return scale(colour_transform(pixels, header, spec), spec).astype(np.float64)
    return modality_values(scale(pixels, spec), header)


def finish(values: np.ndarray, header: Dataset, spec: ImageSpec, colour: bool) -> np.ndarray:
    """Interpolated slice values -> the output slice (window, padding, channels)."""
    if colour:
        dtype = np.uint16 if spec.bits == 16 else np.uint8
        out = np.rint(np.clip(values, 0, np.iinfo(dtype).max)).astype(dtype)
    else:
        out = display(values, header, display_spec(spec))
    return place(out, spec)


def positions(count: int, depth: int) -> list[float]:
    """Where along ``count`` slices (0 .. count-1) each output slice lies: every slice for depth 0,
    else ``depth`` evenly spaced positions from the first slice to the last (the middle for one)."""
    if depth == 0:
        return [float(i) for i in range(count)]
    if depth == 1 or count == 1:
        return [(count - 1) / 2] * depth
    return [k * (count - 1) / (depth - 1) for k in range(depth)]


def resampled(values: Iterable[np.ndarray], count: int, depth: int) -> Iterator[np.ndarray]:
    """The output slices, each linear between its two neighbouring input slices, holding two
    input slices at a time (``values`` yields the ``count`` inputs in order)."""
    source = iter(values)
    before: np.ndarray | None = None
    after: np.ndarray | None = None
    index = -1  # the input slice ``after`` is
    for at in positions(count, depth):
        low = math.floor(at)
        high, weight = min(low + 1, count - 1), at - low
        while index < high:
            before, after = after, next(source)
            index += 1
        lower = after if low == index else before
        assert lower is not None and after is not None
        yield lower if weight == 0 else (1 - weight) * lower + weight * after


def output_spacing(
    gap: float, pixel_spacing: tuple[float, float], rows: int, cols: int, count: int, spec: ImageSpec
) -> list[float]:
    """Slice, row and column spacing (mm) of the output volume: the gap stretched by resampling,
    the pixel spacing by resizing (NaN where the files do not say)."""
    width, height = scaled_size(cols, rows, spec)
    if spec.depth == 0:
        slice_gap = gap
    elif spec.depth == 1 or count == 1:
        slice_gap = math.nan
    else:
        slice_gap = gap * (count - 1) / (spec.depth - 1)
    return [slice_gap, pixel_spacing[0] * rows / height, pixel_spacing[1] * cols / width]
