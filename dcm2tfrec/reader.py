"""Reading shards with TensorFlow: ``make_dataset`` for tf.data / Keras, and ``parse_example``.

The parse side of the schema in :mod:`dcm2tfrec.records`. The pipeline follows the tf.data
performance guide: shuffle files, interleave parallel reads, shuffle records, batch, parse the
batch in one vectorised op, decode PNGs in parallel, prefetch.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from typing import Any

import tensorflow as tf

from .errors import ShardCorrupt, ShardError
from .policy import VALUE_OFFSET_16
from .records import CLASS_NAME, MASK, SCHEMA, is_volume, list_count
from .sources import (
    FsspecFiles,
    ShardSet,
    Source,
    WindowArg,
    cache_folder,
    cached,
    image_config,
    linear_window,
    read_windows,
    resolve,
    select,
    shard_files,
)
from .storage import protocol
from .tfrecord import count_records, iter_records, open_records

_DTYPES = {"bytes": tf.string, "int64": tf.int64, "float": tf.float32}


class _GFiles:
    """TensorFlow's file systems (local, gs:// and the others it reads natively) for the resolver."""

    def isdir(self, path: str) -> bool:
        return bool(tf.io.gfile.isdir(path))

    def exists(self, path: str) -> bool:
        return bool(tf.io.gfile.exists(path))

    def glob(self, pattern: str) -> list[str]:
        return list(tf.io.gfile.glob(pattern))

    def read_text(self, path: str) -> str:
        with tf.io.gfile.GFile(path, "r") as handle:
            return str(handle.read())


#: URL schemes TensorFlow reads itself; other URLs (``s3://``, ``az://``, ``memory://``) go through fsspec.
_NATIVE = frozenset({"file", "gs"})


def _remote(source: Source) -> str | None:
    """The protocol of a source that TensorFlow cannot read itself, or None."""
    first = os.fspath(source if isinstance(source, (str, os.PathLike)) else next(iter(source), ""))
    scheme = protocol(first)
    return None if scheme in _NATIVE else scheme


def resolve_source(source: Source, storage_options: dict[str, Any] | None = None) -> ShardSet:
    """The shards of an output folder, a manifest path, a glob or a list of shard files (local, any
    URL TensorFlow's file systems read, or any fsspec URL), with their manifest when there is one."""
    scheme = _remote(source)
    return resolve(source, FsspecFiles(scheme, storage_options) if scheme else _GFiles())


def _check_remote_sizes(shards: ShardSet, files: FsspecFiles) -> None:
    for path, size in zip(shards.files, shards.sizes, strict=True):
        actual = files.fs.size(path.split("://", 1)[-1]) if files.exists(path) else None
        if actual is None:
            raise ShardError(f"{path}: shard file is missing")
        if size is not None and actual != size:
            raise ShardError(
                f"{path}: {actual} bytes, the manifest says {size} (truncated, appended or replaced)"
            )


def _streamed(path: tf.Tensor, files: FsspecFiles) -> tf.data.Dataset:
    """One remote shard's records, read through fsspec with both CRCs checked."""

    def records(name: bytes) -> Iterator[bytes]:
        url = name.decode()
        with files.fs.open(url.split("://", 1)[-1], "rb") as raw, open_records(url, raw) as handle:
            for _, data in iter_records(handle, url):
                yield data

    return tf.data.Dataset.from_generator(
        records, args=(path,), output_signature=tf.TensorSpec((), tf.string)
    )


def _local_shards(
    shards: ShardSet, source: Source, options: dict[str, Any] | None, cache_dir: str | None
) -> ShardSet:
    """Remote shards downloaded into the verified local cache (local and native ones as they are)."""
    scheme = _remote(source)
    if scheme is None:
        return shards
    key = os.fspath(source) if isinstance(source, (str, os.PathLike)) else ",".join(str(s) for s in source)
    return cached(shards, FsspecFiles(scheme, options), cache_folder(key, cache_dir))


