"""The pixel policy: the decoder pinned per transfer syntax, the libraries whose versions shape the
output bytes (the one versions list, which the fork server's preload list derives from), and the
manifest's account of what was done to every pixel.

Nothing here imports pydicom or OpenCV, so the parent process can describe a run without them.
"""

from __future__ import annotations

import functools
import importlib.util
import platform
from dataclasses import dataclass
from typing import Any

from .config import ImageSpec

#: Offset added to modality values in 16-bit records: png = round(modality value) + 32768,
#: so the whole signed 16-bit range (CT Hounsfield units included) is stored losslessly.
VALUE_OFFSET_16 = 32768

#: The pydicom decoding plugin pinned for each transfer syntax ("" = pydicom's own decoder), so
#: results never depend on which other plugins happen to be installed.
DECODING_PLUGINS: dict[str, str] = {
    "1.2.840.10008.1.2": "",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1": "",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.2": "",  # Explicit VR Big Endian
    "1.2.840.10008.1.2.1.99": "",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.5": "pylibjpeg",  # RLE Lossless (pylibjpeg-rle)
    "1.2.840.10008.1.2.4.50": "gdcm",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51": "imagecodecs",  # JPEG Extended, 8 and 12 bits (libjpeg-turbo 3)
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


#: Optional plugins that replace a pin when their package is installed: {syntax: (plugin, module)}.
#: The ``[gpl]`` extra's pylibjpeg-libjpeg then decodes JPEG Extended instead of imagecodecs.
OPTIONAL_PLUGINS: dict[str, tuple[str, str]] = {"1.2.840.10008.1.2.4.51": ("pylibjpeg", "libjpeg")}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a blocked import (sys.modules[module] is None)
        return False


@functools.cache
def decoding_plugins() -> dict[str, str]:
    """The plugin that decodes each transfer syntax in this installation: the pin, or the optional
    plugin that replaces it when its package is installed (without importing anything)."""
    plugins = dict(DECODING_PLUGINS)
    for syntax, (plugin, module) in OPTIONAL_PLUGINS.items():
        if _installed(module):
            plugins[syntax] = plugin
    return plugins


@dataclass(frozen=True)
class Library:
    """A distribution whose version shapes the output bytes, and the modules of it that the
    worker processes' fork server imports once (the default pipeline's hot path)."""

    distribution: str
    preload: tuple[str, ...] = ()


#: Every library that shapes the output bytes: recorded in the manifest, compared on ``--resume``.
OUTPUT_LIBRARIES: tuple[Library, ...] = (
    Library("dcm2tfrec", ("dcm2tfrec.worker", "dcm2tfrec.dicom", "dcm2tfrec.image", "dcm2tfrec.pixels")),
    Library("pydicom"),
    Library("numpy"),
    Library("opencv-python-headless"),
    Library("pillow", ("PIL.Jpeg2KImagePlugin",)),  # reduced JPEG 2000 / HTJ2K decoding
    Library("pylibjpeg"),
    Library("pylibjpeg-openjpeg", ("openjpeg",)),
    Library("pylibjpeg-rle"),
    Library("pylibjpeg-libjpeg"),
    Library("imagecodecs"),
    Library("pyjpegls"),
    Library("python-gdcm"),
    Library("google-crc32c"),
)

#: What the fork server imports before it forks any worker.
PRELOAD: tuple[str, ...] = tuple(module for library in OUTPUT_LIBRARIES for module in library.preload)


def library_versions() -> dict[str, str | None]:
    """Python's version and that of every :data:`OUTPUT_LIBRARIES` entry (None: not installed)."""
    from importlib import metadata

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for library in OUTPUT_LIBRARIES:
        try:
            versions[library.distribution] = metadata.version(library.distribution)
        except metadata.PackageNotFoundError:
            versions[library.distribution] = None
    return versions


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
        "decoders": dict(sorted(decoding_plugins().items())),
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
