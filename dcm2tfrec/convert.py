"""Orchestration: labels -> plan -> engine -> one ordered writer -> errors report -> manifest."""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import journal as journals
from . import manifest as manifests
from .config import ConvertConfig
from .engine import Engine, engine_for
from .errors import ConfigError, ExitCode, Failure, Interrupted, Note, OutputError, stop_signal
from .inputs import is_folder
from .journal import JOURNAL_NAME, Journal
from .labels import Labels, read_labels
from .plan import chunk_size, chunks, order, segments
from .records import run_schema, tag_kinds
from .report import Progress, progress_bar, summary
from .shards import ShardInfo, shard_prefix
from .storage import Store, is_url, open_store, protocol
from .storage.output import LOCK_NAME, check_output, clear_output
from .worker import Task
from .writing import OrderedWriter, PartsWriter, Tally, writer_for


@dataclass
class ConvertResult:
    """What a run did: records and shards written, rows rejected, time taken, the manifest."""

    out: str
    rows: int
    records: int
    shards: list[ShardInfo]
    failures: list[Failure]
    seconds: float
    manifest: dict[str, Any]
    #: Files in the output folder that look like dcm2tfrec's but were kept: nothing proves they are.
    kept: list[str] = field(default_factory=list)
    #: What pydicom or a decoder warned of about rows that were converted (this run's rows).
    notes: list[Note] = field(default_factory=list)

    def summary(self) -> str:
        """What the run did, in a few lines (what the command line prints)."""
        return summary(self)

    def __str__(self) -> str:
        return self.summary()

    @property
    def warnings_by_message(self) -> dict[str, list[Note]]:
        """The readers' warnings: each distinct message and the rows it was given for."""
        found: dict[str, list[Note]] = {}
        for note in self.notes:
            found.setdefault(note.message, []).append(note)
        return found

    @property
    def rejected_by_reason(self) -> dict[str, int]:
        return dict(sorted(Counter(f.reason for f in self.failures).items()))

    @property
    def exit_code(self) -> int:
        """0 when every row became a record, 3 when some were rejected (see errors.csv)."""
        return ExitCode.REJECTED if self.failures else ExitCode.OK


def _task(config: ConvertConfig, labels: Labels) -> Task:
    """What every row shares; ConfigError for an unusable images root or DICOM tag list."""
    try:
        folder = is_folder(config.images, config.storage_options)
    except OSError as exc:
        raise ConfigError(f"images folder {config.images}: {exc}") from None
    if not folder:
        raise ConfigError(f"images folder {config.images} does not exist or is not a folder")
    return Task(
        image_root=config.images if is_url(config.images) else str(Path(config.images).resolve()),
        storage=config.storage_options,
        spec=config.image,
        allow_outside_root=config.allow_outside_root,
        extra=tuple(labels.extra_kinds.items()),
        tags=tuple(tag_kinds(config.dicom_tags, config.columns.extra_cols).items()),
        masks=config.columns.mask_col is not None,
    )


def convert(
    config: ConvertConfig | None = None,
    progress: Progress | bool | None = None,
    engine: Engine | None = None,
    **options: Any,
) -> ConvertResult:
    """Run a conversion (or, with ``resume``, finish an interrupted one); return what was written.

    Give a :class:`ConvertConfig`, or keyword options named like the command line's (``labels``,
    ``images``, ``out``, ``size="512"``, ``target_col``, ``window="40,400"``, ``split=...`` ...; see
    :meth:`ConvertConfig.from_options`). Paths are ``str``, ``Path`` or URLs; ``labels`` may also be a
    pandas DataFrame or a list of dicts. ``progress``: True draws a bar (a widget in a notebook), a
    callable is called as ``progress(done, total, rejected)``. ``engine`` runs the rows (default:
    the config's, :func:`~dcm2tfrec.engine.engine_for`, closed at the end; one passed in is left to
    its owner). Raises ConfigError (before anything is written), OutputError, or Interrupted; after
    an OutputError or Interrupted the same call with ``resume=True`` goes on where it stopped.
    """
    if config is None:
        config = ConvertConfig.from_options(**_in_memory_labels(options))
    elif options:
        raise TypeError("convert() takes a ConvertConfig or keyword options, not both")
    if callable(progress):
        return _convert(config, progress, engine)
    with progress_bar(bool(progress)) as bar:
        return _convert(config, bar, engine)


def _in_memory_labels(options: dict[str, Any]) -> dict[str, Any]:
    """Options with a DataFrame or a list of dicts as ``labels`` turned into CSV bytes."""
    labels = options.get("labels")
    if labels is None or isinstance(labels, (str, os.PathLike)):
        return options
    import pandas as pd

    frame = labels if isinstance(labels, pd.DataFrame) else pd.DataFrame(list(labels))
    name = "<DataFrame>" if isinstance(labels, pd.DataFrame) else "<list of rows>"
    return {**options, "labels": name, "labels_data": frame.to_csv(index=False).encode("utf-8")}


