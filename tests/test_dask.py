"""The Dask engine: the same bytes as this machine's engine, per-row isolation on the cluster, and
servers on 127.0.0.1 only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dcm2tfrec.config import ConvertConfig, ImageSpec
from dcm2tfrec.convert import convert
from dcm2tfrec.faults import FAULTS_ENV
from dcm2tfrec.testing import make_demo

from .helpers import killed_at, output_bytes, write_bad_values, write_rows

pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("dask")
    labels = make_demo(root, count=12)
    convert(_config(labels, root / "images", root / "reference", workers=2))
    return labels, root / "images", output_bytes(root / "reference")


def _config(labels: Path, images: Path, out: Path, **kw: object) -> ConvertConfig:
    return ConvertConfig(
        labels, images, out, image=ImageSpec(width=32, height=32), records_per_shard=5, index=True, **kw
    )


def test_a_local_cluster_gives_this_machines_bytes(demo, tmp_path: Path) -> None:
    labels, images, reference = demo
    result = convert(_config(labels, images, tmp_path / "out", dask="local:2"))
    assert result.records == 12 and [f.reason for f in result.failures] == ["file_missing"]
    assert output_bytes(tmp_path / "out") == reference


def test_a_crash_or_a_hang_on_the_cluster_costs_only_its_row(tmp_path: Path, monkeypatch) -> None:
    labels, _ = write_rows(tmp_path, 12)
    clean = convert(_config(labels, tmp_path / "img", tmp_path / "clean", workers=2))
    monkeypatch.setenv(FAULTS_ENV, json.dumps({"r03": "segfault", "r07": "hang", "r09": "memory"}))
    result = convert(
        _config(labels, tmp_path / "img", tmp_path / "out", dask="local:2", timeout=3.0, worker_memory=2048)
    )
    assert {f.image_id: f.reason for f in result.failures} == {
        "r03": "worker_crashed",
        "r07": "timeout",
        "r09": "out_of_memory",
    }
    assert result.records == clean.records - 3


@pytest.fixture
def dask_pair(tmp_path: Path):
    """Factory: a real ``dask scheduler`` and ``dask worker --nworkers 2 --nthreads 1`` pair on
    127.0.0.1 as subprocesses (with ``env`` added to the workers'), stopped by their PIDs at the end."""
    import os
    import subprocess
    import sys
    import time

    started: list[subprocess.Popen] = []

    def start(env: dict[str, str] | None = None) -> tuple[Path, list[subprocess.Popen]]:
        scheduler_file = tmp_path / f"scheduler{len(started)}.json"
        base = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        loopback = ["--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0"]
        started.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "distributed.cli.dask_scheduler",
                    *loopback,
                    "--port",
                    "0",
                    "--scheduler-file",
                    str(scheduler_file),
                ],
                env=base,
                **quiet,
            )
        )
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        started.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "distributed.cli.dask_worker",
                    "--scheduler-file",
                    str(scheduler_file),
                    "--nworkers",
                    "2",
                    "--nthreads",
                    "1",
                    *loopback,
                ],
                env={**base, **(env or {})},
                **quiet,
            )
        )
        return scheduler_file, started[-2:]

    try:
        yield start
    finally:
        for proc in reversed(started):
            proc.terminate()
        for proc in reversed(started):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_a_real_scheduler_and_workers_give_the_same_bytes_and_listen_on_loopback_only(
    demo, tmp_path: Path, dask_pair
) -> None:
    from distributed import Client

    from .helpers import descendants, listening_addresses

    labels, images, reference = demo
    scheduler_file, started = dask_pair()
    with Client(scheduler_file=str(scheduler_file)) as client:
        client.wait_for_workers(2, timeout=60)
    result = convert(_config(labels, images, tmp_path / "out", dask=str(scheduler_file)))
    assert result.records == 12 and output_bytes(tmp_path / "out") == reference
    pids = set().union(*(descendants(p.pid) for p in started))
    addresses = listening_addresses(pids)
    assert addresses and all(a.startswith(("127.0.0.1:", "::1:")) for a in addresses), addresses


