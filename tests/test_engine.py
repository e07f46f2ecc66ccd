"""The engine seam: convert runs on an engine it is given, and the local engine's process limits
apply to its worker processes only, never beyond what the shell allows."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from dcm2tfrec.config import ConvertConfig, ImageSpec
from dcm2tfrec.convert import convert
from dcm2tfrec.engine.local import LocalEngine
from dcm2tfrec.testing import make_demo

from .helpers import convert_args, output_bytes, read_shards


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("engine")
    return make_demo(root, count=8), root / "images"


def _config(demo: tuple[Path, Path], out: Path, **kw: object) -> ConvertConfig:
    labels, images = demo
    return ConvertConfig(labels, images, out, image=ImageSpec(width=32, height=32), records_per_shard=3, **kw)


def test_convert_runs_on_the_engine_it_is_given_and_leaves_it_to_its_owner(demo, tmp_path: Path) -> None:
    reference = convert(_config(demo, tmp_path / "reference", workers=2))
    with LocalEngine(workers=1) as engine:
        first = convert(_config(demo, tmp_path / "one"), engine=engine)
        assert engine.workers == 1 and len(engine._running) == 1  # still up: the caller closes it
        second = convert(_config(demo, tmp_path / "two"), engine=engine)
    assert not engine._running
    assert first.records == second.records == reference.records == 8
    assert (
        output_bytes(tmp_path / "one")
        == output_bytes(tmp_path / "two")
        == output_bytes(tmp_path / "reference")
    )


def test_the_memory_cap_applies_to_workers_never_to_the_caller(demo, tmp_path: Path) -> None:
    before = resource.getrlimit(resource.RLIMIT_AS)
    result = convert(_config(demo, tmp_path / "out", worker_memory=1024))
    assert result.records == 8
    assert resource.getrlimit(resource.RLIMIT_AS) == before


def test_the_cap_never_exceeds_the_hard_limit() -> None:
    code = (
        "import resource; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30)); "
        "from dcm2tfrec.engine.local import memory_cap; "
        "print(memory_cap(0), memory_cap(1024) >> 20, memory_cap(8192) >> 20)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["0", "1024", "3072"], proc.stderr


_ULIMIT = """
import resource, sys
limit = int(sys.argv[1]) << 20
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from dcm2tfrec.cli import main
sys.argv = ["dcm2tfrec", *sys.argv[2:]]
main()
"""


def test_a_shell_limit_below_worker_memory_caps_workers_there_and_says_so_once(demo, tmp_path: Path) -> None:
    labels, images = demo
    out = tmp_path / "out"
    args = convert_args(labels, images, out, "--size", "32", "-q")
    proc = subprocess.run(
        [sys.executable, "-c", _ULIMIT, "4096", *args, "--workers", "2", "--worker-memory", "8192"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 3, proc.stderr  # the demo lists one missing file
    assert len(read_shards(out)) == 8
    assert proc.stderr.count("above this shell's hard limit") == 1, proc.stderr
    assert "capped at 4096 MiB" in proc.stderr


def test_a_hanging_row_costs_one_timeout_and_the_other_rows_go_on(tmp_path: Path, monkeypatch) -> None:
    """Rows run in chunks of 8: the hang used to cost the chunk's whole deadline (8 x timeout) and then
    a timeout more while its rows were re-run one by one, the other worker idle meanwhile."""
    import json
    import time

    from dcm2tfrec.faults import FAULTS_ENV

    from .helpers import write_rows

    labels, _ = write_rows(tmp_path, 32)
    monkeypatch.setenv(FAULTS_ENV, json.dumps({"r01": "hang", "r20": "kill"}))
    config = ConvertConfig(labels, tmp_path / "img", tmp_path / "out", workers=2, chunk_size=8, timeout=4.0)
    started = time.monotonic()
    result = convert(config)
    elapsed = time.monotonic() - started
    assert {f.image_id: f.reason for f in result.failures} == {"r01": "timeout", "r20": "worker_crashed"}
    assert result.records == 30 and elapsed < 12, elapsed  # one timeout (4 s), not 36 s
