"""What is inside shards: summaries, record-by-record verification, contact sheets, exports.

Works without TensorFlow: framing and CRCs come from :mod:`shards`, records are parsed by
:func:`records.decode_record`. Images are decoded only when asked (verify, grid, export).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import math
import os
import posixpath
import re
import struct
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .config import MAX_SIDE
from .errors import ConfigError, ShardCorrupt, ShardError
from .manifest import MANIFEST_NAME
from .records import SCHEMA, VOLUME_SCHEMA, check_schema, decode_record, is_volume
from .shards import SHARD_SUFFIX, shard_count
from .sources import FsspecFiles, ShardSet, not_a_shard, resolve
from .storage import protocol
from .storage.posix import PosixStore
from .tfrecord import iter_records, open_records

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
#: The longest exported file name stem; longer ids are cut and given a hash to stay unique.
_NAME_LIMIT = 120
#: ``--head`` shows at most this many characters of a text feature and values of a list.
_SHOWN_CHARS, _SHOWN_VALUES = 40, 4


@dataclass
class ShardReport:
    """The facts about one shard; ``problems`` lists damage and mismatches (empty = good)."""

    file: str
    path: str
    records: int = 0
    bytes: int = 0
    sha256: str = ""
    features: dict[str, str] = field(default_factory=dict)
    images: dict[str, int] = field(default_factory=dict)
    targets: dict[str, int] = field(default_factory=dict)
    manifest: dict[str, bool] | None = None
    pixel_range: list[int] | None = None
    head: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class InspectReport:
    """Every shard's report, the totals, and whether everything checked out."""

    shards: list[ShardReport]
    verified: bool
    missing: list[str] = field(default_factory=list)
    #: Problems outside any one shard (an unreadable manifest, a shard name that is no file).
    problems: list[str] = field(default_factory=list)
    #: The class names of the targets (``{name: id}``), from the manifest of the run, if it had one.
    class_map: dict[str, int] | None = None
    #: The manifests among the paths, each with its shard and record counts.
    manifests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.problems and all(not s.problems for s in self.shards)

    def totals(self) -> dict[str, Any]:
        targets: Counter[str] = Counter()
        for s in self.shards:
            targets.update(s.targets)
        return {
            "shards": len(self.shards),
            "records": sum(s.records for s in self.shards),
            "bytes": sum(s.bytes for s in self.shards),
            "targets": dict(sorted(targets.items(), key=lambda kv: _target_order(kv[0]))),
            "problems": sum(len(s.problems) for s in self.shards) + len(self.missing) + len(self.problems),
        }

    def rename(self, folders: dict[str, str]) -> None:
        """Name local copies by the URLs they came from (``{local folder: URL}``)."""

        def named(text: str) -> str:
            for folder, url in folders.items():
                text = text.replace(folder, url)
            return text

        for shard in self.shards:
            shard.path, shard.problems = named(shard.path), [named(p) for p in shard.problems]
        for manifest in self.manifests:
            manifest["path"] = named(manifest["path"])
        self.missing, self.problems = [named(m) for m in self.missing], [named(p) for p in self.problems]

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "verified": self.verified,
            "totals": self.totals(),
            "missing": self.missing,
            "problems": self.problems,
            "class_map": self.class_map,
            "manifests": self.manifests,
            "shards": [asdict(s) for s in self.shards],
        }


def _target_order(key: str) -> tuple[int, int | str]:
    """Integer targets in numeric order, anything else (a missing target) after them."""
    return (0, int(key)) if key.lstrip("-").isdigit() else (1, key)


