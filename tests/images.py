"""Test images generated in memory: awkward formats, metadata and broken files.

Every function is deterministic (seeded). Functions returning ``bytes`` are file contents; the
``write_*``/``make_*`` helpers put them on disk. Used by ``test_imaging.py`` and by the CLI's
corrupt-batch test (:func:`make_corrupt_batch`).
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageCms

MAKE = "DerainTestCam"
DATE_TIME_ORIGINAL = "2021:06:01 12:34:56"


def pixels8(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """Random uint8 pixels, H x W x C (H x W when channels == 1)."""
    shape = (height, width) if channels == 1 else (height, width, channels)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def pixels16(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """Random uint16 pixels using the full 16-bit range (low bytes matter)."""
    shape = (height, width) if channels == 1 else (height, width, channels)
    return np.random.default_rng(seed).integers(0, 65536, shape, dtype=np.uint16)


def blocks8(height: int, width: int, seed: int = 0) -> np.ndarray:
    """RGB made of flat 16x16 blocks, so JPEG keeps each block's colour within a few levels."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, ((height + 15) // 16, (width + 15) // 16, 3), dtype=np.uint8)
    return np.repeat(np.repeat(colours, 16, axis=0), 16, axis=1)[:height, :width].copy()


def exif_bytes(orientation: int | None = None, make: str = MAKE) -> bytes:
    """EXIF (``Exif\\0\\0`` + TIFF) with Make, an Exif sub-IFD date and optionally orientation."""
    exif = Image.Exif()
    exif[0x010F] = make
    if orientation is not None:
        exif[0x0112] = orientation
    exif.get_ifd(0x8769)[0x9003] = DATE_TIME_ORIGINAL
    return exif.tobytes()


@functools.cache
def srgb_icc() -> bytes:
    """A real ICC profile (lcms' built-in sRGB), made once: its header holds the time it was
    made, so two profiles made a minute apart differ."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def rgb_png(height: int = 24, width: int = 32, seed: int = 0) -> bytes:
    return encode(Image.fromarray(pixels8(height, width, 3, seed)), "PNG")


def rgb_jpeg(height: int = 32, width: int = 48, seed: int = 0, **options: object) -> bytes:
    return encode(Image.fromarray(blocks8(height, width, seed)), "JPEG", quality=95, **options)


def oriented_png(orientation: int, height: int = 2, width: int = 3, seed: int = 0) -> bytes:
    """A lossless image stored unrotated and tagged with an EXIF orientation."""
    image = Image.fromarray(pixels8(height, width, 3, seed))
    return encode(image, "PNG", exif=exif_bytes(orientation))


def oriented_jpeg(orientation: int, height: int = 32, width: int = 48, seed: int = 0) -> bytes:
    return rgb_jpeg(height, width, seed, exif=exif_bytes(orientation))


def icc_jpeg(height: int = 16, width: int = 16) -> bytes:
    return rgb_jpeg(height, width, icc_profile=srgb_icc())


def cmyk_jpeg(height: int = 16, width: int = 16, icc: bytes | None = None) -> bytes:
    image = Image.fromarray(pixels8(height, width, 4, seed=3), mode="CMYK")
    return encode(image, "JPEG", quality=95, **({"icc_profile": icc} if icc else {}))


def rgba_png(height: int = 16, width: int = 20, seed: int = 1) -> bytes:
    return encode(Image.fromarray(pixels8(height, width, 4, seed), mode="RGBA"), "PNG")


def la_png(height: int = 16, width: int = 20, seed: int = 2) -> bytes:
    return encode(Image.fromarray(pixels8(height, width, 2, seed), mode="LA"), "PNG")


def gray_png(height: int = 16, width: int = 20, seed: int = 4) -> bytes:
    return encode(Image.fromarray(pixels8(height, width, 1, seed), mode="L"), "PNG")


def gray16_png(height: int = 16, width: int = 20, seed: int = 5) -> bytes:
    """A 16-bit grayscale PNG (Pillow mode I;16)."""
    return encode(Image.fromarray(pixels16(height, width, 1, seed)), "PNG")


def bilevel_png(height: int = 8, width: int = 8) -> bytes:
    bits = (np.indices((height, width)).sum(axis=0) % 2).astype(bool)
    return encode(Image.fromarray(bits), "PNG")


def palette_png(transparent: bool = True, height: int = 8, width: int = 8) -> bytes:
    """A palette image; index 0 is fully transparent when ``transparent``."""
    indices = (np.arange(height * width).reshape(height, width) % 4).astype(np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 0] + [0] * (256 * 3 - 12))
    return encode(image, "PNG", **({"transparency": 0} if transparent else {}))


def png16(channels: int = 3, height: int = 12, width: int = 16, seed: int = 6) -> bytes:
    """16-bit RGB (3) or RGBA (4) PNG written by OpenCV (Pillow cannot write these)."""
    array = pixels16(height, width, channels, seed)
    order = [2, 1, 0] + ([3] if channels == 4 else [])
    ok, buffer = cv2.imencode(".png", array[:, :, order])
    assert ok
    return buffer.tobytes()


def tiff16(channels: int = 3, height: int = 12, width: int = 16, seed: int = 7) -> bytes:
    array = pixels16(height, width, channels, seed)
    order = [2, 1, 0] + ([3] if channels == 4 else [])
    ok, buffer = cv2.imencode(".tiff", array[:, :, order])
    assert ok
    return buffer.tobytes()


def set_tiff_orientation(tiff: bytes, orientation: int) -> bytes:
    """Patch the Orientation tag (274, SHORT) of a little-endian TIFF's first IFD."""
    assert tiff[:4] == b"II*\x00"
    buffer = bytearray(tiff)
    (ifd0,) = struct.unpack_from("<I", buffer, 4)
    (count,) = struct.unpack_from("<H", buffer, ifd0)
    for index in range(count):
        offset = ifd0 + 2 + 12 * index
        if struct.unpack_from("<H", buffer, offset)[0] == 274:
            struct.pack_into("<H", buffer, offset + 8, orientation)
            return bytes(buffer)
    raise AssertionError("no Orientation tag")


