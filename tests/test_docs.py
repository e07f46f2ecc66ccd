"""The README's tables are held to the code: convert's options and defaults, the rejection reasons
with their descriptions, and the exit codes."""

from __future__ import annotations

import re
from pathlib import Path

import click

from dcm2tfrec.cli import cli
from dcm2tfrec.errors import ExitCode, Reason

README = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")


def _section(start: str, end: str) -> str:
    return README[README.index(start) : README.index(end, README.index(start))]


def _rows(text: str) -> list[list[str]]:
    """The cells of a markdown table's body rows (header and rule skipped)."""
    rows = [line.strip().strip("|").split("|") for line in text.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row] for row in rows[1:]]


def _readme_default(param: click.Option) -> str:
    """What the README's default column should say for an option."""
    if param.required:
        return "required"
    if param.is_flag and param.secondary_opts:
        return param.opts[0].lstrip("-") if param.default else param.secondary_opts[0].lstrip("-")
    if param.is_flag or not param.show_default or param.default is None:
        return ""
    if param.multiple:  # a repeatable option's default: its values
        return f"`{', '.join(map(str, param.default))}`"  # type: ignore[arg-type]
    return f"`{param.default}`"


def _same_default(readme: str, expected: str) -> bool:
    numbers = [re.fullmatch(r"`?(-?[0-9.]+)`?", text) for text in (readme, expected)]
    if all(numbers):
        return float(numbers[0].group(1)) == float(numbers[1].group(1))  # type: ignore[union-attr]
    return readme == expected


def test_the_readme_option_table_is_convert_help() -> None:
    command = cli.commands["convert"]
    params = {
        "`" + "`, `".join(p.opts + p.secondary_opts) + "`": p
        for p in command.params
        if isinstance(p, click.Option) and p.name != "help"
    }
    table = _rows(_section("| option | default | meaning |", "\nA progress bar"))
    documented = {}
    for name, default, _ in table:
        key = re.sub(r"^(`[^`]+)\s[A-Z=_]+`", r"\1`", name)  # `--labels CSV` -> `--labels`
        documented[key.replace("/", "`, `")] = default
    assert sorted(documented) == sorted(params)
    wrong = {
        name: (documented[name], _readme_default(param))
        for name, param in params.items()
        if not _same_default(documented[name], _readme_default(param))
    }
    assert not wrong, wrong


def test_the_readme_reason_table_is_the_reason_enum() -> None:
    table = _rows(_section("| reason | meaning |", "\nEvery CSV row"))
    assert [(f"`{r.value}`", r.description) for r in Reason] == [(name, text) for name, text in table]


def test_the_readme_exit_codes_are_the_exit_code_enum() -> None:
    table = _rows(_section("| code | meaning |", "### Interruptions"))
    assert sorted(int(code) for code, _ in table) == sorted(ExitCode)


def test_the_readme_notebook_snippet_runs(tmp_path: Path, monkeypatch) -> None:
    import shutil

    from dcm2tfrec.testing import make_demo

    labels = make_demo(tmp_path, count=4)
    shutil.copy(labels, tmp_path / "train.csv")
    monkeypatch.chdir(tmp_path)
    code = README[README.index("```python", README.index("## Python API")) :]
    code = code[len("```python") : code.index("```", 3)]
    printed: list[object] = []
    exec(code, {"print": lambda *args: printed.append(args)})
    assert printed and printed[0][0] == 4 and printed[0][1] == {"file_missing": 1}
    assert "5 rows -> 4 records" in str(printed[1][0])
    assert (tmp_path / "tfrec" / "manifest.json").is_file()
