"""The two write paths, which journal the same steps and publish the same bytes.

- :class:`OrderedWriter` (this machine): results come back in plan order and one writer frames them
  into shards.
- :class:`PartsWriter` (a cluster): chunk tasks write part objects, shard tasks assemble exact shards
  from their byte ranges, and only small indexes come back to the client (see :mod:`.parts`).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .config import ConvertConfig
from .engine import Engine
from .errors import Failure, Note
from .faults import fault_point
from .journal import Journal, Step
from .labels import Row
from .parts import Part, ShardPlan, ShardPlanner, is_part, notes_of
from .records import Sample
from .shards import ShardInfo, ShardWriter
from .storage import Store
from .worker import Task


@dataclass
class Tally:
    """The rows accounted for since the last journal step, in plan order."""

    position: int
    targets: Counter[int]
    failures: list[Failure]
    #: Records since the last step (with or without targets).
    records: int = 0
    #: Records of the row at ``position`` that are in shards already (resuming a cut multi-frame row).
    skip: int = 0

    def step(self, shard: ShardInfo | None, cut: int = 0) -> Step:
        """The journal step for ``shard``: after the row at ``position - 1``, or, when a shard
        boundary cut that row after ``cut`` of its records, at that row with ``skip=cut``."""
        position = self.position - 1 if cut else self.position
        step = Step(position, shard, dict(self.targets), tuple(self.failures), cut)
        self.targets, self.failures, self.records = Counter(), [], 0
        return step


class PartEngine(Protocol):
    """An engine that writes parts and assembles shards where it runs (a cluster's): ``parts``
    yields each chunk's :class:`Part` in plan order, ``assemble`` returns a future of a ShardInfo."""

    workers: int

    def parts(self, task: Task, chunks: list[list[Row]], timeout: float, segment: str, out: Any) -> Any: ...

    def assemble(
        self, out: Any, prefix: str, plan: ShardPlan, write_index: bool, compression: str
    ) -> Any: ...


class OrderedWriter:
    """One writer in this process: results in plan order, framed into shards as they come."""

    def __init__(
        self, store: Store, engine: Engine, config: ConvertConfig, journal: Journal, tally: Tally
    ) -> None:
        self.store, self.engine, self.config, self.journal, self.tally = store, engine, config, journal, tally
        self._writer: ShardWriter | None = None
        self.rejected = 0  # rows rejected by the workers this run
        self.notes: list[Note] = []  # the readers' warnings about this run's records

    def segment(
        self, task: Task, prefix: str, todo: list[list[Row]], first: int, report: Callable[[], None]
    ) -> None:
        config = self.config
        writer = self._writer = ShardWriter(
            self.store, prefix, config.records_per_shard, config.index, first, config.compression
        )
        tally, journal = self.tally, self.journal
        for chunk in self.engine.results(task, todo, self.config.timeout):
            self.notes += notes_of(chunk)
            for item in chunk:
                tally.position += 1
                if isinstance(item, Sample):
                    first, tally.skip = tally.skip, 0
                    for done, payload in enumerate(item.payloads[first:], first + 1):
                        published = len(writer.published)
                        writer.write(payload)
                        tally.records += 1
                        if item.target is not None:
                            tally.targets[item.target] += 1
                        if len(writer.published) > published:
                            cut = done if done < len(item.payloads) else 0
                            journal.append(tally.step(writer.published[-1], cut))
                else:
                    tally.failures.append(item)
                    self.rejected += 1
                fault_point("row", tally.position)
            report()
        writer.close()
        journal.append(tally.step(writer.published[-1] if tally.records else None))

    def finish(self) -> None:
        """Nothing is left behind by this path."""

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()


class PartsWriter:
    """Parts written by chunk tasks, shards assembled by shard tasks, journaled here in order."""

    def __init__(
        self, store: Store, engine: PartEngine, config: ConvertConfig, journal: Journal, tally: Tally
    ) -> None:
        self.store, self.engine, self.config, self.journal, self.tally = store, engine, config, journal, tally
        self._pending: deque[tuple[ShardPlan, Any]] = deque()
        self.rejected = 0  # rows rejected by the workers this run
        self.notes: list[Note] = []  # the readers' warnings about this run's records

    def segment(
        self, task: Task, prefix: str, todo: list[list[Row]], first: int, report: Callable[[], None]
    ) -> None:
        planner = ShardPlanner(self.config.records_per_shard, first, self.tally.position, self.tally.skip)
        self.tally.skip = 0
        out = (self.config.out, self.config.storage)
        for part in self.engine.parts(task, todo, self.config.timeout, prefix, out):
            self.rejected += sum(1 for row in part.rows if isinstance(row, Failure))
            self.notes += part.notes
            for plan in planner.add(part):
                self._pending.append(
                    (
                        plan,
                        self.engine.assemble(out, prefix, plan, self.config.index, self.config.compression),
                    )
                )
            self._publish_done(planner, wait=False)
            self.tally.position = planner.position
            fault_point("row", self.tally.position)
            report()
        last, failures, position = planner.close()
        if last is not None:
            self._pending.append(
                (last, self.engine.assemble(out, prefix, last, self.config.index, self.config.compression))
            )
        self._publish_done(planner, wait=True)
        self.tally.position = position
        if last is None:
            self.journal.append(Step(position, None, {}, tuple(failures)))

    def _publish_done(self, planner: ShardPlanner, wait: bool) -> None:
        """Journal the assembled shards at the head of the queue, in order; delete the parts that no
        pending or open shard reads any more."""
        while self._pending and (wait or self._pending[0][1].done()):
            plan, future = self._pending.popleft()
            info: ShardInfo = future.result()
            self.journal.append(
                Step(plan.position, info, dict(plan.targets), tuple(plan.failures), plan.skip)
            )
            needed = {p.part for pending, _ in self._pending for p in pending.pieces}
            needed |= {p.part for p in planner.open.pieces}
            for name in {p.part for p in plan.pieces} - needed:
                self.store.delete(name)

    def finish(self) -> None:
        """Remove every part left (those of duplicated or retried tasks that no shard read), and
        what a task killed while writing one left."""
        for name in self.store.names():
            if is_part(name):
                self.store.delete(name)

    def abort(self) -> None:
        self._pending.clear()


def writer_for(
    store: Store, engine: Engine, config: ConvertConfig, journal: Journal, tally: Tally
) -> OrderedWriter | PartsWriter:
    """The write path of an engine: parts on a cluster that writes them, else one ordered writer."""
    if getattr(engine, "writes_parts", False):
        return PartsWriter(store, engine, config, journal, tally)  # type: ignore[arg-type]
    return OrderedWriter(store, engine, config, journal, tally)


__all__ = ["OrderedWriter", "Part", "PartsWriter", "Tally", "writer_for"]
