"""--format jpeg: 8-bit images stored as deterministic JPEG bytes that the reader, inspect and the
training path decode; masks stay PNG; 16-bit stays PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from click.testing import CliRunner

import dcm2tfrec
from dcm2tfrec.cli import cli
from dcm2tfrec.testing import make_demo

from .helpers import convert_args, output_bytes, read_shards


def _images(out: Path) -> dict[str, np.ndarray]:
    batches = dcm2tfrec.make_dataset(out, batch_size=4, with_features=True)
    return {
        image_id.decode(): image
        for batch in batches
        for image_id, image in zip(batch["image_id"].numpy(), batch["image"].numpy(), strict=True)
    }


def test_jpeg_records_are_deterministic_and_close_to_the_png_ones(tmp_path: Path) -> None:
    labels = make_demo(tmp_path, count=8)
    images = tmp_path / "images"
    base = ["--size", "64", "--records-per-shard", "3"]
    png = convert_args(labels, images, tmp_path / "png", *base)
    assert CliRunner().invoke(cli, png).exit_code == 3
    for workers in ("1", "2"):
        args = convert_args(
            labels, images, tmp_path / f"jpeg{workers}", *base, "--format", "jpeg", "--workers", workers
        )
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 3, result.output
    assert output_bytes(tmp_path / "jpeg1") == output_bytes(tmp_path / "jpeg2")
    stored = (tmp_path / "jpeg1" / "train-00000-3.tfrec").read_bytes()
    assert b"\xff\xd8\xff" in stored and b"\x89PNG" not in stored
    lossless, lossy = _images(tmp_path / "png"), _images(tmp_path / "jpeg1")
    assert sorted(lossless) == sorted(lossy) and len(lossy) == 8
    for image_id, image in lossy.items():
        assert image.shape == (64, 64, 1) and image.dtype == np.uint8
        assert np.abs(image.astype(int) - lossless[image_id].astype(int)).mean() < 2.0
    assert '"format": "jpeg"' in (tmp_path / "jpeg1" / "manifest.json").read_text()
    inspected = CliRunner().invoke(cli, ["inspect", str(tmp_path / "jpeg1"), "--verify", "--head", "1"])
    assert inspected.exit_code == 0 and "64x64x1 uint8" in inspected.output, inspected.output
    assert sum(p.stat().st_size for p in (tmp_path / "jpeg1").glob("*.tfrec")) < sum(
        p.stat().st_size for p in (tmp_path / "png").glob("*.tfrec")
    )


def test_three_channel_jpeg_keeps_its_channel_order_and_16_bit_is_refused(tmp_path: Path) -> None:
    from .test_windows import _ct

    labels = _ct(tmp_path)  # HU -1024 .. 1976
    windows = ["--window", "5000,100", "--window", "500,3000", "--window", "-3000,100"]  # black, grey, white
    args = ["--channels", "3", "--size", "32", "--format", "jpeg", "--jpeg-quality", "100", *windows]
    result = CliRunner().invoke(cli, convert_args(labels, tmp_path / "img", tmp_path / "rgb", *args))
    assert result.exit_code == 0, result.output
    for record in read_shards(tmp_path / "rgb"):
        means = record["image"].reshape(-1, 3).mean(axis=0)
        assert means[0] < 3 < means[1] < 250 < means[2], means  # the channel order survives RGB/BGR
    refused = CliRunner().invoke(
        cli, convert_args(labels, tmp_path / "img", tmp_path / "x", "--format", "jpeg", "--bits", "16")
    )
    assert refused.exit_code == 2 and "16-bit records stay PNG" in refused.output


def test_jpeg_records_read_back_in_torch_and_tfds(tmp_path: Path) -> None:
    import pytest

    labels = make_demo(tmp_path, count=6)
    out = tmp_path / "out"
    args = convert_args(
        labels, tmp_path / "images", out, "--size", "32", "--format", "jpeg", "--split", "train=1"
    )
    assert CliRunner().invoke(cli, args).exit_code == 3
    reference = _images(out)
    torch = pytest.importorskip("torch")
    from dcm2tfrec.torch import ShardDataset

    for item in ShardDataset(out, with_features=True):
        assert isinstance(item["image"], torch.Tensor) and item["image"].shape == (1, 32, 32)
        difference = np.abs(
            item["image"].numpy()[0].astype(int) - reference[item["image_id"]][..., 0].astype(int)
        )
        assert difference.max() <= 1  # both decode with libjpeg's accurate integer IDCT
    tfds = pytest.importorskip("tensorflow_datasets")
    assert CliRunner().invoke(cli, ["export-tfds", str(out)]).exit_code == 0
    builder = tfds.builder_from_directory(str(out / "tfds"))
    examples = list(tfds.as_numpy(builder.as_dataset(split="train")))
    assert len(examples) == len(reference)
    for example in examples:  # TFDS decodes JPEG with TensorFlow's fast IDCT: a few levels apart
        mine = reference[example["image_id"].decode()].astype(float).ravel()
        theirs = example["image"].astype(float).ravel()
        assert np.abs(mine - theirs).mean() < 4 and np.corrcoef(mine, theirs)[0, 1] > 0.98
