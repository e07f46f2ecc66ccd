"""Where a job's inputs come from: the labels CSV's bytes, and each row's file as a local path, from
a local folder or from any fsspec URL (``s3://``, ``gs://`` ...: fetched into a temporary file, so
that every check downstream reads a real file). Paths never escape the images root unless allowed,
and messages name them as the CSV does (relative to the root), so reports agree across machines.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from .errors import DicomError, Reason
from .storage import filesystem, is_url, protocol

Options = Sequence[tuple[str, object]]


def _local(location: str) -> str:
    return location.removeprefix("file://") if protocol(location) == "file" else location


def read_bytes(location: str | os.PathLike[str], options: Options = ()) -> bytes:
    """A whole input file (the labels CSV) from a path or a URL; raises OSError."""
    location = os.fspath(location)
    if protocol(location) == "file":
        return Path(_local(location)).read_bytes()
    fs, path = filesystem(location, dict(options))
    data: bytes = fs.cat_file(path)
    return data


def is_folder(location: str | os.PathLike[str], options: Options = ()) -> bool:
    """Whether an images root is a folder (a key prefix with objects under it, for a URL)."""
    location = os.fspath(location)
    if protocol(location) == "file":
        return Path(_local(location)).is_dir()
    fs, path = filesystem(location, dict(options))
    return bool(fs.isdir(path))


def _no_nul(rel: str) -> None:
    if "\0" in rel:
        raise DicomError(
            Reason.FILE_MISSING, f"{rel!r} contains a NUL character, which no file name can hold"
        )


def resolve_path(image_root: Path, rel: str, allow_outside_root: bool, folders: bool = False) -> Path:
    """Resolve a CSV path under a local ``image_root`` (a file, or also a folder with ``folders``);
    raise DicomError if it escapes or is missing."""
    _no_nul(rel)
    candidate = Path(rel)
    full = candidate if candidate.is_absolute() else image_root / candidate
    if not allow_outside_root:
        real, root = os.path.realpath(full), os.path.realpath(image_root)
        if os.path.commonpath([real, root]) != root:
            raise DicomError(Reason.OUTSIDE_ROOT, f"{rel!r} resolves outside the images folder")
    if not full.exists():
        detail = "dangling symlink or symlink loop" if full.is_symlink() else "no such file"
        raise DicomError(Reason.FILE_MISSING, f"{rel}: {detail}")
    if not full.is_file() and not (folders and full.is_dir()):
        raise DicomError(Reason.NOT_A_FILE, f"{rel} is not a regular file")
    return full


def _remote_path(root: str, rel: str, allow_outside_root: bool) -> str:
    """The object path of a CSV path under a URL root (``root`` is the path inside the filesystem)."""
    _no_nul(rel)
    if is_url(rel) or rel.startswith("/"):
        if not allow_outside_root:
            raise DicomError(Reason.OUTSIDE_ROOT, f"{rel!r} is not under the images URL")
        return rel.split("://", 1)[-1]
    full = posixpath.normpath(posixpath.join(root, rel))
    if not allow_outside_root and not full.startswith(root.rstrip("/") + "/"):
        raise DicomError(Reason.OUTSIDE_ROOT, f"{rel!r} resolves outside the images folder")
    return full


@contextlib.contextmanager
def local_file(
    image_root: str, rel: str, allow_outside_root: bool, options: Options = (), folders: bool = False
) -> Iterator[Path]:
    """The row's file (or, with ``folders``, also its folder) as a local path, while the block runs:
    resolved under a local root, or fetched from a URL root into a temporary file or folder
    (removed afterwards). Raises DicomError or OSError."""
    if protocol(image_root) == "file":
        yield resolve_path(Path(_local(image_root)), rel, allow_outside_root, folders)
        return
    fs, root = filesystem(image_root, dict(options))
    path = _remote_path(root, rel, allow_outside_root)
    is_folder = not fs.isfile(path) and fs.isdir(path)
    if not fs.isfile(path) and not (folders and is_folder):
        if is_folder:
            raise DicomError(Reason.NOT_A_FILE, f"{rel} is not a regular file")
        raise DicomError(Reason.FILE_MISSING, f"{rel}: no such file")
    with tempfile.TemporaryDirectory(prefix="dcm2tfrec-") as folder:
        local = Path(folder) / (posixpath.basename(path.rstrip("/")) or "file")
        if is_folder:
            fs.get(path.rstrip("/") + "/", str(local), recursive=True)
        else:
            fs.get_file(path, str(local))
        yield local
