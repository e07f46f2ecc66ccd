"""Orchestration: labels -> plan -> parallel workers -> one ordered writer -> manifest."""

from __future__ import annotations

import contextlib
import logging
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
from .faults import FAULTS_ENV, fault_point
from .journal import JOURNAL_NAME, Journal, Step, fingerprint_differences, read_journal, verified_steps
from .labels import RESERVED_FEATURES, Labels, Row, read_labels
from .manifest import (
    ERRORS_NAME,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    library_versions,
    write_errors,
    write_manifest,
)
from .pool import WorkerPool
from .records import SCHEMA, FeatureKind, Sample
from .shards import (
    INDEX_SUFFIX,
    PARTIAL_SUFFIX,
    SHARD_NAME,
    SHARD_SUFFIX,
    ShardInfo,
    ShardWriter,
    file_sha256,
    shard_prefix,
)
from .splits import assign, fold_names
from .splits import describe as describe_assignment
from .worker import Task

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
    if config.resume and config.overwrite:
        raise ConfigError("--resume keeps an interrupted run and --overwrite replaces it: pass one of them")
    if config.split and config.folds:
        raise ConfigError("--split and --folds exclude each other: pass one of them")
    if config.folds == 1 or config.folds < 0:
        raise ConfigError("--folds needs at least 2 folds")
    bad = [name for name, _ in config.split if not _PREFIX.fullmatch(name)]
    if bad:
        raise ConfigError(f"--split name {bad[0]!r}: use letters, digits, '_' and '.' only")
    if (config.columns.group_col or config.stratify) and not (config.split or config.folds):
        raise ConfigError("--group-col and --stratify apply to --split or --folds; pass one of them")
    tag_kinds(config.dicom_tags, config.columns.extra_cols)


def tag_kinds(keywords: tuple[str, ...], extra_cols: tuple[str, ...] = ()) -> dict[str, FeatureKind]:
    """The feature kind of each ``--dicom-tag`` keyword; ConfigError for unknown or clashing ones."""
    if not keywords:
        return {}
    from .dicom import tag_kind  # loads pydicom: only when tags are asked for

    clash = sorted((RESERVED_FEATURES | set(extra_cols)) & set(keywords))
    if clash or len(set(keywords)) != len(keywords):
        raise ConfigError(f"--dicom-tag {', '.join(clash) or 'repeated'}: that feature name is taken")
    try:
        return {keyword: tag_kind(keyword) for keyword in keywords}
    except ValueError as exc:
        raise ConfigError(f"--dicom-tag: {exc}") from None


def _ours(name: str) -> bool:
    """Whether a file name is one dcm2tfrec writes in an output folder."""
    if name.endswith(INDEX_SUFFIX):
        name = name.removesuffix(INDEX_SUFFIX) + SHARD_SUFFIX
    return (
        bool(SHARD_NAME.match(name))
        or name.endswith(PARTIAL_SUFFIX)
        or name in (MANIFEST_NAME, ERRORS_NAME, JOURNAL_NAME)
    )


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty ``out`` unless ``overwrite`` (writes nothing)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    existing = sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME) if out.exists() else []
    if existing and not overwrite:
        if JOURNAL_NAME in existing:
            raise ConfigError(
                f"--out {out} holds an interrupted run: pass --resume to continue it "
                "(or --overwrite to start again)"
            )
        shown = ", ".join(existing[:5]) + (" ..." if len(existing) > 5 else "")
        raise ConfigError(
            f"--out {out} is not empty ({shown}); pass --overwrite to replace a previous output"
        )


def clear_output(out: Path, keep: frozenset[str] = frozenset()) -> None:
    """Remove what an earlier dcm2tfrec run wrote in ``out``, except ``keep``; other files stay."""
    try:
        for path in out.iterdir():
            if _ours(path.name) and path.name not in keep:
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


def plan(rows: list[Row], shuffle: bool, seed: int, chunk_size: int, start: int = 0) -> list[list[Row]]:
    """Order the rows (a seeded permutation when ``shuffle``), skip the first ``start`` (done by
    an interrupted run) and cut the rest into worker tasks."""
    if shuffle:
        order = np.random.default_rng(seed).permutation(len(rows))
        rows = [rows[i] for i in order]
    rows = rows[start:]
    return [rows[i : i + chunk_size] for i in range(0, len(rows), chunk_size)]


