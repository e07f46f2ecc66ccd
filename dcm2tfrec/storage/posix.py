"""The local folder store: a temporary file, fsync, read-back check, then a rename (or a hard link,
where an existing file must not be replaced) and a folder fsync. The lock is an OS lock
(``fcntl.flock``) held for the run, so a holder that dies releases it, whatever its pid became."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import ConfigError, OutputError
from ..faults import fault_point
from . import Appender, ObjectWriter, Store, temporary_name

#: The most times a lock is retried when its file was replaced between opening and locking it.
_LOCK_TRIES = 10


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _place(tmp: Path, final: Path, replace: bool) -> None:
    """Give ``tmp`` the name ``final`` atomically; without ``replace``, never over an existing file."""
    if replace:
        os.replace(tmp, final)
        return
    taken = FileExistsError(errno.EEXIST, f"{final.name} exists and was not written by this run (kept)")
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise taken from None
    except OSError:  # no hard links on this file system: check, then rename
        if final.exists():
            raise taken from None
        os.replace(tmp, final)
        return
    os.unlink(tmp)


class _FileWriter(ObjectWriter):
    def __init__(self, store: PosixStore, temporary: str) -> None:
        super().__init__()
        self._store, self._temporary = store, temporary
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
        _place(self._path, self._store.root / name, replace=False)
        _fsync_dir(self._store.root)

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

    def write(self, name: str, data: bytes, replace: bool = True) -> None:
        tmp = self.root / temporary_name(name)
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            fault_point("write", name)
            _place(tmp, self.root / name, replace)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise

    def writer(self, stem: str) -> ObjectWriter:
        return _FileWriter(self, temporary_name(stem))

    def appender(self, name: str) -> Appender:
        return _FileAppender(self.root / name)

    def delete(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)

    def _open_lock(self, path: Path) -> int:
        """The lock file's descriptor, locked; ConfigError when another process holds it."""
        for _ in range(_LOCK_TRIES):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise ConfigError(f"cannot lock --out {self.location}: {exc.strerror or exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise ConfigError(f"cannot lock --out {self.location}: {exc.strerror or exc}") from None
                raise ConfigError(
                    f"--out {self.location} is in use by another dcm2tfrec convert (pid {holder}); "
                    "wait for it to finish"
                ) from None
            try:
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)  # its holder removed the file meanwhile: lock the new one
        raise ConfigError(f"cannot lock --out {self.location}: its lock file keeps being replaced")

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"--out {self.location} exists and is not a folder")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create --out {self.location}: {exc.strerror or exc}") from None
        path = self.root / name
        fd = self._open_lock(path)
        try:
            try:
                pid = str(os.getpid()).encode()
                os.pwrite(fd, pid, 0)
                os.ftruncate(fd, len(pid))
            except OSError as exc:
                raise OutputError(f"cannot write the lock {path}: {exc.strerror or exc}") from None
            yield
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
            os.close(fd)
