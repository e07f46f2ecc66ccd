"""A CSV row's volume (``--volume``): the slices of one series, from a folder of single-frame files
or a multi-frame file, ordered along the slice normal and checked for one geometry, then decoded
one at a time.

Order: ImagePositionPatient projected on the normal (the cross product of ImageOrientationPatient's
row and column cosines; for an enhanced multi-frame file, its per-frame functional groups); without
that geometry, InstanceNumber (a multi-frame file: its frame order); never file names alone.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from .config import ImageSpec
from .dicom import DicomImage, iter_frames, read_dataset
from .errors import DicomError, Reason

#: A gap between neighbouring slices may differ from the median gap by this share at most.
SPACING_TOLERANCE = 0.1
#: Positions closer than this (mm) are the same position; orientations closer than this agree.
_SAME_POSITION, _SAME_ORIENTATION = 1e-3, 1e-4


@dataclass(frozen=True)
class Slice:
    """One slice: its file, its frame in that file, and its place along the slice axis."""

    path: Path
    frame: int
    position: float | None  # mm along the normal; None when only an InstanceNumber orders it
    instance: int | None


@dataclass(frozen=True)
class Volume:
    """The ordered slices of a row, the slice gap (mm, NaN when unknown) and the pixel spacing
    (row, column; mm, NaN when unknown) of the source slices, and their size."""

    slices: list[Slice]
    gap: float
    pixel_spacing: tuple[float, float]
    rows: int
    cols: int
    #: The file a multi-frame volume comes from; None for a folder of files.
    source: Path | None = None


def _floats(value: Any, count: int) -> list[float] | None:
    try:
        numbers = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count and all(math.isfinite(n) for n in numbers) else None


def _instance(ds: Dataset) -> int | None:
    try:
        return int(ds.get("InstanceNumber"))
    except (TypeError, ValueError):
        return None


def _normal(orientation: list[float]) -> np.ndarray:
    normal = np.cross(np.array(orientation[:3]), np.array(orientation[3:]))
    length = float(np.linalg.norm(normal))
    if length < 0.5:
        raise DicomError(Reason.MISSING_GEOMETRY, f"ImageOrientationPatient {orientation} has no normal")
    return normal / length


def _pixel_spacing(ds: Dataset, shared: Dataset | None = None) -> tuple[float, float]:
    measures = shared.get("PixelMeasuresSequence") if shared is not None else None
    source = measures[0] if measures else ds
    spacing = _floats(source.get("PixelSpacing") or (), 2)
    return (spacing[0], spacing[1]) if spacing else (math.nan, math.nan)


def plan_volume(path: Path, spec: ImageSpec, series: str = "") -> Volume:
    """The slices of the volume at ``path`` (a folder of one series, or a multi-frame file), in
    order, checked; raises DicomError with the reason otherwise."""
    volume = _plan_folder(path, series) if path.is_dir() else _plan_file(path)
    if volume.rows * volume.cols * len(volume.slices) > spec.max_pixels:
        raise DicomError(
            Reason.TOO_LARGE,
            f"{len(volume.slices)} slices of {volume.rows} x {volume.cols} exceed "
            f"--max-pixels {spec.max_pixels}",
        )
    return volume


def _plan_folder(folder: Path, series: str) -> Volume:
    headers: list[tuple[Path, Dataset]] = []
    for name in sorted(os.listdir(folder)):
        path = folder / name
        if name.startswith(".") or not path.is_file():
            continue
        try:
            ds = read_dataset(path, headers_only=True)
        except DicomError as exc:
            raise DicomError(exc.reason, f"slice {name}: {exc}") from None
        if "Rows" not in ds:  # a DICOMDIR, a report: no slice
            continue
        headers.append((path, ds))
    if not headers:
        raise DicomError(Reason.NO_PIXEL_DATA, f"{folder.name} holds no DICOM image")
    uids = sorted({str(ds.get("SeriesInstanceUID", "")) for _, ds in headers})
    if series:
        headers = [(p, ds) for p, ds in headers if str(ds.get("SeriesInstanceUID", "")) == series]
        if not headers:
            raise DicomError(Reason.MIXED_SERIES, f"no slice of series {series} ({len(uids)} series here)")
    elif len(uids) > 1:
        raise DicomError(
            Reason.MIXED_SERIES, f"{len(uids)} series in one folder: name the one to keep with --series-col"
        )
    _check_alike([(p.name, ds) for p, ds in headers])
    frames = [p.name for p, ds in headers if int(ds.get("NumberOfFrames") or 1) > 1]
    if frames:
        raise DicomError(Reason.INCONSISTENT_SLICES, f"{frames[0]} is multi-frame, in a folder of slices")
    geometry = [
        (
            _floats(ds.get("ImageOrientationPatient") or (), 6),
            _floats(ds.get("ImagePositionPatient") or (), 3),
        )
        for _, ds in headers
    ]
    instances = [_instance(ds) for _, ds in headers]
    slices = order_slices(
        [p for p, _ in headers],
        [0] * len(headers),
        [g[0] for g in geometry],
        [g[1] for g in geometry],
        instances,
        [p.name for p, _ in headers],
    )
    first = headers[0][1]
    return Volume(slices, slice_gap(slices), _pixel_spacing(first), int(first.Rows), int(first.Columns))


def _plan_file(path: Path) -> Volume:
    ds = read_dataset(path, headers_only=True)
    frames = int(ds.get("NumberOfFrames") or 1)
    shared_items = ds.get("SharedFunctionalGroupsSequence") or []
    shared = shared_items[0] if shared_items else None
    per_frame = list(ds.get("PerFrameFunctionalGroupsSequence") or [])
    orientations, positions = [], []
    for i in range(frames):
        group = per_frame[i] if i < len(per_frame) else None
        orientations.append(
            _frame_value(ds, group, shared, "PlaneOrientationSequence", "ImageOrientationPatient", 6)
        )
        positions.append(_frame_value(ds, group, shared, "PlanePositionSequence", "ImagePositionPatient", 3))
    if frames > 1 and any(p is None for p in positions):
        positions = [None] * frames  # no per-frame positions: the file's frame order
    slices = order_slices(
        [path] * frames,
        list(range(frames)),
        orientations,
        positions,
        list(range(frames)),
        [f"frame {i}" for i in range(frames)],
    )
    if frames > 1 and positions[0] is None:
        gap = _floats([ds.get("SpacingBetweenSlices") or math.nan], 1)
        spacing = gap[0] if gap else math.nan
    else:
        spacing = slice_gap(slices)
    return Volume(slices, spacing, _pixel_spacing(ds, shared), int(ds.Rows), int(ds.Columns), path)


def _frame_value(
    ds: Dataset, group: Dataset | None, shared: Dataset | None, sequence: str, keyword: str, count: int
) -> list[float] | None:
    """A plane attribute of one frame: its functional group, the shared one, or the top level."""
    for source in (group, shared):
        items = source.get(sequence) if source is not None else None
        if items and keyword in items[0]:
            return _floats(items[0][keyword].value, count)
    return _floats(ds.get(keyword) or (), count)


def _check_alike(headers: list[tuple[str, Dataset]]) -> None:
    """Every slice has the first one's size, photometric interpretation and samples per pixel."""
    keys = ("Rows", "Columns", "PhotometricInterpretation", "SamplesPerPixel")
    first = [str(headers[0][1].get(k, "")) for k in keys]
    for name, ds in headers[1:]:
        values = [str(ds.get(k, "")) for k in keys]
        if values != first:
            which = next(k for k, a, b in zip(keys, first, values, strict=True) if a != b)
            raise DicomError(
                Reason.INCONSISTENT_SLICES,
                f"{name}: {which} {values[keys.index(which)]}, the first slice {first[keys.index(which)]}",
            )


