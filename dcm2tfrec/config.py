"""Frozen configuration for a conversion run, option parsing helpers and the error types."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ResizeMode = Literal["stretch", "letterbox", "crop"]
WindowMode = Literal["auto", "none", "fixed"]

#: Exit codes of the command line (documented in the README).
EXIT_OK, EXIT_UNEXPECTED, EXIT_USAGE, EXIT_REJECTED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

#: Default limit on Rows x Columns x frames before anything is decoded.
DEFAULT_MAX_PIXELS = 200_000_000

#: Offset added to modality values in 16-bit records: png = round(modality value) + 32768,
#: so the whole signed 16-bit range (CT Hounsfield units included) is stored losslessly.
VALUE_OFFSET_16 = 32768


class Dcm2TfrecError(Exception):
    """Base class of the errors the library raises on purpose."""


class ConfigError(Dcm2TfrecError):
    """Bad options, a bad or unreadable labels CSV, or an output folder that cannot be used.

    Raised before anything is written.
    """


class OutputError(Dcm2TfrecError):
    """Writing the output failed (disk full, permissions); the message names the path."""


class Interrupted(Dcm2TfrecError):
    """The run was interrupted (Ctrl-C); finished shards are kept, no partial shard is."""


@dataclass(frozen=True)
class Window:
    """How 8-bit output is windowed: the file's own VOI (auto), min-max (none) or fixed C/W."""

    mode: WindowMode = "auto"
    center: float | None = None
    width: float | None = None

    def __str__(self) -> str:
        return f"{self.center:g},{self.width:g}" if self.mode == "fixed" else self.mode


@dataclass(frozen=True)
class ImageSpec:
    """What each output image looks like and how pixels get there (the pixel policy)."""

    width: int = 256
    height: int = 256
    resize: ResizeMode = "stretch"
    channels: int = 1
    bits: int = 8
    window: Window = field(default_factory=Window)
    png_level: int = 1
    max_pixels: int = DEFAULT_MAX_PIXELS
    #: False: JPEG 2000 / HTJ2K are decoded at the coarsest resolution level that is still at
    #: least the output size (much faster; see README). True: always full resolution.
    exact_decode: bool = False
    #: auto-window fallback when a file carries no VOI: these percentiles of the image's
    #: modality values map to 0 and 255 (min-max when they coincide).
    fallback_percentiles: tuple[float, float] = (0.5, 99.5)


@dataclass(frozen=True)
class Columns:
    """Which CSV columns hold the id, the path (or a path template), the target and the extras."""

    id_col: str = "image_id"
    path_col: str | None = "path"
    path_template: str | None = None
    target_col: str = "target"
    #: Rows sharing this column's value (e.g. a patient) always land in the same split or fold.
    group_col: str | None = None
    #: String targets: ``"auto"`` (sorted unique values -> 0..n-1) or a JSON file ``{name: id}``.
    class_map: str | None = None
    #: Extra columns stored as features, typed int64, float or bytes as the column allows.
    extra_cols: tuple[str, ...] = ()
    #: Column with a segmentation mask path (PNG, .npy or DICOM) under the images root.
    mask_col: str | None = None


