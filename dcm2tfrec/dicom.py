"""DICOM file -> stored pixel values plus the header facts the pixel pipeline needs.

One decoder is pinned per transfer syntax so results never depend on which other plugins
happen to be installed. Everything here is TensorFlow-free and safe to run in a worker.
"""

from __future__ import annotations

import io
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom import uid
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.pixels import pixel_array

from .config import ImageSpec
from .image import scaled_size

log = logging.getLogger(__name__)

#: The pydicom decoding plugin used for each transfer syntax ("" = pydicom's own native decoder).
DECODING_PLUGINS: dict[str, str] = {
    uid.ImplicitVRLittleEndian: "",
    uid.ExplicitVRLittleEndian: "",
    uid.ExplicitVRBigEndian: "",
    uid.DeflatedExplicitVRLittleEndian: "",
    uid.RLELossless: "pylibjpeg",
    uid.JPEGBaseline8Bit: "gdcm",
    uid.JPEGExtended12Bit: "gdcm",
    uid.JPEGLossless: "gdcm",
    uid.JPEGLosslessSV1: "gdcm",
    uid.JPEGLSLossless: "pyjpegls",
    uid.JPEGLSNearLossless: "pyjpegls",
    uid.JPEG2000Lossless: "pylibjpeg",
    uid.JPEG2000: "pylibjpeg",
    uid.HTJ2KLossless: "pylibjpeg",
    uid.HTJ2KLosslessRPCL: "pylibjpeg",
    uid.HTJ2K: "pylibjpeg",
}

#: Transfer syntaxes whose codestreams carry lower resolution levels (reduced decoding).
MULTI_RESOLUTION = frozenset(
    {uid.JPEG2000Lossless, uid.JPEG2000, uid.HTJ2KLossless, uid.HTJ2KLosslessRPCL, uid.HTJ2K}
)
_J2K_COD, _J2K_SOT = b"\xff\x52", b"\xff\x90"


class DicomError(Exception):
    """A file that cannot become an image; ``reason`` is a category from config.REASONS."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class DicomImage:
    """Decoded stored values (rows x cols [x samples]) and the dataset they came from."""

    pixels: np.ndarray
    header: Dataset
    transfer_syntax: str


def resolve_path(image_root: Path, rel: str, allow_outside_root: bool) -> Path:
    """Resolve a CSV path under ``image_root``; raise DicomError if it escapes or is missing."""
    candidate = Path(rel)
    full = candidate if candidate.is_absolute() else image_root / candidate
    if not allow_outside_root:
        real, root = os.path.realpath(full), os.path.realpath(image_root)
        if os.path.commonpath([real, root]) != root:
            raise DicomError("outside_root", f"{rel!r} resolves to {real}, outside {root}")
    if not full.exists():
        detail = "dangling symlink or symlink loop" if full.is_symlink() else "no such file"
        raise DicomError("file_missing", f"{full}: {detail}")
    if not full.is_file():
        raise DicomError("not_a_file", f"{full} is not a regular file")
    return full


def read_dicom(path: Path, spec: ImageSpec | None = None) -> DicomImage:
    """Read ``path`` and decode its single frame (see :func:`decode_pixels`)."""
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError as exc:
        raise DicomError("not_dicom", f"not a DICOM file: {exc}") from None
    except (OSError, EOFError) as exc:
        raise DicomError("not_dicom", f"cannot read DICOM header: {exc}") from None
    except Exception as exc:
        raise DicomError("not_dicom", f"cannot parse DICOM header: {type(exc).__name__}: {exc}") from None
    if "PixelData" not in ds:
        raise DicomError("no_pixel_data", f"no Pixel Data element (SOP class {ds.get('SOPClassUID', '?')})")
    tsyntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", uid.ImplicitVRLittleEndian))
    if tsyntax not in DECODING_PLUGINS:
        name = uid.UID(tsyntax).name
        raise DicomError("unsupported", f"transfer syntax {name} ({tsyntax}) has no pinned decoder")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise DicomError(
            "unsupported", f"multi-frame image ({frames} frames); only single frames are converted"
        )
    try:
        pixels = decode_pixels(ds, spec)
    except Exception as exc:
        raise DicomError("decode_failed", f"{uid.UID(tsyntax).name}: {type(exc).__name__}: {exc}") from None
    del ds.PixelData
    return DicomImage(pixels=pixels, header=ds, transfer_syntax=tsyntax)


def decode_pixels(ds: Dataset, spec: ImageSpec | None = None) -> np.ndarray:
    """Decode the first frame with the pinned plugin.

    When ``spec`` allows it (not ``exact_decode``), an unsigned monochrome JPEG 2000 / HTJ2K
    frame is decoded only down to the coarsest resolution level that is still at least the
    size the image is resized to; anything unexpected falls back to the exact decode.
    """
    tsyntax = str(ds.file_meta.TransferSyntaxUID) if "TransferSyntaxUID" in ds.file_meta else ""
    if spec is not None and not spec.exact_decode and tsyntax in MULTI_RESOLUTION:
        try:
            reduced = _decode_reduced(ds, spec)
        except Exception as exc:  # a decoder's surprise costs speed, never correctness
            log.debug("reduced decoding failed (%s); decoding at full resolution", exc)
            reduced = None
        if reduced is not None:
            return reduced
    return pixel_array(ds, decoding_plugin=DECODING_PLUGINS.get(tsyntax, ""))


def _decomposition_levels(codestream: bytes) -> int:
    """Number of wavelet decomposition levels from the J2K main header's COD segment."""
    header_end = codestream.find(_J2K_SOT)
    cod = codestream.find(_J2K_COD, 0, header_end if header_end > 0 else None)
    if cod < 0:
        raise ValueError("no COD segment in the main header")
    return codestream[cod + 9]


def _decode_reduced(ds: Dataset, spec: ImageSpec) -> np.ndarray | None:
    """Reduced-resolution decode with Pillow's OpenJPEG, or None when it does not apply."""
    import openjpeg
    from PIL import Image

    if int(ds.get("SamplesPerPixel", 1)) != 1 or int(ds.get("PixelRepresentation", 0)) != 0:
        return None
    rows, cols = int(ds.Rows), int(ds.Columns)
    target_w, target_h = scaled_size(cols, rows, spec)
    codestream = next(generate_frames(ds.PixelData, number_of_frames=1))
    params = openjpeg.get_parameters(codestream)
    if (params["rows"], params["columns"]) != (rows, cols) or params["is_signed"]:
        return None
    levels = 0
    while (
        levels < _decomposition_levels(codestream)
        and math.ceil(cols / 2 ** (levels + 1)) >= target_w
        and math.ceil(rows / 2 ** (levels + 1)) >= target_h
    ):
        levels += 1
    if levels == 0:
        return None
    with Image.open(io.BytesIO(codestream)) as image:
        image.reduce = levels  # type: ignore[method-assign,assignment]  # Pillow's JPEG 2000 property
        image.load()
        pixels = np.asarray(image)
    shift = 8 * pixels.dtype.itemsize - int(params["precision"])
    return pixels >> shift if shift > 0 else pixels
