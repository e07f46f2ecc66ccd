"""The two-phase write path on its own: duplicated and retried tasks change no byte."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dcm2tfrec.config import ImageSpec
from dcm2tfrec.errors import Failure
from dcm2tfrec.labels import Row
from dcm2tfrec.parts import PART_PREFIX, ShardPlanner, assemble, part_name, write_part
from dcm2tfrec.shards import ShardWriter
from dcm2tfrec.storage.posix import PosixStore
from dcm2tfrec.testing import anatomy, write_dicom
from dcm2tfrec.worker import Task, process_row

from .helpers import sha256


def _results(tmp_path: Path, count: int) -> list:
    images = tmp_path / "img"
    rows = []
    for i in range(count):
        if i % 5 != 3:  # every fifth row is missing: a failure between records
            write_dicom(images / f"{i}.dcm", anatomy(24, 24, 0, 4000, np.uint16, i), bits_stored=12)
        rows.append(Row(i + 2, f"r{i}", f"{i}.dcm", i % 2))
    task = Task(images, ImageSpec(width=16, height=16))
    return [process_row(row, task) for row in rows]


def test_parts_assembled_into_shards_equal_the_one_writer_shards(tmp_path: Path) -> None:
    results = _results(tmp_path, 23)
    one = PosixStore(str(tmp_path / "one"))
    one.root.mkdir()
    writer = ShardWriter(one, "train", 4, write_index=True)
    for r in results:
        if not isinstance(r, Failure):
            writer.write(r.payloads[0])
    expected = writer.close()
    two = PosixStore(str(tmp_path / "two"))
    two.root.mkdir()
    planner = ShardPlanner(4, 0, 0)
    plans = []
    for chunk in range(0, 23, 5):
        part = write_part(two, part_name("train", chunk // 5), results[chunk : chunk + 5])
        duplicate = write_part(two, part_name("train", chunk // 5), results[chunk : chunk + 5])  # a zombie
        assert duplicate.name != part.name and duplicate.rows == part.rows
        plans += planner.add(part)
    last, failures, position = planner.close()
    assert last is not None and not failures and position == 23
    plans.append(last)
    infos = [assemble(two, "train", plan, True) for plan in plans]
    assert infos == expected
    assert [assemble(two, "train", plan, True) for plan in plans] == expected  # a retried shard task
    for info in expected:
        assert sha256(one.root / info.file) == sha256(two.root / info.file)
        assert (one.root / info.index).read_text() == (two.root / info.index).read_text()  # type: ignore[operator]
    assert sum(p.records for p in plans) == 19 and sum(len(p.failures) for p in plans) == 4
    assert [p.position for p in plans] == [5, 10, 15, 20, 23]  # rows 3, 8, 13 and 18 are failures
    assert all(
        n.startswith(PART_PREFIX)
        for n in set(two.names()) - {i.file for i in infos} - {i.index for i in infos}
    )


def test_parts_and_parts_being_written_of_an_interrupted_run_are_ours(tmp_path: Path) -> None:
    from dcm2tfrec.journal import Journal
    from dcm2tfrec.storage.output import owned

    store = PosixStore(str(tmp_path))
    Journal(store, {"config": {"prefix": "train"}}, []).close()
    names = [
        f"{PART_PREFIX}train-000001-abc",
        f".{PART_PREFIX}train-000002-def.partial",
        ".mine.partial",
        "x.bin",
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    assert owned(store) >= set(names[:2]) and not owned(store) & set(names[2:])


def test_a_shard_boundary_inside_a_multi_frame_row_is_planned_and_resumed(tmp_path: Path) -> None:
    from dcm2tfrec.records import Sample
    from dcm2tfrec.tfrecord import iter_records

    results = [
        Sample(2, "a", 0, (b"a0", b"a1", b"a2", b"a3", b"a4")),
        Failure(3, "x", "x.dcm", "file_missing", "gone"),
        Sample(4, "b", 1, (b"b0", b"b1")),
        Sample(5, "c", 0, (b"c0",)),
    ]
    store = PosixStore(str(tmp_path))
    part = write_part(store, part_name("train", 0), results)
    planner = ShardPlanner(3, 0, 0)
    plans = planner.add(part)
    last, _, position = planner.close()
    assert last is not None and position == 4
    assert [(p.position, p.skip) for p in plans] == [(0, 3), (2, 1)]  # a cut after 3, b after 1
    assert [dict(p.targets) for p in [*plans, last]] == [{0: 3}, {0: 2, 1: 1}, {1: 1, 0: 1}]

    def records(plan) -> list[bytes]:
        info = assemble(store, "train", plan, False)
        with open(tmp_path / info.file, "rb") as handle:
            return [data for _, data in iter_records(handle, info.file)]

    assert [records(p) for p in [*plans, last]] == [
        [b"a0", b"a1", b"a2"],
        [b"a3", b"a4", b"b0"],
        [b"b1", b"c0"],
    ]
    resumed = ShardPlanner(3, 1, 0, skip=3)  # after the journaled first shard: row a, 3 records done
    again = resumed.add(part)
    assert [(p.position, p.skip, p.lengths) for p in again] == [(2, 1, plans[1].lengths)]
    assert again[0].pieces == plans[1].pieces
