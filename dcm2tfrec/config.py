"""Frozen option dataclasses: the one home of every option's default, choices and validation.

The command line derives its defaults and choices from here (:func:`default`). Paths are strings,
so that a URL never turns into a mangled local path.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from .errors import ConfigError

ResizeMode = Literal["stretch", "letterbox", "crop"]
WindowMode = Literal["auto", "none", "fixed"]

RESIZE_MODES: tuple[str, ...] = get_args(ResizeMode)
#: What a multi-frame file gives: ``reject`` it (the default: one row stays one record, nothing is
#: guessed), its ``first`` or ``middle`` frame, or ``all`` frames as one record each.
FramesMode = Literal["reject", "first", "middle", "all"]
ImageFormat = Literal["png", "jpeg"]
Compression = Literal["none", "gzip"]
COMPRESSIONS: tuple[str, ...] = get_args(Compression)
IMAGE_FORMATS: tuple[str, ...] = get_args(ImageFormat)
FRAMES_MODES: tuple[str, ...] = get_args(FramesMode)
#: ``--stack``: 1 (no stack) or 3 neighbouring frames (a PNG holds at most 4 channels; centred needs odd).
STACKS = (1, 3)
CHANNELS = (1, 3)
BITS = (8, 16)
PNG_LEVELS = range(10)
MAX_SIDE = 16384
#: Shard prefixes and split names: they become file names.
_NAME = re.compile(r"[A-Za-z0-9_.]+")


@dataclass(frozen=True)
class Window:
    """How 8-bit output is windowed: the file's own VOI (auto), min-max (none) or fixed C/W."""

    mode: WindowMode = "auto"
    center: float | None = None
    width: float | None = None

    def __str__(self) -> str:
        return f"{self.center:g},{self.width:g}" if self.mode == "fixed" else self.mode

    @classmethod
    def parse(cls, text: str) -> Window:
        """``auto``, ``none`` or ``CENTER,WIDTH`` (modality units, e.g. ``40,400``): the one parser of
        the window text, for the command line and for the manifest's ``config.image.window``."""
        low = str(text).strip().lower()
        if low in ("auto", "none"):
            return cls(mode=low)  # type: ignore[arg-type]
        try:
            center, width = (float(v) for v in low.split(","))
        except ValueError:
            raise ConfigError(f"--window {text!r}: expected auto, none or CENTER,WIDTH") from None
        if not (math.isfinite(center) and math.isfinite(width)):
            raise ConfigError(f"--window {text!r}: the center and width must be finite numbers")
        if width < 1:
            raise ConfigError(f"--window {text!r}: the width must be at least 1")
        return cls(mode="fixed", center=center, width=width)


