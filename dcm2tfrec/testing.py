"""Real DICOM files made with pydicom, for the tests, the benchmarks and the demo.

Compressed files are encoded by pydicom's own encoders where it has one (RLE, JPEG-LS,
JPEG 2000) and by imagecodecs otherwise (JPEG baseline/lossless, HTJ2K); imagecodecs is a
development dependency, needed only for those transfer syntaxes.
"""

from __future__ import annotations

import csv
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pydicom
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence as DicomSequence

Encoder = Callable[[Dataset, np.ndarray], None]


def _compress_with(tsyntax: str, plugin: str, **kwargs: Any) -> Encoder:
    def encode(ds: Dataset, pixels: np.ndarray) -> None:
        ds.compress(tsyntax, encoding_plugin=plugin, **kwargs)

    return encode


def _encapsulate_with(tsyntax: str, codec: Callable[[np.ndarray, int], bytes]) -> Encoder:
    def encode(ds: Dataset, pixels: np.ndarray) -> None:
        frames = pixels if int(ds.get("NumberOfFrames") or 1) > 1 else [pixels]
        ds.PixelData = encapsulate([codec(frame, int(ds.BitsStored)) for frame in frames])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = uid.UID(tsyntax)
        if ds.SamplesPerPixel == 3 and tsyntax in (uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit):
            ds.PhotometricInterpretation = "YBR_FULL_422"

    return encode


def _jpeg(**kwargs: Any) -> Callable[[np.ndarray, int], bytes]:
    def codec(pixels: np.ndarray, bits: int) -> bytes:
        import imagecodecs

        return bytes(imagecodecs.jpeg8_encode(pixels, bitspersample=bits, **kwargs))

    return codec


def _htj2k(pixels: np.ndarray, bits: int) -> bytes:
    import imagecodecs

    return bytes(imagecodecs.htj2k_encode(pixels))


def _native(tsyntax: str) -> Encoder:
    def encode(ds: Dataset, pixels: np.ndarray) -> None:
        ds.file_meta.TransferSyntaxUID = uid.UID(tsyntax)
        if tsyntax == uid.ExplicitVRBigEndian and ds.BitsAllocated > 8:
            ds.PixelData = pixels.byteswap().tobytes()

    return encode


