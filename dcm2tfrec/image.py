"""Geometry and encoding: resize (stretch, letterbox, crop), channels, PNG bytes."""

from __future__ import annotations

import cv2
import numpy as np

from .config import ImageSpec

cv2.setNumThreads(1)


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


def resize(img: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """Resize to ``spec.width`` x ``spec.height`` with ``spec.resize``.

    stretch: ignore the aspect ratio. letterbox: fit inside and pad with zeros, centred.
    crop: fill the target and cut the overflow, centred.
    """
    h, w = img.shape[:2]
    new_w, new_h = scaled_size(w, h, spec)
    scaled = _resize_to(img, new_w, new_h)
    if spec.resize == "stretch":
        return scaled
    if spec.resize == "crop":
        x, y = (new_w - spec.width) // 2, (new_h - spec.height) // 2
        return np.ascontiguousarray(scaled[y : y + spec.height, x : x + spec.width])
    canvas = np.zeros((spec.height, spec.width, *img.shape[2:]), dtype=img.dtype)
    x, y = (spec.width - new_w) // 2, (spec.height - new_h) // 2
    canvas[y : y + new_h, x : x + new_w] = scaled
    return canvas


def to_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """Grey (H, W) or RGB (H, W, 3) -> (H, W, channels): grey is replicated, RGB is weighted."""
    if img.ndim == 2:
        img = img[:, :, np.newaxis]
    if img.shape[2] == channels:
        return img
    if channels == 1:
        return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[:, :, np.newaxis]
    return np.repeat(img, channels, axis=2)


def encode_png(img: np.ndarray, level: int) -> bytes:
    """PNG bytes of an (H, W, C) uint8/uint16 array; C = 3 is stored as RGB."""
    if img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, level])
    if not ok:
        raise ValueError(f"PNG encoding failed for a {img.shape} {img.dtype} image")
    return buf.tobytes()


def render(pixels: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """Output intensities -> the final (H, W, channels) array: channels and resize.

    Colour is reduced to grey before resizing and grey is replicated after, so that the
    resize always runs on the fewest channels.
    """
    if pixels.ndim == 3 and spec.channels == 1:
        pixels = to_channels(pixels, 1)
    out = resize(pixels, spec)
    return to_channels(out, spec.channels)