@dataclass(frozen=True)
class ImageSpec:
    """What each output image looks like and how pixels get there (the pixel policy)."""

    width: int = 256
    height: int = 256
    resize: ResizeMode = "stretch"
    channels: int = 1
    bits: int = 8
    window: Window = field(default_factory=Window)
    #: Several ``--window``: one per channel, in order (8-bit: the 3 channels; 16-bit: recorded for
    #: the reader, which makes the channels); ``window`` is the first of them.
    channel_windows: tuple[Window, ...] = ()
    png_level: int = 1
    #: How images are stored: ``png`` (lossless) or ``jpeg`` (8-bit only, at ``jpeg_quality``).
    format: ImageFormat = "png"
    jpeg_quality: int = 95
    #: Reject images whose header declares more rows x columns x frames, before decoding.
    max_pixels: int = 200_000_000
    #: False: JPEG 2000 / HTJ2K are decoded at the coarsest resolution level that is still at
    #: least the output size (much faster; see README). True: always full resolution.
    exact_decode: bool = False
    #: What a multi-frame file gives (see :data:`FramesMode`); every mode but ``reject`` stores ``frame``.
    frames: FramesMode = "reject"
    #: 2.5D: with ``frames="all"``, 3 puts each frame and its two neighbours into the 3 channels.
    stack: int = 1
    #: Cut the image to its anatomy's box before resizing (see :mod:`.crop`); stores ``crop``.
    crop_foreground: bool = False
    #: 3D: one record per row, the slices of a multi-frame file or of a series folder, in order.
    volume: bool = False
    #: With ``volume``: resample along the slice axis to exactly this many slices (0: native depth).
    depth: int = 0
    #: auto-window fallback when a file carries no VOI: these percentiles of the image's
    #: modality values map to 0 and 255 (min-max when they coincide).
    fallback_percentiles: tuple[float, float] = (0.5, 99.5)

    def __post_init__(self) -> None:
        if not (1 <= self.width <= MAX_SIDE and 1 <= self.height <= MAX_SIDE):
            raise ConfigError(f"--size {self.width}x{self.height}: each side must be 1..{MAX_SIDE}")
        if self.resize not in RESIZE_MODES:
            raise ConfigError(f"--resize must be one of {', '.join(RESIZE_MODES)}")
        if self.frames not in FRAMES_MODES:
            raise ConfigError(f"--frames must be one of {', '.join(FRAMES_MODES)}")
        if self.channels not in CHANNELS:
            raise ConfigError("--channels must be 1 or 3")
        if self.channel_windows:
            self._check_channel_windows()
        if self.stack not in STACKS:
            raise ConfigError("--stack must be 1 or 3 (a frame and its two neighbours in the channels)")
        if self.stack > 1 and self.frames != "all":
            raise ConfigError("--stack 3 fills the 3 channels with neighbouring frames: add --frames all")
        if self.crop_foreground and (self.volume or self.stack > 1):
            raise ConfigError("--crop-foreground crops each image alone: it excludes --volume and --stack")
        if self.volume and (self.frames != "reject" or self.stack > 1):
            raise ConfigError("--volume takes every slice of a row; it excludes --frames and --stack")
        if self.depth < 0 or (self.depth and not self.volume):
            raise ConfigError("--depth N (N >= 1) resamples a volume: use it with --volume")
        if self.bits not in BITS:
            raise ConfigError("--bits must be 8 or 16")
        if self.png_level not in PNG_LEVELS:
            raise ConfigError("--png-level must be between 0 and 9")
        if self.format not in IMAGE_FORMATS:
            raise ConfigError(f"--format must be one of {', '.join(IMAGE_FORMATS)}")
        if self.format == "jpeg" and self.bits != 8:
            raise ConfigError("--format jpeg stores 8-bit images; 16-bit records stay PNG (lossless)")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError("--jpeg-quality must be between 1 and 100")
        if self.max_pixels < 1:
            raise ConfigError("--max-pixels must be at least 1")

    def _check_channel_windows(self) -> None:
        windows = self.channel_windows
        if self.window != windows[0]:
            raise ConfigError("the first of several windows must be the window")
        if self.bits == 8 and (len(windows) != 3 or self.channels != 3):
            raise ConfigError("several --window fill the channels: give 3 with --channels 3")
        if self.bits == 16 and (self.channels != 1 or any(w.mode != "fixed" for w in windows)):
            raise ConfigError(
                "16-bit records store modality values in one channel: several --window (each "
                "CENTER,WIDTH) are recorded for the reader; use --channels 1"
            )
        if self.stack > 1:
            raise ConfigError("--stack fills the channels with frames: it excludes several --window")


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
    #: The CSV's delimiter; None = detected from the header line (``,`` ``;`` tab ``|``).
    delimiter: str | None = None
    #: A set without targets (a Kaggle test set): records carry no ``target``.
    no_target: bool = False
    #: With ``--volume``: the column holding the SeriesInstanceUID to keep from a folder of several.
    series_col: str | None = None

    def __post_init__(self) -> None:
        if self.delimiter is not None:
            named = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
            object.__setattr__(self, "delimiter", named.get(self.delimiter, self.delimiter))
            if len(self.delimiter) != 1 or self.delimiter in '"\r\n ':
                raise ConfigError(f"--delimiter {self.delimiter!r}: give one character, e.g. ';' or tab")


#: ConvertConfig fields that do not shape the output bytes (left out of the manifest and fingerprint).
RUN_ONLY = (
    "workers",
    "overwrite",
    "resume",
    "chunk_size",
    "timeout",
    "worker_memory",
    "storage_options",
    "dask",
)


