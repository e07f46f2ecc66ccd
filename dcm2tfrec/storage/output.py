"""The output folder's policy: which files dcm2tfrec demonstrably wrote, when a folder may be used,
and what ``--overwrite`` / ``--resume`` remove. A file is ours only when the manifest or journal that
a run left there lists it (with the size it lists), or it is that run's lock or temporary object; a
file that merely looks like ours is kept, and said so.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from ..errors import ConfigError, OutputError
from ..journal import JOURNAL_FORMAT, JOURNAL_NAME, read_journal
from ..manifest import ERRORS_NAME, MANIFEST_NAME, parse_manifest
from ..parts import is_part
from ..shards import INDEX_SUFFIX, SHARD_NAME, SHARD_SUFFIX, shard_prefix
from ..splits import fold_names
from . import PARTIAL_SUFFIX, Store, temporary_name

log = logging.getLogger(__name__)
LOCK_NAME = ".dcm2tfrec.lock"
#: Names a run always writes: one that another program wrote stops ``--overwrite``.
_FIXED = (MANIFEST_NAME, ERRORS_NAME, JOURNAL_NAME)


def looks_ours(name: str) -> bool:
    """Whether a file name has the shape of one dcm2tfrec writes in an output folder."""
    if name.endswith(INDEX_SUFFIX):
        name = name.removesuffix(INDEX_SUFFIX) + SHARD_SUFFIX
    return (
        bool(SHARD_NAME.match(name))
        or name.endswith(PARTIAL_SUFFIX)
        or is_part(name)
        or name in (*_FIXED, LOCK_NAME)
    )


def _prefixes(config: dict[str, Any]) -> set[str]:
    """The shard prefixes of a run, from the ``config`` its manifest or journal recorded."""
    if config.get("split"):
        return {str(name) for name, _ in config["split"]}
    if config.get("folds"):
        return set(fold_names(int(config["folds"])))
    return {str(config.get("prefix", ""))}


def _listed(store: Store, names: set[str], shards: list[dict[str, Any]]) -> set[str]:
    """The listed shards (of the listed size) and their index files that are in the folder."""
    found = set()
    for shard in shards:
        file = shard.get("file")
        if file in names and store.size(file) == shard.get("bytes"):
            found.add(file)
            if shard.get("index") in names:
                found.add(shard["index"])
    return found


def _from_manifest(store: Store, names: set[str]) -> tuple[set[str], set[str]]:
    """What a finished run's manifest proves ours, and that run's prefixes."""
    try:
        manifest = parse_manifest(store.read_text(MANIFEST_NAME), MANIFEST_NAME)
        shards = list(manifest["shards"])
    except (OSError, ValueError, KeyError, TypeError):
        return set(), set()
    ours = {MANIFEST_NAME} | _listed(store, names, shards)
    if manifest.get("errors_report") == ERRORS_NAME and ERRORS_NAME in names:
        ours.add(ERRORS_NAME)
    return ours, _prefixes(manifest.get("config") or {})


def _from_journal(store: Store, names: set[str]) -> tuple[set[str], set[str]]:
    """What an interrupted run's journal proves ours (its shards, and the shards it was writing
    after its last step), and that run's prefixes."""
    try:
        found = read_journal(store)
    except OutputError:  # damaged: the journal itself is ours when its header says so
        head = store.read_log(JOURNAL_NAME).split("\n", 1)[0]
        return ({JOURNAL_NAME} if JOURNAL_FORMAT in head else set()), set()
    if found is None:
        return set(), set()
    fingerprint, steps = found
    prefixes = _prefixes(fingerprint.get("config") or {})
    journaled = [s.shard.to_json() for s in steps if s.shard]
    ours = {JOURNAL_NAME, *(n for n in (ERRORS_NAME, MANIFEST_NAME) if n in names)}
    ours |= {n for n in names if n.startswith(f"{JOURNAL_NAME}.") and n[len(JOURNAL_NAME) + 1 :].isdigit()}
    ours |= {n for n in names if is_part(n)}  # a cluster run's parts, written or being written
    ours |= _listed(store, names, journaled)
    done = {p: sum(1 for s in journaled if shard_prefix(s["file"]) == p) for p in prefixes}
    for name in names:
        shard = name.removesuffix(INDEX_SUFFIX) + SHARD_SUFFIX if name.endswith(INDEX_SUFFIX) else name
        match = SHARD_NAME.match(shard)
        prefix = match.group("prefix") if match else ""
        if match and prefix in done and int(match.group("index")) >= done[prefix]:
            ours.add(name)  # published after the last step, or its index: the run's next shards
    return ours, prefixes


def owned(store: Store) -> set[str]:
    """The names in the folder that dcm2tfrec demonstrably wrote."""
    names = set(store.names())
    ours = {LOCK_NAME} & names
    prefixes: set[str] = set()
    for source, marker in ((_from_manifest, MANIFEST_NAME), (_from_journal, JOURNAL_NAME)):
        if marker in names:
            found, run_prefixes = source(store, names)
            ours |= found
            prefixes |= run_prefixes
    if ours - {LOCK_NAME}:  # a run is proven: its temporary objects are ours too
        stems = "|".join(re.escape(p) for p in sorted(prefixes)) or "(?!)"
        suffixes = f"{re.escape(SHARD_SUFFIX)}|-[0-9]+{re.escape(INDEX_SUFFIX)}"
        temporary = re.compile(rf"^\.(?:{stems})-[0-9]{{5}}(?:{suffixes})")
        fixed = {temporary_name(n) for n in (*_FIXED, *ours)}
        ours |= {n for n in names if n.endswith(PARTIAL_SUFFIX) and (n in fixed or temporary.match(n))}
    return ours


def check_output(store: Store, overwrite: bool, resume: bool) -> None:
    """Refuse an output folder that this run may not use (writes nothing): a non-empty one without
    ``overwrite``; with ``overwrite``, one where a file another program wrote has a name the run must
    write; with ``resume``, a finished run or a folder of other files."""
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
    if overwrite:
        foreign = sorted(set(_FIXED) & set(existing) - owned(store))
        if foreign:
            raise ConfigError(
                f"--overwrite: {', '.join(foreign)} in {store.location} were not written by dcm2tfrec "
                "(no manifest or journal of a run lists them), and this run must write those names: "
                "move them or choose another --out"
            )


def clear_output(store: Store, keep: frozenset[str] = frozenset()) -> list[str]:
    """Remove what earlier dcm2tfrec runs demonstrably wrote, except ``keep`` and the lock; return the
    files that look like ours but were kept because nothing proves it (they are logged)."""
    try:
        ours = owned(store)
        for name in sorted(ours - keep - {LOCK_NAME}):
            store.delete(name)
        aborted = store.abort_uploads(looks_ours)  # a killed run's uploads: this run holds the lock
        if aborted:
            log.info(
                "aborted %d incomplete upload(s) left by a killed run: %s", len(aborted), ", ".join(aborted)
            )
        kept = [n for n in store.names() if looks_ours(n) and n not in ours]
    except OSError as exc:
        raise OutputError(f"cannot clear --out {store.location}: {exc.strerror or exc}") from None
    if kept:
        log.warning(
            "kept %d file(s) in %s that look like dcm2tfrec output but no manifest or journal lists: %s",
            len(kept),
            store.location,
            ", ".join(kept[:10]) + (" ..." if len(kept) > 10 else ""),
        )
    return kept
