"""Crash-safe resume: kill -9 at deterministic points, resume, and get the uninterrupted bytes."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from dcm2tfrec.config import ConvertConfig, ImageSpec
from dcm2tfrec.convert import convert
from dcm2tfrec.errors import ConfigError
from dcm2tfrec.faults import FAULTS_ENV
from dcm2tfrec.journal import JOURNAL_NAME, fingerprint_differences, read_journal
from dcm2tfrec.shards import shard_count
from dcm2tfrec.storage import PARTIAL_SUFFIX
from dcm2tfrec.storage.posix import PosixStore
from dcm2tfrec.testing import make_demo
from dcm2tfrec.tfrecord import iter_records

from .helpers import live_processes, output_bytes

OPTIONS = ["--size", "64", "--records-per-shard", "5", "--index", "-q"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """The demo dataset (25 rows, one missing file) and the bytes of its uninterrupted output."""
    root = tmp_path_factory.mktemp("resume")
    labels = make_demo(root, count=24)
    reference = root / "reference"
    assert _run(labels, root / "images", reference).returncode == 3
    return labels, root / "images", output_bytes(reference)


def _run(
    labels: Path, images: Path, out: Path, *extra: str, faults: dict | None = None, fsize: int = 0
) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop(FAULTS_ENV, None)
    if faults:
        env[FAULTS_ENV] = json.dumps(faults)

    def limit() -> None:
        if fsize:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    args = ["--labels", str(labels), "--images", str(images), "--out", str(out), *OPTIONS, *extra]
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dcm2tfrec", "convert", *args],
            stdout=stdout,
            stderr=stderr,
            env=env,
            preexec_fn=limit,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout=120)
            _assert_group_ends(proc.pid)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # workers orphaned by a kill -9 of their parent
        stdout.seek(0)
        stderr.seek(0)
        return subprocess.CompletedProcess(proc.args, code, stdout.read(), stderr.read())


def _assert_group_ends(proc_group: int) -> None:
    """Within 10 s of the parent's end, kill -9 included, no process of its group is left: the
    workers see their pipe close and the fork server its parent go."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = [pid for pid, (_, group, _) in live_processes().items() if group == proc_group]
        if not left:
            return
        time.sleep(0.05)
    raise AssertionError(f"processes {left} outlived their parent")


def _killed(demo, out: Path, point: str, *extra: str) -> None:
    labels, images, _ = demo
    proc = _run(labels, images, out, *extra, faults={f"@{point}": "kill"})
    assert proc.returncode == -9, f"the fault point {point} was never reached: {proc.stderr}"
    for path in out.iterdir():  # a shard under its final name is complete
        if shard_count(path.name) is not None:
            with open(path, "rb") as handle:
                assert len(list(iter_records(handle, path.name))) == shard_count(path.name), path.name


@pytest.mark.parametrize(
    ("points", "workers"),
    [
        (["row:3"], "1"),  # mid first shard, nothing published
        (["row:12"], "2"),  # mid shard, two shards published
        (["publish:1"], "1"),  # shard 1 written and verified under its temporary name, not renamed
        (["journal:2"], "1"),  # shard 2 renamed, its journal line not yet written
        (["write:errors.csv"], "2"),  # every shard done, errors.csv half-written
        (["write:manifest.json"], "1"),  # errors.csv done, manifest half-written
        (["row:4", "publish:2", "journal:4"], "2"),  # killed again and again while resuming
    ],
)
def test_kill_9_then_resume_gives_the_uninterrupted_bytes(
    demo, tmp_path: Path, points: list[str], workers: str
) -> None:
    labels, images, reference = demo
    out = tmp_path / "out"
    for i, point in enumerate(points):
        _killed(demo, out, point, "--workers", workers, *(["--resume"] if i else []))
        assert (out / JOURNAL_NAME).is_file()
    refused = _run(labels, images, out)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    resumed = _run(labels, images, out, "--resume", "--workers", workers)
    assert resumed.returncode == 3, resumed.stderr
    assert output_bytes(out) == reference
    assert json.loads((out / "manifest.json").read_text())["timing"]["resumed"] is True


def test_resume_redoes_a_damaged_shard_and_everything_after_it(demo, tmp_path: Path) -> None:
    labels, images, reference = demo
    out = tmp_path / "out"
    _killed(demo, out, "row:17")
    _, steps = read_journal(PosixStore(str(out))) or ({}, [])
    assert [s.shard.file for s in steps if s.shard] == [
        "train-00000-5.tfrec",
        "train-00001-5.tfrec",
        "train-00002-5.tfrec",
    ]
    shard = out / "train-00001-5.tfrec"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(data)
    assert _run(labels, images, out, "--resume").returncode == 3
    assert output_bytes(out) == reference


