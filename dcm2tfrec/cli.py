"""The ``dcm2tfrec`` command line: parses options, calls the library, formats the result.

Defaults and choices come from the option dataclasses in :mod:`dcm2tfrec.config`; library errors
carry their exit codes. Heavy libraries are imported inside the commands so that ``--help`` stays
instant.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from . import __version__
from .config import BITS, CHANNELS, PNG_LEVELS, RESIZE_MODES, Columns, ConvertConfig, ImageSpec, default
from .errors import Dcm2TfrecError, ExitCode

if TYPE_CHECKING:
    from .convert import ConvertResult

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


class Failed(click.ClickException):
    """A library error, shown as ``Error: message`` with its exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click declares it on the class


@contextlib.contextmanager
def library_errors() -> Iterator[None]:
    """Map the library's errors (and Ctrl-C) to their exit codes: the one place that does it."""
    try:
        yield
    except Dcm2TfrecError as exc:
        raise Failed(str(exc), exc.exit_code) from None
    except KeyboardInterrupt:
        raise Failed("interrupted", ExitCode.INTERRUPTED) from None


def options(*decorators: Decorator) -> Decorator:
    """Apply several click options as one group, in the order listed."""

    def apply(command: Callable[..., Any]) -> Callable[..., Any]:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


def _size_text(spec: ImageSpec) -> str:
    return str(spec.width) if spec.width == spec.height else f"{spec.width}x{spec.height}"


_SPEC, _COLUMNS = ImageSpec(), Columns()

#: The labels CSV's columns and the image geometry: shared by convert and scan.
LABEL_COLUMNS = options(
    click.option(
        "--id-col", default=_COLUMNS.id_col, show_default=True, help="CSV column with the image id."
    ),
    click.option(
        "--path-col", default=_COLUMNS.path_col, show_default=True, help="CSV column with the DICOM path."
    ),
    click.option(
        "--path-template",
        default=_COLUMNS.path_template,
        help="Build the path from columns instead, e.g. '{patient_id}/{image_id}.dcm'.",
    ),
)
OUTPUT_SHAPE = options(
    click.option(
        "--size",
        default=_size_text(_SPEC),
        show_default=True,
        help="Output size: N (square) or WIDTHxHEIGHT.",
    ),
    click.option(
        "--channels",
        type=click.Choice([str(c) for c in CHANNELS]),
        default=str(_SPEC.channels),
        show_default=True,
        help="Output channels.",
    ),
    click.option(
        "--bits",
        type=click.Choice([str(b) for b in BITS]),
        default=str(_SPEC.bits),
        show_default=True,
        help="8: windowed display image; 16: modality values + 32768, lossless.",
    ),
)
WORKERS = options(
    click.option(
        "--workers",
        type=click.IntRange(min=0),
        default=default(ConvertConfig, "workers"),
        show_default=True,
        help="Worker processes (0 = all cores).",
    ),
    click.option("--quiet", "-q", is_flag=True, help="No progress bar (and no summary after convert)."),
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="dcm2tfrec")
def cli() -> None:
    """Turn a folder of DICOM images plus a labels CSV into sharded TFRecords."""


def _human_bytes(n: float) -> str:
    if n < 1000:
        return f"{int(n)} B"
    for unit in ("KB", "MB"):
        n /= 1000
        if n < 1000:
            return f"{n:.1f} {unit}"
    return f"{n / 1000:.1f} GB"