def test_local_cluster_servers_listen_on_loopback_only() -> None:
    import os

    from dcm2tfrec.engine.dask import DaskEngine

    from .helpers import descendants, listening_addresses

    with DaskEngine("local:2") as engine:
        assert engine.workers == 2
        addresses = listening_addresses(descendants(os.getpid()))
    assert addresses and all(a.startswith(("127.0.0.1:", "::1:")) for a in addresses), addresses


def test_kill_9_of_a_dask_worker_mid_run_changes_nothing(tmp_path: Path, dask_pair) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from distributed import Client

    from .helpers import live_processes

    labels, _ = write_rows(tmp_path, 160, side=384, width=3)
    reference = tmp_path / "reference"
    convert(_config(labels, tmp_path / "img", reference, workers=2))
    scheduler_file, _ = dask_pair()
    with Client(scheduler_file=str(scheduler_file)) as client:
        client.wait_for_workers(2, timeout=60)
        dask_workers = list(client.run(os.getpid).values())
    out = tmp_path / "out"
    args = ["--labels", str(labels), "--images", str(tmp_path / "img"), "--out", str(out), "--size", "32"]
    command = [
        sys.executable,
        "-m",
        "dcm2tfrec",
        "convert",
        *args,
        "--records-per-shard",
        "5",
        "--index",
        "-q",
    ]
    run = subprocess.Popen([*command, "--dask", str(scheduler_file)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(out.glob("*.tfrec")) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert run.poll() is None, "the run ended before a worker could be killed"
    os.kill(dask_workers[0], signal.SIGKILL)  # its nanny starts another; its tasks run again
    _, err = run.communicate(timeout=180)
    assert run.returncode == 0, err
    assert output_bytes(out) == output_bytes(reference)
    assert dask_workers[0] not in live_processes()


def test_workers_whose_pixel_stack_differs_are_refused_naming_the_package(
    demo, tmp_path: Path, dask_pair
) -> None:
    from distributed import Client

    from dcm2tfrec.errors import ConfigError

    labels, images, _ = demo
    fake = tmp_path / "site"
    (fake / "pillow-1.0.0.dist-info").mkdir(parents=True)
    (fake / "pillow-1.0.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: pillow\nVersion: 1.0.0\n"
    )
    scheduler_file, _ = dask_pair({"PYTHONPATH": str(fake)})  # the workers see another Pillow
    with Client(scheduler_file=str(scheduler_file)) as client:
        client.wait_for_workers(2, timeout=60)
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=r"pillow 1\.0\.0 on .*, [0-9.]+ here"):
        convert(_config(labels, images, out, dask=str(scheduler_file)))
    assert not out.exists() or not list(out.iterdir())  # refused before anything was written


def test_ctrl_c_on_the_client_cancels_the_cluster_run_and_resume_goes_on(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    labels, _ = write_rows(tmp_path, 200, side=384, width=3)
    out = tmp_path / "out"
    args = [
        "--labels",
        str(labels),
        "--images",
        str(tmp_path / "img"),
        "--size",
        "32",
        "--records-per-shard",
        "5",
    ]
    command = [sys.executable, "-m", "dcm2tfrec", "convert", *args, "-q"]
    run = subprocess.Popen(
        [*command, "--out", str(out), "--dask", "local:2"],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while not list(out.glob("*.tfrec")) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert run.poll() is None, run.stderr.read() if run.stderr else ""
    os.kill(run.pid, signal.SIGINT)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 130, err
    assert "Traceback" not in err and not (out / ".dcm2tfrec.lock").exists()
    from .helpers import live_processes

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(g == run.pid for _, g, _ in live_processes().values()):
        time.sleep(0.1)
    assert not [p for p, (_, g, _) in live_processes().items() if g == run.pid]  # the cluster is gone too
    resumed = subprocess.run(
        [*command, "--out", str(out), "--resume"], capture_output=True, text=True, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr
    reference = tmp_path / "reference"
    assert subprocess.run([*command, "--out", str(reference)], timeout=120).returncode == 0
    assert output_bytes(out) == output_bytes(reference)


def test_a_cluster_writing_to_s3_gives_this_machines_bytes(demo, tmp_path: Path, s3_server) -> None:
    import copy

    import fsspec

    labels, images, reference = demo
    fs = fsspec.filesystem("s3", **s3_server)
    fs.mkdir("cluster")
    options = tuple(s3_server.items())
    result = convert(_config(labels, images, "s3://cluster/out", dask="local:2", storage_options=options))
    assert result.records == 12
    folder = tmp_path / "got"
    folder.mkdir()
    for name in fs.ls("cluster/out", detail=False):
        (folder / Path(name).name).write_bytes(fs.cat_file(name))
    got, expected = output_bytes(folder), copy.deepcopy(reference)
    assert got == expected  # no part object is left either


@pytest.mark.parametrize(
    "points", [["row:6"], ["journal:1"], ["write:manifest.json"], ["row:3", "journal:2"]]
)
def test_kill_9_of_the_client_on_a_cluster_then_resume_gives_the_uninterrupted_bytes(
    demo, tmp_path: Path, points: list[str]
) -> None:
    import os
    import subprocess
    import sys

    from .helpers import convert_args

    labels, images, reference = demo
    out = tmp_path / "out"
    args = convert_args(labels, images, out, "--size", "32", "--records-per-shard", "5", "--index", "-q")
    command = [sys.executable, "-m", "dcm2tfrec", *args, "--dask", "local:2"]
    killed_at(command, points)
    env = {k: v for k, v in os.environ.items() if k != FAULTS_ENV}
    resumed = subprocess.run([*command, "--resume"], env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 3, resumed.stderr
    assert output_bytes(out) == reference  # shards, index files, errors.csv, manifest; no part left


def test_kill_9_of_a_cluster_client_writing_to_s3_then_resume_gives_the_uninterrupted_bytes(
    demo, tmp_path: Path, s3_server
) -> None:
    import copy
    import os
    import subprocess
    import sys

    import fsspec

    from .helpers import convert_args

    labels, images, reference = demo
    fs = fsspec.filesystem("s3", **s3_server)
    fs.mkdir("cluster-kill")
    options = [arg for key, value in s3_server.items() for arg in ("--storage-option", f"{key}={value}")]
    args = convert_args(
        labels, images, "s3://cluster-kill/out", "--size", "32", "--records-per-shard", "5", "--index"
    )
    command = [sys.executable, "-m", "dcm2tfrec", *args, "-q", "--dask", "local:2", *options]
    killed_at(command, ["row:7", "journal:1"])
    env = {k: v for k, v in os.environ.items() if k != FAULTS_ENV}
    resumed = subprocess.run([*command, "--resume"], env=env, capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 3, resumed.stderr
    folder = tmp_path / "got"
    folder.mkdir()
    for name in fs.ls("cluster-kill/out", detail=False):
        (folder / Path(name).name).write_bytes(fs.cat_file(name))
    assert output_bytes(folder) == copy.deepcopy(reference)
    assert fs.call_s3("list_multipart_uploads", Bucket="cluster-kill").get("Uploads", []) == []


def test_a_real_scheduler_and_workers_writing_to_s3_give_the_same_bytes(
    demo, tmp_path: Path, dask_pair, s3_server
) -> None:
    import fsspec
    from distributed import Client

    labels, images, reference = demo
    scheduler_file, _ = dask_pair()
    with Client(scheduler_file=str(scheduler_file)) as client:
        client.wait_for_workers(2, timeout=60)
    fs = fsspec.filesystem("s3", **s3_server)
    fs.mkdir("pair")
    options = tuple(s3_server.items())
    convert(_config(labels, images, "s3://pair/out", dask=str(scheduler_file), storage_options=options))
    folder = tmp_path / "got"
    folder.mkdir()
    for name in fs.ls("pair/out", detail=False):
        (folder / Path(name).name).write_bytes(fs.cat_file(name))
    assert output_bytes(folder) == reference


def test_reader_warnings_on_the_cluster_come_back_with_the_parts(tmp_path: Path) -> None:
    labels = write_bad_values(tmp_path, bad=3, good=3)
    tags = ("InstanceNumber",)
    config = _config(labels, tmp_path / "img", tmp_path / "out", dask="local:2", dicom_tags=tags)
    result = convert(config)
    assert result.records == 6
    assert sorted({n.image_id for n in result.notes}) == ["b0", "b1", "b2"]
    assert "3 x Invalid value for VR IS: '1.5'." in result.summary()
