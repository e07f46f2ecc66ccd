"""The worker: one CSV row -> a serialized record (Sample) or a Failure. Never raises for a row.

Runs in the worker processes of :mod:`dcm2tfrec.pool`; imports nothing from TensorFlow. A row
that kills or hangs its worker is re-run alone in a fresh process, so it costs only itself.
The pixel stack (pydicom, OpenCV) is imported on first use, so the parent, which only needs
:class:`Task` and :func:`process_chunk` by name, never loads it (the pool's fork server does).
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .config import Failure, ImageSpec
from .faults import inject_row_fault
from .labels import Row
from .records import FeatureKind, Features, FeatureValue, Sample, make_record

if TYPE_CHECKING:
    import numpy as np
    from pydicom.dataset import Dataset

    from .dicom import DicomImage

_limited_pid = 0


@dataclass(frozen=True)
class Task:
    """What every row of a run shares: the image root, the pixel spec and the worker limits."""

    image_root: Path
    spec: ImageSpec
    allow_outside_root: bool = False
    memory_limit: int = 0
    parent_pid: int = 0
    faults: str = ""
    #: Extra CSV columns (values in each Row) and DICOM keywords stored as features, with kinds.
    extra: tuple[tuple[str, FeatureKind], ...] = ()
    tags: tuple[tuple[str, FeatureKind], ...] = ()
    #: Whether rows carry a mask (``--mask-col``); every record then has a ``mask`` feature.
    masks: bool = False


def _limit_memory(task: Task) -> None:
    """Cap this worker's address space once (never the calling process's, e.g. a notebook's)."""
    global _limited_pid
    pid = os.getpid()
    if task.memory_limit and pid != task.parent_pid and _limited_pid != pid:
        resource.setrlimit(resource.RLIMIT_AS, (task.memory_limit, task.memory_limit))
        _limited_pid = pid


def render(pixels: np.ndarray, header: Dataset, spec: ImageSpec) -> np.ndarray:
    """Decoded stored values -> the final (H, W, channels) image.

    The image is resized first and the intensity pipeline (a per-pixel lookup table) then runs
    on the small image: INTER_AREA averages stored, i.e. linear modality, values, and the
    window applies to what is shown. Palette indices are not intensities, so palette colour
    goes through its colour LUT first. Padding comes last, so letterbox bars are black.
    """
    from .image import place, scale
    from .pixels import to_output

    if header.get("PhotometricInterpretation") == "PALETTE COLOR":
        return place(scale(to_output(pixels, header, spec), spec), spec)
    return place(to_output(scale(pixels, spec), header, spec), spec)


class _MaskProblem(Exception):
    """The row's mask cannot be used (reason ``bad_mask``)."""


def _mask_png(row: Row, task: Task, dicom: DicomImage) -> bytes:
    from .dicom import DicomError, resolve_path
    from .image import encode_png
    from .masks import MaskError, empty_mask, fit_mask, read_mask

    spec = task.spec
    if not row.mask:
        return encode_png(empty_mask(spec), spec.png_level)
    try:
        mask = read_mask(resolve_path(task.image_root, row.mask, task.allow_outside_root))
    except (DicomError, MaskError, OSError) as exc:
        raise _MaskProblem(f"mask {row.mask}: {exc}") from None
    rows, cols = int(dicom.header.Rows), int(dicom.header.Columns)
    if mask.shape != (rows, cols):
        raise _MaskProblem(f"mask {row.mask} is {mask.shape[0]} x {mask.shape[1]}, the image {rows} x {cols}")
    return encode_png(fit_mask(mask, dicom.pixels.shape[:2], spec), spec.png_level)


def _features(row: Row, task: Task, dicom: DicomImage) -> Features:
    """The row's features beyond the schema: extra columns, DICOM tags, the mask."""
    from .dicom import tag_value

    features: dict[str, tuple[FeatureKind, FeatureValue]] = {}
    for (name, kind), value in zip(task.extra, row.extras, strict=True):
        features[name] = (kind, value)
    for keyword, kind in task.tags:
        features[keyword] = (kind, tag_value(dicom.header, keyword, kind))
    if task.masks:
        features["mask"] = ("bytes", _mask_png(row, task, dicom))
    return features


def process_row(row: Row, task: Task) -> Sample | Failure:
    """Read, decode, transform, resize and encode one row's image into a record."""
    from .dicom import DicomError, read_dicom, resolve_path
    from .image import encode_png

    spec = task.spec
    try:
        if task.faults:
            inject_row_fault(task.faults, row.image_id)
        path = resolve_path(task.image_root, row.path, task.allow_outside_root)
        dicom = read_dicom(path, spec)
        out = render(dicom.pixels, dicom.header, spec)
        png = encode_png(out, spec.png_level)
        features = _features(row, task, dicom)
    except _MaskProblem as exc:
        return Failure(row.line, row.image_id, row.path, "bad_mask", str(exc))
    except DicomError as exc:
        return Failure(row.line, row.image_id, row.path, exc.reason, str(exc))
    except MemoryError:
        limit = f" (--worker-memory {task.memory_limit >> 20} MiB)" if task.memory_limit else ""
        return Failure(
            row.line, row.image_id, row.path, "out_of_memory", f"the worker ran out of memory{limit}"
        )
    except OSError as exc:
        return Failure(row.line, row.image_id, row.path, "file_missing", f"{exc.strerror or exc}")
    except Exception as exc:
        return Failure(row.line, row.image_id, row.path, "pixel_error", f"{type(exc).__name__}: {exc}")
    height, width, channels = out.shape
    payload = make_record(png, row.target, row.image_id, height, width, channels, features)
    return Sample(row.line, row.image_id, row.target, payload)


def process_chunk(rows: list[Row], task: Task) -> list[Sample | Failure]:
    """Process a chunk of rows in order (one pool task)."""
    _limit_memory(task)
    return [process_row(row, task) for row in rows]