def _summary(result: ConvertResult) -> str:
    from .manifest import ERRORS_NAME

    totals = result.manifest["totals"]
    rate = result.records / result.seconds if result.seconds > 0 else 0.0
    lines = [
        f"dcm2tfrec convert: {result.rows} rows -> {result.records} records in {len(result.shards)} "
        f"shard(s), {_human_bytes(totals['bytes'])}, in {result.out}",
        f"time {result.seconds:.1f} s, {rate:.1f} images/s",
    ]
    if result.failures:
        lines.append(
            f"rejected {len(result.failures)} row(s), listed in {os.path.join(result.out, ERRORS_NAME)}:"
        )
        width = max(len(r) for r in result.rejected_by_reason)
        lines += [f"  {reason:<{width}}  {n}" for reason, n in result.rejected_by_reason.items()]
    else:
        lines.append("rejected 0 rows")
    counts = ", ".join(f"{k}: {v}" for k, v in result.manifest["target_counts"].items())
    lines.append(f"targets {counts or '-'}")
    splits = result.manifest.get("splits")
    for name, part in (splits or {}).get("parts", {}).items():
        targets = ", ".join(f"{k}: {v}" for k, v in part["record_target_counts"].items())
        lines.append(
            f"  {name}: {part['records']} records in {len(part['shards'])} shard(s), "
            f"{part['groups']} group(s), targets {targets or '-'}"
        )
    if splits:
        lines.append(f"groups disjoint across splits: {'yes' if splits['groups_disjoint'] else 'NO'}")
    return "\n".join(lines)


@contextlib.contextmanager
def _progress_bar(quiet: bool) -> Iterator[Callable[[int, int], None]]:
    """A progress callback that draws a bar on stderr (none when ``quiet``), closed at the end."""
    from tqdm import tqdm

    bars: list[Any] = []

    def update(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="img", file=sys.stderr, disable=quiet, dynamic_ncols=True))
        bars[0].update(done - bars[0].n)

    try:
        yield update
    finally:
        for bar in bars:
            bar.close()


def _convert_config(opts: dict[str, Any]) -> ConvertConfig:
    """The library's config from the parsed options."""
    from .config import Window, parse_size, parse_split

    width, height = parse_size(opts["size"])
    return ConvertConfig(
        labels=opts["labels"],
        images=opts["images"],
        out=opts["out"],
        columns=Columns(
            opts["id_col"],
            opts["path_col"],
            opts["path_template"],
            opts["target_col"],
            group_col=opts["group_col"],
            class_map=opts["class_map"],
            extra_cols=opts["extra_cols"],
            mask_col=opts["mask_col"],
        ),
        image=ImageSpec(
            width=width,
            height=height,
            resize=opts["resize_mode"],
            channels=int(opts["channels"]),
            bits=int(opts["bits"]),
            window=Window.parse(opts["window"]),
            png_level=opts["png_level"],
            exact_decode=opts["exact_decode"],
            max_pixels=opts["max_pixels"],
        ),
        records_per_shard=opts["records_per_shard"],
        prefix=opts["prefix"],
        workers=opts["workers"],
        seed=opts["seed"],
        shuffle=opts["shuffle"],
        overwrite=opts["overwrite"],
        resume=opts["resume"],
        allow_outside_root=opts["allow_outside_root"],
        index=opts["write_index"],
        timeout=opts["timeout"],
        worker_memory=opts["worker_memory"],
        split=parse_split(opts["split_text"]) if opts["split_text"] else (),
        folds=opts["folds"],
        stratify=opts["stratify"],
        dicom_tags=opts["dicom_tags"],
    )


def _default(name: str) -> Any:
    return default(ConvertConfig, name)


