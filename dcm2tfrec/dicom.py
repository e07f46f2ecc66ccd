"""DICOM file -> stored pixel values plus the header facts the pixel pipeline needs.

One decoder is pinned per transfer syntax so results never depend on which other plugins
happen to be installed. Everything here is TensorFlow-free and safe to run in a worker.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom import uid
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import pixel_array

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

#: Header elements the pixel pipeline reads; everything else is dropped after decoding.
PIXEL_KEYWORDS = (
    "PhotometricInterpretation",
    "SamplesPerPixel",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "ModalityLUTSequence",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "VOILUTSequence",
    "RedPaletteColorLookupTableDescriptor",
    "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor",
    "RedPaletteColorLookupTableData",
    "GreenPaletteColorLookupTableData",
    "BluePaletteColorLookupTableData",
)


class DicomError(Exception):
    """A file that cannot become an image; ``reason`` is a category from config.REASONS."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class DicomImage:
    """Decoded stored values (rows x cols [x samples]) and the pixel-relevant header."""

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


def read_dicom(path: Path) -> DicomImage:
    """Read ``path`` and decode its first (only) frame with the pinned plugin."""
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
        pixels = pixel_array(ds, decoding_plugin=DECODING_PLUGINS[tsyntax])
    except Exception as exc:
        raise DicomError("decode_failed", f"{uid.UID(tsyntax).name}: {type(exc).__name__}: {exc}") from None
    header = Dataset()
    for keyword in PIXEL_KEYWORDS:
        if keyword in ds:
            setattr(header, keyword, ds[keyword].value)
    return DicomImage(pixels=pixels, header=header, transfer_syntax=tsyntax)
