"""Image decode/encode that keeps what photographers care about.

Reading gives a :class:`Picture`: float32 RGB in [0, 1] with the EXIF orientation applied, plus
everything the network must not touch (alpha, bit depth, grayscale-ness, EXIF, ICC profile), so
that :func:`write_image` can put the derained RGB back into a file that looks like the original.

Decisions (see ``docs/images.md``):

* Pillow reads every file. It cannot represent 16-bit colour (it silently truncates 16-bit RGB,
  RGBA and gray+alpha PNG/TIFF to 8 bits), so those pixels are decoded again with OpenCV, and
  written with the small PNG/TIFF writers in this module, which also carry ICC and EXIF.
* EXIF orientation is applied to the pixels and the stored EXIF says orientation 1; for JPEG,
  PNG and WebP sources the EXIF bytes are otherwise kept byte for byte (maker notes included).
* Alpha is never passed to the network and is written back exactly (uint8 or uint16). JPEG has no
  alpha channel: it is dropped (not composited) and the CLI warns. WebP has 8 bits only, so a
  16-bit alpha is rounded to 8 bits there.
* Grayscale sources are replicated to three channels for the network and written back as one
  channel using BT.601 luma (0.299 R + 0.587 G + 0.114 B); WebP has no grayscale mode, so there
  the three channels are written.
* The size in the header is checked against ``max_megapixels`` before any pixel is decoded.
* Writes are atomic: encode in memory, write a hidden ``.NAME.*.tmp`` file in the destination
  folder, fsync, then ``os.replace``; the temporary file is removed on any failure.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import threading
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageCms, UnidentifiedImageError

from derain_cli import atomic
from derain_cli.errors import ImageError, UsageError

#: Largest image read by default, in megapixels (width * height / 1e6); ``--max-megapixels``.
DEFAULT_MAX_MEGAPIXELS: float = 200.0

STDIN_NAME = "<stdin>"

_ORIENTATION_TAG = 0x0112
_EXIF_HEADER = b"Exif\x00\x00"
# BT.601 luma weights (grayscale outputs are written as this weighted sum of R, G, B).
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

# TIFF tags that describe a TIFF file's own layout; they are not camera metadata and must not be
# copied into the EXIF of another file.
_TIFF_LAYOUT_TAGS = frozenset(
    {254, 255, 256, 257, 258, 259, 262, 263, 266, 269, 273, 277, 278, 279, 280, 281, 284, 285}
    | {286, 287, 290, 291, 292, 293, 296, 297, 317, 318, 319, 320, 321, 322, 323, 324, 325}
    | {330, 332, 338, 339, 340, 341, 347, 530, 531, 532, 700, 33723, 34377, 34675, 37724}
)
#: EXIF sub-IFD pointers (Exif IFD, GPS IFD): copied as the IFDs they point at, not as offsets.
_IFD_POINTERS = (0x8769, 0x8825)
_MAGIC_PREFIXES = (
    b"\xff\xd8",
    b"\x89PNG",
    b"GIF8",
    b"RIFF",
    b"II*\x00",
    b"MM\x00*",
    b"BM",
)


@dataclass(frozen=True)
class FormatSpec:
    """What an output format can hold, so encoding can decide what to keep and what to drop."""

    key: str
    pillow: str
    suffixes: tuple[str, ...]
    alpha: bool
    max_bit_depth: int
    grayscale: bool


#: Output formats: ``--format`` key -> capabilities. The first suffix is the canonical one.
SUPPORTED_FORMATS: dict[str, FormatSpec] = {
    "png": FormatSpec("png", "PNG", (".png",), alpha=True, max_bit_depth=16, grayscale=True),
    "jpg": FormatSpec(
        "jpg", "JPEG", (".jpg", ".jpeg"), alpha=False, max_bit_depth=8, grayscale=True
    ),
    "webp": FormatSpec("webp", "WEBP", (".webp",), alpha=True, max_bit_depth=8, grayscale=False),
    "tiff": FormatSpec(
        "tiff", "TIFF", (".tif", ".tiff"), alpha=True, max_bit_depth=16, grayscale=True
    ),
}
_ALIASES = {"jpeg": "jpg", "tif": "tiff"}
#: Every image suffix the tool reads (any case): the output formats' and those it only reads.
#: Folders and globs for ``derain``, ``derain train``, ``derain eval`` and ``derain synth`` alike.
READABLE_SUFFIXES: frozenset[str] = frozenset(
    {
        *(suffix for spec in SUPPORTED_FORMATS.values() for suffix in spec.suffixes),
        *(".jpe", ".jfif", ".bmp", ".gif", ".ppm", ".pgm", ".pbm", ".pnm", ".tga"),
    }
)


@dataclass
class Picture:
    """A decoded image: RGB for the network, and what must survive the round trip untouched.

    ``rgb`` is float32 ``H x W x 3`` in [0, 1], EXIF orientation applied, grayscale replicated to
    three channels. ``alpha`` is ``H x W`` in its original dtype (uint8 or uint16) or None.
    ``exif`` starts with ``b"Exif\\0\\0"`` and has orientation 1; ``format`` is Pillow's name of the
    source format (``"JPEG"``, ``"PNG"``...).
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    bit_depth: int
    grayscale: bool
    exif: bytes | None
    icc_profile: bytes | None
    format: str
    path: Path | None

    @property
    def name(self) -> str:
        """How messages name this picture: its path, or ``<stdin>``."""
        return str(self.path) if self.path is not None else STDIN_NAME

    @property
    def megapixels(self) -> float:
        return self.rgb.shape[0] * self.rgb.shape[1] / 1e6


