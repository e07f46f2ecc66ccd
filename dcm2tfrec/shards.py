"""Shard naming and the writer that publishes numbered shards of exact size through a store.

A shard is streamed to a hidden temporary object, made durable and checked against the running
SHA-256, and only then published as ``{prefix}-{index:05d}-{count}.tfrec``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from .errors import OutputError
from .faults import fault_point
from .storage import ObjectWriter, Store
from .tfrecord import frame, gzip_compressor, index_text

SHARD_SUFFIX = ".tfrec"
INDEX_SUFFIX = ".idx"
SHARD_NAME = re.compile(r"^(?P<prefix>.+)-(?P<index>[0-9]{5})-(?P<count>[0-9]+)\.tfrec$")


def shard_name(prefix: str, index: int, count: int) -> str:
    """``train-00003-1000.tfrec``: the Kaggle ``-([0-9]*)\\.`` regex reads the count."""
    return f"{prefix}-{index:05d}-{count}{SHARD_SUFFIX}"


def shard_prefix(shard: str) -> str:
    """The prefix (split or fold name) of a shard file name."""
    match = SHARD_NAME.match(shard)
    if not match:
        raise ValueError(f"{shard!r} is not a shard name")
    return match.group("prefix")


def shard_count(shard: str) -> int | None:
    """The record count a shard's name declares, or None for another name."""
    match = SHARD_NAME.match(shard)
    return int(match.group("count")) if match else None


def index_name(shard: str) -> str:
    """The index file of a shard: ``train-00003-1000.idx`` next to ``train-00003-1000.tfrec``."""
    return shard.removesuffix(SHARD_SUFFIX) + INDEX_SUFFIX


def shard_stem(prefix: str, index: int) -> str:
    """A shard's name before its count is known (its temporary object is named after it)."""
    return f"{prefix}-{index:05d}{SHARD_SUFFIX}"


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


class GzipWriter(ObjectWriter):
    """``inner`` receiving the gzip stream of what is written (``--compression gzip``); size and
    SHA-256 are those of the stored, compressed bytes."""

    def __init__(self, inner: ObjectWriter) -> None:
        super().__init__()
        self.inner, self._compressor = inner, gzip_compressor()

    def write(self, data: bytes) -> None:
        self.inner.write(self._compressor.compress(data))
        self.size = self.inner.size

    def _write(self, data: bytes) -> None:
        self.inner.write(data)

    @property
    def sha256(self) -> str:
        return self.inner.sha256

    def finish(self) -> None:
        self.inner.write(self._compressor.flush())
        self.size = self.inner.size
        self.inner.finish()

    def publish(self, name: str) -> None:
        self.inner.publish(name)

    def abort(self) -> None:
        self.inner.abort()


def shard_object(store: Store, stem: str, compression: str) -> ObjectWriter:
    """A shard's streamed object, gzipped with ``compression="gzip"``."""
    writer = store.writer(stem)
    return GzipWriter(writer) if compression == "gzip" else writer


class ShardWriter:
    """Writes framed records into numbered shards of exactly ``records_per_shard`` records.

    With ``write_index`` each shard also gets a DALI / ``tfrecord`` index file, published first.
    ``first_index`` numbers the first shard (a resumed run goes on after the kept shards).
    """

    def __init__(
        self,
        store: Store,
        prefix: str,
        records_per_shard: int,
        write_index: bool = False,
        first_index: int = 0,
        compression: str = "none",
    ) -> None:
        self.store, self.compression = store, compression
        self.prefix = prefix
        self.records_per_shard = records_per_shard
        self.write_index = write_index
        self.index = first_index
        self.published: list[ShardInfo] = []
        self._object: ObjectWriter | None = None
        self._offsets: list[tuple[int, int]] = []

    def _where(self) -> str:
        return self.store.path(shard_stem(self.prefix, self.index))

    def write(self, record: bytes) -> None:
        """Append one record; publish the shard when it holds ``records_per_shard`` records."""
        data = frame(record)
        try:
            if self._object is None:
                self._object = shard_object(self.store, shard_stem(self.prefix, self.index), self.compression)
            offset = self._object.size
            self._object.write(data)
        except OSError as exc:
            self.abort()
            raise OutputError(f"writing {self._where()} failed: {exc.strerror or exc}") from exc
        self._offsets.append((offset, len(data)))
        if len(self._offsets) == self.records_per_shard:
            self._publish()

    def _publish(self) -> None:
        assert self._object is not None
        shard = self._object
        final = shard_name(self.prefix, self.index, len(self._offsets))
        index = index_name(final) if self.write_index else None
        try:
            shard.finish()
            if index:
                self.store.write_text(index, index_text(self._offsets), replace=False)
            fault_point("publish", self.index)
            shard.publish(final)
        except OSError as exc:
            self.abort()
            raise OutputError(f"publishing {self.store.path(final)} failed: {exc.strerror or exc}") from exc
        self.published.append(ShardInfo(final, len(self._offsets), shard.size, shard.sha256, index))
        self.index += 1
        self._object, self._offsets = None, []

    def close(self) -> list[ShardInfo]:
        """Publish the last, possibly smaller, shard and return every published shard."""
        if self._offsets:
            self._publish()
        return self.published

    def abort(self) -> None:
        """Drop the shard in progress (its temporary object); published shards stay."""
        if self._object is not None:
            self._object.abort()
        self._object, self._offsets = None, []
