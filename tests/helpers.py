"""Shared test helpers: build labelled DICOM datasets on disk, read shards back with TensorFlow,
compare output folders, list live processes."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np


def write_labels(path: Path, rows: Iterable[dict[str, Any]], header: list[str] | None = None) -> Path:
    rows = list(rows)
    header = header or list(rows[0])
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_shards(out: Path) -> list[dict[str, Any]]:
    """Every record of every shard in ``out`` (name order), parsed and PNG-decoded by TensorFlow;
    with ``frame`` when the manifest's schema has it (``--frames``)."""
    import tensorflow as tf

    from dcm2tfrec.reader import parse_example

    files = sorted(str(p) for p in out.glob("*.tfrec"))
    manifest = out / "manifest.json"
    schema = json.loads(manifest.read_text())["schema"] if manifest.is_file() else {}
    framed = "frame" in schema
    records = []
    compressed = (
        manifest.is_file() and json.loads(manifest.read_text())["config"].get("compression") == "gzip"
    )
    for raw in tf.data.TFRecordDataset(files, "GZIP" if compressed else ""):
        ex = parse_example(raw, schema if framed else None)
        png = ex["image"]
        dtype = tf.uint16 if png.numpy()[24:25] == b"\x10" else tf.uint8
        records.append(
            {
                "image_id": ex["image_id"].numpy().decode("utf-8"),
                "target": int(ex["target"]),
                "height": int(ex["height"]),
                "width": int(ex["width"]),
                "channels": int(ex["channels"]),
                "image": tf.io.decode_png(png, dtype=dtype).numpy(),
                **({"frame": int(ex["frame"])} if framed else {}),
            }
        )
    return records


def output_bytes(out: Path) -> dict[str, Any]:
    """Every file in ``out`` by name (but a lock left by a killed run): its bytes; the manifest
    parsed, without timing and out path."""
    files: dict[str, Any] = {}
    for path in sorted(out.iterdir()):
        if path.name == ".dcm2tfrec.lock":
            continue
        if path.name == "manifest.json":
            manifest = json.loads(path.read_text(encoding="utf-8"))
            manifest.pop("timing")
            manifest["config"].pop("out")
            files[path.name] = manifest
        else:
            files[path.name] = path.read_bytes()
    return files


def rows_by_id(labels: Path) -> dict[str, dict[str, str]]:
    """A labels CSV's rows by their ``image_id``."""
    with open(labels, newline="", encoding="utf-8") as handle:
        return {r["image_id"]: r for r in csv.DictReader(handle)}


