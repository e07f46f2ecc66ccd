"""The worker processes of a run: joblib's (loky) reusable pool, results in plan order, a failed
chunk re-run row by row in isolation, the processes killed at the end."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from types import TracebackType
from typing import Any

from joblib.executor import get_memmapping_executor
from joblib.externals.loky.process_executor import TerminatedWorkerError

from .config import Failure
from .labels import Row
from .records import Sample
from .worker import Task, process_chunk, run_isolated

log = logging.getLogger(__name__)
Result = list[Sample | Failure]


class WorkerPool:
    """``workers`` worker processes, also for one worker: a crash, a hang or the memory cap then
    costs only its row, and decoding never shares the caller's process.

    ``close`` (or leaving the ``with`` block) kills the idle processes at once instead of letting
    each tear its interpreter down at exit (0.15 s measured). At most ``2 * workers`` chunks are in
    flight, which loky's call queue and running workers hold once the workers are up, so a kill
    (a timeout, Ctrl-C, a write error) finds no work loky has not handed out yet.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._executor: Any = None

    def _pool(self) -> Any:
        """joblib's reusable executor: the running one, or a fresh one after a crash."""
        self._executor = get_memmapping_executor(self.workers)
        return self._executor

    def results(self, task: Task, chunks: list[list[Row]], timeout: float) -> Iterator[Result]:
        """Each chunk's results, in order. When a worker dies or a chunk overruns ``timeout`` seconds
        per row, the pool is restarted and that chunk's rows are re-run one by one, each alone in a
        fresh process, so only the guilty row is lost."""
        done = 0
        while done < len(chunks):
            try:
                for result in self._ordered(task, chunks[done:], timeout):
                    yield result
                    done += 1
            except (TerminatedWorkerError, TimeoutError) as exc:
                log.warning("chunk %d failed (%s); re-running its rows alone", done, type(exc).__name__)
                yield [run_isolated(row, task, timeout) for row in chunks[done]]
                done += 1

    def _ordered(self, task: Task, chunks: list[list[Row]], timeout: float) -> Iterator[Result]:
        """Chunk results in order, ``2 * workers`` chunks in flight; the pool is killed when a chunk
        overruns its time or the caller stops early (Ctrl-C, a write error)."""
        executor = self._pool()
        window: deque[tuple[Future[Result], int]] = deque()
        pending = iter(chunks)
        try:
            while True:
                while len(window) < 2 * self.workers and (chunk := next(pending, None)) is not None:
                    window.append((executor.submit(process_chunk, chunk, task), len(chunk)))
                if not window:
                    return
                future, rows = window.popleft()
                yield future.result(timeout=timeout * rows)
        except BaseException:
            executor.shutdown(wait=False, kill_workers=True)
            raise

    def close(self) -> None:
        """Kill the worker processes (they are idle or their work is no longer wanted)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, kill_workers=True)
            self._executor = None

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


__all__ = ["WorkerPool"]
