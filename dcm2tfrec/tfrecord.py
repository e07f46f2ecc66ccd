"""TFRecord framing: length, masked CRC32C of the length, data, masked CRC32C of the data."""

from __future__ import annotations

import contextlib
import gzip
import os
import struct
import zlib
from collections.abc import Iterator
from typing import BinaryIO

import google_crc32c

from .errors import ShardCorrupt

#: Bytes a record's framing adds to its data (8 length, 4 + 4 CRCs).
OVERHEAD = 16
_MASK_DELTA = 0xA282EAD8


def masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC32C."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(record: bytes) -> bytes:
    """One framed TFRecord."""
    length = struct.pack("<Q", len(record))
    return length + struct.pack("<I", masked_crc(length)) + record + struct.pack("<I", masked_crc(record))


#: The first bytes of a gzip stream: a shard written with ``--compression gzip``.
GZIP_MAGIC = b"\x1f\x8b"


@contextlib.contextmanager
def open_records(path: str, handle: BinaryIO | None = None) -> Iterator[BinaryIO]:
    """A shard (the file at ``path``, or ``handle``) to read records from: a gzip one through
    gzip, whose damage then surfaces as ShardCorrupt naming ``path``."""
    with contextlib.ExitStack() as stack:
        raw = handle if handle is not None else stack.enter_context(open(path, "rb"))
        start = raw.tell()
        magic = raw.read(2)
        raw.seek(start)
        if magic != GZIP_MAGIC:
            yield raw
            return
        unzipped = stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb"))
        try:
            yield unzipped  # type: ignore[misc]
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise ShardCorrupt(f"{path}: the gzip stream is damaged: {exc}") from None


def gzip_compressor() -> zlib._Compress:
    """The deterministic gzip stream of ``--compression gzip`` (no name, no time in the header)."""
    return zlib.compressobj(6, zlib.DEFLATED, 31)


def _size(handle: BinaryIO) -> int | None:
    if isinstance(handle, gzip.GzipFile):
        return None  # offsets are in the uncompressed stream: no file size bounds them
    try:
        return os.fstat(handle.fileno()).st_size
    except (AttributeError, OSError, ValueError):  # not a file: no bound to check against
        return None


def _header(handle: BinaryIO, name: str, index: int, size: int | None) -> tuple[int, int] | None:
    """The next record's (offset, data length), checked against its CRC and the bytes left; None
    at the end."""
    offset = handle.tell()
    head = handle.read(12)
    if not head:
        return None
    where = f"{name}: record {index} at byte {offset}"
    if len(head) < 12:
        raise ShardCorrupt(f"{where}: truncated length header")
    (length,) = struct.unpack("<Q", head[:8])
    if struct.unpack("<I", head[8:])[0] != masked_crc(head[:8]):
        raise ShardCorrupt(f"{where}: length CRC mismatch")
    if size is not None and offset + OVERHEAD + length > size:
        left = size - offset - 12
        raise ShardCorrupt(
            f"{where}: truncated record: it claims {length + 4} more bytes, the file holds {left}"
        )
    return offset, length


def iter_records(handle: BinaryIO, name: str) -> Iterator[tuple[int, bytes]]:
    """Yield ``(byte offset, record)`` for each record read from ``handle``, checking both CRCs and
    that no length claims more than the file holds; ShardCorrupt names ``name``, the record and its
    byte offset."""
    size, index = _size(handle), 0
    while (found := _header(handle, name, index, size)) is not None:
        offset, length = found
        body = handle.read(length + 4)
        if len(body) < length + 4:
            raise ShardCorrupt(f"{name}: record {index} at byte {offset}: truncated record")
        data = body[:length]
        if struct.unpack("<I", body[length:])[0] != masked_crc(data):
            raise ShardCorrupt(f"{name}: record {index} at byte {offset}: data CRC mismatch")
        yield offset, data
        index += 1


def count_records(handle: BinaryIO, name: str) -> int:
    """The number of records, from the framing alone (length CRCs and bounds; the data is skipped)."""
    size, index = _size(handle), 0
    while (found := _header(handle, name, index, size)) is not None:
        handle.seek(found[0] + OVERHEAD + found[1])
        index += 1
    return index


def index_text(offsets: list[tuple[int, int]]) -> str:
    """The index format of NVIDIA DALI and the ``tfrecord`` package: ``offset length`` per record,
    the length covering the whole framed record."""
    return "".join(f"{offset} {length}\n" for offset, length in offsets)
