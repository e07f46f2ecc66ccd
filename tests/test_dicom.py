from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import examples

from dcm2tfrec.dicom import _unpadded_end, read_dicom
from dcm2tfrec.errors import DicomError
from dcm2tfrec.inputs import resolve_path
from dcm2tfrec.policy import decoding_plugins
from dcm2tfrec.testing import TRANSFER_SYNTAXES, anatomy, write_dicom

#: 12-bit JPEG Extended needs the GPL libjpeg plugin (optional extra), so we test 8-bit data there.
EIGHT_BIT_ONLY = {"jpeg_baseline", "jpeg_extended"}


@pytest.mark.parametrize("name", sorted(TRANSFER_SYNTAXES))
def test_every_transfer_syntax_decodes_to_the_written_pixels(tmp_path: Path, name: str) -> None:
    tsyntax, _, lossless = TRANSFER_SYNTAXES[name]
    if name in EIGHT_BIT_ONLY:
        pixels, bits = anatomy(64, 80, 10, 240, np.uint8), 8
    else:
        pixels, bits = anatomy(64, 80, 100, 4000, np.uint16), 12
    path = write_dicom(tmp_path / "x.dcm", pixels, bits_stored=bits, transfer_syntax=name)
    image = read_dicom(path)
    assert image.transfer_syntax == tsyntax and tsyntax in decoding_plugins()
    assert image.pixels.shape == pixels.shape
    err = np.abs(image.pixels.astype(np.int64) - pixels).max()
    assert err == 0 if lossless else err <= (8 if bits == 8 else 40)


@pytest.mark.parametrize("name", ["explicit_le", "explicit_be", "rle", "jpegls", "j2k", "htj2k"])
def test_signed_ct_survives_every_lossless_codec(tmp_path: Path, name: str) -> None:
    pixels = anatomy(64, 64, -1024, 2000, np.int16)
    path = write_dicom(
        tmp_path / "ct.dcm", pixels, transfer_syntax=name, rescale=(1.0, -1024.0), modality="CT"
    )
    image = read_dicom(path)
    assert np.array_equal(image.pixels, pixels)
    assert float(image.header.RescaleIntercept) == -1024.0


@pytest.mark.parametrize("name", ["explicit_le", "rle", "jpeg_baseline", "j2k"])
def test_colour_is_rgb_after_decoding(tmp_path: Path, name: str) -> None:
    grey = anatomy(64, 64, 0, 255, np.uint8)
    rgb = np.dstack([grey, grey // 2, 255 - grey])
    path = write_dicom(tmp_path / "rgb.dcm", rgb, photometric="RGB", transfer_syntax=name)
    image = read_dicom(path)
    err = np.abs(image.pixels.astype(int) - rgb).mean()
    assert image.pixels.shape == (64, 64, 3) and err < 3


@pytest.mark.parametrize("name", ["explicit_le", "implicit_le", "explicit_be", "deflate"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16])
def test_native_pixels_equal_pydicoms_own_decode(tmp_path: Path, name: str, dtype: type) -> None:
    info = np.iinfo(dtype)
    pixels = np.random.default_rng(7).integers(info.min, info.max, size=(31, 17), endpoint=True).astype(dtype)
    path = write_dicom(tmp_path / "x.dcm", pixels, transfer_syntax=name)
    image = read_dicom(path)
    reference = pydicom.dcmread(path).pixel_array
    assert image.pixels.dtype.newbyteorder("=") == reference.dtype.newbyteorder("=") == dtype
    assert np.array_equal(image.pixels, reference) and np.array_equal(image.pixels, pixels)


def test_pydicom_example_files_decode() -> None:
    for name in ("ct", "mr", "rgb_color", "jpeg2k", "overlay"):
        image = read_dicom(Path(examples.get_path(name)))
        assert image.pixels.size > 0


def test_multi_frame_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DicomError) as info:
        read_dicom(Path(examples.get_path("rt_dose")))
    assert info.value.reason in ("unsupported", "no_pixel_data")


def test_bad_files_get_specific_reasons(tmp_path: Path) -> None:
    (tmp_path / "text.dcm").write_text("hello, I am not DICOM")
    with pytest.raises(DicomError) as info:
        read_dicom(tmp_path / "text.dcm")
    assert info.value.reason == "not_dicom"
    from pydicom import dcmread

    ds = dcmread(examples.get_path("ct"))
    del ds.PixelData
    ds.save_as(tmp_path / "sr.dcm")
    with pytest.raises(DicomError) as info:
        read_dicom(tmp_path / "sr.dcm")
    assert info.value.reason == "no_pixel_data"


def test_paths_resolve_under_the_root_only(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.dcm").write_bytes(b"x")
    (tmp_path / "outside.dcm").write_bytes(b"x")
    os.symlink(tmp_path / "outside.dcm", root / "link.dcm")
    os.symlink(root / "nowhere.dcm", root / "dangling.dcm")
    assert resolve_path(root, "sub/a.dcm", False) == root / "sub" / "a.dcm"
    for rel, reason in [
        ("../outside.dcm", "outside_root"),
        (str(tmp_path / "outside.dcm"), "outside_root"),
        ("link.dcm", "outside_root"),
        ("dangling.dcm", "file_missing"),
        ("nope.dcm", "file_missing"),
        ("sub", "not_a_file"),
    ]:
        with pytest.raises(DicomError) as info:
            resolve_path(root, rel, False)
        assert info.value.reason == reason, rel
    assert resolve_path(root, "link.dcm", True) == root / "link.dcm"


@pytest.mark.parametrize("pad", [b"", b"\x00", b"\xff" * 3, b"\x00" * 5000])
def test_codestream_end_marker_is_found_behind_any_padding(pad: bytes) -> None:
    body = bytes(range(256)) * 40
    assert _unpadded_end(body + b"\xff\xd9" + pad).endswith(b"\xff\xd9")
    assert not _unpadded_end(body + pad).endswith(b"\xff\xd9")
