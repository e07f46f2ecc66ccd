"""The output folder's policy: which names are ours, when a folder may be used, what is cleared."""

from __future__ import annotations

from ..errors import ConfigError, OutputError
from ..journal import JOURNAL_NAME
from ..manifest import ERRORS_NAME, MANIFEST_NAME
from ..shards import INDEX_SUFFIX, SHARD_NAME, SHARD_SUFFIX
from . import PARTIAL_SUFFIX, Store

LOCK_NAME = ".dcm2tfrec.lock"


def is_ours(name: str) -> bool:
    """Whether a file name is one dcm2tfrec writes in an output folder."""
    if name.endswith(INDEX_SUFFIX):
        name = name.removesuffix(INDEX_SUFFIX) + SHARD_SUFFIX
    return (
        bool(SHARD_NAME.match(name))
        or name.endswith(PARTIAL_SUFFIX)
        or name in (MANIFEST_NAME, ERRORS_NAME, JOURNAL_NAME)
    )


def check_output(store: Store, overwrite: bool, resume: bool) -> None:
    """Refuse an output folder that this run may not use (writes nothing): a non-empty one without
    ``overwrite``; with ``resume``, a finished run or a folder of other files."""
    if store.exists() and not store.is_folder():
        raise ConfigError(f"--out {store.location} exists and is not a folder")
    existing = [name for name in store.names() if name != LOCK_NAME]
    if resume:
        if JOURNAL_NAME in existing or not existing:
            return
        if MANIFEST_NAME in existing:
            raise ConfigError(
                f"--resume: {store.location} holds a finished run ({MANIFEST_NAME}); nothing to resume"
            )
        raise ConfigError(
            f"--resume: {store.location} holds no interrupted dcm2tfrec run (no {JOURNAL_NAME})"
        )
    if existing and not overwrite:
        if JOURNAL_NAME in existing:
            raise ConfigError(
                f"--out {store.location} holds an interrupted run: pass --resume to continue it "
                "(or --overwrite to start again)"
            )
        shown = ", ".join(existing[:5]) + (" ..." if len(existing) > 5 else "")
        raise ConfigError(
            f"--out {store.location} is not empty ({shown}); pass --overwrite to replace a previous output"
        )


def clear_output(store: Store, keep: frozenset[str] = frozenset()) -> None:
    """Remove what an earlier dcm2tfrec run wrote, except ``keep``; other files stay."""
    try:
        for name in store.names():
            if is_ours(name) and name not in keep:
                store.delete(name)
    except OSError as exc:
        raise OutputError(f"cannot clear --out {store.location}: {exc.strerror or exc}") from None
