"""Benchmark ``dcm2tfrec convert`` against the tutorial baseline on generated, realistic corpora.

    python scripts/bench.py                    # everything (corpora are cached in bench-out/)
    python scripts/bench.py --corpora ct --repeats 3
    python scripts/bench.py --quick            # small corpora, one repeat: a smoke run

Each run is a whole process (imports included). The baseline and dcm2tfrec run alternately on the
same files. Prints a table (images/s, ratio to the baseline, peak RSS of the parent and of the
largest worker, output bytes), 2-vs-1-worker scaling with start-up and throughput measured apart,
per-stage costs (profile), reduced-resolution fidelity (PSNR), memory growth with rows, and
``--help`` latency; writes all of it to bench-out/results.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from joblib import Parallel, delayed

from dcm2tfrec.testing import anatomy, write_dicom

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "scripts" / "baseline_tutorial.py"
PROBE = ROOT / "scripts" / "probe_convert.py"


@dataclass(frozen=True)
class Corpus:
    """A generated corpus: ``count`` files of ``rows`` x ``cols`` in one transfer syntax."""

    name: str
    count: int
    rows: int
    cols: int
    size: int
    kind: str
    transfer_syntax: str = "explicit_le"


CORPORA = [
    Corpus("ct", 2000, 512, 512, 256, "ct"),
    Corpus("cr", 300, 2048, 2048, 256, "cr"),
    Corpus("mg_j2k", 60, 2800, 2200, 512, "mg", "j2k"),
    Corpus("mg_htj2k", 60, 2800, 2200, 512, "mg", "htj2k"),
    Corpus("mg_jpegls", 60, 2800, 2200, 512, "mg", "jpegls"),
    Corpus("mg_rle", 60, 2800, 2200, 512, "mg", "rle"),
]


def _write_one(corpus: Corpus, folder: Path, i: int) -> tuple[str, str, int]:
    rel = f"p{i // 4:04d}/{i:06d}.dcm"
    if corpus.kind == "ct":
        pixels = anatomy(corpus.rows, corpus.cols, 0, 2100, np.int16, i)
        write_dicom(
            folder / rel,
            pixels,
            modality="CT",
            rescale=(1.0, -1024.0),
            windows=[(40.0, 400.0), (-600.0, 1500.0)],
            transfer_syntax=corpus.transfer_syntax,
        )
    elif corpus.kind == "cr":
        mono1 = i % 3 == 0
        lo, hi = (4095, 200) if mono1 else (200, 4095)
        pixels = anatomy(corpus.rows, corpus.cols, lo, hi, np.uint16, i)
        write_dicom(
            folder / rel,
            pixels,
            modality="CR",
            bits_stored=12,
            photometric="MONOCHROME1" if mono1 else "MONOCHROME2",
            transfer_syntax=corpus.transfer_syntax,
        )
    else:
        pixels = anatomy(corpus.rows, corpus.cols, 100, 3900, np.uint16, i)
        write_dicom(
            folder / rel,
            pixels,
            modality="MG",
            bits_stored=12,
            windows=[(2000.0, 3600.0)],
            transfer_syntax=corpus.transfer_syntax,
        )
    return f"{i:06d}", rel, i % 2


def make_corpus(corpus: Corpus, workdir: Path, scale: float) -> tuple[Path, Path]:
    """Generate (or reuse) a corpus; return its labels CSV and image folder."""
    count = max(4, int(corpus.count * scale))
    folder = workdir / "corpora" / f"{corpus.name}-{count}"
    labels = folder / "labels.csv"
    if not labels.exists():
        shutil.rmtree(folder, ignore_errors=True)
        print(f"generating {corpus.name}: {count} files of {corpus.rows}x{corpus.cols} ...", flush=True)
        rows = Parallel(n_jobs=-1)(delayed(_write_one)(corpus, folder / "images", i) for i in range(count))
        with open(labels, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image_id", "path", "target"])
            writer.writerows(rows)
    return labels, folder / "images"


def _tree_rss(pid: int) -> tuple[int, int]:
    """RSS in bytes of ``pid`` and the largest of its descendants."""

    def rss(p: int) -> int:
        try:
            with open(f"/proc/{p}/statm") as handle:
                return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            return 0

    def children(p: int) -> list[int]:
        out: list[int] = []
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as handle:
                    out += [int(c) for c in handle.read().split()]
        except OSError:
            pass
        return out

    stack, worker = children(pid), 0
    while stack:
        child = stack.pop()
        worker = max(worker, rss(child))
        stack += children(child)
    return rss(pid), worker


def run_process(cmd: list[str]) -> dict[str, Any]:
    """Run ``cmd``; return wall seconds and peak RSS of the parent and of the largest descendant."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peaks = [0, 0]

    def poll() -> None:
        while proc.poll() is None:
            parent, worker = _tree_rss(proc.pid)
            peaks[0], peaks[1] = max(peaks[0], parent), max(peaks[1], worker)
            time.sleep(0.05)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    _, err = proc.communicate()
    seconds = time.perf_counter() - started
    thread.join()
    if proc.returncode not in (0, 3):
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-2000:]}")
    return {"seconds": seconds, "parent_rss": peaks[0], "worker_rss": peaks[1]}


