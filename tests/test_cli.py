from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dcm2tfrec.cli import cli
from dcm2tfrec.journal import JOURNAL_NAME
from dcm2tfrec.testing import anatomy, make_demo

from .helpers import convert_args, live_processes, output_bytes, read_errors, read_shards

DCM2TFREC = [sys.executable, "-m", "dcm2tfrec"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("demo")
    labels = make_demo(root, count=12)
    return labels, root / "images"


def _args(labels: Path, images: Path, out: Path, *extra: str) -> list[str]:
    return convert_args(labels, images, out, "--workers", "1", *extra)


def test_cli_converts_the_demo_and_reports_rejections(demo, tmp_path: Path) -> None:
    labels, images = demo
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, _args(labels, images, out, "--size", "64x48", "--records-per-shard", "5")
    )
    assert result.exit_code == 3, result.output
    assert "13 rows -> 12 records in 3 shard(s)" in result.output
    assert "file_missing  1" in result.output and "images/s" in result.output
    assert sorted(p.name for p in out.glob("*.tfrec")) == [
        "train-00000-5.tfrec",
        "train-00001-5.tfrec",
        "train-00002-2.tfrec",
    ]
    assert all(r["image"].shape == (48, 64, 1) for r in read_shards(out))
    assert [e["reason"] for e in read_errors(out)] == ["file_missing"]


def test_cli_exit_0_when_every_row_converts(dataset, tmp_path: Path) -> None:
    labels, images = dataset({"a": dict(pixels=anatomy(32, 32, 0, 200, np.uint8))})
    result = CliRunner().invoke(cli, _args(labels, images, tmp_path / "out", "--quiet"))
    assert result.exit_code == 0, result.output
    assert result.output == ""


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--size", "abc"], "--size"),
        (["--window", "40"], "--window"),
        (["--id-col", "nope"], "no column 'nope'"),
        (["--path-template", "{nope}.dcm"], "no column 'nope'"),
    ],
)
def test_usage_errors_exit_2_and_write_nothing(demo, tmp_path: Path, extra: list[str], needle: str) -> None:
    labels, images = demo
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, _args(labels, images, out, *extra))
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert not out.exists()


def test_existing_output_exit_2(demo, tmp_path: Path) -> None:
    labels, images = demo
    out = tmp_path / "out"
    out.mkdir()
    (out / "x").write_text("x")
    result = CliRunner().invoke(cli, _args(labels, images, out))
    assert result.exit_code == 2 and "--overwrite" in result.output


