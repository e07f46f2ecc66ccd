"""One resolver from a source (an output folder, a manifest, a glob, shard files) to its shards,
with the manifest's facts about each, for the reader and for ``inspect``. TensorFlow-free: the
caller passes the file system to list and read with (local by default).
"""

from __future__ import annotations

import glob
import hashlib
import os
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .config import Window
from .errors import ConfigError, ShardError
from .manifest import MANIFEST_NAME, parse_manifest
from .shards import INDEX_SUFFIX, SHARD_SUFFIX, shard_count

Source = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
_GLOB_CHARS = frozenset("*?[")


class Files(Protocol):
    """The little a resolver needs of a file system."""

    def isdir(self, path: str) -> bool: ...

    def exists(self, path: str) -> bool: ...

    def glob(self, pattern: str) -> list[str]: ...

    def read_text(self, path: str) -> str: ...


class LocalFiles:
    """The local file system."""

    def isdir(self, path: str) -> bool:
        return os.path.isdir(path)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def glob(self, pattern: str) -> list[str]:
        return glob.glob(pattern)

    def read_text(self, path: str) -> str:
        with open(path, encoding="utf-8") as handle:
            return handle.read()


LOCAL = LocalFiles()


@dataclass(frozen=True)
class ShardSet:
    """Shard files to read, their record counts, sizes and SHA-256 (None when unknown), and the
    manifest of their folder, if any, with that folder."""

    files: list[str]
    counts: list[int | None]
    sizes: list[int | None]
    sha256: list[str | None]
    manifest: dict[str, Any] | None = None
    folder: str | None = None
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def records(self) -> int | None:
        return None if any(c is None for c in self.counts) else sum(c or 0 for c in self.counts)

    def subset(self, keep: Sequence[int]) -> ShardSet:
        """The shards at positions ``keep``, with the same manifest."""
        return ShardSet(
            [self.files[i] for i in keep],
            [self.counts[i] for i in keep],
            [self.sizes[i] for i in keep],
            [self.sha256[i] for i in keep],
            self.manifest,
            self.folder,
            self.entries,
        )

    def governs(self, path: str) -> bool:
        """Whether ``path`` lies in the manifest's folder (so the manifest should list it)."""
        return self.folder is not None and posixpath.dirname(path) == self.folder

    def entry(self, path: str) -> dict[str, Any] | None:
        """The manifest's entry for the shard at ``path``, if it lists it."""
        return self.entries.get(posixpath.basename(path)) if self.governs(path) else None

    def listed_missing(self, files: Files = LOCAL) -> list[str]:
        """Shards the manifest lists that are not in its folder."""
        if self.folder is None:
            return []
        return [
            posixpath.join(self.folder, n)
            for n in self.entries
            if not files.exists(posixpath.join(self.folder, n))
        ]


