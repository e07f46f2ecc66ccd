"""The plan: which rows get their own shards (splits, folds), in what order, cut into chunks.

Deterministic: the same rows and options give the same plan, whatever runs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import ConvertConfig
from .labels import Row
from .splits import assign, describe, fold_names


@dataclass(frozen=True)
class Segment:
    """A run of rows with its own shards: the shard prefix and its rows in CSV order."""

    prefix: str
    rows: list[Row]


def segments(config: ConvertConfig, rows: list[Row]) -> tuple[list[Segment], dict[str, Any] | None]:
    """The segments in write order: one per split or fold (with the manifest's account of the
    assignment), or the whole CSV under ``--prefix``."""
    if not (config.split or config.folds):
        return [Segment(config.prefix, rows)], None
    parts = config.split or tuple((name, 1 / config.folds) for name in fold_names(config.folds))
    assigned = assign(rows, parts, config.stratify, config.seed)
    account = describe(assigned, config.columns.group_col, config.stratify)
    return [Segment(name, part) for name, part in assigned.items()], account


def chunk_size(rows: int, workers: int, configured: int = 0, limit: int = 8) -> int:
    """Rows per task: ``configured``, or up to ``limit`` with at least 8 tasks per worker."""
    return configured or max(1, min(limit, rows // (max(1, workers) * 8)))


def order(rows: list[Row], shuffle: bool, seed: int) -> list[Row]:
    """The rows in record order: a seeded permutation when ``shuffle``, else CSV order."""
    if not shuffle:
        return rows
    import numpy as np

    return [rows[i] for i in np.random.default_rng(seed).permutation(len(rows))]


def chunks(rows: list[Row], size: int, start: int = 0) -> list[list[Row]]:
    """``rows`` without the first ``start`` (done by an interrupted run), cut into tasks of ``size``."""
    rows = rows[start:]
    return [rows[i : i + size] for i in range(0, len(rows), size)]
