"""TFRecord framing: length, masked CRC32C of the length, data, masked CRC32C of the data."""

from __future__ import annotations

import struct
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


def iter_records(handle: BinaryIO, name: str) -> Iterator[tuple[int, bytes]]:
    """Yield ``(byte offset, record)`` for each record read from ``handle``, checking both CRCs;
    ShardCorrupt names ``name``, the record and its byte offset."""
    index = 0
    while True:
        offset = handle.tell()
        head = handle.read(12)
        if not head:
            return
        if len(head) < 12:
            raise ShardCorrupt(f"{name}: record {index} at byte {offset}: truncated length header")
        (length,) = struct.unpack("<Q", head[:8])
        if struct.unpack("<I", head[8:])[0] != masked_crc(head[:8]):
            raise ShardCorrupt(f"{name}: record {index} at byte {offset}: length CRC mismatch")
        body = handle.read(length + 4)
        if len(body) < length + 4:
            raise ShardCorrupt(f"{name}: record {index} at byte {offset}: truncated record")
        data = body[:length]
        if struct.unpack("<I", body[length:])[0] != masked_crc(data):
            raise ShardCorrupt(f"{name}: record {index} at byte {offset}: data CRC mismatch")
        yield offset, data
        index += 1


def index_text(offsets: list[tuple[int, int]]) -> str:
    """The index format of NVIDIA DALI and the ``tfrecord`` package: ``offset length`` per record,
    the length covering the whole framed record."""
    return "".join(f"{offset} {length}\n" for offset, length in offsets)
