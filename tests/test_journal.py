"""The run journal on its own: durable steps, a torn last line, damage, the fingerprint."""

from __future__ import annotations

from pathlib import Path

import pytest

from dcm2tfrec.config import ConvertConfig
from dcm2tfrec.errors import ConfigError, Failure, OutputError
from dcm2tfrec.journal import (
    JOURNAL_NAME,
    Journal,
    Step,
    fingerprint,
    read_journal,
    resumable_steps,
    verified_steps,
)
from dcm2tfrec.policy import OUTPUT_LIBRARIES, PRELOAD, library_versions
from dcm2tfrec.shards import ShardWriter
from dcm2tfrec.storage.posix import PosixStore


def _store(tmp_path: Path) -> PosixStore:
    return PosixStore(str(tmp_path))


def _published(store: PosixStore, count: int) -> list[Step]:
    writer = ShardWriter(store, "train", 2, write_index=True)
    for i in range(2 * count):
        writer.write(f"record {i}".encode())
    failure = Failure(7, "x", "x.dcm", "file_missing", "no such file")
    return [
        Step(2 * (k + 1), shard, {k % 2: 2}, (failure,) if k == 0 else ())
        for k, shard in enumerate(writer.close())
    ]


def test_steps_read_back_as_written(tmp_path: Path) -> None:
    store = _store(tmp_path)
    steps = _published(store, 3)
    journal = Journal(store, {"seed": 1}, steps[:1])
    for step in steps[1:]:
        journal.append(step)
    journal.close()
    assert read_journal(store) == ({"seed": 1}, steps)
    assert verified_steps(store, steps) == steps


def test_a_torn_last_line_is_ignored_and_a_damaged_middle_line_refused(tmp_path: Path) -> None:
    store = _store(tmp_path)
    steps = _published(store, 2)
    Journal(store, {}, steps).close()
    text = (tmp_path / JOURNAL_NAME).read_text()
    (tmp_path / JOURNAL_NAME).write_text(text[:-9])
    assert read_journal(store) == ({}, steps[:1])
    lines = text.splitlines(keepends=True)
    (tmp_path / JOURNAL_NAME).write_text(lines[0] + "{not json\n" + lines[2])
    with pytest.raises(OutputError, match="line 2 is damaged"):
        read_journal(store)


def test_verified_steps_stop_at_the_first_damaged_shard_or_index(tmp_path: Path) -> None:
    store = _store(tmp_path)
    steps = _published(store, 3)
    assert steps[1].shard is not None and steps[2].shard is not None
    (tmp_path / steps[2].shard.index).write_text("0 1\n")  # type: ignore[operator]
    assert verified_steps(store, steps) == steps[:2]
    data = bytearray((tmp_path / steps[1].shard.file).read_bytes())
    data[-1] ^= 1
    (tmp_path / steps[1].shard.file).write_bytes(bytes(data))
    assert verified_steps(store, steps) == steps[:1]


def test_finish_removes_the_journal(tmp_path: Path) -> None:
    store = _store(tmp_path)
    journal = Journal(store, {}, [])
    assert (tmp_path / JOURNAL_NAME).is_file()
    journal.finish()
    assert not (tmp_path / JOURNAL_NAME).exists() and read_journal(store) is None


def test_resume_with_other_options_names_what_changed(tmp_path: Path) -> None:
    store = _store(tmp_path)
    old = fingerprint(ConvertConfig("l.csv", str(tmp_path), "out", seed=1), "aa", None)
    Journal(store, old, []).close()
    new = fingerprint(ConvertConfig("l.csv", str(tmp_path), "out", seed=2), "aa", None)
    with pytest.raises(ConfigError, match=r"config\.seed: 1 -> 2"):
        resumable_steps(store, new)
    assert resumable_steps(store, old) == []
    again = fingerprint(ConvertConfig("other.csv", str(tmp_path), "elsewhere", workers=3, seed=1), "aa", None)
    assert again == old  # the CSV counts by content, the output may move, the worker count is free


def test_the_fingerprint_versions_are_the_libraries_that_shape_bytes() -> None:
    versions = library_versions()
    assert versions.get("pillow")  # reduced JPEG 2000 decoding
    assert "pylibjpeg-openjpeg" in versions and "opencv-python-headless" in versions
    assert "joblib" not in versions  # runs scan only: an upgrade must not refuse a valid --resume
    assert set(versions) == {"python"} | {lib.distribution for lib in OUTPUT_LIBRARIES}


def test_the_fork_server_preloads_what_the_versions_list_declares() -> None:
    from multiprocessing import forkserver

    from dcm2tfrec.engine.local import start_server

    start_server()
    assert forkserver._forkserver._preload_modules == list(PRELOAD)  # type: ignore[attr-defined]
    assert "PIL.Jpeg2KImagePlugin" in PRELOAD and "openjpeg" in PRELOAD