@cli.command()
@click.option("--labels", required=True, help="Labels CSV (UTF-8).")
@click.option("--images", required=True, help="Root folder; CSV paths are relative to it.")
@click.option("--out", required=True, help="Output folder for shards, manifest, errors.")
@LABEL_COLUMNS
@click.option(
    "--target-col", default=_COLUMNS.target_col, show_default=True, help="CSV column with the integer target."
)
@click.option(
    "--class-map",
    default=None,
    help="String targets: 'auto' (sorted unique values -> 0..n-1) or a JSON file {name: id}.",
)
@click.option(
    "--extra-col",
    "extra_cols",
    multiple=True,
    help="CSV column stored as a feature, typed int64, float or bytes as its values allow (repeatable).",
)
@click.option(
    "--dicom-tag",
    "dicom_tags",
    multiple=True,
    help="DICOM keyword stored as a feature, e.g. ViewPosition, InstanceNumber (repeatable).",
)
@click.option(
    "--mask-col",
    default=None,
    help="CSV column with a mask path (PNG, .npy or DICOM) under --images; stored as feature 'mask'.",
)
@click.option(
    "--split",
    "split_text",
    default=None,
    help="Named splits with fractions, e.g. train=0.8,val=0.1,test=0.1; shards are named by split.",
)
@click.option(
    "--folds",
    type=click.IntRange(min=0),
    default=_default("folds"),
    help="K group-disjoint folds instead of splits; shards fold0-* .. fold{K-1}-*.",
)
@click.option(
    "--group-col",
    default=None,
    help="Rows sharing this column's value (e.g. patient_id) stay in one split or fold.",
)
@click.option("--stratify", is_flag=True, help="Balance target classes across splits or folds.")
@OUTPUT_SHAPE
@click.option(
    "--resize",
    "resize_mode",
    type=click.Choice(RESIZE_MODES),
    default=_SPEC.resize,
    show_default=True,
    help="stretch ignores aspect; letterbox fits and pads with black; crop fills and cuts the centre.",
)
@click.option(
    "--window",
    default=str(_SPEC.window),
    show_default=True,
    help="auto (file's VOI LUT/window), none (min-max) or CENTER,WIDTH.",
)
@click.option(
    "--png-level",
    type=click.IntRange(PNG_LEVELS.start, PNG_LEVELS.stop - 1),
    default=_SPEC.png_level,
    show_default=True,
    help="PNG compression: 1 = fast (up filter, run-length deflate), 2-9 = zlib level with adaptive filters "
    "(2-40x slower, within about 10% of level 1's size), 0 = none.",
)
@click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=_SPEC.max_pixels,
    show_default=True,
    help="Reject images whose header declares more pixels (rows x columns x frames), before decoding.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=_default("timeout"),
    show_default=True,
    help="Seconds one row may take; a row over it is rejected as 'timeout'.",
)
@click.option(
    "--worker-memory",
    type=click.IntRange(min=0),
    default=_default("worker_memory"),
    show_default=True,
    help="Address-space cap per worker process in MiB (0 = none); over it a row is 'out_of_memory'.",
)
@click.option(
    "--exact-decode",
    is_flag=True,
    help="Decode JPEG 2000 / HTJ2K at full resolution (default: the coarsest level >= the output size).",
)
@click.option(
    "--records-per-shard",
    type=click.IntRange(min=1),
    default=_default("records_per_shard"),
    show_default=True,
    help="Records per shard.",
)
@click.option(
    "--prefix",
    default=_default("prefix"),
    show_default=True,
    help="Shard name prefix: PREFIX-00000-COUNT.tfrec.",
)
@WORKERS
@click.option(
    "--seed", type=int, default=_default("seed"), show_default=True, help="Seed of the record order shuffle."
)
@click.option(
    "--shuffle/--no-shuffle",
    default=_default("shuffle"),
    show_default=True,
    help="Shuffle record order (seeded) or keep CSV order.",
)
@click.option(
    "--overwrite", is_flag=True, help="Replace a previous output in --out (only files dcm2tfrec wrote)."
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the interrupted run in --out: keep its verified shards, convert the rest "
    "(same labels, images and options required; an empty --out starts afresh).",
)
@click.option("--allow-outside-root", is_flag=True, help="Accept CSV paths that resolve outside --images.")
@click.option(
    "--index",
    "write_index",
    is_flag=True,
    help="Also write a DALI / tfrecord-package index per shard (.idx).",
)
def convert(**opts: Any) -> None:
    """Convert DICOM files listed in a labels CSV into TFRecord shards.

    \b
    Exit codes: 0 all rows converted; 3 finished, some rows rejected (see errors.csv);
    2 usage, option or CSV error (nothing written); 1 write failure (e.g. disk full) or
    unexpected error; 130 interrupted. After 1 or 130, --resume goes on where it stopped.
    """
    with library_errors(), _progress_bar(opts["quiet"]) as update:
        from .engine.local import LocalEngine

        config = _convert_config(opts)
        with LocalEngine(config.workers, config.worker_memory) as engine:  # its imports overlap ours
            from .convert import convert as run

            result = run(config, progress=update, engine=engine)
    if not opts["quiet"]:
        click.echo(_summary(result))
    sys.exit(result.exit_code)


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@click.option(
    "--verify", is_flag=True, help="Also decode every PNG (CRCs, schema and headers are always checked)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.option("--head", type=click.IntRange(min=0), default=0, help="List the first N records of each shard.")
@click.option(
    "--grid", type=click.Path(path_type=Path), help="Write a captioned contact sheet PNG of the first images."
)
@click.option(
    "--export",
    type=click.Path(path_type=Path),
    help="Write the first images as PNG files named by id, plus labels.csv.",
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=64, show_default=True, help="Images for --grid / --export."
)
def inspect(
    paths: tuple[str, ...],
    verify: bool,
    as_json: bool,
    head: int,
    grid: Path | None,
    export: Path | None,
    limit: int,
) -> None:
    """Show what is inside shards (files, folders or globs), checked record by record.

    \b
    Exit codes: 0 every check passed; 2 damage or a manifest mismatch found (or bad usage).
    """
    import json

    from .inspect import export_images, find_shards, format_report, inspect_paths, write_grid

    with library_errors():
        report = inspect_paths(list(paths), verify=verify, head=head)
        shards = find_shards(list(paths))
        extra = []
        if grid:
            extra.append(f"grid: {write_grid(shards, grid, limit)} image(s) in {grid}")
        if export:
            extra.append(f"export: {export_images(shards, export, limit)} image(s) in {export}")
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        click.echo(format_report(report))
        for line in extra:
            click.echo(line)
    sys.exit(ExitCode.OK if report.ok else ExitCode.USAGE)


@cli.command()
@click.option("--images", required=True, help="Root folder of DICOM files.")
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Table to write: .csv or .parquet."
)
@click.option("--labels", help="Scan the files this CSV names; join its rows.")
@LABEL_COLUMNS
@OUTPUT_SHAPE
@WORKERS
@click.option("--json", "as_json", is_flag=True, help="Print the profile as JSON instead of text.")
def scan(**opts: Any) -> None:
    """Read every DICOM header under --images (no pixel data) into a table, and profile it.

    \b
    One row per file (per labels row with --labels): UIDs, PatientID, geometry, bit depth,
    transfer syntax, rescale, windows, views, file size, and the reason when unreadable.
    Names, birth dates, addresses and other identifying attributes are never written.
    The size and bits set the projected size of a conversion.
    Exit codes: 0 table written; 2 usage error.
    """
    import json

    from .config import parse_size
    from .scan import iter_profile_lines, profile, write_table
    from .scan import scan as run

    with library_errors(), _progress_bar(opts["quiet"]) as update:
        width, height = parse_size(opts["size"])
        columns = Columns(opts["id_col"], opts["path_col"], opts["path_template"])
        table = run(opts["images"], opts["labels"], columns, opts["workers"], update)
        write_table(table, opts["out"])
    report = profile(table, width, height, int(opts["channels"]), int(opts["bits"]))
    if opts["as_json"]:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        click.echo(f"dcm2tfrec scan: {len(table.rows)} row(s) -> {opts['out']}")
        for line in iter_profile_lines(report):
            click.echo(line)


def main() -> None:
    """Console entry point: unexpected exceptions exit 1 with a traceback and a clear line."""
    try:
        cli.main(prog_name="dcm2tfrec")
    except Exception:
        traceback.print_exc()
        click.echo("Error: unexpected failure (exit 1); the traceback above says where.", err=True)
        sys.exit(ExitCode.UNEXPECTED)