def test_real_subprocess_run(demo, tmp_path: Path) -> None:
    labels, images = demo
    out = tmp_path / "out"
    proc = subprocess.run(
        [*DCM2TFREC, *_args(labels, images, out, "--workers", "2", "--bits", "16", "--index")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 3, proc.stderr
    assert "12 records" in proc.stdout and "img/s" in proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["totals"]["records"] == 12 and manifest["pixel_policy"]["value_offset"] == 32768
    assert all(r["image"].dtype == np.uint16 for r in read_shards(out))
    for shard in manifest["shards"]:
        lines = (out / shard["index"]).read_text().splitlines()
        assert (
            len(lines) == shard["records"] and sum(int(line.split()[1]) for line in lines) == shard["bytes"]
        )


def test_help_is_fast_and_imports_no_heavy_library() -> None:
    code = (
        "import sys; from click.testing import CliRunner; from dcm2tfrec.cli import cli; "
        "r = CliRunner().invoke(cli, ['convert', '--help']); assert r.exit_code == 0; "
        "heavy = [m for m in ('tensorflow', 'pydicom', 'cv2', 'pandas', 'joblib') if m in sys.modules]; "
        "print(heavy)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def _ctrl_c_default() -> None:
    """Let the child take Ctrl-C even when the suite runs where it is ignored (a background job)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _group(leader: int) -> list[bytes]:
    """Command lines of the live processes in ``leader``'s process group."""
    return [command for _, group, command in live_processes().values() if group == leader]


def _ctrl_c_when(demo, out: Path, seen: bytes, after: float = 0.0) -> tuple[subprocess.Popen, str]:
    """A run (one of its rows hangs, so it cannot end first) sent Ctrl-C ``after`` seconds after a
    process of its group whose command line holds ``seen`` appears; returns it, finished, and its stderr."""
    from dcm2tfrec.faults import FAULTS_ENV

    labels, images = demo
    proc = subprocess.Popen(
        [*DCM2TFREC, *_args(labels, images, out, "-q")],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_ctrl_c_default,
        env={**os.environ, FAULTS_ENV: json.dumps({"000003": "hang"})},
    )
    deadline = time.time() + 60
    while time.time() < deadline and not any(seen in c for c in _group(proc.pid)):
        time.sleep(0.002)
    time.sleep(after)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    return proc, err


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_ctrl_c_while_the_workers_start_is_quiet_and_leaves_nothing(demo, tmp_path: Path) -> None:
    """Ctrl-C while the fork server still imports the pixel stack: no traceback from the server
    or from a half-started worker, exit 130, and no process left behind."""
    # 0.15 s: into the server's imports (0.6 s here), past its interpreter's start
    proc, err = _ctrl_c_when(demo, tmp_path / "out", b"forkserver", after=0.15)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    deadline = time.time() + 10
    while time.time() < deadline and _group(proc.pid):
        time.sleep(0.05)
    assert _group(proc.pid) == []


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_ctrl_c_while_the_server_is_being_started_is_never_lost(demo, tmp_path: Path) -> None:
    """Ctrl-C the moment the resource tracker appears, i.e. while the caller starts the fork server
    (a stop there was once swallowed and the run went on): exit 130, every time, promptly."""
    for attempt in range(4):
        proc, err = _ctrl_c_when(demo, tmp_path / f"out{attempt}", b"resource_tracker")
        assert proc.returncode == 130 and "Traceback" not in err, (attempt, err)


@pytest.mark.parametrize(
    ("stop", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)]
)
def test_a_stop_signal_keeps_only_complete_shards_then_resumes(tmp_path: Path, stop: int, code: int) -> None:
    from dcm2tfrec.testing import write_dicom

    images = tmp_path / "images"
    lines = ["image_id,path,target"]
    for i in range(400):
        write_dicom(images / f"{i}.dcm", anatomy(256, 256, 0, 3000, np.uint16, i % 7), bits_stored=12)
        lines.append(f"{i},{i}.dcm,0")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            *DCM2TFREC,
            *_args(tmp_path / "labels.csv", images, out, "--records-per-shard", "20", "-q"),
        ],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_ctrl_c_default,
    )
    deadline = time.time() + 60
    while time.time() < deadline and not (out.exists() and any(out.glob("*.tfrec"))):
        time.sleep(0.01)
    os.killpg(proc.pid, stop)  # as Ctrl-C, systemd or SLURM do: the parent and every worker
    started = time.time()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    assert time.time() - started < 5
    assert "interrupted" in err
    assert "Traceback" not in err
    names = set(os.listdir(out)) - {JOURNAL_NAME}
    assert names and all(n.endswith(".tfrec") and not n.startswith(".") for n in names)  # no lock either
    for shard in out.glob("*.tfrec"):
        assert shard.name.endswith("-20.tfrec")
    resumed = subprocess.run(
        [
            *DCM2TFREC,
            *_args(tmp_path / "labels.csv", images, out, "--records-per-shard", "20", "-q", "--resume"),
        ],
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    reference = tmp_path / "reference"
    result = CliRunner().invoke(
        cli, _args(tmp_path / "labels.csv", images, reference, "--records-per-shard", "20", "-q")
    )
    assert result.exit_code == 0, result.output
    assert output_bytes(out) == output_bytes(reference)
