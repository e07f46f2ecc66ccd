"""Run ``dcm2tfrec.convert`` as a training script would and print when rows were done, as JSON.

    python scripts/probe_convert.py LABELS IMAGES OUT SIZE WORKERS

Prints ``{"first": [unix time, rows], "last": [unix time, rows]}``: the wall clock when the first
chunk and the last chunk were accounted for (the progress callback). ``scripts/bench.py`` uses it
to split a run into start-up and throughput. Imports only what the CLI's convert imports.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from dcm2tfrec.config import ConvertConfig, ImageSpec
from dcm2tfrec.convert import convert


def main(labels: str, images: str, out: str, size: str, workers: str) -> None:
    marks: list[tuple[float, int]] = []
    config = ConvertConfig(
        labels=Path(labels),
        images=Path(images),
        out=Path(out),
        image=ImageSpec(width=int(size), height=int(size)),
        workers=int(workers),
        overwrite=True,
    )
    convert(config, lambda done, total, rejected: marks.append((time.time(), done)))
    first = next(mark for mark in marks if mark[1] > 0)
    print(json.dumps({"first": first, "last": marks[-1]}))


if __name__ == "__main__":
    main(*sys.argv[1:])
