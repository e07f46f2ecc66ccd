"""The Dask engine: chunks run as tasks on a ``distributed`` cluster, results come back in plan order.

Each thread of a Dask worker runs its rows in a local engine of its own (one worker process), so a row
that crashes, hangs or exceeds the memory cap costs only that row, exactly as locally; the cap
applies to those processes, never to the Dask worker or the client. A task lost with its Dask worker
runs again elsewhere (Dask reschedules it); its result is the same, so the bytes are too. Before
the first chunk every worker's pixel-stack versions and a canary record's SHA-256 must equal the
client's. Servers this engine starts (``local:N``) bind 127.0.0.1 only.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

from ..errors import ConfigError, EngineError
from ..labels import Row
from ..parts import Part, ShardPlan, assemble, part_name, write_part
from ..policy import library_versions
from ..shards import ShardInfo
from ..worker import Task
from . import Engine, Result

log = logging.getLogger(__name__)
_LOCAL = threading.local()


def run_chunk(rows: list[Row], task: Task, timeout: float, memory_mib: int) -> Result:
    """One chunk on a Dask worker, in this thread's own local engine (started on first use)."""
    import multiprocessing

    from .local import LocalEngine

    if multiprocessing.current_process().daemon:
        raise EngineError(
            "this Dask worker may not start processes (it is daemonic): start workers with "
            "DASK_DISTRIBUTED__WORKER__DAEMON=False so that each row runs in its own process"
        )
    engines: dict[int, LocalEngine] = getattr(_LOCAL, "engines", {})
    _LOCAL.engines = engines
    if memory_mib not in engines:
        engines[memory_mib] = LocalEngine(1, memory_mib)
        engines[memory_mib].start()
    return next(engines[memory_mib].results(task, [rows], timeout))


def run_part(
    rows: list[Row], task: Task, timeout: float, memory_mib: int, segment: str, chunk: int, out: Any
) -> Part:
    """One chunk on a Dask worker, its records written as one part object of the output store."""
    from ..storage import open_store

    results = run_chunk(rows, task, timeout, memory_mib)
    return write_part(open_store(*out), part_name(segment, chunk), results)


def run_assemble(out: Any, prefix: str, plan: ShardPlan, write_index: bool, compression: str) -> ShardInfo:
    """One shard assembled on a Dask worker from byte ranges of parts."""
    from ..storage import open_store

    return assemble(open_store(*out), prefix, plan, write_index, compression)


def canary() -> dict[str, Any]:
    """This process's host, library versions and the SHA-256 of a record built from a generated
    DICOM file: equal on every machine whose pixel stack gives equal bytes."""
    import tempfile
    from pathlib import Path

    import numpy as np

    from ..config import ImageSpec
    from ..records import Sample
    from ..testing import anatomy, write_dicom
    from ..worker import process_row

    with tempfile.TemporaryDirectory(prefix="dcm2tfrec-canary-") as folder:
        write_dicom(Path(folder) / "canary.dcm", anatomy(96, 80, 0, 4000, np.uint16, 3), bits_stored=12)
        write_dicom(
            Path(folder) / "j2k.dcm",
            anatomy(96, 80, 0, 4000, np.uint16, 4),
            bits_stored=12,
            transfer_syntax="j2k",
        )
        digest = hashlib.sha256()
        for name in ("canary.dcm", "j2k.dcm"):
            record = process_row(Row(2, name, name, 1), Task(folder, ImageSpec(width=40, height=32)))
            if not isinstance(record, Sample):
                raise EngineError(f"the canary record failed on {socket.gethostname()}: {record.message}")
            digest.update(b"".join(record.payloads))
    return {"host": socket.gethostname(), "versions": library_versions(), "record": digest.hexdigest()}


