from __future__ import annotations

import re
from pathlib import Path

import pytest
import tensorflow as tf

from dcm2tfrec.errors import OutputError, ShardCorrupt
from dcm2tfrec.shards import SHARD_NAME, ShardWriter, shard_name
from dcm2tfrec.storage.posix import PosixStore
from dcm2tfrec.tfrecord import iter_records

from .helpers import sha256


def _writer(folder: Path, prefix: str, records: int, **kw) -> ShardWriter:
    return ShardWriter(PosixStore(str(folder)), prefix, records, **kw)


def _records(path: Path) -> list[bytes]:
    with open(path, "rb") as handle:
        return [r for _, r in iter_records(handle, str(path))]


def test_names_match_the_kaggle_count_regex() -> None:
    name = shard_name("train", 3, 1000)
    assert name == "train-00003-1000.tfrec"
    assert int(re.compile(r"-([0-9]*)\.").search(name).group(1)) == 1000  # type: ignore[union-attr]
    assert SHARD_NAME.match(name)


def test_writer_exact_counts_tensorflow_reads_every_record(tmp_path: Path) -> None:
    writer = _writer(tmp_path, "val", 4)
    payloads = [f"record {i}".encode() * (i + 1) for i in range(10)]
    for p in payloads:
        writer.write(p)
    infos = writer.close()
    assert [i.file for i in infos] == [
        "val-00000-4.tfrec",
        "val-00001-4.tfrec",
        "val-00002-2.tfrec",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == [i.file for i in infos]
    got = [r.numpy() for r in tf.data.TFRecordDataset([str(tmp_path / i.file) for i in infos])]
    assert got == payloads
    for info in infos:
        assert sha256(tmp_path / info.file) == info.sha256
        assert (tmp_path / info.file).stat().st_size == info.bytes


def test_partial_shard_is_hidden_until_complete_and_abort_removes_it(tmp_path: Path) -> None:
    writer = _writer(tmp_path, "train", 3)
    writer.write(b"a")
    assert [p.name for p in tmp_path.iterdir()] == [".train-00000.tfrec.partial"]
    writer.abort()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", [0, 9, 14, 20])
def test_a_flipped_byte_is_caught_with_offset(tmp_path: Path, where: int) -> None:
    writer = _writer(tmp_path, "t", 10)
    writer.write(b"0123456789")
    writer.write(b"abcdefghij")
    (info,) = writer.close()
    path = tmp_path / info.file
    data = bytearray(path.read_bytes())
    data[26 + where] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ShardCorrupt, match=r"record 1 at byte 26"):
        _records(path)


def test_truncation_is_caught(tmp_path: Path) -> None:
    writer = _writer(tmp_path, "t", 10)
    writer.write(b"0123456789")
    (info,) = writer.close()
    path = tmp_path / info.file
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ShardCorrupt, match="truncated"):
        _records(path)


def test_index_files_match_the_tfrecord_package_and_its_reader(tmp_path: Path) -> None:
    import subprocess
    import sys

    writer = _writer(tmp_path, "t", 3, write_index=True)
    for i in range(5):
        writer.write(f"payload {i}".encode() * (i + 1))
    infos = writer.close()
    assert [i.index for i in infos] == ["t-00000-3.idx", "t-00001-2.idx"]
    # The tfrecord package clashes with TensorFlow's protobuf symbols, so it runs in its own process.
    code = (
        "import sys; from tfrecord.tools.tfrecord2idx import create_index; "
        "from tfrecord.iterator_utils import *; from tfrecord.reader import tfrecord_iterator; "
        "create_index(sys.argv[1], sys.argv[2]); "
        "print(len(list(tfrecord_iterator(sys.argv[1], sys.argv[3]))))"
    )
    for info in infos:
        theirs = tmp_path / "theirs.idx"
        proc = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / info.file), str(theirs), str(tmp_path / info.index)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / info.index).read_text() == theirs.read_text()
        assert int(proc.stdout) == info.records


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_no_space_left_names_the_path_and_leaves_no_shard(tmp_path: Path) -> None:
    writer = _writer(tmp_path, "train", 3)
    writer.write(b"kept")
    writer.write(b"kept")
    writer.write(b"kept")
    (tmp_path / ".train-00001.tfrec.partial").symlink_to("/dev/full")  # every write: ENOSPC
    with pytest.raises(OutputError, match=r"train-00001.*No space left on device"):
        writer.write(b"lost" * 10_000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train-00000-3.tfrec"]
    assert _records(tmp_path / "train-00000-3.tfrec") == [b"kept"] * 3