def _convert(config: ConvertConfig, progress: Progress, engine: Engine | None) -> ConvertResult:
    labels = read_labels(config.labels, config.columns, config.storage_options, config.labels_data)
    task = _task(config, labels)
    if config.dask and "memory" in (protocol(config.out), protocol(config.images)):
        raise ConfigError("memory:// lives in one process: a Dask cluster can neither read nor write it")
    store = open_store(config.out, config.storage)
    with contextlib.ExitStack() as stack:
        stack.enter_context(store.lock(LOCK_NAME))  # first: a folder in use is refused as such
        check_output(store, config.overwrite, config.resume)
        if engine is None:
            engine = stack.enter_context(engine_for(config.dask, config.workers, config.worker_memory))
        return _Run(config, labels, task, store, engine).run(progress)


class _Run:
    """One conversion: resume state, the segments' shards, then the errors report and manifest."""

    def __init__(
        self, config: ConvertConfig, labels: Labels, task: Task, store: Store, engine: Engine
    ) -> None:
        self.config, self.labels, self.task, self.store, self.engine = config, labels, task, store, engine
        self.rows = len(labels.rows) + len(labels.failures)

    def run(self, progress: Progress) -> ConvertResult:
        config, store = self.config, self.store
        started, clock = datetime.now(timezone.utc), time.perf_counter()
        fingerprint = journals.fingerprint(config, self.labels.sha256, self.labels.class_map)
        steps = journals.resumable_steps(store, fingerprint) if config.resume else []
        kept = {n for s in steps if s.shard for n in (s.shard.file, s.shard.index) if n}
        foreign = clear_output(store, keep=frozenset(kept | {JOURNAL_NAME} if config.resume else kept))
        journal = Journal(store, fingerprint, steps)
        tally = Tally(steps[-1].position if steps else 0, Counter(), [], skip=steps[-1].skip if steps else 0)

        parts, assignment = segments(config, self.labels.rows)
        writer = writer_for(store, self.engine, config, journal, tally)
        rejected = len(self.labels.failures) + sum(len(s.failures) for s in steps)

        def report() -> None:
            progress(len(self.labels.failures) + tally.position, self.rows, rejected + writer.rejected)

        report()
        try:
            offset = 0
            for part in parts:
                start, offset = tally.position - offset, offset + len(part.rows)
                if start < len(part.rows):
                    done = sum(1 for s in journal.shards if shard_prefix(s.file) == part.prefix)
                    engine = self.engine
                    size = chunk_size(len(part.rows), engine.workers, config.chunk_size, engine.chunk_limit)
                    todo = chunks(order(part.rows, config.shuffle, config.seed), size, start)
                    writer.segment(self.task, part.prefix, todo, done, report)
            writer.finish()
        except KeyboardInterrupt as exc:
            _stop(writer, journal)
            raise Interrupted(
                f"interrupted: {len(journal.shards)} complete shard(s) kept in {store.location}; "
                "run the same command with --resume to go on",
                stop_signal(exc),
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
        failures = sorted(
            [*self.labels.failures, *(f for s in journal.steps for f in s.failures)], key=lambda f: f.line
        )
        splits = None
        if assignment:
            lines = {row.line: part.prefix for part in parts for row in part.rows}
            shards = [(s.shard, s.targets) for s in journal.steps if s.shard]
            splits = manifests.sections(assignment, shards, failures, lines)
        seconds = time.perf_counter() - clock
        manifests.write_errors(store, failures)
        target = not config.columns.no_target
        spec = self.task.spec
        extra, tags = dict(self.task.extra), dict(self.task.tags)
        frames, crop = spec.frames != "reject", spec.crop_foreground
        schema = run_schema(extra, tags, self.task.masks, target, frames, spec.volume, crop)
        manifest = manifests.build(
            config,
            fingerprint,
            self.rows,
            journal.shards,
            (s.targets for s in journal.steps),
            failures,
            schema,
            splits,
            started,
            seconds,
        )
        manifests.write_manifest(store, manifest)
        journal.finish()
        records = sum(s.records for s in journal.shards)
        written = journal.shards
        return ConvertResult(
            config.out, self.rows, records, written, failures, seconds, manifest, foreign, writer.notes
        )


def _stop(writer: OrderedWriter | PartsWriter, journal: Journal) -> None:
    writer.abort()
    journal.close()


__all__ = ["ConvertResult", "Progress", "convert"]
