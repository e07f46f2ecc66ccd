"""The labels CSV, read once as text: exact ids, validated integer targets, resolved paths."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import re
import string
from dataclasses import dataclass, field
from pathlib import Path

from .config import Columns
from .errors import ConfigError, Failure, Reason
from .inputs import Options, read_bytes
from .records import RESERVED_FEATURES, FeatureKind, FeatureValue

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
log = logging.getLogger(__name__)
_INTEGER = re.compile(r"[+-]?[0-9]+")
#: A target may be written as an integral float (``1.0``, as pandas writes integer columns with gaps).
_INTEGRAL = re.compile(r"(?P<whole>[+-]?[0-9]+)(\.0*)?")
_MAX_REPORTED = 20
#: At least this many rows, and this share of them with an unusable target, is a hopeless run.
_HOPELESS_ROWS, _HOPELESS_SHARE = 10, 0.9


@dataclass(frozen=True)
class Row:
    """One accepted CSV row: 1-based line number, id exactly as written, path, integer target,
    group (``--group-col``), typed extra-column values, mask path and series (``--series-col``)."""

    line: int
    image_id: str
    path: str
    target: int | None  # None with --no-target
    group: str = ""
    extras: tuple[FeatureValue, ...] = ()
    mask: str = ""
    series: str = ""


@dataclass(frozen=True)
class Labels:
    """The CSV split into rows to convert and rows rejected already (bad target, duplicate id),
    with the CSV's SHA-256, the class map (string targets) and the kind of each extra column."""

    rows: list[Row]
    failures: list[Failure]
    sha256: str
    class_map: dict[str, int] | None = None
    extra_kinds: dict[str, FeatureKind] = field(default_factory=dict)


@dataclass(frozen=True)
class CsvTable:
    """A CSV read strictly: its header (names stripped), (start line, fields) per non-blank
    record after it, and the SHA-256 of the bytes read."""

    header: list[str]
    records: list[tuple[int, list[str]]]
    sha256: str


def parse_target(text: str) -> int:
    """Return ``text`` as an int64 target; raise ValueError with a short reason otherwise."""
    stripped = text.strip()
    if not stripped:
        raise ValueError("empty target")
    match = _INTEGRAL.fullmatch(stripped)
    if not match:
        raise ValueError(f"target {text!r} is not an integer")
    value = int(match.group("whole"))
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"target {text!r} is outside the int64 range")
    return value


def column_kind(cells: list[str]) -> FeatureKind:
    """int64 when every cell is an int64, float when every non-empty cell is a number (empty
    cells become NaN), bytes otherwise."""
    filled = [c.strip() for c in cells if c.strip()]
    if not filled:
        return "bytes"
    if len(filled) == len(cells) and all(
        _INTEGER.fullmatch(c) and INT64_MIN <= int(c) <= INT64_MAX for c in filled
    ):
        return "int64"
    try:
        for c in filled:
            float(c)
    except ValueError:
        return "bytes"
    return "float"


#: The largest finite float32: a float feature beyond it cannot be stored.
FLOAT32_MAX = 3.4028234663852886e38


def typed_value(kind: FeatureKind, cell: str) -> FeatureValue:
    """A CSV cell as a value of ``kind`` (see :func:`column_kind`); ValueError for a finite float
    beyond float32's range (``inf`` and ``nan`` written as such are stored as they are)."""
    if kind == "int64":
        return int(cell.strip())
    if kind == "float":
        value = float(cell) if cell.strip() else math.nan
        if math.isfinite(value) and abs(value) > FLOAT32_MAX:
            raise ValueError(f"{cell.strip()} is beyond float32's range (about ±3.4e38)")
        return value
    return cell.encode("utf-8")


def load_class_map(spec: str, values: list[str]) -> dict[str, int]:
    """``auto``: the sorted unique non-empty ``values`` numbered from 0; else a JSON object
    ``{"name": id, ...}`` with distinct int ids, inline or in a file."""
    if spec == "auto":
        return {name: i for i, name in enumerate(sorted({v.strip() for v in values if v.strip()}))}
    try:
        inline = spec.lstrip().startswith("{")
        data = json.loads(spec if inline else Path(spec).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--class-map {spec}: cannot read a JSON object ({exc})") from None
    ok = isinstance(data, dict) and all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= INT64_MAX for v in data.values()
    )
    if not ok or not data:
        raise ConfigError(f'--class-map {spec}: expected a JSON object {{"name": id, ...}} with ids >= 0')
    if len(set(data.values())) != len(data):
        raise ConfigError(f"--class-map {spec}: two names share an id")
    return {str(k).strip(): v for k, v in data.items()}


