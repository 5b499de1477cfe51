"""EXIF surgery: keep a photo's camera metadata, with orientation 1 and no stale thumbnail.

The pixels are turned upright when an image is read, so the EXIF that goes back into the output
must say orientation 1, and its embedded preview (the rainy input, in the stored orientation)
must go. For JPEG, PNG and WebP sources every other byte of the EXIF block is kept (maker notes
included); a TIFF's EXIF is mixed with its layout tags, so only the metadata is copied. Used by
:mod:`derain_cli.images.io` (reading) and :mod:`derain_cli.images.codecs` (the PNG and TIFF
writers).
"""

from __future__ import annotations

import contextlib
import struct

import numpy as np
from PIL import Image

ORIENTATION_TAG = 0x0112
EXIF_HEADER = b"Exif\x00\x00"

# TIFF tags that describe a TIFF file's own layout; they are not camera metadata and must not be
# copied into the EXIF of another file.
_TIFF_LAYOUT_TAGS = frozenset(
    {254, 255, 256, 257, 258, 259, 262, 263, 266, 269, 273, 277, 278, 279, 280, 281, 284, 285}
    | {286, 287, 290, 291, 292, 293, 296, 297, 317, 318, 319, 320, 321, 322, 323, 324, 325}
    | {330, 332, 338, 339, 340, 341, 347, 530, 531, 532, 700, 33723, 34377, 34675, 37724}
)
#: EXIF sub-IFD pointers (Exif IFD, GPS IFD): copied as the IFDs they point at, not as offsets.
_IFD_POINTERS = (0x8769, 0x8825)


def exif_bytes(im: Image.Image, exif_obj: Image.Exif) -> bytes | None:
    """The source's EXIF as ``Exif\\0\\0`` + TIFF bytes with orientation 1, or None."""
    if im.format == "TIFF":
        # A TIFF's EXIF is mixed with its layout tags; keep only the metadata.
        kept = Image.Exif()
        copy_metadata(exif_obj, kept)
        if not len(kept):
            return None
        kept[ORIENTATION_TAG] = 1
        return kept.tobytes()
    raw = im.info.get("exif")
    if not raw:
        return None
    if isinstance(raw, Image.Exif):  # pragma: no cover - defensive, Pillow stores bytes
        raw = raw.tobytes()
    try:
        return EXIF_HEADER + _drop_thumbnail(set_orientation_1(tiff_body(raw)))
    except (struct.error, ValueError):
        return None  # unreadable EXIF is dropped rather than copied broken


def copy_metadata(source: Image.Exif, into: Image.Exif) -> None:
    """Copy ``source``'s camera metadata into ``into``: TIFF layout tags are left out and the
    Exif/GPS pointers become the sub-IFDs they point at (``into`` lays out its own offsets)."""
    for tag, value in source.items():
        if tag not in _TIFF_LAYOUT_TAGS:
            into[tag] = source.get_ifd(tag) if tag in _IFD_POINTERS else value


def tiff_body(exif: bytes) -> bytes:
    """The TIFF-structured part of an EXIF block (without a leading ``Exif\\0\\0``)."""
    return exif[len(EXIF_HEADER) :] if exif.startswith(EXIF_HEADER) else exif


def _first_ifd(tiff: bytes) -> tuple[str, bytearray, int, int]:
    """Byte order, a mutable copy, the offset of IFD0 and its entry count of a TIFF/EXIF block."""
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None:
        raise ValueError("not TIFF-structured EXIF")
    buffer = bytearray(tiff)
    (ifd0,) = struct.unpack_from(order + "I", buffer, 4)
    (count,) = struct.unpack_from(order + "H", buffer, ifd0)
    return order, buffer, ifd0, count


def set_orientation_1(tiff: bytes) -> bytes:
    """Patch the orientation in IFD0 to 1 in place, leaving every other byte as it was."""
    order, buffer, ifd0, count = _first_ifd(tiff)
    for index in range(count):
        offset = ifd0 + 2 + 12 * index
        tag, kind, n = struct.unpack_from(order + "HHI", buffer, offset)
        if tag == ORIENTATION_TAG and kind == 3 and n == 1:
            struct.pack_into(order + "H", buffer, offset + 8, 1)
    return bytes(buffer)


def _drop_thumbnail(tiff: bytes) -> bytes:
    """Unlink IFD1, the embedded preview: it shows the rainy input in the stored orientation.

    Viewers would show that stale (and, once the pixels are rotated, wrongly turned) preview.
    Every other byte keeps its offset; a thumbnail at the end of the block is cut off, one in the
    middle is blanked with zeros.
    """
    order, buffer, ifd0, count = _first_ifd(tiff)
    link = ifd0 + 2 + 12 * count
    (ifd1,) = struct.unpack_from(order + "I", buffer, link)
    if ifd1 == 0:
        return tiff
    struct.pack_into(order + "I", buffer, link, 0)
    start = length = 0
    with contextlib.suppress(struct.error):
        (entries,) = struct.unpack_from(order + "H", buffer, ifd1)
        for index in range(entries):
            offset = ifd1 + 2 + 12 * index
            tag, kind, _n = struct.unpack_from(order + "HHI", buffer, offset)
            value_format = order + ("H" if kind == 3 else "I")
            if tag in (0x0201, 0x0202):
                (value,) = struct.unpack_from(value_format, buffer, offset + 8)
                start, length = (value, length) if tag == 0x0201 else (start, value)
    end = start + length
    if length and 0 < start and end <= len(buffer):
        if end == len(buffer):
            del buffer[start:]
        else:
            buffer[start:end] = bytes(length)
    return bytes(buffer)


def exif_orientation(im: Image.Image) -> int:
    value = im.getexif().get(ORIENTATION_TAG, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) like ``PIL.ImageOps.exif_transpose``."""
    if orientation == 2:
        return pixels[:, ::-1]
    if orientation == 3:
        return pixels[::-1, ::-1]
    if orientation == 4:
        return pixels[::-1]
    if orientation == 5:
        return pixels.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(pixels, k=-1)
    if orientation == 7:
        return pixels[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(pixels, k=1)
    return pixels