# ---------------------------------------------------------------------------------------------
# formats


def normalize_format(fmt: str) -> str:
    """``"JPEG"``, ``"jpeg"``, ``".jpg"`` -> ``"jpg"``; raises UsageError for anything unknown."""
    key = fmt.lower().lstrip(".")
    key = _ALIASES.get(key, key)
    if key not in SUPPORTED_FORMATS:
        choices = ", ".join(SUPPORTED_FORMATS)
        raise UsageError(f"unknown image format {fmt!r} (choose one of: {choices})")
    return key


def format_for_path(path: Path | str) -> str:
    """The output format key implied by a file name's suffix (``photo.JPEG`` -> ``"jpg"``)."""
    suffix = Path(path).suffix.lower()
    for key, spec in SUPPORTED_FORMATS.items():
        if suffix in spec.suffixes:
            return key
    known = ", ".join(s for spec in SUPPORTED_FORMATS.values() for s in spec.suffixes)
    raise UsageError(f"{path}: cannot tell the image format from the suffix (use one of {known})")


def format_for_picture(picture: Picture) -> str:
    """The source's own format when it can be written, else PNG (``--format auto``)."""
    for key, spec in SUPPORTED_FORMATS.items():
        if spec.pillow == picture.format:
            return key
    return "png"


def lost_on_write(picture: Picture, fmt: str) -> list[str]:
    """What writing ``picture`` as ``fmt`` cannot keep, for the CLI's warning (empty: nothing).

    Mirrors the rules in :func:`encode_image`.
    """
    spec = SUPPORTED_FORMATS[normalize_format(fmt)]
    lost = []
    if picture.alpha is not None and not spec.alpha:
        lost.append("alpha channel (dropped)")
    if picture.bit_depth > spec.max_bit_depth:
        lost.append(f"16-bit depth (written as {spec.max_bit_depth}-bit)")
    if picture.grayscale and not spec.grayscale:
        lost.append("grayscale (written as RGB)")
    return lost


# ---------------------------------------------------------------------------------------------
# reading

# Pillow's decompression-bomb limit is a process-wide global; it is adjusted only under this lock
# and only while this module opens or decodes a file, then restored.
_PILLOW_LIMIT_LOCK = threading.Lock()