def _task(config: ConvertConfig, labels: Labels) -> Task:
    return Task(
        image_root=config.images.resolve(),
        spec=config.image,
        allow_outside_root=config.allow_outside_root,
        memory_limit=config.worker_memory,
        parent_pid=os.getpid(),
        faults=os.environ.get(FAULTS_ENV, ""),
        extra=tuple(labels.extra_kinds.items()),
        tags=tuple(tag_kinds(config.dicom_tags).items()),
        masks=config.columns.mask_col is not None,
    )


def schema(task: Task) -> dict[str, FeatureKind]:
    """Every feature of this run's records and its kind (the manifest's ``schema``)."""
    extra = dict(task.extra) | dict(task.tags) | ({"mask": "bytes"} if task.masks else {})
    return dict(SCHEMA) | dict(sorted(extra.items()))


def segments(
    config: ConvertConfig, labels: Labels
) -> tuple[list[tuple[str, list[Row]]], dict[str, Any] | None]:
    """The runs of rows that get their own shards, in write order: one per split or fold (with the
    manifest's account of the assignment), or the whole CSV under ``--prefix``."""
    if not (config.split or config.folds):
        return [(config.prefix, labels.rows)], None
    parts = config.split or tuple((name, 1 / config.folds) for name in fold_names(config.folds))
    assigned = assign(labels.rows, parts, config.stratify, config.seed)
    return list(assigned.items()), describe_assignment(assigned, config.columns.group_col, config.stratify)


def _fingerprint(config: ConvertConfig, labels_sha256: str, labels: Labels) -> dict[str, Any]:
    """Everything that shapes the output bytes: resuming requires the same fingerprint."""
    options = config.describe()
    for key in ("labels", "out"):  # the CSV counts by content; the output folder may move
        options.pop(key)
    return {
        "config": options,
        "labels_sha256": labels_sha256,
        "class_map": labels.class_map,
        "versions": library_versions(),
    }


def _resumable_steps(out: Path, fingerprint: dict[str, Any]) -> list[Step]:
    """The verified steps of the interrupted run in ``out`` (none for an empty folder)."""
    found = read_journal(out)
    if found is None:
        if (out / MANIFEST_NAME).exists():
            raise ConfigError(f"--resume: {out} holds a finished run ({MANIFEST_NAME}); nothing to resume")
        if any(p.name != LOCK_NAME for p in out.iterdir()):
            raise ConfigError(f"--resume: {out} holds no interrupted dcm2tfrec run (no {JOURNAL_NAME})")
        return []
    old, steps = found
    differences = fingerprint_differences(old, fingerprint)
    if differences:
        raise ConfigError(
            f"--resume refused: the interrupted run in {out} had other inputs or options "
            "(was -> now):\n  " + "\n  ".join(differences) + "\nrun it with the same labels, images and "
            "options, or pass --overwrite instead of --resume to start again"
        )
    return verified_steps(out, steps)


def _sections(
    steps: list[Step], assignment: dict[str, Any], failures: list[Failure], rows: dict[str, list[Row]]
) -> dict[str, Any]:
    """The manifest's ``splits``: per split or fold, its shards, records, targets and rejections."""
    lines = {row.line: name for name, part in rows.items() for row in part}
    for name, part in assignment["parts"].items():
        shards = [s for s in steps if s.shard and shard_prefix(s.shard.file) == name]
        targets: Counter[int] = Counter()
        for step in shards:
            targets.update(step.targets)
        part.update(
            shards=[s.shard.file for s in shards if s.shard],
            records=sum(s.shard.records for s in shards if s.shard),
            record_target_counts={str(k): v for k, v in sorted(targets.items())},
            rejected=sum(1 for f in failures if lines.get(f.line) == name),
        )
    return assignment


def _manifest(
    config: ConvertConfig,
    fingerprint: dict[str, Any],
    rows: int,
    steps: list[Step],
    failures: list[Failure],
    features: dict[str, FeatureKind],
    splits: dict[str, Any] | None,
    started: datetime,
    seconds: float,
) -> dict[str, Any]:
    shards = [s.shard for s in steps if s.shard]
    targets: Counter[int] = Counter()
    for step in steps:
        targets.update(step.targets)
    records = sum(s.records for s in shards)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tool": {"name": "dcm2tfrec", "version": __version__},
        "versions": fingerprint["versions"],
        "config": config.describe(),
        "pixel_policy": pixel_policy(config.image),
        "schema": features,
        "class_map": fingerprint["class_map"],
        "splits": splits,
        "inputs": {"labels_sha256": fingerprint["labels_sha256"], "rows": rows},
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
            "resumed": config.resume,
            "images_per_second": round(records / seconds, 2) if seconds > 0 else None,
        },
    }


