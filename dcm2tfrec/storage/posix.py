"""The local folder store: a temporary file, fsync, read-back check, rename, then a folder fsync."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import ConfigError
from ..faults import fault_point
from . import Appender, ObjectWriter, Store, temporary_name


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _FileWriter(ObjectWriter):
    def __init__(self, store: PosixStore, temporary: str) -> None:
        super().__init__()
        self._store, self._temporary = store, temporary
        self._folder = store.root
        self._path = store.root / temporary
        self._handle: BinaryIO | None = None

    def _write(self, data: bytes) -> None:
        if self._handle is None:
            self._handle = open(self._path, "wb")  # noqa: SIM115 (closed in finish/abort)
        self._handle.write(data)

    def finish(self) -> None:
        if self._handle is None:
            self._handle = open(self._path, "wb")  # noqa: SIM115 (an empty object)
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        self._handle = None
        if self._path.stat().st_size != self.size or self._store.sha256(self._temporary) != self.sha256:
            raise OSError(f"{self._path} does not read back as written (size or SHA-256 differ)")

    def publish(self, name: str) -> None:
        os.replace(self._path, self._folder / name)
        _fsync_dir(self._folder)

    def abort(self) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):  # closing flushes, which fails again on a full disk
                self._handle.close()
            self._handle = None
        with contextlib.suppress(OSError):
            self._path.unlink(missing_ok=True)


class _FileAppender(Appender):
    def __init__(self, path: Path) -> None:
        self._handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 (see close)

    def append(self, text: str) -> None:
        self._handle.write(text)
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PosixStore(Store):
    """A folder on a local (or mounted) file system."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.root = Path(location)

    def exists(self) -> bool:
        return self.root.exists()

    def is_folder(self) -> bool:
        return self.root.is_dir()

    def names(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir()) if self.root.is_dir() else []

    def is_file(self, name: str) -> bool:
        return (self.root / name).is_file()

    def size(self, name: str) -> int:
        return (self.root / name).stat().st_size

    def open_read(self, name: str) -> BinaryIO:
        return open(self.root / name, "rb")

    def write(self, name: str, data: bytes) -> None:
        tmp = self.root / temporary_name(name)
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            fault_point("write", name)
            os.replace(tmp, self.root / name)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise

    def writer(self, stem: str) -> ObjectWriter:
        return _FileWriter(self, temporary_name(stem))

    def appender(self, name: str) -> Appender:
        return _FileAppender(self.root / name)

    def delete(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create --out {self.location}: {exc.strerror or exc}") from None
        lock = self.root / name
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                break
            except FileExistsError:
                holder = lock.read_text().strip() if lock.exists() else ""
                if holder.isdigit() and _alive(int(holder)):
                    raise ConfigError(
                        f"--out {self.location} is in use by another dcm2tfrec convert (pid {holder})"
                    ) from None
                lock.unlink(missing_ok=True)  # stale: its process is gone
        else:
            raise ConfigError(f"cannot lock --out {self.location}")
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)
