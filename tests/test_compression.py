"""--compression gzip: each shard one deterministic gzip stream of exactly the uncompressed shard;
read back by make_dataset, the torch reader and inspect (damage reported, never a traceback),
resumed after kill -9, assembled the same on a cluster; --index refused with it."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import dcm2tfrec
from dcm2tfrec.cli import cli
from dcm2tfrec.testing import make_demo

from .helpers import convert_args, killed_at, output_bytes, read_shards


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, Path]:
    root = tmp_path_factory.mktemp("gzip")
    labels = make_demo(root, count=10)
    for name, extra in (("plain", []), ("gzip", ["--compression", "gzip"])):
        args = convert_args(
            labels, root / "images", root / name, "--size", "32", "--records-per-shard", "4", *extra
        )
        assert CliRunner().invoke(cli, args).exit_code == 3
    return labels, root / "images", root / "plain", root / "gzip"


def test_each_shard_is_the_gzip_stream_of_the_uncompressed_shard(runs) -> None:
    _, _, plain, packed = runs
    names = sorted(p.name for p in plain.glob("*.tfrec"))
    assert names == sorted(p.name for p in packed.glob("*.tfrec")) and len(names) == 3
    for name in names:
        data = (packed / name).read_bytes()
        assert data[:2] == b"\x1f\x8b" and gzip.decompress(data) == (plain / name).read_bytes()
    assert '"compression": "gzip"' in (packed / "manifest.json").read_text()


def test_gzip_shards_read_back_everywhere(runs, tmp_path: Path) -> None:
    _, _, plain, packed = runs
    reference = {r["image_id"]: r["image"].tobytes() for r in read_shards(plain)}
    batch = next(iter(dcm2tfrec.make_dataset(packed, batch_size=16, with_features=True)))
    got = {
        i.decode(): img.tobytes()
        for i, img in zip(batch["image_id"].numpy(), batch["image"].numpy(), strict=True)
    }
    assert got == reference
    inspected = CliRunner().invoke(cli, ["inspect", str(packed), "--verify"])
    assert inspected.exit_code == 0 and "all checks passed" in inspected.output, inspected.output
    torch = pytest.importorskip("torch")
    from dcm2tfrec.torch import ShardDataset

    ids = [item["image_id"] for item in ShardDataset(packed, with_features=True)]
    assert sorted(ids) == sorted(reference) and isinstance(torch.tensor(0), torch.Tensor)


def test_damaged_gzip_shards_are_reported_not_raised(runs, tmp_path: Path) -> None:
    import shutil

    _, _, _, packed = runs
    copy = Path(shutil.copytree(packed, tmp_path / "copy"))
    first = copy / "train-00000-4.tfrec"
    data = bytearray(first.read_bytes())
    data[len(data) // 2] ^= 0xFF
    first.write_bytes(bytes(data))
    second = copy / "train-00001-4.tfrec"
    second.write_bytes(second.read_bytes()[:-30])  # cut short
    result = CliRunner().invoke(cli, ["inspect", str(copy)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.output.count("PROBLEM") >= 2


def test_kill_9_then_resume_and_a_cluster_give_the_same_gzip_bytes(runs, tmp_path: Path) -> None:
    labels, images, _, packed = runs
    args = ["--size", "32", "--records-per-shard", "4", "--compression", "gzip"]
    out = tmp_path / "out"
    command = [sys.executable, "-m", "dcm2tfrec", *convert_args(labels, images, out, *args)]
    killed_at(command, ["journal:1"])
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 3, resumed.stderr
    assert output_bytes(out) == output_bytes(packed)
    pytest.importorskip("distributed")
    cluster = CliRunner().invoke(
        cli, convert_args(labels, images, tmp_path / "cluster", *args, "--dask", "local:2")
    )
    assert cluster.exit_code == 3, cluster.output
    assert output_bytes(tmp_path / "cluster") == output_bytes(packed)


def test_index_files_are_refused_with_gzip(runs, tmp_path: Path) -> None:
    labels, images, _, _ = runs
    result = CliRunner().invoke(
        cli, convert_args(labels, images, tmp_path / "x", "--compression", "gzip", "--index")
    )
    assert result.exit_code == 2 and "a gzip stream cannot seek" in result.output
