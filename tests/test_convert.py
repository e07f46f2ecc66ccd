from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dcm2tfrec.config import ConvertConfig, ImageSpec, Window
from dcm2tfrec.convert import convert
from dcm2tfrec.errors import ConfigError
from dcm2tfrec.testing import TRANSFER_SYNTAXES, anatomy, ramp

from .helpers import left_dark_right_bright, live_processes, output_bytes, read_errors, read_shards, sha256


def _files() -> dict[str, dict]:
    files: dict[str, dict] = {}
    for name in sorted(TRANSFER_SYNTAXES):
        eight = name in ("jpeg_baseline", "jpeg_extended")
        files[f"ramp_{name}"] = dict(
            pixels=ramp(48, 64, 10, 240 if eight else 4000, np.uint8 if eight else np.uint16),
            bits_stored=8 if eight else 12,
            transfer_syntax=name,
        )
    files["mono1"] = dict(pixels=ramp(48, 64, 4000, 10, np.uint16), bits_stored=12, photometric="MONOCHROME1")
    files["mono1_rle"] = dict(
        pixels=ramp(48, 64, 4000, 10, np.uint16),
        bits_stored=12,
        photometric="MONOCHROME1",
        transfer_syntax="rle",
    )
    files["ct"] = dict(
        pixels=ramp(48, 64, -1000, 1000, np.int16),
        rescale=(1.0, 0.0),
        modality="CT",
        windows=[(0.0, 1500.0), (300.0, 100.0)],
    )
    files["ct_sigmoid"] = dict(
        pixels=ramp(48, 64, -1000, 1000, np.int16),
        rescale=(2.0, -500.0),
        modality="CT",
        windows=[(0.0, 2000.0)],
        voi_function="SIGMOID",
    )
    rgb = np.dstack([ramp(48, 64, 0, 255, np.uint8)] * 3)
    files["rgb"] = dict(pixels=rgb, photometric="RGB")
    files["rgb_jpeg"] = dict(pixels=rgb, photometric="RGB", transfer_syntax="jpeg_baseline")
    return files


BAD_ROWS = [
    {"image_id": "missing", "path": "nope/missing.dcm", "target": 1},
    {"image_id": "bad_target", "path": "ct.dcm", "target": "1.5"},
    {"image_id": "ct", "path": "ct.dcm", "target": 0},
    {"image_id": "text", "path": "text.dcm", "target": 0},
    {"image_id": "escape", "path": "../labels.csv", "target": 0},
]


def _config(labels: Path, images: Path, out: Path, **kw) -> ConvertConfig:
    kw.setdefault("image", ImageSpec(width=32, height=24))
    kw.setdefault("records_per_shard", 7)
    kw.setdefault("workers", 1)
    return ConvertConfig(labels=labels, images=images, out=out, **kw)


@pytest.fixture
def converted(dataset, tmp_path: Path):
    labels, images = dataset(_files(), BAD_ROWS)
    (images / "text.dcm").write_text("not dicom at all")
    out = tmp_path / "out"
    return labels, images, out, convert(_config(labels, images, out))


def test_every_csv_row_is_a_record_or_an_error_row(converted) -> None:
    labels, _, out, result = converted
    records = read_shards(out)
    errors = read_errors(out)
    n_rows = len(labels.read_text().splitlines()) - 1
    assert len(records) + len(errors) == n_rows == result.rows
    assert len(records) == len(_files()) == result.records
    assert {(e["id"], e["reason"]) for e in errors} == {
        ("missing", "file_missing"),
        ("bad_target", "bad_target"),
        ("ct", "duplicate_id"),
        ("text", "not_dicom"),
        ("escape", "outside_root"),
    }
    assert [int(e["line"]) for e in errors] == sorted(int(e["line"]) for e in errors)
    assert result.exit_code == 3


