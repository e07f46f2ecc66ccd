"""Hostile and real-world files, round 2: the right verdict, bounded memory, no silent damage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from dcm2tfrec.config import ConvertConfig, ImageSpec
from dcm2tfrec.convert import convert
from dcm2tfrec.dicom import read_dicom, tag_value
from dcm2tfrec.errors import DicomError
from dcm2tfrec.labels import Row
from dcm2tfrec.policy import decoding_plugins
from dcm2tfrec.testing import anatomy, write_deflate_bomb, write_dicom
from dcm2tfrec.worker import Task, process_row

from .helpers import read_errors, read_shards, write_labels

JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"


def _reason(path: Path, spec: ImageSpec | None = None) -> str:
    with pytest.raises(DicomError) as info:
        read_dicom(path, spec)
    return f"{info.value.reason} {info.value}"


_PEAK = """
import re, sys
from pathlib import Path
from dcm2tfrec.{module} import {function}
{call}
print(int(re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1)) >> 10)
"""  # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, from the forked pytest process


def _peak_mb(module: str, function: str, call: str) -> tuple[int, str]:
    code = _PEAK.format(module=module, function=function, call=call)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    *printed, peak = proc.stdout.split()
    return int(peak), " ".join(printed)


@pytest.mark.parametrize(
    ("rows", "verdict"),
    [(60000, "too_large"), (64, "pixel_data_mismatch")],
    ids=["huge_header", "long_stream"],
)
def test_a_deflate_bomb_is_refused_before_it_inflates(tmp_path: Path, rows: int, verdict: str) -> None:
    bomb = write_deflate_bomb(tmp_path / "bomb.dcm", rows, rows, 600 << 20)
    assert bomb.stat().st_size < 1 << 20
    call = f"from dcm2tfrec.errors import DicomError\ntry:\n    read_dicom(Path({str(bomb)!r}))\n"
    peak, printed = _peak_mb("dicom", "read_dicom", call + "except DicomError as e:\n    print(e.reason)")
    assert printed == verdict and peak < 300, (printed, peak)  # 600 MB would be inflated otherwise
    scan_call = f"row = read_header(Path({str(tmp_path)!r}), 'bomb.dcm')\nprint(row['error'])"
    peak, printed = _peak_mb("scan", "read_header", scan_call)
    assert printed == verdict and peak < 300, (printed, peak)


def test_a_small_deflated_file_still_converts(tmp_path: Path) -> None:
    assert read_dicom(write_deflate_bomb(tmp_path / "ok.dcm", 64, 64, 64 * 64 * 2)).pixels.shape == (64, 64)


def test_12_bit_jpeg_extended_decodes_with_the_permissive_pin_and_with_the_gpl_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pydicom.pixels import pixel_array

    from dcm2tfrec import policy

    path = Path(get_testdata_file("JPGExtended.dcm"))  # 12-bit, ships with pydicom
    permissive = pixel_array(pydicom.dcmread(path), decoding_plugin="imagecodecs")  # the pin (BSD)
    assert permissive.dtype == np.uint16 and permissive.shape == (1024, 256) and permissive.max() == 264
    assert policy.DECODING_PLUGINS[JPEG_EXTENDED] == "imagecodecs"
    pytest.importorskip("libjpeg")  # the [gpl] extra, which [dev] installs, takes effect:
    assert decoding_plugins()[JPEG_EXTENDED] == "pylibjpeg"
    gpl = read_dicom(path).pixels
    assert gpl.shape == permissive.shape and np.abs(gpl.astype(int) - permissive).max() <= 1  # IDCT rounding
    monkeypatch.setattr(policy, "OPTIONAL_PLUGINS", {JPEG_EXTENDED: ("pylibjpeg", "not_installed_module")})
    policy.decoding_plugins.cache_clear()
    try:
        assert decoding_plugins()[JPEG_EXTENDED] == "imagecodecs"  # without it: the pin
    finally:
        monkeypatch.undo()
        policy.decoding_plugins.cache_clear()


def test_padding_after_one_frame_is_not_damage_but_a_second_frame_is(tmp_path: Path) -> None:
    padded = Path(get_testdata_file("MR_small_padded.dcm"))  # 128 bytes of padding after its frame
    assert np.array_equal(read_dicom(padded).pixels, pydicom.dcmread(padded).pixel_array)
    ds = pydicom.dcmread(padded)
    ds.PixelData = ds.PixelData[:8192] * 2
    ds.save_as(tmp_path / "two.dcm")
    assert _reason(tmp_path / "two.dcm").startswith("pixel_data_mismatch")


def test_not_dicom_speaks_to_a_cli_user(tmp_path: Path) -> None:
    (tmp_path / "notes.dcm").write_bytes(b"just some notes, " * 20)
    (tmp_path / "tiny.dcm").write_bytes(b"abc")
    for name, needle in (("notes.dcm", "no 'DICM' marker"), ("tiny.dcm", "3 bytes, too short")):
        message = _reason(tmp_path / name)
        assert message.startswith("not_dicom") and needle in message and "force" not in message


@pytest.mark.parametrize(
    "rescale", [("nan", "0"), ("inf", "0"), ("1", "nan"), ("1", "-inf"), ("0", "0")], ids=str
)
def test_a_non_finite_or_zero_rescale_is_a_bad_header(tmp_path: Path, rescale: tuple[str, str]) -> None:
    path = write_dicom(tmp_path / "ct.dcm", anatomy(16, 16, 0, 2000, np.int16), rescale=(1.0, -1024.0))
    ds = pydicom.dcmread(path)
    ds["RescaleSlope"].value, ds["RescaleIntercept"].value = rescale
    ds.save_as(path)
    assert _reason(path).startswith("bad_header")


def test_a_pixel_representation_other_than_0_or_1_is_a_bad_header(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "a.dcm", anatomy(8, 8, 0, 200, np.uint8))
    ds = pydicom.dcmread(path)
    ds.PixelRepresentation = 7
    ds.save_as(path)
    assert _reason(path).startswith("bad_header PixelRepresentation=7")


def test_float_pixel_data_is_unsupported_not_missing(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "float.dcm", anatomy(8, 8, 0, 200, np.uint8))
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.BitsAllocated, ds.FloatPixelData = 32, np.zeros(64, np.float32).tobytes()
    ds.save_as(path)
    message = _reason(path)
    assert message.startswith("unsupported") and "FloatPixelData" in message


def test_a_nul_in_a_path_is_a_missing_file_with_a_clear_message(tmp_path: Path) -> None:
    result = process_row(Row(2, "a", "a\0.dcm", 0), Task(tmp_path, ImageSpec(width=8, height=8)))
    assert result.reason == "file_missing" and "NUL" in result.message  # type: ignore[union-attr]


def test_a_malformed_dicom_tag_value_is_stored_as_missing_not_a_lost_image(tmp_path: Path) -> None:
    path = write_dicom(
        tmp_path / "a.dcm",
        anatomy(16, 16, 0, 200, np.uint8),
        InstanceNumber="123456",
        SliceThickness="1.5e30",
    )
    data = (
        path.read_bytes().replace(b"123456", b"twelve").replace(b"1.5e30", b"1.0e39")
    )  # pydicom won't write them
    path.write_bytes(data)
    header = pydicom.dcmread(path, stop_before_pixels=True)
    assert tag_value(header, "InstanceNumber", "int64") == -1
    assert tag_value(header, "SliceThickness", "float") == float("inf")
    labels = write_labels(tmp_path / "labels.csv", [{"image_id": "a", "path": "a.dcm", "target": 1}])
    out = tmp_path / "out"
    result = convert(
        ConvertConfig(
            labels,
            tmp_path,
            out,
            image=ImageSpec(width=8, height=8),
            workers=1,
            dicom_tags=("InstanceNumber", "SliceThickness"),
        )
    )
    assert result.records == 1 and not read_errors(out) and len(read_shards(out)) == 1
