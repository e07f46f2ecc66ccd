"""Benchmark the Dask engine and the client's costs; prints numbers and writes bench-out/cluster.json.

    python scripts/bench_cluster.py [--scale 0.5] [--rows 200000]

1. LocalCluster with 1 vs 2 workers on exact JPEG 2000 mammograms (the cluster started first, so the
   ratio is throughput, not start-up).
2. The client's CPU seconds per 1000 records and the bytes that pass through it, with the funnel
   (results to the client, one writer) and with the two-phase parts path, on CT; and, from those, the
   cluster size at which one client saturates, for each path (on paper). A LocalCluster's scheduler
   runs in the client's process, so its CPU counts as the client's here (an upper bound).
3. The client at scale: a labels CSV of ``--rows`` rows (tiny files), converted on this machine; peak
   client memory and client CPU per row, at two sizes, to judge 10 million rows on paper.
"""

from __future__ import annotations

import argparse
import csv
import json
import pickle
import re
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import bench

from dcm2tfrec.config import ConvertConfig, ImageSpec
from dcm2tfrec.convert import convert
from dcm2tfrec.engine.dask import DaskEngine
from dcm2tfrec.testing import anatomy, write_dicom


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_mb() -> float:
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024  # type: ignore[union-attr]


def _run(engine: DaskEngine, labels: Path, images: Path, out: Path, size: int, **kw: Any) -> dict[str, float]:
    config = ConvertConfig(
        labels, images, out, image=ImageSpec(width=size, height=size, **kw), overwrite=True
    )
    cpu, wall = _cpu(), time.perf_counter()
    result = convert(config, engine=engine)
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    shard_bytes = sum(s.bytes for s in result.shards)
    return {"records": result.records, "seconds": wall, "client_cpu": cpu, "shard_bytes": shard_bytes}


def scaling(workdir: Path, scale: float) -> dict[str, Any]:
    corpus = next(c for c in bench.CORPORA if c.name == "mg_j2k")
    labels, images = bench.make_corpus(corpus, workdir, scale)
    found: dict[str, Any] = {}
    for workers in (1, 2):
        with DaskEngine(f"local:{workers}") as engine:
            _run(engine, labels, images, workdir / "out-scale", corpus.size, exact_decode=True)  # warm
            runs = [
                _run(engine, labels, images, workdir / "out-scale", corpus.size, exact_decode=True)
                for _ in range(2)
            ]
        found[str(workers)] = min(r["seconds"] for r in runs)
        seconds, count = found[str(workers)], runs[0]["records"]
        print(f"exact J2K, LocalCluster {workers} worker(s): {seconds:.2f} s ({count} images)")
    found["ratio"] = found["1"] / found["2"]
    print(f"  2 vs 1 workers: {found['ratio']:.2f}x")
    return found


def client_costs(workdir: Path, scale: float) -> dict[str, Any]:
    corpus = next(c for c in bench.CORPORA if c.name == "ct")
    labels, images = bench.make_corpus(corpus, workdir, scale)
    found: dict[str, Any] = {}
    for path, parts in (("funnel", False), ("two-phase", True)):
        indexes: list[int] = []
        with DaskEngine("local:2") as engine:
            engine.writes_parts = parts  # type: ignore[misc]
            if parts:
                original = engine.parts

                def measured(*args: Any, original: Any = original, indexes: list[int] = indexes) -> Any:
                    for part in original(*args):
                        indexes.append(len(pickle.dumps(part)))
                        yield part

                engine.parts = measured  # type: ignore[method-assign]
            _run(engine, labels, images, workdir / "out-client", corpus.size)  # warm
            run = _run(engine, labels, images, workdir / "out-client", corpus.size)
        through = sum(indexes) if parts else run["shard_bytes"]
        found[path] = {
            "client_cpu_per_1000": 1000 * run["client_cpu"] / run["records"],
            "bytes_through_client": through,
            "records": run["records"],
            "seconds": run["seconds"],
            "records_per_second": run["records"] / run["seconds"],
        }
        print(
            f"CT, {path}: client CPU {found[path]['client_cpu_per_1000']:.2f} s per 1000 records, "
            f"{through / 1e6:.2f} MB through the client, {found[path]['records_per_second']:.0f} records/s"
        )
    per_core = found["funnel"]["records_per_second"] / 2  # two single-threaded workers
    for path in ("funnel", "two-phase"):
        capacity = 1000 / found[path]["client_cpu_per_1000"]  # records/s one client core sustains
        found[path]["saturates_at_cores"] = capacity / per_core
        print(f"  on paper, {path}: one client saturates at about {capacity / per_core:.0f} CT worker cores")
    return found


def client_scale(workdir: Path, rows: int) -> dict[str, Any]:
    folder = workdir / "scale"
    images = folder / "images"
    for i in range(4):
        write_dicom(images / f"{i}.dcm", anatomy(8, 8, 0, 200, np.uint8, i))
    found: dict[str, Any] = {}
    for count in (rows // 4, rows):
        labels = folder / f"labels-{count}.csv"
        with open(labels, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image_id", "path", "target"])
            writer.writerows((f"row{i:08d}", f"{i % 4}.dcm", i % 2) for i in range(count))
        code = (
            "import re, resource, sys, time; from pathlib import Path\n"
            "from dcm2tfrec.config import ConvertConfig, ImageSpec; from dcm2tfrec.convert import convert\n"
            f"c = ConvertConfig({str(labels)!r}, {str(images)!r}, {str(folder / 'out')!r}, "
            "image=ImageSpec(width=8, height=8), overwrite=True, records_per_shard=10000)\n"
            "t = time.perf_counter(); r = convert(c); t = time.perf_counter() - t\n"
            "u = resource.getrusage(resource.RUSAGE_SELF)\n"
            "status = Path('/proc/self/status').read_text()\n"
            "hwm = int(re.search(r'VmHWM:\\s+(\\d+)', status).group(1)) / 1024\n"
            "print(r.records, t, u.ru_utime + u.ru_stime, hwm)"
        )
        import subprocess

        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
        records, seconds, cpu, peak = int(out[0]), float(out[1]), float(out[2]), float(out[3])
        found[str(count)] = {
            "records": records,
            "seconds": seconds,
            "client_cpu_per_row_us": 1e6 * cpu / count,
            "peak_mb": peak,
        }
        per_row = 1e6 * cpu / count
        print(f"{count} rows: {seconds:.1f} s, client CPU {per_row:.0f} us/row, client peak {peak:.0f} MB")
    small, large = found[str(rows // 4)], found[str(rows)]
    found["mb_per_million_rows"] = (large["peak_mb"] - small["peak_mb"]) / ((rows - rows // 4) / 1e6)
    print(f"  client memory grows {found['mb_per_million_rows']:.0f} MB per million rows")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("bench-out"))
    parser.add_argument("--scale", type=float, default=0.5)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--skip", default="", help="comma list of: scaling,client,scale")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    results: dict[str, Any] = {}
    if "scaling" not in skip:
        results["scaling"] = scaling(args.workdir, args.scale)
    if "client" not in skip:
        results["client"] = client_costs(args.workdir, args.scale)
    if "scale" not in skip:
        results["client_scale"] = client_scale(args.workdir, args.rows)
    (args.workdir / "cluster.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