@contextlib.contextmanager
def _pillow_limit(max_pixels: int | None) -> Iterator[None]:
    """Make Pillow's own bomb checks (GIF frames, TIFF tiles) agree with ``max_pixels``."""
    with _PILLOW_LIMIT_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def read_image(
    source: Path | str | bytes,
    *,
    max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS,
) -> Picture:
    """Decode a file (or the bytes of one, e.g. stdin) into a :class:`Picture`.

    Raises :class:`ImageError` naming the file (or ``<stdin>``) with a short reason. The file is
    opened read-only and never modified.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        if not data:
            raise ImageError(STDIN_NAME, "empty file")
        return _decode(io.BytesIO(data), None, STDIN_NAME, max_megapixels)
    path = Path(source)
    try:
        with open(path, "rb") as handle:
            if os.fstat(handle.fileno()).st_size == 0:
                raise ImageError(path, "empty file")
            return _decode(handle, path, path, max_megapixels)
    except FileNotFoundError:
        raise ImageError(path, "no such file") from None
    except IsADirectoryError:
        raise ImageError(path, "is a folder, not an image file") from None
    except PermissionError:
        raise ImageError(path, "permission denied") from None
    except ImageError:
        raise
    except OSError as exc:
        raise ImageError(path, f"cannot read: {exc.strerror or exc}") from None


def _decode(
    handle: BinaryIO, path: Path | None, name: Path | str, max_megapixels: float | None
) -> Picture:
    head = handle.read(64)
    handle.seek(0)
    corrupt = "truncated or corrupt image data"
    with _pillow_limit(None):
        try:
            im = Image.open(handle)
        except UnidentifiedImageError:
            known = head.startswith(_MAGIC_PREFIXES)
            raise ImageError(name, corrupt if known else "not an image file") from None
        except (OSError, SyntaxError, ValueError, EOFError, struct.error):
            raise ImageError(name, corrupt) from None
    with im:
        width, height = im.size
        megapixels = width * height / 1e6
        if max_megapixels is not None and megapixels > max_megapixels:
            raise ImageError(
                name,
                f"image is {megapixels:.1f} megapixels, above the {max_megapixels:g} MP limit "
                "(--max-megapixels)",
            )
        max_pixels = None if max_megapixels is None else max(1, int(max_megapixels * 1e6))
        with _pillow_limit(max_pixels):
            try:
                # Pillow rotates TIFFs itself while loading and then forgets the orientation;
                # the OpenCV path for 16-bit colour needs the stored value.
                stored_orientation = _orientation(im) if im.format == "TIFF" else None
                im.load()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning):
                raise ImageError(
                    name,
                    f"image data is larger than the {max_megapixels:g} MP limit (--max-megapixels)",
                ) from None
            except (OSError, SyntaxError, ValueError, EOFError, struct.error, MemoryError):
                raise ImageError(name, corrupt) from None
        return _to_picture(im, handle, head, path, name, stored_orientation)


def _to_picture(
    im: Image.Image,
    handle: BinaryIO,
    head: bytes,
    path: Path | None,
    name: Path | str,
    stored_orientation: int | None,
) -> Picture:
    fmt = im.format or "unknown"
    icc = im.info.get("icc_profile") or None
    exif = _exif_bytes(im, im.getexif())
    orientation = _orientation(im)  # what Pillow's decoded pixels still need

    if _needs_opencv(im, head):
        handle.seek(0)
        data = handle.read()
        if fmt == "TIFF":  # OpenCV's TIFF decoder applies the orientation tag itself: neutralise
            with contextlib.suppress(struct.error, ValueError):
                data = _set_orientation_1(data)
        grayscale = _is_gray_source(im, head)
        color, alpha = _decode_with_opencv(data, name, grayscale)
        bit_depth = 16
        orientation = stored_orientation or orientation  # OpenCV ignores EXIF orientation
    else:
        color, alpha, grayscale, bit_depth, icc = _pillow_pixels(im, icc, name)

    color = _orient(color, orientation)
    if alpha is not None:
        alpha = np.ascontiguousarray(_orient(alpha, orientation))
    scale = np.float32(65535.0 if bit_depth == 16 else 255.0)
    rgb = color.astype(np.float32) / scale
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
    return Picture(
        rgb=np.ascontiguousarray(rgb),
        alpha=alpha,
        bit_depth=bit_depth,
        grayscale=grayscale,
        exif=exif,
        icc_profile=icc,
        format=fmt,
        path=path,
    )


def _needs_opencv(im: Image.Image, head: bytes) -> bool:
    """True for 16-bit colour or gray+alpha, which Pillow would truncate to 8 bits."""
    if im.format == "PNG" and head[12:16] == b"IHDR":
        bit_depth, color_type = head[24], head[25]
        return bit_depth == 16 and color_type in (2, 4, 6)
    if im.format == "TIFF" and im.mode in ("RGB", "RGBA", "LA"):
        bits = im.tag_v2.get(258, (8,))  # type: ignore[attr-defined]
        bits = bits if isinstance(bits, tuple) else (bits,)
        return max(bits) > 8
    return False


def _is_gray_source(im: Image.Image, head: bytes) -> bool:
    """Gray(+alpha) per the file header: Pillow reports 16-bit gray+alpha PNG as RGBA."""
    if im.format == "PNG" and head[12:16] == b"IHDR":
        return head[25] in (0, 4)
    if im.format == "TIFF":
        return im.tag_v2.get(262) in (0, 1)  # type: ignore[attr-defined]
    return im.mode in ("L", "LA", "I", "I;16")


def _orientation(im: Image.Image) -> int:
    value = im.getexif().get(_ORIENTATION_TAG, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _decode_with_opencv(
    data: bytes, name: Path | str, grayscale: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """16-bit colour pixels, unrotated.

    IMREAD_UNCHANGED ignores EXIF orientation, but OpenCV's TIFF decoder applies the TIFF tag,
    which the caller neutralises first.
    """
    import cv2

    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.dtype != np.uint16:
        raise ImageError(name, "truncated or corrupt image data")
    if pixels.ndim == 2:
        return pixels, None
    channels = pixels.shape[2]
    if channels == 2:
        return pixels[:, :, 0].copy(), pixels[:, :, 1].copy()
    alpha = pixels[:, :, 3].copy() if channels == 4 else None
    if grayscale:  # gray+alpha comes back as BGRA with three equal colour channels
        return pixels[:, :, 0].copy(), alpha
    return np.ascontiguousarray(pixels[:, :, 2::-1]), alpha


def _pillow_pixels(
    im: Image.Image, icc: bytes | None, name: Path | str
) -> tuple[np.ndarray, np.ndarray | None, bool, int, bytes | None]:
    """(colour HxW or HxWx3, alpha, grayscale, bit depth, icc) from a loaded Pillow image."""
    mode = im.mode
    if mode == "1":
        return np.asarray(im.convert("L")), None, True, 8, icc
    if mode == "L":
        return np.asarray(im), None, True, 8, icc
    if mode in ("LA", "La"):
        arr = np.asarray(im.convert("LA"))
        return arr[:, :, 0].copy(), arr[:, :, 1].copy(), True, 8, icc
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16), None, True, 16, icc
    if mode == "I":
        return np.clip(np.asarray(im), 0, 65535).astype(np.uint16), None, True, 16, icc
    if mode == "CMYK":
        return np.asarray(_cmyk_to_rgb(im, icc)), None, False, 8, None
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        im = im.convert("RGBA" if has_alpha else "RGB")
        mode = im.mode
    if mode in ("RGBA", "RGBa"):
        arr = np.asarray(im.convert("RGBA"))
        return arr[:, :, :3].copy(), arr[:, :, 3].copy(), False, 8, icc
    if mode == "RGB":
        return np.asarray(im), None, False, 8, icc
    try:
        return np.asarray(im.convert("RGB")), None, False, 8, icc
    except (ValueError, OSError):
        raise ImageError(name, f"unsupported pixel format {mode}") from None


def _cmyk_to_rgb(im: Image.Image, icc: bytes | None) -> Image.Image:
    """Through the embedded ICC profile when it works, else Pillow's naive formula."""
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            srgb = ImageCms.createProfile("sRGB")
            converted = ImageCms.profileToProfile(im, source, srgb, outputMode="RGB")
            if converted is not None:
                return converted
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken or non-CMYK profile: fall back to the formula below
    return im.convert("RGB")


