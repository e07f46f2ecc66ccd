"""The object-store backend (any fsspec URL: ``s3://``, ``gs://``, ``az://``, ``memory://``).

Objects appear whole or not at all: small ones are one PUT; a shard is spooled to a local temporary
file, checked against its SHA-256 there, then uploaded in one ``put_file`` (a multipart upload that
only completes at the end, and is aborted on any error), never through ``with fs.open(...)``, which
publishes a partial object when an exception leaves the block. A log (the journal) is one object
written whole plus one small object per append. The lock is an exclusive create (S3's
``If-None-Match``); a lock whose holder ran on this host and is gone is stale and taken over.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from ..errors import ConfigError, OutputError
from ..faults import fault_point
from . import Appender, ObjectWriter, Store, filesystem, protocol

_CHUNK = 1 << 20


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _SpooledWriter(ObjectWriter):
    """A shard on its way to an object store: a local temporary file until ``publish`` uploads it."""

    def __init__(self, store: FsspecStore) -> None:
        super().__init__()
        self._store = store
        self._handle = tempfile.NamedTemporaryFile(prefix="dcm2tfrec-", suffix=".partial")  # noqa: SIM115

    def _write(self, data: bytes) -> None:
        self._handle.write(data)

    def finish(self) -> None:
        self._handle.flush()
        self._handle.seek(0)
        digest = hashlib.sha256()
        while chunk := self._handle.read(_CHUNK):
            digest.update(chunk)
        if self._handle.tell() != self.size or digest.hexdigest() != self.sha256:
            raise OSError(f"{self._handle.name} does not read back as written (size or SHA-256 differ)")

    def publish(self, name: str) -> None:
        self._store.upload(self._handle.name, name)
        self.abort()

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._handle.close()


class _ObjectAppender(Appender):
    """Appends to a log as one object each: ``name.000001``, ``name.000002`` ..."""

    def __init__(self, store: FsspecStore, name: str) -> None:
        self._store, self._name = store, name
        self._next = len(store.log_parts(name)) + 1

    def append(self, text: str) -> None:
        self._store.write_text(f"{self._name}.{self._next:06d}", text, replace=False)
        self._next += 1

    def close(self) -> None:
        pass


class FsspecStore(Store):
    """A folder (a key prefix) of an fsspec filesystem."""

    def __init__(self, location: str, options: dict[str, Any] | None = None) -> None:
        self.location = location.rstrip("/")
        self.fs, self.root = filesystem(location, options)
        self._exclusive = protocol(location) in ("s3", "s3a")  # S3 conditional writes

    def _path(self, name: str) -> str:
        return posixpath.join(self.root, name)

    def exists(self) -> bool:
        return bool(self.names()) or bool(self.fs.exists(self.root))

    def is_folder(self) -> bool:
        return not self.fs.isfile(self.root)

    def names(self) -> list[str]:
        try:
            entries = self.fs.ls(self.root, detail=True, refresh=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(posixpath.basename(e["name"].rstrip("/")) for e in entries if e.get("type") == "file")

    def is_file(self, name: str) -> bool:
        return bool(self.fs.isfile(self._path(name)))

    def size(self, name: str) -> int:
        return int(self.fs.size(self._path(name)))

    def open_read(self, name: str) -> BinaryIO:
        handle: BinaryIO = self.fs.open(self._path(name), "rb")
        return handle

    def read_range(self, name: str, offset: int, length: int) -> bytes:
        data: bytes = self.fs.cat_file(self._path(name), start=offset, end=offset + length)
        if len(data) != length:
            raise OSError(f"{self.path(name)} holds {offset + len(data)} bytes, {offset + length} expected")
        return data

    def _refuse_existing(self, name: str) -> None:
        if self.fs.exists(self._path(name)):
            raise FileExistsError(17, f"{name} exists and was not written by this run (kept)")

    def write(self, name: str, data: bytes, replace: bool = True) -> None:
        fault_point("write", name)
        if replace:
            self.fs.pipe_file(self._path(name), data)
        elif self._exclusive:
            self.fs.pipe_file(self._path(name), data, mode="create")
        else:
            self._refuse_existing(name)
            self.fs.pipe_file(self._path(name), data)

    def upload(self, local: str, name: str) -> None:
        """Upload a local file as ``name``, which must not exist (one PUT or one multipart upload,
        aborted on error: the object appears whole or not at all)."""
        if self._exclusive:
            self.fs.put_file(local, self._path(name), mode="create")
        else:
            self._refuse_existing(name)
            self.fs.put_file(local, self._path(name))

    def writer(self, stem: str) -> ObjectWriter:
        return _SpooledWriter(self)

    def log_parts(self, name: str) -> list[str]:
        """A log's append objects, in order."""
        return sorted(n for n in self.names() if n.startswith(f"{name}.") and n[len(name) + 1 :].isdigit())

    def appender(self, name: str) -> Appender:
        return _ObjectAppender(self, name)

    def write_log(self, name: str, text: str) -> None:
        for part in self.log_parts(name):  # a crash between here and the write leaves a prefix
            self.delete(part)
        self.write_text(name, text)

    def read_log(self, name: str) -> str:
        return "".join(self.read_text(n) for n in [name, *self.log_parts(name)])

    def delete_log(self, name: str) -> None:
        for part in self.log_parts(name):
            self.delete(part)
        self.delete(name)

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(name))

    def abort_uploads(self, ours: Callable[[str], bool]) -> list[str]:
        if not self._exclusive:  # S3 only: other stores have no multipart uploads to leave behind
            return []
        bucket, _, prefix = self.root.partition("/")
        prefix = f"{prefix}/" if prefix else ""
        found = self.fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=prefix).get("Uploads", [])
        aborted = []
        for upload in found:
            name = upload["Key"][len(prefix) :]
            if "/" not in name and ours(name):
                self.fs.call_s3(
                    "abort_multipart_upload", Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
                aborted.append(name)
        return aborted

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        if self.fs.isfile(self.root):
            raise ConfigError(f"--out {self.location} exists and is not a folder")
        holder = {"host": socket.gethostname(), "pid": os.getpid(), "since": round(time.time())}
        for attempt in range(2):
            try:
                self._create(name, json.dumps(holder).encode())
                break
            except FileExistsError:
                other = self._holder(name)
                stale = other.get("host") == holder["host"] and not _alive(int(other.get("pid", 0)))
                if attempt or not stale:
                    where = f"host {other.get('host', '?')}, pid {other.get('pid', '?')}"
                    raise ConfigError(
                        f"--out {self.location} is in use by another dcm2tfrec convert ({where}); if that "
                        f"run is gone (killed on another machine), delete {self._path(name)} and run again"
                    ) from None
                self.delete(name)
            except OSError as exc:
                raise OutputError(f"cannot write the lock {self._path(name)}: {exc}") from None
        try:
            yield
        finally:
            self.delete(name)

    def _create(self, name: str, data: bytes) -> None:
        try:
            self.write(name, data, replace=False)
        except OSError as exc:
            if "PreconditionFailed" in str(exc) or "412" in str(exc):
                raise FileExistsError(17, name) from None
            raise

    def _holder(self, name: str) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.read_text(name))
        except (OSError, ValueError):
            return {}
        return data
