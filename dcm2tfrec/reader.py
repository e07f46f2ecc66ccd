"""Reading shards with TensorFlow: the parse side of the schema in :mod:`dcm2tfrec.records`."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from .records import SCHEMA

_DTYPES = {"bytes": tf.string, "int64": tf.int64, "float": tf.float32}


def feature_spec() -> dict[str, tf.io.FixedLenFeature]:
    """The ``tf.io.parse_example`` spec for every feature of :data:`records.SCHEMA`."""
    return {name: tf.io.FixedLenFeature([], _DTYPES[kind]) for name, kind in SCHEMA.items()}


def parse_example(serialized: tf.Tensor) -> dict[str, Any]:
    """Parse one serialized record, or a batch of them, into a dict of tensors (image still PNG)."""
    if serialized.shape.rank == 0:
        return tf.io.parse_single_example(serialized, feature_spec())
    return tf.io.parse_example(serialized, feature_spec())