@dataclass
class _Tally:
    """The rows accounted for since the last journal step, in plan order."""

    position: int
    targets: Counter[int]
    failures: list[Failure]

    def step(self, shard: ShardInfo | None) -> Step:
        step = Step(self.position, shard, dict(self.targets), tuple(self.failures))
        self.targets, self.failures = Counter(), []
        return step


def _drain(
    results: Iterable[list[Sample | Failure]],
    writer: ShardWriter,
    journal: Journal,
    tally: _Tally,
    progress: Callable[[], None],
) -> None:
    """Write results in plan order; journal each shard as soon as it is published."""
    for chunk in results:
        for item in chunk:
            tally.position += 1
            if isinstance(item, Sample):
                published = len(writer.published)
                writer.write(item.payload)
                tally.targets[item.target] += 1
                if len(writer.published) > published:
                    journal.append(tally.step(writer.published[-1]))
            else:
                tally.failures.append(item)
            fault_point("row", tally.position)
        progress()


def convert(config: ConvertConfig, progress: Progress | None = None) -> ConvertResult:
    """Run a conversion (or, with ``config.resume``, finish an interrupted one); return what was written.

    Raises ConfigError (before anything is written), OutputError, or Interrupted. After an
    OutputError or Interrupted the same call with ``resume=True`` goes on where it stopped.
    """
    validate(config)
    labels = read_labels(config.labels, config.columns)
    if not config.resume:
        check_output(config.out, config.overwrite)
    with output_lock(config.out), WorkerPool(config.n_workers) as pool:
        return _convert(config, labels, pool, progress)


def _convert(
    config: ConvertConfig, labels: Labels, pool: WorkerPool, progress: Progress | None
) -> ConvertResult:
    started, clock = datetime.now(timezone.utc), time.perf_counter()
    fingerprint = _fingerprint(config, file_sha256(config.labels), labels)
    steps = _resumable_steps(config.out, fingerprint) if config.resume else []
    kept = frozenset(n for s in steps if s.shard for n in (s.shard.file, s.shard.index) if n)
    journal = Journal(config.out, fingerprint, steps)
    clear_output(config.out, keep=kept | {JOURNAL_NAME})
    rows = len(labels.rows) + len(labels.failures)
    tally = _Tally(steps[-1].position if steps else 0, Counter(), [])

    def report() -> None:
        if progress:
            progress(len(labels.failures) + tally.position, rows)

    report()
    task = _task(config, labels)
    parts, assignment = segments(config, labels)
    offset = 0
    writer: ShardWriter | None = None
    try:
        for prefix, part in parts:
            start, offset = tally.position - offset, offset + len(part)
            if start >= len(part):
                continue
            writer = ShardWriter(
                config.out,
                prefix,
                config.records_per_shard,
                write_index=config.index,
                first_index=sum(1 for s in journal.steps if s.shard and shard_prefix(s.shard.file) == prefix),
            )
            chunks = plan(part, config.shuffle, config.seed, config.rows_per_task(len(part)), start)
            _drain(pool.results(task, chunks, config.timeout), writer, journal, tally, report)
            writer.close()
            journal.append(tally.step(writer.published[-1] if tally.targets else None))
    except KeyboardInterrupt:
        _stop(writer, journal)
        raise Interrupted(
            f"interrupted: {sum(1 for s in journal.steps if s.shard)} complete shard(s) kept in "
            f"{config.out}; run the same command with --resume to go on"
        ) from None
    except OutputError as exc:
        _stop(writer, journal)
        raise OutputError(
            f"{exc}; the complete shards are kept: fix the cause (e.g. free space) and run the "
            "same command with --resume"
        ) from None
    except BaseException:
        _stop(writer, journal)
        raise
    failures = list(labels.failures) + [f for s in journal.steps for f in s.failures]
    splits = _sections(journal.steps, assignment, failures, dict(parts)) if assignment else None
    seconds = time.perf_counter() - clock
    write_errors(config.out, failures)
    manifest = _manifest(
        config, fingerprint, rows, journal.steps, failures, schema(task), splits, started, seconds
    )
    write_manifest(config.out, manifest)
    journal.finish()
    failures.sort(key=lambda f: f.line)
    shards = [s.shard for s in journal.steps if s.shard]
    records = sum(s.records for s in shards)
    return ConvertResult(config.out, rows, records, shards, failures, seconds, manifest)


def _stop(writer: ShardWriter | None, journal: Journal) -> None:
    if writer is not None:
        writer.abort()
    journal.close()


__all__ = ["ConvertResult", "check_output", "convert", "plan", "validate"]
