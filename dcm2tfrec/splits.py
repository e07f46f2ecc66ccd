"""Group-disjoint, optionally stratified assignment of rows to named splits or K folds.

Pure and seeded. Rows sharing a group (``--group-col``, e.g. a patient) always land together;
rows without a group column are their own group. Groups are placed largest first (ties in a
seeded random order) into the part whose per-class counts fall furthest short of their goal
(the part's fraction of each class, or of all rows without ``stratify``), measured relative to
that goal, so small parts such as a 10% test split are filled as carefully as large ones. No part
is left empty when there are at least as many groups as parts.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from .labels import Row


def fold_names(folds: int) -> list[str]:
    """``fold0`` .. ``fold{K-1}``: the section names and shard prefixes of K folds."""
    return [f"fold{k}" for k in range(folds)]


def _target(row: Row) -> int:
    """A row's target for stratifying (runs without targets are never stratified)."""
    return 0 if row.target is None else row.target


def _group_key(row: Row) -> str:
    return f"g:{row.group}" if row.group else f"r:{row.image_id}"


def assign(
    rows: Sequence[Row], parts: Sequence[tuple[str, float]], stratify: bool, seed: int
) -> dict[str, list[Row]]:
    """Rows per part name (CSV order within a part); no group is in two parts."""
    import numpy as np

    groups: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        groups[_group_key(row)].append(row)
    classes = sorted({_target(r) for r in rows}) if stratify else [0]
    column = {c: i for i, c in enumerate(classes)}
    counts = {
        key: np.bincount([column[_target(r)] if stratify else 0 for r in members], minlength=len(classes))
        for key, members in groups.items()
    }
    totals = sum(counts.values(), np.zeros(len(classes), dtype=np.int64))
    goal = np.array([fraction for _, fraction in parts])[:, None] * totals[None, :]
    weight = 1.0 / np.maximum(goal, 1.0) ** 2
    filled = np.zeros_like(goal)
    keys = sorted(groups)
    order = np.random.default_rng(seed).permutation(len(keys))
    ranked = sorted((keys[i] for i in order), key=lambda k: -len(groups[k]))
    placed: dict[str, int] = {}
    empty = set(range(len(parts)))
    for left, key in zip(range(len(ranked), 0, -1), ranked, strict=True):
        before = ((filled - goal) ** 2 * weight).sum(axis=1)
        cost = ((filled + counts[key] - goal) ** 2 * weight).sum(axis=1) - before
        if left <= len(empty):  # as many groups left as empty parts: each of those gets one
            cost[[p for p in range(len(parts)) if p not in empty]] = np.inf
        part = int(np.argmin(cost))
        filled[part] += counts[key]
        placed[key] = part
        empty.discard(part)
    result: dict[str, list[Row]] = {name: [] for name, _ in parts}
    for row in rows:
        result[parts[placed[_group_key(row)]][0]].append(row)
    return result


def describe(assigned: dict[str, list[Row]], group_col: str | None, stratify: bool) -> dict[str, Any]:
    """The manifest's account of an assignment: rows, groups and targets per part, and the check
    that no group is in two parts."""
    seen: dict[str, str] = {}
    shared: set[str] = set()
    parts: dict[str, Any] = {}
    for name, rows in assigned.items():
        keys = {_group_key(r) for r in rows}
        shared |= {k for k in keys if k in seen}
        seen.update(dict.fromkeys(keys, name))
        parts[name] = {
            "rows": len(rows),
            "groups": len(keys),
            "target_counts": {
                str(k): v for k, v in sorted(Counter(r.target for r in rows if r.target is not None).items())
            },
        }
    return {
        "group_col": group_col,
        "stratify": stratify,
        "groups_disjoint": not shared,
        "parts": parts,
    }
