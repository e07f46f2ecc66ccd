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
import threading
import time
from collections.abc import Iterator
from multiprocessing import forkserver
from multiprocessing.connection import Connection, wait
from multiprocessing.context import ForkServerContext, ForkServerProcess
from types import ModuleType

from .. import faults
from ..errors import Failure, Reason
from ..labels import Row
from ..policy import PRELOAD
from ..records import Sample
from ..worker import Task, process_chunk
from . import Engine, Result

log = logging.getLogger(__name__)


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
    overlap the caller's own work. It starts with Ctrl-C ignored (when called from the main thread): a
    Ctrl-C during its imports then prints no traceback from it, and the workers leave Ctrl-C to the
    caller."""
    _CONTEXT.set_forkserver_preload(list(PRELOAD))
    handler = signal.getsignal(signal.SIGINT)
    if handler is None or threading.current_thread() is not threading.main_thread():
        forkserver.ensure_running()
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, handler)


def memory_cap(mib: int) -> int:
    """The address-space cap in bytes for ``--worker-memory`` ``mib`` (0 = none): never more than
    this process's hard limit (a shell's ``ulimit -v``), which a worker could not raise."""
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    wanted = mib << 20
    return wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)


def _serve(conn: Connection, memory: int, fault_spec: str) -> None:
    """A worker's life: set its limits once, then a chunk in, its results out, until the parent
    closes the pipe or dies."""
    import cv2  # preloaded by the fork server

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if memory:
        resource.setrlimit(resource.RLIMIT_AS, (memory, resource.getrlimit(resource.RLIMIT_AS)[1]))
    cv2.setNumThreads(1)  # one row per process: threads would only compete with the other workers
    faults.arm(fault_spec)
    with contextlib.suppress(EOFError, OSError):
        while True:
            chunk, task = conn.recv()
            conn.send(process_chunk(chunk, task))


class _Worker:
    """One worker process, the parent's end of its pipe, and the chunk it holds."""

    def __init__(self, memory: int, fault_spec: str) -> None:
        self.conn, child = _CONTEXT.Pipe()
        self.process = _CONTEXT.Process(target=_serve, args=(child, memory, fault_spec), daemon=True)
        self.process.start()
        child.close()
        self.chunk = -1
        self.deadline = 0.0

    def give(self, index: int, chunk: list[Row], task: Task, timeout: float) -> None:
        self.chunk = index
        self.deadline = time.monotonic() + timeout * len(chunk)
        with contextlib.suppress(OSError):  # the process died idle: found when its result is due
            self.conn.send((chunk, task))

    def take(self) -> Result | None:
        """The held chunk's result, or None when the process died (also in mid-message)."""
        self.chunk = -1
        try:
            result: Result = self.conn.recv()
        except (EOFError, OSError):
            return None
        return result

    def stop(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()


class LocalEngine(Engine):
    """``workers`` worker processes (0 = every core), also for one worker: a crash, a hang or the
    memory cap then costs only its row, and decoding never shares the caller's process.

    Each worker holds one chunk at a time and gets the next as soon as it hands a result back;
    results wait for their turn in plan order, at most ``4 * workers`` chunks ahead of it.
    ``close`` kills the processes: they are idle, or their work is no longer wanted (Ctrl-C or a
    write error in the caller). ``memory_mib`` caps each worker's address space (0 = no cap);
    the test fault spec is read from the environment when the engine is made.
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
        start_server()

    def _worker(self) -> _Worker:
        return _Worker(self.memory, self.fault_spec)

    def results(self, task: Task, chunks: list[list[Row]], timeout: float) -> Iterator[Result]:
        """Each chunk's results, in order. When a worker dies or a chunk overruns ``timeout`` seconds
        per row, the worker is replaced and that chunk's rows are re-run one by one, each alone in a
        fresh process, so only the guilty row is lost."""
        self.start()
        ready: dict[int, Result] = {}
        sent = 0
        for index in range(len(chunks)):
            while index not in ready:
                sent = self._give(task, chunks[: index + 4 * self.workers], sent, timeout)
                self._collect(task, chunks, timeout, ready)
            yield ready.pop(index)

    def _give(self, task: Task, chunks: list[list[Row]], sent: int, timeout: float) -> int:
        """Start missing workers and give each idle one the next chunk; return how many were sent."""
        while len(self._running) < self.workers:
            self._running.append(self._worker())
        for worker in self._running:
            if worker.chunk < 0 and sent < len(chunks):
                worker.give(sent, chunks[sent], task, timeout)
                sent += 1
        return sent

    def _collect(self, task: Task, chunks: list[list[Row]], timeout: float, ready: dict[int, Result]) -> None:
        """Wait until a busy worker answers, dies or overruns; file what it held under ``ready``."""
        busy = [w for w in self._running if w.chunk >= 0]
        first = min(w.deadline for w in busy)
        wait([w.conn for w in busy] + [w.process.sentinel for w in busy], max(0.0, first - time.monotonic()))
        for worker in busy:
            index = worker.chunk
            if worker.conn.poll():
                result = worker.take()
            elif worker.process.is_alive() and time.monotonic() < worker.deadline:
                continue
            else:
                result = None
            if result is None:
                self._running.remove(worker)
                worker.stop()
                log.warning("chunk %d lost its worker or overran; re-running its rows alone", index)
                result = [self.run_isolated(row, task, timeout) for row in chunks[index]]
            ready[index] = result

    def run_isolated(self, row: Row, task: Task, timeout: float) -> Sample | Failure:
        """Run one row in a fresh worker; a crash or a hang becomes that row's Failure."""
        self.start()
        worker = self._worker()
        worker.give(0, [row], task, timeout)
        timed_out = not wait([worker.conn, worker.process.sentinel], timeout)
        result = None if timed_out else worker.take()
        worker.stop()
        if result is not None:
            return result[0]
        if timed_out:
            return Failure(
                row.line, row.image_id, row.path, Reason.TIMEOUT, f"no result within --timeout {timeout:g} s"
            )
        code = worker.process.exitcode or 0
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        return Failure(
            row.line, row.image_id, row.path, Reason.WORKER_CRASHED, f"the worker process died ({how})"
        )

    def close(self) -> None:
        """Kill the worker processes (they are idle or their work is no longer wanted)."""
        while self._running:
            self._running.pop().stop()
