"""``--crop-foreground``: the box around an image's anatomy (pure), so that it fills the output.

The foreground is what lies above 10% of the way from the image's 1st to its 99th percentile of
stored values (shown bright: MONOCHROME1 and INVERSE images are flipped first), on a copy at most
256 pixels on its long side, opened with a 3x3 square to drop speckle; its largest 8-connected
component is the anatomy. Burnt-in labels in the corners are separate components and stay out;
the side of a mammogram without tissue falls away. A blank image, or one whose largest component
covers under 1% of it, is not cropped: the result is never an empty image.
"""

from __future__ import annotations

import cv2
import numpy as np
from pydicom.dataset import Dataset

from .pixels import is_inverted

#: The long side of the copy the foreground is found on.
WORK_SIDE = 256
#: Foreground: above this share of the way from the 1st to the 99th percentile.
THRESHOLD = 0.1
#: A largest component smaller than this share of the image means: do not crop.
MIN_AREA = 0.01

Box = tuple[int, int, int, int]  # (top, left, bottom, right) in source pixels, bottom/right exclusive


def foreground_box(pixels: np.ndarray, header: Dataset) -> Box | None:
    """The anatomy's bounding box in ``pixels`` (decoded stored values), or None: no crop."""
    grey = pixels.astype(np.float32) if pixels.ndim == 2 else pixels.astype(np.float32).mean(axis=2)
    rows, cols = grey.shape
    scale = min(1.0, WORK_SIDE / max(rows, cols))
    small = cv2.resize(
        grey, (max(1, round(cols * scale)), max(1, round(rows * scale))), interpolation=cv2.INTER_AREA
    )
    if is_inverted(header):
        small = small.max() - small
    lo, hi = (float(v) for v in np.percentile(small, (1, 99)))
    if hi - lo <= 1e-6:
        return None  # blank
    above = (small > lo + THRESHOLD * (hi - lo)).astype(np.uint8)
    foreground = cv2.morphologyEx(above, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(foreground, connectivity=8)
    if count <= 1:
        return None
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h, area = (int(v) for v in stats[largest])
    if area < MIN_AREA * small.size:
        return None
    ry, rx = rows / small.shape[0], cols / small.shape[1]
    top, left = max(0, int((y - 1) * ry)), max(0, int((x - 1) * rx))
    bottom, right = min(rows, int(np.ceil((y + h + 1) * ry))), min(cols, int(np.ceil((x + w + 1) * rx)))
    return top, left, bottom, right


def source_box(box: Box | None, decoded: tuple[int, int], source: tuple[int, int]) -> list[int]:
    """The box in the file's Rows x Columns (a reduced-resolution decode is smaller), as stored in
    the ``crop`` feature: [top, left, bottom, right]; the whole image when not cropped."""
    if box is None:
        return [0, 0, source[0], source[1]]
    fy, fx = source[0] / decoded[0], source[1] / decoded[1]
    top, left, bottom, right = box
    return [round(top * fy), round(left * fx), round(bottom * fy), round(right * fx)]