def feature_spec(schema: dict[str, str] | None = None) -> dict[str, Any]:
    """The ``tf.io.parse_example`` spec for every feature of ``schema`` (a manifest's ``schema``:
    extra columns, DICOM tags, mask; a volume's slices as a ragged list), by default
    :data:`records.SCHEMA`."""
    spec: dict[str, Any] = {}
    schema = schema or dict(SCHEMA)
    volume = is_volume(schema)
    for name, kind in schema.items():
        count = list_count(name, volume)
        if isinstance(count, str):  # as many values as another feature says: a volume's slices
            spec[name] = tf.io.RaggedFeature(_DTYPES[kind])
        else:
            spec[name] = tf.io.FixedLenFeature([] if count == 1 else [count], _DTYPES[kind])
    return spec


def parse_example(serialized: tf.Tensor, schema: dict[str, str] | None = None) -> dict[str, Any]:
    """Parse one serialized record, or a batch of them, into a dict of tensors (image still PNG)."""
    if serialized.shape.rank == 0:
        return tf.io.parse_single_example(serialized, feature_spec(schema))
    return tf.io.parse_example(serialized, feature_spec(schema))


#: The largest class id ``class_names`` lays out as a list (sparse ids: see ``class_map``).
_DENSE_IDS = 1_000_000


def class_map(source: Source, storage_options: dict[str, Any] | None = None) -> dict[str, int]:
    """The ``--class-map`` of a run: class name -> target id."""
    mapping: dict[str, int] = (resolve_source(source, storage_options).manifest or {}).get("class_map") or {}
    if not mapping:
        raise ShardError("these shards were converted without --class-map: targets have no names")
    return mapping


def class_names(source: Source, storage_options: dict[str, Any] | None = None) -> list[str]:
    """The class names of a run converted with ``--class-map``, indexed by target id (ids up to
    one million; sparser ids are refused, use :func:`class_map`)."""
    mapping = class_map(source, storage_options)
    top = max(mapping.values())
    if top > _DENSE_IDS:
        raise ShardError(f"class ids go up to {top}: too sparse for a list; use dcm2tfrec.reader.class_map")
    names = [""] * (top + 1)
    for name, target in mapping.items():
        names[target] = name
    return names


def _is_url(path: str) -> bool:
    return "://" in path


def _check_local(path: str, records: int | None) -> None:
    """A local shard must be a regular file whose framing holds (no length field claiming more
    than the file has, which TensorFlow would try to allocate) and the manifest's record count."""
    if not os.path.isfile(path):
        raise ShardError(f"{path}: not a regular file (a FIFO or device?)")
    try:
        with open_records(path) as handle:
            count = count_records(handle, path)
    except ShardCorrupt as exc:
        raise ShardError(str(exc)) from None
    if records is not None and count != records:
        raise ShardError(f"{path}: {count} records, the manifest says {records}")


def check_shards(shards: ShardSet, level: str = "size") -> None:
    """Check shard files against the manifest before reading: ``size`` (and, for local files, their
    record framing), ``sha256`` or ``none``.

    TensorFlow's own CRC errors at read time do not name the file; this check does.
    """
    if level not in ("none", "size", "sha256"):
        raise ValueError(f"check must be 'none', 'size' or 'sha256', not {level!r}")
    if level == "none":
        return
    for path, size, sha, count in zip(shards.files, shards.sizes, shards.sha256, shards.counts, strict=True):
        if not tf.io.gfile.exists(path):
            raise ShardError(f"{path}: shard file is missing")
        if size is not None:
            actual = tf.io.gfile.stat(path).length
            if actual != size:
                raise ShardError(
                    f"{path}: {actual} bytes, the manifest says {size} (truncated, appended or replaced)"
                )
        if not _is_url(path):
            _check_local(path, count)
        if level == "sha256" and sha is not None:
            digest = hashlib.sha256()
            with tf.io.gfile.GFile(path, "rb") as handle:
                while chunk := handle.read(1 << 22):
                    digest.update(chunk)
            if digest.hexdigest() != sha:
                raise ShardError(f"{path}: SHA-256 differs from the manifest (damaged or replaced)")