def order_slices(
    paths: list[Path],
    frames: list[int],
    orientations: list[list[float] | None],
    positions: list[list[float] | None],
    instances: list[int | None],
    names: list[str],
) -> list[Slice]:
    """The slices in position order (or InstanceNumber order without geometry); DicomError for
    differing orientations, two slices at one position, or slices that nothing orders."""
    if all(o is not None and p is not None for o, p in zip(orientations, positions, strict=True)):
        first = orientations[0] or []
        for name, orientation in zip(names, orientations, strict=True):
            if max(abs(a - b) for a, b in zip(orientation or [], first, strict=True)) > _SAME_ORIENTATION:
                raise DicomError(
                    Reason.INCONSISTENT_SLICES, f"{name}: its orientation differs from the first slice's"
                )
        normal = _normal(first)
        along = [float(np.dot(normal, p or [])) for p in positions]
        slices = sorted(
            (
                Slice(path, frame, at, instance)
                for path, frame, at, instance in zip(paths, frames, along, instances, strict=True)
            ),
            key=lambda s: s.position or 0.0,
        )
        for a, b in itertools.pairwise(slices):
            if abs((b.position or 0.0) - (a.position or 0.0)) < _SAME_POSITION:
                raise DicomError(
                    Reason.DUPLICATE_SLICE, f"two slices at {a.position:.3f} mm along the normal"
                )
        return slices
    if any(i is None for i in instances):
        missing = names[next(k for k, i in enumerate(instances) if i is None)]
        raise DicomError(
            Reason.MISSING_GEOMETRY, f"{missing}: no position and orientation, and no InstanceNumber"
        )
    if len(set(instances)) != len(instances):
        raise DicomError(Reason.DUPLICATE_SLICE, "two slices share an InstanceNumber (and have no position)")
    return sorted(
        (
            Slice(path, frame, None, instance)
            for path, frame, instance in zip(paths, frames, instances, strict=True)
        ),
        key=lambda s: s.instance or 0,
    )


