"""Class maps, extra columns, DICOM tag features and masks, written and read back."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from dcm2tfrec.config import Columns, ConvertConfig, ImageSpec
from dcm2tfrec.convert import convert
from dcm2tfrec.errors import ConfigError
from dcm2tfrec.labels import column_kind
from dcm2tfrec.reader import class_names, make_dataset
from dcm2tfrec.testing import make_patients

from .helpers import read_errors, rows_by_id


@pytest.fixture(scope="module")
def patients(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_patients(tmp_path_factory.mktemp("features"), patients=12)


def _columns(**kw) -> Columns:
    return Columns(target_col="label", class_map="auto", **kw)


def _convert(labels: Path, out: Path, spec: ImageSpec | None = None, **kw) -> dict[str, dict]:
    kw.setdefault("columns", _columns())
    config = ConvertConfig(
        labels, labels.parent / "images", out, image=spec or ImageSpec(32, 24), workers=2, **kw
    )
    convert(config)
    records = {}
    for batch in make_dataset(out, 16, with_features=True):
        for i in range(len(batch["image_id"])):
            record = {k: v[i].numpy() for k, v in batch.items()}
            records[record["image_id"].decode()] = record
    return records


def test_class_map_auto_round_trips_names(patients: Path, tmp_path: Path) -> None:
    records = _convert(patients, tmp_path / "out")
    rows = rows_by_id(patients)
    assert class_names(tmp_path / "out") == ["benign", "malignant"]
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["class_map"] == {
        "benign": 0,
        "malignant": 1,
    }
    for image_id, record in records.items():
        assert record["class_name"].decode() == rows[image_id]["label"]
        assert record["target"] == ["benign", "malignant"].index(rows[image_id]["label"])


def test_class_map_file_rejects_unknown_labels(patients: Path, tmp_path: Path) -> None:
    mapping = tmp_path / "classes.json"
    mapping.write_text(json.dumps({"malignant": 7}))
    out = tmp_path / "out"
    records = _convert(patients, out, columns=Columns(target_col="label", class_map=str(mapping)))
    rows = rows_by_id(patients)
    benign = {i for i, r in rows.items() if r["label"] == "benign"}
    assert set(records) == set(rows) - benign
    assert all(r["target"] == 7 and r["class_name"] == b"malignant" for r in records.values())
    errors = read_errors(out)
    assert {e["id"] for e in errors} == benign
    assert all(e["reason"] == "bad_target" and "not in the class map" in e["message"] for e in errors)
    mapping.write_text('{"a": 1, "b": 1}')
    with pytest.raises(ConfigError, match="share an id"):
        _convert(patients, tmp_path / "out2", columns=Columns(target_col="label", class_map=str(mapping)))


def test_extra_columns_and_dicom_tags_are_typed(patients: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    records = _convert(
        patients,
        out,
        columns=_columns(extra_cols=("age", "density", "site")),
        dicom_tags=("ViewPosition", "InstanceNumber", "ImageLaterality", "PatientID"),
    )
    schema = json.loads((out / "manifest.json").read_text())["schema"]
    assert {k: schema[k] for k in ("age", "density", "site", "ViewPosition", "InstanceNumber")} == {
        "age": "int64",
        "density": "float",
        "site": "bytes",
        "ViewPosition": "bytes",
        "InstanceNumber": "int64",
    }
    rows = rows_by_id(patients)
    for image_id, record in records.items():
        row, k = rows[image_id], int(image_id.rsplit("_", 1)[1])
        assert record["age"] == int(row["age"]) and record["age"].dtype == np.int64
        if row["density"]:
            assert record["density"] == pytest.approx(float(row["density"]), abs=1e-6)
        else:
            assert math.isnan(record["density"])
        assert record["site"].decode() == row["site"]
        assert record["InstanceNumber"] == k + 1
        assert record["ViewPosition"].decode() == ("CC" if k % 2 == 0 else "MLO")
        assert record["PatientID"].decode() == row["patient_id"]


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        (dict(columns=_columns(extra_cols=("image",))), "already has a feature"),
        (dict(columns=_columns(extra_cols=("nope",))), "no column 'nope'"),
        (dict(dicom_tags=("NotAKeyword",)), "not a DICOM keyword"),
        (dict(dicom_tags=("age",), columns=_columns(extra_cols=("age",))), "taken"),
    ],
)
def test_bad_feature_options_are_refused(patients: Path, tmp_path: Path, kw: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        _convert(patients, tmp_path / "out", **kw)
    assert not (tmp_path / "out").exists()


def test_column_kind() -> None:
    assert column_kind(["1", "-2", "3"]) == "int64"
    assert column_kind(["1", "", "3"]) == "float"
    assert column_kind(["1.5", "2"]) == "float"
    assert column_kind(["1", "x"]) == "bytes"
    assert column_kind(["99999999999999999999"]) == "float"


@pytest.mark.parametrize(
    "spec",
    [
        ImageSpec(32, 24),
        ImageSpec(40, 40, resize="letterbox"),
        ImageSpec(20, 20, resize="crop", channels=3),
        ImageSpec(32, 24, exact_decode=True),
        ImageSpec(40, 40, resize="letterbox", exact_decode=True),
        ImageSpec(20, 20, resize="crop", exact_decode=True),
    ],
    ids=["stretch", "letterbox", "crop-rgb", "stretch-exact", "letterbox-exact", "crop-exact"],
)
def test_masks_stay_aligned_with_their_images(patients: Path, tmp_path: Path, spec: ImageSpec) -> None:
    records = _convert(patients, tmp_path / "out", spec, columns=_columns(mask_col="mask"))
    rows = rows_by_id(patients)
    for image_id, record in records.items():
        mask = record["mask"]
        assert mask.shape == (spec.height, spec.width, 1) and mask.dtype == np.uint8
        if not rows[image_id]["mask"]:
            assert not mask.any()
            continue
        bright = record["image"][..., 0] > 128
        labelled = mask[..., 0] == 1
        iou = (bright & labelled).sum() / (bright | labelled).sum()
        centres = [np.argwhere(m).mean(axis=0) for m in (bright, labelled)]
        # box-filtered image edges threshold either way: within a pixel (exact geometry: test_masks.py)
        assert iou > 0.6 and np.abs(centres[0] - centres[1]).max() <= 1.25, (image_id, iou, centres)


def test_bad_masks_cost_their_row(patients: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    labels = make_patients(root, patients=3)
    rows = list(rows_by_id(labels).values())
    with_mask = [r for r in rows if r["mask"]]
    (root / "images" / with_mask[0]["mask"]).unlink()
    np.save(root / "images" / "masks" / "small.npy", np.zeros((10, 10), np.uint8))
    with_mask[1]["mask"] = "masks/small.npy"
    np.save(root / "images" / "masks" / "big.npy", np.full((48, 64), 300, np.uint16))
    with_mask[2]["mask"] = "masks/big.npy"
    with open(labels, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    records = _convert(labels, tmp_path / "out", columns=_columns(mask_col="mask"))
    errors = {e["id"]: e for e in read_errors(tmp_path / "out")}
    assert set(errors) == {r["image_id"] for r in with_mask[:3]}
    assert all(e["reason"] == "bad_mask" for e in errors.values())
    assert "10 x 10, the image 48 x 64" in errors[with_mask[1]["image_id"]]["message"]
    assert "0..255" in errors[with_mask[2]["image_id"]]["message"]
    assert len(records) == len(rows) - 3
