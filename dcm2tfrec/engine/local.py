"""The local engine: worker processes forked from a server that has the pixel stack imported, one
pipe each, results in plan order; a chunk whose worker dies or overruns is re-run row by row in
isolation. Process concerns live here: the memory cap, Ctrl-C, single-threaded OpenCV, test faults.

No executor: with per-worker pipes and no helper threads, killing the workers (a timeout, Ctrl-C,
a write error, the end of the run) can never leave a half-read result blocking the caller, which
concurrent.futures' pool does when a worker dies while sending.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import signal
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing import forkserver, resource_tracker
from multiprocessing.connection import Connection, wait
from multiprocessing.context import ForkServerContext, ForkServerProcess
from types import ModuleType

from .. import faults
from ..errors import EngineError, Failure, Reason
from ..labels import Row
from ..policy import PRELOAD
from ..records import Sample
from ..worker import Task, process_row
from . import Engine, Result

log = logging.getLogger(__name__)
#: The signals that stop a run: the caller handles them, its worker processes ignore them.
_STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _Process(ForkServerProcess):
    """A process forked from the fork server that does not re-run the caller's main script.

    multiprocessing imports the script in every new process, which runs its top level there (a
    TensorFlow import, or the whole job when the script has no ``__main__`` guard); nothing a
    worker receives comes from it, so it is hidden while the start-up data is taken.
    """

    def start(self) -> None:
        main = sys.modules["__main__"]
        sys.modules["__main__"] = ModuleType("__main__")
        try:
            super().start()
        finally:
            sys.modules["__main__"] = main


class _Context(ForkServerContext):
    Process = _Process


#: How worker processes start: forked from multiprocessing's fork server, which imports
#: :data:`policy.PRELOAD` (pydicom, its decoders, OpenCV) once per session instead of each worker
#: importing them. The server is a fresh interpreter, not a fork of the caller, so the caller's
#: threads and TensorFlow never reach a worker; it keeps the environment it started with.
_CONTEXT = _Context()


def start_server() -> None:
    """Start the fork server with :data:`policy.PRELOAD`, if it is not running, so that its imports
    overlap the caller's own work. It starts with Ctrl-C, SIGTERM and SIGHUP blocked (the mask of
    the calling thread): a stop during its imports then prints no traceback from it, and the server
    and the workers leave stopping to the caller (they exit when it goes)."""
    _CONTEXT.set_forkserver_preload(list(PRELOAD))
    # Blocked in this thread, which starts the server: the server inherits the mask through exec,
    # so a stop never interrupts its imports (it ignores Ctrl-C itself later). This process keeps
    # its handlers, and its other threads take a stop meanwhile: none is lost (ignoring them here,
    # even briefly, lost a Ctrl-C that a helper thread received in that moment).
    resource_tracker.ensure_running()  # first: starting it unblocks SIGINT and SIGTERM again
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS)
    try:
        forkserver.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def memory_cap(mib: int) -> int:
    """The address-space cap in bytes for ``--worker-memory`` ``mib`` (0 = none): never more than
    this process's hard limit (a shell's ``ulimit -v``), which a worker could not raise."""
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    wanted = mib << 20
    return wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)


def _serve(conn: Connection, memory: int, fault_spec: str) -> None:
    """A worker's life: set its limits once, then rows in, one result out per row as soon as it is
    done (so the parent knows which row is running), until the parent closes the pipe or dies."""
    import cv2  # preloaded by the fork server

    for signum in _STOPS:  # the parent decides when to stop
        signal.signal(signum, signal.SIG_IGN)
    if memory:
        resource.setrlimit(resource.RLIMIT_AS, (memory, resource.getrlimit(resource.RLIMIT_AS)[1]))
    cv2.setNumThreads(1)  # one row per process: threads would only compete with the other workers
    faults.arm(fault_spec)
    with contextlib.suppress(EOFError, OSError):
        while True:
            rows, task = conn.recv()
            for row in rows:
                conn.send(process_row(row, task))


@dataclass
class _Item:
    """Rows of one chunk, run in order by one worker; their results fill the chunk's slots from
    ``start``. ``retry``: the row whose worker died, run again alone: a second death is its verdict."""

    chunk: int
    start: int
    rows: list[Row]
    retry: bool = False


class _Worker:
    """One worker process, the parent's end of its pipe, and the rows it holds."""

    def __init__(self, memory: int, fault_spec: str) -> None:
        self.conn, child = _CONTEXT.Pipe()
        self.process = _CONTEXT.Process(target=_serve, args=(child, memory, fault_spec), daemon=True)
        self.process.start()
        child.close()
        self.item: _Item | None = None
        self.done = 0  # rows of the item answered
        self.deadline = 0.0  # when the row in progress overruns
        self.fresh = True

    def give(self, item: _Item, task: Task, timeout: float) -> None:
        self.item, self.done, self.fresh = item, 0, False
        self.deadline = time.monotonic() + timeout
        with contextlib.suppress(OSError):  # the process died idle: found when its result is due
            self.conn.send((item.rows, task))

    def answers(self) -> Iterator[Sample | Failure]:
        """The results that have arrived; stops early when the process died (also in mid-message)."""
        while self.item is not None and self.conn.poll():
            try:
                yield self.conn.recv()
            except (EOFError, OSError):
                return

    def stop(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()


class LocalEngine(Engine):
    """``workers`` worker processes (0 = every core), also for one worker: a crash, a hang or the
    memory cap then costs only its row, and decoding never shares the caller's process.

    A worker holds a chunk of rows and answers row by row, so the parent knows which row is running:
    a row that overruns ``timeout`` costs one timeout (its worker is killed, the chunk's other rows go
    to another worker), and a row whose worker dies is run once more alone in a fresh process (dying
    again is its verdict), while the other workers go on. Results wait for their turn in plan order,
    at most ``4 * workers`` chunks ahead. ``close`` kills the processes: they are idle, or their
    work is no longer wanted (Ctrl-C or a write error in the caller). ``memory_mib`` caps each
    worker's address space (0 = no cap); the test fault spec is read from the environment when the
    engine is made.
    """

    def __init__(self, workers: int = 0, memory_mib: int = 0) -> None:
        self.workers = workers if workers > 0 else (os.cpu_count() or 1)
        self.memory = memory_cap(memory_mib)
        if memory_mib and self.memory != memory_mib << 20:
            log.warning(
                "--worker-memory %d MiB is above this shell's hard limit (ulimit -v): workers are capped "
                "at %d MiB",
                memory_mib,
                self.memory >> 20,
            )
        self.fault_spec = os.environ.get(faults.FAULTS_ENV, "")
        self._running: list[_Worker] = []

    def start(self) -> None:
        try:
            start_server()
        except OSError as exc:
            raise EngineError(f"cannot start the worker processes' server: {exc.strerror or exc}") from None

    def _worker(self) -> _Worker:
        try:
            return _Worker(self.memory, self.fault_spec)
        except OSError as exc:
            raise EngineError(f"cannot start a worker process: {exc.strerror or exc}") from None

    def results(self, task: Task, chunks: list[list[Row]], timeout: float) -> Iterator[Result]:
        self.start()
        slots: dict[int, list[Sample | Failure | None]] = {}
        queue: deque[_Item] = deque()
        fed = 0
        for index in range(len(chunks)):
            while fed < min(len(chunks), index + 4 * self.workers):
                slots[fed] = [None] * len(chunks[fed])
                queue.append(_Item(fed, 0, chunks[fed]))
                fed += 1
            while any(result is None for result in slots[index]):
                self._give(task, queue, timeout)
                self._collect(queue, timeout, slots)
            yield [result for result in slots.pop(index) if result is not None]

    def _give(self, task: Task, queue: deque[_Item], timeout: float) -> None:
        """Start missing workers and give each idle one the next rows; a retry goes to a process
        that has run nothing yet (an idle used one is replaced for it)."""
        while len(self._running) < self.workers:
            self._running.append(self._worker())
        for slot, worker in enumerate(self._running):
            if worker.item is not None or not queue:
                continue
            if queue[0].retry and not worker.fresh:
                worker.stop()
                worker = self._running[slot] = self._worker()
            worker.give(queue.popleft(), task, timeout)

    def _collect(
        self, queue: deque[_Item], timeout: float, slots: dict[int, list[Sample | Failure | None]]
    ) -> None:
        """Wait until a busy worker answers, dies or overruns; file its answers, and settle a death
        or an overrun: the row in progress is its verdict or its retry, the item's rest is queued."""
        busy = [w for w in self._running if w.item is not None]
        first = min(w.deadline for w in busy)
        wait([w.conn for w in busy] + [w.process.sentinel for w in busy], max(0.0, first - time.monotonic()))
        for worker in busy:
            item = worker.item
            assert item is not None
            for result in worker.answers():
                slots[item.chunk][item.start + worker.done] = result
                worker.done += 1
                worker.deadline = time.monotonic() + timeout
                if worker.done == len(item.rows):
                    worker.item = None
            if worker.item is None or (worker.process.is_alive() and time.monotonic() < worker.deadline):
                continue
            self._running.remove(worker)
            died = not worker.process.is_alive()
            worker.stop()
            row, position = item.rows[worker.done], item.start + worker.done
            rest = item.rows[worker.done + 1 :]
            if rest:
                queue.appendleft(_Item(item.chunk, position + 1, rest))
            if died and not item.retry:
                log.warning("line %d (%s): its worker died; running it again alone", row.line, row.image_id)
                queue.appendleft(_Item(item.chunk, position, [row], retry=True))
            elif died:
                code = worker.process.exitcode or 0
                how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
                message = f"the worker process died ({how}), also when the row ran alone"
                slots[item.chunk][position] = Failure(
                    row.line, row.image_id, row.path, Reason.WORKER_CRASHED, message
                )
            else:
                message = f"no result within --timeout {timeout:g} s"
                slots[item.chunk][position] = Failure(
                    row.line, row.image_id, row.path, Reason.TIMEOUT, message
                )

    def close(self) -> None:
        """Kill the worker processes (they are idle or their work is no longer wanted)."""
        while self._running:
            self._running.pop().stop()