def _orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
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


def _exif_bytes(im: Image.Image, exif_obj: Image.Exif) -> bytes | None:
    """The source's EXIF as ``Exif\\0\\0`` + TIFF bytes with orientation 1, or None."""
    if im.format == "TIFF":
        # A TIFF's EXIF is mixed with its layout tags; keep only the metadata.
        kept = Image.Exif()
        _copy_metadata(exif_obj, kept)
        if not len(kept):
            return None
        kept[_ORIENTATION_TAG] = 1
        return kept.tobytes()
    raw = im.info.get("exif")
    if not raw:
        return None
    if isinstance(raw, Image.Exif):  # pragma: no cover - defensive, Pillow stores bytes
        raw = raw.tobytes()
    try:
        return _EXIF_HEADER + _drop_thumbnail(_set_orientation_1(_tiff_body(raw)))
    except (struct.error, ValueError):
        return None  # unreadable EXIF is dropped rather than copied broken


def _copy_metadata(source: Image.Exif, into: Image.Exif) -> None:
    """Copy ``source``'s camera metadata into ``into``: TIFF layout tags are left out and the
    Exif/GPS pointers become the sub-IFDs they point at (``into`` lays out its own offsets)."""
    for tag, value in source.items():
        if tag not in _TIFF_LAYOUT_TAGS:
            into[tag] = source.get_ifd(tag) if tag in _IFD_POINTERS else value


