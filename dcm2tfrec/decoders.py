"""A pydicom decoding plugin of our own: imagecodecs (libjpeg-turbo 3, BSD) for JPEG Extended, whose
12-bit samples neither gdcm nor Pillow decode. :func:`register` adds it to pydicom's decoder.
"""

from __future__ import annotations

import importlib.util

from pydicom import uid
from pydicom.pixels import get_decoder
from pydicom.pixels.common import PhotometricInterpretation as PI
from pydicom.pixels.decoders.base import DecodeRunner

PLUGIN = "imagecodecs"
DECODER_DEPENDENCIES = {uid.JPEGExtended12Bit: ("imagecodecs>=2024.1",)}


def is_available(syntax: str) -> bool:
    """Whether the plugin can decode ``syntax`` here (pydicom's plugin interface)."""
    return syntax in DECODER_DEPENDENCIES and importlib.util.find_spec("imagecodecs") is not None


def _decode_frame(src: bytes, runner: DecodeRunner) -> bytes:
    """One JPEG Extended frame (8 or 12 bits) as raw bytes; colour comes back as RGB."""
    import imagecodecs

    pixels = imagecodecs.jpeg8_decode(src)
    if runner.samples_per_pixel == 3:
        runner.set_option("photometric_interpretation", PI.RGB)  # libjpeg-turbo converted it
    runner.set_option("bits_allocated", 8 * pixels.dtype.itemsize)
    return bytes(pixels.tobytes())


def register() -> None:
    """Add the plugin to pydicom's JPEG Extended decoder (once per process)."""
    decoder = get_decoder(uid.JPEGExtended12Bit)
    if PLUGIN not in decoder.available_plugins and is_available(uid.JPEGExtended12Bit):
        decoder.add_plugin(PLUGIN, (__name__, "_decode_frame"))
