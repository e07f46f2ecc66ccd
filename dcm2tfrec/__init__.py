"""dcm2tfrec: DICOM folders plus a labels CSV -> training-ready, sharded TFRecords.

``import dcm2tfrec`` is cheap: TensorFlow is imported only when the reader is first used.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_READER = ("make_dataset", "parse_example")


def __getattr__(name: str) -> Any:
    if name in _READER:
        from . import reader

        return getattr(reader, name)
    raise AttributeError(f"module 'dcm2tfrec' has no attribute {name!r}")


__all__ = ["__version__", "make_dataset", "parse_example"]
