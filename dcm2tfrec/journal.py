"""The run journal: what a convert run has finished, so that ``--resume`` goes on from there.

``OUT/.dcm2tfrec.journal.jsonl``: the first line is the run's fingerprint (everything that
shapes the output bytes); each further line is a :class:`Step`, appended durably right after
its shard was published: how far through the plan the run was, the shard, the targets in it and
the rows rejected since the previous step. A line cut short by a crash is ignored. The journal
is removed once the manifest is written, so its presence means "interrupted".
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from .config import ConvertConfig
from .errors import ConfigError, Failure, OutputError
from .faults import fault_point
from .policy import library_versions
from .shards import ShardInfo
from .storage import Appender, Store
from .tfrecord import OVERHEAD, index_text, iter_records

log = logging.getLogger(__name__)
JOURNAL_NAME = ".dcm2tfrec.journal.jsonl"
JOURNAL_FORMAT = "dcm2tfrec-journal-1"


@dataclass(frozen=True)
class Step:
    """Rows ``[0, position)`` of the plan are done: in published shards or rejected; and the first
    ``skip`` records of row ``position`` (a multi-frame row that a shard boundary cut) too."""

    position: int
    shard: ShardInfo | None = None
    targets: dict[int, int] = field(default_factory=dict)
    failures: tuple[Failure, ...] = ()
    skip: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "shard": self.shard.to_json() if self.shard else None,
            "targets": {str(k): v for k, v in sorted(self.targets.items())},
            "failures": [f.to_json() for f in self.failures],
            **({"skip": self.skip} if self.skip else {}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Step:
        return cls(
            position=int(data["position"]),
            shard=ShardInfo(**data["shard"]) if data["shard"] else None,
            targets={int(k): int(v) for k, v in data["targets"].items()},
            failures=tuple(Failure(**f) for f in data["failures"]),
            skip=int(data.get("skip", 0)),
        )


def _line(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, ensure_ascii=False) + "\n"


def fingerprint(
    config: ConvertConfig, labels_sha256: str, class_map: dict[str, int] | None
) -> dict[str, Any]:
    """Everything that shapes the output bytes: resuming requires the same fingerprint."""
    options = config.describe()
    for key in ("labels", "out"):  # the CSV counts by content; the output folder may move
        options.pop(key)
    return {
        "config": options,
        "labels_sha256": labels_sha256,
        "class_map": class_map,
        "versions": library_versions(),
    }


class Journal:
    """Appends steps to the journal, each one durable before the run goes on."""

    def __init__(self, store: Store, fingerprint: dict[str, Any], steps: list[Step]) -> None:
        self.store = store
        self.fingerprint = fingerprint
        self.steps = list(steps)
        header = {"format": JOURNAL_FORMAT, "fingerprint": fingerprint}
        text = "".join(_line(d) for d in [header, *(s.to_json() for s in self.steps)])
        try:
            store.write_log(JOURNAL_NAME, text)
            self._appender: Appender | None = store.appender(JOURNAL_NAME)
        except OSError as exc:
            raise OutputError(f"writing {store.path(JOURNAL_NAME)} failed: {exc.strerror or exc}") from exc

    def append(self, step: Step) -> None:
        """Record a finished step durably."""
        assert self._appender is not None
        fault_point("journal", len(self.steps))
        try:
            self._appender.append(_line(step.to_json()))
        except OSError as exc:
            raise OutputError(
                f"writing {self.store.path(JOURNAL_NAME)} failed: {exc.strerror or exc}"
            ) from exc
        self.steps.append(step)

    @property
    def shards(self) -> list[ShardInfo]:
        """Every journaled shard, in order."""
        return [s.shard for s in self.steps if s.shard]

    def close(self) -> None:
        if self._appender is not None:
            self._appender.close()
            self._appender = None

    def finish(self) -> None:
        """The run is complete (manifest written): remove the journal."""
        self.close()
        self.store.delete_log(JOURNAL_NAME)


def read_journal(store: Store) -> tuple[dict[str, Any], list[Step]] | None:
    """The fingerprint and steps of an interrupted run in ``store``, or None when there is none."""
    if not store.is_file(JOURNAL_NAME):
        return None
    where = store.path(JOURNAL_NAME)
    lines = store.read_log(JOURNAL_NAME).splitlines(keepends=True)
    try:
        header = json.loads(lines[0])
        if header.get("format") != JOURNAL_FORMAT:
            raise ValueError(f"unknown journal format {header.get('format')!r}")
    except (IndexError, ValueError) as exc:
        raise OutputError(f"{where} is not a dcm2tfrec journal ({exc}); use --overwrite") from None
    steps = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            steps.append(Step.from_json(json.loads(line)))
        except (ValueError, KeyError, TypeError):
            if number == len(lines):  # the last line, cut short by the crash
                break
            raise OutputError(f"{where}: line {number} is damaged; use --overwrite") from None
    return header["fingerprint"], steps


def shard_intact(store: Store, shard: ShardInfo) -> str | None:
    """Why a journaled shard (and its index) is not exactly as written, or None when it is."""
    if not store.is_file(shard.file):
        return f"{shard.file} is missing"
    if store.size(shard.file) != shard.bytes or store.sha256(shard.file) != shard.sha256:
        return f"{shard.file} differs from what was written (size or SHA-256)"
    if shard.index:
        with store.open_read(shard.file) as handle:
            offsets = [(o, len(r) + OVERHEAD) for o, r in iter_records(handle, shard.file)]
        if not store.is_file(shard.index) or store.read_text(shard.index) != index_text(offsets):
            return f"{shard.index} is missing or differs from its shard"
    return None


def verified_steps(store: Store, steps: list[Step]) -> list[Step]:
    """The journaled steps up to the first whose shard is damaged or gone (which is redone)."""
    for i, step in enumerate(steps):
        problem = step.shard and shard_intact(store, step.shard)
        if problem:
            log.warning("resume: %s; it and what followed are converted again", problem)
            return steps[:i]
    return steps


def fingerprint_differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """``key: old -> new`` for every leaf that differs between two fingerprints."""
    found = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += fingerprint_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return found


def resumable_steps(store: Store, fingerprint: dict[str, Any]) -> list[Step]:
    """The verified steps of the interrupted run in ``store`` (none without a journal); ConfigError
    when that run had other inputs or options."""
    found = read_journal(store)
    if found is None:
        return []
    old, steps = found
    differences = fingerprint_differences(old, fingerprint)
    if differences:
        raise ConfigError(
            f"--resume refused: the interrupted run in {store.location} had other inputs or options "
            "(was -> now):\n  " + "\n  ".join(differences) + "\nrun it with the same labels, images and "
            "options, or pass --overwrite instead of --resume to start again"
        )
    return verified_steps(store, steps)
