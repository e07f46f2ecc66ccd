"""The record schema (the one home for it) and TF-free, deterministic Example serialization.

A record is a ``tf.train.Example`` whose features are listed in :data:`SCHEMA`. ``image`` and
``target`` are named exactly as in the usual Kaggle tutorial, so its reader works unchanged.
Serialization writes the protobuf wire format directly, features sorted by name, so workers
never import TensorFlow and equal records give equal bytes; a test checks that TensorFlow parses
them into messages equal to the ones its own serializer builds.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from .errors import ConfigError

FeatureKind = Literal["bytes", "int64", "float"]

#: Feature name -> kind; every record carries every one of these, each with a single value.
SCHEMA: dict[str, FeatureKind] = {
    "image": "bytes",
    "target": "int64",
    "image_id": "bytes",
    "height": "int64",
    "width": "int64",
    "channels": "int64",
}

#: The fixed features of a volume record (``--volume``): ``frames`` holds one PNG per slice, in
#: slice order (``depth`` of them), ``spacing`` the slice, row and column spacing in mm.
VOLUME_SCHEMA: dict[str, FeatureKind] = {
    "frames": "bytes",
    "target": "int64",
    "image_id": "bytes",
    "depth": "int64",
    "height": "int64",
    "width": "int64",
    "channels": "int64",
    "spacing": "float",
}
#: A volume record's features holding more than one value: how many (a number, or the feature that
#: says); its ``mask`` holds one PNG per slice.
LIST_FEATURES: dict[str, int | str] = {"frames": "depth", "spacing": 3, "mask": "depth"}


def is_volume(names: Iterable[str]) -> bool:
    """Whether a record (its feature names) or a run's schema is a volume's: ``frames``, no ``image``."""
    present = set(names)
    return "frames" in present and "image" not in present


def list_count(name: str, volume: bool) -> int | str:
    """How many values feature ``name`` holds: 1, 4 for ``crop``, or (in a volume record) what
    :data:`LIST_FEATURES` says."""
    if name == CROP:
        return 4
    return LIST_FEATURES.get(name, 1) if volume else 1


FeatureValue = bytes | int | float
#: The mask feature (``--mask-col``): PNG, uint8, one channel, the image's height and width.
MASK = "mask"
#: The frame's 0-based index in its file (``--frames`` first, middle or all).
FRAME = "frame"
#: ``--crop-foreground``: [top, left, bottom, right] of the kept box in the file's pixels.
CROP = "crop"
#: Derived by the reader from ``target`` and the manifest's class map; never stored.
CLASS_NAME = "class_name"
#: Feature names the extra columns and DICOM tags may not take.
RESERVED_FEATURES = frozenset({*SCHEMA, MASK, FRAME, CROP, CLASS_NAME})


def tag_kinds(keywords: Sequence[str], extra_cols: Sequence[str] = ()) -> dict[str, FeatureKind]:
    """The feature kind of each ``--dicom-tag`` keyword; ConfigError for unknown or clashing ones."""
    if not keywords:
        return {}
    from .dicom import tag_kind  # loads pydicom: only when tags are asked for

    clash = sorted((RESERVED_FEATURES | set(extra_cols)) & set(keywords))
    if clash or len(set(keywords)) != len(keywords):
        raise ConfigError(f"--dicom-tag {', '.join(clash) or 'repeated'}: that feature name is taken")
    try:
        return {keyword: tag_kind(keyword) for keyword in keywords}
    except ValueError as exc:
        raise ConfigError(f"--dicom-tag: {exc}") from None


def fixed_schema(target: bool = True, volume: bool = False) -> dict[str, FeatureKind]:
    """:data:`SCHEMA` (:data:`VOLUME_SCHEMA` for volumes), without ``target`` for a run without targets."""
    fixed = VOLUME_SCHEMA if volume else SCHEMA
    return {name: kind for name, kind in fixed.items() if target or name != "target"}


def run_schema(
    extra: Mapping[str, FeatureKind],
    tags: Mapping[str, FeatureKind],
    masks: bool,
    target: bool = True,
    frames: bool = False,
    volume: bool = False,
    crop: bool = False,
) -> dict[str, FeatureKind]:
    """Every feature of a run's records and its kind (the manifest's ``schema``): the fixed
    features, then the extra columns, DICOM tags, the mask, the frame and the crop box, sorted by name."""
    kinds: list[tuple[str, FeatureKind]] = [(MASK, "bytes"), (FRAME, "int64"), (CROP, "int64")]
    flags = {name: kind for (name, kind), on in zip(kinds, (masks, frames, crop), strict=True) if on}
    optional = dict(extra) | dict(tags) | flags
    return fixed_schema(target, volume) | dict(sorted(optional.items()))


@dataclass(frozen=True)
class Sample:
    """A converted row: CSV line, id, target and its serialized Examples (one per record: one for
    an image, one per frame with ``--frames all``)."""

    line: int
    image_id: str
    target: int | None  # None: a run without targets (``--no-target``)
    payloads: tuple[bytes, ...]
    #: What pydicom or a decoder warned of while converting it (distinct messages, in order).
    notes: tuple[str, ...] = ()


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _feature(kind: FeatureKind, values: Sequence[FeatureValue]) -> bytes:
    if kind == "bytes":
        body = b"".join(_field(1, bytes(v)) for v in values)  # type: ignore[arg-type]
        return _field(1, body)
    if kind == "float":
        packed = struct.pack(f"<{len(values)}f", *values)
        return _field(2, _field(1, packed) if values else b"")
    packed = b"".join(_varint(int(v)) for v in values)
    return _field(3, _field(1, packed) if values else b"")


def serialize_example(features: Mapping[str, tuple[FeatureKind, Sequence[FeatureValue]]]) -> bytes:
    """Serialize ``{name: (kind, values)}`` as tf.train.Example bytes, keys sorted."""
    entries = b"".join(
        _field(1, _field(1, name.encode()) + _field(2, _feature(kind, values)))
        for name, (kind, values) in sorted(features.items())
    )
    return _field(1, entries)


Features = Mapping[str, tuple[FeatureKind, FeatureValue | list[int]]]


def make_record(
    image_png: bytes,
    target: int | None,
    image_id: str,
    height: int,
    width: int,
    channels: int,
    extra: Features | None = None,
) -> bytes:
    """One record: the :data:`SCHEMA` features (but ``target`` when it is None) plus ``extra``
    ``{name: (kind, value)}`` ones (extra columns, DICOM tags, the mask), each a single value."""
    values: dict[str, FeatureValue] = {
        "image": image_png,
        "target": -1 if target is None else target,  # not stored when None
        "image_id": image_id.encode("utf-8"),
        "height": height,
        "width": width,
        "channels": channels,
    }
    features = {name: (kind, [values[name]]) for name, kind in fixed_schema(target is not None).items()}
    features.update({name: (kind, _values(value)) for name, (kind, value) in (extra or {}).items()})
    return serialize_example(features)


def _values(value: FeatureValue | list[int]) -> list[FeatureValue]:
    """A feature's values: a list (``crop``) as it is, one value as a list of one."""
    return [*value] if isinstance(value, list) else [value]


