"""Benchmark ``--volume``: a CT series folder (300 slices of 512 x 512, 12-bit, by default) to one
64 x 256 x 256 volume record; prints numbers and writes bench-out/volume.json.

    python scripts/bench_volume.py [--slices 300] [--side 512] [--depth 64] [--size 256]

1. One row converted by the worker function in a fresh process, after a warm-up row (imports and
   lookup tables): its seconds and the growth of the process's peak RSS, i.e. the worker's peak
   beyond an idle worker, next to the size of one source slice and of the whole series decoded.
2. The same row through ``dcm2tfrec convert --volume`` (CLI, one worker): wall seconds end to end.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from dcm2tfrec.testing import anatomy, write_dicom

_WORKER = """
import json, resource, sys, time
from dcm2tfrec.config import ImageSpec
from dcm2tfrec.labels import Row
from dcm2tfrec.worker import Task, process_row
root, size, depth = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
task = Task(root, ImageSpec(width=size, height=size, volume=True, depth=depth))
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
warm = process_row(Row(2, "warm", "warm", 0), task)
assert not hasattr(warm, "reason"), warm
before = peak()
start = time.perf_counter()
result = process_row(Row(3, "ct", "ct", 1), task)
seconds = time.perf_counter() - start
assert not hasattr(result, "reason"), result
print(json.dumps({"seconds": seconds, "peak_before_mb": before, "peak_after_mb": peak(),
                  "record_bytes": len(result.payloads[0])}))
"""


def _series(folder: Path, slices: int, side: int) -> None:
    for k in range(slices):
        pixels = anatomy(side, side, 0, 4000, np.uint16, k % 17)
        write_dicom(
            folder / f"{k:04d}.dcm",
            pixels,
            bits_stored=12,
            modality="CT",
            rescale=(1, -1024),
            windows=[(40, 400)],
            SeriesInstanceUID="1.2.3.4",
            ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
            ImagePositionPatient=[0, 0, 1.25 * k],
            InstanceNumber=k + 1,
            PixelSpacing=[0.7, 0.7],
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--depth", type=int, default=64)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    args = parser.parse_args()
    root = args.out / "volume"
    images = root / "images"
    if not (images / "ct").is_dir() or len(list((images / "ct").iterdir())) != args.slices:
        _series(images / "ct", args.slices, args.side)
        _series(images / "warm", 3, args.side)
    proc = subprocess.run(
        [sys.executable, "-c", _WORKER, str(images), str(args.size), str(args.depth)],
        capture_output=True,
        text=True,
        check=True,
    )
    worker = json.loads(proc.stdout)
    labels = root / "labels.csv"
    labels.write_text("image_id,path,target\nct,ct,1\n")
    command = [sys.executable, "-m", "dcm2tfrec", "convert", "--labels", str(labels), "--images", str(images)]
    command += ["--out", str(root / "out"), "--volume", "--size", str(args.size), "--depth", str(args.depth)]
    start = time.perf_counter()
    subprocess.run([*command, "--workers", "1", "--overwrite", "-q"], check=True)
    cli_seconds = time.perf_counter() - start
    slice_mb = args.side * args.side * 2 / 1e6
    report = {
        "series": f"{args.slices} slices of {args.side}x{args.side}, 12-bit",
        "output": f"{args.depth}x{args.size}x{args.size}",
        "worker_seconds": round(worker["seconds"], 2),
        "worker_peak_growth_mb": round(worker["peak_after_mb"] - worker["peak_before_mb"], 1),
        "worker_peak_mb": round(worker["peak_after_mb"], 1),
        "one_source_slice_mb": round(slice_mb, 2),
        "whole_series_decoded_mb": round(slice_mb * args.slices, 1),
        "output_record_mb": round(worker["record_bytes"] / 1e6, 2),
        "cli_seconds_end_to_end": round(cli_seconds, 2),
    }
    for key, value in report.items():
        print(f"{key:28} {value}")
    (args.out / "volume.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
