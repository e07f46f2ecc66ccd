"""Hostile shards and manifests, round 2: inspect and the reader diagnose, never crash, hang or
allocate what a forged header asks for."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from dcm2tfrec.cli import cli
from dcm2tfrec.config import ConvertConfig, ImageSpec
from dcm2tfrec.convert import convert
from dcm2tfrec.errors import ShardError
from dcm2tfrec.records import make_record, serialize_example
from dcm2tfrec.testing import make_demo
from dcm2tfrec.tfrecord import frame, masked_crc


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile_shards")
    labels = make_demo(root, count=6)
    out = root / "out"
    convert(
        ConvertConfig(labels, root / "images", out, image=ImageSpec(width=32, height=32), records_per_shard=3)
    )
    return out


@pytest.fixture
def copy(good: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(good, tmp_path / "copy"))


def _inspect(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["inspect", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def _png_header(width: int, height: int) -> bytes:
    """A PNG signature and IHDR declaring ``width`` x ``height`` 8-bit grey, and no image data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\0\0\0\0"


def _shard(path: Path, *records: bytes) -> Path:
    path.write_bytes(b"".join(frame(r) for r in records))
    return path


def test_a_png_declaring_30000_squared_is_never_decoded(tmp_path: Path) -> None:
    record = make_record(_png_header(30000, 30000), 1, "huge", 30000, 30000, 1)
    shard = _shard(tmp_path / "x-00000-1.tfrec", record)
    grid = tmp_path / "grid.png"
    code = (
        "import re, sys; from pathlib import Path; from dcm2tfrec.cli import main\n"
        f"sys.argv = ['dcm2tfrec', 'inspect', {str(shard)!r}, '--verify', '--grid', {str(grid)!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
        "hwm = int(re.search(r'VmHWM:\\s+(\\d+)', Path('/proc/self/status').read_text()).group(1)) >> 10\n"
        "print('EXIT', code, hwm)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    exit_line = proc.stdout.strip().splitlines()[-1].split()
    assert exit_line[:2] == ["EXIT", "2"] and int(exit_line[2]) < 400, proc.stdout + proc.stderr
    assert "larger than dcm2tfrec writes" in proc.stdout and "Traceback" not in proc.stderr
    assert cv2.imread(str(grid)).shape[0] > 0  # the sheet is written, the tile says UNREADABLE


def test_a_length_field_claiming_a_terabyte_is_damage_not_a_crash(copy: Path) -> None:
    shard = copy / "train-00000-3.tfrec"
    data = bytearray(shard.read_bytes())
    length = struct.pack("<Q", 1 << 40)
    data[:12] = length + struct.pack("<I", masked_crc(length))  # a valid CRC: only the bound catches it
    shard.write_bytes(bytes(data))
    code, out = _inspect(str(copy))
    assert code == 2 and "record 0 at byte 0: truncated record" in out
    from dcm2tfrec.reader import make_dataset

    with pytest.raises(ShardError, match="truncated record"):
        make_dataset(copy)  # the default check, before TensorFlow allocates anything


@pytest.mark.parametrize("name", ["../outside-00000-3.tfrec", "/etc/passwd", "sub/x-00000-1.tfrec", ".."])
def test_the_reader_opens_only_shards_inside_the_manifest_folder(copy: Path, name: str) -> None:
    from dcm2tfrec.reader import make_dataset

    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["shards"][0]["file"] = name
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match="not a shard inside its folder"):
        make_dataset(copy)
    code, out = _inspect(str(copy / "manifest.json"))
    assert code == 2 and "not a shard inside its folder" in out


def test_a_fifo_or_device_named_like_a_shard_is_not_read(copy: Path) -> None:
    fifo = copy / "train-00009-3.tfrec"
    os.mkfifo(fifo)
    (copy / "zero-00000-1.tfrec").symlink_to("/dev/zero")
    code, out = _inspect(str(copy))  # would block on the FIFO, or read /dev/zero for ever
    assert code == 2 and out.count("not a regular file") == 2
    code, out = _inspect(str(fifo))
    assert code == 2 and "not a regular file" in out


