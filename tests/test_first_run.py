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
