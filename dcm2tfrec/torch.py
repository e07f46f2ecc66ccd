"""PyTorch: :class:`ShardDataset`, an ``IterableDataset`` over a run's shards, without TensorFlow
(``pip install 'dcm2tfrec[torch]'``).

Records are read with dcm2tfrec's own framing (both CRCs of every record checked) and decoder,
images decoded with OpenCV. Each epoch's shard files are split across distributed ranks and
DataLoader workers (every record read once per epoch), records go through a seeded shuffle
buffer, and images come as ``(C, H, W)`` tensors (volumes: ``(C, D, H, W)``), as torch's layers
take them, with the same dtype and window options as :func:`dcm2tfrec.make_dataset`.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .errors import ShardError
from .policy import VALUE_OFFSET_16
from .records import CLASS_NAME, MASK, decode_record, is_volume
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
)
from .storage import protocol
from .tfrecord import iter_records, open_records

_DTYPES = ("uint8", "float32")


def _local(source: Source, options: dict[str, Any] | None, cache_dir: str | None) -> ShardSet:
    """The shards of ``source``; a URL's are downloaded once into the verified local cache."""
    first = os.fspath(source if isinstance(source, (str, os.PathLike)) else next(iter(source), ""))
    scheme = protocol(first)
    if scheme == "file":
        return resolve(source)
    files = FsspecFiles(scheme, options)
    key = os.fspath(source) if isinstance(source, (str, os.PathLike)) else ",".join(map(str, source))
    return cached(resolve(source, files), files, cache_folder(key, cache_dir))


