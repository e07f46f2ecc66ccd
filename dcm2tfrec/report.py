"""A run for people: the summary the CLI prints and a notebook shows, and the progress bar."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .convert import ConvertResult

#: Called as ``progress(done, total, rejected)``: CSV rows accounted for so far, of all, and rejected.
Progress = Callable[[int, int, int], None]


def human_bytes(n: float) -> str:
    """``603.2 KB``: decimal units, as disks are sold."""
    if n < 1000:
        return f"{int(n)} B"
    for unit in ("KB", "MB"):
        n /= 1000
        if n < 1000:
            return f"{n:.1f} {unit}"
    return f"{n / 1000:.1f} GB"


def target_counts(counts: dict[str, int], class_map: dict[str, int] | None) -> str:
    """``0 (benign): 12, 1 (malignant): 12``; targets alone without a class map; ``-`` for none."""
    names = {str(v): k for k, v in (class_map or {}).items()}
    shown = [f"{k} ({names[k]}): {v}" if k in names else f"{k}: {v}" for k, v in counts.items()]
    return ", ".join(shown) or "-"


def summary(result: ConvertResult) -> str:
    """What a run did, in a few lines."""
    from .manifest import ERRORS_NAME

    manifest = result.manifest
    rate = result.records / result.seconds if result.seconds > 0 else 0.0
    lines = [
        f"dcm2tfrec convert: {result.rows} rows -> {result.records} records in {len(result.shards)} "
        f"shard(s), {human_bytes(manifest['totals']['bytes'])}, in {result.out}",
        f"time {result.seconds:.1f} s, {rate:.1f} images/s",
    ]
    if result.failures:
        lines.append(
            f"rejected {len(result.failures)} row(s), listed in {os.path.join(result.out, ERRORS_NAME)}:"
        )
        width = max(len(r) for r in result.rejected_by_reason)
        lines += [f"  {reason:<{width}}  {n}" for reason, n in result.rejected_by_reason.items()]
    else:
        lines.append("rejected 0 rows")
    lines += _warnings(result)
    classes = manifest.get("class_map")
    lines.append(f"targets {target_counts(manifest['target_counts'], classes)}")
    splits = manifest.get("splits")
    for name, part in (splits or {}).get("parts", {}).items():
        lines.append(
            f"  {name}: {part['records']} records in {len(part['shards'])} shard(s), "
            f"{part['groups']} group(s), targets {target_counts(part['record_target_counts'], classes)}"
        )
    if splits:
        lines.append(f"groups disjoint across splits: {'yes' if splits['groups_disjoint'] else 'NO'}")
    return "\n".join(lines)


#: The summary names at most this many distinct reader warnings (ConvertResult.notes has all).
SHOWN_WARNINGS = 5


def _warnings(result: ConvertResult) -> list[str]:
    by_message = result.warnings_by_message
    if not by_message:
        return []
    rows = len({note.line for note in result.notes})
    lines = [f"warnings on {rows} converted row(s) from pydicom or a decoder (the images were kept):"]
    for message, notes in list(by_message.items())[:SHOWN_WARNINGS]:
        first = min(notes, key=lambda note: note.line)
        lines.append(f"  {len(notes)} x {message} (first: line {first.line}, id {first.image_id})")
    if len(by_message) > SHOWN_WARNINGS:
        lines.append(f"  and {len(by_message) - SHOWN_WARNINGS} other kind(s): ConvertResult.notes lists all")
    return lines


@contextlib.contextmanager
def progress_bar(show: bool, file: Any = None) -> Iterator[Progress]:
    """A :data:`Progress` drawing a tqdm bar with the rejected rows so far (tqdm.auto: a widget in a
    notebook, text in a terminal; on ``file``, e.g. stderr, when given); nothing when not ``show``."""
    if file is None:
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm
    bars: list[Any] = []

    def update(done: int, total: int, rejected: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="img", file=file, disable=not show, dynamic_ncols=True))
        bar = bars[0]
        if rejected != getattr(bar, "rejected", 0):
            bar.rejected = rejected
            bar.set_postfix(rejected=rejected, refresh=False)
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        for bar in bars:
            bar.close()
