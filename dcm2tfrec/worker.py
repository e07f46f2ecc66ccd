"""The worker: one CSV row -> a serialized record (Sample) or a Failure. Never raises for a row.

Pure of process concerns: it runs wherever an engine puts it (a local worker process, a Dask
worker) and imports nothing from TensorFlow. The pixel stack (pydicom, OpenCV) is imported on
first use, so a parent that only names :class:`Task` and :func:`process_row` never loads it.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import resource
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, TypeVar

from .config import ImageSpec
from .errors import Failure, MaskError, Reason, RowError, os_error_reason
from .faults import inject_row_fault
from .inputs import local_file
from .labels import Row
from .records import CROP, FRAME, MASK, FeatureKind, Features, FeatureValue, Sample, make_record

T = TypeVar("T")

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np
    from pydicom.dataset import Dataset

    from .dicom import DicomImage
    from .volume import Volume


@dataclasses.dataclass(frozen=True)
class Task:
    """What every row of a run shares: the image root, the pixel spec and the optional features."""

    #: The images root: a resolved local path, or a URL (with ``storage``, its fsspec options).
    image_root: str
    spec: ImageSpec
    allow_outside_root: bool = False
    #: Extra CSV columns (values in each Row) and DICOM keywords stored as features, with kinds.
    extra: tuple[tuple[str, FeatureKind], ...] = ()
    tags: tuple[tuple[str, FeatureKind], ...] = ()
    #: Whether rows carry a mask (``--mask-col``); every record then has a ``mask`` feature.
    masks: bool = False
    storage: tuple[tuple[str, object], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_root", os.fspath(self.image_root))  # a Path is fine too


def render(pixels: np.ndarray, header: Dataset, spec: ImageSpec) -> np.ndarray:
    """Decoded stored values -> the final (H, W, channels) image.

    The image is resized first and the intensity pipeline (a per-pixel lookup table) then runs
    on the small image: INTER_AREA averages stored, i.e. linear modality, values, and the
    window applies to what is shown. Palette indices are not intensities, so palette colour
    goes through its colour LUT first. Padding comes last, so letterbox bars are black. Several
    windows (8-bit) give one channel each; a colour image keeps its colour.
    """
    from .image import place, scale
    from .pixels import is_colour, to_output

    if spec.channel_windows and spec.bits == 8 and not is_colour(pixels, header):
        import numpy as np

        one = [
            dataclasses.replace(spec, window=w, channels=1, channel_windows=()) for w in spec.channel_windows
        ]
        return np.concatenate([render(pixels, header, each) for each in one], axis=2)
    if header.get("PhotometricInterpretation") == "PALETTE COLOR":
        return place(scale(to_output(pixels, header, spec), spec), spec)
    return place(to_output(scale(pixels, spec), header, spec), spec)


class _RowMask:
    """A row's mask file, read once (at its first frame, after the image proved readable)."""

    def __init__(self, row: Row, task: Task) -> None:
        self.row, self.task = row, task
        self._mask: np.ndarray | None = None

    def png(self, dicom: DicomImage) -> bytes:
        """The mask of ``dicom``'s frame, fitted to its geometry and PNG-encoded."""
        from .image import encode_png
        from .masks import empty_mask

        row, task = self.row, self.task
        if not row.mask:
            return encode_png(empty_mask(task.spec), task.spec.png_level)
        if self._mask is None:
            self._mask = _read_row_mask(row, task, int(dicom.header.Rows), int(dicom.header.Columns))
        return _fitted_mask_png(self._mask, row, task, dicom)


def _read_row_mask(row: Row, task: Task, rows: int, cols: int) -> np.ndarray:
    """The row's mask file: an image or stack of labels, or contours filled at ``rows`` x ``cols``."""
    from .masks import CONTOUR_SUFFIXES, fill_contours, read_contours, read_mask

    try:
        with local_file(task.image_root, row.mask or "", task.allow_outside_root, task.storage) as path:
            if path.suffix.lower() in CONTOUR_SUFFIXES:
                return fill_contours(read_contours(path), rows, cols, row.mask)
            return read_mask(path)
    except (RowError, OSError) as exc:
        raise MaskError(f"mask {row.mask}: {exc}") from None