def _shard_sets(paths: list[str], problems: list[str] | None = None) -> list[ShardSet]:
    """What each path names: files, folders (their ``*.tfrec``), manifests or globs. A manifest that
    cannot be read is a problem (added to ``problems``), and its folder is inspected without it."""
    sets = []
    for text in paths:
        if not os.path.exists(text) and not set("*?[") & set(text):
            raise ConfigError(f"{text}: no such shard, folder or glob match")
        if os.path.exists(text) and not (os.path.isfile(text) or os.path.isdir(text)):
            raise ConfigError(f"{text} is not a regular file or a folder (a FIFO or device?); not read")
        problem = not_a_shard(text)
        if problem:
            raise ConfigError(problem)
        try:
            sets.append(resolve(text, listed=False))
        except ShardError as exc:
            if problems is None or text.endswith(".json"):
                raise ConfigError(str(exc)) from None
            problems.append(str(exc))
            sets.append(resolve(text, listed=False, use_manifest=False))
    return sets


def find_shards(paths: list[str]) -> list[Path]:
    """Shard files named by ``paths``: files, folders (their ``*.tfrec``), manifests or globs."""
    files = dict.fromkeys(Path(f) for shards in _shard_sets(paths, []) for f in shards.files)
    return [path for path in files if path.is_file()]


def png_info(data: bytes) -> tuple[int, int, int, str] | None:
    """(width, height, channels, dtype) from a PNG's header, or None if it is not a PNG."""
    if len(data) < 26 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    depth, colour = data[24], data[25]
    return width, height, _PNG_CHANNELS.get(colour, 0), "uint16" if depth == 16 else "uint8"


def jpeg_info(data: bytes) -> tuple[int, int, int, str] | None:
    """(width, height, channels, dtype) from a baseline or progressive JPEG's frame header, or None."""
    if not data.startswith(b"\xff\xd8"):
        return None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker, length = data[pos + 1], struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2) and pos + 10 <= len(data):
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height, data[pos + 9], "uint8"
        pos += 2 + length
    return None


def image_info(data: bytes) -> tuple[int, int, int, str] | None:
    """(width, height, channels, dtype) of a stored image: PNG or JPEG (``--format``)."""
    return png_info(data) or jpeg_info(data)


def decode_png(data: bytes) -> np.ndarray | None:
    """Decode stored image bytes (PNG or JPEG) to (H, W, C) in RGB order, or None if they do not
    decode or declare more than dcm2tfrec ever writes (a side over MAX_SIDE): nothing is allocated
    for those."""
    info = image_info(data)
    if info is None or not (0 < info[0] <= MAX_SIDE and 0 < info[1] <= MAX_SIDE and 0 < info[2] <= 4):
        return None
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        return None
    if img.ndim == 2:
        return img[:, :, np.newaxis]
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if img.shape[2] == 3 else img


def _value(
    features: Mapping[str, tuple[str, Sequence[Any]]], name: str, kind: str, default: Any = None
) -> Any:
    """The single value of feature ``name`` when it has ``kind``, else ``default``."""
    entry = features.get(name)
    return entry[1][0] if entry and entry[0] == kind and len(entry[1]) == 1 else default


def _check_record(
    features: dict[str, Any], verify: bool, pixel_range: list[int], schema: dict[str, Any] | None
) -> tuple[str, list[str]]:
    """The record's image key (``HxWxC dtype``) and its problems (against the manifest's schema
    when there is one)."""
    volume = _is_volume(features)
    problems = check_schema(features, schema or (VOLUME_SCHEMA if volume else None))
    declared = tuple(int(_value(features, k, "int64", -1)) for k in ("height", "width", "channels"))
    if not volume:
        key, more = _check_png(
            _value(features, "image", "bytes", b""), "image", declared, verify, pixel_range
        )
        return key, problems + more
    slices = features["frames"][1] if features["frames"][0] == "bytes" else []
    keys = []
    for index, png in enumerate(slices):
        key, more = _check_png(png, f"frame {index}", declared, verify, pixel_range)
        keys.append(key)
        problems += more
    shown = keys[0] if keys and len(set(keys)) == 1 else "mixed" if keys else "no frames"
    return f"{len(slices)}x{shown}", problems


def _is_volume(features: Mapping[str, Any]) -> bool:
    """Whether a record is a volume (``--volume``): slices in ``frames``, no ``image``."""
    return is_volume(features)