@dataclass(frozen=True)
class ConvertConfig:
    """Everything a conversion run needs; build it with :func:`make_config` from user input."""

    labels: Path
    images: Path
    out: Path
    columns: Columns = field(default_factory=Columns)
    image: ImageSpec = field(default_factory=ImageSpec)
    records_per_shard: int = 1000
    prefix: str = "train"
    workers: int = 0
    seed: int = 42
    shuffle: bool = True
    overwrite: bool = False
    #: Continue the interrupted run in ``out`` (its journal), keeping its verified shards.
    resume: bool = False
    allow_outside_root: bool = False
    index: bool = False
    #: Per-row time limit in seconds; a row over it becomes a 'timeout' failure.
    timeout: float = 300.0
    #: Worker address-space cap in bytes (RLIMIT_AS); 0 = no cap.
    worker_memory: int = 8 << 30
    #: Rows per worker task; 0 = automatic (up to 8, and at least 8 tasks per worker).
    chunk_size: int = 0
    #: Named splits with their fractions, e.g. (("train", 0.8), ("val", 0.2)); each gets its shards.
    split: tuple[tuple[str, float], ...] = ()
    #: K > 1: K group-disjoint folds, shards ``fold0-*`` .. ``fold{K-1}-*``.
    folds: int = 0
    #: Balance the target's classes across splits / folds as far as the groups allow.
    stratify: bool = False
    #: DICOM header keywords stored as features (e.g. ViewPosition, InstanceNumber).
    dicom_tags: tuple[str, ...] = ()

    def rows_per_task(self, rows: int) -> int:
        """The chunk size for ``rows`` rows: ``chunk_size``, or one that balances the workers."""
        return self.chunk_size or max(1, min(8, rows // (self.n_workers * 8)))

    @property
    def n_workers(self) -> int:
        """The worker count to use: ``workers`` or, when 0, every core."""
        return self.workers if self.workers > 0 else (os.cpu_count() or 1)

    def describe(self) -> dict[str, Any]:
        """The options that define the output, as JSON-ready data (for the manifest)."""
        data = dataclasses.asdict(self)
        for key in ("labels", "images", "out"):
            data[key] = str(Path(data[key]).resolve())
        data["image"]["window"] = str(self.image.window)
        for key in ("workers", "overwrite", "resume", "chunk_size", "timeout", "worker_memory"):
            data.pop(key)
        result: dict[str, Any] = json.loads(json.dumps(data))  # tuples -> lists, as read back
        return result


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``256`` or ``WIDTHxHEIGHT`` (e.g. ``512x384``) into ``(width, height)``."""
    parts = text.lower().replace(" ", "").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"--size {text!r}: expected N or WIDTHxHEIGHT, e.g. 256 or 512x384") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1 or max(values) > 16384:
        raise ConfigError(f"--size {text!r}: expected N or WIDTHxHEIGHT with 1 <= N <= 16384")
    return values[0], values[1]


def parse_split(text: str) -> tuple[tuple[str, float], ...]:
    """Parse ``train=0.8,val=0.1,test=0.1`` into named fractions that sum to 1."""
    pairs: list[tuple[str, float]] = []
    for part in text.split(","):
        name, _, value = part.partition("=")
        try:
            fraction = float(value)
        except ValueError:
            raise ConfigError(
                f"--split {text!r}: expected NAME=FRACTION,..., e.g. train=0.8,val=0.2"
            ) from None
        if not name.strip() or not 0 < fraction <= 1:
            raise ConfigError(f"--split {text!r}: each part needs a name and a fraction in (0, 1]")
        pairs.append((name.strip(), fraction))
    names = [n for n, _ in pairs]
    if len(set(names)) != len(names):
        raise ConfigError(f"--split {text!r}: split names repeat")
    if abs(sum(f for _, f in pairs) - 1) > 1e-6:
        raise ConfigError(f"--split {text!r}: the fractions sum to {sum(f for _, f in pairs):g}, not 1")
    return tuple(pairs)


def parse_window(text: str) -> Window:
    """Parse ``auto``, ``none`` or ``CENTER,WIDTH`` (modality units, e.g. ``40,400``)."""
    low = text.strip().lower()
    if low in ("auto", "none"):
        return Window(mode=low)  # type: ignore[arg-type]
    try:
        center, width = (float(v) for v in low.split(","))
    except ValueError:
        raise ConfigError(f"--window {text!r}: expected auto, none or CENTER,WIDTH") from None
    if width < 1:
        raise ConfigError(f"--window {text!r}: the width must be at least 1")
    return Window(mode="fixed", center=center, width=width)


#: The pydicom decoding plugin pinned for each transfer syntax ("" = pydicom's own decoder), so
#: results never depend on which other plugins happen to be installed.
DECODING_PLUGINS: dict[str, str] = {
    "1.2.840.10008.1.2": "",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1": "",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.2": "",  # Explicit VR Big Endian
    "1.2.840.10008.1.2.1.99": "",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.5": "pylibjpeg",  # RLE Lossless (pylibjpeg-rle)
    "1.2.840.10008.1.2.4.50": "gdcm",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51": "gdcm",  # JPEG Extended (Process 2 and 4)
    "1.2.840.10008.1.2.4.57": "gdcm",  # JPEG Lossless, Non-Hierarchical (Process 14)
    "1.2.840.10008.1.2.4.70": "gdcm",  # JPEG Lossless, First-Order Prediction (SV1)
    "1.2.840.10008.1.2.4.80": "pyjpegls",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81": "pyjpegls",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90": "pylibjpeg",  # JPEG 2000 Lossless (pylibjpeg-openjpeg)
    "1.2.840.10008.1.2.4.91": "pylibjpeg",  # JPEG 2000
    "1.2.840.10008.1.2.4.201": "pylibjpeg",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202": "pylibjpeg",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203": "pylibjpeg",  # HTJ2K
}


#: Rejection reasons, as written in the ``reason`` column of errors.csv.
REASONS: dict[str, str] = {
    "bad_target": "the target is empty, not an integer, outside int64, or not in the class map",
    "missing_group": "the --group-col cell is empty, so the row cannot be kept with its group",
    "missing_id": "the id cell is empty",
    "duplicate_id": "the id appeared on an earlier CSV line (the first occurrence is the one kept)",
    "missing_path": "the path cell (or a path template field) is empty",
    "outside_root": "the path resolves outside --images (see --allow-outside-root)",
    "file_missing": "no file at the path (or a dangling symlink)",
    "not_a_file": "the path is a folder or another non-regular file",
    "not_dicom": "the file is not DICOM (no DICM preamble or header that pydicom can parse)",
    "no_pixel_data": "the dataset has no Pixel Data (e.g. a structured report)",
    "unsupported": "the image is DICOM but outside the pixel policy (e.g. multi-frame)",
    "bad_header": "image attributes are missing or inconsistent (Rows, Columns, bits, samples)",
    "too_large": "the declared image exceeds --max-pixels; nothing was decoded",
    "truncated": "the file or its pixel data / codestream ends early",
    "pixel_data_mismatch": "the pixel data is longer than the header declares (e.g. a frame too many)",
    "header_mismatch": "the codestream's own dimensions disagree with the DICOM header",
    "decode_failed": "the pixel data could not be decoded",
    "pixel_error": "the pixel pipeline (LUT, window, resize, PNG) failed",
    "bad_mask": "the mask file is missing, unreadable, or not the image's size",
    "out_of_memory": "decoding needed more memory than --worker-memory allows",
    "worker_crashed": "the worker process died on this row (abort, segfault, killed)",
    "timeout": "the row took longer than --timeout",
}


@dataclass(frozen=True)
class Failure:
    """A rejected CSV row: its 1-based CSV line, id, path, a reason from REASONS and a message."""

    line: int
    image_id: str
    path: str
    reason: str
    message: str


def pixel_policy(spec: ImageSpec) -> dict[str, Any]:
    """The pixel policy in words, for the manifest: what was done to every pixel."""
    if spec.bits == 16:
        intensity = (
            f"uint16 = round(modality value) + {VALUE_OFFSET_16}, clipped to 0..65535; "
            "no window applied (the window option is recorded for read time)"
        )
    elif spec.window.mode == "fixed":
        intensity = f"uint8 from the fixed LINEAR window {spec.window} (modality units)"
    elif spec.window.mode == "none":
        intensity = "uint8 from the image's own modality min..max, linear"
    else:
        lo, hi = spec.fallback_percentiles
        intensity = (
            "uint8 from the file's first VOI LUT (preferred) or first window, with its "
            f"VOILUTFunction (LINEAR, LINEAR_EXACT, SIGMOID); files without a usable one: "
            f"linear from the {lo:g}th to the {hi:g}th percentile of the image's modality values"
        )
    return {
        "decoders": dict(sorted(DECODING_PLUGINS.items())),
        "modality_lut": "pydicom apply_modality_lut (Modality LUT Sequence or RescaleSlope/Intercept)",
        "intensity": intensity,
        "monochrome1": "inverted after windowing (8-bit) or within the stored range (16-bit): bright = dense",
        "colour": "YBR converted to RGB by pydicom, palette colour via apply_color_lut, scaled to full range",
        "value_offset": VALUE_OFFSET_16 if spec.bits == 16 else 0,
        "multi_frame": "rejected (reason 'unsupported')",
        "order": "resize (INTER_AREA shrinking, INTER_CUBIC enlarging) on stored values, then the per-pixel "
        "intensity pipeline, then padding/cropping; palette colour goes through its colour LUT first",
        "decoding": "full resolution"
        if spec.exact_decode
        else "unsigned monochrome JPEG 2000 / HTJ2K decoded at the coarsest resolution level that is "
        "still at least the resized size (OpenJPEG reduce via Pillow); everything else at full resolution",
    }
