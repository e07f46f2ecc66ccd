"""The manifest and errors report on their own: totals, sections, deterministic bytes."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from dcm2tfrec.config import ConvertConfig
from dcm2tfrec.errors import Failure
from dcm2tfrec.journal import fingerprint
from dcm2tfrec.manifest import (
    ERRORS_NAME,
    MANIFEST_NAME,
    build,
    parse_manifest,
    sections,
    write_errors,
    write_manifest,
)
from dcm2tfrec.records import run_schema
from dcm2tfrec.shards import ShardInfo
from dcm2tfrec.storage.posix import PosixStore

SHARDS = [
    ShardInfo("val-00000-2.tfrec", 2, 100, "a" * 64),
    ShardInfo("train-00000-3.tfrec", 3, 150, "b" * 64),
]
TARGETS = [{0: 2}, {0: 1, 1: 2}]
FAILURES = [
    Failure(9, "z", "z.dcm", "timeout", "slow"),
    Failure(2, "a", "a.dcm", "file_missing", "no file"),
    Failure(5, "m", "m.dcm", "file_missing", 'quote " and, comma'),
]


def _manifest(tmp_path: Path, seconds: float = 1.5) -> dict:
    config = ConvertConfig("labels.csv", str(tmp_path), str(tmp_path / "out"))
    started = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    schema = run_schema({"age": "int64"}, {"ViewPosition": "bytes"}, masks=True)
    return build(
        config,
        fingerprint(config, "f" * 64, None),
        8,
        SHARDS,
        TARGETS,
        FAILURES,
        schema,
        None,
        started,
        seconds,
    )


def test_totals_counts_and_schema(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path)
    assert manifest["totals"] == {"rows": 8, "records": 5, "rejected": 3, "shards": 2, "bytes": 250}
    assert manifest["target_counts"] == {"0": 3, "1": 2}
    assert manifest["rejected_by_reason"] == {"file_missing": 2, "timeout": 1}
    assert list(manifest["schema"])[:6] == ["image", "target", "image_id", "height", "width", "channels"]
    assert manifest["schema"]["mask"] == "bytes" and manifest["schema"]["age"] == "int64"
    assert manifest["timing"]["images_per_second"] == round(5 / 1.5, 2)
    assert manifest["inputs"] == {"labels_sha256": "f" * 64, "rows": 8}


def test_equal_content_gives_equal_bytes_but_timing(tmp_path: Path) -> None:
    one, two = PosixStore(str(tmp_path / "a")), PosixStore(str(tmp_path / "b"))
    for store, seconds in ((one, 1.0), (two, 2.0)):
        store.root.mkdir()
        write_manifest(store, _manifest(tmp_path, seconds))
    a, b = (json.loads((s.root / MANIFEST_NAME).read_text()) for s in (one, two))
    assert a.pop("timing") != b.pop("timing") and a == b
    assert parse_manifest((one.root / MANIFEST_NAME).read_text(), "m")["totals"]["records"] == 5
    with pytest.raises(ValueError, match="not a dcm2tfrec manifest"):
        parse_manifest('{"format": "other"}', "m")


def test_sections_give_each_split_its_shards_targets_and_rejections() -> None:
    assignment = {"parts": {"train": {"rows": 5}, "val": {"rows": 3}}}
    lines = {2: "train", 5: "val", 9: "train"}
    parts = sections(assignment, list(zip(SHARDS, TARGETS, strict=True)), FAILURES, lines)["parts"]
    assert parts["train"] | {} == {
        "rows": 5,
        "shards": ["train-00000-3.tfrec"],
        "records": 3,
        "record_target_counts": {"0": 1, "1": 2},
        "rejected": 2,
    }
    assert parts["val"]["shards"] == ["val-00000-2.tfrec"] and parts["val"]["rejected"] == 1


def test_the_errors_report_is_sorted_by_line_and_quotes_safely(tmp_path: Path) -> None:
    store = PosixStore(str(tmp_path))
    write_errors(store, FAILURES)
    with open(tmp_path / ERRORS_NAME, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["line", "id", "path", "reason", "message"]
    assert [r[0] for r in rows[1:]] == ["2", "5", "9"]
    assert rows[2] == ["5", "m", "m.dcm", "file_missing", 'quote " and, comma']
