"""The ``dcm2tfrec`` command line: parses options, calls the library, formats the result.

Defaults and choices come from the option dataclasses in :mod:`dcm2tfrec.config`; library errors
carry their exit codes. Heavy libraries are imported inside the commands so that ``--help`` stays
instant.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from . import __version__
from .config import Columns, ConvertConfig
from .errors import Dcm2TfrecError, ExitCode, Stop, stop_signal
from .options import CONVERT, INSPECT, SCAN


class Failed(click.ClickException):
    """A library error, shown as ``Error: message`` with its exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click declares it on the class


class _Warnings(logging.Handler):
    """The library's warnings on stderr, above the progress bar (tqdm.write keeps the bar whole)."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        tqdm.write(f"warning: {record.getMessage()}", file=sys.stderr)


def _raise_stop(signum: int, frame: object) -> None:
    raise Stop(signum)


@contextlib.contextmanager
def library_errors() -> Iterator[None]:
    """Show the library's warnings, stop on SIGTERM and SIGHUP as on Ctrl-C, and map the library's
    errors (and the stops) to their exit codes: the one place that does it."""
    logger = logging.getLogger("dcm2tfrec")
    handler, propagate = _Warnings(logging.WARNING), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    previous = {signum: signal.signal(signum, _raise_stop) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    except Dcm2TfrecError as exc:
        raise Failed(str(exc), exc.exit_code) from None
    except KeyboardInterrupt as exc:
        raise Failed("interrupted", 128 + stop_signal(exc)) from None
    finally:
        for signum, action in previous.items():
            signal.signal(signum, action)
        logger.removeHandler(handler)
        logger.propagate = propagate


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="dcm2tfrec")
def cli() -> None:
    """Turn a folder of DICOM images plus a labels CSV into sharded TFRecords."""


@cli.command()
@CONVERT
def convert(**opts: Any) -> None:
    """Convert DICOM files listed in a labels CSV into TFRecord shards.

    \b
    Exit codes: 0 all rows converted; 3 finished, some rows rejected (see errors.csv);
    2 usage, option or CSV error (nothing written); 1 write failure (e.g. disk full) or
    unexpected error; 130 / 143 / 129 stopped by Ctrl-C / SIGTERM / SIGHUP. After 1 or a stop,
    --resume goes on where it stopped.
    """
    from .report import progress_bar

    quiet = opts.pop("quiet")
    with library_errors(), progress_bar(not quiet, sys.stderr) as update:
        from .engine import engine_for

        config = ConvertConfig.from_options(**opts)
        with engine_for(config.dask, config.workers, config.worker_memory) as engine:  # starts now
            from .convert import convert as run

            result = run(config, progress=update, engine=engine)
    if not quiet:
        click.echo(result.summary())
    sys.exit(result.exit_code)


@cli.command()
@INSPECT
def inspect(
    paths: tuple[str, ...],
    verify: bool,
    as_json: bool,
    head: int,
    grid: Path | None,
    export: Path | None,
    limit: int,
    storage_options: tuple[str, ...],
) -> None:
    """Show what is inside shards (files, folders or globs), checked record by record.

    \b
    Exit codes: 0 every check passed; 2 damage or a manifest mismatch found (or bad usage).
    """
    import json

    from .config import storage_dict
    from .inspect import export_images, find_shards, format_report, inspect_paths, localized, write_grid

    with library_errors(), localized(list(paths), storage_dict(storage_options)) as (local, urls):
        report = inspect_paths(local, verify=verify, head=head)
        shards = find_shards(local)
        extra = []
        if grid:
            shown = write_grid(shards, grid, limit, report.class_map)
            extra.append(f"grid: {shown} image(s) in {grid}")
        if export:
            exported = export_images(shards, export, limit, report.class_map)
            extra.append(f"export: {exported} image(s) in {export}")
        report.rename(urls)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        click.echo(format_report(report))
        for line in extra:
            click.echo(line)
    sys.exit(ExitCode.OK if report.ok else ExitCode.USAGE)


@cli.command()
@SCAN
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

    from .config import parse_size, storage_dict
    from .report import progress_bar
    from .scan import iter_profile_lines, profile, write_table
    from .scan import scan as run

    with library_errors(), progress_bar(not opts["quiet"], sys.stderr) as bar:
        width, height = parse_size(opts["size"])
        columns = Columns(opts["id_col"], opts["path_col"], opts["path_template"])
        options = tuple(storage_dict(opts["storage_options"]).items())
        table = run(
            opts["images"],
            opts["labels"],
            columns,
            opts["workers"],
            lambda done, total: bar(done, total, 0),
            options,
            opts["dask"],
        )
        write_table(table, opts["out"])
    report = profile(table, width, height, int(opts["channels"]), int(opts["bits"]))
    if opts["as_json"]:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        click.echo(f"dcm2tfrec scan: {len(table.rows)} row(s) -> {opts['out']}")
        for line in iter_profile_lines(report):
            click.echo(line)


@cli.command("export-tfds")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--to", type=click.Path(path_type=Path), help="Folder to write (new). [default: OUT/tfds]")
def export_tfds(out: Path, to: Path | None) -> None:
    """Make a finished output loadable with tfds.builder_from_directory (no bytes copied).

    \b
    Writes hard links under TFDS's file names, dataset_info.json and features.json.
    Exit codes: 0 written; 2 usage error (no manifest, the folder exists, no tensorflow-datasets).
    """
    from .tfds_export import export_tfds as run

    with library_errors():
        target = run(out, to)
    click.echo(f"dcm2tfrec export-tfds: {target} (tfds.builder_from_directory({str(target)!r}))")


def main() -> None:
    """Console entry point: unexpected exceptions exit 1 with a traceback and a clear line."""
    try:
        cli.main(prog_name="dcm2tfrec")
    except Exception:
        traceback.print_exc()
        click.echo("Error: unexpected failure (exit 1); the traceback above says where.", err=True)
        sys.exit(ExitCode.UNEXPECTED)
