"""Orchestration: labels -> plan -> parallel workers -> one ordered writer -> manifest."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from joblib.externals.loky.process_executor import TerminatedWorkerError

from . import __version__
from .config import (
    EXIT_OK,
    EXIT_REJECTED,
    ConfigError,
    ConvertConfig,
    Failure,
    Interrupted,
    OutputError,
    pixel_policy,
)
from .labels import Labels, Row, read_labels
from .manifest import (
    ERRORS_NAME,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    library_versions,
    write_errors,
    write_manifest,
)
from .records import SCHEMA, Sample
from .shards import (
    INDEX_SUFFIX,
    PARTIAL_SUFFIX,
    SHARD_NAME,
    SHARD_SUFFIX,
    ShardInfo,
    ShardWriter,
    file_sha256,
)
from .worker import FAULTS_ENV, Task, process_chunk, run_isolated

log = logging.getLogger(__name__)
LOCK_NAME = ".dcm2tfrec.lock"
_PREFIX = re.compile(r"[A-Za-z0-9_.]+")

#: Called as ``progress(done, total)`` with the number of CSV rows accounted for so far.
Progress = Callable[[int, int], None]


@dataclass
class ConvertResult:
    """What a run did: records and shards written, rows rejected, time taken, the manifest."""

    out: Path
    rows: int
    records: int
    shards: list[ShardInfo]
    failures: list[Failure]
    seconds: float
    manifest: dict[str, Any]

    @property
    def rejected_by_reason(self) -> dict[str, int]:
        return dict(sorted(Counter(f.reason for f in self.failures).items()))

    @property
    def exit_code(self) -> int:
        """0 when every row became a record, 3 when some were rejected (see errors.csv)."""
        return EXIT_REJECTED if self.failures else EXIT_OK


def validate(config: ConvertConfig) -> None:
    """Check options and inputs before anything is written; raise ConfigError."""
    if config.records_per_shard < 1:
        raise ConfigError("--records-per-shard must be at least 1")
    if not _PREFIX.fullmatch(config.prefix):
        raise ConfigError(f"--prefix {config.prefix!r}: use letters, digits, '_' and '.' only")
    if config.image.channels not in (1, 3):
        raise ConfigError("--channels must be 1 or 3")
    if config.image.bits not in (8, 16):
        raise ConfigError("--bits must be 8 or 16")
    if not 0 <= config.image.png_level <= 9:
        raise ConfigError("--png-level must be between 0 and 9")
    if not config.labels.is_file():
        raise ConfigError(f"labels CSV {config.labels} does not exist")
    if not config.images.is_dir():
        raise ConfigError(f"images folder {config.images} does not exist or is not a folder")


def _ours(name: str) -> bool:
    """Whether a file name is one dcm2tfrec writes in an output folder."""
    if name.endswith(INDEX_SUFFIX):
        name = name.removesuffix(INDEX_SUFFIX) + SHARD_SUFFIX
    return (
        bool(SHARD_NAME.match(name)) or name.endswith(PARTIAL_SUFFIX) or name in (MANIFEST_NAME, ERRORS_NAME)
    )


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty ``out`` unless ``overwrite`` (writes nothing)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    existing = sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME) if out.exists() else []
    if existing and not overwrite:
        shown = ", ".join(existing[:5]) + (" ..." if len(existing) > 5 else "")
        raise ConfigError(
            f"--out {out} is not empty ({shown}); pass --overwrite to replace a previous output"
        )


def clear_output(out: Path) -> None:
    """Remove what an earlier dcm2tfrec run wrote in ``out``; other files are left alone."""
    try:
        for path in out.iterdir():
            if _ours(path.name):
                path.unlink()
    except OSError as exc:
        raise OutputError(f"cannot clear --out {out}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold ``OUT/.dcm2tfrec.lock`` for the run; a second run on the same folder is refused."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create --out {out}: {exc.strerror or exc}") from None
    lock = out / LOCK_NAME
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            holder = lock.read_text().strip() if lock.exists() else ""
            if holder.isdigit() and _alive(int(holder)):
                raise ConfigError(
                    f"--out {out} is in use by another dcm2tfrec convert (pid {holder})"
                ) from None
            lock.unlink(missing_ok=True)  # stale: its process is gone
    else:
        raise ConfigError(f"cannot lock --out {out}")
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def plan(rows: list[Row], shuffle: bool, seed: int, chunk_size: int) -> list[list[Row]]:
    """Order the rows (a seeded permutation when ``shuffle``) and cut them into worker tasks."""
    if shuffle:
        order = np.random.default_rng(seed).permutation(len(rows))
        rows = [rows[i] for i in order]
    return [rows[i : i + chunk_size] for i in range(0, len(rows), chunk_size)]


def _task(config: ConvertConfig) -> Task:
    return Task(
        image_root=config.images.resolve(),
        spec=config.image,
        allow_outside_root=config.allow_outside_root,
        memory_limit=config.worker_memory,
        parent_pid=os.getpid(),
        faults=os.environ.get(FAULTS_ENV, ""),
    )


def _results(config: ConvertConfig, chunks: list[list[Row]]) -> Iterator[list[Sample | Failure]]:
    """Chunk results in plan order. When a worker dies or a chunk overruns its time, the pool is
    restarted and that chunk's rows are re-run one by one, each alone in a fresh process."""
    task, done = _task(config), 0
    while done < len(chunks):
        parallel = Parallel(
            n_jobs=config.n_workers,
            return_as="generator",
            pre_dispatch="2*n_jobs",
            batch_size=1,
            timeout=config.timeout * len(chunks[done]) if config.n_workers > 1 else None,
        )
        try:
            for result in parallel(delayed(process_chunk)(chunk, task) for chunk in chunks[done:]):
                yield result
                done += 1
        except (TerminatedWorkerError, multiprocessing.TimeoutError) as exc:
            log.warning("chunk %d failed (%s); re-running its rows one at a time", done, type(exc).__name__)
            yield [run_isolated(row, task, config.timeout) for row in chunks[done]]
            done += 1


