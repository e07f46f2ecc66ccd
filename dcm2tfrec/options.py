"""The command line's options, declared once: names, types and help here; defaults and choices from
the option dataclasses in :mod:`dcm2tfrec.config`. Destinations are named like the config's fields,
so that :meth:`ConvertConfig.from_options` takes the parsed options as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .config import (
    BITS,
    CHANNELS,
    COMPRESSIONS,
    FRAMES_MODES,
    IMAGE_FORMATS,
    PNG_LEVELS,
    RESIZE_MODES,
    STACKS,
    Columns,
    ConvertConfig,
    ImageSpec,
    default,
)

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]
_SPEC, _COLUMNS = ImageSpec(), Columns()


def options(*decorators: Decorator) -> Decorator:
    """Several options (or groups of them) as one decorator, in the order listed."""

    def apply(command: Callable[..., Any]) -> Callable[..., Any]:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


def _opt(*decls: str, help: str, **kw: Any) -> Decorator:
    """One option; a default other than None or a flag's is shown in ``--help``."""
    if kw.get("default") is not None and not kw.get("is_flag"):
        kw.setdefault("show_default", True)
    return click.option(*decls, help=help, **kw)


def _config(name: str) -> Any:
    return default(ConvertConfig, name)


def _size_text(spec: ImageSpec) -> str:
    return str(spec.width) if spec.width == spec.height else f"{spec.width}x{spec.height}"


#: The labels CSV's id and path columns: shared by convert and scan.
LABEL_COLUMNS = options(
    _opt("--id-col", default=_COLUMNS.id_col, help="CSV column with the image id."),
    _opt("--path-col", default=_COLUMNS.path_col, help="CSV column with the DICOM path."),
    _opt("--path-template", help="Build the path from columns instead, e.g. '{patient_id}/{image_id}.dcm'."),
)
#: The output image's size, channels and bit depth: shared by convert and scan (its projection).
OUTPUT_SHAPE = options(
    _opt("--size", default=_size_text(_SPEC), help="Output size: N (square) or WIDTHxHEIGHT, e.g. 512x384."),
    _opt(
        "--channels",
        type=click.Choice([str(c) for c in CHANNELS]),
        default=str(_SPEC.channels),
        help="Channels.",
    ),
    _opt(
        "--bits",
        type=click.Choice([str(b) for b in BITS]),
        default=str(_SPEC.bits),
        help="8: windowed display image; 16: modality values + 32768, lossless.",
    ),
)
WORKERS = options(
    _opt(
        "--workers",
        type=click.IntRange(min=0),
        default=_config("workers"),
        help="Worker processes (0 = all cores).",
    ),
    _opt("--quiet", "-q", is_flag=True, help="No progress bar (and no summary after convert)."),
)

#: Options of URL paths' filesystems: shared by convert and inspect.
STORAGE = _opt(
    "--storage-option",
    "storage_options",
    multiple=True,
    help="KEY=VALUE for URL paths' fsspec filesystem, beyond its environment (repeatable).",
)

#: Where the work runs: shared by convert and scan.
DASK = _opt(
    "--dask",
    envvar="DCM2TFREC_DASK",
    help="Run on a Dask cluster: tcp://host:8786, a scheduler file, or local:N (N workers here).",
)

