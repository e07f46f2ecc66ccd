"""Where output bytes go: a :class:`Store` is one output folder, its objects named relative to it.

Everything a run writes (shards, index files, journal, lock, errors report, manifest) goes through
a store, so that no partial object is ever seen under a final name, whatever the backend.
:mod:`.posix` is the local folder (temporary file, fsync, rename, folder fsync).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, BinaryIO

from ..errors import ConfigError

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_CHUNK = 1 << 20
#: Suffix of the hidden temporary name an object has while it is written.
PARTIAL_SUFFIX = ".partial"


def temporary_name(name: str) -> str:
    """The hidden name ``name`` has while it is being written (in every store)."""
    return f".{name}{PARTIAL_SUFFIX}"


def is_url(location: str) -> bool:
    """Whether ``location`` is a URL (``s3://``, ``gs://``, ``file://`` ...) rather than a path."""
    return bool(_URL.match(location))


class ObjectWriter(ABC):
    """A streamed object: bytes go to a hidden temporary name; ``finish`` makes them durable and
    checks them, ``publish`` gives them their final name atomically, ``abort`` drops them."""

    def __init__(self) -> None:
        self.size = 0
        self._digest = hashlib.sha256()

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def write(self, data: bytes) -> None:
        """Append bytes; raises OSError."""
        self._write(data)
        self._digest.update(data)
        self.size += len(data)

    @abstractmethod
    def _write(self, data: bytes) -> None: ...

    @abstractmethod
    def finish(self) -> None:
        """Make the bytes durable and check that they read back as written; raises OSError."""

    @abstractmethod
    def publish(self, name: str) -> None:
        """Give the finished bytes their final ``name``, which must not exist (FileExistsError: a
        file this run did not write is never replaced); raises OSError."""

    @abstractmethod
    def abort(self) -> None:
        """Drop the bytes (never raises)."""


class Appender(ABC):
    """Durable appends to one object (the journal): each ``append`` is on disk when it returns."""

    @abstractmethod
    def append(self, text: str) -> None:
        """Append UTF-8 text durably; raises OSError."""

    @abstractmethod
    def close(self) -> None: ...


class Store(ABC):
    """One output folder. Names are plain file names inside it; methods raise OSError."""

    location: str

    def path(self, name: str) -> str:
        """How messages name ``name``."""
        return f"{self.location.rstrip('/')}/{name}"

    @abstractmethod
    def exists(self) -> bool:
        """Whether the folder itself exists."""

    @abstractmethod
    def is_folder(self) -> bool:
        """Whether the location is a folder (False for a file in its place)."""

    @abstractmethod
    def names(self) -> list[str]:
        """The file names directly in the folder, sorted (none when it does not exist)."""

    @abstractmethod
    def is_file(self, name: str) -> bool: ...

    @abstractmethod
    def size(self, name: str) -> int: ...

    @abstractmethod
    def open_read(self, name: str) -> BinaryIO: ...

    def read_bytes(self, name: str) -> bytes:
        with self.open_read(name) as handle:
            return handle.read()

    def read_text(self, name: str) -> str:
        return self.read_bytes(name).decode("utf-8")

    def read_range(self, name: str, offset: int, length: int) -> bytes:
        """Bytes ``[offset, offset + length)`` of an object; OSError when it holds fewer."""
        with self.open_read(name) as handle:
            handle.seek(offset)
            data = handle.read(length)
        if len(data) != length:
            raise OSError(f"{self.path(name)} holds {offset + len(data)} bytes, {offset + length} expected")
        return data

    def sha256(self, name: str) -> str:
        """SHA-256 of an object's bytes, streamed."""
        digest = hashlib.sha256()
        with self.open_read(name) as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    @abstractmethod
    def write(self, name: str, data: bytes, replace: bool = True) -> None:
        """Write a whole object atomically: ``name`` holds the old bytes or all of the new ones.
        With ``replace=False`` an existing ``name`` is never replaced (FileExistsError)."""

    def write_text(self, name: str, text: str, replace: bool = True) -> None:
        self.write(name, text.encode("utf-8"), replace)

    @abstractmethod
    def writer(self, stem: str) -> ObjectWriter:
        """A streamed object under the hidden name ``temporary_name(stem)`` until it is published."""

    @abstractmethod
    def appender(self, name: str) -> Appender:
        """Durable appends to the log ``name`` (which must exist, written whole first)."""

    def write_log(self, name: str, text: str) -> None:
        """Start the log ``name`` anew with ``text`` (atomically, or so that a crash leaves a prefix)."""
        self.write_text(name, text)

    def read_log(self, name: str) -> str:
        """A log's text: what was written whole, then every append, in order."""
        return self.read_text(name)

    def delete_log(self, name: str) -> None:
        """Remove a log and its appends."""
        self.delete(name)

    @abstractmethod
    def delete(self, name: str) -> None:
        """Remove ``name`` if it is there."""

    def abort_uploads(self, ours: Callable[[str], bool]) -> list[str]:
        """Abort uploads left incomplete in the folder (by a killed run) for names ``ours`` accepts;
        return those names. Only object stores have them."""
        return []

    @abstractmethod
    def lock(self, name: str) -> contextlib.AbstractContextManager[None]:
        """Hold the lock object ``name`` for the run (creating the folder); ConfigError when another
        live run holds it or the folder cannot be used, OutputError when the lock cannot be written.
        A holder that dies releases it."""


#: The extra that installs each protocol's filesystem package.
EXTRAS = {
    "s3": "s3",
    "s3a": "s3",
    "gs": "gcs",
    "gcs": "gcs",
    "az": "azure",
    "abfs": "azure",
    "abfss": "azure",
}


def protocol(location: str) -> str:
    """A URL's protocol (``s3``, ``gs`` ...); ``file`` for a local path."""
    return location.split("://", 1)[0].lower() if is_url(location) else "file"


def filesystem(location: str, options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """The fsspec filesystem of a URL and the path inside it; ConfigError naming the extra to install
    when its package is missing, or for an unknown protocol."""
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(location, **(options or {}))
    except ImportError:
        extra = EXTRAS.get(protocol(location))
        hint = f"pip install 'dcm2tfrec[{extra}]'" if extra else "install its fsspec filesystem package"
        raise ConfigError(
            f"{location}: the {protocol(location)}:// filesystem is not installed; {hint}"
        ) from None
    except ValueError as exc:
        raise ConfigError(f"{location}: {exc}") from None
    return fs, str(path).rstrip("/")


def open_store(location: str, options: dict[str, Any] | None = None) -> Store:
    """The store for an output location: a local folder (a path or ``file://``), or any fsspec URL
    (``s3://``, ``gs://``, ``memory://`` ...) with its storage options."""
    if protocol(location) == "file":
        from .posix import PosixStore

        return PosixStore(location.removeprefix("file://") if is_url(location) else location)
    from .fsspec import FsspecStore

    return FsspecStore(location, options)
