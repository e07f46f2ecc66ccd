from __future__ import annotations

import os
from pathlib import Path

import pytest

from dcm2tfrec.config import Columns
from dcm2tfrec.errors import ConfigError
from dcm2tfrec.labels import parse_target, read_labels


def _csv(tmp_path: Path, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / "labels.csv"
    path.write_bytes(text.encode(encoding))
    return path


def test_ids_stay_exactly_as_written(tmp_path: Path) -> None:
    labels = read_labels(
        _csv(tmp_path, "image_id,path,target\n000123,a.dcm,1\nNA,b.dcm,0\n1e3,c.dcm,2\n"), Columns()
    )
    assert [r.image_id for r in labels.rows] == ["000123", "NA", "1e3"]
    assert [r.target for r in labels.rows] == [1, 0, 2]
    assert [r.line for r in labels.rows] == [2, 3, 4]


@pytest.mark.parametrize("text", ["1.5", "abc", "", " ", "1e3", "0x10", "1_000", "9223372036854775808"])
def test_bad_targets_are_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        parse_target(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0),
        (" 7 ", 7),
        ("-3", -3),
        ("+4", 4),
        ("9223372036854775807", 2**63 - 1),
        ("1.0", 1),
        ("-2.00", -2),
        ("3.", 3),
    ],
)
def test_good_targets(text: str, value: int) -> None:
    assert parse_target(text) == value


def test_row_failures_name_line_and_reason(tmp_path: Path) -> None:
    text = "image_id,path,target\na,a.dcm,1\nb,b.dcm,1.5\na,c.dcm,0\n,d.dcm,1\ne,,1\n"
    labels = read_labels(_csv(tmp_path, text), Columns())
    assert [r.image_id for r in labels.rows] == ["a"]
    got = [(f.line, f.image_id, f.reason) for f in labels.failures]
    assert got == [
        (3, "b", "bad_target"),
        (4, "a", "duplicate_id"),
        (5, "", "missing_id"),
        (6, "e", "missing_path"),
    ]
    assert "line 2" in labels.failures[1].message


def test_bom_crlf_blank_lines_and_quoted_newlines_keep_line_numbers(tmp_path: Path) -> None:
    text = 'image_id,path,target\r\n\r\n"x\r\ny",a.dcm,1\r\nz,b.dcm,0\r\n'
    labels = read_labels(_csv(tmp_path, "\ufeff" + text), Columns())
    assert [(r.line, r.image_id) for r in labels.rows] == [(3, "x\r\ny"), (5, "z")]


def test_path_template(tmp_path: Path) -> None:
    text = "image_id,patient_id,target\n7,P1,1\n8,,0\n"
    labels = read_labels(_csv(tmp_path, text), Columns(path_template="{patient_id}/{image_id}.dcm"))
    assert [r.path for r in labels.rows] == ["P1/7.dcm"]
    assert labels.failures[0].reason == "missing_path"


@pytest.mark.parametrize(
    ("text", "columns", "needle"),
    [
        ("id,path,target\n1,a,0\n", Columns(), "no column 'image_id'"),
        ("image_id,path,target\n1,a,0,9\n2,b\n", Columns(), "line 2: 4 fields"),
        ('image_id,path,target\n1,"a,0\n', Columns(), "line"),
        ("", Columns(), "empty"),
        ("image_id,target\n1,0\n", Columns(path_template="{patient}.dcm"), "no column 'patient'"),
    ],
)
def test_structural_problems_are_usage_errors(
    tmp_path: Path, text: str, columns: Columns, needle: str
) -> None:
    with pytest.raises(ConfigError, match=needle):
        read_labels(_csv(tmp_path, text), columns)


def test_not_utf8_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_labels(_csv(tmp_path, "image_id,path,target\nÿ,a,1\n", "latin-1"), Columns())


def test_a_repeated_column_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'target' is columns 3, 4"):
        read_labels(_csv(tmp_path, "image_id,path,target,target\na,a.dcm,0,1\n"), Columns())


def test_the_first_accepted_occurrence_of_an_id_is_kept(tmp_path: Path) -> None:
    labels = read_labels(_csv(tmp_path, "image_id,path,target\na,a.dcm,x\na,b.dcm,1\na,c.dcm,0\n"), Columns())
    assert [(r.line, r.path) for r in labels.rows] == [(3, "b.dcm")]
    assert [(f.line, f.reason) for f in labels.failures] == [(2, "bad_target"), (4, "duplicate_id")]
    assert "line 3, which is kept" in labels.failures[1].message