def sample_paths(corpus: Corpus, workdir: Path, scale: float, limit: int) -> list[Path]:
    """The first ``limit`` image files of a corpus (generated if needed)."""
    labels, images = make_corpus(corpus, workdir, scale)
    with open(labels) as handle:
        return [images / row["path"] for row in csv.DictReader(handle)][:limit]


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.glob("*.tfrec"))


def tools(labels: Path, images: Path, out: Path, size: int) -> dict[str, list[str]]:
    common = ["--labels", str(labels), "--images", str(images), "--out", str(out), "--size", str(size)]
    ours = [sys.executable, "-m", "dcm2tfrec", "convert", *common, "--overwrite", "--quiet"]
    return {
        "baseline": [sys.executable, str(BASELINE), *common],
        "dcm2tfrec": ours,
        "dcm2tfrec 1 worker": [*ours, "--workers", "1"],
        "dcm2tfrec exact": [*ours, "--exact-decode"],
        "dcm2tfrec exact 1 wkr": [*ours, "--exact-decode", "--workers", "1"],
    }


def bench_corpus(corpus: Corpus, workdir: Path, scale: float, repeats: int) -> dict[str, Any]:
    labels, images = make_corpus(corpus, workdir, scale)
    count = len(labels.read_text().splitlines()) - 1
    variants = ["baseline", "dcm2tfrec"]
    if corpus.kind in ("cr", "mg") and corpus.transfer_syntax in ("explicit_le", "j2k"):
        variants.append("dcm2tfrec 1 worker")
    if corpus.transfer_syntax in ("j2k", "htj2k"):
        variants.append("dcm2tfrec exact")
    if corpus.transfer_syntax == "j2k":
        variants.append("dcm2tfrec exact 1 wkr")
    results: dict[str, Any] = {v: {"runs": []} for v in variants}
    for repeat in range(repeats):
        for variant in variants:
            out = workdir / "out" / corpus.name / variant.replace(" ", "_")
            shutil.rmtree(out, ignore_errors=True)
            run = run_process(tools(labels, images, out, corpus.size)[variant])
            run["bytes"] = _dir_bytes(out)
            results[variant]["runs"].append(run)
            print(
                f"  {corpus.name:<10} {variant:<20} run {repeat + 1}: {count / run['seconds']:8.1f} img/s",
                flush=True,
            )
    for data in results.values():
        runs = data["runs"]
        data["images_per_second"] = count / statistics.median(r["seconds"] for r in runs)
        data["parent_rss_mb"] = max(r["parent_rss"] for r in runs) / 1e6
        data["worker_rss_mb"] = max(r["worker_rss"] for r in runs) / 1e6
        data["output_bytes"] = runs[-1]["bytes"]
    base = results["baseline"]["images_per_second"]
    for data in results.values():
        data["ratio"] = data["images_per_second"] / base
    return {"corpus": corpus.name, "files": count, "size": corpus.size, "variants": results}


def print_table(rows: list[dict[str, Any]]) -> None:
    columns = ("img/s", "x base", "parent MB", "worker MB", "output MB")
    header = f"{'corpus':<10} {'tool':<20} " + " ".join(f"{c:>10}" for c in columns)
    print("\n" + header + "\n" + "-" * len(header))
    for row in rows:
        for variant, d in row["variants"].items():
            print(
                f"{row['corpus']:<10} {variant:<20} {d['images_per_second']:10.1f} {d['ratio']:10.2f} "
                f"{d['parent_rss_mb']:10.0f} {d['worker_rss_mb']:10.0f} {d['output_bytes'] / 1e6:10.1f}"
            )


def _into_page_cache(paths: Iterable[Path]) -> None:
    """Read every file once, so timed runs find them in memory."""
    for path in paths:
        path.read_bytes()


def _repeated_labels(labels: Path, out: Path, passes: int) -> int:
    """Copy ``labels`` to ``out`` with every row ``passes`` times (distinct ids); return the row count."""
    with open(labels, newline="") as handle:
        rows = list(csv.DictReader(handle))
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**row, "image_id": f"{row['image_id']}-{k}"} for k in range(passes) for row in rows)
    return len(rows) * passes


