from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_windowing

from dcm2tfrec.config import ImageSpec, Window
from dcm2tfrec.pixels import grey_transform, to_output
from dcm2tfrec.policy import VALUE_OFFSET_16
from dcm2tfrec.testing import write_dicom


def _header(**kw: object) -> Dataset:
    ds = Dataset()
    ds.PhotometricInterpretation = kw.pop("photometric", "MONOCHROME2")
    ds.BitsAllocated = 16
    ds.BitsStored = kw.pop("bits", 16)
    ds.PixelRepresentation = kw.pop("signed", 0)
    ds.SamplesPerPixel = 1
    for k, v in kw.items():
        setattr(ds, k, v)
    return ds


CT = dict(
    signed=1,
    RescaleSlope=1.0,
    RescaleIntercept=-1024.0,
    WindowCenter=[40.0, -600.0],
    WindowWidth=[400.0, 1500.0],
)


def test_lut_path_equals_direct_pipeline_on_the_image() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(-1000, 3000, (40, 50)).astype(np.int16)
    header = _header(**CT)
    expected = grey_transform(img, header, ImageSpec())
    assert np.array_equal(to_output(img, header, ImageSpec()), expected)


def test_ct_uses_first_window_of_pydicom_in_hounsfield_units() -> None:
    header = _header(**CT)
    stored = np.array([[0, 1024 - 160, 1024 + 40, 1024 + 240, 4000]], dtype=np.int16)
    out = to_output(stored, header, ImageSpec())
    hu = apply_modality_lut(stored, header)
    assert list(hu[0]) == [-1024, -160, 40, 240, 2976]
    assert out[0, 0] == 0 and out[0, 1] == 0 and out[0, -1] == 255 and out[0, -2] == 255
    assert abs(int(out[0, 2]) - 128) <= 1
    y_min, y_max = -32768 - 1024, 32767 - 1024  # pydicom's output range for signed 16-bit + rescale
    win = apply_windowing(hu.astype(float), header)
    assert np.array_equal(out, np.rint((win - y_min) / (y_max - y_min) * 255))


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_voi_lut_functions_are_pydicoms(function: str) -> None:
    header = _header(bits=12, WindowCenter=2048.0, WindowWidth=1000.0, VOILUTFunction=function)
    ramp = np.arange(0, 4096, 8, dtype=np.uint16)[np.newaxis]
    out = to_output(ramp, header, ImageSpec()).astype(int)
    assert out[0, 0] <= 3 and out[0, -1] >= 252
    assert np.all(np.diff(out[0]) >= 0)
    mid = out[0, 2048 // 8]
    assert 120 <= mid <= 135
    if function == "SIGMOID":
        assert 0 < out[0, (2048 - 500) // 8] < 40
    else:
        assert out[0, (2048 - 520) // 8] == 0


def test_voi_lut_sequence_is_preferred_over_window() -> None:
    from pydicom.sequence import Sequence

    item = Dataset()
    item.LUTDescriptor = [4, 0, 8]
    item.LUTData = [0, 10, 20, 255]
    header = _header(bits=2, WindowCenter=1.0, WindowWidth=1.0)
    header.VOILUTSequence = Sequence([item])
    out = to_output(np.array([[0, 1, 2, 3]], dtype=np.uint16), header, ImageSpec())
    assert list(out[0]) == [0, 10, 20, 255]


def test_monochrome1_is_inverted() -> None:
    stored = np.array([[0, 4095]], dtype=np.uint16)
    mono2 = to_output(stored, _header(bits=12), ImageSpec(window=Window("none")))
    mono1 = to_output(stored, _header(bits=12, photometric="MONOCHROME1"), ImageSpec(window=Window("none")))
    assert list(mono2[0]) == [0, 255] and list(mono1[0]) == [255, 0]


def test_fallback_percentiles_ignore_outliers() -> None:
    img = np.full((100, 100), 1000, dtype=np.uint16)
    img[:, 50:] = 2000
    img[0, 0] = 0
    img[0, 1] = 65535
    out = to_output(img, _header(), ImageSpec())
    assert out[50, 10] == 0 and out[50, 90] == 255
    spread = to_output(img, _header(), ImageSpec(window=Window("none")))
    assert 0 < spread[50, 10] < spread[50, 90] < 255


def test_fixed_window_in_modality_units() -> None:
    header = _header(**CT)
    stored = np.array([[1024 - 1000, 1024 + 0, 1024 + 1000]], dtype=np.int16)
    out = to_output(stored, header, ImageSpec(window=Window("fixed", 0.0, 2000.0)))
    assert out[0, 0] == 0 and abs(int(out[0, 1]) - 128) <= 1 and out[0, 2] >= 254


def test_bad_file_window_falls_back() -> None:
    header = _header(bits=12, WindowCenter=100.0, WindowWidth=0.0)
    out = to_output(np.array([[10, 20, 30]], dtype=np.uint16), header, ImageSpec())
    assert out[0, 0] < out[0, 1] < out[0, 2]


def test_constant_image_does_not_divide_by_zero() -> None:
    out = to_output(np.full((4, 4), 7, dtype=np.uint16), _header(), ImageSpec())
    assert out.dtype == np.uint8 and np.all(out == 0)


def test_sixteen_bit_keeps_modality_values() -> None:
    header = _header(**CT)
    stored = np.array([[0, 1024, 4095]], dtype=np.int16)
    out = to_output(stored, header, ImageSpec(bits=16))
    assert out.dtype == np.uint16
    assert list(out[0].astype(int) - VALUE_OFFSET_16) == [-1024, 0, 3071]


def test_sixteen_bit_monochrome1_reflects_within_stored_range() -> None:
    out = to_output(
        np.array([[0, 100, 4095]], dtype=np.uint16),
        _header(bits=12, photometric="MONOCHROME1"),
        ImageSpec(bits=16),
    )
    assert list(out[0].astype(int) - VALUE_OFFSET_16) == [4095, 3995, 0]


def test_float_pixels_use_the_direct_path() -> None:
    img = np.linspace(0.0, 1.0, 50, dtype=np.float32)[np.newaxis]
    out = to_output(img, _header(), ImageSpec(window=Window("none")))
    assert out[0, 0] == 0 and out[0, -1] == 255


def test_colour_passes_through_at_full_scale() -> None:
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    header = _header(photometric="RGB", bits=8)
    assert np.array_equal(to_output(rgb, header, ImageSpec()), rgb)
    assert to_output(rgb, header, ImageSpec(bits=16))[0, 0, 0] == 200 * 257


def test_lookup_tables_are_cached_only_when_they_do_not_depend_on_the_image() -> None:
    header = _header(bits=12)
    dark = np.array([[0, 100, 200]], dtype=np.uint16)
    bright = np.array([[0, 1000, 4000]], dtype=np.uint16)
    assert list(to_output(dark, header, ImageSpec())[0]) == [0, 128, 255]
    assert list(to_output(bright, header, ImageSpec())[0]) == [0, 64, 255]
    narrow = _header(bits=12, WindowCenter=100.0, WindowWidth=50.0)
    wide = _header(bits=12, WindowCenter=100.0, WindowWidth=500.0)
    assert (
        to_output(dark, narrow, ImageSpec())[0, 1]
        != to_output(np.array([[0, 50, 200]], np.uint16), wide, ImageSpec())[0, 1]
    )
    assert np.array_equal(to_output(dark, narrow, ImageSpec()), grey_transform(dark, narrow, ImageSpec()))
    assert np.array_equal(to_output(dark, wide, ImageSpec()), grey_transform(dark, wide, ImageSpec()))


def test_cached_tables_keyed_on_raw_header_bytes_never_mix_files(tmp_path: Path) -> None:
    """Files read from disk key the table cache on their undecoded elements: files that differ in
    window, rescale, sign or byte order each get their own table, equal to the direct pipeline."""
    pixels = np.arange(-600, 600, dtype=np.int16).reshape(30, 40)
    variants = [
        dict(windows=[(40, 400)], rescale=(1.0, -1024.0)),
        dict(windows=[(40, 1500)], rescale=(1.0, -1024.0)),
        dict(windows=[(40, 400)], rescale=(2.0, -1024.0)),
        dict(windows=[(40, 400)], rescale=(1.0, -1024.0), transfer_syntax="explicit_be"),
        dict(windows=[(40, 400)], rescale=(1.0, -1024.0), transfer_syntax="implicit_le"),
        dict(windows=[(300, 400)], rescale=(1.0, 0.0)),
    ]
    paths = [write_dicom(tmp_path / f"{i}.dcm", pixels, **kw) for i, kw in enumerate(variants)]  # type: ignore[arg-type]
    for path in [*paths, *reversed(paths)]:
        cached = to_output(pixels, pydicom.dcmread(path), ImageSpec())
        direct = grey_transform(pixels, pydicom.dcmread(path), ImageSpec())
        assert np.array_equal(cached, direct), path.name
    outputs = {to_output(pixels, pydicom.dcmread(p), ImageSpec()).tobytes() for p in paths}
    assert len(outputs) == 4  # the byte orders and VR encodings agree with the first file


@pytest.mark.parametrize("signed", [0, 1])
@pytest.mark.parametrize("window", [{}, {"WindowCenter": 300.0, "WindowWidth": 800.0}])
def test_tables_over_the_stored_range_match_the_direct_pipeline(signed: int, window: dict) -> None:
    """12-bit data gets a table over its 4,096 stored values only; an image with a value outside
    that range (a header that lies) gets the full table, never a cached narrow one. Reference:
    the direct pipeline with a window; without one (percentiles from the table's histogram), the
    table over all 65,536 values that a 16-bit header gets."""
    low = -2048 if signed else 0
    dtype = np.int16 if signed else np.uint16
    header = _header(bits=12, signed=signed, **window)
    full_range = _header(bits=16, signed=signed, **window)
    inside = np.random.default_rng(3).integers(low, low + 4096, (40, 50)).astype(dtype)
    outside = inside.copy()
    outside[0, 0] = low + 5000
    for img in (inside, outside, inside):
        for spec in (ImageSpec(), ImageSpec(bits=16)):
            expected = grey_transform(img, header, spec) if window else to_output(img, full_range, spec)
            assert np.array_equal(to_output(img, header, spec), expected)


@pytest.mark.parametrize(
    ("center", "width"), [("nan", "400"), ("inf", "400"), ("40", "nan"), ("40", "-inf"), ("40", "0")]
)
def test_a_non_finite_or_useless_window_falls_back_like_a_missing_one(center: str, width: str) -> None:
    ramp = np.arange(0, 4096, 16, dtype=np.uint16).reshape(16, 16)
    expected = to_output(ramp, _header(bits=12), ImageSpec())
    out = to_output(ramp, _header(bits=12, WindowCenter=center, WindowWidth=width), ImageSpec())
    assert np.array_equal(out, expected) and out.max() == 255 and out.min() == 0


def test_a_fixed_window_must_be_finite() -> None:
    from dcm2tfrec.errors import ConfigError

    for text in ("nan,400", "40,inf"):
        with pytest.raises(ConfigError, match="finite"):
            Window.parse(text)


def test_an_empty_voi_lut_sequence_leaves_the_window_in_charge() -> None:
    from pydicom.sequence import Sequence

    stored = np.array([[0, 1000, 2000, 3000]], dtype=np.uint16)
    windowed = _header(bits=12, WindowCenter=1500.0, WindowWidth=1000.0)
    both = _header(bits=12, WindowCenter=1500.0, WindowWidth=1000.0)
    both.VOILUTSequence = Sequence([])
    assert list(to_output(stored, both, ImageSpec())[0]) == list(to_output(stored, windowed, ImageSpec())[0])
    assert list(to_output(stored, both, ImageSpec())[0]) == [0, 0, 255, 255]


def test_presentation_lut_inverse_inverts_monochrome2_once_and_monochrome1_not_twice() -> None:
    stored = np.array([[0, 2048, 4095]], dtype=np.uint16)
    spec = ImageSpec(window=Window("none"))
    plain = to_output(stored, _header(bits=12), spec)[0]
    inverse = to_output(stored, _header(bits=12, PresentationLUTShape="INVERSE"), spec)[0]
    mono1 = to_output(
        stored, _header(bits=12, photometric="MONOCHROME1", PresentationLUTShape="INVERSE"), spec
    )[0]
    assert list(plain) == [0, 128, 255] and list(inverse) == [255, 127, 0] and list(mono1) == list(inverse)


def test_a_big_endian_palette_file_looks_like_its_little_endian_twin() -> None:
    pytest.importorskip("data_store")  # pydicom-data (the [dev] extra): real files of pydicom's own tests
    from pydicom.data import get_testdata_file

    from dcm2tfrec.dicom import read_dicom
    from dcm2tfrec.worker import render

    spec = ImageSpec(width=80, height=60, channels=3)
    images = []
    for name in ("OBXXXX1A.dcm", "OBXXXX1A_expb.dcm"):
        image = read_dicom(Path(get_testdata_file(name)), spec)
        images.append(render(image.pixels, image.header, spec))
    assert images[0].mean() > 5 and np.array_equal(images[0], images[1])