def _manifest(
    config: ConvertConfig,
    rows: int,
    shards: list[ShardInfo],
    failures: list[Failure],
    targets: Counter[int],
    started: datetime,
    seconds: float,
) -> dict[str, Any]:
    records = sum(s.records for s in shards)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tool": {"name": "dcm2tfrec", "version": __version__},
        "versions": library_versions(),
        "config": config.describe(),
        "pixel_policy": pixel_policy(config.image),
        "schema": dict(SCHEMA),
        "inputs": {"labels_sha256": file_sha256(config.labels), "rows": rows},
        "shards": [s.to_json() for s in shards],
        "totals": {
            "rows": rows,
            "records": records,
            "rejected": len(failures),
            "shards": len(shards),
            "bytes": sum(s.bytes for s in shards),
        },
        "target_counts": {str(k): v for k, v in sorted(targets.items())},
        "rejected_by_reason": dict(sorted(Counter(f.reason for f in failures).items())),
        "errors_report": ERRORS_NAME,
        "timing": {
            "started": started.isoformat(timespec="seconds"),
            "seconds": round(seconds, 3),
            "images_per_second": round(records / seconds, 2) if seconds > 0 else None,
        },
    }


def _drain(
    results: Iterable[list[Sample | Failure]],
    writer: ShardWriter,
    failures: list[Failure],
    targets: Counter[int],
    progress: Progress | None,
    total: int,
) -> None:
    for chunk in results:
        for item in chunk:
            if isinstance(item, Sample):
                writer.write(item.payload)
                targets[item.target] += 1
            else:
                failures.append(item)
        if progress:
            progress(len(failures) + sum(targets.values()), total)


def convert(config: ConvertConfig, progress: Progress | None = None) -> ConvertResult:
    """Run a conversion and return what was written.

    Raises ConfigError (before anything is written), OutputError, or Interrupted.
    """
    validate(config)
    labels = read_labels(config.labels, config.columns)
    check_output(config.out, config.overwrite)
    with output_lock(config.out):
        return _convert(config, labels, progress)


def _convert(config: ConvertConfig, labels: Labels, progress: Progress | None) -> ConvertResult:
    clear_output(config.out)
    started, clock = datetime.now(timezone.utc), time.perf_counter()
    failures = list(labels.failures)
    rows = len(labels.rows) + len(labels.failures)
    if progress:
        progress(len(failures), rows)
    targets: Counter[int] = Counter()
    writer = ShardWriter(config.out, config.prefix, config.records_per_shard, write_index=config.index)
    chunks = plan(labels.rows, config.shuffle, config.seed, config.rows_per_task(len(labels.rows)))
    try:
        _drain(_results(config, chunks), writer, failures, targets, progress, rows)
        shards = writer.close()
    except KeyboardInterrupt:
        writer.abort()
        raise Interrupted(
            f"interrupted: {len(writer.published)} complete shard(s) kept in {config.out}, "
            "no manifest written; rerun with --overwrite"
        ) from None
    except BaseException:
        writer.abort()
        raise
    seconds = time.perf_counter() - clock
    write_errors(config.out, failures)
    manifest = _manifest(config, rows, shards, failures, targets, started, seconds)
    write_manifest(config.out, manifest)
    failures.sort(key=lambda f: f.line)
    return ConvertResult(
        config.out, rows, sum(s.records for s in shards), shards, failures, seconds, manifest
    )


__all__ = ["ConvertResult", "check_output", "convert", "plan", "validate"]