def template_fields(template: str) -> list[str]:
    """The CSV columns a path template names; each field must be a plain column name."""
    hint = f"--path-template {template!r}: name CSV columns in braces, e.g. {{patient_id}}/{{image_id}}.dcm"
    try:
        parts = [
            (name, spec, conv)
            for _, name, spec, conv in string.Formatter().parse(template)
            if name is not None
        ]
    except ValueError as exc:
        raise ConfigError(f"{hint} ({exc})") from None
    if not parts:
        raise ConfigError(hint)
    for name, spec, conversion in parts:
        if not name or name.isdigit() or set(name) & set(".[]") or spec or conversion:
            field = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            raise ConfigError(f"{hint}; {{{field}}} is not a plain column name")
    return [name for name, _, _ in parts]


#: The delimiters a labels CSV is looked for with, when none is given.
DELIMITERS = (",", ";", "\t", "|")


def detect_delimiter(text: str) -> str:
    """The delimiter of a CSV's header line: the most frequent of :data:`DELIMITERS` (comma on a tie)."""
    header = text.split("\n", 1)[0]
    counts = {d: header.count(d) for d in DELIMITERS}
    best = max(counts.values())
    return "," if best == 0 or counts[","] == best else max(DELIMITERS, key=lambda d: counts[d])


