"""Deflated Explicit VR Little Endian files are inflated within a budget before pydicom parses them.

pydicom inflates a deflated dataset whole, so a 1 MB file can become gigabytes before any header
check runs. :func:`check_inflation` streams the inflation first: it reads the header elements that
come before Pixel Data (at most :data:`HEADER_BUDGET` bytes), checks the declared image against
``--max-pixels``, and refuses a stream that inflates past what that image needs.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

from .errors import DicomError, Reason

DEFLATED = "1.2.840.10008.1.2.1.99"
#: The most the elements before Pixel Data may inflate to.
HEADER_BUDGET = 64 << 20
_CHUNK = 1 << 16
#: Pixel Data's tag and a VR of OB or OW, explicit VR little endian.
_PIXEL_DATA = (b"\xe0\x7f\x10\x00OB", b"\xe0\x7f\x10\x00OW")
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)


def deflated_start(path: Path) -> int | None:
    """The byte where a Deflated Explicit VR Little Endian file's dataset starts (after its File
    Meta Information), or None for any other file."""
    with open(path, "rb") as handle:
        if handle.read(132)[128:] != b"DICM":
            return None
        syntax = b""
        while True:
            start = handle.tell()
            head = handle.read(8)
            if len(head) < 8 or struct.unpack("<H", head[:2])[0] != 2:
                return start if syntax.rstrip(b"\0 ").decode("ascii", "replace") == DEFLATED else None
            vr = head[4:6]
            if vr in _LONG_VRS:
                length = struct.unpack("<I", handle.read(4))[0]
            else:
                length = struct.unpack("<H", head[6:8])[0]
            value = handle.read(min(length, 1 << 16))
            if head[:4] == b"\x02\x00\x10\x00":
                syntax = value
            handle.seek(start + 8 + (4 if vr in _LONG_VRS else 0) + length)


def _declared_bytes(header: bytes, max_pixels: int) -> int:
    """The pixel bytes the elements before Pixel Data declare; DicomError when over ``max_pixels``."""
    from pydicom.filereader import read_dataset

    ds = read_dataset(io.BytesIO(header), is_implicit_VR=False, is_little_endian=True)
    try:
        rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
        frames, samples = int(ds.get("NumberOfFrames") or 1), int(ds.get("SamplesPerPixel") or 1)
        bits = int(ds.get("BitsAllocated") or 16)
    except (TypeError, ValueError):
        return 0  # the header checks after parsing say what is wrong
    if rows * cols * frames > max_pixels:
        raise DicomError(
            Reason.TOO_LARGE,
            f"{rows} x {cols} x {frames} frame(s) exceeds --max-pixels {max_pixels}; not inflated or decoded",
        )
    return (rows * cols * frames * samples * max(bits, 1) + 7) // 8


def check_inflation(path: Path, max_pixels: int) -> None:
    """For a deflated file: refuse (DicomError) a header over ``max_pixels``, a header that inflates
    past :data:`HEADER_BUDGET`, or a dataset that inflates past twice the declared pixel bytes plus
    the header and 1 MiB. Memory stays at the header plus one chunk. Other files pass untouched."""
    start = deflated_start(path)
    if start is None:
        return
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    header: bytearray | None = bytearray()  # until Pixel Data is found
    budget, inflated = HEADER_BUDGET, 0
    with open(path, "rb") as handle:
        handle.seek(start)
        pending = b""
        while not inflater.eof:
            if not pending:
                pending = handle.read(_CHUNK)
                if not pending:
                    return
            try:
                data = inflater.decompress(pending, _CHUNK)
            except zlib.error:
                return  # damage: pydicom's own read reports it
            pending = inflater.unconsumed_tail
            inflated += len(data)
            if header is not None:
                searched = max(0, len(header) - 5)
                header += data
                found = [at for at in (header.find(tag, searched) for tag in _PIXEL_DATA) if at >= 0]
                if found:
                    budget = (
                        min(found)
                        + 12
                        + 2 * _declared_bytes(bytes(header[: min(found)]), max_pixels)
                        + (1 << 20)
                    )
                    header = None
            if inflated > budget:
                in_header = header is not None
                what = "a header may" if in_header else "the image its header declares can"
                raise DicomError(
                    Reason.TOO_LARGE if in_header else Reason.PIXEL_DATA_MISMATCH,
                    f"the deflated data inflates past {budget} bytes, more than {what} need; not decoded",
                )
