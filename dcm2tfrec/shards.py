"""Shard naming, TFRecord framing with CRC32C, and the writer that publishes shards atomically.

A shard is written under a hidden temporary name, flushed, fsynced, re-read and checked against
the running SHA-256, and only then renamed to ``{prefix}-{index:05d}-{count}.tfrec``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import google_crc32c

from .config import OutputError
from .faults import fault_point

SHARD_SUFFIX = ".tfrec"
INDEX_SUFFIX = ".idx"
PARTIAL_SUFFIX = ".partial"
SHARD_NAME = re.compile(r"^(?P<prefix>.+)-(?P<index>[0-9]{5})-(?P<count>[0-9]+)\.tfrec$")
_MASK_DELTA = 0xA282EAD8
_CHUNK = 1 << 20


def shard_name(prefix: str, index: int, count: int) -> str:
    """``train-00003-1000.tfrec``: the Kaggle ``-([0-9]*)\\.`` regex reads the count."""
    return f"{prefix}-{index:05d}-{count}{SHARD_SUFFIX}"


def shard_prefix(shard: str) -> str:
    """The prefix (split or fold name) of a shard file name."""
    match = SHARD_NAME.match(shard)
    if not match:
        raise ValueError(f"{shard!r} is not a shard name")
    return match.group("prefix")


def index_name(shard: str) -> str:
    """The index file of a shard: ``train-00003-1000.idx`` next to ``train-00003-1000.tfrec``."""
    return shard.removesuffix(SHARD_SUFFIX) + INDEX_SUFFIX


def partial_name(prefix: str, index: int) -> str:
    """The hidden name a shard has while it is being written."""
    return f".{prefix}-{index:05d}{SHARD_SUFFIX}{PARTIAL_SUFFIX}"


def masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC32C."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(record: bytes) -> bytes:
    """One TFRecord: length, masked CRC of the length, data, masked CRC of the data."""
    length = struct.pack("<Q", len(record))
    return length + struct.pack("<I", masked_crc(length)) + record + struct.pack("<I", masked_crc(record))


class ShardCorrupt(Exception):
    """A shard's framing or CRC is wrong; the message names the file, record and byte offset."""


def iter_records(path: Path) -> Iterator[tuple[int, bytes]]:
    """Yield ``(byte offset, record)`` for each record of a TFRecord file, checking both CRCs."""
    with open(path, "rb") as handle:
        index = 0
        while True:
            offset = handle.tell()
            head = handle.read(12)
            if not head:
                return
            if len(head) < 12:
                raise ShardCorrupt(f"{path}: record {index} at byte {offset}: truncated length header")
            (length,) = struct.unpack("<Q", head[:8])
            if struct.unpack("<I", head[8:])[0] != masked_crc(head[:8]):
                raise ShardCorrupt(f"{path}: record {index} at byte {offset}: length CRC mismatch")
            body = handle.read(length + 4)
            if len(body) < length + 4:
                raise ShardCorrupt(f"{path}: record {index} at byte {offset}: truncated record")
            data = body[:length]
            if struct.unpack("<I", body[length:])[0] != masked_crc(data):
                raise ShardCorrupt(f"{path}: record {index} at byte {offset}: data CRC mismatch")
            yield offset, data
            index += 1


@dataclass(frozen=True)
class ShardInfo:
    """A published shard: file name, record count, size in bytes, SHA-256, index file if any."""

    file: str
    records: int
    bytes: int
    sha256: str
    index: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_synced(path: Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` through a fsynced hidden temporary file and a rename;
    raises OSError (the temporary file is removed)."""
    tmp = path.with_name(f".{path.name}{PARTIAL_SUFFIX}")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        fault_point("write", path.name)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def index_text(offsets: list[tuple[int, int]]) -> str:
    """The index format of NVIDIA DALI and the ``tfrecord`` package: ``offset length`` per record,
    the length covering the whole framed record."""
    return "".join(f"{offset} {length}\n" for offset, length in offsets)


class ShardWriter:
    """Writes framed records into numbered shards of exactly ``records_per_shard`` records.

    With ``write_index`` each shard also gets a DALI / ``tfrecord`` index file, published first.
    ``first_index`` numbers the first shard (a resumed run goes on after the kept shards).
    """

    def __init__(
        self,
        out_dir: Path,
        prefix: str,
        records_per_shard: int,
        write_index: bool = False,
        first_index: int = 0,
    ) -> None:
        self.out_dir = out_dir
        self.prefix = prefix
        self.records_per_shard = records_per_shard
        self.write_index = write_index
        self._offsets: list[tuple[int, int]] = []
        self.index = first_index
        self.published: list[ShardInfo] = []
        self._handle: BinaryIO | None = None
        self._digest = hashlib.sha256()
        self._count = 0
        self._bytes = 0

    @property
    def _partial(self) -> Path:
        return self.out_dir / partial_name(self.prefix, self.index)

    def write(self, record: bytes) -> None:
        """Append one record; publish the shard when it holds ``records_per_shard`` records."""
        data = frame(record)
        try:
            if self._handle is None:
                self._handle = open(self._partial, "wb")  # noqa: SIM115 (closed in _publish/abort)
            self._handle.write(data)
        except OSError as exc:
            self.abort()
            raise OutputError(f"writing {self._partial} failed: {exc.strerror or exc}") from exc
        self._digest.update(data)
        self._offsets.append((self._bytes, len(data)))
        self._count += 1
        self._bytes += len(data)
        if self._count == self.records_per_shard:
            self._publish()

    def _publish(self) -> None:
        assert self._handle is not None
        partial = self._partial
        final = self.out_dir / shard_name(self.prefix, self.index, self._count)
        try:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = None
            sha = self._digest.hexdigest()
            if partial.stat().st_size != self._bytes or file_sha256(partial) != sha:
                raise OSError(f"{partial} does not read back as written (size or SHA-256 differ)")
            index = index_name(final.name) if self.write_index else None
            if index:
                write_synced(self.out_dir / index, index_text(self._offsets))
            fault_point("publish", self.index)
            os.replace(partial, final)
            _fsync_dir(self.out_dir)
        except OSError as exc:
            self.abort()
            raise OutputError(f"publishing {final} failed: {exc.strerror or exc}") from exc
        self.published.append(ShardInfo(final.name, self._count, self._bytes, sha, index))
        self.index += 1
        self._reset()

    def _reset(self) -> None:
        self._digest = hashlib.sha256()
        self._offsets = []
        self._count = 0
        self._bytes = 0

    def close(self) -> list[ShardInfo]:
        """Publish the last, possibly smaller, shard and return every published shard."""
        if self._count:
            self._publish()
        return self.published

    def abort(self) -> None:
        """Drop the shard in progress (its temporary file); published shards stay."""
        if self._handle is not None:
            with contextlib.suppress(OSError):  # closing flushes, which fails again on a full disk
                self._handle.close()
            self._handle = None
        self._partial.unlink(missing_ok=True)
        self._reset()
