"""The record schema (the one home for it) and TF-free, deterministic Example serialization.

A record is a ``tf.train.Example`` whose features are listed in :data:`SCHEMA`. ``image`` and
``target`` are named exactly as in the usual Kaggle tutorial, so its reader works unchanged.
Serialization writes the protobuf wire format directly, features sorted by name, so workers
never import TensorFlow and equal records give equal bytes; a test checks that TensorFlow parses
them into messages equal to the ones its own serializer builds.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

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

FeatureValue = bytes | int | float


@dataclass(frozen=True)
class Sample:
    """A converted row: CSV line, id, target and the serialized Example."""

    line: int
    image_id: str
    target: int
    payload: bytes


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


def make_record(
    image_png: bytes, target: int, image_id: str, height: int, width: int, channels: int
) -> bytes:
    """One record in the :data:`SCHEMA` layout."""
    values: dict[str, FeatureValue] = {
        "image": image_png,
        "target": target,
        "image_id": image_id.encode("utf-8"),
        "height": height,
        "width": width,
        "channels": channels,
    }
    return serialize_example({name: (SCHEMA[name], [values[name]]) for name in SCHEMA})