CONVERT = options(
    _opt("--labels", required=True, help="Labels CSV (UTF-8): a path or a URL (s3://, gs://, ...)."),
    _opt("--images", required=True, help="Root folder or URL; CSV paths are relative to it."),
    _opt("--out", required=True, help="Output folder or URL for shards, manifest, errors."),
    LABEL_COLUMNS,
    _opt("--target-col", default=_COLUMNS.target_col, help="CSV column with the integer target."),
    _opt(
        "--no-target", is_flag=True, help="A set without targets (e.g. a test set): records carry no target."
    ),
    _opt(
        "--series-col",
        help="With --volume: CSV column with the SeriesInstanceUID a folder's slices must have.",
    ),
    _opt("--delimiter", help="The CSV's delimiter (one character, or 'tab'); default: detected."),
    _opt(
        "--class-map",
        help="String targets: 'auto' (sorted unique values -> 0..n-1) or JSON {name: id}, inline or a file.",
    ),
    _opt("--extra-col", "extra_cols", multiple=True, help="CSV column stored as a feature (repeatable)."),
    _opt("--dicom-tag", "dicom_tags", multiple=True, help="DICOM keyword stored as a feature (repeatable)."),
    _opt(
        "--mask-col", help="CSV column with a mask path (PNG, .npy or DICOM) under --images: feature 'mask'."
    ),
    _opt(
        "--split", help="Named splits with fractions, e.g. train=0.8,val=0.1,test=0.1; shards named by split."
    ),
    _opt(
        "--folds",
        type=click.IntRange(min=0),
        default=_config("folds"),
        show_default=False,
        help="K group-disjoint folds instead of splits; shards fold0-* .. fold{K-1}-*.",
    ),
    _opt("--group-col", help="Rows sharing this column's value (e.g. patient_id) stay in one split or fold."),
    _opt("--stratify", is_flag=True, help="Balance target classes across splits or folds."),
    OUTPUT_SHAPE,
    _opt(
        "--resize",
        type=click.Choice(RESIZE_MODES),
        default=_SPEC.resize,
        help="stretch ignores aspect; letterbox fits and pads with black; crop fills and cuts the centre.",
    ),
    _opt(
        "--frames",
        type=click.Choice(FRAMES_MODES),
        default=_SPEC.frames,
        help="Multi-frame files: reject them, or take the first or middle frame, or all (one record each).",
    ),
    _opt(
        "--stack",
        type=click.Choice([str(k) for k in STACKS]),
        default=str(_SPEC.stack),
        help="2.5D with --frames all: 3 = each frame and its two neighbours as the 3 channels.",
    ),
    _opt(
        "--crop-foreground",
        is_flag=True,
        help="Cut each image to its anatomy (largest bright component) before resizing; feature 'crop'.",
    ),
    _opt(
        "--volume",
        is_flag=True,
        help="3D: one record per row from a multi-frame file or a folder of one series, slices in order.",
    ),
    _opt(
        "--depth",
        type=click.IntRange(min=0),
        default=_SPEC.depth,
        help="With --volume: resample to exactly this many slices (linear in modality values); 0 = native.",
    ),
    _opt(
        "--window",
        multiple=True,
        default=[str(_SPEC.window)],
        help="auto (file's VOI LUT/window), none (min-max) or CENTER,WIDTH; repeat it for one window per "
        "channel (3 with --channels 3).",
    ),
    _opt(
        "--format",
        type=click.Choice(IMAGE_FORMATS),
        default=_SPEC.format,
        help="How images are stored: png (lossless) or jpeg (8-bit only; masks stay PNG).",
    ),
    _opt(
        "--jpeg-quality",
        type=click.IntRange(1, 100),
        default=_SPEC.jpeg_quality,
        help="JPEG quality with --format jpeg (4:4:4, optimized Huffman tables).",
    ),
    _opt(
        "--png-level",
        type=click.IntRange(PNG_LEVELS.start, PNG_LEVELS.stop - 1),
        default=_SPEC.png_level,
        help="PNG compression: 1 = fast (up filter, run-length deflate), 2-9 = zlib level with adaptive "
        "filters (slower, about as small), 0 = none.",
    ),
    _opt(
        "--max-pixels",
        type=click.IntRange(min=1),
        default=_SPEC.max_pixels,
        help="Reject images whose header declares more pixels (rows x columns x frames), before decoding.",
    ),
    _opt(
        "--timeout",
        type=click.FloatRange(min=0.1),
        default=_config("timeout"),
        help="Seconds one row may take; a row over it is rejected as 'timeout'.",
    ),
    _opt(
        "--worker-memory",
        type=click.IntRange(min=0),
        default=_config("worker_memory"),
        help="Address-space cap per worker process in MiB (0 = none); over it a row is 'out_of_memory'.",
    ),
    _opt(
        "--exact-decode", is_flag=True, help="Decode JPEG 2000 / HTJ2K at full resolution (default: reduced)."
    ),
    _opt(
        "--records-per-shard",
        type=click.IntRange(min=1),
        default=_config("records_per_shard"),
        help="Records per shard.",
    ),
    _opt("--prefix", default=_config("prefix"), help="Shard name prefix: PREFIX-00000-COUNT.tfrec."),
    WORKERS,
    _opt("--seed", type=int, default=_config("seed"), help="Seed of the record order shuffle."),
    _opt(
        "--shuffle/--no-shuffle",
        default=_config("shuffle"),
        help="Shuffle record order (seeded) or keep CSV order.",
    ),
    _opt(
        "--overwrite", is_flag=True, help="Replace a previous output in --out (only files dcm2tfrec wrote)."
    ),
    _opt(
        "--resume",
        is_flag=True,
        help="Continue the interrupted run in --out: keep its verified shards, convert the rest "
        "(same labels, images and options required; an empty --out starts afresh).",
    ),
    _opt("--allow-outside-root", is_flag=True, help="Accept CSV paths that resolve outside --images."),
    _opt("--index", is_flag=True, help="Also write a DALI / tfrecord-package index per shard (.idx)."),
    _opt(
        "--compression",
        type=click.Choice(COMPRESSIONS),
        default=_config("compression"),
        help="gzip: each shard one gzip stream (TFRecordDataset(compression_type='GZIP')).",
    ),
    STORAGE,
    DASK,
)

SCAN = options(
    _opt("--images", required=True, help="Root folder of DICOM files."),
    _opt("--out", type=click.Path(path_type=Path), required=True, help="Table to write: .csv or .parquet."),
    _opt("--labels", help="Scan the files this CSV names; join its rows."),
    LABEL_COLUMNS,
    OUTPUT_SHAPE,
    WORKERS,
    _opt("--json", "as_json", is_flag=True, help="Print the profile as JSON instead of text."),
    STORAGE,
    DASK,
)

INSPECT = options(
    click.argument("paths", nargs=-1, required=True),
    _opt(
        "--verify", is_flag=True, help="Also decode every PNG (CRCs, schema and headers are always checked)."
    ),
    _opt("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout."),
    _opt("--head", type=click.IntRange(min=0), default=0, help="List the first N records of each shard."),
    _opt(
        "--grid",
        type=click.Path(path_type=Path),
        help="Write a captioned contact sheet PNG of the first images.",
    ),
    _opt(
        "--export", type=click.Path(path_type=Path), help="Write the first images as PNG files named by id."
    ),
    _opt("--limit", type=click.IntRange(min=1), default=64, help="Images for --grid / --export."),
    STORAGE,
)
