"""Where chunks of rows run: an :class:`Engine` takes the plan's chunks and gives back each chunk's
results in plan order. :mod:`.local` runs them in worker processes on this machine.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from types import TracebackType

from ..errors import Failure
from ..labels import Row
from ..records import Sample
from ..worker import Task

#: One chunk's results, in the chunk's row order.
Result = list[Sample | Failure]


class Engine(ABC):
    """An ordered executor of chunks. ``workers`` is its parallelism and ``chunk_limit`` the most rows
    a chunk holds (the plan sizes chunks by both: a task's overhead decides the limit)."""

    workers: int
    chunk_limit: int = 8

    @abstractmethod
    def start(self) -> None:
        """Get ready to run (start or warm up processes), so that this overlaps the caller's work."""

    @abstractmethod
    def results(self, task: Task, chunks: list[list[Row]], timeout: float) -> Iterator[Result]:
        """Each chunk's results in plan order. A row that crashes or hangs its worker, or takes more
        than ``timeout`` seconds, becomes that row's Failure and costs no other row."""

    @abstractmethod
    def close(self) -> None:
        """Stop what the engine started; outstanding work is abandoned."""

    def __enter__(self) -> Engine:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def engine_for(dask: str | None, workers: int, memory_mib: int) -> Engine:
    """The engine a config asks for: a Dask cluster's, or this machine's worker processes."""
    if dask:
        from .dask import DaskEngine

        return DaskEngine(dask, memory_mib)
    from .local import LocalEngine

    return LocalEngine(workers, memory_mib)
