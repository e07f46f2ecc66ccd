"""--frames: multi-frame files are rejected by default (the message names --frames), or give their
first, middle or every frame as records, in frame order, with the frame's index; enhanced files'
per-frame rescale is honoured; a shard boundary inside a multi-frame row survives kill -9 and --resume."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

import dcm2tfrec
from dcm2tfrec.cli import cli
from dcm2tfrec.testing import write_dicom

from .helpers import convert_args, killed_at, output_bytes, read_errors, read_shards, write_labels

#: Frame ``i`` of every generated file is this grey level everywhere (a window of 128,256 keeps it).
LEVEL = 20
STEP = 40
WINDOW = ["--window", "128,256", "--no-shuffle", "--size", "32"]


def _cine(path: Path, frames: int, transfer_syntax: str = "explicit_le") -> Path:
    """A multi-frame file whose frame ``i`` is the grey level ``LEVEL + STEP * i`` (64 x 64)."""
    pixels = np.stack([np.full((64, 64), LEVEL + STEP * i, np.uint8) for i in range(frames)])
    return write_dicom(path, pixels if frames > 1 else pixels[0], transfer_syntax=transfer_syntax)


def _dataset(root: Path, transfer_syntax: str = "explicit_le") -> tuple[Path, Path]:
    """Rows a (5 frames), b (4 frames), c (one frame), in this CSV order."""
    images = root / "img"
    for name, frames in (("a", 5), ("b", 4), ("c", 1)):
        _cine(images / f"{name}.dcm", frames, transfer_syntax)
    rows = [{"image_id": n, "path": f"{n}.dcm", "target": t} for n, t in (("a", 0), ("b", 1), ("c", 0))]
    return write_labels(root / "labels.csv", rows), images


def _levels(records: list[dict]) -> list[tuple[str, int, int]]:
    """(id, frame, grey level) of each record, in shard order."""
    return [(r["image_id"], int(r["frame"]), int(np.rint(r["image"].mean()))) for r in records]


def test_a_multi_frame_file_is_rejected_by_default_with_a_hint(tmp_path: Path) -> None:
    labels, images = _dataset(tmp_path)
    result = CliRunner().invoke(cli, convert_args(labels, images, tmp_path / "out", *WINDOW))
    assert result.exit_code == 3, result.output
    errors = {e["id"]: e for e in read_errors(tmp_path / "out")}
    assert set(errors) == {"a", "b"} and errors["a"]["reason"] == "unsupported"
    assert errors["a"]["message"] == "multi-frame image (5 frames): --frames first, middle or all converts it"
    assert [r["image_id"] for r in read_shards(tmp_path / "out")] == ["c"]


@pytest.mark.parametrize("transfer_syntax", ["explicit_le", "explicit_be", "rle", "j2k", "jpeg_lossless"])
def test_every_frame_becomes_a_record_in_frame_order(tmp_path: Path, transfer_syntax: str) -> None:
    labels, images = _dataset(tmp_path, transfer_syntax)
    args = [*WINDOW, "--frames", "all", "--records-per-shard", "3", "--exact-decode"]
    result = CliRunner().invoke(cli, convert_args(labels, images, tmp_path / "out", *args))
    assert result.exit_code == 0, result.output
    assert "3 rows -> 10 records in 4 shard(s)" in result.output
    expected = [("a", i, LEVEL + STEP * i) for i in range(5)] + [("b", i, LEVEL + STEP * i) for i in range(4)]
    assert _levels(read_shards(tmp_path / "out")) == [*expected, ("c", 0, LEVEL)]
    manifest = (tmp_path / "out" / "manifest.json").read_text()
    assert '"frame": "int64"' in manifest and '"frames": "all"' in manifest


@pytest.mark.parametrize(("mode", "frame_of"), [("first", lambda n: 0), ("middle", lambda n: n // 2)])
def test_first_or_middle_gives_one_record_per_row(tmp_path: Path, mode: str, frame_of) -> None:
    labels, images = _dataset(tmp_path)
    result = dcm2tfrec.convert(
        labels=labels,
        images=images,
        out=tmp_path / "out",
        frames=mode,
        window="128,256",
        shuffle=False,
        size="32",
    )
    assert result.records == 3 and not result.failures
    expected = [(n, frame_of(k), LEVEL + STEP * frame_of(k)) for n, k in (("a", 5), ("b", 4), ("c", 1))]
    assert _levels(read_shards(tmp_path / "out")) == expected


def _enhanced_ct(path: Path, frames: int) -> Path:
    """An enhanced CT: frame ``i`` stores ``1000 + 100 * i`` with intercept ``-100 * i`` in its own
    functional group (so every frame is 1000 in modality values) and a shared window 1000,400."""
    stored = np.stack([np.full((32, 32), 1000 + 100 * i, np.uint16) for i in range(frames)])
    write_dicom(path, stored, bits_stored=16, modality="CT")
    ds = pydicom.dcmread(path)
    shared = Dataset()
    voi = Dataset()
    voi.WindowCenter, voi.WindowWidth = 1000, 400
    shared.FrameVOILUTSequence = Sequence([voi])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for i in range(frames):
        transform = Dataset()
        transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = 1, -100 * i, "HU"
        group = Dataset()
        group.PixelValueTransformationSequence = Sequence([transform])
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_an_enhanced_files_per_frame_rescale_and_shared_window_are_honoured(tmp_path: Path) -> None:
    _enhanced_ct(tmp_path / "img" / "ct.dcm", 3)
    labels = write_labels(tmp_path / "labels.csv", [{"image_id": "ct", "path": "ct.dcm", "target": 1}])
    result = dcm2tfrec.convert(
        labels=labels, images=tmp_path / "img", out=tmp_path / "out", frames="all", size="32"
    )
    assert result.records == 3
    images = [r["image"] for r in sorted(read_shards(tmp_path / "out"), key=lambda r: r["frame"])]
    # 1000 HU at the centre of the shared window: mid-grey in every frame, whatever it stores
    assert all(abs(float(img.mean()) - 127.5) <= 1 for img in images), [img.mean() for img in images]


def test_real_multi_frame_files_convert_frame_by_frame(tmp_path: Path) -> None:
    import shutil

    names = {
        "emri_small.dcm": 10,
        "emri_small_RLE.dcm": 10,
        "emri_small_jpeg_2k_lossless.dcm": 10,
        "emri_small_jpeg_ls_lossless.dcm": 10,
        "eCT_Supplemental.dcm": 2,
        "SC_rgb_rle_2frame.dcm": 2,
        "OBXXXX1A_rle_2frame.dcm": 2,
        "color3d_jpeg_baseline.dcm": 120,
    }
    (tmp_path / "img").mkdir()
    rows = []
    for i, name in enumerate(names):
        shutil.copy(get_testdata_file(name), tmp_path / "img" / name)
        rows.append({"image_id": name, "path": name, "target": i % 2})
    labels = write_labels(tmp_path / "labels.csv", rows)
    out = tmp_path / "out"
    args = ["--frames", "all", "--size", "32", "--records-per-shard", "50", "-q"]
    proc = subprocess.run(
        [sys.executable, "-m", "dcm2tfrec", *convert_args(labels, tmp_path / "img", out, *args)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    records = read_shards(out)
    assert len(records) == sum(names.values())
    for name, frames in names.items():
        assert sorted(int(r["frame"]) for r in records if r["image_id"] == name) == list(range(frames))
    mri = pydicom.dcmread(get_testdata_file("emri_small.dcm")).pixel_array
    bright = [r for r in records if r["image_id"] == "emri_small.dcm"]
    means = {int(r["frame"]): float(r["image"].mean()) for r in bright}
    assert np.corrcoef([means[i] for i in range(10)], mri.mean(axis=(1, 2)))[0, 1] > 0.9


def test_kill_9_inside_a_multi_frame_row_then_resume_gives_the_uninterrupted_bytes(tmp_path: Path) -> None:
    labels, images = _dataset(tmp_path)
    args = [*WINDOW, "--frames", "all", "--records-per-shard", "3", "--workers", "1"]
    reference = tmp_path / "reference"
    assert CliRunner().invoke(cli, convert_args(labels, images, reference, *args)).exit_code == 0
    out = tmp_path / "out"
    command = [sys.executable, "-m", "dcm2tfrec", *convert_args(labels, images, out, *args)]
    # journal:1 dies with shard 0 (a's frames 0-2, a cut row) journaled; journal:2 with shard 1 (a 3-4, b 0)
    killed_at(command, ["journal:1", "journal:2"])
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert output_bytes(out) == output_bytes(reference)


def test_frames_all_on_a_cluster_gives_this_machines_bytes(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    labels, images = _dataset(tmp_path)
    args = [*WINDOW, "--frames", "all", "--records-per-shard", "3", "--index"]
    here, there = tmp_path / "here", tmp_path / "there"
    assert CliRunner().invoke(cli, convert_args(labels, images, here, *args)).exit_code == 0
    result = CliRunner().invoke(cli, convert_args(labels, images, there, *args, "--dask", "local:2"))
    assert result.exit_code == 0, result.output
    assert output_bytes(there) == output_bytes(here)


def test_masks_follow_the_frames_one_per_frame_or_one_for_all(tmp_path: Path) -> None:
    labels, images = _dataset(tmp_path)
    stack = np.zeros((5, 64, 64), np.uint8)
    for i in range(5):
        stack[i, :, : 8 * (i + 1)] = i + 1  # frame i: label i+1 over its left 8(i+1) columns
    write_dicom(images / "a_mask.dcm", stack, modality="SEG")
    flat = np.zeros((64, 64), np.uint8)
    flat[32:] = 9
    np.save(images / "b_mask.npy", flat)
    np.save(images / "c_mask.npy", np.zeros((3, 64, 64), np.uint8))  # 3 masks for a 1-frame image
    rows = [
        {"image_id": n, "path": f"{n}.dcm", "target": 0, "mask": m}
        for n, m in (("a", "a_mask.dcm"), ("b", "b_mask.npy"), ("c", "c_mask.npy"))
    ]
    labels = write_labels(tmp_path / "labels.csv", rows)
    args = convert_args(labels, images, tmp_path / "out", *WINDOW, "--frames", "all", "--mask-col", "mask")
    result = CliRunner().invoke(cli, [*args, "--size", "64"])
    assert result.exit_code == 3, result.output
    (error,) = read_errors(tmp_path / "out")
    assert (
        error["id"] == "c" and error["reason"] == "bad_mask" and "3 frames, the image 1" in error["message"]
    )
    from dcm2tfrec.reader import make_dataset

    found = {}
    for features in make_dataset(tmp_path / "out", batch_size=1, with_features=True):
        key = (features["image_id"].numpy()[0].decode(), int(features["frame"].numpy()[0]))
        found[key] = features["mask"][0].numpy()[..., 0]
    assert sorted(found) == [("a", i) for i in range(5)] + [("b", i) for i in range(4)]
    for i in range(5):
        assert np.array_equal(found["a", i], stack[i])
    assert all(np.array_equal(found["b", i], flat) for i in range(4))


def test_stack_puts_each_frame_between_its_neighbours_in_the_channels(tmp_path: Path) -> None:
    labels, images = _dataset(tmp_path)
    args = [*WINDOW, "--frames", "all", "--stack", "3", "--records-per-shard", "4"]
    result = CliRunner().invoke(cli, convert_args(labels, images, tmp_path / "out", *args))
    assert result.exit_code == 0, result.output
    records = read_shards(tmp_path / "out")
    assert len(records) == 10 and all(r["channels"] == 3 and r["image"].shape[2] == 3 for r in records)
    last = {"a": 4, "b": 3, "c": 0}
    for r in records:
        i, n = r["frame"], last[r["image_id"]]
        expected = [LEVEL + STEP * j for j in (max(i - 1, 0), i, min(i + 1, n))]
        assert [int(np.rint(r["image"][..., c].mean())) for c in range(3)] == expected, (r["image_id"], i)
    refused = CliRunner().invoke(cli, convert_args(labels, images, tmp_path / "x", "--stack", "3"))
    assert refused.exit_code == 2 and "add --frames all" in refused.output


def test_neighbours_repeat_the_ends_and_hold_k_items() -> None:
    from dcm2tfrec.worker import neighbours

    assert list(neighbours("abcd", 3)) == [
        ("a", ["a", "a", "b"]),
        ("b", ["a", "b", "c"]),
        ("c", ["b", "c", "d"]),
        ("d", ["c", "d", "d"]),
    ]
    assert list(neighbours("a", 3)) == [("a", ["a", "a", "a"])]
    assert list(neighbours("ab", 1)) == [("a", ["a"]), ("b", ["b"])]
    assert [c for c, _ in neighbours("abcdefg", 5)] == list("abcdefg")
    assert next(iter(neighbours("abc", 5))) == ("a", ["a", "a", "a", "b", "c"])
