"""scan: a complete header table for good and bad files, free of identifying tags, and a profile."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from click.testing import CliRunner
from pydicom.encaps import encapsulate

from dcm2tfrec.cli import cli
from dcm2tfrec.config import Columns, ConvertConfig, ImageSpec
from dcm2tfrec.convert import convert
from dcm2tfrec.scan import HEADER_COLUMNS, profile, scan
from dcm2tfrec.testing import IDENTIFYING, make_patients, write_dicom


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scan")
    make_patients(root, patients=5)
    images = root / "images"
    (images / "bad").mkdir()
    (images / "bad" / "empty.dcm").write_bytes(b"")
    (images / "bad" / "text.dcm").write_text("hello")
    good = next(images.glob("P000/*.dcm")).read_bytes()
    (images / "bad" / "cut.dcm").write_bytes(good[:200])
    write_dicom(
        images / "bad" / "video.dcm",
        np.zeros((8, 8), np.uint8),
        **IDENTIFYING,
    )
    video = images / "bad" / "video.dcm"
    ds = pydicom.dcmread(video)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.102"  # MPEG-4: no decoder
    ds.PixelData = encapsulate([bytes(64)])
    ds.save_as(video)
    frames = write_dicom(images / "bad" / "frames.dcm", np.zeros((8, 8), np.uint16))
    ds = pydicom.dcmread(frames)
    ds.NumberOfFrames, ds.PixelData = 2, ds.PixelData * 2  # convert rejects multi-frame files
    ds.save_as(frames)
    (images / ".hidden").write_text("skipped")
    return root


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_scan_table_lists_every_file_with_its_header_or_reason(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "table.csv"
    result = CliRunner().invoke(cli, ["scan", "--images", str(folder / "images"), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    rows = {r["path"]: r for r in _csv(out)}
    files = [p for p in (folder / "images").rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert sorted(rows) == sorted(str(p.relative_to(folder / "images")) for p in files)
    assert list(_csv(out)[0]) == list(HEADER_COLUMNS)
    assert rows["bad/empty.dcm"]["error"] == "not_dicom"
    assert rows["bad/text.dcm"]["error"] == "not_dicom"
    assert rows["bad/cut.dcm"]["error"] in ("truncated", "not_dicom")
    assert rows["masks/P000_0.png"]["error"] == "not_dicom"
    good = rows["P000/P000_0.dcm"]
    assert good["error"] == ""
    assert (good["Rows"], good["Columns"], good["BitsStored"], good["PatientID"]) == (
        "48",
        "64",
        "12",
        "P000",
    )
    assert good["TransferSyntaxUID"] == "1.2.840.10008.1.2.4.90"
    assert good["ViewPosition"] == "CC" and good["InstanceNumber"] == "1"
    assert int(good["file_size"]) == (folder / "images" / "P000/P000_0.dcm").stat().st_size
    text = out.read_text()
    for value in IDENTIFYING.values():
        assert value not in text and value.replace("^", " ") not in text
    assert "transfer syntax:" in result.output and "NO DECODER" in result.output


def test_profile_counts_and_decoders(folder: Path) -> None:
    table = scan(folder / "images", workers=1)
    report = profile(table, 512, 512)
    readable = [r for r in table.rows if not r["error"]]
    assert report["readable"] == len(readable)
    assert sum(v["files"] for v in report["transfer_syntax"].values()) == len(readable)
    assert report["transfer_syntax"]["1.2.840.10008.1.2.4.90"]["decoder"] is True
    assert report["transfer_syntax"]["1.2.840.10008.1.2.4.102"]["decoder"] is False
    assert report["modality"]["MG"] == sum(1 for r in readable if r["Modality"] == "MG")
    assert report["multi_frame"] == 1
    assert report["convertible"] == len(readable) - 2  # not the MPEG-4 one, not the multi-frame one
    assert report["projected_bytes"][0] == int(report["convertible"] * 512 * 512 * 0.2)
    assert report["unreadable"]["not_dicom"] >= 3


def test_joined_table_is_ready_for_convert_and_parquet(folder: Path, tmp_path: Path) -> None:
    labels = folder / "labels.csv"
    out = tmp_path / "joined.csv"
    result = CliRunner().invoke(
        cli,
        ["scan", "--images", str(folder / "images"), "--labels", str(labels), "--out", str(out), "--json"],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["files"] == len(_csv(labels))
    joined = _csv(out)
    assert [r["image_id"] for r in joined] == [r["image_id"] for r in _csv(labels)]
    assert all(r["PatientID"] == r["patient_id"] for r in joined)
    converted = convert(
        ConvertConfig(
            out,
            folder / "images",
            tmp_path / "tfrec",
            columns=Columns(target_col="label", class_map="auto", extra_cols=("Rows", "ViewPosition")),
            image=ImageSpec(16, 16),
            workers=1,
        )
    )
    assert converted.records == len(joined)
    parquet = tmp_path / "joined.parquet"
    CliRunner().invoke(
        cli, ["scan", "--images", str(folder / "images"), "--labels", str(labels), "--out", str(parquet)]
    )
    frame = pd.read_parquet(parquet)
    assert frame["image_id"].tolist() == [r["image_id"] for r in joined]
    assert not any(v in frame.to_csv() for v in IDENTIFYING.values())


def test_scan_refuses_other_table_formats(folder: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["scan", "--images", str(folder / "images"), "--out", str(tmp_path / "t.xlsx")]
    )
    assert result.exit_code == 2 and ".csv or .parquet" in result.output


def test_scan_over_s3_and_on_a_cluster_gives_the_local_table(folder: Path, tmp_path: Path, s3_server) -> None:
    import fsspec

    pytest.importorskip("distributed")
    local = scan(folder / "images", workers=1)
    fs = fsspec.filesystem("s3", **s3_server)
    fs.mkdir("scan")
    fs.put(str(folder / "images"), "scan/images", recursive=True)
    options = tuple(s3_server.items())
    remote = scan("s3://scan/images", workers=1, storage_options=options)
    clustered = scan(folder / "images", dask="local:2")
    assert remote.rows == local.rows and clustered.rows == local.rows
    assert len(local.rows) > 10 and {r["error"] for r in local.rows} >= {"", "not_dicom"}