def _decode(data: bytes) -> np.ndarray:
    """PNG or JPEG bytes -> (H, W, C) in RGB order."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ShardError("a record's image does not decode")
    if image.ndim == 2:
        return image[:, :, np.newaxis]
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if image.shape[2] == 3 else image


class ShardDataset(IterableDataset):
    """The records of ``source`` (an output folder, a manifest, a glob or shard files; local or a
    URL) as ``(image, target)``, images alone for a run without targets, or a dict of every
    feature (``with_features``: ``image_id`` as text, numbers as tensors, ``mask`` decoded,
    ``class_name`` with a class map).

    ``shuffle`` shuffles the shard files per epoch (call :meth:`set_epoch`, as with
    ``DistributedSampler``) and records through a buffer of ``shuffle_buffer``, both from ``seed``.
    ``rank`` / ``world_size`` default to ``torch.distributed``'s when it is initialised.
    ``image_dtype``: ``uint8`` or ``float32`` (8-bit records scaled to [0, 1]); 16-bit records come
    as int32 stored values, as float32 modality values, or windowed (``window``: (center, width),
    a list of them, one channel each, or ``"manifest"``) to uint8 or to [0, 1] with float32.
    """

    def __init__(
        self,
        source: Source,
        *,
        shuffle: bool = False,
        seed: int = 0,
        shuffle_buffer: int = 1024,
        image_dtype: str | None = None,
        window: WindowArg = None,
        with_features: bool = False,
        split: str | Sequence[str] | None = None,
        exclude: str | Sequence[str] | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        storage_options: dict[str, Any] | None = None,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        shards = select(_local(source, storage_options, cache_dir), split, exclude)
        self.files, self.counts, self.manifest = list(shards.files), list(shards.counts), shards.manifest
        image = image_config(self.manifest)
        self.bits = int(image.get("bits", 8))
        self.windows = read_windows(window, self.manifest)
        if self.windows is not None and self.bits != 16:
            raise ValueError("window applies to 16-bit records; these are 8-bit (already windowed)")
        if image_dtype is not None and image_dtype not in _DTYPES:
            raise ValueError(f"image_dtype must be one of {', '.join(_DTYPES)}, not {image_dtype!r}")
        if self.bits == 16 and image_dtype == "uint8" and self.windows is None:
            raise ValueError("16-bit records cannot be returned as uint8 (give a window)")
        self.image_dtype = image_dtype or ("uint8" if self.bits == 8 or self.windows else None)
        schema = (self.manifest or {}).get("schema") or {}
        self.has_target = "target" in schema or not schema
        self._volume = is_volume(schema)
        self.names = {v: k for k, v in ((self.manifest or {}).get("class_map") or {}).items()}
        self.shuffle, self.seed, self.shuffle_buffer = shuffle, seed, max(1, shuffle_buffer)
        self.with_features = with_features
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Shuffle differently in each epoch (the same order on every rank for one epoch)."""
        self.epoch = epoch

    def _ranks(self) -> tuple[int, int]:
        if self.rank is not None or self.world_size is not None:
            return self.rank or 0, self.world_size or 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _order(self) -> list[int]:
        order = list(range(len(self.files)))
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        return order

    def _my_files(self, worker: int, workers: int) -> list[int]:
        rank, world = self._ranks()
        return self._order()[rank * workers + worker :: world * workers]

    def __len__(self) -> int:
        """The records this rank reads in an epoch (all its DataLoader workers together)."""
        rank, world = self._ranks()
        mine = self._order()[rank::world]
        if any(self.counts[i] is None for i in mine):
            raise TypeError("the record counts are unknown (no manifest, no count in the shard names)")
        return sum(self.counts[i] or 0 for i in mine)

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rank, _ = self._ranks()
        rng = random.Random(f"{self.seed}-{self.epoch}-{rank}-{worker}")
        buffer: list[bytes] = []
        for index in self._my_files(worker, workers):
            with open_records(self.files[index]) as handle:
                for _, data in iter_records(handle, self.files[index]):
                    if not self.shuffle:
                        yield self._item(data)
                        continue
                    buffer.append(data)
                    if len(buffer) >= self.shuffle_buffer:
                        yield self._item(buffer.pop(rng.randrange(len(buffer))))
        rng.shuffle(buffer)
        for data in buffer:
            yield self._item(data)

    def _image(self, stored: list[np.ndarray]) -> torch.Tensor:
        """Decoded images (one, or a volume's slices) -> (C, H, W) or (C, D, H, W), as asked."""
        array = stored[0] if len(stored) == 1 and not self._volume else np.stack(stored)
        if self.bits == 16 and (self.image_dtype == "float32" or self.windows):
            values = array.astype(np.float32) - float(VALUE_OFFSET_16)
            if self.windows:
                spans = [linear_window(c, w) for c, w in self.windows]
                shown = [np.clip((values - low) / span + 0.5, 0.0, 1.0) for low, span in spans]
                values = shown[0] if len(shown) == 1 else np.concatenate(shown, axis=-1)
                if self.image_dtype == "uint8":
                    values = np.rint(values * 255.0).astype(np.uint8)
            array = values
        elif self.bits == 16:
            array = array.astype(np.int32)
        elif self.image_dtype == "float32":
            array = array.astype(np.float32) / 255.0
        channels_first = np.moveaxis(array, -1, 0)
        return torch.from_numpy(np.ascontiguousarray(channels_first))

    def _item(self, data: bytes) -> Any:
        features = decode_record(data)
        stored = features["frames"][1] if self._volume else features["image"][1]
        image = self._image([_decode(png) for png in stored])  # type: ignore[arg-type]
        target = features.get("target", ("int64", [None]))[1][0]
        if not self.with_features:
            return (image, torch.tensor(target, dtype=torch.int64)) if self.has_target else image
        out: dict[str, Any] = {"image": image}
        for name, (kind, values) in features.items():
            if name in ("image", "frames"):
                continue
            if name == MASK:
                masks = np.stack([_decode(v) for v in values])  # type: ignore[arg-type]
                out[name] = torch.from_numpy(np.moveaxis(masks if self._volume else masks[0], -1, 0).copy())
            elif kind == "bytes":
                text = [v.decode("utf-8", "replace") for v in values]  # type: ignore[union-attr]
                out[name] = text[0] if len(text) == 1 else text
            else:
                dtype = torch.int64 if kind == "int64" else torch.float32
                out[name] = torch.tensor(values[0] if len(values) == 1 else values, dtype=dtype)
        if self.names and target is not None:
            out[CLASS_NAME] = self.names.get(int(target), "")
        return out
