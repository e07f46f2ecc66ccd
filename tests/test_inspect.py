from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from dcm2tfrec.cli import cli
from dcm2tfrec.config import ConvertConfig, ImageSpec
from dcm2tfrec.convert import convert
from dcm2tfrec.inspect import inspect_paths, safe_name
from dcm2tfrec.testing import make_demo

from .helpers import read_shards


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("inspect")
    labels = make_demo(root, count=10)
    out = root / "out"
    convert(
        ConvertConfig(
            labels=labels,
            images=root / "images",
            out=out,
            image=ImageSpec(width=48, height=40),
            records_per_shard=4,
            workers=1,
        )
    )
    return out


@pytest.fixture
def copy(good: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(good, tmp_path / "copy"))


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["inspect", *args])
    return result.exit_code, result.output


def test_summary_of_good_shards(good: Path) -> None:
    code, out = _run(str(good), "--head", "2")
    assert code == 0, out
    assert "all checks passed" in out and "TOTAL  10 records in 3 shard(s)" in out
    assert "48x40" not in out and "40x48x1 uint8 (4)" in out
    assert out.count("manifest ok") == 3 and out.count("  #0 ") == 3


def test_json_schema_is_stable(good: Path) -> None:
    code, out = _run(str(good / "train-00000-4.tfrec"), "--json", "--verify", "--head", "1")
    assert code == 0
    data = json.loads(out)
    keys = {"ok", "verified", "totals", "missing", "problems", "class_map", "manifests", "shards"}
    assert set(data) == keys
    assert set(data["totals"]) == {"shards", "records", "bytes", "targets", "problems"}
    (shard,) = data["shards"]
    assert set(shard) == {
        "file",
        "path",
        "records",
        "bytes",
        "sha256",
        "features",
        "images",
        "targets",
        "manifest",
        "pixel_range",
        "head",
        "problems",
    }
    assert shard["features"] == {
        "channels": "int64",
        "height": "int64",
        "image": "bytes",
        "image_id": "bytes",
        "target": "int64",
        "width": "int64",
    }
    assert shard["manifest"] == {"listed": True, "records": True, "bytes": True, "sha256": True}
    assert shard["records"] == 4 and 0 <= shard["pixel_range"][0] < shard["pixel_range"][1] <= 255
    assert set(shard["head"][0]) == {"index", "image_id", "target", "image", "features"}
    assert data["class_map"] is None and data["manifests"] == []


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at % len(data)] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("at", [0, 5, 8, 11, 12, 40, 500, -5, -1])
def test_every_flipped_byte_is_caught(copy: Path, at: int) -> None:
    shard = copy / "train-00000-4.tfrec"
    _flip(shard, at)
    code, out = _run(str(shard), "--verify")
    assert code == 2 and "PROBLEM" in out and "train-00000-4.tfrec" in out


def test_flips_are_caught_even_without_manifest_and_name_the_offset(copy: Path) -> None:
    (copy / "manifest.json").unlink()
    shard = copy / "train-00001-4.tfrec"
    size = shard.stat().st_size
    _flip(shard, size - 100)
    report = inspect_paths([str(shard)])
    assert not report.ok and "data CRC mismatch" in report.shards[0].problems[0]
    assert "record 3 at byte" in report.shards[0].problems[0]


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda d: d[:-7], "truncated"),
        (lambda d: d[:20], "truncated"),
        (lambda d: d + b"garbage", "truncated length header"),
        (lambda d: d + b"\x00" * 40, "CRC"),
    ],
)
def test_truncation_and_appended_garbage(copy: Path, damage, needle: str) -> None:
    shard = copy / "train-00002-2.tfrec"
    shard.write_bytes(damage(shard.read_bytes()))
    code, out = _run(str(copy))
    assert code == 2 and needle in out


def test_a_shard_swapped_for_another_is_caught(copy: Path) -> None:
    shutil.copy(copy / "train-00000-4.tfrec", copy / "train-00001-4.tfrec")
    code, out = _run(str(copy))
    assert code == 2 and "sha256 differ from the manifest" in out and "MANIFEST MISMATCH" in out


def test_missing_and_unlisted_shards(copy: Path) -> None:
    (copy / "train-00002-2.tfrec").rename(copy / "train-00009-2.tfrec")
    code, out = _run(str(copy))
    assert (
        code == 2
        and "not listed in" in out
        and "train-00002-2.tfrec is listed in the manifest but absent" in out
    )


