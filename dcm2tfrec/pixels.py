"""The DICOM display pipeline as pure functions: modality LUT, VOI LUT / window, MONOCHROME1.

Every step is pydicom's own (``apply_modality_lut``, ``apply_voi_lut``, ``apply_windowing``,
``apply_color_lut``). The pipeline is per-pixel, so for integer images of up to 16 bits it is
evaluated once over every possible stored value and applied as a lookup table: exactly the same
result as running it on the image, at the cost of one table lookup per pixel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from pydicom.datadict import keyword_dict
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, apply_windowing

from .config import ImageSpec, Window
from .policy import VALUE_OFFSET_16

_FAR = 1e300
#: Header elements a lookup table depends on (besides the dtype and the ImageSpec).
_LUT_KEYWORDS = (
    "PhotometricInterpretation",
    "BitsStored",
    "BitsAllocated",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
)
_LUT_TAGS = tuple(keyword_dict[keyword] for keyword in _LUT_KEYWORDS)
_LUT_CACHE: dict[tuple[Any, ...], np.ndarray] = {}
_LUT_CACHE_SIZE = 64


def is_colour(pixels: np.ndarray, header: Dataset) -> bool:
    """Whether the decoded pixels are colour (RGB after pydicom's YBR conversion, or palette)."""
    return pixels.ndim == 3 or header.get("PhotometricInterpretation") == "PALETTE COLOR"


def is_inverted(header: Dataset) -> bool:
    """MONOCHROME1: low values are bright; we invert so that bright means dense everywhere."""
    return header.get("PhotometricInterpretation") == "MONOCHROME1"


def stored_range(header: Dataset) -> tuple[int, int]:
    """The range of stored values that BitsStored and PixelRepresentation allow."""
    bits = int(header.get("BitsStored") or header.get("BitsAllocated") or 16)
    if int(header.get("PixelRepresentation", 0) or 0):
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def modality_values(values: np.ndarray, header: Dataset) -> np.ndarray:
    """Stored values -> modality values (Modality LUT or RescaleSlope/Intercept), as float64."""
    return np.asarray(apply_modality_lut(values, header), dtype=np.float64)


def _voi_unit(values: np.ndarray, header: Dataset) -> np.ndarray:
    """Apply the file's first VOI LUT (preferred) or window; scale its output range to [0, 1]."""
    if "VOILUTSequence" in header:
        entries = np.rint(values).astype(np.int64)
        out = np.asarray(apply_voi_lut(entries, header, index=0, prefer_lut=True), dtype=np.float64)
        bits = int(header.VOILUTSequence[0].LUTDescriptor[2])
        return out / float(2**bits - 1)
    out = apply_windowing(values, header, index=0)
    with np.errstate(over="ignore"):
        lo, hi = apply_windowing(np.array([-_FAR, _FAR]), header, index=0)
    return (out - lo) / (hi - lo)


def _has_voi(header: Dataset) -> bool:
    return "VOILUTSequence" in header or ("WindowCenter" in header and "WindowWidth" in header)


def _fixed_window(header: Dataset, window: Window) -> Dataset:
    fixed = Dataset()
    for keyword in ("PhotometricInterpretation", "BitsStored", "PixelRepresentation"):
        setattr(fixed, keyword, header.get(keyword, "MONOCHROME2" if keyword[0] == "P" else 16))
    fixed.PixelRepresentation = int(fixed.PixelRepresentation or 0)
    fixed.WindowCenter, fixed.WindowWidth, fixed.VOILUTFunction = (
        window.center,
        window.width,
        "LINEAR",
    )
    if fixed.PhotometricInterpretation not in ("MONOCHROME1", "MONOCHROME2"):
        fixed.PhotometricInterpretation = "MONOCHROME2"
    return fixed


Histogram = Callable[[], np.ndarray]


def _percentiles(
    values: np.ndarray, histogram: Histogram | None, q: tuple[float, float]
) -> tuple[float, float]:
    """Percentiles ``q`` of ``values``, each weighted by ``histogram()`` when given."""
    if histogram is None:
        lo, hi = np.percentile(values, q)
        return float(lo), float(hi)
    counts = histogram()
    present = counts > 0
    vals, weights = values[present], counts[present]
    order = np.argsort(vals, kind="stable")
    vals, cum = vals[order], np.cumsum(weights[order])
    total = cum[-1]
    picks = [vals[min(np.searchsorted(cum, p / 100.0 * total, side="left"), len(vals) - 1)] for p in q]
    return float(picks[0]), float(picks[1])


def _linear_unit(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:
        return np.zeros_like(values)
    return np.clip((values - lo) / (hi - lo), 0.0, 1.0)


def grey_transform(
    values: np.ndarray, header: Dataset, spec: ImageSpec, histogram: Histogram | None = None
) -> np.ndarray:
    """Stored grey values -> output values (uint8 display, or uint16 modality + offset).

    ``histogram``, when given, returns the image's pixel counts over ``values`` (the LUT
    domain); without it ``values`` is the image itself. Only percentile/min-max windows call it.
    """
    modality = modality_values(values, header)
    if spec.bits == 16:
        if is_inverted(header):
            lo, hi = modality_values(np.array(stored_range(header)), header)
            modality = (lo + hi) - modality
        return np.clip(np.rint(modality) + VALUE_OFFSET_16, 0, 65535).astype(np.uint16)
    window = spec.window
    unit: np.ndarray | None = None
    if window.mode == "fixed":
        unit = _voi_unit(modality, _fixed_window(header, window))
    elif window.mode == "auto" and _has_voi(header):
        try:
            unit = _voi_unit(modality, header)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            unit = None  # unusable VOI attributes: use the documented fallback below
    if unit is None:
        q = spec.fallback_percentiles if window.mode == "auto" else (0.0, 100.0)
        unit = _linear_unit(modality, *_percentiles(modality, histogram, q))
    if is_inverted(header):
        unit = 1.0 - unit
    return np.rint(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8)


def colour_transform(pixels: np.ndarray, header: Dataset, spec: ImageSpec) -> np.ndarray:
    """Colour pixels (RGB, or palette indices) -> RGB uint8 or uint16 at full scale."""
    if header.get("PhotometricInterpretation") == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, header)
        bits = 16 if pixels.dtype.itemsize > 1 else 8
    else:
        bits = int(header.get("BitsStored") or 8)
    rgb = pixels.astype(np.float64) / float(2**bits - 1)
    top = 65535.0 if spec.bits == 16 else 255.0
    return np.rint(np.clip(rgb, 0.0, 1.0) * top).astype(np.uint16 if spec.bits == 16 else np.uint8)


def _stored_value(header: Dataset, tag: int) -> Any:
    """An element's value as it stands: still the file's raw bytes unless something has read it,
    so keying a table costs no value parsing (equal bytes under one encoding are equal values)."""
    element = header.get_item(tag)
    if element is None:
        return None
    value = element.value
    return tuple(value) if isinstance(value, MultiValue) else value


def _lut_key(dtype: np.dtype, header: Dataset, spec: ImageSpec) -> tuple[Any, ...] | None:
    """What a lookup table depends on, or None when a LUT sequence makes it not worth keying."""
    if "ModalityLUTSequence" in header or "VOILUTSequence" in header:
        return None
    values = tuple(_stored_value(header, tag) for tag in _LUT_TAGS)
    return (dtype.str, spec, header.original_encoding, values)


def _lookup_table(pixels: np.ndarray, index: np.ndarray, header: Dataset, spec: ImageSpec) -> np.ndarray:
    """The grey pipeline as a table over every value of the dtype (indexed by ``index``, the
    unsigned view of ``pixels``); cached unless it depends on the image.

    When the image lies within the range BitsStored allows, only that range is evaluated (4,096
    values for 12-bit data instead of 65,536) and the rest of the table, never looked up, is 0.
    """
    size = 2 ** (8 * pixels.dtype.itemsize)
    lo, hi = stored_range(header)
    narrow = hi - lo + 1 < size and lo <= int(pixels.min()) and int(pixels.max()) <= hi
    key = _lut_key(pixels.dtype, header, spec)
    key = None if key is None else (*key, narrow)
    if key is not None and key in _LUT_CACHE:
        return _LUT_CACHE[key]
    if narrow:
        values = np.arange(lo, hi + 1).astype(pixels.dtype)
    else:
        values = np.arange(size, dtype=index.dtype).view(pixels.dtype)
    positions = values.view(index.dtype)
    image_dependent = []

    def histogram() -> np.ndarray:
        image_dependent.append(True)
        return np.bincount(index.ravel(), minlength=size)[positions]

    table = grey_transform(values, header, spec, histogram)
    if narrow:
        lut = np.zeros(size, dtype=table.dtype)
        lut[positions] = table
    else:
        lut = table
    if key is not None and not image_dependent:
        if len(_LUT_CACHE) >= _LUT_CACHE_SIZE:
            _LUT_CACHE.clear()
        _LUT_CACHE[key] = lut
    return lut


def to_output(pixels: np.ndarray, header: Dataset, spec: ImageSpec) -> np.ndarray:
    """Decoded stored values -> the output intensities that get resized and PNG-encoded."""
    if is_colour(pixels, header):
        return colour_transform(pixels, header, spec)
    if pixels.dtype.kind in "iu" and pixels.dtype.itemsize <= 2:
        index = pixels.view(np.dtype(f"u{pixels.dtype.itemsize}"))
        return np.take(_lookup_table(pixels, index, header, spec), index)
    return grey_transform(pixels, header, spec)
