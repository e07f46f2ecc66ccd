"""The cluster's write path: exact shards without funnelling record bytes through the client.

1. A chunk task converts its rows and writes one part object of framed records to the output store
   (its name unique per attempt, so a retried or duplicated task never touches another's part) and
   returns a small :class:`Part`: per row, the framed length and target of its record, or its Failure.
2. The client walks the parts in plan order (:class:`ShardPlanner`): as soon as the parts covering
   shard k are known, shard k is the byte ranges of records kN..(k+1)N-1, and a shard task
   (:func:`assemble`) writes it, with its index file, and returns its size and SHA-256.
3. The client journals each shard (the same steps as the one-writer path), then deletes parts whose
   records are all published.
"""

from __future__ import annotations

import secrets
from collections import Counter
from dataclasses import dataclass, field

from .errors import Failure, Note, OutputError
from .records import Sample
from .shards import ShardInfo, index_name, shard_name, shard_object, shard_stem
from .storage import PARTIAL_SUFFIX, Store
from .tfrecord import frame, index_text

#: Part objects' names start with this (hidden, and recognisably ours).
PART_PREFIX = ".dcm2tfrec.part-"


def is_part(name: str) -> bool:
    """Whether a name is a part object's, or the temporary one of a part being written."""
    return name.startswith(PART_PREFIX) or (
        name.startswith(f".{PART_PREFIX}") and name.endswith(PARTIAL_SUFFIX)
    )


@dataclass(frozen=True)
class Part:
    """A chunk's rows as written: ``rows`` holds, in plan order, ``(framed lengths, target)`` for a
    row's records (one per frame with ``--frames all``; stored in the part object ``name`` one after
    another) or the row's Failure; ``notes``: what the readers warned of about the records."""

    name: str
    rows: tuple[tuple[tuple[int, ...], int | None] | Failure, ...]
    notes: tuple[Note, ...] = ()


def part_name(segment: str, chunk: int) -> str:
    """A part object's name: unique per attempt, so attempts of one chunk never share a part."""
    return f"{PART_PREFIX}{segment}-{chunk:06d}-{secrets.token_hex(6)}"


def write_part(store: Store, name: str, results: list[Sample | Failure]) -> Part:
    """Write a chunk's records as one whole object (none when the chunk has no record)."""
    framed = [[frame(p) for p in r.payloads] if isinstance(r, Sample) else [] for r in results]
    data = b"".join(record for records in framed for record in records)
    if data:
        try:
            store.write(name, data, replace=False)
        except OSError as exc:
            raise OutputError(f"writing {store.path(name)} failed: {exc.strerror or exc}") from exc
    rows: list[tuple[tuple[int, ...], int | None] | Failure] = []
    for result, records in zip(results, framed, strict=True):
        rows.append(result if isinstance(result, Failure) else (tuple(map(len, records)), result.target))
    return Part(name, tuple(rows), notes_of(results))


def notes_of(results: list[Sample | Failure]) -> tuple[Note, ...]:
    """The readers' warnings about the records among ``results``."""
    return tuple(
        Note(r.line, r.image_id, message) for r in results if isinstance(r, Sample) for message in r.notes
    )


@dataclass(frozen=True)
class Piece:
    """Bytes ``[offset, offset + length)`` of a part object."""

    part: str
    offset: int
    length: int


@dataclass
class ShardPlan:
    """One shard to assemble, and the journal step it closes: rows ``[0, position)`` done (and the
    first ``skip`` records of row ``position`` when the shard ends inside a multi-frame row)."""

    index: int
    pieces: list[Piece] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    position: int = 0
    targets: Counter[int] = field(default_factory=Counter)
    failures: list[Failure] = field(default_factory=list)
    skip: int = 0

    @property
    def records(self) -> int:
        return len(self.lengths)


class ShardPlanner:
    """Cuts the parts of one segment, in plan order, into plans of exactly ``records_per_shard``
    records (the last may hold fewer); journal positions and failures as the one-writer path has them."""

    def __init__(self, records_per_shard: int, first_index: int, position: int, skip: int = 0) -> None:
        self.records_per_shard = records_per_shard
        self.position = position
        #: Records of the first row that are in shards already (resuming a cut multi-frame row).
        self.skip = skip
        #: The shard being filled.
        self.open = ShardPlan(first_index)

    def add(self, part: Part) -> list[ShardPlan]:
        """The shards this part completes."""
        done = []
        offset = 0
        for row in part.rows:
            self.position += 1
            if isinstance(row, Failure):
                self.open.failures.append(row)
                continue
            lengths, target = row
            first, self.skip = self.skip, 0
            offset += sum(lengths[:first])
            for count, length in enumerate(lengths[first:], first + 1):
                self._take(part.name, offset, length, target)
                offset += length
                plan = self.open
                if plan.records == self.records_per_shard:
                    cut = count if count < len(lengths) else 0
                    plan.position, plan.skip = self.position - (1 if cut else 0), cut
                    done.append(plan)
                    self.open = ShardPlan(plan.index + 1)
        return done

    def _take(self, part: str, offset: int, length: int, target: int | None) -> None:
        """Add the record at ``offset`` of ``part`` to the open shard."""
        plan = self.open
        last = plan.pieces[-1] if plan.pieces else None
        if last is not None and last.part == part and last.offset + last.length == offset:
            plan.pieces[-1] = Piece(part, last.offset, last.length + length)
        else:
            plan.pieces.append(Piece(part, offset, length))
        plan.lengths.append(length)
        if target is not None:
            plan.targets[target] += 1

    def close(self) -> tuple[ShardPlan | None, list[Failure], int]:
        """The last, smaller shard (or None) with the failures that follow the last record; the
        rows after a full last shard are returned as failures of a step without a shard."""
        plan = self.open
        plan.position = self.position
        if plan.records:
            return plan, [], self.position
        return None, plan.failures, self.position


def assemble(
    store: Store, prefix: str, plan: ShardPlan, write_index: bool, compression: str = "none"
) -> ShardInfo:
    """Write shard ``plan.index`` from its pieces (and its index file first); idempotent: a retried
    task that finds the same bytes already published returns their info."""
    name = shard_name(prefix, plan.index, plan.records)
    offsets, at = [], 0
    for length in plan.lengths:
        offsets.append((at, length))
        at += length
    index = index_name(name) if write_index else None
    writer = shard_object(store, shard_stem(prefix, plan.index), compression)
    try:
        for piece in plan.pieces:
            writer.write(store.read_range(piece.part, piece.offset, piece.length))
        writer.finish()
        info = ShardInfo(name, plan.records, writer.size, writer.sha256, index)
        if index:
            _publish_once(store, index, index_text(offsets).encode())
        if store.is_file(name) and store.size(name) == info.bytes and store.sha256(name) == info.sha256:
            writer.abort()  # a retry: these bytes are published already
        else:
            writer.publish(name)
    except OSError as exc:
        writer.abort()
        raise OutputError(f"publishing {store.path(name)} failed: {exc.strerror or exc}") from exc
    return info


def _publish_once(store: Store, name: str, data: bytes) -> None:
    try:
        store.write(name, data, replace=False)
    except FileExistsError:
        if store.read_bytes(name) != data:
            raise