def slice_gap(slices: list[Slice]) -> float:
    """The median gap between neighbouring slices (mm; NaN without positions or with one slice);
    DicomError when a gap is further from it than :data:`SPACING_TOLERANCE` allows."""
    if len(slices) < 2 or slices[0].position is None:
        return math.nan
    gaps = np.diff([s.position or 0.0 for s in slices])
    median = float(np.median(gaps))
    worst = float(np.max(np.abs(gaps - median)))
    if worst > SPACING_TOLERANCE * median:
        raise DicomError(
            Reason.UNEVEN_SPACING,
            f"slice gaps from {float(gaps.min()):.3f} to {float(gaps.max()):.3f} mm "
            f"(median {median:.3f}): a missing slice?",
        )
    return median


def iter_slices(volume: Volume, spec: ImageSpec) -> Iterator[DicomImage]:
    """The volume's slices decoded in order, one at a time."""
    single = dataclasses.replace(spec, frames="all", volume=False, depth=0)
    if volume.source is not None:
        yield from iter_frames(volume.source, single, [s.frame for s in volume.slices])
        return
    for piece in volume.slices:
        try:
            yield from iter_frames(piece.path, single)
        except DicomError as exc:
            raise DicomError(exc.reason, f"slice {piece.path.name}: {exc}") from None


def decode_slice(volume: Volume, piece: Slice, spec: ImageSpec) -> DicomImage:
    """One slice of the volume, decoded."""
    single = dataclasses.replace(spec, frames="all", volume=False, depth=0)
    return next(iter_frames(piece.path, single, [piece.frame] if volume.source is not None else None))


def series_problem(
    names: list[str], orientations: list[str], positions: list[str], instances: list[str]
) -> tuple[str, float]:
    """What ``--volume`` would say of one series given as header text (scan's table: ``\\``-joined
    numbers): ``("", median gap)`` when it would convert, else (the reason, NaN)."""
    try:
        slices = order_slices(
            [Path(n) for n in names],
            [0] * len(names),
            [_floats(o.split("\\"), 6) if o else None for o in orientations],
            [_floats(p.split("\\"), 3) if p else None for p in positions],
            [int(i) if i.lstrip("-").isdigit() else None for i in instances],
            names,
        )
        return "", slice_gap(slices)
    except DicomError as exc:
        return exc.reason.value, math.nan


def frame_order(path: Path) -> list[int]:
    """The frames of a (multi-frame) file in position order along the normal: ``--stack`` stacks
    neighbours in space (a file without per-frame positions: its frame order)."""
    return [piece.frame for piece in _plan_file(path).slices]
