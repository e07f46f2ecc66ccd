"""The one error hierarchy, the row rejection reasons (with their descriptions) and the exit codes.

Library errors carry the command line's exit code, so the CLI maps every one of them in one place.
A bad row is never an exception that escapes: it becomes a :class:`Failure` with a :class:`Reason`.
"""

from __future__ import annotations

import errno
from dataclasses import asdict, dataclass
from enum import Enum, IntEnum
from typing import Any


class ExitCode(IntEnum):
    """Exit codes of the command line (the README's table)."""

    OK = 0
    UNEXPECTED = 1
    USAGE = 2
    REJECTED = 3
    HANGUP = 129  # SIGHUP: 128 + its number, as shells report a signal
    INTERRUPTED = 130  # SIGINT (Ctrl-C)
    TERMINATED = 143  # SIGTERM (docker stop, systemd, SLURM)


class Reason(str, Enum):
    """Why a CSV row did not become a record: the ``reason`` column of errors.csv."""

    description: str

    def __new__(cls, value: str, description: str) -> Reason:
        member = str.__new__(cls, value)
        member._value_ = value
        member.description = description
        return member

    def __str__(self) -> str:
        return str(self.value)

    @classmethod
    def of(cls, text: str) -> Reason:
        """The reason written ``text``; ValueError for an unknown one."""
        for reason in cls:
            if reason.value == text:
                return reason
        raise ValueError(f"{text!r} is not a rejection reason")

    BAD_TARGET = (
        "bad_target",
        "the target is empty, not an integer (`1.5`, `abc`, `1e3`; `1.0` is read as 1), outside int64, "
        "or not in the `--class-map`",
    )
    MISSING_GROUP = (
        "missing_group",
        "the `--group-col` cell is empty, so the row cannot be kept with its group",
    )
    BAD_VALUE = (
        "bad_value",
        "an `--extra-col` cell cannot be stored as its column's kind (a float beyond float32's range, "
        "about ±3.4e38)",
    )
    MISSING_ID = (
        "missing_id",
        "the id cell is empty",
    )
    DUPLICATE_ID = (
        "duplicate_id",
        "the id appeared on an earlier line that was kept; the first occurrence the labels accept "
        "is the one kept",
    )
    MISSING_PATH = (
        "missing_path",
        "the path cell, or a field of `--path-template`, is empty",
    )
    OUTSIDE_ROOT = (
        "outside_root",
        "the path resolves outside `--images` (see `--allow-outside-root`)",
    )
    MIXED_SERIES = (
        "mixed_series",
        "with `--volume`, the folder holds slices of several series and `--series-col` names none of "
        "them (or one it does not hold)",
    )
    INCONSISTENT_SLICES = (
        "inconsistent_slices",
        "with `--volume`, the slices differ in orientation, size, photometric interpretation or "
        "samples per pixel, or a folder holds a multi-frame file",
    )
    DUPLICATE_SLICE = (
        "duplicate_slice",
        "with `--volume`, two slices lie at the same position (or share an InstanceNumber)",
    )
    MISSING_GEOMETRY = (
        "missing_geometry",
        "with `--volume`, a slice has neither ImagePositionPatient with ImageOrientationPatient nor "
        "an InstanceNumber, so the slices cannot be ordered",
    )
    UNEVEN_SPACING = (
        "uneven_spacing",
        "with `--volume`, a gap between neighbouring slices differs from the median gap by more "
        "than 10% (a missing slice?)",
    )
    FILE_MISSING = (
        "file_missing",
        "no file there (or a dangling symlink)",
    )
    NOT_A_FILE = (
        "not_a_file",
        "a folder (without `--volume`) or other non-regular file",
    )
    UNREADABLE = (
        "unreadable",
        "the file is there but cannot be read (permission denied, an I/O error)",
    )
    NOT_DICOM = (
        "not_dicom",
        "not a DICOM file pydicom can parse",
    )
    NO_PIXEL_DATA = (
        "no_pixel_data",
        "no Pixel Data (e.g. a structured report)",
    )
    UNSUPPORTED = (
        "unsupported",
        "DICOM, but outside the pixel policy (multi-frame without `--frames` or `--volume`, a transfer "
        "syntax without a decoder, an unknown photometric interpretation)",
    )
    BAD_HEADER = (
        "bad_header",
        "image attributes missing or inconsistent: Rows/Columns 0 or absent, BitsAllocated not 1/8/16/32,"
        " SamplesPerPixel contradicting the photometric interpretation, no transfer syntax that can be "
        "inferred",
    )
    TOO_LARGE = (
        "too_large",
        "the header declares more than `--max-pixels`; nothing was decoded",
    )
    TRUNCATED = (
        "truncated",
        "the file, its pixel data or its codestream ends early (no EOI/EOC marker, short native pixel "
        "data, RLE offsets past the end)",
    )
    PIXEL_DATA_MISMATCH = (
        "pixel_data_mismatch",
        "native pixel data longer than declared by more than the 1-byte pad (e.g. a second frame without "
        "NumberOfFrames)",
    )
    HEADER_MISMATCH = (
        "header_mismatch",
        "the codestream's own size (JPEG/JPEG-LS SOF, J2K SIZ) or the decoded size disagrees with "
        "Rows/Columns",
    )
    DECODE_FAILED = (
        "decode_failed",
        "the decoder failed, or pydicom / the decoder warned of damage "
        "(end of file, truncation, excess data)",
    )
    PIXEL_ERROR = (
        "pixel_error",
        "the pixel pipeline (LUT, window, resize, PNG) failed",
    )
    BAD_MASK = (
        "bad_mask",
        "the `--mask-col` file is missing, unreadable, not one channel of labels 0..255, or not the "
        "image's size",
    )
    OUT_OF_MEMORY = (
        "out_of_memory",
        "the row needed more than `--worker-memory`",
    )
    WORKER_CRASHED = (
        "worker_crashed",
        "the worker process died on this row (segfault, abort, killed); the run went on",
    )
    TIMEOUT = (
        "timeout",
        "the row took longer than `--timeout`; its worker was killed and the run went on",
    )


