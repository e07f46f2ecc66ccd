"""NVIDIA DALI reads the shards with fn.readers.tfrecord and the --index files (the README's recipe),
on the CPU: every record's image bytes and target, in shard order. Skipped where DALI is not
installed (it is not in the dev extras: a 400 MB wheel)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from dcm2tfrec.cli import cli

from .helpers import convert_args, write_rows

dali = pytest.importorskip("nvidia.dali")


def test_dali_reads_every_record_through_the_index_files(tmp_path: Path) -> None:
    import nvidia.dali.fn as fn
    import nvidia.dali.tfrecord as tfrec

    from dcm2tfrec.records import decode_record
    from dcm2tfrec.tfrecord import iter_records

    labels, images = write_rows(tmp_path, 10)
    out = tmp_path / "out"
    args = convert_args(
        labels, images, out, "--size", "16", "--records-per-shard", "4", "--index", "--no-shuffle"
    )
    assert CliRunner().invoke(cli, args).exit_code == 0
    files = sorted(str(p) for p in out.glob("*.tfrec"))
    indexes = [f.removesuffix(".tfrec") + ".idx" for f in files]

    @dali.pipeline_def(batch_size=5, num_threads=1, device_id=None)
    def shards():  # the README's recipe, without the (GPU) image decoder
        features = {
            "image": tfrec.FixedLenFeature((), tfrec.string, ""),
            "target": tfrec.FixedLenFeature([1], tfrec.int64, -1),
        }
        inputs = fn.readers.tfrecord(path=files, index_path=indexes, features=features, name="reader")
        return inputs["image"], inputs["target"]

    pipe = shards()
    pipe.build()
    assert pipe.epoch_size("reader") == 10
    got = []
    for _ in range(2):
        pngs, targets = pipe.run()
        got += [(bytes(pngs.at(i)), int(targets.at(i)[0])) for i in range(len(pngs))]
    expected = []
    for path in files:
        with open(path, "rb") as handle:
            for _, data in iter_records(handle, path):
                features = decode_record(data)
                expected.append((features["image"][1][0], features["target"][1][0]))
    assert got == expected
