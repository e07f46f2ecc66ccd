"""The manifest (what was written, how, with which libraries) and the errors report.

The manifest is written last: its presence is the commit point of a run.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from . import __version__
from .config import ConvertConfig
from .errors import Failure, OutputError
from .policy import pixel_policy
from .records import FeatureKind
from .shards import ShardInfo, shard_prefix
from .storage import Store

MANIFEST_NAME = "manifest.json"
ERRORS_NAME = "errors.csv"
ERROR_COLUMNS = ("line", "id", "path", "reason", "message")
FORMAT = "dcm2tfrec-manifest"
FORMAT_VERSION = 1


def _counts(targets: Iterable[dict[int, int]]) -> dict[str, int]:
    total: Counter[int] = Counter()
    for counts in targets:
        total.update(counts)
    return {str(k): v for k, v in sorted(total.items())}


def sections(
    assignment: dict[str, Any],
    shards: list[tuple[ShardInfo, dict[int, int]]],
    failures: list[Failure],
    lines: dict[int, str],
) -> dict[str, Any]:
    """The manifest's ``splits``: the assignment's account plus, per split or fold, its shards,
    records, record targets and rejected rows. ``shards`` pairs each shard with its targets;
    ``lines`` maps each CSV line to its part."""
    for name, part in assignment["parts"].items():
        own = [(s, t) for s, t in shards if shard_prefix(s.file) == name]
        part.update(
            shards=[s.file for s, _ in own],
            records=sum(s.records for s, _ in own),
            record_target_counts=_counts(t for _, t in own),
            rejected=sum(1 for f in failures if lines.get(f.line) == name),
        )
    return assignment


def build(
    config: ConvertConfig,
    fingerprint: dict[str, Any],
    rows: int,
    shards: list[ShardInfo],
    targets: Iterable[dict[int, int]],
    failures: list[Failure],
    features: dict[str, FeatureKind],
    splits: dict[str, Any] | None,
    started: datetime,
    seconds: float,
) -> dict[str, Any]:
    """The manifest of a finished run; everything but ``timing`` is the same for equal inputs."""
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
        "target_counts": _counts(targets),
        "rejected_by_reason": dict(sorted(Counter(f.reason for f in failures).items())),
        "errors_report": ERRORS_NAME,
        "timing": {
            "started": started.isoformat(timespec="seconds"),
            "seconds": round(seconds, 3),
            "resumed": config.resume,
            "images_per_second": round(records / seconds, 2) if seconds > 0 else None,
        },
    }


def _write(store: Store, name: str, text: str) -> None:
    try:
        store.write_text(name, text)
    except OSError as exc:
        raise OutputError(f"writing {store.path(name)} failed: {exc.strerror or exc}") from exc


def write_manifest(store: Store, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` (sorted keys, so equal content gives equal bytes)."""
    _write(store, MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def parse_manifest(text: str, where: str) -> dict[str, Any]:
    """A manifest's JSON text as data; ValueError when it is not a dcm2tfrec manifest."""
    data = json.loads(text)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{where} is not a dcm2tfrec manifest")
    return data


def write_errors(store: Store, failures: Iterable[Failure]) -> None:
    """Write ``errors.csv``: one row per rejected CSV row, in CSV line order."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(ERROR_COLUMNS)
    for f in sorted(failures, key=lambda f: f.line):
        writer.writerow([f.line, f.image_id, f.path, f.reason, f.message])
    _write(store, ERRORS_NAME, buffer.getvalue())