def test_shards_hold_exact_counts_and_match_the_manifest(converted) -> None:
    _, _, out, result = converted
    manifest = json.loads((out / "manifest.json").read_text())
    names = sorted(p.name for p in out.glob("*.tfrec"))
    total = len(_files())
    expected_counts = [7] * (total // 7) + ([total % 7] if total % 7 else [])
    assert [s["records"] for s in manifest["shards"]] == expected_counts
    assert [s["file"] for s in manifest["shards"]] == names
    for shard in manifest["shards"]:
        assert sha256(out / shard["file"]) == shard["sha256"]
        assert (out / shard["file"]).stat().st_size == shard["bytes"]
    assert manifest["totals"] == {
        "rows": result.rows,
        "records": total,
        "rejected": 5,
        "shards": len(names),
        "bytes": sum(s["bytes"] for s in manifest["shards"]),
    }
    assert sum(manifest["target_counts"].values()) == total
    assert manifest["versions"]["pydicom"].startswith("3.")
    assert manifest["config"]["image"]["bits"] == 8 and manifest["pixel_policy"]["decoders"]
    assert not list(out.glob(".*"))


def test_pixels_left_dark_right_bright_for_every_syntax_and_inversion(converted) -> None:
    _, _, out, _ = converted
    records = {r["image_id"]: r for r in read_shards(out)}
    for image_id, record in records.items():
        assert record["image"].shape == (24, 32, 1), image_id
        assert (record["height"], record["width"], record["channels"]) == (24, 32, 1)
        assert left_dark_right_bright(record["image"]), image_id
    assert records["ct"]["image"][:, 0].max() == 0 and records["ct"]["image"][:, -1].min() == 255


def test_workers_1_2_4_and_a_repeat_give_byte_identical_output(dataset, tmp_path: Path) -> None:
    labels, images = dataset(_files(), BAD_ROWS)
    (images / "text.dcm").write_text("not dicom at all")
    outputs = []
    for run, (workers, chunk) in enumerate([(1, 0), (2, 3), (4, 1), (2, 5)]):
        out = tmp_path / f"out{run}"
        convert(_config(labels, images, out, workers=workers, chunk_size=chunk, index=True))
        outputs.append(output_bytes(out))
    assert len(outputs[0]) == 2 + 2 * 3  # manifest, errors, 3 shards with their index files
    assert all(o == outputs[0] for o in outputs[1:])


def _workers() -> set[int]:
    """This process's live descendants other than multiprocessing's long-lived helpers (the
    resource tracker and the fork server, children of this process; workers are the fork server's)."""
    me = os.getpid()
    processes = live_processes()
    helpers = {
        pid
        for pid, (parent, _, command) in processes.items()
        if parent == me and (b"resource_tracker" in command or b"forkserver" in command)
    }
    found = set()
    for pid in processes:
        ancestor = processes[pid][0]
        while ancestor in processes and ancestor != me:
            ancestor = processes[ancestor][0]
        if ancestor == me:
            found.add(pid)
    return found - helpers


def test_a_script_without_a_main_guard_converts_once(dataset, tmp_path: Path) -> None:
    """Workers never re-run the calling script (multiprocessing's spawn and forkserver would)."""
    labels, images = dataset(_files())
    script = tmp_path / "job.py"
    script.write_text(
        "from pathlib import Path\n"
        "from dcm2tfrec.config import ConvertConfig, ImageSpec\n"
        "from dcm2tfrec.convert import convert\n"
        f"with open({str(tmp_path / 'runs.txt')!r}, 'a') as runs:\n"
        "    runs.write('run\\n')\n"
        f"config = ConvertConfig(labels=Path({str(labels)!r}), images=Path({str(images)!r}), "
        f"out=Path({str(tmp_path / 'out')!r}), image=ImageSpec(width=32, height=24), workers=2)\n"
        "print(convert(config).records)\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(len(_files()))]
    assert (tmp_path / "runs.txt").read_text() == "run\n"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_worker_processes_are_gone_when_convert_returns(dataset, tmp_path: Path) -> None:
    labels, images = dataset(_files())
    before = _workers()
    result = convert(_config(labels, images, tmp_path / "out", workers=2, chunk_size=1))
    assert result.records == len(_files())
    assert _workers() - before == set()


def test_shuffle_is_seeded_and_no_shuffle_keeps_csv_order(dataset, tmp_path: Path) -> None:
    files = {f"{i:03d}": dict(pixels=anatomy(16, 16, 0, 200, np.uint8, i)) for i in range(12)}
    labels, images = dataset(files)
    orders = {}
    for name, kw in {
        "a": {"seed": 1},
        "b": {"seed": 1},
        "c": {"seed": 2},
        "csv": {"shuffle": False},
    }.items():
        out = tmp_path / name
        convert(_config(labels, images, out, **kw))
        orders[name] = [r["image_id"] for r in read_shards(out)]
    assert orders["a"] == orders["b"] != orders["c"]
    assert orders["csv"] == sorted(files)
    assert sorted(orders["a"]) == sorted(files)


def test_sixteen_bit_round_trip_is_lossless_at_full_size(dataset, tmp_path: Path) -> None:
    ct = anatomy(48, 40, -1024, 3000, np.int16)
    labels, images = dataset(
        {"ct": dict(pixels=ct, rescale=(1.0, -1024.0), modality="CT", transfer_syntax="j2k")}
    )
    out = tmp_path / "out"
    convert(_config(labels, images, out, image=ImageSpec(width=40, height=48, bits=16)))
    (record,) = read_shards(out)
    assert record["image"].dtype == np.uint16
    assert np.array_equal(record["image"][:, :, 0].astype(np.int64) - 32768, ct.astype(np.int64) - 1024)


def test_three_channels_letterbox_and_fixed_window(dataset, tmp_path: Path) -> None:
    labels, images = dataset({"wide": dict(pixels=ramp(20, 80, -1000, 1000, np.int16), rescale=(1.0, 0.0))})
    out = tmp_path / "out"
    spec = ImageSpec(width=40, height=40, resize="letterbox", channels=3, window=Window("fixed", 0.0, 1000.0))
    convert(_config(labels, images, out, image=spec))
    (record,) = read_shards(out)
    img = record["image"]
    assert img.shape == (40, 40, 3) and np.all(img[:10] == 0) and np.all(img[30:] == 0)
    assert np.array_equal(img[..., 0], img[..., 2])
    assert img[20, 0, 0] == 0 and img[20, -1, 0] == 255 and 0 < img[20, 20, 0] < 255


def test_non_empty_out_is_refused_and_overwrite_removes_only_our_files(dataset, tmp_path: Path) -> None:
    labels, images = dataset({"a": dict(pixels=anatomy(16, 16, 0, 200, np.uint8))})
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        convert(_config(labels, images, out))
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    convert(_config(labels, images, out, overwrite=True, records_per_shard=1, prefix="old"))
    convert(_config(labels, images, out, overwrite=True))
    assert sorted(p.name for p in out.iterdir()) == [
        "errors.csv",
        "manifest.json",
        "notes.txt",
        "train-00000-1.tfrec",
    ]


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"records_per_shard": 0}, "records-per-shard"),
        ({"prefix": "a/b"}, "prefix"),
        ({"image": {"channels": 2}}, "channels"),
    ],
)
def test_bad_options_are_refused_before_writing(dataset, tmp_path: Path, kw: dict, needle: str) -> None:
    labels, images = dataset({"a": dict(pixels=anatomy(16, 16, 0, 200, np.uint8))})
    with pytest.raises(ConfigError, match=needle):
        if isinstance(kw.get("image"), dict):
            kw = {**kw, "image": ImageSpec(**kw["image"])}
        convert(_config(labels, images, tmp_path / "out", **kw))
    assert not (tmp_path / "out").exists()
