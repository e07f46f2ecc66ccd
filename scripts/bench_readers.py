"""Benchmark the readers on one converted corpus (scripts/bench.py's CT, cached in bench-out/):
images/s of ``dcm2tfrec.make_dataset`` (tf.data), ``dcm2tfrec.torch.ShardDataset`` (DataLoader,
2 workers) and the ``tfrecord`` package's torch dataset with the ``--index`` files (2 workers,
PNG decoded with OpenCV), each over every record once, decoding included; prints the numbers and
writes bench-out/readers.json.

    python scripts/bench_readers.py [--scale 0.5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import bench


def _tf(out: Path) -> Any:
    import dcm2tfrec

    return dcm2tfrec.make_dataset(out, batch_size=32)


def _loader(dataset: Any) -> Any:
    """A DataLoader whose 2 workers stay up across epochs (start-up is timed apart)."""
    import torch

    return torch.utils.data.DataLoader(dataset, batch_size=32, num_workers=2, persistent_workers=True)


def _torch(out: Path) -> Any:
    from dcm2tfrec.torch import ShardDataset

    return _loader(ShardDataset(out))


def _decoded(record: dict[str, Any]) -> Any:
    import torch

    image = cv2.imdecode(np.frombuffer(record["image"], np.uint8), cv2.IMREAD_UNCHANGED)
    return torch.from_numpy(image[np.newaxis]), int(record["target"][0])


def _tfrecord_package(out: Path) -> Any:
    from tfrecord.torch.dataset import MultiTFRecordDataset

    shards = {p.stem: 1.0 for p in sorted(out.glob("*.tfrec"))}
    dataset = MultiTFRecordDataset(
        str(out / "{}.tfrec"),
        str(out / "{}.idx"),
        shards,
        {"image": "byte", "target": "int"},
        transform=_decoded,
        infinite=False,
    )
    return _loader(dataset)


READERS = {"make_dataset": _tf, "torch ShardDataset": _torch, "tfrecord package": _tfrecord_package}


def _timed(name: str, out: Path, repeats: int) -> dict[str, Any]:
    """One reader in this process (each runs in its own: the tfrecord package's protobufs clash
    with TensorFlow's): a first epoch (start-up included), then ``repeats`` warm epochs."""
    start = time.perf_counter()
    batches = READERS[name](out)
    count = sum(int(images.shape[0]) for images, _ in batches)
    first = time.perf_counter() - start
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        assert sum(int(images.shape[0]) for images, _ in batches) == count
        seconds.append(time.perf_counter() - start)
    rate = count / statistics.median(seconds)
    return {"records": count, "first_epoch_s": round(first, 2), "images_per_s": round(rate)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=bench.ROOT / "bench-out")
    parser.add_argument("--scale", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=sorted(READERS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = args.workdir / "readers-out"
    if args.only:
        print(json.dumps(_timed(args.only, out, args.repeats)))
        return
    corpus = next(c for c in bench.CORPORA if c.name == "ct")
    labels, images = bench.make_corpus(corpus, args.workdir, args.scale)
    command = [sys.executable, "-m", "dcm2tfrec", "convert", "--labels", str(labels), "--images", str(images)]
    command += ["--out", str(out), "--size", str(corpus.size), "--index", "--overwrite", "-q"]
    subprocess.run(command, check=True)
    report = {}
    for name in READERS:
        one = [
            sys.executable,
            __file__,
            "--workdir",
            str(args.workdir),
            "--repeats",
            str(args.repeats),
            "--only",
            name,
        ]
        lines = subprocess.run(one, check=True, capture_output=True, text=True).stdout.strip().splitlines()
        report[name] = json.loads(lines[-1])
        got = report[name]
        warm, first = got["images_per_s"], got["first_epoch_s"]
        print(f"{name:20} {got['records']} records  {warm:6} images/s warm, first epoch {first} s")
    (args.workdir / "readers.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