def _fitted_mask_png(stack: np.ndarray, row: Row, task: Task, dicom: DicomImage) -> bytes:
    from .image import encode_png
    from .masks import fit_mask, frame_mask

    spec = task.spec
    mask = frame_mask(stack, dicom.frame, dicom.frames, row.mask or "")
    rows, cols = int(dicom.header.Rows), int(dicom.header.Columns)
    if mask.shape != (rows, cols):
        raise MaskError(f"mask {row.mask} is {mask.shape[0]} x {mask.shape[1]}, the image {rows} x {cols}")
    if dicom.crop is not None:  # the image's crop, in file pixels
        top, left, bottom, right = dicom.crop
        mask = mask[top:bottom, left:right]
    return encode_png(fit_mask(mask, dicom.pixels.shape[:2], spec), spec.png_level)


def _features(row: Row, task: Task, dicom: DicomImage, mask: _RowMask | None) -> Features:
    """The record's features beyond the schema: extra columns, DICOM tags, the mask, the frame."""
    from .dicom import tag_value

    features: dict[str, tuple[FeatureKind, FeatureValue | list[int]]] = {}
    if task.spec.frames != "reject":
        features[FRAME] = ("int64", dicom.frame)
    if task.spec.crop_foreground:
        features[CROP] = ("int64", dicom.crop or [0, 0, int(dicom.header.Rows), int(dicom.header.Columns)])
    for (name, kind), value in zip(task.extra, row.extras, strict=True):
        features[name] = (kind, value)
    for keyword, kind in task.tags:
        features[keyword] = (kind, tag_value(dicom.header, keyword, kind))
    if task.masks and mask is not None:
        features[MASK] = ("bytes", mask.png(dicom))
    return features


def _memory_note() -> str:
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return (
        "" if soft == resource.RLIM_INFINITY else f" (address-space limit {soft >> 20} MiB: --worker-memory)"
    )


def process_row(row: Row, task: Task) -> Sample | Failure:
    """Read, decode, transform, resize and encode one row's image into a record; what the readers
    warned of is in the record's ``notes``."""
    from .dicom import reader_warnings

    with reader_warnings() as found:
        result = _process_row(row, task)
    if isinstance(result, Sample) and found:
        return Sample(result.line, result.image_id, result.target, result.payloads, tuple(found))
    return result


def _records(row: Row, task: Task, frames: Iterator[DicomImage], mask: _RowMask) -> Iterator[bytes]:
    """The row's records: one per frame, or, with ``--stack 3``, each frame's grey image between
    its two neighbours' (the end frames repeated at the edges) as the 3 channels."""
    spec = task.spec
    if spec.stack == 1:
        for dicom in frames:
            dicom = _cropped(dicom, spec)
            yield _record(row, task, dicom, render(dicom.pixels, dicom.header, spec), mask)
        return
    import numpy as np

    grey = dataclasses.replace(spec, channels=1)
    rendered = ((dicom, render(dicom.pixels, dicom.header, grey)) for dicom in frames)
    for (dicom, _), planes in neighbours(rendered, spec.stack):
        yield _record(row, task, dicom, np.concatenate([p for _, p in planes], axis=2), mask)


def _cropped(dicom: DicomImage, spec: ImageSpec) -> DicomImage:
    """``dicom`` cut to its anatomy's box with ``--crop-foreground`` (the box kept in ``crop``)."""
    if not spec.crop_foreground:
        return dicom
    from .crop import foreground_box, source_box

    box = foreground_box(dicom.pixels, dicom.header)
    source = (int(dicom.header.Rows), int(dicom.header.Columns))
    crop = source_box(box, dicom.pixels.shape[:2], source)
    if box is None:
        return dataclasses.replace(dicom, crop=crop)
    top, left, bottom, right = box
    return dataclasses.replace(dicom, pixels=dicom.pixels[top:bottom, left:right], crop=crop)


def neighbours(items: Iterable[T], k: int) -> Iterator[tuple[T, list[T]]]:
    """Each item with the ``k`` items centred on it (``k`` odd; the first and last item repeated
    past the ends), holding at most ``k`` items at a time."""
    half = k // 2
    window: collections.deque[T] = collections.deque(maxlen=k)
    pending = 0  # items seen, not yet yielded as a centre
    for item in items:
        if not window:
            window.extend([item] * half)  # the first item, repeated before the start
        window.append(item)
        pending += 1
        if len(window) == k:
            yield window[half], list(window)
            pending -= 1
    for _ in range(pending):
        window.append(window[-1])  # the last item, repeated after the end
        yield window[half], list(window)