def scaling(workdir: Path, scale: float, repeats: int, passes: int = 3) -> dict[str, dict[str, Any]]:
    """2 workers vs 1 on CR and JPEG 2000 mammograms, whole process (alternating runs, medians),
    and split into start-up (process start to the first finished chunk: interpreter, imports,
    worker processes) and throughput after it (rows per second from the first chunk to the last).

    The labels list every file ``passes`` times (distinct ids), so that a run is long enough for a
    start-up of about a second not to hide how the work itself scales."""
    found: dict[str, dict[str, Any]] = {}
    for corpus in CORPORA:
        if corpus.name not in ("cr", "mg_j2k"):
            continue
        corpus_labels, images = make_corpus(corpus, workdir, scale)
        labels = workdir / f"labels-scaling-{corpus.name}.csv"
        count = _repeated_labels(corpus_labels, labels, passes)
        _into_page_cache(images.rglob("*.dcm"))  # as the baseline's runs leave them for the others
        runs: dict[int, list[dict[str, float]]] = {1: [], 2: []}
        for _ in range(repeats):
            for workers, found_runs in runs.items():
                out = workdir / "out" / "scaling" / f"{corpus.name}-{workers}"
                args = [str(labels), str(images), str(out), str(corpus.size), str(workers)]
                started = time.time()
                done = subprocess.run(
                    [sys.executable, str(PROBE), *args], capture_output=True, text=True, check=True
                )
                ended = time.time()
                marks = json.loads(done.stdout.splitlines()[-1])
                (t0, n0), (t1, n1) = marks["first"], marks["last"]
                found_runs.append(
                    {"seconds": ended - started, "startup": t0 - started, "rate": (n1 - n0) / (t1 - t0)}
                )
        medians = {w: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for w, rs in runs.items()}
        found[corpus.name] = {
            "rows": count,
            "passes": passes,
            "workers": medians,
            "whole_process_ratio": medians[1]["seconds"] / medians[2]["seconds"],
            "throughput_ratio": medians[2]["rate"] / medians[1]["rate"],
        }
    print(
        f"\nscaling, 2 workers vs 1, every file {passes} times: whole process, start-up, throughput after it"
    )
    print(f"{'corpus':<10} {'rows':>6} {'workers':>7} {'seconds':>8} {'start-up s':>10} {'img/s after':>12}")
    for name, data in found.items():
        for workers, row in data["workers"].items():
            print(
                f"{name:<10} {data['rows']:>6} {workers:>7} {row['seconds']:8.2f} {row['startup']:10.2f} "
                f"{row['rate']:12.1f}"
            )
        print(
            f"{name:<10} 2 vs 1: whole process {data['whole_process_ratio']:.2f}x, "
            f"after start-up {data['throughput_ratio']:.2f}x"
        )
    return found


def profile(workdir: Path, scale: float, limit: int = 40) -> dict[str, dict[str, float]]:
    """Milliseconds per image for each stage of the worker, in this process, one core."""
    import pydicom

    from dcm2tfrec import image
    from dcm2tfrec.config import ImageSpec
    from dcm2tfrec.dicom import check_header, check_pixel_data, decode_pixels
    from dcm2tfrec.pixels import to_output
    from dcm2tfrec.records import make_record
    from dcm2tfrec.tfrecord import frame

    stages: dict[str, dict[str, float]] = {}
    for corpus in CORPORA:
        if corpus.transfer_syntax not in ("explicit_le", "j2k"):
            continue
        paths = sample_paths(corpus, workdir, scale, limit)
        _into_page_cache(paths)  # time the stages, not the disk
        spec = ImageSpec(width=corpus.size, height=corpus.size)
        totals = dict.fromkeys(
            ("read", "checks", "decode", "resize", "pixels", "place", "png", "record"), 0.0
        )
        for path in paths:
            t0 = time.perf_counter()
            ds = pydicom.dcmread(path)
            tr = time.perf_counter()
            rows, cols, _ = check_header(ds, spec.max_pixels)
            check_pixel_data(ds, str(ds.file_meta.TransferSyntaxUID), rows, cols)
            t1 = time.perf_counter()
            pixels = decode_pixels(ds, spec)
            t2 = time.perf_counter()
            small = image.scale(pixels, spec)
            t3 = time.perf_counter()
            out = to_output(small, ds, spec)
            t4 = time.perf_counter()
            img = image.place(out, spec)
            t5 = time.perf_counter()
            png = image.encode_png(img, spec.png_level)
            t6 = time.perf_counter()
            frame(make_record(png, 0, "id", *img.shape))
            t7 = time.perf_counter()
            steps = (tr - t0, t1 - tr, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5, t7 - t6)
            for key, dt in zip(totals, steps, strict=True):
                totals[key] += dt
        stages[corpus.name] = {k: 1000 * v / len(paths) for k, v in totals.items()}
    print("\nper-stage cost, ms per image on one core")
    print(f"{'corpus':<10} " + " ".join(f"{k:>8}" for k in next(iter(stages.values()))) + f" {'total':>8}")
    for name, costs in stages.items():
        print(f"{name:<10} " + " ".join(f"{v:8.2f}" for v in costs.values()) + f" {sum(costs.values()):8.2f}")
    return stages


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def fidelity(workdir: Path, scale: float, limit: int = 12) -> dict[str, float]:
    """PSNR of reduced-resolution decoding against exact decoding, 8-bit output at the corpus size."""
    import pydicom

    from dcm2tfrec.config import ImageSpec
    from dcm2tfrec.dicom import decode_pixels
    from dcm2tfrec.worker import render

    result = {}
    for corpus in CORPORA:
        if corpus.transfer_syntax not in ("j2k", "htj2k"):
            continue
        paths = sample_paths(corpus, workdir, scale, limit)
        values = []
        for path in paths:
            ds = pydicom.dcmread(path)
            outs = []
            for exact in (True, False):
                spec = ImageSpec(width=corpus.size, height=corpus.size, exact_decode=exact)
                outs.append(render(decode_pixels(ds, spec), ds, spec))
            values.append(psnr(*outs))
        result[corpus.name] = min(values)
        print(
            f"reduced-resolution decoding, {corpus.name}: PSNR vs exact >= {min(values):.1f} dB "
            f"(mean {np.mean(values):.1f} dB over {len(values)} files)"
        )
    return result


