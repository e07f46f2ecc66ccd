"""--crop-foreground: the anatomy fills the output; the box (file pixels) is stored as ``crop``;
labels burnt into corners, MONOCHROME1, collimation and blank images are handled; masks follow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from click.testing import CliRunner

import dcm2tfrec
from dcm2tfrec.cli import cli
from dcm2tfrec.crop import foreground_box
from dcm2tfrec.testing import anatomy, write_dicom

from .helpers import convert_args, write_labels

ROWS, COLS = 240, 320
#: The breast: rows 30..210, columns 0..120 (the chest wall on the left edge).
TISSUE = (30, 0, 210, 120)


def _mammogram(label: bool = True) -> np.ndarray:
    image = np.zeros((ROWS, COLS), np.uint16)
    top, left, bottom, right = TISSUE
    image[top:bottom, left:right] = anatomy(bottom - top, right - left, 800, 3000, np.uint16, 3)
    if label:
        image[8:20, 270:310] = 4000  # a burnt-in label in the top right corner
    return image


def _features(out: Path) -> dict[str, dict]:
    batches = dcm2tfrec.make_dataset(out, batch_size=1, with_features=True)
    return {f["image_id"].numpy()[0].decode(): {k: v.numpy()[0] for k, v in f.items()} for f in batches}


def _inside(box: list[int], outer: tuple[int, int, int, int], slack: int) -> bool:
    top, left, bottom, right = box
    return (
        abs(top - outer[0]) <= slack
        and abs(left - outer[1]) <= slack
        and abs(bottom - outer[2]) <= slack
        and abs(right - outer[3]) <= slack
    )


def test_the_anatomy_is_kept_and_labels_and_empty_sides_cut(tmp_path: Path) -> None:
    images = tmp_path / "img"
    write_dicom(images / "mg.dcm", _mammogram(), bits_stored=12, modality="MG")
    inverted = 4095 - _mammogram()
    write_dicom(images / "mono1.dcm", inverted, bits_stored=12, modality="MG", photometric="MONOCHROME1")
    write_dicom(images / "blank.dcm", np.full((ROWS, COLS), 500, np.uint16), bits_stored=12)
    collimated = _mammogram(label=False)
    collimated[:10], collimated[-10:], collimated[:, :6], collimated[:, -6:] = 4095, 4095, 4095, 4095
    write_dicom(images / "cr.dcm", collimated, bits_stored=12, modality="CR")
    mask = np.zeros((ROWS, COLS), np.uint8)
    mask[100:140, 40:80] = 1
    np.save(images / "mask.npy", mask)
    names = ("mg", "mono1", "blank", "cr")
    rows = [
        {"image_id": n, "path": f"{n}.dcm", "target": 0, "mask": "mask.npy" if n == "mg" else ""}
        for n in names
    ]
    labels = write_labels(tmp_path / "labels.csv", rows)
    args = convert_args(
        labels, images, tmp_path / "out", "--crop-foreground", "--size", "64", "--mask-col", "mask"
    )
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    records = _features(tmp_path / "out")
    assert _inside(list(records["mg"]["crop"]), TISSUE, slack=4)
    assert _inside(list(records["mono1"]["crop"]), TISSUE, slack=4)
    assert list(records["blank"]["crop"]) == [0, 0, ROWS, COLS]
    assert list(records["cr"]["crop"]) == [0, 0, ROWS, COLS]  # a bright border around it all: not cut
    image = records["mg"]["image"][..., 0]
    assert (image > 10).mean() > 0.7  # the tissue fills the output (it was 28% of the detector)
    top, left, bottom, right = records["mg"]["crop"]
    expected = mask[top:bottom, left:right]
    got = records["mg"]["mask"][..., 0]
    ys, xs = np.nonzero(got)
    sy, sx = (bottom - top) / 64, (right - left) / 64
    assert abs(ys.min() * sy + top - 100) <= 2 * sy and abs(xs.max() * sx + left - 80) <= 2 * sx
    assert got.sum() > 0 and expected.sum() > 0
    assert '"crop": "int64"' in (tmp_path / "out" / "manifest.json").read_text()


def test_a_reduced_resolution_decode_gives_the_box_in_file_pixels(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "j2k.dcm", _mammogram(), bits_stored=12, transfer_syntax="j2k")
    exact = foreground_box(pydicom.dcmread(path).pixel_array, pydicom.dcmread(path))
    labels = write_labels(tmp_path / "labels.csv", [{"image_id": "j", "path": "j2k.dcm", "target": 1}])
    args = convert_args(labels, tmp_path, tmp_path / "out", "--crop-foreground", "--size", "32")
    assert CliRunner().invoke(cli, args).exit_code == 0
    crop = list(_features(tmp_path / "out")["j"]["crop"])
    assert exact is not None and _inside(crop, exact, slack=8)


def test_crop_is_refused_where_images_must_share_one_geometry(tmp_path: Path) -> None:
    labels = write_labels(tmp_path / "labels.csv", [{"image_id": "s", "path": "s", "target": 1}])
    for extra in (["--volume"], ["--frames", "all", "--stack", "3"]):
        result = CliRunner().invoke(
            cli, convert_args(labels, tmp_path, tmp_path / "out", "--crop-foreground", *extra)
        )
        assert result.exit_code == 2 and "--crop-foreground crops each image alone" in result.output
