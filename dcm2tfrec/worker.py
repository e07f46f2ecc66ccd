"""The worker: one CSV row -> a serialized record (Sample) or a Failure. Never raises for a row.

Runs in joblib worker processes; imports nothing from TensorFlow.
"""

from __future__ import annotations

from pathlib import Path

from .config import Failure, ImageSpec
from .dicom import DicomError, read_dicom, resolve_path
from .image import encode_png, render
from .labels import Row
from .pixels import to_output
from .records import Sample, make_record


def process_row(
    row: Row, image_root: Path, spec: ImageSpec, allow_outside_root: bool = False
) -> Sample | Failure:
    """Read, decode, transform, resize and encode one row's image into a record."""
    try:
        path = resolve_path(image_root, row.path, allow_outside_root)
        dicom = read_dicom(path, spec)
    except DicomError as exc:
        return Failure(row.line, row.image_id, row.path, exc.reason, str(exc))
    except OSError as exc:
        return Failure(row.line, row.image_id, row.path, "file_missing", f"{exc.strerror or exc}")
    try:
        out = render(to_output(dicom.pixels, dicom.header, spec), spec)
        png = encode_png(out, spec.png_level)
    except Exception as exc:
        return Failure(row.line, row.image_id, row.path, "pixel_error", f"{type(exc).__name__}: {exc}")
    height, width, channels = out.shape
    return Sample(
        row.line,
        row.image_id,
        row.target,
        make_record(png, row.target, row.image_id, height, width, channels),
    )


def process_chunk(
    rows: list[Row], image_root: Path, spec: ImageSpec, allow_outside_root: bool = False
) -> list[Sample | Failure]:
    """Process a chunk of rows in order (one joblib task)."""
    return [process_row(row, image_root, spec, allow_outside_root) for row in rows]
