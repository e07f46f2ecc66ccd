"""export-tfds: a finished output loads with tfds.builder_from_directory, its splits and shard
lengths from the manifest, class names as a ClassLabel, the same records, no bytes copied."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dcm2tfrec.cli import cli

from .helpers import convert_args, read_shards, write_labels, write_rows

tfds = pytest.importorskip("tensorflow_datasets")


def test_an_output_with_splits_loads_in_tfds_with_the_same_records(tmp_path: Path) -> None:
    labels, images = write_rows(tmp_path, 12)
    rows = [{"image_id": f"r{i:02d}", "path": f"{i}.dcm", "target": ["cat", "dog"][i % 2]} for i in range(12)]
    write_labels(labels, rows)
    out = tmp_path / "out"
    args = [
        "--size",
        "16",
        "--records-per-shard",
        "3",
        "--split",
        "train=0.75,val=0.25",
        "--class-map",
        "auto",
    ]
    assert CliRunner().invoke(cli, convert_args(labels, images, out, *args)).exit_code == 0
    result = CliRunner().invoke(cli, ["export-tfds", str(out)])
    assert result.exit_code == 0, result.output
    builder = tfds.builder_from_directory(str(out / "tfds"))
    splits = builder.info.splits
    assert {name: splits[name].num_examples for name in splits} == {"train": 9, "val": 3}
    assert builder.info.features["target"].names == ["cat", "dog"]
    reference = {r["image_id"]: r for r in read_shards(out)}
    seen = []
    for split in ("train", "val"):
        for example in tfds.as_numpy(builder.as_dataset(split=split)):
            image_id = example["image_id"].decode()
            seen.append(image_id)
            assert np.array_equal(example["image"], reference[image_id]["image"])
            assert int(example["target"]) == reference[image_id]["target"]
    assert sorted(seen) == sorted(reference)
    linked = next((out / "tfds").glob("dcm2tfrec-train.tfrecord-00000-of-*"))
    assert os.stat(linked).st_ino == os.stat(out / "train-00000-3.tfrec").st_ino  # a hard link, no copy
    again = CliRunner().invoke(cli, ["export-tfds", str(out)])
    assert again.exit_code == 2 and "exists" in again.output


def test_export_tfds_refuses_what_it_cannot_serve(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["export-tfds", str(tmp_path)])
    assert result.exit_code == 2 and "no manifest.json" in result.output
    labels, images = write_rows(tmp_path, 3)
    out = tmp_path / "gz"
    assert CliRunner().invoke(cli, convert_args(labels, images, out, "--compression", "gzip")).exit_code == 0
    refused = CliRunner().invoke(cli, ["export-tfds", str(out), "--to", str(tmp_path / "t")])
    assert refused.exit_code == 2 and "without --compression gzip" in refused.output
