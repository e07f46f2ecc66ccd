"""``dcm2tfrec export-tfds``: make a finished output loadable with ``tfds.builder_from_directory``
(``pip install 'dcm2tfrec[tfds]'``), without copying image bytes.

TFDS finds shards by a file-name template with a shard index and a shard count
(``dcm2tfrec-train.tfrecord-00000-of-00003``); dcm2tfrec's names carry each shard's record count,
which no template can express. So the export is a folder (``OUT/tfds`` by default) of hard links
(or symbolic links, across file systems) under TFDS's names, its ``dataset_info.json`` (splits and
shard lengths from the manifest) and ``features.json`` (the record schema as TFDS features).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import ConfigError, ShardError
from .manifest import MANIFEST_NAME
from .shards import shard_prefix

#: The dataset name in the exported file names.
DATASET = "dcm2tfrec"
TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"


def _features(manifest: dict[str, Any]) -> Any:
    """The manifest's record schema as a TFDS FeaturesDict."""
    import numpy as np
    import tensorflow_datasets as tfds

    image = manifest["config"]["image"]
    shape = (
        image["height"],
        image["width"],
        1 if image["bits"] == 16 and image["channels"] == 1 else image["channels"],
    )
    dtype = np.uint16 if image["bits"] == 16 else np.uint8
    encoding = "jpeg" if image.get("format") == "jpeg" else "png"
    classes = manifest.get("class_map")
    features: dict[str, Any] = {}
    for name, kind in manifest["schema"].items():
        if name == "image":
            features[name] = tfds.features.Image(shape=shape, dtype=dtype, encoding_format=encoding)
        elif name == "frames":
            features[name] = tfds.features.Sequence(
                tfds.features.Image(shape=shape, dtype=dtype, encoding_format=encoding)
            )
        elif name == "mask":
            features[name] = tfds.features.Image(shape=(shape[0], shape[1], 1), encoding_format="png")
        elif name == "target" and classes and sorted(classes.values()) == list(range(len(classes))):
            features[name] = tfds.features.ClassLabel(
                names=[k for k, _ in sorted(classes.items(), key=lambda kv: kv[1])]
            )
        elif name == "spacing":
            features[name] = tfds.features.Tensor(shape=(3,), dtype=np.float32)
        elif name == "crop":
            features[name] = tfds.features.Tensor(shape=(4,), dtype=np.int64)
        elif kind == "bytes":
            features[name] = tfds.features.Text()
        else:
            features[name] = tfds.features.Scalar(dtype=np.int64 if kind == "int64" else np.float32)
    return tfds.features.FeaturesDict(features)


def export_tfds(out: str | os.PathLike[str], to: str | os.PathLike[str] | None = None) -> Path:
    """Write the TFDS view of the finished output folder ``out`` into ``to`` (default
    ``out/tfds``, which must not exist yet); return it."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise ConfigError("export-tfds needs TensorFlow Datasets: pip install 'dcm2tfrec[tfds]'") from None
    source = Path(out)
    manifest_path = source / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ConfigError(f"{source} has no {MANIFEST_NAME}: export-tfds takes a finished output folder")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if manifest["config"].get("compression", "none") != "none":
        raise ConfigError("TFDS reads uncompressed TFRecord files: convert without --compression gzip")
    target = Path(to) if to is not None else source / "tfds"
    if target.exists():
        raise ConfigError(f"{target} exists: name a new folder")
    splits: dict[str, list[dict[str, Any]]] = {}
    for shard in manifest["shards"]:
        splits.setdefault(shard_prefix(shard["file"]), []).append(shard)
    target.mkdir(parents=True)
    template = tfds.core.ShardedFileTemplate(
        data_dir=target, template=TEMPLATE, dataset_name=DATASET, filetype_suffix="tfrecord"
    )
    infos = []
    for split, shards in splits.items():
        for index, shard in enumerate(shards):
            path = template.replace(split=split).sharded_filepath(shard_index=index, num_shards=len(shards))
            _link(source / shard["file"], Path(os.fspath(path)))
        infos.append(
            tfds.core.SplitInfo(
                name=split,
                shard_lengths=[int(s["records"]) for s in shards],
                num_bytes=sum(int(s["bytes"]) for s in shards),
                filename_template=template.replace(split=split),
            )
        )
    try:
        tfds.folder_dataset.write_metadata(
            data_dir=target,
            features=_features(manifest),
            split_infos=infos,
            filename_template=template,
            check_data=False,
            description=f"dcm2tfrec {manifest.get('dcm2tfrec_version', '')} output of {source}",
        )
    except Exception as exc:  # TFDS's own errors: name what failed
        raise ShardError(
            f"writing the TFDS metadata into {target} failed: {type(exc).__name__}: {exc}"
        ) from None
    return target


def _link(shard: Path, name: Path) -> None:
    """``name`` as a hard link to ``shard`` (a symbolic one across file systems): no bytes copied."""
    try:
        os.link(shard, name)
    except OSError:
        os.symlink(os.path.relpath(shard, name.parent), name)