def read_manifest(path: str, files: Files = LOCAL) -> dict[str, Any]:
    """A manifest from its file; ShardError when it is not one or lists a shard outside its folder."""
    try:
        manifest = parse_manifest(files.read_text(path), path)
        names = [entry["file"] for entry in manifest["shards"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ShardError(f"{path}: not a readable dcm2tfrec manifest ({exc})") from None
    outside = [
        n for n in names if not isinstance(n, str) or posixpath.basename(n) != n or n in ("", ".", "..")
    ]
    if outside:
        raise ShardError(f"{path} lists {outside[0]!r}, which is not a shard inside its folder")
    return manifest


def not_a_shard(path: str) -> str | None:
    """Why ``path``, a file a run writes next to its shards, is no shard (None for any other name)."""
    from .journal import JOURNAL_NAME
    from .manifest import ERRORS_NAME
    from .storage.output import LOCK_NAME

    name = posixpath.basename(path.rstrip("/"))
    kinds = {
        ERRORS_NAME: "the errors report (a CSV of the rejected rows)",
        JOURNAL_NAME: "the journal of an interrupted run (convert --resume finishes it)",
        LOCK_NAME: "the lock of a run",
    }
    kind = kinds.get(name) or ("a shard's index file" if name.endswith(INDEX_SUFFIX) else None)
    if kind is None:
        return None
    folder = posixpath.dirname(path) or "."
    return f"{path} is {kind}, not a shard: name its folder {folder}, the manifest or the .tfrec files"


def _files_of(text: str, files: Files, listed: bool, use_manifest: bool) -> tuple[list[str], str | None]:
    """The shard files a path names, and the manifest file it names or holds."""
    problem = not_a_shard(text)
    if problem:
        raise ShardError(problem)
    if text.endswith(".json") and use_manifest:
        folder = posixpath.dirname(text)
        return [posixpath.join(folder, s["file"]) for s in read_manifest(text, files)["shards"]], text
    if files.isdir(text):
        candidate = posixpath.join(text, MANIFEST_NAME)
        manifest = candidate if use_manifest and files.exists(candidate) else None
        if manifest and listed:
            return [
                posixpath.join(text, s["file"]) for s in read_manifest(manifest, files)["shards"]
            ], manifest
        return sorted(files.glob(posixpath.join(text, f"*{SHARD_SUFFIX}"))), manifest
    if _GLOB_CHARS & set(text):
        return sorted(files.glob(text)), None
    return [text], None


def resolve(source: Source, files: Files = LOCAL, listed: bool = True, use_manifest: bool = True) -> ShardSet:
    """Turn an output folder, a manifest path, a glob or a list of shard files into a ShardSet.

    A folder gives the shards its manifest lists (``listed``) or every ``*.tfrec`` in it; a
    manifest next to the files is found (unless not ``use_manifest``) and its size, SHA-256 and
    count of each shard attached.
    """
    manifest_path = None
    if isinstance(source, (str, os.PathLike)):
        paths, manifest_path = _files_of(os.fspath(source), files, listed, use_manifest)
    else:
        paths = [os.fspath(f) for f in source]
    if not paths:
        raise ShardError(f"no shard files found in {source!r}")
    if manifest_path is None and use_manifest and len({posixpath.dirname(p) for p in paths}) == 1:
        candidate = posixpath.join(posixpath.dirname(paths[0]), MANIFEST_NAME)
        manifest_path = candidate if files.exists(candidate) else None
    manifest = read_manifest(manifest_path, files) if manifest_path else None
    shards = ShardSet(
        paths,
        [],
        [],
        [],
        manifest,
        posixpath.dirname(manifest_path) if manifest_path else None,
        {s["file"]: s for s in (manifest or {}).get("shards", [])},
    )
    for path in paths:
        entry = shards.entry(path)
        shards.counts.append(entry["records"] if entry else shard_count(posixpath.basename(path)))
        shards.sizes.append(entry["bytes"] if entry else None)
        shards.sha256.append(entry["sha256"] if entry else None)
    return shards


class FsspecFiles:
    """Any fsspec filesystem (``s3://``, ``memory://`` ...) for the resolver; paths stay URLs."""

    def __init__(self, protocol: str, options: dict[str, Any] | None = None) -> None:
        import fsspec

        self.protocol = protocol
        self.fs = fsspec.filesystem(protocol, **(options or {}))

    def _url(self, path: str) -> str:
        return path if "://" in path else f"{self.protocol}://{path.lstrip('/')}"

    def _path(self, url: str) -> str:
        return url.split("://", 1)[-1]

    def isdir(self, path: str) -> bool:
        return bool(self.fs.isdir(self._path(path)))

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(self._path(path)))

    def glob(self, pattern: str) -> list[str]:
        return [self._url(p) for p in self.fs.glob(self._path(pattern))]

    def read_text(self, path: str) -> str:
        return str(self.fs.cat_file(self._path(path)).decode("utf-8"))

    def download(self, url: str, local: str, sha256: str | None) -> None:
        """Copy ``url`` to ``local`` through a temporary name, checking its SHA-256 on the way when
        one is given (ShardError on a mismatch: the cache never holds a wrong shard)."""
        digest, partial = hashlib.sha256(), f"{local}.partial"
        with self.fs.open(self._path(url), "rb") as source, open(partial, "wb") as target:
            while chunk := source.read(1 << 22):
                digest.update(chunk)
                target.write(chunk)
        if sha256 is not None and digest.hexdigest() != sha256:
            os.unlink(partial)
            raise ShardError(f"{url}: SHA-256 differs from the manifest (damaged or replaced)")
        os.replace(partial, local)


def cache_folder(source: str, cache_dir: str | None = None) -> str:
    """The local folder that caches a remote output folder's shards."""
    base = cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "dcm2tfrec")
    return os.path.join(base, hashlib.sha256(source.encode()).hexdigest()[:16])