def window_image(values: tf.Tensor, center: float, width: float) -> tf.Tensor:
    """DICOM LINEAR window of modality values to [0, 1] (float32)."""
    low, span = linear_window(center, width)
    return tf.clip_by_value((values - low) / span + 0.5, 0.0, 1.0)


def make_dataset(
    source: Source,
    batch_size: int = 32,
    *,
    shuffle: bool = False,
    repeat: bool = False,
    seed: int | None = None,
    image_dtype: str | None = None,
    window: WindowArg = None,
    with_features: bool = False,
    deterministic: bool | None = None,
    drop_remainder: bool = False,
    num_shards: int = 1,
    index: int = 0,
    shuffle_buffer: int = 1024,
    cycle_length: int = 8,
    check: str = "size",
    split: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    storage_options: dict[str, Any] | None = None,
    cache_dir: str | None = None,
    streaming: bool = False,
) -> tf.data.Dataset:
    """A batched ``tf.data.Dataset`` of ``(image, target)``, of images alone for a run converted
    with ``--no-target``, or of a dict of every feature (``with_features``, e.g. to join predictions
    back by ``image_id``).

    ``source``: output folder, manifest path, glob, or list of shard files (local or URL).
    ``image_dtype``: ``uint8``, ``uint16`` or ``float32``; by default the stored PNG's dtype.
    8-bit records as float32 are scaled to [0, 1]; 16-bit records as float32 are modality
    values (offset removed). ``window`` ((center, width) in modality units, a list of them for
    one channel each, or ``"manifest"``: the run's ``--window``) windows 16-bit records inside the
    pipeline to uint8, or to [0, 1] with float32.
    ``num_shards``/``index`` split the files between workers. ``check`` verifies the files
    against the manifest first (``size``, ``sha256`` or ``none``). The cardinality is known
    (from the manifest or the shard names) unless ``repeat``, so ``len(ds)`` works.
    ``split`` / ``exclude`` pick splits or folds by name (``exclude="fold3"``: all folds but 3).
    A URL TensorFlow cannot read itself (``s3://``, ``az://``; ``gs://`` it reads) goes through fsspec
    with ``storage_options``: its shards are downloaded once into ``cache_dir`` (default
    ``~/.cache/dcm2tfrec``), verified against the manifest's SHA-256 on the way; with ``streaming``
    they are read through fsspec instead (for data larger than the local disk; both CRCs of every
    record are still checked, ``check`` then compares sizes only).
    With ``with_features`` the dict also holds the extra columns and DICOM tags, ``mask``
    (decoded, uint8, (H, W, 1)) and ``class_name`` when the run had them.
    Volumes (``--volume``) come as ``(depth, H, W, C)`` images; volumes of different depths in one
    batch are padded with zeros at the end (``depth`` among the features says how many are real).
    """
    shards = select(resolve_source(source, storage_options), split, exclude)
    if num_shards > 1:
        shards = shard_files(shards, num_shards, index)
    scheme = _remote(source)
    remote = FsspecFiles(scheme, storage_options) if scheme and streaming else None
    if remote is None:
        shards = _local_shards(shards, source, storage_options, cache_dir)
        check_shards(shards, check)
    elif check != "none":
        _check_remote_sizes(shards, remote)
    image_cfg = image_config(shards.manifest)
    bits = int(image_cfg.get("bits", 8))
    win = read_windows(window, shards.manifest)
    if win is not None and bits != 16:
        raise ValueError("window applies to 16-bit records; these are 8-bit (already windowed)")
    png_dtype = tf.uint16 if bits == 16 else tf.uint8
    out_dtype = tf.as_dtype(image_dtype) if image_dtype else (tf.uint8 if win else png_dtype)
    if out_dtype not in (tf.uint8, tf.uint16, tf.float32):
        raise ValueError(f"image_dtype must be uint8, uint16 or float32, not {image_dtype!r}")
    if (bits == 8 and out_dtype == tf.uint16) or (bits == 16 and out_dtype == tf.uint8 and win is None):
        raise ValueError(
            f"{bits}-bit records cannot be returned as {out_dtype.name} (give a window for uint8)"
        )
    channels = int(image_cfg.get("channels", 0))
    shape = [image_cfg.get("height"), image_cfg.get("width"), channels or None]
    schema = (shards.manifest or {}).get("schema") or dict(SCHEMA)
    mapping = (shards.manifest or {}).get("class_map") if with_features else None

    if mapping:
        ids, labels = zip(*sorted((target, name) for name, target in mapping.items()), strict=True)
        initializer = tf.lookup.KeyValueTensorInitializer(
            tf.constant(ids, tf.int64), tf.constant(labels, tf.string)
        )
        names = tf.lookup.StaticHashTable(initializer, default_value="")
    compression = "GZIP" if (shards.manifest or {}).get("config", {}).get("compression") == "gzip" else ""
    files = tf.data.Dataset.from_tensor_slices(shards.files)
    if shuffle:
        files = files.shuffle(len(shards.files), seed=seed, reshuffle_each_iteration=True)
    ds = files.interleave(
        (lambda f: _streamed(f, remote))
        if remote
        else (lambda f: tf.data.TFRecordDataset(f, compression, buffer_size=1 << 20)),
        cycle_length=max(1, min(cycle_length, len(shards.files))),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    if shards.records is not None:
        ds = ds.apply(tf.data.experimental.assert_cardinality(shards.records))
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)

    volume = is_volume(schema)
    depth = int(image_cfg.get("depth") or 0) or None

    jpeg = image_cfg.get("format") == "jpeg"

    def decode_stored(data: tf.Tensor) -> tf.Tensor:
        if jpeg:
            return tf.io.decode_jpeg(data, channels=channels, dct_method="INTEGER_ACCURATE")  # as OpenCV
        return tf.io.decode_png(data, channels=channels, dtype=png_dtype)

    def decode_pngs(pngs: tf.Tensor) -> tf.Tensor:
        return tf.map_fn(
            lambda png: tf.ensure_shape(decode_stored(png), shape),
            pngs,
            fn_output_signature=tf.TensorSpec(shape, png_dtype),
            parallel_iterations=16,
        )

    def decode(serialized: tf.Tensor) -> Any:
        features = tf.io.parse_example(serialized, feature_spec(schema))
        if volume:  # (batch, depth, H, W, C); a batch of shallower volumes is padded with zeros
            slices = features.pop("frames")
            decoded = tf.RaggedTensor.from_row_lengths(decode_pngs(slices.flat_values), slices.row_lengths())
            images = tf.ensure_shape(decoded.to_tensor(), [None, depth, *shape])
        else:
            images = decode_pngs(features["image"])
        if bits == 16 and out_dtype != tf.uint16:
            values = tf.cast(images, tf.float32) - float(VALUE_OFFSET_16)
            if win is not None:
                shown = [window_image(values, *pair) for pair in win]
                values = shown[0] if len(shown) == 1 else tf.concat(shown, axis=-1)
                images = values if out_dtype == tf.float32 else tf.cast(tf.round(values * 255.0), tf.uint8)
            else:
                images = values
        elif bits == 8 and out_dtype == tf.float32:
            images = tf.cast(images, tf.float32) / 255.0
        if with_features:
            features = {**features, "image": images}
            if MASK in features:
                mask_shape = [shape[0], shape[1], 1]

                def decode_masks(pngs: tf.Tensor) -> tf.Tensor:
                    return tf.map_fn(
                        lambda png: tf.ensure_shape(tf.io.decode_png(png, channels=1), mask_shape),
                        pngs,
                        fn_output_signature=tf.TensorSpec(mask_shape, tf.uint8),
                    )

                masks = features[MASK]
                if volume:  # (batch, depth, H, W, 1), padded like the images
                    ragged = tf.RaggedTensor.from_row_lengths(
                        decode_masks(masks.flat_values), masks.row_lengths()
                    )
                    features[MASK] = tf.ensure_shape(ragged.to_tensor(), [None, depth, *mask_shape])
                else:
                    features[MASK] = decode_masks(masks)
            if mapping:
                features[CLASS_NAME] = names.lookup(features["target"])
            return features
        return (images, features["target"]) if "target" in schema else images

    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    return ds.prefetch(tf.data.AUTOTUNE)