def make_volume_record(
    slices_png: list[bytes],
    target: int | None,
    image_id: str,
    shape: tuple[int, int, int],
    spacing: list[float],
    extra: Features | None = None,
    masks: list[bytes] | None = None,
) -> bytes:
    """One volume record: the :data:`VOLUME_SCHEMA` features (``shape`` is height, width, channels;
    ``target`` left out when None) plus ``extra`` ones, each a single value, and ``masks`` (one PNG
    per slice) as ``mask``."""
    height, width, channels = shape
    values: dict[str, list[FeatureValue]] = {
        "frames": list(slices_png),
        "target": [-1 if target is None else target],
        "image_id": [image_id.encode("utf-8")],
        "depth": [len(slices_png)],
        "height": [height],
        "width": [width],
        "channels": [channels],
        "spacing": [float(v) for v in spacing],
    }
    features = {name: (kind, values[name]) for name, kind in fixed_schema(target is not None, True).items()}
    features.update({name: (kind, _values(value)) for name, (kind, value) in (extra or {}).items()})
    if masks is not None:
        features[MASK] = ("bytes", list(masks))
    return serialize_example(features)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _fields(data: bytes) -> list[tuple[int, int, bytes | int]]:
    """Split a protobuf message into (field number, wire type, value) triples."""
    out: list[tuple[int, int, bytes | int]] = []
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(data, pos)
            out.append((number, wire, value))
        elif wire == 2:
            length, pos = _read_varint(data, pos)
            if pos + length > len(data):
                raise ValueError("field runs past the end of the message")
            out.append((number, wire, data[pos : pos + length]))
            pos += length
        elif wire == 5:
            out.append((number, wire, data[pos : pos + 4]))
            pos += 4
        elif wire == 1:
            out.append((number, wire, data[pos : pos + 8]))
            pos += 8
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return out