def test_features_of_the_wrong_kind_or_missing_are_problems(tmp_path: Path) -> None:
    png = cv2.imencode(".png", np.zeros((4, 4), np.uint8))[1].tobytes()
    wrong = serialize_example(
        {
            "image": ("int64", [7]),
            "target": ("bytes", [b"x"]),
            "image_id": ("bytes", [b"w"]),
            "height": ("int64", [4]),
            "width": ("int64", [4]),
            "channels": ("int64", [1]),
        }
    )
    no_target = serialize_example(
        {
            "image": ("bytes", [png]),
            "image_id": ("bytes", [b"n"]),
            "height": ("int64", [4]),
            "width": ("int64", [4]),
            "channels": ("int64", [1]),
        }
    )
    shard = _shard(tmp_path / "t-00000-3.tfrec", wrong, no_target, b"\x0a\xff\xff")
    for extra in ([], ["--json"], ["--head", "3", "--verify"]):
        code, out = _inspect(str(shard), *extra)
        assert code == 2, out
    code, out = _inspect(str(shard), "--head", "3")
    assert "feature 'image' is int64, expected bytes" in out and "feature 'target' missing" in out
    assert "not a valid Example" in out
    assert _inspect(str(shard), "--export", str(tmp_path / "exp"), "--grid", str(tmp_path / "g.png"))[0] == 2


def test_a_malformed_manifest_is_a_problem_and_the_shards_are_still_read(copy: Path) -> None:
    (copy / "manifest.json").write_text('{"format": "dcm2tfrec-manifest", "shards": [{"nope": 1}]')
    code, out = _inspect(str(copy))
    assert code == 2 and "PROBLEM" in out and "manifest" in out and "TOTAL  6 records" in out


def test_export_never_writes_into_a_folder_with_files_or_over_a_file(good: Path, tmp_path: Path) -> None:
    taken = tmp_path / "mine"
    taken.mkdir()
    (taken / "labels.csv").write_text("my own labels")
    code, out = _inspect(str(good), "--export", str(taken))
    assert code == 2 and "not empty" in out and (taken / "labels.csv").read_text() == "my own labels"
    (tmp_path / "file.txt").write_text("mine")
    code, out = _inspect(str(good), "--export", str(tmp_path / "file.txt"))
    assert code == 2 and "not a folder" in out and (tmp_path / "file.txt").read_text() == "mine"


def test_a_300_character_id_exports_under_a_short_unique_name(tmp_path: Path) -> None:
    png = cv2.imencode(".png", np.zeros((4, 4), np.uint8))[1].tobytes()
    ids = ["x" * 300 + "a", "x" * 300 + "b"]
    shard = _shard(tmp_path / "t-00000-2.tfrec", *(make_record(png, 0, i, 4, 4, 1) for i in ids))
    code, out = _inspect(str(shard), "--export", str(tmp_path / "exp"))
    assert code == 0, out
    names = sorted(p.name for p in (tmp_path / "exp").iterdir())
    assert len(names) == 3 and all(len(n) < 130 for n in names)


@pytest.mark.parametrize("name", ["x.jpgx", "sheet", "folder"])
def test_a_grid_name_that_is_no_png_file_is_a_clear_error(good: Path, tmp_path: Path, name: str) -> None:
    (tmp_path / "folder").mkdir()
    code, out = _inspect(str(good), "--grid", str(tmp_path / name))
    assert code == 2 and "--grid" in out


def test_sparse_class_ids_are_refused_as_a_list_and_named_in_the_dataset(copy: Path) -> None:
    from dcm2tfrec.reader import class_map, class_names, make_dataset

    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["class_map"] = {"benign": 0, "malignant": 10**12}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match="too sparse"):
        class_names(copy)
    assert class_map(copy) == {"benign": 0, "malignant": 10**12}
    batch = next(iter(make_dataset(copy, batch_size=6, with_features=True)))
    names = [n.decode() for n in batch["class_name"].numpy()]
    targets = batch["target"].numpy().tolist()
    assert names == ["benign" if t == 0 else "" for t in targets]
