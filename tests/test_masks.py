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


def test_contour_files_are_filled_even_odd_at_the_images_resolution(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from dcm2tfrec.cli import cli
    from dcm2tfrec.testing import anatomy

    from .helpers import convert_args, read_errors, write_labels

    images = tmp_path / "img"
    for name in ("a", "b", "c"):
        write_dicom(images / f"{name}.dcm", anatomy(24, 32, 0, 200, np.uint8))
    # an outer square with a square hole (two polygons), i-contour style: one "x y" per line
    outer = "\n".join(f"{x} {y}" for x, y in ((4, 2), (20, 2), (20, 18), (4, 18)))
    hole = "\n".join(f"{x:.2f} {y:.2f}" for x, y in ((8, 6), (12, 6), (12, 10), (8, 10)))
    (images / "a.txt").write_text(f"{outer}\n\n{hole}\n")
    (images / "b.txt").write_text("4 2\n40 2\n40 10\n")  # x = 40 is outside 32 columns
    (images / "c.txt").write_text("4 2\nfour two\n")
    rows = [{"image_id": n, "path": f"{n}.dcm", "target": 0, "mask": f"{n}.txt"} for n in "abc"]
    labels = write_labels(tmp_path / "labels.csv", rows)
    args = convert_args(labels, images, tmp_path / "out", "--mask-col", "mask", "--size", "32x24")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 3, result.output
    errors = {e["id"]: e for e in read_errors(tmp_path / "out")}
    assert set(errors) == {"b", "c"} and {e["reason"] for e in errors.values()} == {"bad_mask"}
    assert "(40, 2) lies outside the image of 24 x 32" in errors["b"]["message"]
    assert "line 2: expected 'x y'" in errors["c"]["message"]
    import dcm2tfrec

    features = next(iter(dcm2tfrec.make_dataset(tmp_path / "out", batch_size=1, with_features=True)))
    expected = np.zeros((24, 32), np.uint8)
    expected[2:18, 4:20] = 1
    expected[6:10, 8:12] = 0
    assert np.array_equal(features["mask"].numpy()[0, ..., 0], expected)