def test_grid_is_sized_and_not_blank(good: Path, tmp_path: Path) -> None:
    grid = tmp_path / "grid.png"
    code, out = _run(str(good), "--grid", str(grid), "--limit", "5")
    assert code == 0 and "grid: 5 image(s)" in out
    img = cv2.imread(str(grid))
    assert img.shape == (2 * (192 + 22), 3 * 192, 3)  # 5 images: 3 columns, 2 rows
    assert img.std() > 10 and (img[:192, :192] > 0).mean() > 0.2


def test_export_writes_stored_pngs_and_labels(good: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "export"
    code, _ = _run(str(good), "--export", str(out_dir), "--limit", "6")
    assert code == 0
    with open(out_dir / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6
    records = {r["image_id"]: r for r in read_shards(good)}
    for row in rows:
        img = cv2.imread(str(out_dir / row["file"]), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(img, records[row["image_id"]]["image"][:, :, 0])
        assert int(row["target"]) == records[row["image_id"]]["target"]


def test_safe_names() -> None:
    taken: set[str] = set()
    assert [safe_name(i, taken) for i in ["a/b", "a_b", "..", "ïd 1"]] == ["a_b", "a_b~2", "image", "_d_1"]


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    code, out = _run(str(tmp_path / "nothing-here"))
    assert code == 2 and "no such shard" in out


def test_class_names_extra_features_and_a_manifest_are_shown(tmp_path: Path) -> None:
    import subprocess
    import sys

    from dcm2tfrec.inspect import caption_text

    from .helpers import write_labels, write_rows

    labels, images = write_rows(tmp_path, 6)
    with open(labels, newline="") as handle:
        rows = list(csv.DictReader(handle))
    names = ["benign", "malignant"]
    text_rows = [
        {**r, "target": names[int(r["target"])], "site": f"site {i % 2}"} for i, r in enumerate(rows)
    ]
    write_labels(labels, text_rows, ["image_id", "path", "target", "site"])
    out = tmp_path / "out"
    config = ConvertConfig.from_options(
        labels=labels,
        images=images,
        out=out,
        size="16",
        records_per_shard=4,
        class_map="auto",
        extra_cols=["site"],
        dicom_tags=["Rows"],
    )
    convert(config)
    code, text = _run(str(out), "--head", "2")
    assert code == 0, text
    assert "targets   0 (benign): 2, 1 (malignant): 2" in text
    assert "targets 0 (benign): 3, 1 (malignant): 3" in text  # the total
    heads = [line for line in text.splitlines() if line.startswith("  #")]
    assert len(heads) == 4 and all("site=site " in h and "Rows=32" in h for h in heads)
    assert all("target=0 (benign)" in h or "target=1 (malignant)" in h for h in heads)
    code, text = _run(str(out / "manifest.json"))
    assert code == 0 and f"manifest {out / 'manifest.json'}: 2 shard(s), 6 records" in text
    code, text = _run(str(out), "--json", "--head", "1")
    data = json.loads(text)
    assert data["class_map"] == {"benign": 0, "malignant": 1}
    assert set(data["shards"][0]["head"][0]["features"]) == {"site", "Rows"}
    code, _ = _run(str(out), "--export", str(tmp_path / "export"))
    assert code == 0
    with open(tmp_path / "export" / "labels.csv", newline="") as handle:
        exported = list(csv.DictReader(handle))
    assert len(exported) == 6 and all(r["class_name"] == names[int(r["target"])] for r in exported)
    assert caption_text("a", 1, {1: "malignant"}, True) == "a | 1 (malignant)"
    assert caption_text("a", None, {}, True) == "a | -"
    assert caption_text("a", 1, {}, False) == "a | UNREADABLE"
    proc = subprocess.run(
        [sys.executable, "-m", "dcm2tfrec", "inspect", str(out), "--head", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "(malignant)" in proc.stdout, proc.stderr


def test_a_run_file_named_as_a_shard_is_refused_with_what_it_is(good: Path) -> None:
    code, out = _run(str(good / "errors.csv"))
    assert code == 2 and "is the errors report" in out and f"name its folder {good}" in out