def _tiff_body(exif: bytes) -> bytes:
    """The TIFF-structured part of an EXIF block (without a leading ``Exif\\0\\0``)."""
    return exif[len(_EXIF_HEADER) :] if exif.startswith(_EXIF_HEADER) else exif


def _first_ifd(tiff: bytes) -> tuple[str, bytearray, int, int]:
    """Byte order, a mutable copy, the offset of IFD0 and its entry count of a TIFF/EXIF block."""
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None:
        raise ValueError("not TIFF-structured EXIF")
    buffer = bytearray(tiff)
    (ifd0,) = struct.unpack_from(order + "I", buffer, 4)
    (count,) = struct.unpack_from(order + "H", buffer, ifd0)
    return order, buffer, ifd0, count


def _set_orientation_1(tiff: bytes) -> bytes:
    """Patch the orientation in IFD0 to 1 in place, leaving every other byte as it was."""
    order, buffer, ifd0, count = _first_ifd(tiff)
    for index in range(count):
        offset = ifd0 + 2 + 12 * index
        tag, kind, n = struct.unpack_from(order + "HHI", buffer, offset)
        if tag == _ORIENTATION_TAG and kind == 3 and n == 1:
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


# ---------------------------------------------------------------------------------------------
# writing


def encode_image(picture: Picture, rgb: np.ndarray, fmt: str, quality: int = 95) -> bytes:
    """Encode ``rgb`` (float32 HxWx3 in [0, 1]) with ``picture``'s alpha, depth and metadata.

    What the format cannot hold is dropped: alpha for JPEG, 16 bits for JPEG/WebP (alpha rounded
    to 8 bits), grayscale for WebP.
    """
    spec = SUPPORTED_FORMATS[normalize_format(fmt)]
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be H x W x 3, got shape {rgb.shape}")
    alpha = picture.alpha if spec.alpha else None
    if alpha is not None and alpha.shape != rgb.shape[:2]:
        raise ValueError(f"alpha is {alpha.shape}, rgb is {rgb.shape[:2]}")
    depth = 16 if picture.bit_depth == 16 and spec.max_bit_depth == 16 else 8
    rgb = np.clip(np.nan_to_num(rgb.astype(np.float32, copy=False)), 0.0, 1.0)
    color = rgb @ _LUMA if picture.grayscale and spec.grayscale else rgb
    color = _quantize(color, depth)
    if alpha is not None:
        alpha = _alpha_to_depth(alpha, depth)
    planes = color if color.ndim == 3 else color[:, :, None]
    if alpha is not None:
        planes = np.concatenate([planes, alpha[:, :, None]], axis=2)
    exif, icc = picture.exif, picture.icc_profile

    if spec.key == "tiff":
        return _tiff_bytes(planes, icc=icc, exif=exif)
    if spec.key == "png" and depth == 16 and planes.shape[2] > 1:
        return _png_bytes(planes, icc=icc, exif=exif)
    image = _pillow_image(planes)
    options: dict[str, object] = {}
    if exif:
        options["exif"] = exif
    if icc:
        options["icc_profile"] = icc
    if spec.key == "jpg":
        options.update(quality=quality, optimize=True)
    elif spec.key == "webp":
        options.update(quality=quality, exact=True, alpha_quality=100, method=4)
    buffer = io.BytesIO()
    image.save(buffer, spec.pillow, **options)
    return buffer.getvalue()