@dataclass(frozen=True)
class ConvertConfig:
    """Everything a conversion run needs; invalid options raise ConfigError when it is built."""

    #: The labels CSV, the images root and the output folder (a ``Path`` is stored as its string).
    labels: str
    images: str
    out: str
    columns: Columns = field(default_factory=Columns)
    image: ImageSpec = field(default_factory=ImageSpec)
    records_per_shard: int = 1000
    prefix: str = "train"
    #: Worker processes; 0 = every core.
    workers: int = 0
    seed: int = 42
    shuffle: bool = True
    overwrite: bool = False
    #: Continue the interrupted run in ``out`` (its journal), keeping its verified shards.
    resume: bool = False
    allow_outside_root: bool = False
    index: bool = False
    #: ``gzip``: shards are one gzip stream each (TFRecordWriter's ``compression_type="GZIP"``).
    compression: Compression = "none"
    #: Per-row time limit in seconds; a row over it becomes a 'timeout' failure.
    timeout: float = 300.0
    #: Address-space cap per worker process in MiB (RLIMIT_AS); 0 = no cap.
    worker_memory: int = 8192
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
    #: fsspec options for URL paths, beyond each filesystem's own environment (``KEY=VALUE`` pairs).
    storage_options: tuple[tuple[str, str], ...] = ()
    #: Run on a Dask cluster: ``tcp://host:8786``, a scheduler file, or ``local:N``; None = this machine.
    dask: str | None = None
    #: The labels CSV's bytes when they come from memory (a DataFrame); ``labels`` then only names them.
    labels_data: bytes | None = field(default=None, repr=False)

    @property
    def storage(self) -> dict[str, Any]:
        """The storage options as fsspec takes them (``true``/``false``/numbers parsed as JSON)."""
        return storage_dict(self.storage_options)

    @classmethod
    def from_options(cls, **options: Any) -> ConvertConfig:
        """A config from flat options named like the command line's: every field of ConvertConfig,
        :class:`Columns` and :class:`ImageSpec`, plus ``size``. Text is parsed as the command line
        parses it (``size="512x384"``, ``window="40,400"``, ``split="train=0.8,val=0.2"``); None
        means the default. The command line's singular names of repeatable options work too
        (``dicom_tag="ViewPosition"`` = ``dicom_tags=["ViewPosition"]``), and ``class_map`` may be
        a dict ``{"name": id}``, ``storage_options`` a dict."""
        options = {_ALIASES.get(k, k): v for k, v in options.items() if v is not None}
        for key in _REPEATABLE & set(options):
            if isinstance(options[key], str):
                options[key] = (options[key],)
        if isinstance(options.get("storage_options"), dict):
            options["storage_options"] = [
                (k, v if isinstance(v, str) else json.dumps(v)) for k, v in options["storage_options"].items()
            ]
        if isinstance(options.get("class_map"), dict):
            options["class_map"] = json.dumps(options["class_map"])
        image: dict[str, Any] = {}
        if "size" in options:
            image["width"], image["height"] = parse_size(str(options.pop("size")))
        image |= {k: options.pop(k) for k in _field_names(ImageSpec) if k in options}
        windows = image.get("window")
        if isinstance(windows, (list, tuple)):
            parsed = tuple(w if isinstance(w, Window) else Window.parse(w) for w in windows)
            image["window"] = parsed[0] if parsed else Window()
            if len(parsed) > 1:
                image["channel_windows"] = parsed
        elif isinstance(windows, str):
            image["window"] = Window.parse(windows)
        image |= {
            k: int(image[k]) for k in ("channels", "bits", "stack", "depth", "jpeg_quality") if k in image
        }
        columns = {k: options.pop(k) for k in _field_names(Columns) if k in options}
        if "extra_cols" in columns:
            columns["extra_cols"] = tuple(columns["extra_cols"])
        if isinstance(options.get("split"), str):
            options["split"] = parse_split(options["split"])
        if "dicom_tags" in options:
            options["dicom_tags"] = tuple(options["dicom_tags"])
        if "storage_options" in options:
            options["storage_options"] = tuple(parse_storage_option(o) for o in options["storage_options"])
        known = _field_names(cls) - {"columns", "image"}
        unknown = sorted(set(options) - known)
        if unknown:
            everything = known | _field_names(Columns) | _field_names(ImageSpec) | {"size"}
            named = [_with_hint(name, everything) for name in unknown]
            raise ConfigError(f"unknown option(s) {', '.join(named)}")
        return cls(columns=Columns(**columns), image=ImageSpec(**image), **options)

    def __post_init__(self) -> None:
        for key in ("labels", "images", "out"):
            object.__setattr__(self, key, os.fspath(getattr(self, key)))
        self._validate()

    def _validate(self) -> None:
        if self.records_per_shard < 1:
            raise ConfigError("--records-per-shard must be at least 1")
        if not _NAME.fullmatch(self.prefix):
            raise ConfigError(f"--prefix {self.prefix!r}: use letters, digits, '_' and '.' only")
        if self.workers < 0 or self.chunk_size < 0 or self.worker_memory < 0:
            raise ConfigError("--workers and --worker-memory must be at least 0")
        if self.timeout <= 0:
            raise ConfigError("--timeout must be positive")
        if self.resume and self.overwrite:
            raise ConfigError(
                "--resume keeps an interrupted run and --overwrite replaces it: pass one of them"
            )
        if self.compression not in COMPRESSIONS:
            raise ConfigError(f"--compression must be one of {', '.join(COMPRESSIONS)}")
        if self.compression == "gzip" and self.index:
            raise ConfigError(
                "--index offsets address bytes of the file, which a gzip stream cannot seek to: "
                "use --compression none with --index"
            )
        if self.split and self.folds:
            raise ConfigError("--split and --folds exclude each other: pass one of them")
        if self.folds == 1 or self.folds < 0:
            raise ConfigError("--folds needs at least 2 folds")
        bad = [name for name, _ in self.split if not _NAME.fullmatch(name)]
        if bad:
            raise ConfigError(f"--split name {bad[0]!r}: use letters, digits, '_' and '.' only")
        if self.columns.series_col and not self.image.volume:
            raise ConfigError("--series-col picks the series of a --volume folder: add --volume")
        if self.columns.no_target and (self.stratify or self.columns.class_map):
            raise ConfigError("--stratify and --class-map need targets; --no-target has none")
        if (self.columns.group_col or self.stratify) and not (self.split or self.folds):
            raise ConfigError("--group-col and --stratify apply to --split or --folds; pass one of them")

    def describe(self) -> dict[str, Any]:
        """The options that define the output, as JSON-ready data (for the manifest)."""
        data = dataclasses.asdict(self)
        for key in ("labels", "images", "out"):
            if "://" not in data[key] and not (key == "labels" and self.labels_data is not None):
                data[key] = str(Path(data[key]).resolve())
        data["image"]["window"] = str(self.image.window)
        data["image"]["channel_windows"] = [str(w) for w in self.image.channel_windows]
        for key in RUN_ONLY:
            data.pop(key)
        data.pop("labels_data")  # the labels' bytes are known by their SHA-256 (manifest, fingerprint)
        result: dict[str, Any] = json.loads(json.dumps(data))  # tuples -> lists, as read back
        return result