def read_errors(out: Path) -> list[dict[str, str]]:
    with open(out / "errors.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def left_dark_right_bright(img: np.ndarray) -> bool:
    """A ramp survived: the mean rises from the left quarter to the right quarter."""
    grey = img.astype(np.float64).mean(axis=-1) if img.ndim == 3 else img.astype(np.float64)
    w = grey.shape[1]
    return grey[:, : w // 4].mean() + 20 < grey[:, -w // 4 :].mean()


def build_dataset(
    root: Path, files: dict[str, dict[str, Any]], extra_rows: Iterable[dict[str, Any]] = ()
) -> tuple[Path, Path]:
    """Write ``files`` (``{id: write_dicom kwargs with pixels and target}``) under ``root/images``
    and a labels CSV listing them plus ``extra_rows``; return (labels, images)."""
    from dcm2tfrec.testing import write_dicom

    images = root / "images"
    images.mkdir(exist_ok=True)
    rows = []
    for i, (image_id, kwargs) in enumerate(files.items()):
        kwargs = dict(kwargs)
        target = kwargs.pop("target", i % 2)
        pixels = kwargs.pop("pixels")
        rel = f"{image_id}.dcm"
        write_dicom(images / rel, pixels, **kwargs)
        rows.append({"image_id": image_id, "path": rel, "target": target})
    rows.extend(extra_rows)
    return write_labels(root / "labels.csv", rows, ["image_id", "path", "target"]), images


def sha256(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def live_processes() -> dict[int, tuple[int, int, bytes]]:
    """Every live (not zombie) process: pid -> (parent pid, process group, command line), from /proc."""
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            command = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if fields[0] != "Z":
            found[int(proc.name)] = (int(fields[1]), int(fields[2]), command)
    return found


def convert_args(labels: Path, images: Path, out: Path, *extra: str) -> list[str]:
    """The command line of ``dcm2tfrec convert`` on ``labels``, ``images`` and ``out``."""
    return ["convert", "--labels", str(labels), "--images", str(images), "--out", str(out), *extra]


def listening_addresses(pids: set[int]) -> set[str]:
    """The local addresses (``ip:port``) on which any of ``pids`` listens for TCP, from /proc."""
    inodes: set[str] = set()
    for pid in pids:
        fds = Path(f"/proc/{pid}/fd")
        try:
            links = [os.readlink(fd) for fd in fds.iterdir()]
        except OSError:
            continue
        inodes |= {link[8:-1] for link in links if link.startswith("socket:[")}
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                address, port = fields[1].split(":")
                found.add(f"{_ip(address)}:{int(port, 16)}")
    return found


def _ip(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return ".".join(str(b) for b in reversed(raw))
    words = [raw[i : i + 4][::-1].hex() for i in range(0, 16, 4)]
    text = "".join(words)
    return "::1" if text == "0" * 31 + "1" else text


def descendants(pid: int) -> set[int]:
    """``pid`` and every live process below it."""
    processes = live_processes()
    found, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, (ppid, _, _) in processes.items() if ppid == parent and p not in found]
        found.update(children)
        frontier += children
    return found


def write_rows(root: Path, count: int, side: int = 32, width: int = 2) -> tuple[Path, Path]:
    """``count`` 12-bit anatomy images of ``side`` x ``side`` under ``root/img``, ids ``r00``..,
    targets alternating, and their labels CSV; returns (labels, images)."""
    from dcm2tfrec.testing import anatomy, write_dicom

    rows = []
    for i in range(count):
        write_dicom(root / "img" / f"{i}.dcm", anatomy(side, side, 0, 4000, np.uint16, i % 9), bits_stored=12)
        rows.append({"image_id": f"r{i:0{width}d}", "path": f"{i}.dcm", "target": i % 2})
    return write_labels(root / "labels.csv", rows), root / "img"


def killed_at(command: list[str], points: list[str], **popen: Any) -> None:
    """Run ``command`` once per fault point, SIGKILLed there (``--resume`` from the second run on),
    asserting each run died at its point; whatever the run started (a cluster) is killed with it."""
    import contextlib
    import signal
    import subprocess

    from dcm2tfrec.faults import FAULTS_ENV

    for i, point in enumerate(points):
        env = {**os.environ, FAULTS_ENV: json.dumps({f"@{point}": "kill"})}
        killed = subprocess.Popen(
            [*command, *(["--resume"] if i else [])],
            env=env,
            stderr=subprocess.PIPE,
            start_new_session=True,
            **popen,
        )
        try:
            _, err = killed.communicate(timeout=180)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(killed.pid, signal.SIGKILL)
        assert killed.returncode == -9, f"the fault point {point} was never reached: {err.decode()}"


def write_bad_values(root: Path, bad: int, good: int) -> Path:
    """``bad`` files whose InstanceNumber (IS) is ``1.5``, which pydicom warns of, then ``good``
    clean ones, and their labels CSV (ids b0.., g0..)."""
    import warnings

    from dcm2tfrec.testing import anatomy, write_dicom

    lines = ["image_id,path,target"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(bad + good):
            name = f"b{i}" if i < bad else f"g{i}"
            number = "1.5" if i < bad else str(i)
            write_dicom(
                root / "img" / f"{name}.dcm", anatomy(32, 32, 0, 200, np.uint8, i), InstanceNumber=number
            )
            lines.append(f"{name},{name}.dcm,{i % 2}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root / "labels.csv"
