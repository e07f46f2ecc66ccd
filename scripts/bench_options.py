"""Benchmark the image options on the bench corpora (scripts/bench.py's generators, cached in
bench-out/): ``--crop-foreground`` (time per image, on mammograms) and ``--format jpeg`` against
PNG (output bytes and time, on CT and mammograms); prints a table, writes bench-out/options.json.

    python scripts/bench_options.py [--scale 0.2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench

#: (label, corpus, extra convert options)
RUNS = [
    ("mg png", "mg_j2k", []),
    ("mg png --crop-foreground", "mg_j2k", ["--crop-foreground"]),
    ("mg jpeg q95", "mg_j2k", ["--format", "jpeg"]),
    ("ct png", "ct", []),
    ("ct jpeg q95", "ct", ["--format", "jpeg"]),
    ("ct jpeg q85", "ct", ["--format", "jpeg", "--jpeg-quality", "85"]),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=bench.ROOT / "bench-out")
    parser.add_argument("--scale", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    corpora = {c.name: c for c in bench.CORPORA}
    results = []
    for label, name, extra in RUNS:
        corpus = corpora[name]
        labels, images = bench.make_corpus(corpus, args.workdir, args.scale)
        out = args.workdir / "options-out"
        command = [
            sys.executable,
            "-m",
            "dcm2tfrec",
            "convert",
            "--labels",
            str(labels),
            "--images",
            str(images),
        ]
        command += [
            "--out",
            str(out),
            "--size",
            str(corpus.size),
            "--workers",
            "2",
            "--overwrite",
            "-q",
            *extra,
        ]
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            subprocess.run(command, check=True)
            seconds.append(time.perf_counter() - start)
        count = len(labels.read_text().splitlines()) - 1
        size = sum(p.stat().st_size for p in out.glob("*.tfrec"))
        median = statistics.median(seconds)
        results.append(
            {
                "run": label,
                "files": count,
                "seconds": round(median, 2),
                "ms_per_image": round(1000 * median / count, 1),
                "bytes": size,
            }
        )
        per_image = 1000 * median / count
        print(f"{label:28} {count:5} files  {median:6.2f} s  {per_image:7.1f} ms/image  {size / 1e6:8.2f} MB")
    (args.workdir / "options.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
