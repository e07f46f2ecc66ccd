"""Object stores (fsspec URLs): the same bytes as a local folder, whole objects only, one client."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import fsspec
import pytest
from click.testing import CliRunner

from dcm2tfrec.cli import cli
from dcm2tfrec.config import ConvertConfig, ImageSpec
from dcm2tfrec.convert import convert
from dcm2tfrec.errors import ConfigError
from dcm2tfrec.testing import make_demo

from .helpers import convert_args, killed_at, output_bytes


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("stores")
    labels = make_demo(root, count=10)
    convert(_config(labels, root / "images", root / "reference"))
    return labels, root / "images", output_bytes(root / "reference")


def _config(labels: Any, images: Any, out: Any, **kw: Any) -> ConvertConfig:
    kw.setdefault("image", ImageSpec(width=32, height=32))
    return ConvertConfig(labels, images, out, records_per_shard=4, index=True, workers=1, **kw)


def _options(s3: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(s3.items())


def _download(fs: Any, root: str, folder: Path) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    for name in fs.ls(root, detail=False):
        (folder / Path(name).name).write_bytes(fs.cat_file(name))
    return output_bytes(folder)


def _same_as_local(got: dict[str, Any], reference: dict[str, Any]) -> None:
    got, reference = copy.deepcopy(got), copy.deepcopy(reference)
    for manifest in (got["manifest.json"], reference["manifest.json"]):
        for key in ("labels", "images"):
            manifest["config"].pop(key)
    assert got == reference


def test_memory_store_gives_the_local_bytes(demo, tmp_path: Path) -> None:
    labels, images, reference = demo
    result = convert(_config(labels, images, "memory://stores/out"))
    assert result.records == 10 and result.out == "memory://stores/out"
    fs = fsspec.filesystem("memory")
    _same_as_local(_download(fs, "/stores/out", tmp_path / "got"), reference)
    with pytest.raises(ConfigError, match="not empty"):
        convert(_config(labels, images, "memory://stores/out"))
    convert(_config(labels, images, "memory://stores/out", overwrite=True))
    assert sorted(Path(n).name for n in fs.ls("/stores/out", detail=False)) == sorted(reference)


def test_s3_output_and_inputs_give_the_local_bytes(demo, tmp_path: Path, s3_server) -> None:
    labels, images, reference = demo
    fs = fsspec.filesystem("s3", **s3_server)
    fs.mkdir("data")
    fs.put(str(images), "data/images", recursive=True)
    fs.put_file(str(labels), "data/labels.csv")
    options = _options(s3_server)
    result = convert(
        _config("s3://data/labels.csv", "s3://data/images", "s3://data/out", storage_options=options)
    )
    assert result.records == 10 and [f.reason for f in result.failures] == ["file_missing"]
    got = _download(fs, "data/out", tmp_path / "got")
    assert got["manifest.json"]["config"]["images"] == "s3://data/images"
    _same_as_local(got, reference)
    assert not fs.ls("data/out", detail=False) or not [n for n in fs.ls("data/out") if "lock" in n]
    uploads = fs.call_s3("list_multipart_uploads", Bucket="data").get("Uploads", [])
    assert uploads == []


def test_a_second_client_on_an_object_store_is_refused(demo) -> None:
    labels, images, _ = demo
    fs = fsspec.filesystem("memory")
    fs.pipe_file("/busy/out/.dcm2tfrec.lock", json.dumps({"host": "elsewhere", "pid": 1}).encode())
    with pytest.raises(ConfigError, match=r"in use by another dcm2tfrec convert \(host elsewhere"):
        convert(_config(labels, images, "memory://busy/out"))
    fs.pipe_file(
        "/stale/out/.dcm2tfrec.lock",
        json.dumps({"host": __import__("socket").gethostname(), "pid": 999999999}).encode(),
    )
    assert convert(_config(labels, images, "memory://stale/out")).records == 10  # its holder here is gone


def test_a_url_whose_filesystem_is_not_installed_names_the_extra(demo) -> None:
    labels, images, _ = demo
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        result = CliRunner().invoke(cli, convert_args(labels, images, "gs://bucket/out", "-q"))
        assert result.exit_code == 2 and "pip install 'dcm2tfrec[gcs]'" in result.output
    else:
        pytest.skip("gcsfs is installed")


def test_the_cli_takes_storage_options(demo, tmp_path: Path, s3_server) -> None:
    labels, images, reference = demo
    fs = fsspec.filesystem("s3", **s3_server)
    fs.mkdir("cli")
    options = [arg for key, value in s3_server.items() for arg in ("--storage-option", f"{key}={value}")]
    args = convert_args(labels, images, "s3://cli/out", "--size", "32", "--records-per-shard", "4", "--index")
    result = CliRunner().invoke(cli, [*args, "--workers", "1", "-q", *options])
    assert result.exit_code == 3, result.output
    _same_as_local(_download(fs, "cli/out", tmp_path / "got"), reference)


@pytest.mark.parametrize(
    "points", [["row:5"], ["publish:1"], ["journal:1", "write:errors.csv"], ["write:manifest.json"]]
)
def test_kill_9_of_the_client_then_resume_on_s3_gives_the_uninterrupted_bytes(
    demo, tmp_path: Path, s3_server, points: list[str]
) -> None:
    import os
    import subprocess
    import sys

    from dcm2tfrec.faults import FAULTS_ENV

    labels, images, reference = demo
    fs = fsspec.filesystem("s3", **s3_server)
    bucket = f"kill-{points[0].replace(':', '-').replace('.', '-')}"
    fs.mkdir(bucket)
    options = [arg for key, value in s3_server.items() for arg in ("--storage-option", f"{key}={value}")]
    args = convert_args(
        labels, images, f"s3://{bucket}/out", "--size", "32", "--records-per-shard", "4", "--index"
    )
    command = [sys.executable, "-m", "dcm2tfrec", *args, "--workers", "1", "-q", *options]
    killed_at(command, points)
    env = {k: v for k, v in os.environ.items() if k != FAULTS_ENV}
    resumed = subprocess.run([*command, "--resume"], env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 3, resumed.stderr
    got = _download(fs, f"{bucket}/out", tmp_path / "got")
    _same_as_local(got, reference)
    assert fs.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads", []) == []


def _records(dataset: Any) -> list[tuple[str, int, bytes]]:
    return sorted(
        (r["image_id"].decode(), int(r["target"]), r["image"].tobytes())
        for batch in dataset.as_numpy_iterator()
        for r in (dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True))
    )


def _on_s3_and_here(demo, tmp_path: Path, s3_server, bucket: str) -> tuple[Any, list[tuple[str, int, bytes]]]:
    """The demo converted to ``s3://bucket/out`` and to a local folder; the local records."""
    from dcm2tfrec.reader import make_dataset

    labels, images, _ = demo
    fs = fsspec.filesystem("s3", **s3_server)
    fs.mkdir(bucket)
    convert(_config(labels, images, f"s3://{bucket}/out", storage_options=_options(s3_server)))
    convert(_config(labels, images, tmp_path / "local"))
    return fs, _records(make_dataset(tmp_path / "local", batch_size=4, with_features=True))