def test_a_float_cell_beyond_float32_rejects_its_row_with_the_column_named(tmp_path: Path) -> None:
    text = "image_id,path,target,density\na,a.dcm,0,1e39\nb,b.dcm,0,-3e38\nc,c.dcm,0,inf\n"
    labels = read_labels(_csv(tmp_path, text), Columns(extra_cols=("density",)))
    assert [r.image_id for r in labels.rows] == ["b", "c"] and labels.extra_kinds == {"density": "float"}
    (failure,) = labels.failures
    assert failure.reason == "bad_value" and "'density'" in failure.message and "float32" in failure.message


@pytest.mark.parametrize("template", ["{pt.id}.dcm", "{ids[0]}.dcm", "{image_id!r}.dcm", "{image_id:>5}.dcm"])
def test_a_path_template_field_must_be_a_plain_column(tmp_path: Path, template: str) -> None:
    with pytest.raises(ConfigError, match="not a plain column name"):
        read_labels(_csv(tmp_path, "image_id,target\na,0\n"), Columns(path_col=None, path_template=template))


def test_a_cell_larger_than_csvs_default_limit_is_read(tmp_path: Path) -> None:
    notes = "x" * 300_000
    labels = read_labels(
        _csv(tmp_path, f"image_id,path,target,notes\na,a.dcm,0,{notes}\n"), Columns(extra_cols=("notes",))
    )
    assert labels.rows[0].extras == (notes.encode(),)
    import csv

    assert csv.field_size_limit() == 131072  # the process-wide limit is left as it was


def test_a_labels_pipe_is_read_once(tmp_path: Path) -> None:
    read, write = os.pipe()
    with os.fdopen(write, "w") as handle:
        handle.write("image_id,path,target\na,a.dcm,1\n")
    labels = read_labels(f"/dev/fd/{read}", Columns())
    os.close(read)
    assert [r.image_id for r in labels.rows] == ["a"] and len(labels.sha256) == 64


@pytest.mark.parametrize(
    ("targets", "needle"),
    [
        (["benign", "malignant"] * 6, "pass --class-map auto"),
        (["0.5", "0.25"] * 6, "targets must be integers"),
        (["x"], "pass --class-map auto"),
    ],
)
def test_a_run_whose_targets_are_hopeless_is_refused_before_decoding(
    tmp_path: Path, targets: list[str], needle: str
) -> None:
    text = "image_id,path,target\n" + "".join(f"i{k},{k}.dcm,{t}\n" for k, t in enumerate(targets))
    with pytest.raises(ConfigError, match=needle):
        read_labels(_csv(tmp_path, text), Columns())


def test_a_few_bad_targets_are_rows_of_the_errors_report_not_a_refusal(tmp_path: Path) -> None:
    text = "image_id,path,target\n" + "".join(f"i{k},{k}.dcm,{'x' if k < 8 else 1}\n" for k in range(12))
    labels = read_labels(_csv(tmp_path, text), Columns())
    assert len(labels.rows) == 4 and len(labels.failures) == 8


def test_a_header_only_csv_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="header but no rows"):
        read_labels(_csv(tmp_path, "image_id,path,target\n"), Columns())


@pytest.mark.parametrize("separator", [";", "\t", "|", ", "])
def test_other_delimiters_are_detected_and_spaces_around_cells_are_not_values(
    tmp_path: Path, separator: str, caplog
) -> None:
    rows = [["image_id", "path", "target"], ["a", "a.dcm", "1"], ["b", "sub dir/b.dcm", "0"]]
    text = "".join(separator.join(row) + "\n" for row in rows)
    labels = read_labels(_csv(tmp_path, text), Columns())
    assert [(r.image_id, r.path, r.target) for r in labels.rows] == [
        ("a", "a.dcm", 1),
        ("b", "sub dir/b.dcm", 0),
    ]
    delimiter = separator.strip(" ")
    assert (f"{delimiter!r}-separated" in caplog.text) == (delimiter != ",")


def test_a_given_delimiter_wins_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    text = "image_id;path;target\na;x,y.dcm;1\n"
    labels = read_labels(_csv(tmp_path, text), Columns(delimiter="semicolon"))
    assert labels.rows[0].path == "x,y.dcm"
    with pytest.raises(ConfigError, match="one character"):
        Columns(delimiter="::")
