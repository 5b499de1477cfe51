"""Image decode/encode that keeps what photographers care about.

Reading gives a :class:`Picture`: float32 RGB in [0, 1] with the EXIF orientation applied, plus
everything the network must not touch (alpha, bit depth, grayscale-ness, EXIF, ICC profile), so
that :func:`write_image` can put the derained RGB back into a file that looks like the original.

Decisions (see ``docs/images.md``):

* Pillow reads every file. It cannot represent 16-bit colour (it silently truncates 16-bit RGB,
  RGBA and gray+alpha PNG/TIFF to 8 bits), so those pixels are decoded again with OpenCV, and
  written with the small PNG/TIFF writers of :mod:`derain_cli.images.codecs`, which also carry ICC
  and EXIF (EXIF surgery: :mod:`derain_cli.images.exif`).
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageCms, UnidentifiedImageError

from derain_cli import atomic
from derain_cli.errors import ImageError, setting
from derain_cli.images.codecs import pillow_image, png_bytes, tiff_bytes
from derain_cli.images.exif import (
    apply_orientation,
    exif_bytes,
    exif_orientation,
    set_orientation_1,
)
from derain_cli.images.formats import SUPPORTED_FORMATS, format_for_path, normalize_format

#: Largest image read by default, in megapixels (width * height / 1e6); ``--max-megapixels``.
DEFAULT_MAX_MEGAPIXELS: float = 200.0

STDIN_NAME = "<stdin>"

# BT.601 luma weights (grayscale outputs are written as this weighted sum of R, G, B).
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

_MAGIC_PREFIXES = (
    b"\xff\xd8",
    b"\x89PNG",
    b"GIF8",
    b"RIFF",
    b"II*\x00",
    b"MM\x00*",
    b"BM",
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


def _refuse_several_frames(im: Image.Image, name: Path | str) -> None:
    """An animated GIF, PNG or WebP, or a multi-page TIFF, would come out as its first frame.

    MPO files (many phone and camera JPEGs) are not refused: their first image is the photo, the
    others are previews or depth maps.
    """
    if im.format == "MPO" or not getattr(im, "is_animated", False):
        return
    try:
        frames = f"{int(getattr(im, 'n_frames', 2))} frames"
    except (OSError, SyntaxError, ValueError, EOFError, struct.error):
        frames = "several frames"
    raise ImageError(
        name,
        f"{frames} (an animated or multi-page image); derain takes still images: save the "
        "frames as separate files first",
    )


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
                f"({setting('max_megapixels')})",
            )
        _refuse_several_frames(im, name)
        max_pixels = None if max_megapixels is None else max(1, int(max_megapixels * 1e6))
        with _pillow_limit(max_pixels):
            try:
                # Pillow rotates TIFFs itself while loading and then forgets the orientation;
                # the OpenCV path for 16-bit colour needs the stored value.
                stored_orientation = exif_orientation(im) if im.format == "TIFF" else None
                im.load()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning):
                raise ImageError(
                    name,
                    f"image data is larger than the {max_megapixels:g} MP limit "
                    f"({setting('max_megapixels')})",
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
    exif = exif_bytes(im, im.getexif())
    orientation = exif_orientation(im)  # what Pillow's decoded pixels still need

    if _needs_opencv(im, head):
        handle.seek(0)
        data = handle.read()
        if fmt == "TIFF":  # OpenCV's TIFF decoder applies the orientation tag itself: neutralise
            with contextlib.suppress(struct.error, ValueError):
                data = set_orientation_1(data)
        grayscale = _is_gray_source(im, head)
        color, alpha = _decode_with_opencv(data, name, grayscale)
        bit_depth = 16
        orientation = stored_orientation or orientation  # OpenCV ignores EXIF orientation
    else:
        color, alpha, grayscale, bit_depth, icc = _pillow_pixels(im, icc, name)

    color = apply_orientation(color, orientation)
    if alpha is not None:
        alpha = np.ascontiguousarray(apply_orientation(alpha, orientation))
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
        return tiff_bytes(planes, icc=icc, exif=exif)
    if spec.key == "png" and depth == 16 and planes.shape[2] > 1:
        return png_bytes(planes, icc=icc, exif=exif)
    image = pillow_image(planes)
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