def _volume_record(row: Row, task: Task, path: Path) -> bytes:
    """The row's volume as one record: every slice (or ``--depth`` resampled ones) shown through
    the middle slice's window, encoded one at a time."""
    from .image import encode_image
    from .pixels import is_colour
    from .records import make_volume_record
    from .volume import decode_slice, iter_slices, plan_volume
    from .volume_pixels import display_header, finish, output_spacing, resampled, slice_values

    spec = task.spec
    volume = plan_volume(path, spec, row.series)
    count = len(volume.slices)
    middle = decode_slice(volume, volume.slices[count // 2], spec)
    header = display_header(middle.pixels, middle.header, spec)
    colour = is_colour(middle.pixels, middle.header)
    values = (slice_values(d.pixels, d.header, spec) for d in iter_slices(volume, spec))
    pngs, shape = [], (0, 0, 0)
    for slice_values_ in resampled(values, count, spec.depth):
        out = finish(slice_values_, header, spec, colour)
        shape = out.shape
        pngs.append(encode_image(out, spec))
    spacing = output_spacing(volume.gap, volume.pixel_spacing, volume.rows, volume.cols, count, spec)
    features = _features(row, task, middle, None)
    masks = _volume_masks(row, task, volume, middle) if task.masks else None
    return make_volume_record(pngs, row.target, row.image_id, shape, spacing, features, masks)


def _volume_masks(row: Row, task: Task, volume: Volume, middle: DicomImage) -> list[bytes]:
    """One mask PNG per output slice: the mask of the nearest source slice (a 3-D ``.npy`` or a
    multi-frame DICOM mask holds one per source slice: per frame of a multi-frame image, in the
    volume's slice order for a folder; a 2-D mask serves every slice), fitted like the slices."""
    from .image import encode_png
    from .masks import empty_mask, fit_mask, frame_mask
    from .volume_pixels import positions

    spec, count = task.spec, len(volume.slices)
    if not row.mask:
        return [encode_png(empty_mask(spec), spec.png_level)] * len(positions(count, spec.depth))
    rows, cols = volume.rows, volume.cols
    stack = _read_row_mask(row, task, rows, cols)
    if stack.shape[-2:] != (rows, cols):
        raise MaskError(
            f"mask {row.mask} is {stack.shape[-2]} x {stack.shape[-1]}, the image {rows} x {cols}"
        )
    pngs = []
    for at in positions(count, spec.depth):
        piece = volume.slices[int(at + 0.5)]
        index = piece.frame if volume.source is not None else volume.slices.index(piece)
        mask = frame_mask(stack, index, count, row.mask)
        pngs.append(encode_png(fit_mask(mask, middle.pixels.shape[:2], spec), spec.png_level))
    return pngs


def _record(row: Row, task: Task, dicom: DicomImage, out: np.ndarray, mask: _RowMask) -> bytes:
    from .image import encode_image

    png = encode_image(out, task.spec)
    height, width, channels = out.shape
    features = _features(row, task, dicom, mask)
    return make_record(png, row.target, row.image_id, height, width, channels, features)


def _process_row(row: Row, task: Task) -> Sample | Failure:
    from .dicom import iter_frames
    from .volume import frame_order

    try:
        inject_row_fault(row.image_id)
        volume = task.spec.volume
        with local_file(task.image_root, row.path, task.allow_outside_root, task.storage, volume) as path:
            if volume:
                payloads: tuple[bytes, ...] = (_volume_record(row, task, path),)
            else:
                mask = _RowMask(row, task)
                order = frame_order(path) if task.spec.stack > 1 else None
                payloads = tuple(_records(row, task, iter_frames(path, task.spec, order), mask))
    except RowError as exc:
        return Failure(row.line, row.image_id, row.path, exc.reason, str(exc))
    except MemoryError:
        return Failure(
            row.line,
            row.image_id,
            row.path,
            Reason.OUT_OF_MEMORY,
            f"the worker ran out of memory{_memory_note()}",
        )
    except OSError as exc:
        return Failure(row.line, row.image_id, row.path, os_error_reason(exc), f"{exc.strerror or exc}")
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # also a Rust decoder's panic, which is no Exception
        return Failure(row.line, row.image_id, row.path, Reason.PIXEL_ERROR, f"{type(exc).__name__}: {exc}")
    return Sample(row.line, row.image_id, row.target, payloads)
