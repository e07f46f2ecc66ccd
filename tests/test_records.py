from __future__ import annotations

import tensorflow as tf

from dcm2tfrec.reader import parse_example
from dcm2tfrec.records import SCHEMA, make_record, serialize_example


def _tf_bytes(values: dict) -> bytes:
    def feature(v):
        if isinstance(v, bytes):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))
        if isinstance(v, float):
            return tf.train.Feature(float_list=tf.train.FloatList(value=[v]))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))

    ex = tf.train.Example(features=tf.train.Features(feature={k: feature(v) for k, v in values.items()}))
    return ex.SerializeToString(deterministic=True)


def _same_example(ours: bytes, theirs: bytes) -> bool:
    """Equal as messages (protobuf's own map order differs from plain sorted order)."""
    return tf.train.Example.FromString(ours) == tf.train.Example.FromString(theirs)


def test_records_equal_tensorflows_examples_and_are_deterministic() -> None:
    for target in (0, 1, -1, 2**63 - 1, -(2**63), 300):
        ours = make_record(b"\x89PNG fake" * 50, target, "ïd 000123", 512, 384, 3)
        theirs = _tf_bytes(
            {
                "image": b"\x89PNG fake" * 50,
                "target": target,
                "image_id": "ïd 000123".encode(),
                "height": 512,
                "width": 384,
                "channels": 3,
            }
        )
        assert _same_example(ours, theirs)
        assert ours == make_record(b"\x89PNG fake" * 50, target, "ïd 000123", 512, 384, 3)
        assert len(ours) == len(theirs)


def test_single_key_bytes_are_identical_to_protobuf() -> None:
    for value in (0, -5, 2**40):
        assert serialize_example({"target": ("int64", [value])}) == _tf_bytes({"target": value})


def test_float_and_multi_value_lists_match_tensorflow() -> None:
    ours = serialize_example(
        {"f": ("float", [0.5, -2.25]), "i": ("int64", [1, 2, 3]), "b": ("bytes", [b"a", b""])}
    )
    ex = tf.train.Example()
    ex.features.feature["f"].float_list.value.extend([0.5, -2.25])
    ex.features.feature["i"].int64_list.value.extend([1, 2, 3])
    ex.features.feature["b"].bytes_list.value.extend([b"a", b""])
    assert _same_example(ours, ex.SerializeToString(deterministic=True))


def test_parse_example_reads_every_schema_feature() -> None:
    parsed = parse_example(tf.constant(make_record(b"png", 7, "000123", 2, 3, 1)))
    assert set(parsed) == set(SCHEMA)
    assert (
        parsed["image_id"].numpy() == b"000123" and int(parsed["target"]) == 7 and int(parsed["width"]) == 3
    )


def test_tutorial_reader_code_works_unchanged() -> None:
    feature_description = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "target": tf.io.FixedLenFeature([], tf.int64),
    }
    ex = tf.io.parse_single_example(make_record(b"png", 1, "x", 1, 1, 1), feature_description)
    assert ex["image"].numpy() == b"png" and int(ex["target"]) == 1


def test_decode_record_reads_what_tensorflow_writes() -> None:
    from dcm2tfrec.records import check_schema, decode_record

    ex = tf.train.Example()
    ex.features.feature["f"].float_list.value.extend([0.5, -2.25])
    ex.features.feature["i"].int64_list.value.extend([1, -2, 2**63 - 1])
    ex.features.feature["b"].bytes_list.value.extend([b"a", b""])
    decoded = decode_record(ex.SerializeToString())
    assert decoded == {
        "f": ("float", [0.5, -2.25]),
        "i": ("int64", [1, -2, 2**63 - 1]),
        "b": ("bytes", [b"a", b""]),
    }
    ours = decode_record(make_record(b"png", -7, "ïd", 2, 3, 1))
    assert ours["target"] == ("int64", [-7]) and ours["image_id"] == ("bytes", ["ïd".encode()])
    assert check_schema(ours) == []
    assert check_schema(decoded) == [f"feature {n!r} missing" for n in SCHEMA]