def _check_png(
    png: Any, name: str, declared: tuple[int, ...], verify: bool, pixel_range: list[int]
) -> tuple[str, list[str]]:
    """An image's key (``HxWxC dtype``) and its problems against the declared shape."""
    info = image_info(png) if isinstance(png, bytes) else None
    if info is None:
        return "not a PNG", [f"{name} is not a PNG or JPEG"]
    width, height, channels, dtype = info
    problems = []
    if (height, width, channels) != declared:
        problems.append(f"PNG is {height}x{width}x{channels}, features say {'x'.join(map(str, declared))}")
    elif verify:
        img = decode_png(png)
        if img is None:
            too_big = max(height, width) > MAX_SIDE
            problems.append(
                f"PNG of {height}x{width} is larger than dcm2tfrec writes"
                if too_big
                else "PNG does not decode"
            )
        else:
            pixel_range[0] = min(pixel_range[0], int(img.min()))
            pixel_range[1] = max(pixel_range[1], int(img.max()))
    return f"{height}x{width}x{channels} {dtype}", problems


def _shown(kind: str, values: Sequence[Any]) -> Any:
    """A feature's value as ``--head`` shows it: a number, text (cut), ``PNG HxWxC`` or a short list."""

    def one(value: Any) -> Any:
        if kind != "bytes":
            return value
        info = image_info(value)
        if info:
            codec = "PNG" if value.startswith(_PNG_SIGNATURE) else "JPEG"
            return f"{codec} {info[1]}x{info[0]}x{info[2]} {info[3]}"
        text = value.decode("utf-8", "replace")
        return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."

    if len(values) == 1:
        return one(values[0])
    return [one(v) for v in values[:_SHOWN_VALUES]] + (["..."] if len(values) > _SHOWN_VALUES else [])


def _summary_of(features: dict[str, Any]) -> tuple[str, Any]:
    """A record's id (text) and target (int, or None when it has none of the right kind)."""
    image_id = _value(features, "image_id", "bytes", b"")
    return image_id.decode("utf-8", "replace"), _value(features, "target", "int64")


def inspect_shard(
    path: Path,
    entry: dict[str, Any] | None,
    *,
    verify: bool = False,
    head: int = 0,
    schema: dict[str, Any] | None = None,
) -> ShardReport:
    """Read one shard record by record (CRCs always checked) and report what it holds; every kind
    of damage is a problem of the report, never an exception."""
    report = ShardReport(file=path.name, path=str(path))
    if not path.is_file():
        report.problems.append(f"{path} is not a regular file (a FIFO or device?); not read")
        return report
    kinds: dict[str, str] = {}
    images: Counter[str] = Counter()
    targets: Counter[str] = Counter()
    pixel_range = [2**31, -1]
    store = PosixStore(str(path.parent))
    try:
        report.sha256, report.bytes = store.sha256(path.name), store.size(path.name)
        with open_records(str(path)) as handle:
            for index, (offset, data) in enumerate(iter_records(handle, str(path))):
                report.records += 1
                try:
                    features = decode_record(data)
                except (ValueError, UnicodeDecodeError, struct.error) as exc:
                    report.problems.append(f"record {index} at byte {offset}: not a valid Example ({exc})")
                    continue
                kinds.update({name: kind for name, (kind, _) in features.items()})
                key, problems = _check_record(features, verify, pixel_range, schema)
                images[key] += 1
                image_id, target = _summary_of(features)
                if target is not None:
                    targets[str(target)] += 1
                report.problems += [f"record {index} at byte {offset}: {p}" for p in problems]
                if index < head:
                    fixed = {*VOLUME_SCHEMA} - {"spacing"} if _is_volume(features) else {*SCHEMA}
                    extras = {name: _shown(*value) for name, value in features.items() if name not in fixed}
                    shown = {"index": index, "image_id": image_id, "target": target, "image": key}
                    report.head.append({**shown, "features": extras})
    except (ShardCorrupt, OSError) as exc:
        report.problems.append(str(exc))
    report.features = dict(sorted(kinds.items()))
    report.images = dict(images)
    report.targets = dict(sorted(targets.items(), key=lambda kv: _target_order(kv[0])))
    if verify and report.records:
        report.pixel_range = pixel_range
    count = shard_count(path.name)
    if count is not None and count != report.records:
        report.problems.append(f"the name says {count} records, the shard holds {report.records}")
    if entry is not None:
        report.manifest = {
            "listed": True,
            "records": entry.get("records") == report.records,
            "bytes": entry.get("bytes") == report.bytes,
            "sha256": entry.get("sha256") == report.sha256,
        }
        report.problems += [
            f"{k} differ from the manifest" for k in ("records", "bytes", "sha256") if not report.manifest[k]
        ]
    return report


