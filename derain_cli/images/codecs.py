"""The PNG and TIFF writers: 1-4 channels of uint8 or uint16, with ICC and EXIF.

Pillow cannot write 16-bit colour (and its libtiff writer rejects EXIF sub-IFDs), so these small
writers encode what :func:`derain_cli.images.io.write_image` puts in PNG and TIFF files; every
other PNG the tool writes (sample grids, comparison grids, patch inspections) goes through
:func:`png_bytes` too, so there is one PNG writer.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
from PIL import Image

from derain_cli.images.exif import EXIF_HEADER, ORIENTATION_TAG, copy_metadata, tiff_body


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png_bytes(planes: np.ndarray, *, icc: bytes | None = None, exif: bytes | None = None) -> bytes:
    """A PNG of ``H x W`` or ``H x W x 1..4`` uint8/uint16 pixels (grey, grey+alpha, RGB, RGBA)."""
    if planes.ndim == 2:
        planes = planes[:, :, None]
    if planes.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"PNG pixels must be uint8 or uint16, not {planes.dtype}")
    height, width, channels = planes.shape
    depth = 16 if planes.dtype == np.uint16 else 8
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    big_endian = planes.astype(">u2" if depth == 16 else np.uint8)
    rows = np.ascontiguousarray(big_endian).view(np.uint8).reshape(height, -1)
    filtered = np.empty((height, rows.shape[1] + 1), np.uint8)
    filtered[:, 0] = 2  # "Up" filter: photographs compress well and numpy does it in one step
    filtered[0, 0] = 0
    filtered[0, 1:] = rows[0]
    filtered[1:, 1:] = rows[1:] - rows[:-1]  # uint8 arithmetic wraps modulo 256, as PNG wants
    header = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    chunks = [b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", header)]
    if icc:
        chunks.append(_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc)))
    if exif:
        chunks.append(_chunk(b"eXIf", tiff_body(exif)))
    chunks.append(_chunk(b"IDAT", zlib.compress(filtered.tobytes(), 6)))
    chunks.append(_chunk(b"IEND", b""))
    return b"".join(chunks)


def tiff_bytes(planes: np.ndarray, *, icc: bytes | None = None, exif: bytes | None = None) -> bytes:
    """A deflate-compressed TIFF of 1-4 channels of uint8/uint16, with ICC and full EXIF.

    Pillow has no 16-bit colour mode, and its libtiff writer rejects EXIF sub-IFDs, so the IFD
    is serialised with Pillow's EXIF writer (which lays out sub-IFDs and value offsets) and the
    single strip follows it. Alpha is stored as unassociated (ExtraSamples = 2).
    """
    height, width, channels = planes.shape
    depth = 16 if planes.dtype == np.uint16 else 8
    samples = np.ascontiguousarray(planes.astype("<u2" if depth == 16 else np.uint8))
    data = zlib.compress(samples.data)
    ifd = Image.Exif()
    ifd.endian = "<"
    if exif:
        source = Image.Exif()
        source.load(exif)
        copy_metadata(source, ifd)
    ifd[256] = width
    ifd[257] = height
    ifd[258] = (depth,) * channels
    ifd[259] = 8  # Adobe deflate
    ifd[262] = 2 if channels >= 3 else 1  # RGB / min-is-black
    ifd[277] = channels
    ifd[278] = height
    ifd[279] = len(data)
    ifd[284] = 1
    ifd[339] = (1,) * channels
    if channels in (2, 4):
        ifd[338] = 2  # unassociated alpha
    if icc:
        ifd[34675] = icc
    ifd[ORIENTATION_TAG] = 1
    ifd[273] = 0  # Pillow's IFD writer adds the end of the IFD data: the strip follows it
    head = ifd.tobytes()[len(EXIF_HEADER) :]
    if not head.startswith(b"II*\x00"):
        raise ValueError("expected a little-endian TIFF header")
    (strip_offset,) = struct.unpack("<I", _tiff_tag_value(head, 273))
    if strip_offset != len(head):
        raise ValueError("TIFF strip offset does not follow the header")
    return head + data


def _tiff_tag_value(tiff: bytes, wanted: int) -> bytes:
    """The 4-byte value field of a tag in IFD0 of a little-endian TIFF."""
    (ifd0,) = struct.unpack_from("<I", tiff, 4)
    (count,) = struct.unpack_from("<H", tiff, ifd0)
    for index in range(count):
        offset = ifd0 + 2 + 12 * index
        if struct.unpack_from("<H", tiff, offset)[0] == wanted:
            return tiff[offset + 8 : offset + 12]
    raise ValueError(f"TIFF tag {wanted} missing")


def pillow_image(planes: np.ndarray) -> Image.Image:
    """A Pillow image of H x W x 1..4 uint8 planes (or one uint16 plane), for JPEG and WebP."""
    channels = planes.shape[2]
    if planes.dtype == np.uint16:  # 16-bit single channel only reaches here
        return Image.fromarray(np.ascontiguousarray(planes[:, :, 0]))
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
    if channels == 1:
        return Image.fromarray(np.ascontiguousarray(planes[:, :, 0]), mode="L")
    return Image.fromarray(np.ascontiguousarray(planes), mode=mode)
