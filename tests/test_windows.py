"""Several --window: one window of the same modality image per channel, recorded in the manifest;
for 16-bit records the reader makes the channels at read time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from click.testing import CliRunner

import dcm2tfrec
from dcm2tfrec.cli import cli
from dcm2tfrec.testing import anatomy, write_dicom

from .helpers import convert_args, read_shards, write_labels

WINDOWS = ["40,80", "80,200", "600,2800"]  # brain, subdural, bone


def _ct(root: Path) -> Path:
    rows = []
    for i in range(3):
        write_dicom(
            root / "img" / f"{i}.dcm",
            anatomy(48, 48, 0, 3000, np.uint16, i),
            bits_stored=12,
            modality="CT",
            rescale=(1, -1024),
            windows=[(40, 80)],
        )
        rows.append({"image_id": f"c{i}", "path": f"{i}.dcm", "target": i % 2})
    return write_labels(root / "labels.csv", rows)


def _by_id(out: Path) -> dict[str, np.ndarray]:
    return {r["image_id"]: r["image"] for r in read_shards(out)}


def test_each_channel_is_its_own_window_of_the_same_image(tmp_path: Path) -> None:
    labels = _ct(tmp_path)
    flags = [arg for w in WINDOWS for arg in ("--window", w)]
    args = convert_args(
        labels, tmp_path / "img", tmp_path / "three", *flags, "--channels", "3", "--size", "32"
    )
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    three = _by_id(tmp_path / "three")
    for k, window in enumerate(WINDOWS):
        one = tmp_path / f"one{k}"
        single = convert_args(labels, tmp_path / "img", one, "--window", window, "--size", "32")
        assert CliRunner().invoke(cli, single).exit_code == 0
        for image_id, image in _by_id(one).items():
            assert np.array_equal(three[image_id][..., k], image[..., 0]), (image_id, window)
    assert len({three["c0"][..., k].tobytes() for k in range(3)}) == 3  # three different pictures
    manifest = (tmp_path / "three" / "manifest.json").read_text()
    assert (
        '"channel_windows": [\n        "40,80",\n        "80,200",\n        "600,2800"\n      ]' in manifest
    )


def test_16_bit_records_get_their_channels_from_the_manifests_windows_at_read_time(tmp_path: Path) -> None:
    labels = _ct(tmp_path)
    flags = [arg for w in WINDOWS for arg in ("--window", w)]
    eight = convert_args(
        labels, tmp_path / "img", tmp_path / "eight", *flags, "--channels", "3", "--size", "32"
    )
    sixteen = convert_args(
        labels, tmp_path / "img", tmp_path / "sixteen", *flags, "--bits", "16", "--size", "32"
    )
    assert CliRunner().invoke(cli, eight).exit_code == 0
    result = CliRunner().invoke(cli, sixteen)
    assert result.exit_code == 0, result.output
    stored = {r["image_id"]: r["image"] for r in read_shards(tmp_path / "sixteen")}
    assert all(image.shape == (32, 32, 1) and image.dtype == np.uint16 for image in stored.values())
    batch = dcm2tfrec.make_dataset(tmp_path / "sixteen", batch_size=3, window="manifest", with_features=True)
    features = next(iter(batch))
    assert features["image"].shape == (3, 32, 32, 3) and features["image"].dtype.name == "uint8"
    reference = _by_id(tmp_path / "eight")
    for image_id, image in zip(features["image_id"].numpy(), features["image"].numpy(), strict=True):
        difference = np.abs(image.astype(int) - reference[image_id.decode()].astype(int))
        assert difference.max() <= 1  # read-time float window vs write-time table: rounding only
    pairs = [(40, 80), (80, 200)]
    two, _ = next(iter(dcm2tfrec.make_dataset(tmp_path / "sixteen", batch_size=1, window=pairs)))
    assert two.shape == (1, 32, 32, 2)


def test_windows_that_cannot_fill_the_channels_are_refused(tmp_path: Path) -> None:
    labels = _ct(tmp_path)
    for extra, needle in (
        (["--window", "40,80", "--window", "80,200", "--channels", "3"], "give 3 with --channels 3"),
        (["--window", "40,80", "--window", "80,200", "--window", "1,2"], "give 3 with --channels 3"),
        (["--window", "40,80", "--window", "auto", "--bits", "16"], "each CENTER,WIDTH"),
    ):
        result = CliRunner().invoke(cli, convert_args(labels, tmp_path / "img", tmp_path / "out", *extra))
        assert result.exit_code == 2 and needle in result.output, result.output