#: Transfer syntaxes we can produce, by short name: (UID, encoder, lossless?).
TRANSFER_SYNTAXES: dict[str, tuple[str, Encoder, bool]] = {
    "explicit_le": (uid.ExplicitVRLittleEndian, _native(uid.ExplicitVRLittleEndian), True),
    "implicit_le": (uid.ImplicitVRLittleEndian, _native(uid.ImplicitVRLittleEndian), True),
    "explicit_be": (uid.ExplicitVRBigEndian, _native(uid.ExplicitVRBigEndian), True),
    "deflate": (
        uid.DeflatedExplicitVRLittleEndian,
        _native(uid.DeflatedExplicitVRLittleEndian),
        True,
    ),
    "rle": (uid.RLELossless, _compress_with(uid.RLELossless, "pylibjpeg"), True),
    "jpeg_baseline": (
        uid.JPEGBaseline8Bit,
        _encapsulate_with(uid.JPEGBaseline8Bit, _jpeg(level=95)),
        False,
    ),
    "jpeg_extended": (
        uid.JPEGExtended12Bit,
        _encapsulate_with(uid.JPEGExtended12Bit, _jpeg(level=95)),
        False,
    ),
    "jpeg_lossless": (
        uid.JPEGLossless,
        _encapsulate_with(uid.JPEGLossless, _jpeg(lossless=True, predictor=5)),
        True,
    ),
    "jpeg_lossless_sv1": (
        uid.JPEGLosslessSV1,
        _encapsulate_with(uid.JPEGLosslessSV1, _jpeg(lossless=True, predictor=1)),
        True,
    ),
    "jpegls": (uid.JPEGLSLossless, _compress_with(uid.JPEGLSLossless, "pyjpegls"), True),
    "jpegls_near": (
        uid.JPEGLSNearLossless,
        _compress_with(uid.JPEGLSNearLossless, "pyjpegls", jls_error=2),
        False,
    ),
    "j2k": (uid.JPEG2000Lossless, _compress_with(uid.JPEG2000Lossless, "pylibjpeg"), True),
    "j2k_lossy": (uid.JPEG2000, _compress_with(uid.JPEG2000, "pylibjpeg", j2k_psnr=[60]), False),
    "htj2k": (uid.HTJ2KLossless, _encapsulate_with(uid.HTJ2KLossless, _htj2k), True),
}


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    transfer_syntax: str = "explicit_le",
    rescale: tuple[float, float] | None = None,
    windows: Sequence[tuple[float, float]] = (),
    voi_function: str | None = None,
    voi_lut: tuple[int, int, np.ndarray] | None = None,
    modality: str = "OT",
    patient_id: str = "ANON",
    **elements: Any,
) -> Path:
    """Write ``pixels`` as a DICOM file and return its path: (rows, cols[, samples]) for one frame,
    (frames, rows, cols[, samples]) for a multi-frame file (encapsulated: one fragment per frame).

    ``rescale`` is (slope, intercept); ``windows`` are (center, width) pairs; ``voi_lut`` is
    (first mapped value, bits per entry, LUT data); extra keyword elements are set as-is.
    """
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID = uid.SecondaryCaptureImageStorage
    ds.SOPInstanceUID = uid.generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Modality = modality
    ds.PatientID = patient_id
    ds.StudyInstanceUID = uid.generate_uid()
    ds.SeriesInstanceUID = uid.generate_uid()
    ds.set_pixel_data(pixels, photometric, bits_stored or pixels.dtype.itemsize * 8)
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
        ds.RescaleType = "HU" if modality == "CT" else "US"
    if windows:
        ds.WindowCenter = [c for c, _ in windows] if len(windows) > 1 else windows[0][0]
        ds.WindowWidth = [w for _, w in windows] if len(windows) > 1 else windows[0][1]
    if voi_function:
        ds.VOILUTFunction = voi_function
    if voi_lut is not None:
        first, bits, data = voi_lut
        item = Dataset()
        item.LUTDescriptor = [len(data), first, bits]
        item.LUTData = [int(v) for v in data]
        ds.VOILUTSequence = DicomSequence([item])
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    _, encode, _ = TRANSFER_SYNTAXES[transfer_syntax]
    encode(ds, pixels)
    path.parent.mkdir(parents=True, exist_ok=True)
    little = ds.file_meta.TransferSyntaxUID != uid.ExplicitVRBigEndian
    implicit = ds.file_meta.TransferSyntaxUID == uid.ImplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True, little_endian=little, implicit_vr=implicit)
    return path


def ramp(height: int, width: int, lo: float, hi: float, dtype: Any) -> np.ndarray:
    """A horizontal ramp, dark (``lo``) on the left and bright (``hi``) on the right."""
    row = np.linspace(lo, hi, width)
    return np.rint(np.broadcast_to(row, (height, width))).astype(dtype)


