"""What a new user meets first: imports, the package's metadata, the demo."""

from __future__ import annotations

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
