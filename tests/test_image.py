from __future__ import annotations

import zlib

import cv2
import numpy as np
import pytest

from dcm2tfrec.config import ImageSpec
from dcm2tfrec.image import encode_png, place, scale


def _spec(**kw: object) -> ImageSpec:
    return ImageSpec(**kw)  # type: ignore[arg-type]


def resize(img: np.ndarray, spec: ImageSpec) -> np.ndarray:
    return place(scale(img, spec), spec)[:, :, 0]


def render(img: np.ndarray, spec: ImageSpec) -> np.ndarray:
    return place(scale(img, spec), spec)


@pytest.mark.parametrize("mode", ["stretch", "letterbox", "crop"])
@pytest.mark.parametrize("shape", [(100, 200), (300, 120), (1, 4096), (1, 1)])
def test_every_mode_gives_the_target_shape(mode: str, shape: tuple[int, int]) -> None:
    img = np.full(shape, 200, dtype=np.uint8)
    out = resize(img, _spec(width=64, height=48, resize=mode))
    assert out.shape == (48, 64)


def test_letterbox_pads_and_keeps_aspect() -> None:
    img = np.full((100, 200), 255, dtype=np.uint8)
    out = resize(img, _spec(width=100, height=100, resize="letterbox"))
    assert np.all(out[:25] == 0) and np.all(out[75:] == 0) and np.all(out[26:74] == 255)


def test_crop_fills_and_cuts_the_centre() -> None:
    img = np.zeros((100, 200), dtype=np.uint8)
    img[:, 50:150] = 255
    out = resize(img, _spec(width=100, height=100, resize="crop"))
    assert np.all(out == 255)


def test_area_when_shrinking_cubic_when_enlarging() -> None:
    img = np.zeros((8, 8), dtype=np.uint8)
    img[::2, ::2] = 255
    small = resize(img, _spec(width=4, height=4))
    assert np.all(small == 64)
    big = resize(np.array([[0, 255]], dtype=np.uint8), _spec(width=8, height=1))
    assert big[0, 0] == 0 and big[0, -1] == 255 and 0 < big[0, 4] < 255


def test_channels_and_png_round_trip_rgb_order() -> None:
    rgb = np.zeros((10, 10, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    out = render(rgb, _spec(width=10, height=10, channels=3))
    decoded = cv2.cvtColor(
        cv2.imdecode(np.frombuffer(encode_png(out, 3), np.uint8), cv2.IMREAD_UNCHANGED),
        cv2.COLOR_BGR2RGB,
    )
    assert np.array_equal(decoded, rgb)
    grey = render(rgb, _spec(width=10, height=10, channels=1))
    assert grey.shape == (10, 10, 1) and grey[0, 0, 0] == 76
    three = render(np.full((5, 5), 9, dtype=np.uint16), _spec(width=5, height=5, channels=3))
    assert three.shape == (5, 5, 3) and three.dtype == np.uint16


def test_png_is_lossless_for_16_bit_and_deterministic() -> None:
    img = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64, 1) * 13
    data = encode_png(img, 3)
    assert data == encode_png(img.copy(), 3)
    back = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and np.array_equal(back, img[:, :, 0])


def _png_row_filters(data: bytes) -> set[int]:
    """The filter type byte of every row of a single-IDAT-stream PNG (grey, 8-bit rows here)."""
    pos, idat = 8, b""
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        if data[pos + 4 : pos + 8] == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    raw = zlib.decompress(idat)
    width = int.from_bytes(data[16:20], "big")
    return set(raw[:: width + 1])


@pytest.mark.parametrize("level", range(10))
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_png_level_is_lossless(level: int, dtype: type, channels: int) -> None:
    rng = np.random.default_rng(level)
    top = np.iinfo(dtype).max
    img = rng.integers(0, top, size=(37, 23, channels), endpoint=True).astype(dtype)
    img[:10] = top // 3  # a flat band, so run-length and row filters have something to do
    back = cv2.imdecode(np.frombuffer(encode_png(img, level), np.uint8), cv2.IMREAD_UNCHANGED)
    if channels == 3:
        back = cv2.cvtColor(back, cv2.COLOR_BGR2RGB)
    assert back.dtype == dtype and np.array_equal(back.reshape(img.shape), img)


def test_default_png_level_uses_the_up_filter_on_every_row() -> None:
    img = np.tile(np.arange(64, dtype=np.uint8) * 3, (48, 1))[:, :, np.newaxis]
    assert _png_row_filters(encode_png(img, 1)) == {2}  # PNG filter type 2 = Up
    assert _png_row_filters(encode_png(img, 6)) != {2}  # adaptive filters pick others here