def _checked_schema(manifest: dict[str, Any] | None) -> dict[str, Any] | None:
    """The fixed features a manifest's run wrote (no ``target`` for a run without targets)."""
    schema = (manifest or {}).get("schema")
    if not isinstance(schema, dict):
        return None
    fixed = VOLUME_SCHEMA if is_volume(schema) else SCHEMA
    return {name: kind for name, kind in fixed.items() if name in schema}


def inspect_paths(paths: list[str], *, verify: bool = False, head: int = 0) -> InspectReport:
    """Inspect every shard named by ``paths``; a manifest next to a shard is checked against it."""
    reports, missing, seen, problems = [], [], set(), []  # type: ignore[var-annotated]
    class_map: dict[str, int] | None = None
    manifests = []
    sets = _shard_sets(paths, problems)
    for text, shards in zip(paths, sets, strict=True):
        if class_map is None and isinstance((shards.manifest or {}).get("class_map"), dict):
            class_map = (shards.manifest or {})["class_map"]
        if text.endswith(".json") and shards.manifest is not None:
            listed = shards.manifest.get("totals", {})
            manifests.append({"path": text, "shards": len(shards.files), "records": listed.get("records")})
        for file in shards.files:
            path = Path(file)
            if path in seen:
                continue
            seen.add(path)
            schema = _checked_schema(shards.manifest) if shards.entry(file) else None
            report = inspect_shard(path, shards.entry(file), verify=verify, head=head, schema=schema)
            if shards.governs(file) and shards.entry(file) is None:
                report.manifest = {"listed": False}
                report.problems.append(f"not listed in {path.parent / MANIFEST_NAME}")
            reports.append(report)
        missing += [m for m in shards.listed_missing() if m not in missing]
    return InspectReport(reports, verify, missing, problems, class_map, manifests)


@contextlib.contextmanager
def localized(
    paths: list[str], options: dict[str, Any] | None = None
) -> Iterator[tuple[list[str], dict[str, str]]]:
    """The paths with every URL (``s3://`` ...: a folder, a manifest or a shard) copied into a
    temporary folder with its folder's manifest, so that inspect reads local files; yields the local
    paths and each local folder's URL. Nothing is verified on the way: the report says what is wrong."""
    with tempfile.TemporaryDirectory(prefix="dcm2tfrec-inspect-") as work:
        local, urls = [], {}
        for number, text in enumerate(paths):
            if protocol(text) == "file":
                local.append(text)
                continue
            files = FsspecFiles(protocol(text), options)
            folder = os.path.join(work, str(number))
            os.makedirs(folder)
            base = text.rstrip("/") if files.isdir(text) else posixpath.dirname(text)
            urls[folder] = base
            names = {posixpath.basename(u) for u in files.glob(posixpath.join(base, f"*{SHARD_SUFFIX}"))}
            for name in sorted(names | {MANIFEST_NAME}):
                if files.exists(posixpath.join(base, name)):
                    files.download(posixpath.join(base, name), os.path.join(folder, name), None)
            local.append(
                folder if base == text.rstrip("/") else os.path.join(folder, posixpath.basename(text))
            )
        yield local, urls


