"""Pictures as callers hold them, to and from the derainer's float RGB, and back to their type.

:func:`as_float_rgb` takes a ``numpy`` array (``uint8``, ``uint16`` or float in [0, 1]; grey
``H x W``, RGB ``H x W x 3`` or RGBA ``H x W x 4``) or a ``PIL.Image`` and returns float32
``H x W x 3`` RGB in [0, 1] with a function that turns a derained result back into the caller's
type, dtype, channel count and alpha: grey stays grey (the mean of the derained channels), alpha
passes through untouched. The CLI's own file decoding is :mod:`derain_cli.images.io`; this is for
people calling :meth:`~derain_cli.inference.engine.Derainer.derain_image` from Python.

Anything else is refused with a :class:`~derain_cli.errors.PixelError` naming what is wrong,
rather than guessed at: other dtypes (``bool``, ``int32``...), channels first (``3 x H x W``),
batches (4-D), empty images, NaN or infinite values, and float values outside [0, 1] (which
would come back clipped, mostly white or black).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from derain_cli.errors import PixelError

Restore = Callable[[np.ndarray], Any]

#: Float values this far outside [0, 1] are rounding noise from the caller's own processing and
#: are clipped; anything beyond is refused.
FLOAT_SLACK = 1e-3


def as_float_rgb(image: Any) -> tuple[np.ndarray, Restore]:
    """``(rgb, restore)``: float32 RGB in [0, 1], and ``restore(derained) -> caller's type``."""
    try:
        from PIL import Image
    except ImportError:  # pillow is a dependency; this only keeps the function importable
        Image = None  # type: ignore[assignment]
    if Image is not None and isinstance(image, Image.Image):
        return _from_pil(image)
    if isinstance(image, np.ndarray):
        return _from_array(image)
    raise PixelError(f"image: expected a numpy array or a PIL image, got {type(image).__name__}")


def check_shape(shape: tuple[int, ...], *, accepted: str) -> None:
    """Refuse batches, channels-first layouts and empty images with one sentence each."""
    if len(shape) == 4:
        raise PixelError(
            f"image: got a 4-D array of shape {shape}; pass one image at a time, e.g. batch[0]"
        )
    if len(shape) == 3 and shape[0] in (1, 3, 4) and shape[2] not in (1, 3, 4):
        raise PixelError(
            f"image: got shape {shape}, channels first; pass channels last "
            "(H x W x C), e.g. array.transpose(1, 2, 0)"
        )
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (1, 3, 4)):
        raise PixelError(f"image: expected {accepted}, got shape {shape}")
    if shape[0] == 0 or shape[1] == 0:
        raise PixelError(f"image: it is empty ({shape[1]} x {shape[0]} pixels)")


def check_values(values: np.ndarray) -> None:
    """Refuse NaN or infinite values, and float values outside [0, 1] (with a hint)."""
    finite = np.isfinite(values)
    if not finite.all():
        bad = int(values.size - np.count_nonzero(finite))
        raise PixelError(
            f"image: {bad} value(s) are NaN or infinite; replace them first, "
            "e.g. np.nan_to_num(image)"
        )
    low, high = float(values.min()), float(values.max())
    if low >= -FLOAT_SLACK and high <= 1.0 + FLOAT_SLACK:
        return
    if low >= 0 and high <= 255.0:
        hint = "8-bit values? divide by 255"
    elif low >= 0 and high <= 65535.0:
        hint = "16-bit values? divide by 65535"
    else:
        hint = "rescale them to [0, 1]"
    raise PixelError(
        f"image: float values must lie in [0, 1], got {low:g} to {high:g} ({hint}, "
        "or pass uint8 / uint16 pixels)"
    )


def _scale_of(dtype: np.dtype) -> float:
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    if np.issubdtype(dtype, np.floating):
        return 1.0
    raise PixelError(
        f"image: expected uint8, uint16 or float pixels, got {dtype}"
        + (" (convert with image.astype(np.uint8) * 255)" if dtype == np.bool_ else "")
    )


def _from_array(array: np.ndarray) -> tuple[np.ndarray, Restore]:
    check_shape(array.shape, accepted="an H x W, H x W x 3 or H x W x 4 image")
    channels = 1 if array.ndim == 2 else array.shape[2]
    dtype = array.dtype
    scale = _scale_of(dtype)
    values = array.astype(np.float32) / scale
    if scale == 1.0:
        check_values(values if channels != 4 else values[..., :3])
    if channels == 1:
        grey = values.reshape(array.shape[0], array.shape[1])
        rgb = np.repeat(grey[..., None], 3, axis=2)
    else:
        rgb = values[..., :3]
    alpha = array[..., 3:] if channels == 4 else None
    rgb = np.clip(rgb, 0.0, 1.0) if scale == 1.0 else rgb

    def restore(derained: np.ndarray) -> np.ndarray:
        out = derained.mean(axis=2, keepdims=True) if channels == 1 else derained
        if scale != 1.0:
            out = np.clip(np.rint(out * scale), 0, scale)
        out = out.astype(dtype)
        if channels == 1:
            return out.reshape(array.shape)
        if alpha is not None:
            return np.concatenate([out, alpha], axis=2)
        return out

    return np.ascontiguousarray(rgb, dtype=np.float32), restore


def _from_pil(image: Any) -> tuple[np.ndarray, Restore]:
    from PIL import Image

    mode = image.mode
    if mode in ("RGB", "RGBA", "L", "LA", "I;16", "I;16B", "I;16L"):
        working = image
    else:
        working = image.convert("RGBA" if "A" in mode or "transparency" in image.info else "RGB")
    if working.mode in ("I;16", "I;16B", "I;16L"):
        array = np.asarray(working, dtype=np.uint16)
    else:
        array = np.asarray(working)
    if working.mode == "LA":
        array = np.stack([array[..., 0]] * 3 + [array[..., 1]], axis=2)
    rgb, restore_array = _from_array(array)

    def restore(derained: np.ndarray) -> Any:
        out = restore_array(derained)
        if working.mode == "LA":
            grey = np.rint(out[..., :3].mean(axis=2)).astype(np.uint8)
            return Image.fromarray(np.stack([grey, out[..., 3]], axis=2), mode="LA")
        result = Image.fromarray(out)  # uint16 H x W comes back as I;16
        result.info.update({k: v for k, v in image.info.items() if k in ("icc_profile", "dpi")})
        return result

    return rgb, restore