def cached(shards: ShardSet, files: FsspecFiles, folder: str) -> ShardSet:
    """The same shards as local files in ``folder``: each is downloaded once, verified against the
    manifest's SHA-256 as it arrives, and reused while its size is the manifest's."""
    os.makedirs(folder, exist_ok=True)
    local = []
    for url, size, sha in zip(shards.files, shards.sizes, shards.sha256, strict=True):
        path = os.path.join(folder, posixpath.basename(url))
        if not (os.path.isfile(path) and size is not None and os.path.getsize(path) == size):
            files.download(url, path, sha)
        local.append(path)
    return ShardSet(
        local,
        shards.counts,
        shards.sizes,
        shards.sha256,
        shards.manifest,
        folder if shards.folder else None,
        shards.entries,
    )


def select(
    shards: ShardSet, split: str | Sequence[str] | None, exclude: str | Sequence[str] | None
) -> ShardSet:
    """The files of some splits or folds (``split="val"``, ``split="fold3"``), or of all but some
    (``exclude="fold3"``: the other folds), as the manifest lists them."""
    if split is None and exclude is None:
        return shards
    parts: dict[str, Any] = ((shards.manifest or {}).get("splits") or {}).get("parts", {})
    if not parts:
        raise ShardError("these shards were converted without --split / --folds")
    wanted = [split] if isinstance(split, str) else list(split or parts)
    dropped = [exclude] if isinstance(exclude, str) else list(exclude or [])
    unknown = sorted(set(wanted + dropped) - set(parts))
    if unknown:
        raise ShardError(f"no split or fold {', '.join(unknown)}; the manifest has {', '.join(parts)}")
    names = {f for name in wanted if name not in dropped for f in parts[name]["shards"]}
    return shards.subset([i for i, f in enumerate(shards.files) if posixpath.basename(f) in names])


def shard_files(shards: ShardSet, num_shards: int, index: int) -> ShardSet:
    """File-level sharding for multi-worker training: every ``num_shards``-th file from ``index``."""
    if num_shards < 1 or not 0 <= index < num_shards:
        raise ShardError(f"need 0 <= index < num_shards, got index={index}, num_shards={num_shards}")
    if len(shards.files) < num_shards:
        raise ShardError(
            f"{len(shards.files)} shard file(s) cannot be split across {num_shards} workers; "
            "convert with a smaller --records-per-shard"
        )
    return shards.subset(range(index, len(shards.files), num_shards))


def image_config(manifest: dict[str, Any] | None) -> dict[str, Any]:
    """The image options a manifest's run was converted with (``config.image``)."""
    return (manifest or {}).get("config", {}).get("image", {})


WindowArg = str | tuple[float, float] | Sequence[tuple[float, float]] | None


def read_windows(window: WindowArg, manifest: dict[str, Any] | None) -> list[tuple[float, float]] | None:
    """The read-time windows: one (C, W), several (one channel each), or the manifest's."""
    if window is None:
        return None
    if window != "manifest":
        if isinstance(window, str):
            raise ValueError(f"window must be (center, width), a list of them, or 'manifest', not {window!r}")
        pairs: list[Any] = [window] if isinstance(window[0], (int, float)) else list(window)
        return [(float(pair[0]), float(pair[1])) for pair in pairs]
    image = image_config(manifest)
    texts = [str(t) for t in image.get("channel_windows") or [image.get("window", "")]]
    found = []
    for text in texts:
        try:
            recorded = Window.parse(text)
        except ConfigError:
            recorded = Window()
        if recorded.center is None or recorded.width is None:
            raise ShardError(f"the manifest records no fixed window (window={text!r}); pass window=(C, W)")
        found.append((recorded.center, recorded.width))
    return found


def linear_window(center: float, width: float) -> tuple[float, float]:
    """DICOM's LINEAR window as ``(low, span)``: a value ``v`` shows at ``(v - low) / span + 0.5``,
    clipped to [0, 1] (the one formula of the TensorFlow and the PyTorch readers)."""
    return center - 0.5, max(width - 1.0, 1e-6)
