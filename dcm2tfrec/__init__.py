"""dcm2tfrec: DICOM folders plus a labels CSV -> training-ready, sharded TFRecords.

``import dcm2tfrec`` is cheap: no pixel stack, and TensorFlow only when the reader is first used.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from .config import Columns, ConvertConfig, ImageSpec, Window
from .convert import ConvertResult, convert
from .errors import (
    ConfigError,
    Dcm2TfrecError,
    ExitCode,
    Failure,
    Interrupted,
    OutputError,
    Reason,
    ShardCorrupt,
    ShardError,
)

_READER = ("make_dataset", "parse_example")


def __getattr__(name: str) -> Any:
    if name in _READER:
        try:
            from . import reader
        except ModuleNotFoundError as exc:
            if exc.name != "tensorflow":
                raise
            raise ImportError(
                f"dcm2tfrec.{name} reads shards with TensorFlow, which is not installed: "
                "pip install 'dcm2tfrec[tf]' (or 'dcm2tfrec[tf-cpu]')"
            ) from None
        return getattr(reader, name)
    raise AttributeError(f"module 'dcm2tfrec' has no attribute {name!r}")


__all__ = [
    "Columns",
    "ConfigError",
    "ConvertConfig",
    "ConvertResult",
    "Dcm2TfrecError",
    "ExitCode",
    "Failure",
    "ImageSpec",
    "Interrupted",
    "OutputError",
    "Reason",
    "ShardCorrupt",
    "ShardError",
    "Window",
    "__version__",
    "convert",
    "make_dataset",
    "parse_example",
]