def test_the_reader_reads_s3_through_a_verified_cache(demo, tmp_path: Path, s3_server) -> None:
    from dcm2tfrec.errors import ShardError
    from dcm2tfrec.reader import make_dataset

    fs, expected = _on_s3_and_here(demo, tmp_path, s3_server, "reader")
    cache = tmp_path / "cache"
    got = make_dataset(
        "s3://reader/out", batch_size=4, with_features=True, storage_options=s3_server, cache_dir=str(cache)
    )
    assert _records(got) == expected and len(expected) == 10
    assert len(list(cache.rglob("*.tfrec"))) == 3
    shard = "reader/out/train-00000-4.tfrec"
    data = bytearray(fs.cat_file(shard))
    data[-1] ^= 1
    fs.pipe_file(shard, bytes(data))
    with pytest.raises(ShardError, match="SHA-256 differs"):
        make_dataset("s3://reader/out", storage_options=s3_server, cache_dir=str(tmp_path / "fresh"))
    assert not list((tmp_path / "fresh").rglob("*.partial")) and not list(
        (tmp_path / "fresh").rglob("*.tfrec")
    )


def test_inspect_reads_an_object_store_folder(demo, s3_server) -> None:
    labels, images, _ = demo
    fs = fsspec.filesystem("s3", **s3_server)
    fs.mkdir("inspect")
    convert(_config(labels, images, "s3://inspect/out", storage_options=_options(s3_server)))
    options = [arg for key, value in s3_server.items() for arg in ("--storage-option", f"{key}={value}")]
    result = CliRunner().invoke(cli, ["inspect", "s3://inspect/out", "--verify", *options])
    assert result.exit_code == 0, result.output
    assert "all checks passed" in result.output and "TOTAL  10 records in 3 shard(s)" in result.output
    assert result.output.count("manifest ok") == 3
    shard = "inspect/out/train-00001-4.tfrec"
    fs.pipe_file(shard, fs.cat_file(shard)[:-5])
    result = CliRunner().invoke(cli, ["inspect", "s3://inspect/out", *options])
    assert result.exit_code == 2 and "s3://inspect/out/train-00001-4.tfrec" in result.output