def anatomy(height: int, width: int, lo: float, hi: float, dtype: Any, seed: int = 0) -> np.ndarray:
    """Smooth, anatomy-like structure (a bright ellipse with soft blobs) plus mild noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    y, x = y / max(height - 1, 1) - 0.5, x / max(width - 1, 1) - 0.5
    body = np.clip(1.0 - (x / 0.42) ** 2 - (y / 0.47) ** 2, 0.0, 1.0) ** 0.5
    for _ in range(6):
        cy, cx, r = rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3), rng.uniform(0.03, 0.12)
        body += 0.35 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))
    body = body / body.max()
    body += rng.normal(0.0, 0.01, body.shape)
    return np.rint(lo + np.clip(body, 0.0, 1.0) * (hi - lo)).astype(dtype)


def make_demo(root: Path, count: int = 24) -> Path:
    """Write a small, varied demo dataset under ``root``; return its labels CSV.

    CT-like int16 with rescale and windows, MONOCHROME1 radiographs, 12-bit mammograms as
    JPEG 2000 and RLE, plus one missing file, so the summary shows a rejected row.
    """
    images = root / "images"
    rows: list[tuple[str, str, str, int]] = []
    kinds = [
        (
            "ct",
            dict(modality="CT", rescale=(1.0, -1024.0), windows=[(40.0, 400.0), (-600.0, 1500.0)]),
            lambda s: anatomy(256, 256, 0, 1250, np.int16, s),
            "explicit_le",
            None,
        ),
        (
            "cr",
            dict(modality="CR", photometric="MONOCHROME1"),
            lambda s: anatomy(320, 256, 4095, 300, np.uint16, s),
            "explicit_le",
            12,
        ),
        (
            "mg",
            dict(modality="MG", windows=[(2000.0, 3000.0)]),
            lambda s: anatomy(384, 300, 200, 3800, np.uint16, s),
            "j2k",
            12,
        ),
        (
            "mgr",
            dict(modality="MG"),
            lambda s: anatomy(384, 300, 200, 3800, np.uint16, s),
            "rle",
            12,
        ),
    ]
    for i in range(count):
        _, options, make, tsyntax, bits = kinds[i % len(kinds)]
        patient = f"P{i // 4:03d}"
        image_id = f"{i:06d}"
        rel = f"{patient}/{image_id}.dcm"
        write_dicom(
            images / rel,
            make(i),
            transfer_syntax=tsyntax,
            bits_stored=bits,
            patient_id=patient,
            **options,
        )  # type: ignore[arg-type]
        rows.append((image_id, patient, rel, i % 2))
    rows.append(("999999", "P999", "P999/missing.dcm", 0))
    labels = root / "labels.csv"
    with open(labels, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", "patient_id", "path", "target"])
        writer.writerows(rows)
    return labels


#: Identifying values written into every make_patients file; scan must never output them.
IDENTIFYING: dict[str, Any] = {
    "PatientName": "Doe^Jane",
    "PatientBirthDate": "19700101",
    "PatientAddress": "1 Main St Springfield",
}


def make_patients(root: Path, patients: int = 30, seed: int = 0) -> Path:
    """A multi-patient dataset for splits, folds, class maps, extra columns, DICOM tags and masks.

    Each patient has 1-4 images of 64 x 48 (a bright rectangle on a dark ramp; its mask labels the
    rectangle 1) and one string label (``benign`` / ``malignant``, about a third malignant).
    Images are native or JPEG 2000; masks are PNG, .npy, DICOM or absent (every fourth row).
    Columns: image_id, patient_id, path, label, age (int), density (float, some empty), site
    (text), mask. Every file also carries :data:`IDENTIFYING`. Returns the labels CSV path.
    """
    rng = np.random.default_rng(seed)
    images = root / "images"
    (images / "masks").mkdir(parents=True, exist_ok=True)
    lines = [("image_id", "patient_id", "path", "label", "age", "density", "site", "mask")]
    n = 0
    for p in range(patients):
        patient = f"P{p:03d}"
        label = "malignant" if rng.random() < 0.33 else "benign"
        age = str(int(rng.integers(35, 80)))
        for k in range(int(rng.integers(1, 5))):
            image_id = f"{patient}_{k}"
            y, x = int(rng.integers(4, 24)), int(rng.integers(4, 36))
            mask = np.zeros((48, 64), np.uint8)
            mask[y : y + 16, x : x + 20] = 1
            pixels = ramp(48, 64, 100, 900, np.uint16) + mask.astype(np.uint16) * 3000
            rel = f"{patient}/{image_id}.dcm"
            write_dicom(
                images / rel,
                pixels,
                bits_stored=12,
                transfer_syntax="j2k" if n % 3 == 0 else "explicit_le",
                modality="MG",
                patient_id=patient,
                ViewPosition="CC" if k % 2 == 0 else "MLO",
                ImageLaterality="L" if k < 2 else "R",
                InstanceNumber=k + 1,
                **IDENTIFYING,
            )
            kind = ("png", "npy", "dcm", "")[n % 4]
            mask_rel = f"masks/{image_id}.{kind}" if kind else ""
            if kind == "png":
                cv2.imwrite(str(images / mask_rel), mask)
            elif kind == "npy":
                np.save(images / mask_rel, mask)
            elif kind == "dcm":
                write_dicom(images / mask_rel, mask, modality="SEG")
            density = "" if n % 5 == 4 else f"{rng.random():.3f}"
            lines.append(
                (image_id, patient, rel, label, age, density, ("left", "right", "centre")[p % 3], mask_rel)
            )
            n += 1
    with open(root / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, lineterminator="\n").writerows(lines)
    return root / "labels.csv"


def _patched(src: Path, dst: Path, **changes: Any) -> Path:
    """Copy a DICOM file with header elements changed (None deletes one)."""

    ds = pydicom.dcmread(src)
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(dst, enforce_file_format=False)
    return dst


def _nested(depth: int) -> DicomSequence:
    item = Dataset()
    item.CodeValue = "X"
    for _ in range(depth):
        outer = Dataset()
        outer.ContentSequence = DicomSequence([item])
        item = outer
    return DicomSequence([item])


def make_hostile(root: Path, outside: Path) -> dict[str, tuple[str, str | None]]:
    """Write hostile inputs under ``root`` (and one file in ``outside``, a sibling folder).

    Returns ``{image_id: (csv path, expected reason, or None when it must convert)}``.
    """
    import os

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    pixels = anatomy(64, 64, 100, 4000, np.uint16)
    good = write_dicom(root / "good.dcm", pixels, bits_stored=12)
    data = good.read_bytes()
    j2k = write_dicom(root / "good_j2k.dcm", pixels, bits_stored=12, transfer_syntax="j2k").read_bytes()
    cases: dict[str, tuple[str, str | None]] = {
        "good": ("good.dcm", None),
        "good_j2k": ("good_j2k.dcm", None),
    }

    def raw(name: str, content: bytes, reason: str | None) -> None:
        (root / name).write_bytes(content)
        cases[name.removesuffix(".dcm")] = (name, reason)

    raw("zero.dcm", b"", "not_dicom")
    raw("random.dcm", rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(), "not_dicom")
    raw(
        "dicm_garbage.dcm",
        b"\0" * 128 + b"DICM" + rng.integers(0, 256, 3000, dtype=np.uint8).tobytes(),
        "not_dicom",
    )
    raw("text.dcm", b"patient,notes\nthis is a CSV, not an image\n" * 20, "not_dicom")
    import cv2

    raw("png.dcm", cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes(), "not_dicom")
    meta_end = 132 + 12 + int.from_bytes(data[140:144], "little")
    raw("no_preamble_meta.dcm", data[132:], None)
    raw("no_preamble_no_meta.dcm", data[meta_end:], None)
    raw("truncated_header.dcm", data[:200], "truncated")
    pixel_tag = data.rfind(b"\xe0\x7f\x10\x00")
    raw("truncated_mid_pixels.dcm", data[:-2000], "truncated")
    raw("truncated_mid_j2k.dcm", j2k[: len(j2k) - 600], "truncated")
    # A length past the end of the file on the last element: pydicom reads what is there, which
    # here is exactly the pixel data, so the image converts intact.
    raw("huge_length.dcm", data[: pixel_tag + 8] + b"\xf0\xff\xff\xff" + data[pixel_tag + 12 :], None)
    siz = j2k.find(b"\xff\x4f\xff\x51")
    bad_siz = bytearray(j2k)
    bad_siz[siz + 8 : siz + 12] = (4096).to_bytes(4, "big")
    raw("bad_j2k_header.dcm", bytes(bad_siz), "header_mismatch")

    def patched(name: str, reason: str | None, src: Path = good, **changes: Any) -> None:
        _patched(src, root / f"{name}.dcm", **changes)
        cases[name] = (f"{name}.dcm", reason)

    sr = root / "sr.dcm"
    patched("sr", "no_pixel_data", PixelData=None)
    del sr
    patched("rows0", "bad_header", Rows=0)
    patched("no_rows", "bad_header", Rows=None)
    patched("bits12", "bad_header", BitsAllocated=12)
    patched("rgb_as_mono", "bad_header", SamplesPerPixel=3)
    patched("multiframe", "unsupported", NumberOfFrames=2, PixelData=pixels.tobytes() * 2)
    patched("short_pixels", "truncated", PixelData=pixels.tobytes()[:-64])
    patched("long_pixels", None, PixelData=pixels.tobytes() + b"\0" * 64)  # padding: pydicom ignores it
    big = write_dicom(root / "good_be.dcm", pixels, bits_stored=12, transfer_syntax="explicit_be")
    patched("long_pixels_be", None, src=big, PixelData=pixels.byteswap().tobytes() + b"\0" * 64)
    patched("second_frame", "pixel_data_mismatch", PixelData=pixels.tobytes() * 2)
    patched("huge_native", "too_large", Rows=60000, Columns=60000)
    patched("huge_j2k", "too_large", src=root / "good_j2k.dcm", Rows=60000, Columns=60000)
    patched("j2k_disagrees", "header_mismatch", src=root / "good_j2k.dcm", Rows=128, Columns=128)
    patched("nested", None, ContentSequence=_nested(60))
    patched("no_tsyntax_meta", None)

    ds = pydicom.dcmread(root / "no_tsyntax_meta.dcm")
    del ds.file_meta.TransferSyntaxUID
    ds.save_as(root / "no_tsyntax_meta.dcm", enforce_file_format=False)
    for name, tsyntax in (("video_ts", "1.2.840.10008.1.2.4.100"), ("unknown_ts", "1.2.3.4.5")):
        ds = pydicom.dcmread(good)
        ds.file_meta.TransferSyntaxUID = uid.UID(tsyntax)
        ds.PixelData = encapsulate([bytes(64)])
        ds["PixelData"].VR = "OB"
        ds.save_as(root / f"{name}.dcm", enforce_file_format=False, implicit_vr=False, little_endian=True)
        cases[name] = (f"{name}.dcm", "unsupported")
    rle = write_dicom(root / "rle.dcm", pixels, bits_stored=12, transfer_syntax="rle")
    rle_data = bytearray(rle.read_bytes())
    rle_start = rle_data.find(b"\x02\x00\x00\x00\x40\x00\x00\x00")
    rle_data[rle_start] = 5
    raw("bad_rle.dcm", bytes(rle_data), "decode_failed")
    panic = pydicom.dcmread(
        write_dicom(root / "rle_panic.dcm", np.zeros((4, 4), np.uint16), transfer_syntax="rle")
    )
    segments = bytes.fromhex(  # two segment offsets that pass every header check; pylibjpeg-rle panics
        "717b4c9b459a82f85f49c0babf7fdca1e7012b8bedbf568f07e860ef4c3700474dc7dbd0b090beab6878b300f0"
    )
    panic.PixelData = encapsulate([struct.pack("<16I", 2, 64, 91, *([0] * 13)) + segments])
    panic.save_as(root / "rle_panic.dcm")
    cases["rle_panic"] = ("rle_panic.dcm", "decode_failed")
    (root / "rle.dcm").unlink()
    deflated = write_dicom(
        root / "deflate.dcm", pixels, bits_stored=12, transfer_syntax="deflate"
    ).read_bytes()
    (root / "deflate.dcm").unlink()
    raw("bad_deflate.dcm", deflated[:-300] + bytes(300), "not_dicom")

    for name, image in (
        ("colour", np.dstack([pixels >> 4] * 3).astype(np.uint8)),
        ("constant", np.full((32, 32), 900, np.uint16)),
        ("tiny_1x1", np.full((1, 1), 7, np.uint16)),
        ("wide_1x4096", np.arange(4096, dtype=np.uint16)[np.newaxis]),
    ):
        write_dicom(root / f"{name}.dcm", image, photometric="RGB" if image.ndim == 3 else "MONOCHROME2")
        cases[name] = (f"{name}.dcm", None)
    for name in ("with space.dcm", "with,comma.dcm", "ünïcødé 画像.dcm"):
        write_dicom(root / name, pixels, bits_stored=12)
        cases[name] = (name, None)
    outside.mkdir(parents=True, exist_ok=True)
    write_dicom(outside / "outside.dcm", pixels, bits_stored=12)
    os.symlink(outside / "outside.dcm", root / "link_out.dcm")
    os.symlink(root / "nowhere.dcm", root / "dangling.dcm")
    os.symlink(root / "loop_b.dcm", root / "loop_a.dcm")
    os.symlink(root / "loop_a.dcm", root / "loop_b.dcm")
    cases.update(
        {
            "missing": ("missing.dcm", "file_missing"),
            "dangling": ("dangling.dcm", "file_missing"),
            "loop": ("loop_a.dcm", "file_missing"),
            "link_out": ("link_out.dcm", "outside_root"),
            "escape": (f"../{outside.name}/outside.dcm", "outside_root"),
            "absolute": (str(outside / "outside.dcm"), "outside_root"),
            "folder": (".", "not_a_file"),
        }
    )
    return cases


def write_deflate_bomb(path: Path, rows: int, columns: int, pixel_bytes: int) -> Path:
    """A Deflated Explicit VR Little Endian file whose header declares ``rows`` x ``columns`` 16-bit
    pixels and whose Pixel Data inflates to ``pixel_bytes`` zero bytes (a few kB per 100 MB)."""
    import zlib

    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    from .inflate import deflated_start

    write_dicom(path, np.zeros((4, 4), np.uint16), transfer_syntax="deflate")
    meta = path.read_bytes()[: deflated_start(path)]
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.Rows, ds.Columns = rows, columns
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = [deflater.compress(body.getvalue() + b"\xe0\x7f\x10\x00OW\0\0" + struct.pack("<I", pixel_bytes))]
    zeros = bytes(1 << 24)
    for start in range(0, pixel_bytes, len(zeros)):
        out.append(deflater.compress(zeros[: min(len(zeros), pixel_bytes - start)]))
    path.write_bytes(meta + b"".join(out) + deflater.flush())
    return path
