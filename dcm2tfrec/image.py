"""Geometry and encoding: resize (stretch, letterbox, crop) as scale then place, channels, PNG."""

from __future__ import annotations

import cv2
import numpy as np

from .config import ImageSpec


def _interpolation(src_w: int, src_h: int, dst_w: int, dst_h: int) -> int:
    """INTER_AREA when the image shrinks in both directions, INTER_CUBIC otherwise."""
    return cv2.INTER_AREA if dst_w <= src_w and dst_h <= src_h else cv2.INTER_CUBIC


def _resize_to(img: np.ndarray, width: int, height: int) -> np.ndarray:
    h, w = img.shape[:2]
    if (w, h) == (width, height):
        return img
    out = cv2.resize(img, (width, height), interpolation=_interpolation(w, h, width, height))
    return out.reshape(height, width, *img.shape[2:])


def scaled_size(width: int, height: int, spec: ImageSpec) -> tuple[int, int]:
    """The size a ``width`` x ``height`` image is resized to before any padding or cropping."""
    if spec.resize == "stretch":
        return spec.width, spec.height
    fit = min if spec.resize == "letterbox" else max
    scale = fit(spec.width / width, spec.height / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


_CV_DTYPES = frozenset({np.dtype(t) for t in ("uint8", "uint16", "int16", "float32", "float64")})


def scale(img: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """Resize to the size ``spec`` scales this image to, before any padding or cropping."""
    h, w = img.shape[:2]
    if img.dtype not in _CV_DTYPES:
        img = img.astype(np.float64)
    return _resize_to(img, *scaled_size(w, h, spec))


def place(img: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """A scaled image -> exactly ``spec.width`` x ``spec.height`` with ``spec.channels``.

    letterbox pads with zeros (black), centred; crop cuts the centre; colour is reduced to grey
    or grey replicated as ``spec.channels`` asks.
    """
    h, w = img.shape[:2]
    if spec.resize == "crop":
        x, y = (w - spec.width) // 2, (h - spec.height) // 2
        img = img[y : y + spec.height, x : x + spec.width]
    elif (w, h) != (spec.width, spec.height):
        canvas = np.zeros((spec.height, spec.width, *img.shape[2:]), dtype=img.dtype)
        x, y = (spec.width - w) // 2, (spec.height - h) // 2
        canvas[y : y + h, x : x + w] = img
        img = canvas
    return np.ascontiguousarray(to_channels(img, spec.channels))


def to_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """Grey (H, W) or RGB (H, W, 3) -> (H, W, channels): grey is replicated, RGB is weighted."""
    if img.ndim == 2:
        img = img[:, :, np.newaxis]
    if img.shape[2] == channels:
        return img
    if channels == 1:
        return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[:, :, np.newaxis]
    return np.repeat(img, channels, axis=2)


def _png_params(level: int) -> list[int]:
    """OpenCV's PNG settings for ``--png-level``. Level 1 (the default) uses one fixed row filter
    ("up") and zlib's run-length strategy (faster and smaller than libpng's adaptive filters on
    medical images: see the README's Performance section). Other levels use the adaptive filters."""
    if level == 1:
        return [
            cv2.IMWRITE_PNG_COMPRESSION,
            1,
            cv2.IMWRITE_PNG_FILTER,
            cv2.IMWRITE_PNG_FILTER_UP,
            cv2.IMWRITE_PNG_STRATEGY,
            cv2.IMWRITE_PNG_STRATEGY_RLE,
        ]
    return [cv2.IMWRITE_PNG_COMPRESSION, level]


def encode_png(img: np.ndarray, level: int) -> bytes:
    """PNG bytes of an (H, W, C) uint8/uint16 array; C = 3 is stored as RGB."""
    if img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", img, _png_params(level))
    if not ok:
        raise ValueError(f"PNG encoding failed for a {img.shape} {img.dtype} image")
    return buf.tobytes()


def encode_image(img: np.ndarray, spec: ImageSpec) -> bytes:
    """An output image as ``spec.format`` asks: PNG at ``png_level``, or baseline JPEG at
    ``jpeg_quality`` (4:4:4, optimized tables: the same bytes for the same pixels)."""
    if spec.format == "png":
        return encode_png(img, spec.png_level)
    if img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    params = [
        cv2.IMWRITE_JPEG_QUALITY,
        spec.jpeg_quality,
        cv2.IMWRITE_JPEG_OPTIMIZE,
        1,
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
    ]
    ok, buf = cv2.imencode(".jpg", img, params)
    if not ok:
        raise ValueError(f"JPEG encoding failed for a {img.shape} {img.dtype} image")
    return buf.tobytes()
