"""--volume: one record per row from a series folder or a multi-frame file, slices ordered by their
position along the normal (never by file name), one geometry checked, resampled with --depth, and
read back as (depth, H, W, C) by make_dataset and a 3D Keras model. Slice k of every generated
series is k * 100 HU, so each test can tell the order of the slices in a record."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

import dcm2tfrec
from dcm2tfrec.cli import cli
from dcm2tfrec.testing import write_dicom

from .helpers import convert_args, output_bytes, read_errors, write_labels

#: HU 0 -> 0 and 1100 -> 255 (slices 0..11 of 100 HU steps).
WINDOW = ["--window", "550.5,1101", "--size", "32"]
AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def _series(
    folder: Path,
    count: int = 12,
    gap: float = 2.5,
    orientation: list[float] = AXIAL,
    skip: tuple[int, ...] = (),
    uid: str | None = None,
    overrides: dict[int, dict] | None = None,
) -> str:
    """Slices k = 0..count-1 at k * gap mm along the normal of ``orientation``; file names in
    reverse order and InstanceNumbers scrambled, so only positions give the right order. Returns
    the SeriesInstanceUID. ``overrides`` maps a slice index to elements to set on it."""
    uid = uid or pydicom.uid.generate_uid()
    normal = np.cross(orientation[:3], orientation[3:])
    for k in range(count):
        if k in skip:
            continue
        elements = {
            "SeriesInstanceUID": uid,
            "ImageOrientationPatient": orientation,
            "ImagePositionPatient": [float(v) for v in normal * gap * k + np.array([-10.0, 4.0, 7.0])],
            "InstanceNumber": (k * 7) % count + 1,
            "PixelSpacing": [0.7, 0.7],
            **(overrides or {}).get(k, {}),
        }
        elements = {key: value for key, value in elements.items() if value is not None}
        pixels = np.full((64, 64), 1024 + 100 * k, np.uint16)
        write_dicom(
            folder / f"{count - k:03d}.dcm",
            pixels,
            bits_stored=12,
            modality="CT",
            rescale=(1, -1024),
            **elements,
        )
    return uid


def _levels(volume: np.ndarray) -> list[int]:
    return [int(np.rint(volume[k].mean())) for k in range(volume.shape[0])]


def _hu_levels(count: int) -> list[int]:
    return [round(255 * k / 11) for k in range(count)]


def _convert(tmp_path: Path, rows: list[dict], *extra: str) -> tuple[int, str, Path]:
    labels = write_labels(tmp_path / "labels.csv", rows)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, convert_args(labels, tmp_path / "img", out, "--volume", *WINDOW, *extra))
    return result.exit_code, result.output, out


def _volumes(out: Path) -> dict[str, dict]:
    batches = dcm2tfrec.make_dataset(out, batch_size=1, with_features=True)
    return {f["image_id"].numpy()[0].decode(): {k: v.numpy()[0] for k, v in f.items()} for f in batches}


def test_a_series_folder_is_ordered_by_position_not_names_or_instance_numbers(tmp_path: Path) -> None:
    _series(tmp_path / "img" / "axial")
    tilted = [1.0, 0.0, 0.0, 0.0, math.cos(0.5), math.sin(0.5)]  # oblique: about 29 degrees
    _series(tmp_path / "img" / "oblique", orientation=tilted, gap=3.0)
    code, output, out = _convert(
        tmp_path,
        [
            {"image_id": "axial", "path": "axial", "target": 1},
            {"image_id": "oblique", "path": "oblique", "target": 0},
        ],
    )
    assert code == 0, output
    volumes = _volumes(out)
    for name, gap in (("axial", 2.5), ("oblique", 3.0)):
        volume = volumes[name]
        assert volume["image"].shape == (12, 32, 32, 1) and volume["depth"] == 12
        assert _levels(volume["image"]) == _hu_levels(12)
        assert np.allclose(volume["spacing"], [gap, 1.4, 1.4])
    inspected = CliRunner().invoke(cli, ["inspect", str(out), "--verify", "--head", "1"])
    assert inspected.exit_code == 0 and "12x32x32x1 uint8" in inspected.output, inspected.output


def test_depth_resamples_linearly_in_modality_values(tmp_path: Path) -> None:
    _series(tmp_path / "img" / "s")
    code, output, out = _convert(tmp_path, [{"image_id": "s", "path": "s", "target": 1}], "--depth", "4")
    assert code == 0, output
    volume = _volumes(out)["s"]
    assert volume["image"].shape == (4, 32, 32, 1)
    assert _levels(volume["image"]) == [0, 85, 170, 255]  # slices 0, 11/3, 22/3, 11
    assert np.allclose(volume["spacing"], [2.5 * 11 / 3, 1.4, 1.4])


def test_bad_series_are_rejected_with_their_own_reasons(tmp_path: Path) -> None:
    img = tmp_path / "img"
    _series(img / "two", count=6)
    keep = _series(img / "two_more", count=6)
    for path in (img / "two_more").iterdir():
        shutil.move(path, img / "two" / f"b{path.name}")
    _series(img / "dup", count=6, overrides={3: {"ImagePositionPatient": [-10.0, 4.0, 7.0 + 2.5 * 2]}})
    _series(img / "gap", count=8, skip=(4,))
    same = _series(img / "size", count=4)
    write_dicom(
        img / "size" / "big.dcm", np.zeros((32, 32), np.uint16), bits_stored=12, SeriesInstanceUID=same
    )
    _series(img / "bare", count=4, overrides={2: {"ImagePositionPatient": None, "InstanceNumber": None}})
    _series(img / "numbers", count=5, overrides={k: {"ImagePositionPatient": None} for k in range(5)})
    rows = [
        {"image_id": name, "path": name, "target": 0, "series": ""}
        for name in ("two", "dup", "gap", "size", "bare", "numbers")
    ]
    rows.append({"image_id": "picked", "path": "two", "target": 1, "series": keep})
    code, output, out = _convert(tmp_path, rows, "--series-col", "series")
    assert code == 3, output
    reasons = {e["id"]: e["reason"] for e in read_errors(out)}
    assert reasons == {
        "two": "mixed_series",
        "dup": "duplicate_slice",
        "gap": "uneven_spacing",
        "size": "inconsistent_slices",
        "bare": "missing_geometry",
    }
    volumes = _volumes(out)
    assert volumes["picked"]["depth"] == 6 and _levels(volumes["picked"]["image"]) == _hu_levels(6)
    # without positions, InstanceNumber orders: slice k has number (7k mod 5) + 1
    order = sorted(range(5), key=lambda k: (k * 7) % 5)
    assert _levels(volumes["numbers"]["image"]) == [round(255 * k / 11) for k in order]
    assert math.isnan(volumes["numbers"]["spacing"][0])


def _enhanced(path: Path, frames: int) -> None:
    """An enhanced multi-frame CT whose frames are stored in reverse position order, each with its
    own position and rescale in its functional group: frame i is slice frames-1-i, of (frames-1-i)
    * 100 HU, stored as 2000 + 100 * (frames-1-i) with intercept -2000."""
    stored = np.stack([np.full((64, 64), 2000 + 100 * (frames - 1 - i), np.uint16) for i in range(frames)])
    write_dicom(path, stored, bits_stored=16, modality="CT")
    ds = pydicom.dcmread(path)
    shared, orientation, measures = Dataset(), Dataset(), Dataset()
    orientation.ImageOrientationPatient = AXIAL
    measures.PixelSpacing, measures.SliceThickness = [0.5, 0.5], 2.0
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelMeasuresSequence = Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    groups = []
    for i in range(frames):
        position, transform, group = Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = [0.0, 0.0, 2.0 * (frames - 1 - i)]
        transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = 1, -2000, "HU"
        group.PlanePositionSequence = Sequence([position])
        group.PixelValueTransformationSequence = Sequence([transform])
        groups.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(groups)
    ds.save_as(path, enforce_file_format=True)


def test_an_enhanced_multi_frame_file_is_one_volume_in_position_order(tmp_path: Path) -> None:
    _enhanced(tmp_path / "img" / "ct.dcm", 6)
    code, output, out = _convert(tmp_path, [{"image_id": "ct", "path": "ct.dcm", "target": 1}])
    assert code == 0, output
    volume = _volumes(out)["ct"]
    assert _levels(volume["image"]) == _hu_levels(6)
    assert np.allclose(volume["spacing"], [2.0, 1.0, 1.0])


def test_real_multi_frame_files_convert_as_volumes_and_export(tmp_path: Path) -> None:
    names = [
        "emri_small.dcm",
        "emri_small_jpeg_2k_lossless.dcm",
        "emri_small_RLE.dcm",
        "color3d_jpeg_baseline.dcm",
    ]
    (tmp_path / "img").mkdir()
    for name in names:
        shutil.copy(get_testdata_file(name), tmp_path / "img" / name)
    labels = write_labels(tmp_path / "labels.csv", [{"image_id": n, "path": n, "target": 0} for n in names])
    result = CliRunner().invoke(
        cli,
        convert_args(labels, tmp_path / "img", tmp_path / "out", "--volume", "--size", "32", "--depth", "8"),
    )
    assert result.exit_code == 0, result.output
    volumes = _volumes(tmp_path / "out")
    assert all(v["image"].shape == (8, 32, 32, 1) for v in volumes.values())
    a, b = volumes["emri_small.dcm"]["image"], volumes["emri_small_RLE.dcm"]["image"]
    assert np.array_equal(a, b)  # the same MR in two transfer syntaxes
    export = tmp_path / "export"
    inspected = CliRunner().invoke(cli, ["inspect", str(tmp_path / "out"), "--export", str(export)])
    assert inspected.exit_code == 0, inspected.output
    assert sorted(p.name for p in (export / "emri_small.dcm").iterdir()) == [f"{k:04d}.png" for k in range(8)]


def test_volumes_of_different_depths_are_padded_in_a_batch_and_fit_a_3d_model(tmp_path: Path) -> None:
    keras = pytest.importorskip("keras")
    rows = []
    for i, count in enumerate((6, 9, 7, 8)):
        _series(tmp_path / "img" / f"s{i}", count=count)
        rows.append({"image_id": f"s{i}", "path": f"s{i}", "target": i % 2})
    code, output, out = _convert(tmp_path, rows)
    assert code == 0, output
    images, targets = next(iter(dcm2tfrec.make_dataset(out, batch_size=4)))
    assert images.shape == (4, 9, 32, 32, 1) and sorted(targets.numpy().tolist()) == [0, 0, 1, 1]
    features = next(iter(dcm2tfrec.make_dataset(out, batch_size=4, with_features=True)))
    for volume, depth in zip(features["image"].numpy(), features["depth"].numpy(), strict=True):
        assert _levels(volume[:depth]) == _hu_levels(depth) and not volume[depth:].any()
    model = keras.Sequential(
        [
            keras.Input((None, 32, 32, 1)),
            keras.layers.Conv3D(2, 3, activation="relu"),
            keras.layers.GlobalAveragePooling3D(),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer="adam", loss="binary_crossentropy")
    history = model.fit(dcm2tfrec.make_dataset(out, batch_size=2, image_dtype="float32"), epochs=1, verbose=0)
    assert math.isfinite(history.history["loss"][0])


def test_a_volume_on_a_cluster_gives_this_machines_bytes(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    _series(tmp_path / "img" / "s", count=5)
    labels = write_labels(tmp_path / "labels.csv", [{"image_id": "s", "path": "s", "target": 1}])
    args = convert_args(labels, tmp_path / "img", tmp_path / "here", "--volume", *WINDOW)
    assert CliRunner().invoke(cli, args).exit_code == 0
    there = convert_args(
        labels, tmp_path / "img", tmp_path / "there", "--volume", *WINDOW, "--dask", "local:1"
    )
    assert CliRunner().invoke(cli, there).exit_code == 0
    assert output_bytes(tmp_path / "there") == output_bytes(tmp_path / "here")


def test_volume_options_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    labels = write_labels(tmp_path / "labels.csv", [{"image_id": "s", "path": "s", "target": 1}])
    for extra, needle in (
        (["--volume", "--frames", "all"], "excludes --frames"),
        (["--depth", "4"], "use it with --volume"),
        (["--series-col", "path"], "add --volume"),
    ):
        result = CliRunner().invoke(cli, convert_args(labels, tmp_path, tmp_path / "out", *extra))
        assert result.exit_code == 2 and needle in result.output, result.output


def test_scan_reports_series_per_folder_and_what_volume_would_make_of_them(tmp_path: Path) -> None:
    img = tmp_path / "img"
    _series(img / "good", count=5, gap=1.25)
    _series(img / "gap", count=6, skip=(3,))
    _series(img / "mixed", count=3)
    other = _series(img / "other", count=3)
    for path in (img / "other").iterdir():
        shutil.move(path, img / "mixed" / f"o{path.name}")
    table = tmp_path / "table.csv"
    result = CliRunner().invoke(cli, ["scan", "--images", str(img), "--out", str(table), "--json"])
    assert result.exit_code == 0, result.output
    import json

    report = json.loads(result.output[result.output.index("{") :])
    assert report["series"] == {
        "series": 4,
        "folders": 3,  # good, gap, mixed (two series)
        "folders_with_several_series": 1,
        "as_volumes": {"ok": 3, "uneven_spacing": 1},
        "slice_gap_mm": [1.25, 2.5],
    }
    assert other in table.read_text()
    text = CliRunner().invoke(cli, ["scan", "--images", str(img), "--out", str(table)]).output
    assert "series: 4 in 3 folder(s), 1 folder(s) with several" in text
    assert "series of several files as --volume: ok 3, uneven_spacing 1; slice gaps 1.25-2.5 mm" in text


def test_a_16_bit_volume_is_windowed_at_read_time_like_a_2d_record(tmp_path: Path) -> None:
    _series(tmp_path / "img" / "s", count=12)
    labels = write_labels(tmp_path / "labels.csv", [{"image_id": "s", "path": "s", "target": 1}])
    out = tmp_path / "out"
    args = convert_args(labels, tmp_path / "img", out, "--volume", "--bits", "16", "--size", "32")
    assert CliRunner().invoke(cli, args).exit_code == 0
    hu, _ = next(iter(dcm2tfrec.make_dataset(out, batch_size=1, image_dtype="float32")))
    assert [round(float(hu[0, k].numpy().mean())) for k in range(12)] == [100 * k for k in range(12)]
    shown, _ = next(iter(dcm2tfrec.make_dataset(out, batch_size=1, window=(550.5, 1101))))
    assert shown.dtype.name == "uint8" and _levels(shown[0].numpy()) == _hu_levels(12)


def test_a_mask_volume_follows_the_slices_order_and_depth(tmp_path: Path) -> None:
    img = tmp_path / "img"
    _series(img / "s", count=12)
    stack = np.zeros((12, 64, 64), np.uint8)
    for k in range(12):
        stack[k, :, : 4 * (k + 1)] = k + 1  # slice k (in position order): label k+1, 4(k+1) columns wide
    np.save(img / "s_mask.npy", stack)
    _enhanced(img / "ct.dcm", 6)
    frames = np.stack(
        [np.full((64, 64), 6 - i, np.uint8) for i in range(6)]
    )  # frame i is slice 5-i: label 6-i
    write_dicom(img / "ct_mask.dcm", frames, modality="SEG")
    np.save(img / "wrong.npy", np.zeros((5, 64, 64), np.uint8))
    rows = [
        {"image_id": "s", "path": "s", "target": 1, "mask": "s_mask.npy"},
        {"image_id": "ct", "path": "ct.dcm", "target": 0, "mask": "ct_mask.dcm"},
        {"image_id": "wrong", "path": "s", "target": 0, "mask": "wrong.npy"},
    ]
    code, output, out = _convert(tmp_path, rows, "--mask-col", "mask", "--depth", "4", "--size", "64")
    assert code == 3, output
    (error,) = read_errors(out)
    assert error["id"] == "wrong" and error["reason"] == "bad_mask"
    volumes = _volumes(out)
    masks = volumes["s"]["mask"]
    assert masks.shape == (4, 64, 64, 1)
    nearest = [0, 4, 7, 11]  # slices 0, 11/3, 22/3, 11 rounded
    for k, source in enumerate(nearest):
        assert np.array_equal(masks[k, ..., 0], stack[source]), k
    ct = volumes["ct"]["mask"][..., 0]
    assert [int(ct[k].max()) for k in range(4)] == [
        1,
        3,
        4,
        6,
    ]  # slices 0, 5/3->2, 10/3->3, 5 give labels k+1


def test_stack_takes_neighbours_in_space_not_in_file_order(tmp_path: Path) -> None:
    from .helpers import read_shards

    _enhanced(tmp_path / "img" / "ct.dcm", 6)  # frames stored in reverse position order
    labels = write_labels(tmp_path / "labels.csv", [{"image_id": "ct", "path": "ct.dcm", "target": 1}])
    args = convert_args(
        labels, tmp_path / "img", tmp_path / "out", "--frames", "all", "--stack", "3", *WINDOW
    )
    assert CliRunner().invoke(cli, args).exit_code == 0
    records = read_shards(tmp_path / "out")
    assert sorted(r["frame"] for r in records) == list(range(6))
    for r in records:
        place = 5 - r["frame"]  # the frame's slice along the normal
        expected = [round(255 * s / 11) for s in (max(place - 1, 0), place, min(place + 1, 5))]
        assert [int(np.rint(r["image"][..., c].mean())) for c in range(3)] == expected


def test_a_series_folder_on_s3_gives_the_local_volume(tmp_path: Path, s3_server) -> None:
    import fsspec

    _series(tmp_path / "img" / "s", count=5)
    labels = write_labels(tmp_path / "labels.csv", [{"image_id": "s", "path": "s", "target": 1}])
    fs = fsspec.filesystem("s3", **s3_server)
    fs.mkdir("volumes")
    fs.put(str(tmp_path / "img"), "volumes/img", recursive=True)
    options = {"storage_options": dict(s3_server)}
    here = dcm2tfrec.convert(labels=labels, images=tmp_path / "img", out=tmp_path / "here", volume=True)
    there = dcm2tfrec.convert(
        labels=labels, images="s3://volumes/img", out=tmp_path / "there", volume=True, **options
    )
    assert here.records == there.records == 1 and not there.failures
    shards = [
        {k: v for k, v in output_bytes(tmp_path / d).items() if k.endswith(".tfrec")}
        for d in ("here", "there")
    ]
    assert shards[0] == shards[1]