@dataclass(frozen=True)
class Failure:
    """A rejected CSV row: its 1-based CSV line, id, path, a :class:`Reason` and a message."""

    line: int
    image_id: str
    path: str
    reason: str
    message: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", Reason.of(self.reason).value)  # a known reason, stored as text

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Note:
    """A warning pydicom or a decoder gave while converting a row that was kept: line, id, message."""

    line: int
    image_id: str
    message: str


class Dcm2TfrecError(Exception):
    """Base class of the errors the library raises on purpose; ``exit_code`` is the CLI's."""

    exit_code: int = ExitCode.UNEXPECTED


class ConfigError(Dcm2TfrecError):
    """Bad options, a bad or unreadable labels CSV, or an output folder that cannot be used.

    Raised before anything is written.
    """

    exit_code = ExitCode.USAGE


class OutputError(Dcm2TfrecError):
    """Writing the output failed (disk full, permissions); the message names the path."""


class EngineError(Dcm2TfrecError):
    """The engine could not start or keep its workers (no temporary directory for the fork
    server, no processes left); the message says why."""


class Stop(KeyboardInterrupt):
    """SIGTERM or SIGHUP turned into what Ctrl-C raises, so that every stop takes the same clean
    path; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


class Interrupted(Dcm2TfrecError):
    """The run was stopped (Ctrl-C, SIGTERM, SIGHUP); finished shards are kept, no partial shard is.
    The exit code is 128 + the signal's number."""

    exit_code: int = ExitCode.INTERRUPTED

    def __init__(self, message: str, signum: int = 2) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


def stop_signal(exc: KeyboardInterrupt) -> int:
    """The signal behind a KeyboardInterrupt (SIGINT unless a :class:`Stop` says otherwise)."""
    return exc.signum if isinstance(exc, Stop) else 2


class RowError(Dcm2TfrecError):
    """A row that cannot become a record; ``reason`` is its :class:`Reason`."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class DicomError(RowError):
    """A file that cannot become an image."""


class MaskError(RowError):
    """A ``--mask-col`` file that cannot be used."""

    def __init__(self, message: str) -> None:
        super().__init__(Reason.BAD_MASK, message)


class ShardCorrupt(Dcm2TfrecError):
    """A shard's framing or CRC is wrong; the message names the file, record and byte offset."""

    exit_code = ExitCode.USAGE


class ShardError(Dcm2TfrecError, ValueError):
    """Shards do not match their manifest, or cannot be read or split as asked; names the file."""

    exit_code = ExitCode.USAGE


def os_error_reason(exc: OSError) -> Reason:
    """The rejection reason of an OSError met while reading a row's file."""
    if isinstance(exc, FileNotFoundError) or exc.errno == errno.ENOENT:
        return Reason.FILE_MISSING
    if isinstance(exc, IsADirectoryError):
        return Reason.NOT_A_FILE
    return Reason.UNREADABLE
