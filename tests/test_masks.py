from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from dcm2tfrec.config import ImageSpec
from dcm2tfrec.errors import MaskError
from dcm2tfrec.image import place, scale
from dcm2tfrec.masks import fit_mask, read_mask
from dcm2tfrec.testing import write_dicom


def _mask() -> np.ndarray:
    mask = np.zeros((48, 64), np.uint8)
    mask[8:24, 12:32] = 1
    mask[32:44, 40:60] = 2
    return mask


@pytest.mark.parametrize(
    "spec",
    [
        ImageSpec(32, 24),
        ImageSpec(32, 32, resize="letterbox"),
        ImageSpec(24, 24, resize="crop"),
        ImageSpec(16, 16, resize="letterbox", channels=3),
    ],
)
def test_fit_mask_gives_the_image_geometry(spec: ImageSpec) -> None:
    """Labels on an even grid: the resized image and the fitted mask agree pixel for pixel."""
    mask = _mask()
    image = place(scale((mask * 100).astype(np.uint8), spec), spec)
    fitted = fit_mask(mask, mask.shape, spec)
    assert fitted.shape == (spec.height, spec.width, 1) and fitted.dtype == np.uint8
    assert set(np.unique(fitted)) <= {0, 1, 2}
    assert np.array_equal(np.round(image[..., :1] / 100.0), fitted)


def test_fit_mask_follows_a_reduced_decode() -> None:
    """An image decoded at half size: the full-size mask lands on the same output geometry."""
    spec = ImageSpec(32, 32, resize="letterbox")
    mask = _mask()
    reduced = cv2.resize(mask * 100, (32, 24), interpolation=cv2.INTER_AREA)
    image = place(scale(reduced, spec), spec)
    assert np.array_equal(np.round(image / 100.0), fit_mask(mask, reduced.shape, spec))


def test_read_mask_formats(tmp_path: Path) -> None:
    mask = _mask()
    cv2.imwrite(str(tmp_path / "m.png"), mask)
    cv2.imwrite(str(tmp_path / "rgb.png"), np.dstack([mask] * 3))
    np.save(tmp_path / "m.npy", mask.astype(bool) * 1)
    write_dicom(tmp_path / "m.dcm", mask, modality="SEG")
    assert np.array_equal(read_mask(tmp_path / "m.png"), mask)
    assert np.array_equal(read_mask(tmp_path / "rgb.png"), mask)
    assert np.array_equal(read_mask(tmp_path / "m.npy"), (mask > 0).astype(np.uint8))
    assert np.array_equal(read_mask(tmp_path / "m.dcm"), mask)
    np.save(tmp_path / "float.npy", mask.astype(np.float32))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    np.save(tmp_path / "stack.npy", np.arange(80, dtype=np.uint8).reshape(4, 4, 5))  # one mask per frame
    assert read_mask(tmp_path / "stack.npy").shape == (4, 4, 5)
    np.save(tmp_path / "colour.npy", np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    np.save(tmp_path / "hyper.npy", np.zeros((2, 4, 4, 5), np.uint8))
    for name, needle in [
        ("float.npy", "integer labels"),
        ("bad.png", "cannot read"),
        ("colour.npy", "one channel"),
        ("hyper.npy", "one channel"),
    ]:
        with pytest.raises(MaskError, match=needle):
            read_mask(tmp_path / name)
