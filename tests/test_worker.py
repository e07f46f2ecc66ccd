"""The worker on its own, in this process: one row in, a record or a Failure out, never an exception."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from dcm2tfrec.config import ImageSpec
from dcm2tfrec.errors import Failure
from dcm2tfrec.labels import Row
from dcm2tfrec.records import Sample, decode_record
from dcm2tfrec.testing import anatomy, write_dicom
from dcm2tfrec.worker import Task, process_row


def _task(root: Path) -> Task:
    return Task(image_root=root, spec=ImageSpec(width=16, height=16))


def test_a_good_row_becomes_its_record(tmp_path: Path) -> None:
    write_dicom(tmp_path / "a.dcm", anatomy(32, 32, 0, 4000, np.uint16), bits_stored=12)
    result = process_row(Row(2, "a", "a.dcm", 1), _task(tmp_path))
    assert isinstance(result, Sample) and (result.line, result.image_id, result.target) == (2, "a", 1)
    features = decode_record(result.payloads[0])
    assert features["image_id"] == ("bytes", [b"a"]) and features["target"] == ("int64", [1])
    assert features["height"] == ("int64", [16]) and features["image"][1][0][:4] == b"\x89PNG"


def test_file_problems_get_their_own_reasons(tmp_path: Path) -> None:
    (tmp_path / "folder.dcm").mkdir()
    rows = [
        Row(2, "gone", "gone.dcm", 0),
        Row(3, "folder", "folder.dcm", 0),
        Row(4, "long", "x" * 300 + ".dcm", 0),  # ENAMETOOLONG: an OSError that is not 'missing'
    ]
    got = {r.image_id: r for r in (process_row(row, _task(tmp_path)) for row in rows)}
    assert all(isinstance(r, Failure) for r in got.values())
    assert {k: r.reason for k, r in got.items()} == {  # type: ignore[union-attr]
        "gone": "file_missing",
        "folder": "not_a_file",
        "long": "unreadable",
    }
    assert "too long" in got["long"].message.lower()  # type: ignore[union-attr]


_UNREADABLE = """
import os, sys
from pathlib import Path
from dcm2tfrec.config import ImageSpec
from dcm2tfrec.labels import Row
from dcm2tfrec.worker import Task, process_row
task = Task(Path(sys.argv[1]), ImageSpec(width=8, height=8))
assert process_row(Row(1, "b", "b.dcm", 0), task).image_id == "b"  # imports done while readable
if os.geteuid() == 0:  # root reads anything: drop to nobody, as the test means a user without access
    os.setgid(65534)
    os.setuid(65534)
result = process_row(Row(2, "a", "a.dcm", 0), task)
print(result.reason, result.message)
"""


def test_a_file_without_read_permission_is_unreadable_not_truncated(tmp_path: Path) -> None:
    folder = tmp_path / "open"
    folder.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(folder, 0o755)
    for name in ("a.dcm", "b.dcm"):
        write_dicom(folder / name, anatomy(8, 8, 0, 200, np.uint8))
        os.chmod(folder / name, 0o644)
    os.chmod(folder / "a.dcm", 0)
    proc = subprocess.run(
        [sys.executable, "-c", _UNREADABLE, str(folder)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("unreadable ") and "Permission denied" in proc.stdout


def test_the_task_carries_no_process_concerns() -> None:
    fields = {f.name for f in dataclasses.fields(Task)}
    assert fields == {"image_root", "spec", "allow_outside_root", "extra", "tags", "masks", "storage"}