def _int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _list_values(kind: FeatureKind, body: bytes) -> list[FeatureValue]:
    values: list[FeatureValue] = []
    for number, _, value in _fields(body):
        if number != 1:
            continue
        if isinstance(value, int):
            if kind != "int64":
                raise ValueError(f"a {kind} list holds a varint")
            values.append(_int64(value))
        elif kind == "bytes":
            values.append(value)
        elif kind == "float":
            if len(value) % 4:
                raise ValueError("float list length is not a multiple of 4")
            values.extend(struct.unpack(f"<{len(value) // 4}f", value))
        else:
            pos = 0
            while pos < len(value):
                item, pos = _read_varint(value, pos)
                values.append(_int64(item))
    return values


_KINDS: dict[int, FeatureKind] = {1: "bytes", 2: "float", 3: "int64"}


def decode_record(data: bytes) -> dict[str, tuple[FeatureKind, list[FeatureValue]]]:
    """Parse tf.train.Example bytes into ``{name: (kind, values)}`` without TensorFlow.

    Raises ValueError when the bytes are not a well-formed Example.
    """
    features: dict[str, tuple[FeatureKind, list[FeatureValue]]] = {}
    for number, _, features_msg in _fields(data):
        if number != 1 or not isinstance(features_msg, bytes):
            continue
        for entry_number, _, entry in _fields(features_msg):
            if entry_number != 1 or not isinstance(entry, bytes):
                continue
            name, feature = "", b""
            for field_number, _, value in _fields(entry):
                if field_number == 1 and isinstance(value, bytes):
                    name = value.decode("utf-8")
                elif field_number == 2 and isinstance(value, bytes):
                    feature = value
            for kind_number, _, body in _fields(feature):
                if kind_number in _KINDS and isinstance(body, bytes):
                    features[name] = (_KINDS[kind_number], _list_values(_KINDS[kind_number], body))
    return features


def check_schema(
    features: dict[str, tuple[FeatureKind, list[FeatureValue]]],
    schema: Mapping[str, FeatureKind] | None = None,
) -> list[str]:
    """Problems of a decoded record against ``schema`` (by default :data:`SCHEMA`): a feature
    missing, of the wrong kind, or not one value."""
    problems = []
    for name, kind in (SCHEMA if schema is None else schema).items():
        if name not in features:
            problems.append(f"feature {name!r} missing")
        elif features[name][0] != kind:
            problems.append(f"feature {name!r} is {features[name][0]}, expected {kind}")
        elif len(features[name][1]) != _expected_count(name, features):
            count = _expected_count(name, features)
            problems.append(f"feature {name!r} has {len(features[name][1])} values, expected {count}")
    return problems


def _expected_count(name: str, features: dict[str, tuple[FeatureKind, list[FeatureValue]]]) -> int:
    """How many values a feature must have: one, or what :data:`LIST_FEATURES` says."""
    count = list_count(name, is_volume(features))
    if isinstance(count, int):
        return count
    values = features.get(count, ("int64", []))[1]
    return int(values[0]) if len(values) == 1 and isinstance(values[0], int) else -1