#: The command line's singular names of repeatable options, and the fields they fill.
_ALIASES = {"extra_col": "extra_cols", "dicom_tag": "dicom_tags", "storage_option": "storage_options"}
_REPEATABLE = set(_ALIASES.values())


def _with_hint(name: str, known: set[str]) -> str:
    close = difflib.get_close_matches(name, known, 1)
    return f"{name} (did you mean {close[0]}?)" if close else name


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def default(cls: type, name: str) -> Any:
    """The default of dataclass ``cls``'s field ``name`` (the command line's defaults come from here)."""
    spec = {f.name: f for f in dataclasses.fields(cls)}[name]
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return spec.default


def _option_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_storage_option(option: str | tuple[str, str]) -> tuple[str, str]:
    """``KEY=VALUE`` (or a pair) as a storage option; ConfigError without a key."""
    if isinstance(option, tuple):
        return option
    key, sep, value = option.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--storage-option {option!r}: expected KEY=VALUE, e.g. endpoint_url=http://...")
    return key.strip(), value


def storage_dict(options: Iterable[str | tuple[str, str]]) -> dict[str, Any]:
    """``KEY=VALUE`` texts (or pairs) as fsspec takes them: JSON values parsed (``true``, ``3``)."""
    return {key: _option_value(value) for key, value in map(parse_storage_option, options)}


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``256`` or ``WIDTHxHEIGHT`` (e.g. ``512x384``) into ``(width, height)``."""
    parts = text.lower().replace(" ", "").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"--size {text!r}: expected N or WIDTHxHEIGHT, e.g. 256 or 512x384") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1 or max(values) > MAX_SIDE:
        raise ConfigError(f"--size {text!r}: expected N or WIDTHxHEIGHT with 1 <= N <= {MAX_SIDE}")
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
