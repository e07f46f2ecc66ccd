"""The run journal: what a convert run has finished, so that ``--resume`` goes on from there.

``OUT/.dcm2tfrec.journal.jsonl``: the first line is the run's fingerprint (everything that
shapes the output bytes); each further line is a :class:`Step`, appended and fsynced right after
its shard was published: how far through the plan the run was, the shard, the targets in it and
the rows rejected since the previous step. A line cut short by a crash is ignored. The journal
is removed once the manifest is written, so its presence means "interrupted".
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .config import Failure, OutputError
from .faults import fault_point
from .manifest import write_atomic
from .shards import ShardInfo, file_sha256, index_text, iter_records

log = logging.getLogger(__name__)
JOURNAL_NAME = ".dcm2tfrec.journal.jsonl"
JOURNAL_FORMAT = "dcm2tfrec-journal-1"


@dataclass(frozen=True)
class Step:
    """Rows ``[0, position)`` of the plan are done: in published shards or rejected."""

    position: int
    shard: ShardInfo | None = None
    targets: dict[int, int] = field(default_factory=dict)
    failures: tuple[Failure, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "shard": self.shard.to_json() if self.shard else None,
            "targets": {str(k): v for k, v in sorted(self.targets.items())},
            "failures": [asdict(f) for f in self.failures],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Step:
        return cls(
            position=int(data["position"]),
            shard=ShardInfo(**data["shard"]) if data["shard"] else None,
            targets={int(k): int(v) for k, v in data["targets"].items()},
            failures=tuple(Failure(**f) for f in data["failures"]),
        )


def _line(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, ensure_ascii=False) + "\n"


class Journal:
    """Appends steps to the journal file, each one flushed and fsynced before the run goes on."""

    def __init__(self, out_dir: Path, fingerprint: dict[str, Any], steps: Iterable[Step] = ()) -> None:
        self.path = out_dir / JOURNAL_NAME
        self.steps = list(steps)
        header = {"format": JOURNAL_FORMAT, "fingerprint": fingerprint}
        write_atomic(self.path, "".join(_line(d) for d in [header, *(s.to_json() for s in self.steps)]))
        self._handle: TextIO | None = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (see close)

    def append(self, step: Step) -> None:
        """Record a finished step durably."""
        assert self._handle is not None
        fault_point("journal", len(self.steps))
        try:
            self._handle.write(_line(step.to_json()))
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as exc:
            raise OutputError(f"writing {self.path} failed: {exc.strerror or exc}") from exc
        self.steps.append(step)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def finish(self) -> None:
        """The run is complete (manifest written): remove the journal."""
        self.close()
        self.path.unlink(missing_ok=True)


def read_journal(out_dir: Path) -> tuple[dict[str, Any], list[Step]] | None:
    """The fingerprint and steps of an interrupted run in ``out_dir``, or None when there is none."""
    path = out_dir / JOURNAL_NAME
    if not path.is_file():
        return None
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    try:
        header = json.loads(lines[0])
        if header.get("format") != JOURNAL_FORMAT:
            raise ValueError(f"unknown journal format {header.get('format')!r}")
    except (IndexError, ValueError) as exc:
        raise OutputError(f"{path} is not a dcm2tfrec journal ({exc}); use --overwrite") from None
    steps = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            steps.append(Step.from_json(json.loads(line)))
        except (ValueError, KeyError, TypeError):
            if number == len(lines):  # the last line, cut short by the crash
                break
            raise OutputError(f"{path}: line {number} is damaged; use --overwrite") from None
    return header["fingerprint"], steps


def shard_intact(out_dir: Path, shard: ShardInfo) -> str | None:
    """Why a journaled shard (and its index) is not exactly as written, or None when it is."""
    path = out_dir / shard.file
    if not path.is_file():
        return f"{shard.file} is missing"
    if path.stat().st_size != shard.bytes or file_sha256(path) != shard.sha256:
        return f"{shard.file} differs from what was written (size or SHA-256)"
    if shard.index:
        index = out_dir / shard.index
        offsets = [(o, len(r) + 16) for o, r in iter_records(path)]
        if not index.is_file() or index.read_text(encoding="ascii") != index_text(offsets):
            return f"{shard.index} is missing or differs from its shard"
    return None


def verified_steps(out_dir: Path, steps: list[Step]) -> list[Step]:
    """The journaled steps up to the first whose shard is damaged or gone (which is redone)."""
    for i, step in enumerate(steps):
        problem = step.shard and shard_intact(out_dir, step.shard)
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