def memory_growth(workdir: Path, scale: float) -> dict[str, float]:
    """Parent peak RSS converting 1,000 and 20,000 rows (the CT files, listed repeatedly)."""
    ct = CORPORA[0]
    labels, images = make_corpus(ct, workdir, scale)
    with open(labels) as handle:
        base_rows = list(csv.DictReader(handle))
    result = {}
    for n in (1000, 20000):
        big = workdir / f"labels-{n}.csv"
        with open(big, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image_id", "path", "target"])
            writer.writerows((f"r{i:06d}", base_rows[i % len(base_rows)]["path"], i % 2) for i in range(n))
        out = workdir / "out" / f"memory-{n}"
        run = run_process(
            [
                sys.executable,
                "-m",
                "dcm2tfrec",
                "convert",
                "--labels",
                str(big),
                "--images",
                str(images),
                "--out",
                str(out),
                "--size",
                "64",
                "--overwrite",
                "--quiet",
            ]
        )
        result[f"parent_rss_mb_{n}"] = run["parent_rss"] / 1e6
        result[f"worker_rss_mb_{n}"] = run["worker_rss"] / 1e6
        shutil.rmtree(out, ignore_errors=True)
    result["parent_growth_mb"] = result["parent_rss_mb_20000"] - result["parent_rss_mb_1000"]
    print(
        f"\nmemory: parent peak RSS {result['parent_rss_mb_1000']:.0f} MB at 1,000 rows, "
        f"{result['parent_rss_mb_20000']:.0f} MB at 20,000 rows "
        f"(growth {result['parent_growth_mb']:.0f} MB); "
        f"largest worker {result['worker_rss_mb_20000']:.0f} MB"
    )
    return result


def help_latency() -> dict[str, float]:
    result = {}
    for args in (["--help"], ["convert", "--help"]):
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "dcm2tfrec", *args], stdout=subprocess.DEVNULL, check=True)
            times.append(time.perf_counter() - t0)
        result[" ".join(args)] = statistics.median(times)
        print(f"dcm2tfrec {' '.join(args)}: {statistics.median(times) * 1000:.0f} ms (median of 5)")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench-out")
    parser.add_argument("--corpora", default=",".join(c.name for c in CORPORA))
    parser.add_argument("--repeats", type=int, default=3, help="runs per tool and corpus (medians)")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of each corpus's file count")
    parser.add_argument("--quick", action="store_true", help="scale 0.1, one repeat")
    parser.add_argument("--skip", default="", help="comma list of: scaling,profile,fidelity,memory,help")
    args = parser.parse_args()
    if args.quick:
        args.scale, args.repeats = 0.1, 1
    skip = set(args.skip.split(","))
    args.workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "scale": args.scale,
        "repeats": args.repeats,
    }
    if "help" not in skip:
        results["help_seconds"] = help_latency()
    chosen = [c for c in CORPORA if c.name in args.corpora.split(",")]
    results["corpora"] = [bench_corpus(c, args.workdir, args.scale, args.repeats) for c in chosen]
    print_table(results["corpora"])
    if "scaling" not in skip:
        results["scaling"] = scaling(args.workdir, args.scale, args.repeats)
    if "profile" not in skip:
        results["profile_ms"] = profile(args.workdir, args.scale)
    if "fidelity" not in skip:
        results["psnr_db"] = fidelity(args.workdir, args.scale)
    if "memory" not in skip:
        results["memory"] = memory_growth(args.workdir, args.scale)
    path = args.workdir / "results.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