def _quantize(values: np.ndarray, depth: int) -> np.ndarray:
    top = 65535.0 if depth == 16 else 255.0
    out = np.rint(values * np.float32(top))
    return out.astype(np.uint16 if depth == 16 else np.uint8)


def _alpha_to_depth(alpha: np.ndarray, depth: int) -> np.ndarray:
    if depth == 16:
        return alpha.astype(np.uint16) * np.uint16(257) if alpha.dtype == np.uint8 else alpha
    if alpha.dtype == np.uint8:
        return alpha
    return ((alpha.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _pillow_image(planes: np.ndarray) -> Image.Image:
    channels = planes.shape[2]
    if planes.dtype == np.uint16:  # 16-bit single channel only reaches here
        return Image.fromarray(np.ascontiguousarray(planes[:, :, 0]))
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
    if channels == 1:
        return Image.fromarray(np.ascontiguousarray(planes[:, :, 0]), mode="L")
    return Image.fromarray(np.ascontiguousarray(planes), mode=mode)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _png_bytes(planes: np.ndarray, *, icc: bytes | None, exif: bytes | None) -> bytes:
    """A PNG of 1-4 channels of uint8/uint16 (Pillow cannot write 16-bit colour)."""
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
    chunks = [b"\x89PNG\r\n\x1a\n", _png_chunk(b"IHDR", header)]
    if icc:
        chunks.append(_png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc)))
    if exif:
        chunks.append(_png_chunk(b"eXIf", _tiff_body(exif)))
    chunks.append(_png_chunk(b"IDAT", zlib.compress(filtered.tobytes(), 6)))
    chunks.append(_png_chunk(b"IEND", b""))
    return b"".join(chunks)


def _tiff_bytes(planes: np.ndarray, *, icc: bytes | None, exif: bytes | None) -> bytes:
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
        _copy_metadata(source, ifd)
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
    ifd[_ORIENTATION_TAG] = 1
    ifd[273] = 0  # Pillow's IFD writer adds the end of the IFD data: the strip follows it
    head = ifd.tobytes()[len(_EXIF_HEADER) :]
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


def write_image(
    dest: Path | str,
    picture: Picture,
    rgb: np.ndarray,
    *,
    fmt: str | None = None,
    quality: int = 95,
) -> None:
    """Encode and write atomically; ``fmt`` None means from ``dest``'s suffix."""
    path = Path(dest)
    key = normalize_format(fmt) if fmt is not None else format_for_path(path)
    try:
        data = encode_image(picture, rgb, key, quality=quality)
    except (OSError, ValueError, KeyError, struct.error) as exc:
        raise ImageError(path, f"cannot encode as {key}: {exc}") from None
    atomic_write_bytes(path, data)


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:mod:`derain_cli.atomic`); failures are ImageError."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ImageError(path, "output folder does not exist")
    try:
        atomic.atomic_write_bytes(path, data)
    except OSError as exc:
        raise ImageError(path, f"cannot write: {exc.strerror or exc}") from None