def test_resume_of_an_empty_folder_is_a_fresh_run(demo, tmp_path: Path) -> None:
    labels, images, reference = demo
    assert _run(labels, images, tmp_path / "new", "--resume").returncode == 3
    assert output_bytes(tmp_path / "new") == reference


@pytest.fixture(scope="module")
def interrupted(demo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("interrupted") / "out"
    _killed(demo, out, "row:12")
    return out


def _config(labels: Path, images: Path, out: Path, **kw) -> ConvertConfig:
    kw.setdefault("image", ImageSpec(width=64, height=64))
    return ConvertConfig(labels, images, out, records_per_shard=5, index=True, workers=1, resume=True, **kw)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ("labels", "labels_sha256"),
        ("images", "config.images"),
        ("size", "config.image.width: 64 -> 32"),
        ("seed", "config.seed: 42 -> 7"),
        ("records_per_shard", "config.records_per_shard: 5 -> 6"),
    ],
)
def test_resume_refuses_other_inputs_or_options(
    demo, interrupted: Path, tmp_path: Path, change: str, needle: str
) -> None:
    labels, images, _ = demo
    out = tmp_path / "out"
    shutil.copytree(interrupted, out)
    before = output_bytes(out)
    kw: dict = {}
    if change == "labels":
        labels = tmp_path / "labels.csv"
        labels.write_text(demo[0].read_text() + "extra,P999,P000/000000.dcm,1\n")
    elif change == "images":
        images = tmp_path / "images"
        shutil.copytree(demo[1], images)
    elif change == "size":
        kw["image"] = ImageSpec(width=32, height=64)
    elif change == "seed":
        kw["seed"] = 7
    config = _config(labels, images, out, **kw)
    if change == "records_per_shard":
        config = ConvertConfig(
            labels, images, out, records_per_shard=6, index=True, workers=1, resume=True, image=config.image
        )
    with pytest.raises(ConfigError, match="--resume refused") as info:
        convert(config)
    assert needle in str(info.value)
    assert output_bytes(out) == before, "a refused resume must not touch the folder"


def test_resume_refuses_a_finished_run_and_a_foreign_folder(demo, tmp_path: Path) -> None:
    labels, images, _ = demo
    finished = tmp_path / "finished"
    assert _run(labels, images, finished).returncode == 3
    with pytest.raises(ConfigError, match="finished run"):
        convert(_config(labels, images, finished))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="no interrupted dcm2tfrec run"):
        convert(_config(labels, images, foreign))
    with pytest.raises(ConfigError, match="pass one of them"):
        convert(ConvertConfig(labels, images, foreign, resume=True, overwrite=True))
    assert (foreign / "notes.txt").read_text() == "mine"


def test_disk_full_names_the_path_keeps_shards_and_resumes(demo, tmp_path: Path) -> None:
    """A real write failure: RLIMIT_FSIZE makes the OS refuse a shard that grows past 10 kB
    (the first shard has 8.6 kB, the second 11 kB)."""
    labels, images, reference = demo
    out = tmp_path / "out"
    full = _run(labels, images, out, "--workers", "1", fsize=10_000)
    assert full.returncode == 1, full.stderr
    assert "train-0000" in full.stderr and "File too large" in full.stderr and "--resume" in full.stderr
    assert not [p.name for p in out.iterdir() if p.name.endswith(PARTIAL_SUFFIX)]
    assert not (out / "manifest.json").exists()
    assert (out / "train-00000-5.tfrec").read_bytes() == reference["train-00000-5.tfrec"]
    (out / "mine.txt").write_text("not ours")
    resumed = _run(labels, images, out, "--resume")
    assert resumed.returncode == 3, resumed.stderr
    assert (out / "mine.txt").read_text() == "not ours"
    (out / "mine.txt").unlink()
    assert output_bytes(out) == reference


def test_fingerprint_differences_name_each_leaf() -> None:
    old = {"config": {"seed": 1, "image": {"width": 64}}, "labels_sha256": "a"}
    new = {"config": {"seed": 1, "image": {"width": 32}}, "labels_sha256": "b"}
    assert fingerprint_differences(old, new) == ["config.image.width: 64 -> 32", "labels_sha256: 'a' -> 'b'"]
    assert fingerprint_differences(old, old) == []


def test_kill_9_mid_fold_then_resume_gives_the_uninterrupted_bytes(demo, tmp_path: Path) -> None:
    labels, images, _ = demo
    folds = ["--folds", "3", "--group-col", "patient_id", "--stratify"]
    assert _run(labels, images, tmp_path / "reference", *folds).returncode == 3
    out = tmp_path / "out"
    _killed(demo, out, "row:13", *folds)  # inside the second fold
    assert _run(labels, images, out, "--resume", *folds[:2]).returncode == 2  # options differ
    assert _run(labels, images, out, "--resume", *folds).returncode == 3
    assert output_bytes(out) == output_bytes(tmp_path / "reference")
    assert any(name.startswith("fold2-") for name in output_bytes(out))
