"""The DICOM display pipeline as pure functions: modality LUT, VOI LUT / window, MONOCHROME1.

Every step is pydicom's own (``apply_modality_lut``, ``apply_voi_lut``, ``apply_windowing``,
``apply_color_lut``). The pipeline is per-pixel, so for integer images of up to 16 bits it is
evaluated once over every possible stored value and applied as a lookup table: exactly the same
result as running it on the image, at the cost of one table lookup per pixel.
"""

from __future__ import annotations

import math
import sys
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
    "PresentationLUTShape",
)
_LUT_TAGS = tuple(keyword_dict[keyword] for keyword in _LUT_KEYWORDS)
_LUT_CACHE: dict[tuple[Any, ...], np.ndarray] = {}
_LUT_CACHE_SIZE = 64


def is_colour(pixels: np.ndarray, header: Dataset) -> bool:
    """Whether the decoded pixels are colour (RGB after pydicom's YBR conversion, or palette)."""
    return pixels.ndim == 3 or header.get("PhotometricInterpretation") == "PALETTE COLOR"


def is_inverted(header: Dataset) -> bool:
    """Whether low values are shown bright, so that we invert to make bright mean dense everywhere:
    MONOCHROME1, or MONOCHROME2 with an INVERSE Presentation LUT Shape. (MONOCHROME1 images carry
    INVERSE as the standard asks for them, which is the same inversion, not a second one.)"""
    photometric = header.get("PhotometricInterpretation")
    shape = str(header.get("PresentationLUTShape") or "").strip().upper()
    return photometric == "MONOCHROME1" or (photometric == "MONOCHROME2" and shape == "INVERSE")


def _first_number(value: object) -> float | None:
    """The first value of a (possibly multi-valued) numeric element as a finite float, else None."""
    if isinstance(value, (list, tuple, MultiValue)):
        value = value[0] if len(value) else None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def stored_range(header: Dataset) -> tuple[int, int]:
    """The range of stored values that BitsStored and PixelRepresentation allow."""
    bits = int(header.get("BitsStored") or header.get("BitsAllocated") or 16)
    if int(header.get("PixelRepresentation", 0) or 0):
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def modality_values(values: np.ndarray, header: Dataset) -> np.ndarray:
    """Stored values -> modality values (Modality LUT or RescaleSlope/Intercept), as float64."""
    return np.asarray(apply_modality_lut(values, header), dtype=np.float64)


def _voi_lut_usable(header: Dataset) -> bool:
    """Whether the file's first VOI LUT has a descriptor and data (an empty sequence has neither)."""
    sequence = header.get("VOILUTSequence")
    if not sequence:
        return False
    item = sequence[0]
    return len(item.get("LUTDescriptor") or ()) == 3 and bool(item.get("LUTData"))


def _window_usable(header: Dataset) -> bool:
    """Whether the file's first window has a finite center and a finite width of at least 1."""
    center, width = _first_number(header.get("WindowCenter")), _first_number(header.get("WindowWidth"))
    return center is not None and width is not None and width >= 1


def _voi_unit(values: np.ndarray, header: Dataset) -> np.ndarray:
    """Apply the file's first VOI LUT (preferred) or window; scale its output range to [0, 1]."""
    if _voi_lut_usable(header):
        entries = np.rint(values).astype(np.int64)
        out = np.asarray(apply_voi_lut(entries, header, index=0, prefer_lut=True), dtype=np.float64)
        bits = int(header.VOILUTSequence[0].LUTDescriptor[2])
        return out / float(2**bits - 1)
    out = apply_windowing(values, header, index=0)
    with np.errstate(over="ignore"):
        lo, hi = apply_windowing(np.array([-_FAR, _FAR]), header, index=0)
    return (out - lo) / (hi - lo)


def has_voi(header: Dataset) -> bool:
    """Whether the header carries a usable VOI LUT or window."""
    return _voi_lut_usable(header) or _window_usable(header)


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
    return display(modality_values(values, header), header, spec, histogram)


def display(
    modality: np.ndarray, header: Dataset, spec: ImageSpec, histogram: Histogram | None = None
) -> np.ndarray:
    """Modality values -> output values: the window (``spec.window``, or the header's VOI, or the
    percentile fallback) and MONOCHROME1 inversion for 8 bits; value + offset for 16 bits."""
    if spec.bits == 16:
        if is_inverted(header):
            lo, hi = modality_values(np.array(stored_range(header)), header)
            modality = (lo + hi) - modality
        return np.clip(np.rint(modality) + VALUE_OFFSET_16, 0, 65535).astype(np.uint16)
    window = spec.window
    unit: np.ndarray | None = None
    if window.mode == "fixed":
        unit = _voi_unit(modality, _fixed_window(header, window))
    elif window.mode == "auto" and has_voi(header):
        try:
            unit = _voi_unit(modality, header)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            unit = None  # unusable VOI attributes: use the documented fallback below
        if unit is not None and not np.isfinite(unit).all():
            unit = None  # a VOI that gives no number for some values is no VOI either
    if unit is None:
        q = spec.fallback_percentiles if window.mode == "auto" else (0.0, 100.0)
        unit = _linear_unit(modality, *_percentiles(modality, histogram, q))
    if is_inverted(header):
        unit = 1.0 - unit
    return np.rint(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8)


def _native_palette(header: Dataset) -> Dataset:
    """The header, or its palette in this machine's byte order: pydicom reads 16-bit entries of
    non-segmented palette LUT Data in the machine's order, whatever the file's (a big-endian file
    then gives almost black images)."""
    little = header.original_encoding[1]
    native = little is None or little == (sys.byteorder == "little")
    if native or "RedPaletteColorLookupTableData" not in header:
        return header
    palette = Dataset()
    for colour in ("Red", "Green", "Blue", "Alpha"):
        descriptor, data = (f"{colour}PaletteColorLookupTable{part}" for part in ("Descriptor", "Data"))
        if descriptor not in header or data not in header:
            continue
        entries, values = int(header[descriptor].value[0]) or 65536, bytes(header[data].value)
        if len(values) == 2 * entries:
            values = np.frombuffer(values, ">u2" if not little else "<u2").astype("=u2").tobytes()
        setattr(palette, descriptor, header[descriptor].value)
        setattr(palette, data, values)
    return palette


def colour_transform(pixels: np.ndarray, header: Dataset, spec: ImageSpec) -> np.ndarray:
    """Colour pixels (RGB, or palette indices) -> RGB uint8 or uint16 at full scale."""
    if header.get("PhotometricInterpretation") == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, _native_palette(header))
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
