"""Hostile inputs: every file and CSV row gets a verdict, never a crash; workers that die or hang
cost exactly their row."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dcm2tfrec.config import ConvertConfig, ImageSpec
from dcm2tfrec.convert import convert
from dcm2tfrec.errors import ConfigError
from dcm2tfrec.faults import FAULTS_ENV
from dcm2tfrec.testing import anatomy, make_hostile, write_dicom

from .helpers import read_errors, read_shards, write_labels


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("hostile")
    cases = make_hostile(root / "images", root / "outside")
    labels = write_labels(
        root / "labels.csv",
        [{"image_id": k, "path": p, "target": 1} for k, (p, _) in cases.items()],
        ["image_id", "path", "target"],
    )
    out = root / "out"
    result = convert(
        ConvertConfig(
            labels=labels,
            images=root / "images",
            out=out,
            workers=2,
            image=ImageSpec(width=32, height=32),
            records_per_shard=10,
        )
    )
    return cases, out, result


def test_every_hostile_file_gets_its_specific_verdict(hostile) -> None:
    cases, out, result = hostile
    converted = {r["image_id"] for r in read_shards(out)}
    errors = {e["id"]: e for e in read_errors(out)}
    assert len(converted) + len(errors) == len(cases) == result.rows
    wrong = {}
    for image_id, (_, expected) in cases.items():
        got = None if image_id in converted else errors[image_id]["reason"]
        if got != expected:
            wrong[image_id] = (expected, got, errors.get(image_id, {}).get("message"))
    assert not wrong, wrong


def test_messages_name_the_problem(hostile) -> None:
    _, out, _ = hostile
    errors = {e["id"]: e["message"] for e in read_errors(out)}
    assert "60000 x 60000" in errors["huge_native"] and "--max-pixels" in errors["huge_native"]
    assert "codestream is 64 x 64, the header says 128 x 128" in errors["j2k_disagrees"]
    assert "frames' worth" in errors["second_frame"]


def test_converted_oddities_have_sane_pixels(hostile) -> None:
    _, out, _ = hostile
    records = {r["image_id"]: r["image"] for r in read_shards(out)}
    assert records["colour"].shape == (32, 32, 1)
    assert np.all(records["constant"] == 0)
    good = records["good"]
    for image_id in (
        "no_preamble_meta",
        "no_preamble_no_meta",
        "no_tsyntax_meta",
        "nested",
        "huge_length",
        "with space.dcm",
        "long_pixels",
        "long_pixels_be",
    ):
        key = image_id.removesuffix(".dcm") if image_id.endswith(".dcm") else image_id
        assert np.array_equal(records.get(key, records.get(image_id)), good), image_id


@pytest.mark.parametrize(
    "text",
    ["image_id,path,target\n1,a.dcm,0,extra\n2,b.dcm,1\n", 'image_id,path,target\n1,"a.dcm,0\n2,b.dcm,1\n'],
)
def test_broken_csv_is_refused_with_line_numbers_before_writing(tmp_path: Path, text: str) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "labels.csv").write_text(text)
    with pytest.raises(ConfigError, match=r"line 2[:, ]"):
        convert(ConvertConfig(labels=tmp_path / "labels.csv", images=tmp_path / "img", out=tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def _fault_dataset(tmp_path: Path, n: int = 24) -> Path:
    images = tmp_path / "img"
    rows = []
    for i in range(n):
        write_dicom(images / f"{i}.dcm", anatomy(64, 64, 0, 4000, np.uint16, i), bits_stored=12)
        rows.append({"image_id": f"r{i:02d}", "path": f"{i}.dcm", "target": i % 2})
    return write_labels(tmp_path / "labels.csv", rows)


@pytest.mark.parametrize(
    ("faults", "reasons", "workers"),
    [
        ({"r05": "segfault", "r17": "abort"}, {"r05": "worker_crashed", "r17": "worker_crashed"}, 2),
        ({"r09": "kill"}, {"r09": "worker_crashed"}, 2),
        ({"r11": "hang"}, {"r11": "timeout"}, 2),
        ({"r03": "memory"}, {"r03": "out_of_memory"}, 2),
        (
            {"r05": "segfault", "r11": "hang", "r03": "memory"},
            {"r05": "worker_crashed", "r11": "timeout", "r03": "out_of_memory"},
            1,
        ),
    ],
)
def test_a_dying_or_hanging_worker_costs_exactly_its_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, faults: dict, reasons: dict, workers: int
) -> None:
    labels = _fault_dataset(tmp_path)
    clean = tmp_path / "clean"
    convert(ConvertConfig(labels=labels, images=tmp_path / "img", out=clean, workers=2, chunk_size=4))
    monkeypatch.setenv(FAULTS_ENV, json.dumps(faults))
    out = tmp_path / "out"
    result = convert(
        ConvertConfig(
            labels=labels,
            images=tmp_path / "img",
            out=out,
            workers=workers,
            chunk_size=4,
            timeout=3.0,
            worker_memory=2048,
        )
    )
    assert {f.image_id: f.reason for f in result.failures} == reasons
    good = {r["image_id"]: r["image"] for r in read_shards(clean)}
    got = {r["image_id"]: r["image"] for r in read_shards(out)}
    assert set(got) == set(good) - set(reasons)
    assert all(np.array_equal(got[k], good[k]) for k in got)


def test_the_fault_hook_is_off_unless_tests_set_it(tmp_path: Path) -> None:
    assert FAULTS_ENV not in os.environ
    labels = _fault_dataset(tmp_path, 4)
    result = convert(ConvertConfig(labels=labels, images=tmp_path / "img", out=tmp_path / "out", workers=1))
    assert result.records == 4


_HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, str(os.getpid()).encode())
print("held", flush=True)
time.sleep(60)
"""


def test_a_second_run_on_the_same_output_is_refused(tmp_path: Path) -> None:
    labels = _fault_dataset(tmp_path, 2)
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(out / ".dcm2tfrec.lock")], stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        with pytest.raises(ConfigError, match=f"in use by another dcm2tfrec convert \\(pid {holder.pid}\\)"):
            convert(ConvertConfig(labels=labels, images=tmp_path / "img", out=out, overwrite=True))
        with pytest.raises(ConfigError, match="in use"):  # not "pass --resume": the folder is busy
            convert(ConvertConfig(labels=labels, images=tmp_path / "img", out=out, resume=True))
    finally:
        holder.kill()
        holder.wait()
    assert (
        convert(ConvertConfig(labels=labels, images=tmp_path / "img", out=out, overwrite=True)).records == 2
    )
    assert not (out / ".dcm2tfrec.lock").exists()


@pytest.mark.parametrize("content", ["", "1", "{pid}"])
def test_a_lock_nobody_holds_is_taken_over_whatever_pid_it_names(tmp_path: Path, content: str) -> None:
    """An empty lock, pid 1 (a container's init) or a live pid (pid reuse) held by no process is stale."""
    labels = _fault_dataset(tmp_path, 2)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".dcm2tfrec.lock").write_text(content.format(pid=os.getpid()))
    assert (
        convert(ConvertConfig(labels=labels, images=tmp_path / "img", out=out, overwrite=True)).records == 2
    )
    assert not (out / ".dcm2tfrec.lock").exists()