def read_records(
    path: str | os.PathLike[str],
    options: Options = (),
    delimiter: str | None = None,
    data: bytes | None = None,
) -> CsvTable:
    """Read the CSV once, from a path (a pipe such as ``<(cat labels.csv)`` works too), a URL, or
    ``data`` already in memory, and parse it strictly. Without a ``delimiter`` it is detected from the
    header line. Surrounding spaces and tabs are not part of a header or a cell."""
    if data is None:
        try:
            data = read_bytes(path, options)
        except OSError as exc:
            raise ConfigError(f"cannot read labels CSV {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"labels CSV {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if delimiter is None:
        delimiter = detect_delimiter(text)
        if delimiter != ",":
            log.warning("labels CSV %s is %r-separated (detected; --delimiter sets it)", path, delimiter)
    records: list[tuple[int, list[str]]] = []
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    end = 0
    limit = csv.field_size_limit(len(data) + 1)  # a cell may be as large as the file; restored below
    try:
        for fields in reader:
            start, end = end + 1, reader.line_num
            if fields:
                records.append((start, [field.strip(" \t") for field in fields]))
    except csv.Error as exc:
        where = f"the record starting on line {end + 1}" if reader.line_num > end + 1 else f"line {end + 1}"
        raise ConfigError(f"labels CSV {path}, {where}: {exc} (an unterminated quote?)") from None
    finally:
        csv.field_size_limit(limit)
    if not records:
        raise ConfigError(f"labels CSV {path} is empty (no header line)")
    if len(records) == 1:
        raise ConfigError(f"labels CSV {path} has a header but no rows: nothing to convert")
    (_, header), body = records[0], records[1:]
    names = list(header)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        where = "; ".join(
            f"{n!r} is columns {', '.join(str(i + 1) for i, h in enumerate(names) if h == n)}"
            for n in repeated
        )
        raise ConfigError(f"labels CSV {path} names a column twice ({where}): rename one")
    problems = [
        f"line {line}: {len(fields)} fields, the header has {len(header)}"
        for line, fields in body
        if len(fields) != len(header)
    ]
    if problems:
        shown = "; ".join(problems[:_MAX_REPORTED])
        more = f" (and {len(problems) - _MAX_REPORTED} more)" if len(problems) > _MAX_REPORTED else ""
        raise ConfigError(f"labels CSV {path} is malformed: {shown}{more}")
    return CsvTable(names, body, hashlib.sha256(data).hexdigest())


def _needed_columns(columns: Columns) -> tuple[list[str], list[str]]:
    """The columns the options name, and the fields of the path template."""
    needed = [columns.id_col, *([] if columns.no_target else [columns.target_col]), *columns.extra_cols]
    needed += [c for c in (columns.group_col, columns.mask_col, columns.series_col) if c]
    fields: list[str] = []
    if columns.path_template:
        fields = template_fields(columns.path_template)
        needed += fields
    elif columns.path_col:
        needed.append(columns.path_col)
    else:
        raise ConfigError("give --path-col or --path-template")
    reserved = sorted(RESERVED_FEATURES & set(columns.extra_cols))
    if reserved:
        raise ConfigError(f"--extra-col {', '.join(reserved)}: the record already has a feature of that name")
    if len(set(columns.extra_cols)) != len(columns.extra_cols):
        raise ConfigError("--extra-col: a column is named twice")
    return needed, fields


@dataclass(frozen=True)
class _RowParser:
    """One CSV record -> a Row, or the Failure of a row the labels alone reject."""

    columns: Columns
    index: dict[str, int]
    template_fields: list[str]
    class_map: dict[str, int] | None
    kinds: dict[str, FeatureKind]

    def __call__(self, line: int, fields: list[str]) -> Row | Failure:
        columns, index = self.columns, self.index
        image_id = fields[index[columns.id_col]]
        if columns.path_template:
            values = {name: fields[index[name]] for name in self.template_fields}
            empty = [name for name, value in values.items() if not value.strip()]
            rel = "" if empty else columns.path_template.format_map(values)
        else:
            empty, rel = [], fields[index[columns.path_col]]  # type: ignore[index]
        group = fields[index[columns.group_col]].strip() if columns.group_col else ""

        def failure(reason: Reason, message: str) -> Failure:
            return Failure(line, image_id, rel, reason, message)

        if not image_id.strip():
            return failure(Reason.MISSING_ID, f"column {columns.id_col!r} is empty")
        if not rel.strip():
            what = ", ".join(map(repr, empty)) if empty else repr(columns.path_col)
            return failure(Reason.MISSING_PATH, f"column {what} is empty")
        if columns.group_col and not group:
            return failure(Reason.MISSING_GROUP, f"column {columns.group_col!r} is empty")
        target: int | None = None
        if columns.no_target:
            pass
        elif self.class_map is not None:
            raw_target = fields[index[columns.target_col]]
            if raw_target.strip() not in self.class_map:
                return failure(Reason.BAD_TARGET, f"label {raw_target!r} is not in the class map")
            target = self.class_map[raw_target.strip()]
        else:
            raw_target = fields[index[columns.target_col]]
            try:
                target = parse_target(raw_target)
            except ValueError as exc:
                return failure(Reason.BAD_TARGET, str(exc))
        extras = []
        for column, kind in self.kinds.items():
            try:
                extras.append(typed_value(kind, fields[index[column]]))
            except ValueError as exc:
                return failure(Reason.BAD_VALUE, f"column {column!r}: {exc}")
        mask = fields[index[columns.mask_col]].strip() if columns.mask_col else ""
        series = fields[index[columns.series_col]].strip() if columns.series_col else ""
        return Row(line, image_id, rel, target, group, tuple(extras), mask, series)


def read_labels(
    path: str | os.PathLike[str], columns: Columns, options: Options = (), data: bytes | None = None
) -> Labels:
    """Read and validate the labels CSV.

    Structural problems (unreadable file, ragged rows, bad quoting, missing columns, a bad class
    map) raise ConfigError; row problems (bad target, empty id, path or group, duplicate id)
    become Failures.
    """
    table = read_records(path, options, columns.delimiter, data)
    header, body = table.header, table.records
    needed, path_fields = _needed_columns(columns)
    missing = [c for c in dict.fromkeys(needed) if c not in header]
    if missing:
        raise ConfigError(
            f"labels CSV {path} has no column {', '.join(map(repr, missing))}; it has {', '.join(header)}"
        )
    index = {name: i for i, name in enumerate(header)}
    class_map = None
    if columns.class_map:
        class_map = load_class_map(columns.class_map, [f[index[columns.target_col]] for _, f in body])
    kinds = {c: column_kind([f[index[c]] for _, f in body]) for c in columns.extra_cols}
    parse = _RowParser(columns, index, path_fields, class_map, kinds)
    rows: list[Row] = []
    failures: list[Failure] = []
    kept: dict[str, int] = {}
    for line, fields in body:
        row = parse(line, fields)
        if isinstance(row, Row) and row.image_id in kept:
            row = Failure(
                line,
                row.image_id,
                row.path,
                Reason.DUPLICATE_ID,
                f"id {row.image_id!r} already on line {kept[row.image_id]}, which is kept",
            )
        if isinstance(row, Failure):
            failures.append(row)
        else:
            kept[row.image_id] = line
            rows.append(row)
    if not columns.no_target:
        _refuse_hopeless(path, columns, body, index, failures)
    return Labels(rows, failures, table.sha256, class_map, kinds)


def _refuse_hopeless(
    path: object,
    columns: Columns,
    body: list[tuple[int, list[str]]],
    index: dict[str, int],
    failures: list[Failure],
) -> None:
    """ConfigError, before anything is decoded, when (nearly) no row has a usable target: every row,
    or at least 90% of 10 or more, rejected as ``bad_target``; the hint says what the cells look like."""
    bad = sum(1 for f in failures if f.reason == Reason.BAD_TARGET)
    if not body or not (
        bad == len(body) or (len(body) >= _HOPELESS_ROWS and bad >= _HOPELESS_SHARE * len(body))
    ):
        return
    cells = [fields[index[columns.target_col]].strip() for _, fields in body]
    numeric = sum(1 for c in cells if _is_number(c))
    if columns.class_map:
        hint = "the labels are not in the --class-map"
    elif numeric * 2 >= len(cells):
        hint = "targets must be integers (1.5 is not; 1.0 is read as 1)"
    else:
        hint = f"the labels are text ({', '.join(sorted(set(cells))[:3])} ...): pass --class-map auto"
    raise ConfigError(
        f"labels CSV {path}: {bad} of {len(body)} rows have no usable target in column "
        f"{columns.target_col!r}; {hint}"
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
