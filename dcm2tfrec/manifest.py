"""The manifest (what was written, how, with which libraries) and the errors report."""

from __future__ import annotations

import csv
import io
import json
import platform
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from .config import Failure, OutputError
from .shards import write_synced

MANIFEST_NAME = "manifest.json"
ERRORS_NAME = "errors.csv"
ERROR_COLUMNS = ("line", "id", "path", "reason", "message")
FORMAT = "dcm2tfrec-manifest"
FORMAT_VERSION = 1

_VERSIONED = (
    "dcm2tfrec",
    "pydicom",
    "numpy",
    "opencv-python-headless",
    "pylibjpeg",
    "pylibjpeg-openjpeg",
    "pylibjpeg-rle",
    "pylibjpeg-libjpeg",
    "pyjpegls",
    "python-gdcm",
    "google-crc32c",
    "joblib",
)


def library_versions() -> dict[str, str | None]:
    """Versions of the tool and of every library that affects the output bytes."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename; raises OutputError."""
    try:
        write_synced(path, text)
    except OSError as exc:
        raise OutputError(f"writing {path} failed: {exc.strerror or exc}") from exc


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` (sorted keys, so equal content gives equal bytes)."""
    path = out_dir / MANIFEST_NAME
    write_atomic(path, json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    return path


def read_manifest(path: Path) -> dict[str, Any]:
    """Read a manifest from a file or from the output folder that holds it."""
    if path.is_dir():
        path = path / MANIFEST_NAME
    with open(path, encoding="utf-8") as handle:
        data: dict[str, Any] = json.load(handle)
    if data.get("format") != FORMAT:
        raise ValueError(f"{path} is not a dcm2tfrec manifest")
    return data


def write_errors(out_dir: Path, failures: Iterable[Failure]) -> Path:
    """Write ``errors.csv``: one row per rejected CSV row, in CSV line order."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(ERROR_COLUMNS)
    for f in sorted(failures, key=lambda f: f.line):
        writer.writerow([f.line, f.image_id, f.path, f.reason, f.message])
    path = out_dir / ERRORS_NAME
    write_atomic(path, buffer.getvalue())
    return path