def _differences(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    found = [
        f"{name} {theirs['versions'].get(name)} on {theirs['host']}, {version} here"
        for name, version in ours["versions"].items()
        if theirs["versions"].get(name) != version
    ]
    if not found and theirs["record"] != ours["record"]:
        found.append(
            f"the canary record's bytes differ on {theirs['host']} (same versions: a build difference)"
        )
    return found


class DaskEngine(Engine):
    """Chunks on a Dask cluster: ``address`` is ``tcp://host:port``, a scheduler file
    (``scheduler.json``) or ``local:N`` (a LocalCluster of N single-threaded worker processes on
    127.0.0.1, closed with the engine). ``memory_mib`` caps the processes that run the rows."""

    #: Chunk tasks write part objects and shard tasks assemble shards (see :mod:`..writing`).
    writes_parts = True
    #: A Dask task costs the client and the scheduler milliseconds: chunks of up to 64 rows.
    chunk_limit = 64

    def __init__(self, address: str, memory_mib: int = 0) -> None:
        self.address = address
        self.memory_mib = memory_mib
        self.workers = 1
        self._client: Any = None
        self._cluster: Any = None
        self._futures: list[Any] = []
        self._assembling: list[Any] = []

    def start(self) -> None:
        if self._client is not None:
            return
        try:
            import dask
            from distributed import Client, LocalCluster
        except ImportError:
            raise ConfigError(
                "--dask needs dask's distributed scheduler: pip install 'dcm2tfrec[dask]'"
            ) from None
        if self.address.startswith("local:"):
            count = int(self.address.removeprefix("local:") or 0) or 1
            with dask.config.set({"distributed.worker.daemon": False}):
                self._cluster = LocalCluster(
                    n_workers=count,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address="127.0.0.1:0",
                    worker_dashboard_address="127.0.0.1:0",
                    silence_logs=logging.ERROR,
                )
            self._client = Client(self._cluster)
        elif self.address.endswith(".json"):
            self._client = Client(scheduler_file=self.address)
        else:
            self._client = Client(self.address)
        self._client.wait_for_workers(1, timeout=120)
        self.workers = max(1, sum(self._client.nthreads().values()))
        self._check_workers()  # before anything is written

    def _check_workers(self) -> None:
        """Refuse the run when a worker's pixel stack would give other bytes than the client's."""
        ours = canary()
        problems = [p for theirs in self._client.run(canary).values() for p in _differences(ours, theirs)]
        if problems:
            self.close()
            raise ConfigError("the Dask workers' pixel stack differs from this one: " + "; ".join(problems))

    def _in_order(self, submit: Any, count: int) -> Iterator[Any]:
        """Results of ``submit(i)`` for i in 0..count-1, in order, at most 4 per worker thread ahead."""
        futures: list[Any] = []
        self._futures = futures
        for index in range(count):
            while len(futures) < min(count, index + 4 * self.workers):
                futures.append(submit(len(futures)))
            result = futures[index].result()
            futures[index] = None  # its bytes are the writer's now
            yield result

    def map_in_order(self, function: Any, arguments: list[tuple[Any, ...]]) -> Iterator[Any]:
        """``function(*args)`` for each argument tuple, on the cluster, results in order."""
        self.start()
        yield from self._in_order(
            lambda i: self._client.submit(function, *arguments[i], pure=False), len(arguments)
        )

    def results(self, task: Task, chunks: list[list[Row]], timeout: float) -> Iterator[Result]:
        self.start()

        def submit(i: int) -> Any:
            return self._client.submit(run_chunk, chunks[i], task, timeout, self.memory_mib, pure=False)

        yield from self._in_order(submit, len(chunks))

    def parts(
        self, task: Task, chunks: list[list[Row]], timeout: float, segment: str, out: Any
    ) -> Iterator[Part]:
        """Each chunk's Part, in plan order: the records stay on the store, not in the client."""
        self.start()

        def submit(i: int) -> Any:
            args = (chunks[i], task, timeout, self.memory_mib, segment, i, out)
            return self._client.submit(run_part, *args, pure=False)

        yield from self._in_order(submit, len(chunks))

    def assemble(self, out: Any, prefix: str, plan: ShardPlan, write_index: bool, compression: str) -> Any:
        """A future of shard ``plan.index``'s ShardInfo, assembled on the cluster."""
        future = self._client.submit(run_assemble, out, prefix, plan, write_index, compression, pure=False)
        self._assembling = [f for f in self._assembling if not f.done()] + [future]
        return future

    def close(self) -> None:
        if self._client is not None:
            pending = [f for f in [*self._futures, *self._assembling] if f is not None and not f.done()]
            if pending:
                self._client.cancel(pending)
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None