def truncated_jpeg() -> bytes:
    """A JPEG whose entropy-coded data stops halfway (the header is intact)."""
    data = rgb_jpeg(64, 64)
    return data[: len(data) // 2]


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header claiming ``width x height`` pixels, with no pixel data at all."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def make_corrupt_batch(folder: Path) -> dict[str, bool]:
    """Write a mixed batch of good and broken files; returns file name -> should succeed."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, tuple[bytes, bool]] = {
        "truncated.jpg": (truncated_jpeg(), False),
        "empty.jpg": (b"", False),
        "text.jpg": (b"this is not an image, just text\n", False),
        "bomb.png": (bomb_png(), False),
        "one-pixel.png": (rgb_png(1, 1), True),
        "cmyk.jpg": (cmyk_jpeg(), True),
        "sixteen-bit.png": (png16(3), True),
        "sixteen-bit.tiff": (tiff16(3), True),
        "alpha.png": (rgba_png(), True),
        "rotated-6.jpg": (oriented_jpeg(6), True),
        "rotated-3.jpg": (oriented_jpeg(3), True),
        "régen-雨.png": (rgb_png(8, 8), True),
    }
    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
    return {name: ok for name, (_, ok) in files.items()}


def smooth_photo(path: Path, height: int = 24, width: int = 32, seed: int = 0) -> Path:
    """A small smooth RGB photo at ``path`` (8x8 flat blocks, so JPEG hardly matters)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    pixels = np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))[:height, :width]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def streak_bank(folder: Path, count: int = 3, seed: int = 0) -> Path:
    """``count`` streak images (white streaks on black, 96x160): in each, dots of a few pixels
    (tier "small"), short streaks (about 40 px of area, "middle") and long wide ones ("large")."""
    import cv2

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        canvas = np.zeros((96, 160), np.uint8)
        for _ in range(12):  # dots: 2x2
            y, x = rng.integers(2, 94), rng.integers(2, 158)
            canvas[y : y + 2, x : x + 2] = 220
        for _ in range(5):  # short streaks: 1 x ~20 px
            y, x = rng.integers(5, 70), rng.integers(5, 155)
            cv2.line(canvas, (int(x), int(y)), (int(x) + 2, int(y) + 20), 200, 1)
        for _ in range(2):  # long wide streaks: 3 x ~60 px
            y, x = rng.integers(5, 30), rng.integers(10, 150)
            cv2.line(canvas, (int(x), int(y)), (int(x) + 6, int(y) + 60), 240, 3)
        Image.fromarray(canvas).save(folder / f"{index + 1}-{seed}.png")
    return folder
