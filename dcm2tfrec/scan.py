"""``scan``: a header table of a folder of DICOM files (no pixel data read) and its profile.

One row per file with the facts that decide how a conversion goes (transfer syntax, geometry,
bit depth, rescale, windows, views) and the grouping keys (patient, study, series). Identifying
attributes (names, birth dates, addresses, ...) are never read into the table: only the columns
of :data:`HEADER_COLUMNS` are written.
"""

from __future__ import annotations

import csv
import math
import os
import posixpath
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joblib import Parallel, delayed

from .config import Columns, ImageSpec
from .errors import ConfigError, DicomError, Reason, os_error_reason
from .inputs import Options, is_folder, local_file
from .labels import read_records, template_fields
from .policy import decoding_plugins
from .storage import filesystem, is_url

#: The DICOM attributes a scan reads, in table order (no identifying ones).
TAGS = (
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "PatientID",
    "InstanceNumber",
    "Modality",
    "Manufacturer",
    "TransferSyntaxUID",
    "PhotometricInterpretation",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "ViewPosition",
    "ImageLaterality",
    "BodyPartExamined",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "SliceThickness",
)
HEADER_COLUMNS = ("path", *TAGS, "file_size", "error", "message", "warnings")
#: PNG bytes per raw output byte measured on the benchmark corpora (CT 0.18, CR 0.35, MG 0.27).
PNG_RATIO = (0.2, 0.4)

Progress = Callable[[int, int], None]


def read_header(root: str | Path, rel: str, options: Options = ()) -> dict[str, str]:
    """The table row of one file (under a folder or a URL): its header values, or ``error`` /
    ``message`` when unreadable; ``warnings``: what pydicom warned of, ``" | "``-separated."""
    from .dicom import reader_warnings

    with reader_warnings() as found:
        row = _header_row(root, rel, options)
    row["warnings"] = " | ".join(found) if not row["error"] else ""
    return row


def _header_row(root: str | Path, rel: str, options: Options) -> dict[str, str]:
    from .dicom import read_dataset, tag_text

    row = dict.fromkeys(HEADER_COLUMNS, "")
    row["path"] = rel
    try:
        with local_file(os.fspath(root), rel, True, options) as path:
            row["file_size"] = str(path.stat().st_size)
            ds = read_dataset(path, headers_only=True)
        if "SOPClassUID" not in ds and "Rows" not in ds:
            raise DicomError(Reason.NOT_DICOM, "no SOP Class UID and no image attributes")
    except DicomError as exc:
        row.update(error=exc.reason.value, message=str(exc))
        return row
    except OSError as exc:
        row.update(error=os_error_reason(exc).value, message=f"{exc.strerror or exc}")
        return row
    meta = getattr(ds, "file_meta", None)
    for tag in TAGS:
        source = meta if tag == "TransferSyntaxUID" else ds
        try:
            row[tag] = tag_text(source, tag) if source is not None else ""
        except Exception as exc:  # a damaged element: say which
            row.update(error=Reason.BAD_HEADER.value, message=f"{tag}: {type(exc).__name__}: {exc}")
    return row


def _read_chunk(root: str, paths: list[str], options: Options = ()) -> list[dict[str, str]]:
    return [read_header(root, rel, options) for rel in paths]


def find_files(root: str | Path, options: Options = ()) -> list[str]:
    """Every file under ``root`` (a folder or a URL; hidden files and folders skipped), relative, sorted."""
    root = os.fspath(root)
    if is_url(root):
        fs, base = filesystem(root, dict(options))
        names = [posixpath.relpath(p, base) for p in fs.find(base)]
        return sorted(n for n in names if not any(part.startswith(".") for part in n.split("/")))
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith("."):
                found.append(os.path.relpath(os.path.join(folder, name), root))
    return sorted(found)


@dataclass
class ScanTable:
    """The table (header names and rows) and whether it was joined to a labels CSV."""

    columns: list[str]
    rows: list[dict[str, str]]
    labels: str | None = None


def _label_paths(
    labels: str, columns: Columns, options: Options = ()
) -> tuple[list[str], list[dict[str, str]], list[str]]:
    """The labels CSV's header, its rows as dicts, and each row's image path."""
    table = read_records(labels, options)
    header, body = table.header, table.records
    names = [columns.path_col] if not columns.path_template else []
    missing = [c for c in [columns.id_col, *names] if c and c not in header]
    if missing:
        raise ConfigError(f"labels CSV {labels} has no column {', '.join(map(repr, missing))}")
    rows = [dict(zip(header, fields, strict=True)) for _, fields in body]
    if columns.path_template:
        missing = [c for c in template_fields(columns.path_template) if c not in header]
        if missing:
            raise ConfigError(f"--path-template names no column {', '.join(map(repr, missing))}")
        paths = [columns.path_template.format_map(r) for r in rows]
    else:
        paths = [r[columns.path_col or ""] for r in rows]
    return header, rows, paths