def iter_images(shards: list[Path], limit: int) -> Iterator[tuple[str, int | None, list[bytes], bool]]:
    """The first ``limit`` readable records' (image_id, target, PNG bytes: the image or a volume's
    slices, whether it is a volume) across ``shards``; a damaged shard or record is skipped
    (inspect's report names it)."""
    count = 0
    for path in shards:
        try:
            with open_records(str(path)) as handle:
                for _, data in iter_records(handle, str(path)):
                    if count >= limit:
                        return
                    try:
                        features = decode_record(data)
                    except (ValueError, UnicodeDecodeError, struct.error):
                        continue
                    image_id, target = _summary_of(features)
                    if _is_volume(features):
                        slices = [p for p in features["frames"][1] if isinstance(p, bytes)]
                        yield image_id, target, slices, True
                    else:
                        yield image_id, target, [_value(features, "image", "bytes", b"")], False
                    count += 1
        except (ShardCorrupt, OSError):
            continue


def _display(img: np.ndarray) -> np.ndarray:
    """Any decoded record image -> 3-channel uint8 for a contact sheet (16-bit: min-max)."""
    if img.dtype != np.uint8:
        lo, hi = float(img.min()), float(img.max())
        img = (
            np.zeros(img.shape, np.uint8)
            if hi <= lo
            else np.rint((img - lo) / (hi - lo) * 255).astype(np.uint8)
        )
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3])


def _target_text(target: int | None, names: Mapping[int, str]) -> str:
    """``1 (malignant)``, ``1`` without a name, ``-`` for no target."""
    if target is None:
        return "-"
    return f"{target} ({names[target]})" if target in names else str(target)


def caption_text(image_id: str, target: int | None, names: Mapping[int, str], readable: bool) -> str:
    """A contact sheet tile's caption: ``id | 1 (malignant)``, or ``id | UNREADABLE``."""
    return f"{image_id} | {_target_text(target, names) if readable else 'UNREADABLE'}"


