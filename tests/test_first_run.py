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
