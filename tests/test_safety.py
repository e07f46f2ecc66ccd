"""Data safety, round 2: only what dcm2tfrec demonstrably wrote is ever deleted or replaced."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from dcm2tfrec.cli import cli
from dcm2tfrec.config import ConvertConfig, ImageSpec
from dcm2tfrec.convert import convert
from dcm2tfrec.errors import ConfigError, OutputError
from dcm2tfrec.testing import make_demo

from .helpers import convert_args, output_bytes


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("safety")
    return make_demo(root, count=8), root / "images"


def _config(demo: tuple[Path, Path], out: Path, **kw: object) -> ConvertConfig:
    labels, images = demo
    kw.setdefault("records_per_shard", 3)
    return ConvertConfig(labels, images, out, image=ImageSpec(width=32, height=32), workers=1, **kw)


MINE = b"the user's own bytes"


@pytest.mark.parametrize("name", ["manifest.json", "errors.csv", ".dcm2tfrec.journal.jsonl"])
def test_overwrite_refuses_when_a_name_it_must_write_is_someone_elses(
    demo, tmp_path: Path, name: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_bytes(MINE)
    with pytest.raises(ConfigError, match=f"{name}.*not written by dcm2tfrec"):
        convert(_config(demo, out, overwrite=True))
    assert [p.name for p in out.iterdir()] == [name] and (out / name).read_bytes() == MINE


def test_overwrite_keeps_lookalikes_that_no_manifest_lists_and_says_so(demo, tmp_path: Path, caplog) -> None:
    out = tmp_path / "out"
    old = convert(_config(demo, out, prefix="old", records_per_shard=2))
    lookalikes = [
        "train-00000-5.tfrec",
        "old-00009-2.tfrec",
        "old-00009-2.idx",
        "notes.partial",
        ".x.partial",
    ]
    for name in lookalikes:
        (out / name).write_bytes(MINE)
    shutil.copy(out / "old-00000-2.tfrec", out / "copy-00000-2.tfrec")  # ours in shape, listed nowhere
    result = convert(_config(demo, out, overwrite=True))
    names = sorted(p.name for p in out.iterdir())
    assert not {s.file for s in old.shards} & set(names)  # listed in the old manifest: removed
    new = {s.file for s in result.shards}
    assert set(names) == {*lookalikes, "copy-00000-2.tfrec", *new, "manifest.json", "errors.csv"}
    assert all((out / n).read_bytes() == MINE for n in lookalikes)
    assert sorted(result.kept) == sorted([*lookalikes, "copy-00000-2.tfrec"])
    assert "look like dcm2tfrec output" in caplog.text and "train-00000-5.tfrec" in caplog.text


def test_a_listed_shard_whose_size_changed_is_not_ours_any_more(demo, tmp_path: Path) -> None:
    out = tmp_path / "out"
    convert(_config(demo, out, prefix="old"))
    (out / "old-00000-3.tfrec").write_bytes(MINE)  # the user replaced it
    result = convert(_config(demo, out, overwrite=True))
    assert (out / "old-00000-3.tfrec").read_bytes() == MINE and "old-00000-3.tfrec" in result.kept
    assert not (out / "old-00001-3.tfrec").exists()


def test_a_foreign_file_under_a_name_the_run_publishes_is_never_replaced(demo, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "train-00001-3.tfrec").write_bytes(MINE)
    with pytest.raises(OutputError, match=r"train-00001-3\.tfrec exists and was not written by this run"):
        convert(_config(demo, out, overwrite=True))
    assert (out / "train-00001-3.tfrec").read_bytes() == MINE
    assert (out / "train-00000-3.tfrec").is_file()  # the shard before it is kept for --resume
    (out / "train-00001-3.tfrec").rename(tmp_path / "moved.tfrec")
    convert(_config(demo, out, resume=True))
    reference = tmp_path / "reference"
    convert(_config(demo, reference))
    assert output_bytes(out) == output_bytes(reference)


def test_the_cli_names_what_it_kept(demo, tmp_path: Path) -> None:
    labels, images = demo
    out = tmp_path / "out"
    out.mkdir()
    (out / "train-00042-1.tfrec").write_bytes(MINE)
    result = CliRunner().invoke(cli, convert_args(labels, images, out, "--overwrite", "--size", "16", "-q"))
    assert result.exit_code == 3, result.output
    assert "train-00042-1.tfrec" in result.output and (out / "train-00042-1.tfrec").read_bytes() == MINE


def test_an_out_that_cannot_be_created_is_a_clear_usage_error(demo, tmp_path: Path) -> None:
    labels, images = demo
    result = CliRunner().invoke(cli, convert_args(labels, images, Path("/proc/self/dcm2tfrec-out"), "-q"))
    assert result.exit_code == 2 and "cannot create --out /proc/self/dcm2tfrec-out" in result.output
    (tmp_path / "file").write_text("mine")
    result = CliRunner().invoke(cli, convert_args(labels, images, tmp_path / "file", "-q"))
    assert result.exit_code == 2 and "exists and is not a folder" in result.output


_FULL = """
import resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # a full disk for every file, temporary ones too
from dcm2tfrec.cli import main
sys.argv = ["dcm2tfrec", *sys.argv[1:]]
main()
"""


def test_a_full_disk_is_a_clear_error_from_the_first_byte(demo, tmp_path: Path) -> None:
    import subprocess
    import sys

    labels, images = demo
    out = tmp_path / "out"
    out.mkdir()
    (out / ".dcm2tfrec.lock").symlink_to("/dev/full")  # the lock's first byte: ENOSPC
    result = CliRunner().invoke(cli, convert_args(labels, images, out, "-q"))
    assert result.exit_code == 1 and "cannot write the lock" in result.output, result.output
    assert "No space left on device" in result.output and list(out.iterdir()) == []
    proc = subprocess.run(
        [sys.executable, "-c", _FULL, *convert_args(labels, images, tmp_path / "out2", "-q")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "cannot start the worker processes" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