def contact_sheet(
    items: list[tuple[str, int | None, bytes]], tile: int = 192, names: Mapping[int, str] | None = None
) -> np.ndarray:
    """An RGB grid of the images, each captioned with its id and target (and class name)."""
    cols = max(1, math.ceil(math.sqrt(len(items))))
    rows = max(1, math.ceil(len(items) / cols))
    caption = 22
    sheet = np.zeros((rows * (tile + caption), cols * tile, 3), np.uint8)
    for n, (image_id, target, png) in enumerate(items):
        y, x = (n // cols) * (tile + caption), (n % cols) * tile
        img = decode_png(png)
        if img is not None:
            shown = _display(img)
            scale = min(tile / shown.shape[1], tile / shown.shape[0])
            w, h = max(1, round(shown.shape[1] * scale)), max(1, round(shown.shape[0] * scale))
            shown = cv2.resize(
                shown, (w, h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST
            )
            oy, ox = (tile - h) // 2, (tile - w) // 2
            sheet[y + oy : y + oy + h, x + ox : x + ox + w] = shown
        cv2.putText(
            sheet,
            caption_text(image_id, target, names or {}, img is not None)[: max(28, tile // 7)],
            (x + 4, y + tile + 16),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            (255, 255, 0),
            1,
            cv2.LINE_AA,
        )
    return sheet


def write_grid(shards: list[Path], out: Path, limit: int, class_map: dict[str, int] | None = None) -> int:
    """Write a contact sheet of the first ``limit`` images (a volume: its middle slice) to ``out``
    (a .png file), captioned with class names when ``class_map`` (``{name: id}``) is given; return
    how many."""
    if out.suffix.lower() != ".png":
        raise ConfigError(f"--grid {out}: name a .png file")
    if out.is_dir():
        raise ConfigError(f"--grid {out} is a folder; name a .png file")
    items = [(i, t, pngs[len(pngs) // 2] if pngs else b"") for i, t, pngs, _ in iter_images(shards, limit)]
    sheet = contact_sheet(items, names=_names(class_map))
    _, data = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    try:
        out.write_bytes(data.tobytes())
    except OSError as exc:
        raise ConfigError(f"cannot write --grid {out}: {exc.strerror or exc}") from None
    return len(items)


def safe_name(image_id: str, taken: set[str]) -> str:
    """A file name for an id: unsafe characters become '_', a long id is cut (with a hash of it, so
    ids stay apart), and clashes get a numeric suffix."""
    base = _UNSAFE.sub("_", image_id).strip(".") or "image"
    if len(base) > _NAME_LIMIT:
        base = f"{base[: _NAME_LIMIT - 13]}~{hashlib.sha256(image_id.encode()).hexdigest()[:12]}"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}~{n}"
    taken.add(name)
    return name


def _names(class_map: dict[str, int] | None) -> dict[int, str]:
    return {v: k for k, v in (class_map or {}).items()}


def export_images(shards: list[Path], out: Path, limit: int, class_map: dict[str, int] | None = None) -> int:
    """Write the first ``limit`` images as PNG files named by id (the stored bytes; a volume: a
    folder of its slices ``0000.png`` ...), plus labels.csv
    (with a ``class_name`` column when ``class_map`` is given), into a new or empty folder (a folder
    with files in it is refused: nothing is overwritten)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--export {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"--export {out} is not empty; name a new or empty folder")
    taken: set[str] = {"labels"}
    rows = []
    names = _names(class_map)
    try:
        out.mkdir(parents=True, exist_ok=True)
        for image_id, target, pngs, volume in iter_images(shards, limit):
            stem = safe_name(image_id, taken)
            if volume:  # a folder of the slices, numbered in slice order
                name = stem
                (out / stem).mkdir()
                for index, png in enumerate(pngs):
                    with open(out / stem / f"{index:04d}.png", "xb") as handle:
                        handle.write(png)
            else:
                name = stem + ".png"
                with open(out / name, "xb") as handle:
                    handle.write(pngs[0])
            row = [image_id, "" if target is None else target, name]
            named = names.get(target, "") if target is not None else ""
            rows.append([*row, named] if class_map else row)
        with open(out / "labels.csv", "x", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["image_id", "target", "file", *(["class_name"] if class_map else [])])
            writer.writerows(rows)
    except OSError as exc:
        raise ConfigError(f"cannot write --export {out}: {exc.strerror or exc}") from None
    return len(rows)


def format_report(report: InspectReport) -> str:
    """The human-readable summary."""
    from .report import target_counts

    listed = report.manifests
    lines = [f"manifest {m['path']}: {m['shards']} shard(s), {m['records']} records" for m in listed]
    names = _names(report.class_map)
    for s in report.shards:
        manifest = (
            "no manifest"
            if s.manifest is None
            else ("manifest ok" if all(s.manifest.values()) else "MANIFEST MISMATCH")
        )
        lines.append(f"{s.file}  {s.records} records  {s.bytes} bytes  sha256 {s.sha256[:12]}  {manifest}")
        lines.append("  features  " + "  ".join(f"{k}:{v}" for k, v in s.features.items()))
        images = ", ".join(f"{k} ({n})" for k, n in s.images.items())
        if s.pixel_range:
            images += f"; pixel values {s.pixel_range[0]}..{s.pixel_range[1]}"
        lines.append(f"  images    {images or '-'}")
        lines.append(f"  targets   {target_counts(s.targets, report.class_map)}")
        for h in s.head:
            extras = "".join(f"  {k}={v}" for k, v in h["features"].items())
            target = _target_text(h["target"], names)
            lines.append(f"  #{h['index']:<5} id={h['image_id']}  target={target}  {h['image']}{extras}")
        lines += [f"  PROBLEM   {p}" for p in s.problems]
    lines += [f"MISSING   {m} is listed in the manifest but absent" for m in report.missing]
    lines += [f"PROBLEM   {p}" for p in report.problems]
    t = report.totals()
    verdict = "all checks passed" if report.ok else f"{t['problems']} PROBLEM(S)"
    checked = "CRCs, schema, PNG headers" + (", every PNG decoded" if report.verified else "")
    targets = target_counts(t["targets"], report.class_map)
    lines.append(
        f"TOTAL  {t['records']} records in {t['shards']} shard(s), {t['bytes']} bytes; targets {targets}"
    )
    lines.append(f"       checked {checked}: {verdict}")
    return "\n".join(lines)
