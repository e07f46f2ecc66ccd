"""What a new user meets first: imports, the package's metadata, the demo."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys


def test_make_dataset_without_tensorflow_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['tensorflow'] = None\n"
        "import dcm2tfrec\n"
        "try:\n    dcm2tfrec.make_dataset\nexcept ImportError as exc:\n    print(exc)\n"
        "print(dcm2tfrec.convert.__name__)"  # converting needs no TensorFlow
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "pip install 'dcm2tfrec[tf]'" in proc.stdout and proc.stdout.strip().endswith("convert")


def test_a_hopeless_run_is_refused_by_the_cli_before_anything_is_decoded(tmp_path) -> None:
    from click.testing import CliRunner

    from dcm2tfrec.cli import cli

    (tmp_path / "img").mkdir()
    (tmp_path / "labels.csv").write_text(
        "image_id,path,target\n" + "".join(f"{i},{i}.dcm,cat\n" for i in range(20))
    )
    args = ["convert", "--labels", str(tmp_path / "labels.csv"), "--images", str(tmp_path / "img"), "--out"]
    result = CliRunner().invoke(cli, [*args, str(tmp_path / "out")])
    assert result.exit_code == 2 and "--class-map auto" in result.output
    proc = subprocess.run(
        [sys.executable, "-m", "dcm2tfrec", *args, str(tmp_path / "out2")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "--class-map auto" in proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()


def test_a_test_set_without_targets_converts_reads_and_inspects(tmp_path) -> None:
    import json

    import numpy as np
    from click.testing import CliRunner

    from dcm2tfrec.cli import cli
    from dcm2tfrec.reader import make_dataset
    from dcm2tfrec.testing import anatomy, write_dicom

    lines = ["image_id,path"]
    for i in range(5):
        write_dicom(tmp_path / "img" / f"{i}.dcm", anatomy(32, 32, 0, 200, np.uint8, i))
        lines.append(f"test{i},{i}.dcm")
    lines.append("gone,missing.dcm")
    (tmp_path / "test.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    args = [
        "convert",
        "--labels",
        str(tmp_path / "test.csv"),
        "--images",
        str(tmp_path / "img"),
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(cli, [*args, "--no-target", "--size", "16", "--records-per-shard", "2"])
    assert result.exit_code == 3, result.output
    assert "6 rows -> 5 records" in result.output and "targets -" in result.output, (
        out / "errors.csv"
    ).read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    assert "target" not in manifest["schema"] and manifest["config"]["columns"]["no_target"] is True
    images = next(iter(make_dataset(out, batch_size=5)))
    assert images.shape == (5, 16, 16, 1)
    features = next(iter(make_dataset(out, batch_size=5, with_features=True)))
    assert sorted(features["image_id"].numpy().tolist()) == [f"test{i}".encode() for i in range(5)]
    assert "target" not in features
    inspected = CliRunner().invoke(cli, ["inspect", str(out), "--head", "1"])
    assert inspected.exit_code == 0, inspected.output
    proc = subprocess.run(
        [sys.executable, "-m", "dcm2tfrec", *args[:-1], str(tmp_path / "out2"), "--no-target", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 3, proc.stderr


def test_convert_takes_keyword_options_a_dataframe_or_rows_and_draws_or_reports_progress(
    tmp_path, capsys
) -> None:
    import pandas as pd
    import pytest

    import dcm2tfrec
    from dcm2tfrec.errors import ConfigError

    from .helpers import output_bytes, read_shards, write_rows

    labels, images = write_rows(tmp_path, 6)
    frame = pd.read_csv(labels)
    frame.loc[len(frame)] = {"image_id": "gone", "path": "missing.dcm", "target": 1}
    frame["target"] = frame["target"].map({0: "benign", 1: "malignant"})
    calls: list[tuple[int, int, int]] = []
    result = dcm2tfrec.convert(
        labels=frame,
        images=images,
        out=tmp_path / "frame",
        size="16",
        records_per_shard=4,
        class_map={"malignant": 1, "benign": 0},
        progress=lambda done, total, rejected: calls.append((done, total, rejected)),
    )
    assert result.records == 6 and len(result.shards) == 2 and calls[-1] == (7, 7, 1)
    assert all(a[0] <= b[0] and a[2] <= b[2] for a, b in itertools.pairwise(calls))
    text = str(result)
    assert "7 rows -> 6 records" in text and "file_missing  1" in text
    assert "0 (benign): 3, 1 (malignant): 3" in text
    records = read_shards(tmp_path / "frame")
    assert sorted(r["image_id"] for r in records) == [f"r{i:02d}" for i in range(6)]
    assert result.manifest["config"]["labels"] == "<DataFrame>"

    from_path = dcm2tfrec.convert(
        labels=str(labels), images=str(images), out=str(tmp_path / "path"), size="16", records_per_shard=4
    )
    dcm2tfrec.convert(
        labels=pd.read_csv(labels).to_dict("records"),
        images=images,
        out=tmp_path / "rows",
        size="16",
        records_per_shard=4,
        progress=True,
    )
    shards = [
        {k: v for k, v in output_bytes(tmp_path / d).items() if k.endswith(".tfrec")}
        for d in ("path", "rows")
    ]
    assert shards[0] == shards[1] and len(shards[0]) == 2
    assert from_path.manifest["config"]["labels"] == str(labels.resolve())
    bar = capsys.readouterr().err
    assert "6/6" in bar and "img" in bar
    with pytest.raises(TypeError, match="not both"):
        dcm2tfrec.convert(
            dcm2tfrec.ConvertConfig.from_options(labels=labels, images=images, out="x"), size="8"
        )
    with pytest.raises(ConfigError, match=r"records.per.shard"):
        dcm2tfrec.convert(labels=labels, images=images, out=tmp_path / "bad", records_per_shard=0)


def test_reader_warnings_never_reach_stderr_and_are_summarised(tmp_path) -> None:
    import dcm2tfrec

    from .helpers import write_bad_values

    labels = write_bad_values(tmp_path, bad=4, good=2)
    base = ["--labels", str(labels), "--images", str(tmp_path / "img"), "--size", "16"]
    tag = ["--dicom-tag", "InstanceNumber"]
    proc = subprocess.run(
        [sys.executable, "-m", "dcm2tfrec", "convert", *base, "--out", str(tmp_path / "out"), *tag],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "UserWarning" not in proc.stderr and "warn_and_log" not in proc.stderr
    text = proc.stdout + proc.stderr
    assert "warnings on 4 converted row(s) from pydicom or a decoder" in text
    assert "4 x Invalid value for VR IS: '1.5'. (first: line 2, id b0)" in text
    assert "Please see" not in text  # pydicom's pointer to the standard is cut
    result = dcm2tfrec.convert(
        labels=labels, images=tmp_path / "img", out=tmp_path / "api", size="16", dicom_tags=["InstanceNumber"]
    )
    assert result.records == 6 and not result.failures
    assert sorted({n.image_id for n in result.notes}) == ["b0", "b1", "b2", "b3"]
    assert {n.line for n in result.notes} == {2, 3, 4, 5}
    assert "warnings on 4 converted row(s)" in result.summary()

    table_csv = tmp_path / "table.csv"
    scanned = subprocess.run(
        [sys.executable, "-m", "dcm2tfrec", "scan", "--images", base[3], "--out", str(table_csv)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert scanned.returncode == 0, scanned.stderr
    assert "UserWarning" not in scanned.stderr
    assert "with reader warnings (the table's warnings column): 4" in scanned.stdout + scanned.stderr
    import csv

    with open(table_csv, newline="") as handle:
        table = {row["path"]: row["warnings"] for row in csv.DictReader(handle)}
    assert all("Invalid value for VR IS: '1.5'" in table[f"b{i}.dcm"] for i in range(4))
    assert table["g4.dcm"] == "" and table["g5.dcm"] == ""


def test_the_wheel_carries_the_cli_the_licence_and_the_type_marker(tmp_path) -> None:
    import zipfile
    from pathlib import Path

    root = Path(__file__).parents[1]
    pip = [sys.executable, "-m", "pip"]
    build = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(root)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("dcm2tfrec-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "dcm2tfrec/py.typed" in names and "dcm2tfrec/cli.py" in names
    assert not any(n.startswith(("tests/", "scripts/")) for n in names)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "dcm2tfrec = dcm2tfrec.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
    target = tmp_path / "site"
    installed = subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = "import dcm2tfrec, sys; print(dcm2tfrec.__file__)"
    run = {"capture_output": True, "text": True, "env": env, "cwd": tmp_path, "timeout": 60}
    where = subprocess.run([sys.executable, "-c", code], **run)
    assert where.stdout.startswith(str(target)), where.stdout + where.stderr
    script = str(target / "bin" / "dcm2tfrec")
    cli = subprocess.run([script, "convert", "--help"], **run)
    assert cli.returncode == 0 and "--labels" in cli.stdout, cli.stderr