def test_the_reader_streams_s3_without_a_cache_and_checks_every_crc(demo, tmp_path: Path, s3_server) -> None:
    from dcm2tfrec.reader import make_dataset

    fs, expected = _on_s3_and_here(demo, tmp_path, s3_server, "stream")
    streamed = make_dataset(
        "s3://stream/out", batch_size=4, with_features=True, storage_options=s3_server, streaming=True
    )
    assert _records(streamed) == expected and len(streamed) == 3
    shard = "stream/out/train-00001-4.tfrec"
    data = bytearray(fs.cat_file(shard))
    data[100] ^= 1  # same size: only the record CRC can tell
    fs.pipe_file(shard, bytes(data))
    with pytest.raises(Exception, match="CRC mismatch"):
        _records(
            make_dataset(
                "s3://stream/out", batch_size=4, with_features=True, storage_options=s3_server, streaming=True
            )
        )


def test_uploads_a_killed_run_left_incomplete_are_aborted_and_others_kept(demo, s3_server) -> None:
    labels, images, _ = demo
    fs = fsspec.filesystem("s3", **s3_server)
    fs.mkdir("uploads")
    for key in ("out/train-00000-4.tfrec", "out/.dcm2tfrec.part-train-000001-abc", "out/mine.bin"):
        upload = fs.call_s3("create_multipart_upload", Bucket="uploads", Key=key)
        fs.call_s3(
            "upload_part",
            Bucket="uploads",
            Key=key,
            PartNumber=1,
            UploadId=upload["UploadId"],
            Body=b"x" * 100,
        )
    convert(_config(labels, images, "s3://uploads/out", storage_options=_options(s3_server)))
    left = fs.call_s3("list_multipart_uploads", Bucket="uploads").get("Uploads", [])
    assert [u["Key"] for u in left] == ["out/mine.bin"]  # not ours: kept


def test_a_foreign_object_under_a_published_name_fails_the_upload_and_stays(demo, s3_server) -> None:
    from dcm2tfrec.errors import OutputError

    labels, images, _ = demo
    fs = fsspec.filesystem("s3", **s3_server)
    fs.mkdir("failed")
    fs.pipe_file("failed/out/train-00001-4.tfrec", b"someone else's")
    with pytest.raises(OutputError, match=r"train-00001-4\.tfrec"):
        convert(
            _config(labels, images, "s3://failed/out", storage_options=_options(s3_server), overwrite=True)
        )
    assert fs.cat_file("failed/out/train-00001-4.tfrec") == b"someone else's"
    assert fs.call_s3("list_multipart_uploads", Bucket="failed").get("Uploads", []) == []
    names = {n.rsplit("/", 1)[-1] for n in fs.ls("failed/out", detail=False)}
    assert "manifest.json" not in names and "train-00000-4.tfrec" in names  # the shard before it is kept


def test_memory_urls_cannot_go_to_a_cluster(demo) -> None:
    labels, images, _ = demo
    with pytest.raises(ConfigError, match="memory:// lives in one process"):
        convert(_config(labels, images, "memory://cluster/out", dask="local:1"))