def _in_parallel(
    root: str, chunks: list[list[str]], workers: int, options: Options, dask: str | None
) -> Iterator[list[dict[str, str]]]:
    """Each chunk's rows, in order: on a Dask cluster, or in joblib's worker processes here."""
    if dask:
        from .engine.dask import DaskEngine

        engine = DaskEngine(dask)
        with engine:
            yield from engine.map_in_order(_read_chunk, [(root, c, options) for c in chunks])
        return
    parallel = Parallel(n_jobs=workers or -1, return_as="generator", batch_size=1)
    yield from parallel(delayed(_read_chunk)(root, c, options) for c in chunks)


def scan(
    images: str | Path,
    labels: str | Path | None = None,
    columns: Columns | None = None,
    workers: int = 0,
    progress: Progress | None = None,
    storage_options: Options = (),
    dask: str | None = None,
) -> ScanTable:
    """Read every file's header under ``images`` (a folder or a URL; or each file the labels CSV
    names, joined to its row) in parallel, here or on a Dask cluster; never reads pixel data."""
    root = os.fspath(images)
    if not is_folder(root, storage_options):
        raise ConfigError(f"images folder {root} does not exist or is not a folder")
    label_header: list[str] = []
    label_rows: list[dict[str, str]] = []
    if labels is not None:
        label_header, label_rows, paths = _label_paths(
            os.fspath(labels), columns or Columns(), storage_options
        )
    else:
        paths = find_files(root, storage_options)
    if not is_url(root):
        root = str(Path(root).resolve())
    size = max(1, min(64, len(paths) // ((workers or os.cpu_count() or 1) * 8)))
    chunks = [paths[i : i + size] for i in range(0, len(paths), size)]
    results: list[dict[str, str]] = []
    for chunk in _in_parallel(root, chunks, workers, storage_options, dask):
        results.extend(chunk)
        if progress:
            progress(len(results), len(paths))
    if labels is None:
        return ScanTable(list(HEADER_COLUMNS), results)
    renamed = {c: f"dicom_{c}" if c in label_header else c for c in HEADER_COLUMNS if c != "path"}
    joined = [
        {**row, **{renamed[k]: v for k, v in header.items() if k != "path"}}
        for row, header in zip(label_rows, results, strict=True)
    ]
    return ScanTable(label_header + list(renamed.values()), joined, str(labels))


def write_table(table: ScanTable, out: Path) -> None:
    """Write the table as ``.csv`` or ``.parquet`` (needs pyarrow)."""
    if out.suffix.lower() == ".parquet":
        try:
            import pandas as pd

            pd.DataFrame(table.rows, columns=table.columns, dtype="string").to_parquet(out, index=False)
        except ImportError:
            raise ConfigError("writing .parquet needs pyarrow: pip install 'dcm2tfrec[parquet]'") from None
        return
    if out.suffix.lower() != ".csv":
        raise ConfigError(f"--out {out}: name a .csv or .parquet file")
    with open(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=table.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(table.rows)


def _decoder_available(tsyntax: str) -> bool:
    plugins = decoding_plugins()
    if tsyntax not in plugins:
        return False
    from pydicom.pixels import get_decoder

    from .decoders import register

    register()
    plugin = plugins[tsyntax]
    decoder = get_decoder(tsyntax)
    return bool(decoder.is_available if not plugin else plugin in decoder.available_plugins)


def profile(
    table: ScanTable, width: int = 256, height: int = 256, channels: int = 1, bits: int = 8
) -> dict[str, Any]:
    """Counts that tell what a conversion will meet, and its projected output size."""
    from pydicom.uid import UID

    def column(name: str) -> str:
        return name if name in table.columns else f"dicom_{name}"

    ok = [r for r in table.rows if not r[column("error")]]
    syntaxes = Counter(r[column("TransferSyntaxUID")] for r in ok)
    decodable = {uid for uid in syntaxes if _decoder_available(uid)}
    max_pixels = ImageSpec().max_pixels

    def convertible(r: dict[str, str]) -> bool:
        rows, cols = r[column("Rows")], r[column("Columns")]
        return (
            r[column("TransferSyntaxUID")] in decodable
            and r[column("NumberOfFrames")] in ("", "1")
            and rows.isdigit()
            and cols.isdigit()
            and 0 < int(rows) * int(cols) <= max_pixels
        )

    converted = sum(1 for r in ok if convertible(r))
    raw = converted * width * height * channels * bits // 8

    def counts(name: str) -> dict[str, int]:
        return dict(Counter(r[column(name)] or "(none)" for r in ok).most_common())

    return {
        "files": len(table.rows),
        "readable": len(ok),
        "unreadable": dict(
            Counter(r[column("error")] for r in table.rows if r[column("error")]).most_common()
        ),
        "transfer_syntax": {
            uid or "(none)": {
                "name": UID(uid).name if uid else "(none)",
                "files": n,
                "decoder": uid in decodable,
            }
            for uid, n in syntaxes.most_common()
        },
        "photometric": counts("PhotometricInterpretation"),
        "modality": counts("Modality"),
        "bits_stored": counts("BitsStored"),
        "size": dict(Counter(f"{r[column('Rows')]}x{r[column('Columns')]}" for r in ok).most_common(10)),
        "multi_frame": sum(1 for r in ok if r[column("NumberOfFrames")] not in ("", "1")),
        "without_window": sum(1 for r in ok if not r[column("WindowCenter")]),
        "with_warnings": sum(1 for r in ok if r[column("warnings")]),
        "convertible": converted,
        "series": _series_profile(ok, column),
        "projected_bytes": [int(raw * PNG_RATIO[0]), int(raw * PNG_RATIO[1])],
        "projected_for": {"width": width, "height": height, "channels": channels, "bits": bits},
    }


def _series_profile(rows: list[dict[str, str]], column: Callable[[str], str]) -> dict[str, Any]:
    """Series per folder, and what ``--volume`` would make of each series of several files (the
    same ordering and checks): reasons counted, the range of slice gaps of those that convert."""
    from .volume import series_problem

    groups: dict[tuple[str, str], list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault((posixpath.dirname(row["path"]), row[column("SeriesInstanceUID")]), []).append(row)
    folders = Counter(folder for folder, _ in groups)
    verdicts: Counter[str] = Counter()
    gaps = []
    for members in groups.values():
        if len(members) < 2:
            continue
        fields = ("ImageOrientationPatient", "ImagePositionPatient", "InstanceNumber")
        values = [[m[column(f)] for m in members] for f in fields]
        reason, gap = series_problem([m["path"] for m in members], *values)
        verdicts[reason or "ok"] += 1
        if not reason and math.isfinite(gap):
            gaps.append(gap)
    return {
        "series": len(groups),
        "folders": len(folders),
        "folders_with_several_series": sum(1 for n in folders.values() if n > 1),
        "as_volumes": dict(verdicts.most_common()),
        "slice_gap_mm": [min(gaps), max(gaps)] if gaps else None,
    }


def iter_profile_lines(report: dict[str, Any]) -> Iterator[str]:
    """The profile as text lines for the terminal."""
    yield f"files {report['files']}, readable {report['readable']}"
    for reason, n in report["unreadable"].items():
        yield f"  unreadable: {reason:<14} {n}"
    yield "transfer syntax:"
    for uid, info in report["transfer_syntax"].items():
        decoder = "decoder installed" if info["decoder"] else "NO DECODER: these files will be rejected"
        yield f"  {info['files']:>7}  {info['name']} ({uid}), {decoder}"
    for key in ("photometric", "modality", "bits_stored", "size"):
        yield f"{key.replace('_', ' ')}: " + ", ".join(f"{k} {v}" for k, v in report[key].items())
    yield f"multi-frame (convert takes them with --frames or --volume): {report['multi_frame']}"
    yield f"without a window (percentile fallback): {report['without_window']}"
    yield f"with reader warnings (the table's warnings column): {report['with_warnings']}"
    series = report["series"]
    yield (
        f"series: {series['series']} in {series['folders']} folder(s), "
        f"{series['folders_with_several_series']} folder(s) with several (--volume needs --series-col)"
    )
    if series["as_volumes"]:
        verdicts = ", ".join(f"{k} {v}" for k, v in series["as_volumes"].items())
        gaps = series["slice_gap_mm"]
        spread = f"; slice gaps {gaps[0]:g}-{gaps[1]:g} mm" if gaps else ""
        yield f"series of several files as --volume: {verdicts}{spread}"
    lo, hi = (b / 1e6 for b in report["projected_bytes"])
    spec = report["projected_for"]
    yield (
        f"projected output of the {report['convertible']} file(s) convert will take (of {report['files']}) "
        f"at {spec['width']}x{spec['height']}, {spec['channels']} channel(s), "
        f"{spec['bits']}-bit PNG: {lo:,.1f}-{hi:,.1f} MB"
    )
