"""DICOM file -> stored pixel values plus the header facts the pixel pipeline needs.

One decoder is pinned per transfer syntax so results never depend on which other plugins
happen to be installed. Everything here is TensorFlow-free and safe to run in a worker.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import math
import re
import struct
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom import uid
from pydicom.datadict import dictionary_VM, dictionary_VR, keyword_dict
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames, get_frame
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import pixel_array
from pydicom.pixels.utils import get_expected_length

from .config import ImageSpec
from .decoders import register
from .errors import DicomError, Reason, os_error_reason
from .image import scaled_size
from .inflate import check_inflation
from .pixels import stored_range
from .policy import decoding_plugins
from .records import FeatureKind, FeatureValue

log = logging.getLogger(__name__)
register()

#: Transfer syntaxes whose codestreams carry lower resolution levels (reduced decoding).
MULTI_RESOLUTION = frozenset(
    {uid.JPEG2000Lossless, uid.JPEG2000, uid.HTJ2KLossless, uid.HTJ2KLosslessRPCL, uid.HTJ2K}
)
_J2K_COD, _J2K_SOT = b"\xff\x52", b"\xff\x90"
_LITTLE_ENDIAN_NATIVE = frozenset({uid.ImplicitVRLittleEndian, uid.ExplicitVRLittleEndian})
_JPEG_FAMILY = frozenset(
    {
        uid.JPEGBaseline8Bit,
        uid.JPEGExtended12Bit,
        uid.JPEGLossless,
        uid.JPEGLosslessSV1,
        uid.JPEGLSLossless,
        uid.JPEGLSNearLossless,
    }
)
#: Start-of-frame markers (JPEG SOF0-15 but DHT/JPG/DAC, and JPEG-LS SOF55).
_SOF_MARKERS = frozenset({*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC} | {0xF7})
_SAMPLES = {
    "MONOCHROME1": 1,
    "MONOCHROME2": 1,
    "PALETTE COLOR": 1,
    "RGB": 3,
    "YBR_FULL": 3,
    "YBR_FULL_422": 3,
    "YBR_PARTIAL_420": 3,
    "YBR_ICT": 3,
    "YBR_RCT": 3,
}
_ENCODINGS = {  # (implicit VR, little endian) -> transfer syntax, for files without one
    (True, True): uid.ImplicitVRLittleEndian,
    (False, True): uid.ExplicitVRLittleEndian,
    (False, False): uid.ExplicitVRBigEndian,
}


@dataclass
class DicomImage:
    """One frame's decoded stored values (rows x cols [x samples]) and the dataset they came from
    (for an enhanced multi-frame file, with that frame's rescale and window at its top level)."""

    pixels: np.ndarray
    header: Dataset
    transfer_syntax: str
    #: The frame's 0-based index in the file, and the file's number of frames.
    frame: int = 0
    frames: int = 1
    #: ``--crop-foreground``: the box [top, left, bottom, right] (file pixels) ``pixels`` were cut to.
    crop: list[int] | None = None


def _not_dicom(path: Path) -> DicomError:
    size = path.stat().st_size
    if size < 132:
        return DicomError(Reason.NOT_DICOM, f"not a DICOM file: {size} bytes, too short for a DICOM header")
    return DicomError(
        Reason.NOT_DICOM,
        "not a DICOM file: no 'DICM' marker at byte 128, and its start does not read as a DICOM image",
    )


def read_dataset(path: Path, headers_only: bool = False, max_pixels: int | None = None) -> Dataset:
    """dcmread (without pixel data when ``headers_only``); a file without preamble is accepted
    only if it parses to an image dataset. A deflated file is inflated only within what
    ``max_pixels`` allows (see :mod:`.inflate`). Raises DicomError."""
    try:
        check_inflation(path, ImageSpec().max_pixels if max_pixels is None else max_pixels)
        ds = pydicom.dcmread(path, stop_before_pixels=headers_only)
    except InvalidDicomError:
        try:
            ds = pydicom.dcmread(path, force=True, stop_before_pixels=headers_only)
        except Exception:
            raise _not_dicom(path) from None
        if ("PixelData" not in ds and not headers_only) or "Rows" not in ds:
            raise _not_dicom(path) from None
    except DicomError:
        raise
    except EOFError as exc:
        raise DicomError(Reason.TRUNCATED, f"the DICOM header ends early: {exc}") from None
    except OSError as exc:
        raise DicomError(os_error_reason(exc), f"{exc.strerror or exc}") from None
    except Exception as exc:
        raise DicomError(
            Reason.NOT_DICOM, f"cannot parse the DICOM header: {type(exc).__name__}: {exc}"
        ) from None
    if "TransferSyntaxUID" not in ds.file_meta:
        encoding = _ENCODINGS.get(tuple(ds.original_encoding))  # type: ignore[arg-type]
        if encoding is None or ("PixelData" in ds and ds["PixelData"].is_undefined_length):
            raise DicomError(Reason.BAD_HEADER, "no Transfer Syntax UID, and the encoding cannot be inferred")
        ds.file_meta.TransferSyntaxUID = encoding
    return ds


def check_header(ds: Dataset, max_pixels: int, frames_mode: str = "reject") -> tuple[int, int, int]:
    """Validate the image attributes before decoding (``--max-pixels`` counts every frame; a
    multi-frame file is refused unless ``frames_mode`` takes frames); return (rows, columns, frames)."""
    try:
        rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
        frames = int(ds.get("NumberOfFrames") or 1)
        bits, samples = int(ds.get("BitsAllocated") or 0), int(ds.get("SamplesPerPixel") or 1)
        stored = int(ds.get("BitsStored") or bits)
        representation = int(ds.get("PixelRepresentation") or 0)
    except (TypeError, ValueError) as exc:
        raise DicomError(Reason.BAD_HEADER, f"unreadable image attributes: {exc}") from None
    if representation not in (0, 1):
        raise DicomError(Reason.BAD_HEADER, f"PixelRepresentation={representation} is neither 0 nor 1")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if rows < 1 or cols < 1:
        raise DicomError(Reason.BAD_HEADER, f"Rows={rows}, Columns={cols}: the image has no size")
    if bits not in (1, 8, 16, 32) or not 1 <= stored <= bits:
        raise DicomError(Reason.BAD_HEADER, f"BitsAllocated={bits}, BitsStored={stored} are not a valid pair")
    if photometric not in _SAMPLES:
        raise DicomError(Reason.UNSUPPORTED, f"PhotometricInterpretation {photometric!r} is not supported")
    if _SAMPLES[photometric] != samples:
        raise DicomError(Reason.BAD_HEADER, f"SamplesPerPixel={samples} contradicts {photometric}")
    _check_rescale(ds)
    if rows * cols * frames > max_pixels:
        raise DicomError(
            Reason.TOO_LARGE,
            f"{rows} x {cols} x {frames} frame(s) exceeds --max-pixels {max_pixels}; not decoded",
        )
    if frames < 1:
        raise DicomError(Reason.BAD_HEADER, f"NumberOfFrames={frames}: the image has no frame")
    if frames != 1 and frames_mode == "reject":
        raise DicomError(
            Reason.UNSUPPORTED,
            f"multi-frame image ({frames} frames): --frames first, middle or all converts it",
        )
    return rows, cols, frames


def _check_rescale(ds: Dataset) -> None:
    """RescaleSlope / RescaleIntercept, when present, must be finite numbers and the slope nonzero:
    anything else makes every modality value undefined or equal (an all-black record)."""
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        if keyword not in ds or ds[keyword].value in (None, ""):
            continue
        value = ds[keyword].value
        try:
            number = float(value[0] if isinstance(value, MultiValue) else value)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            raise DicomError(Reason.BAD_HEADER, f"{keyword} {value!r} is not a finite number")
        if keyword == "RescaleSlope" and number == 0:
            raise DicomError(Reason.BAD_HEADER, "RescaleSlope 0 maps every stored value to one value")


def check_pixel_data(
    ds: Dataset, tsyntax: str, rows: int, cols: int, frames: int = 1, index: int = 0
) -> None:
    """Compare the pixel data with the header: native length (of every frame), or the codestream's
    own header (of frame ``index``)."""
    element = ds["PixelData"]
    if not element.is_undefined_length:
        expected, actual = int(get_expected_length(ds, unit="bytes")), len(ds.PixelData)
        if actual < expected:
            raise DicomError(Reason.TRUNCATED, f"pixel data has {actual} bytes, the header needs {expected}")
        if actual >= 2 * expected:  # shorter excess is padding, which pydicom ignores too
            raise DicomError(
                Reason.PIXEL_DATA_MISMATCH,
                f"pixel data has {actual} bytes, the header declares {expected} "
                f"({actual / expected:.2f} frames' worth with NumberOfFrames {frames})",
            )
        return
    try:
        frame = encapsulated_frame(ds, index, frames)
    except Exception as exc:
        raise DicomError(
            Reason.TRUNCATED, f"encapsulated pixel data is damaged: {type(exc).__name__}: {exc}"
        ) from None
    size = codestream_size(frame, tsyntax)
    if size is not None and size != (rows, cols):
        raise DicomError(
            Reason.HEADER_MISMATCH, f"codestream is {size[0]} x {size[1]}, the header says {rows} x {cols}"
        )
    if tsyntax in _JPEG_FAMILY or tsyntax in MULTI_RESOLUTION:
        if not _unpadded_end(frame).endswith(b"\xff\xd9"):
            raise DicomError(Reason.TRUNCATED, "the codestream has no end marker (EOI/EOC)")
    elif tsyntax == uid.RLELossless:
        _check_rle(frame, ds)


def encapsulated_frame(ds: Dataset, index: int = 0, frames: int = 1) -> bytes:
    """Frame ``index`` of encapsulated pixel data (one fragment per frame, or the offset tables)."""
    if frames == 1:
        return next(generate_frames(ds.PixelData, number_of_frames=1))
    return get_frame(ds.PixelData, index, number_of_frames=frames)


def _unpadded_end(frame: bytes) -> bytes:
    """The end of a codestream without the pad bytes that may follow EOI/EOC (stripping only its
    last 4 KiB unless all of those are padding: no copy of a multi-megabyte frame)."""
    tail = frame[-4096:].rstrip(b"\x00\xff")
    return tail if tail or len(frame) <= 4096 else frame.rstrip(b"\x00\xff")


def codestream_size(frame: bytes, tsyntax: str) -> tuple[int, int] | None:
    """(rows, columns) from a JPEG / JPEG-LS SOF or a J2K SIZ marker; None when not found."""
    if tsyntax in MULTI_RESOLUTION and frame[:4] == b"\xff\x4f\xff\x51" and len(frame) >= 24:
        xsiz, ysiz, xosiz, yosiz = struct.unpack(">IIII", frame[8:24])
        return ysiz - yosiz, xsiz - xosiz
    if tsyntax in _JPEG_FAMILY and frame[:2] == b"\xff\xd8":
        pos = 2
        while pos + 9 <= len(frame):
            if frame[pos] != 0xFF:
                return None
            marker = frame[pos + 1]
            if marker == 0xFF:
                pos += 1
                continue
            if marker in _SOF_MARKERS:
                height, width = struct.unpack(">HH", frame[pos + 5 : pos + 9])
                return height, width
            pos += 2 + struct.unpack(">H", frame[pos + 2 : pos + 4])[0]
    return None


def _check_rle(frame: bytes, ds: Dataset) -> None:
    if len(frame) < 64:
        raise DicomError(Reason.TRUNCATED, "RLE frame shorter than its 64-byte header")
    header = struct.unpack("<16I", frame[:64])
    segments, offsets = header[0], [o for o in header[1 : 1 + header[0]]]
    expected = int(ds.get("SamplesPerPixel") or 1) * int(ds.BitsAllocated) // 8
    if segments != expected or not offsets or offsets[0] != 64:
        raise DicomError(
            Reason.DECODE_FAILED, f"RLE header declares {segments} segment(s), {expected} expected"
        )
    if any(b <= a for a, b in itertools.pairwise(offsets)) or offsets[-1] >= len(frame):
        raise DicomError(Reason.TRUNCATED, "RLE segment offsets run past the end of the frame")


#: At most this many distinct warnings are kept per file, each cut to this many characters.
MAX_WARNINGS, WARNING_CHARS = 8, 300
#: pydicom's pointer to the standard's VR table, which every value warning ends with.
_SEE_STANDARD = re.compile(r" Please see <[^>]*> for allowed values for each VR\.")


@contextlib.contextmanager
def reader_warnings() -> Iterator[list[str]]:
    """Collect what pydicom or a decoder warns of (Python warnings and pydicom's log) instead of
    printing it (over a progress bar); the list holds the distinct messages once the block ends."""

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            found.append(record.getMessage())

    found: list[str] = []
    logger = logging.getLogger("pydicom")
    handler, propagate = Keep(logging.WARNING), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield found
        found.extend(str(w.message) for w in caught)
        distinct = dict.fromkeys(_SEE_STANDARD.sub("", m)[:WARNING_CHARS] for m in found)
        found[:] = list(distinct)[:MAX_WARNINGS]
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def frame_indexes(frames: int, mode: str) -> range:
    """The frames a file gives under ``--frames`` ``mode``: all, the middle one (``frames // 2``),
    or the first."""
    if mode == "all":
        return range(frames)
    middle = frames // 2 if mode == "middle" else 0
    return range(middle, middle + 1)


def read_dicom(path: Path, spec: ImageSpec | None = None) -> DicomImage:
    """Read ``path``, check header and pixel data, and decode its frame (the first, or the middle
    one with ``--frames middle``); with ``--frames all``, use :func:`iter_frames`."""
    return next(iter_frames(path, spec))


def iter_frames(
    path: Path, spec: ImageSpec | None = None, indexes: Sequence[int] | None = None
) -> Iterator[DicomImage]:
    """Read ``path``, check its header, and decode the frames ``spec.frames`` takes (or those at
    ``indexes``, in that order), one at a time (a worker holds one decoded frame, never the file's).

    Warnings that pydicom or a decoder raise while reading or decoding are treated as damage.
    """
    spec = spec or ImageSpec()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = read_dataset(path, max_pixels=spec.max_pixels)
        ended_early = [str(w.message) for w in caught if "end of file" in str(w.message).lower()]
        if ended_early:
            raise DicomError(Reason.TRUNCATED, ended_early[0])
        if "PixelData" not in ds:
            floats = [k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds]
            if floats:
                raise DicomError(Reason.UNSUPPORTED, f"{floats[0]} (floating-point pixels) is not supported")
            if _meta_cut_short(path):
                raise DicomError(Reason.TRUNCATED, "the file ends inside its File Meta Information")
            if "SOPClassUID" not in ds:
                raise DicomError(Reason.NOT_DICOM, "no Pixel Data and no SOP Class UID: not a DICOM image")
            raise DicomError(Reason.NO_PIXEL_DATA, f"no Pixel Data element (SOP class {ds.SOPClassUID})")
        tsyntax = str(ds.file_meta.TransferSyntaxUID)
        if tsyntax not in decoding_plugins():
            name = uid.UID(tsyntax).name
            raise DicomError(Reason.UNSUPPORTED, f"transfer syntax {name} ({tsyntax}) has no pinned decoder")
        rows, cols, frames = check_header(ds, spec.max_pixels, spec.frames)
    _raise_damage(caught)
    for index in frame_indexes(frames, spec.frames) if indexes is None else indexes:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_pixel_data(ds, tsyntax, rows, cols, frames, index)
            try:
                pixels = decode_pixels(ds, spec, index, frames)
            except (KeyboardInterrupt, SystemExit, GeneratorExit):
                raise
            except BaseException as exc:  # also a Rust decoder's panic (pyo3's PanicException)
                where = f" frame {index}" if frames > 1 else ""
                raise DicomError(
                    Reason.DECODE_FAILED, f"{uid.UID(tsyntax).name}{where}: {type(exc).__name__}: {exc}"
                ) from None
        _raise_damage(caught)
        if pixels.shape[:2] != (rows, cols) and not _is_reduction(pixels.shape[:2], rows, cols):
            raise DicomError(
                Reason.HEADER_MISMATCH, f"decoded {pixels.shape}, the header says {rows} x {cols}"
            )
        yield DicomImage(pixels, frame_header(ds, index), tsyntax, index, frames)


def _raise_damage(caught: list[warnings.WarningMessage]) -> None:
    damage = [str(w.message) for w in caught if _is_damage(str(w.message))]
    if damage:
        raise DicomError(Reason.DECODE_FAILED, f"the reader reported damage: {damage[0]}")


#: Where an enhanced multi-frame file keeps what single-frame files have at the top level.
_FRAME_GROUPS = {
    "PixelValueTransformationSequence": ("RescaleSlope", "RescaleIntercept", "RescaleType"),
    "FrameVOILUTSequence": ("WindowCenter", "WindowWidth", "VOILUTFunction"),
}


def frame_header(ds: Dataset, index: int) -> Dataset:
    """The header the pixel pipeline reads for frame ``index``: for an enhanced multi-frame file,
    the shared and then that frame's functional groups' rescale and window copied to the top level
    (a copy of the header without its pixel data; other files: ``ds`` itself)."""
    groups = [
        g
        for key in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence")
        for g in _group(ds, key, index)
    ]
    if not groups:
        return ds
    header = Dataset({tag: element for tag, element in ds.items() if tag != 0x7FE00010})
    header.file_meta = ds.file_meta
    for group in groups:
        for sequence, keywords in _FRAME_GROUPS.items():
            items = group.get(sequence)
            if items:
                for keyword in keywords:
                    if keyword in items[0]:
                        setattr(header, keyword, items[0][keyword].value)
    return header


def _group(ds: Dataset, key: str, index: int) -> list[Dataset]:
    items = ds.get(key) or []
    if key == "SharedFunctionalGroupsSequence":
        return list(items[:1])
    return [items[index]] if index < len(items) else []


_DAMAGE_WORDS = ("end of file", "truncat", "delimiter", "excess", "corrupt", "premature")


def _meta_cut_short(path: Path) -> bool:
    """Whether a file with the DICM prefix ends before its File Meta group is complete."""
    with open(path, "rb") as handle:
        head = handle.read(144)
    if len(head) < 132 or head[128:132] != b"DICM":
        return False
    if len(head) < 144:
        return True
    if head[132:136] != b"\x02\x00\x00\x00":
        return False
    group_length = struct.unpack("<I", head[140:144])[0]
    return 144 + group_length > path.stat().st_size


def _is_reduction(shape: tuple[int, ...], rows: int, cols: int) -> bool:
    """Whether ``shape`` is ``rows`` x ``cols`` at some lower JPEG 2000 resolution level."""
    return any(shape == (math.ceil(rows / 2**r), math.ceil(cols / 2**r)) for r in range(1, 33))


def _is_damage(message: str) -> bool:
    """Whether a warning raised while reading or decoding signals damaged data (padding after the
    frame, which pydicom removes, is not damage: check_pixel_data has bounded it)."""
    low = message.lower()
    return "excess padding" not in low and any(word in low for word in _DAMAGE_WORDS)


def decode_pixels(ds: Dataset, spec: ImageSpec | None = None, index: int = 0, frames: int = 1) -> np.ndarray:
    """Decode frame ``index`` (of ``frames``) with the pinned plugin.

    When ``spec`` allows it (not ``exact_decode``), an unsigned monochrome JPEG 2000 / HTJ2K
    frame is decoded only down to the coarsest resolution level that is still at least the
    size the image is resized to; anything unexpected falls back to the exact decode.
    """
    tsyntax = str(ds.file_meta.TransferSyntaxUID) if "TransferSyntaxUID" in ds.file_meta else ""
    if spec is not None and not spec.exact_decode and tsyntax in MULTI_RESOLUTION:
        try:
            reduced = _decode_reduced(ds, spec, encapsulated_frame(ds, index, frames))
        except Exception as exc:  # a decoder's surprise costs speed, never correctness
            log.debug("reduced decoding failed (%s); decoding at full resolution", exc)
            reduced = None
        if reduced is not None:
            return reduced
    if not ds["PixelData"].is_undefined_length:
        return _decode_native(ds, tsyntax, index, frames)
    plugin = decoding_plugins().get(tsyntax, "")
    return pixel_array(ds, decoding_plugin=plugin, index=_frame_index(index, frames))


def _frame_index(index: int, frames: int) -> int | None:
    """pydicom's ``index``: None for a single-frame file (its one frame, as a 2D array)."""
    return index if frames > 1 else None


def _native_view(ds: Dataset, tsyntax: str, index: int = 0, frames: int = 1) -> np.ndarray:
    """Native pixel data as a zero-copy view. Little-endian single-sample 8/16-bit data (most CT,
    CR, DX, MR) is viewed directly: the same array as pydicom's ``view_only`` path without its
    per-call option handling (see the README's Performance section). Everything else goes through pydicom."""
    bits = int(ds.get("BitsAllocated") or 0)
    if tsyntax in _LITTLE_ENDIAN_NATIVE and bits in (8, 16) and int(ds.get("SamplesPerPixel") or 1) == 1:
        dtype = np.dtype(f"<{'i' if int(ds.get('PixelRepresentation') or 0) else 'u'}{bits // 8}")
        rows, cols = int(ds.Rows), int(ds.Columns)
        offset = index * rows * cols * dtype.itemsize
        return np.frombuffer(ds.PixelData, dtype, count=rows * cols, offset=offset).reshape(rows, cols)
    view = bits != 1  # bit-packed data cannot be a view
    return pixel_array(ds, view_only=view, correct_unused_bits=False, index=_frame_index(index, frames))


def _decode_native(ds: Dataset, tsyntax: str, index: int = 0, frames: int = 1) -> np.ndarray:
    """Native pixel data as a zero-copy view; pydicom's unused-bit correction (a full copy and
    two shifts) runs only when a value actually lies outside what BitsStored allows. Big-endian
    data is brought into this machine's byte order, so it takes the same path as its twin."""
    pixels = _native_view(ds, tsyntax, index, frames)
    if not pixels.dtype.isnative:
        pixels = pixels.astype(pixels.dtype.newbyteorder("="))
    bits_stored = int(ds.get("BitsStored") or 0)
    if pixels.ndim == 2 and pixels.dtype.kind in "iu" and bits_stored < 8 * pixels.dtype.itemsize:
        lo, hi = stored_range(ds)
        low, high, _, _ = cv2.minMaxLoc(pixels)
        if low < lo or high > hi:
            return pixel_array(ds, index=_frame_index(index, frames))
    return pixels


def _decomposition_levels(codestream: bytes) -> int:
    """Number of wavelet decomposition levels from the J2K main header's COD segment."""
    header_end = codestream.find(_J2K_SOT)
    cod = codestream.find(_J2K_COD, 0, header_end if header_end > 0 else None)
    if cod < 0:
        raise ValueError("no COD segment in the main header")
    return codestream[cod + 9]


def _decode_reduced(ds: Dataset, spec: ImageSpec, codestream: bytes) -> np.ndarray | None:
    """Reduced-resolution decode with Pillow's OpenJPEG, or None when it does not apply."""
    import openjpeg
    from PIL import Image, Jpeg2KImagePlugin  # noqa: F401  (named, so Pillow loads no other plugin)

    if int(ds.get("SamplesPerPixel", 1)) != 1 or int(ds.get("PixelRepresentation", 0)) != 0:
        return None
    rows, cols = int(ds.Rows), int(ds.Columns)
    target_w, target_h = scaled_size(cols, rows, spec)
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
    with Image.open(io.BytesIO(codestream), formats=["JPEG2000"]) as image:
        image.reduce = levels  # type: ignore[method-assign,assignment]  # Pillow's JPEG 2000 property
        image.load()
        pixels = np.asarray(image)
    shift = 8 * pixels.dtype.itemsize - int(params["precision"])
    return pixels >> shift if shift > 0 else pixels


_INT_VRS = frozenset({"IS", "SL", "SS", "UL", "US", "SV", "UV"})
_FLOAT_VRS = frozenset({"DS", "FL", "FD"})


def tag_kind(keyword: str) -> FeatureKind:
    """The feature kind of a DICOM keyword: int64 / float for single-valued numbers, else bytes.
    Raises ValueError for a keyword the DICOM dictionary does not know."""
    if not keyword_dict.get(keyword):
        raise ValueError(f"{keyword!r} is not a DICOM keyword (e.g. ViewPosition, InstanceNumber)")
    vr, vm = dictionary_VR(keyword), dictionary_VM(keyword)
    if vm == "1" and vr in _INT_VRS:
        return "int64"
    if vm == "1" and vr in _FLOAT_VRS:
        return "float"
    return "bytes"


_FLOAT32_MAX = 3.4028234663852886e38
_INT64 = (-(2**63), 2**63 - 1)


def tag_value(ds: Dataset, keyword: str, kind: FeatureKind) -> FeatureValue:
    """The value of ``keyword`` in ``ds`` as ``kind``. Missing, empty or unreadable as ``kind``
    (a malformed number, an integer beyond int64): -1, NaN or b""; a float beyond float32's range is
    stored as +-inf. One bad value never costs the image."""
    missing: FeatureValue = -1 if kind == "int64" else math.nan if kind == "float" else b""
    try:
        value = ds.get(keyword)
        if value is None or value == "":
            return missing
        if kind == "int64":
            number = int(value)
            return number if _INT64[0] <= number <= _INT64[1] else missing
        if kind == "float":
            real = float(value)
            return math.copysign(math.inf, real) if math.isfinite(real) and abs(real) > _FLOAT32_MAX else real
        return tag_text(ds, keyword).encode("utf-8")
    except (TypeError, ValueError, OverflowError, UnicodeError):
        return missing


def tag_text(ds: Dataset, keyword: str) -> str:
    """The value of ``keyword`` in ``ds`` as text: multiple values joined by ``\\``; missing: ""."""
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, (list, tuple, MultiValue)):
        return "\\".join(str(v) for v in value)
    return str(value)
