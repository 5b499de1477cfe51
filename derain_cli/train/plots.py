"""Pictures of a run, drawn with Pillow and NumPy only: sample grids and loss curves.

Both are written atomically (temporary file, then rename) so a viewer never sees half a PNG.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from derain_cli.atomic import atomic_write_bytes

GRID_COLUMNS = ("rainy O", "B = G_B(O)", "R = G_R(O)", "clean (unpaired)")


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """N x 3 x H x W in [-1, 1] -> N x H x W x 3 uint8."""
    array = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round()
    return array.to(torch.uint8).permute(0, 2, 3, 1).numpy()


def sample_grid(
    columns: Sequence[torch.Tensor], *, labels: Sequence[str] = (), gap: int = 2
) -> np.ndarray:
    """Rows = samples, columns = tensors (each N x 3 x H x W in [-1, 1]); white gaps.

    ``labels``: one caption per column, written in a white band above it.
    """
    tiles = [to_uint8(c) for c in columns]
    rows, height, width = tiles[0].shape[:3]
    top = _LABEL_BAND if labels else 0
    grid = np.full(
        (top + rows * height + (rows - 1) * gap, len(tiles) * width + (len(tiles) - 1) * gap, 3),
        255,
        np.uint8,
    )
    for c, tile in enumerate(tiles):
        for r in range(rows):
            y, x = top + r * (height + gap), c * (width + gap)
            grid[y : y + height, x : x + width] = tile[r]
    if not labels:
        return grid
    picture = Image.fromarray(grid)
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default()
    for c, label in enumerate(labels[: len(tiles)]):
        draw.text((c * (width + gap) + 2, 2), label, fill=(0, 0, 0), font=font)
    return np.asarray(picture)


#: Height of the caption band above a labelled sample grid, pixels.
_LABEL_BAND = 14


def save_png(path: Path, image: np.ndarray | Image.Image) -> None:
    """Atomic PNG write (the one PNG writer, :func:`derain_cli.images.codecs.png_bytes`)."""
    from derain_cli.images.codecs import png_bytes

    atomic_write_bytes(path, png_bytes(np.asarray(image)))


def loss_curves(
    records: Sequence[Mapping[str, float]],
    keys: Sequence[str],
    *,
    panel: tuple[int, int] = (360, 170),
    per_row: int = 3,
) -> Image.Image:
    """Small multiples: one panel per key, value against step, with its min/max written on it."""
    font = ImageFont.load_default()
    cols = max(1, min(per_row, len(keys)))
    rows = max(1, math.ceil(len(keys) / cols))
    width, height = panel
    canvas = Image.new("RGB", (cols * width, rows * height), "white")
    draw = ImageDraw.Draw(canvas)
    steps = np.array([float(r["step"]) for r in records])
    for i, key in enumerate(keys):
        x0, y0 = (i % cols) * width, (i // cols) * height
        left, top, right, bottom = x0 + 44, y0 + 18, x0 + width - 8, y0 + height - 18
        draw.rectangle((left, top, right, bottom), outline=(180, 180, 180))
        draw.text((x0 + 6, y0 + 3), key, fill="black", font=font)
        values = np.array([float(r.get(key, math.nan)) for r in records])
        ok = np.isfinite(values)
        if ok.sum() == 0:
            draw.text((left + 6, top + 6), "no data", fill=(150, 0, 0), font=font)
            continue
        xs, ys = steps[ok], values[ok]
        lo, hi = float(ys.min()), float(ys.max())
        span = hi - lo if hi > lo else 1.0
        s_lo, s_hi = float(xs.min()), float(xs.max())
        s_span = s_hi - s_lo if s_hi > s_lo else 1.0
        px = left + (xs - s_lo) / s_span * (right - left)
        py = bottom - (ys - lo) / span * (bottom - top)
        points = list(zip(px.tolist(), py.tolist(), strict=True))
        if len(points) == 1:
            draw.ellipse((px[0] - 2, py[0] - 2, px[0] + 2, py[0] + 2), fill=(30, 90, 200))
        else:
            draw.line(points, fill=(30, 90, 200), width=2)
        draw.text((x0 + 2, top - 2), f"{hi:.3g}", fill=(90, 90, 90), font=font)
        draw.text((x0 + 2, bottom - 10), f"{lo:.3g}", fill=(90, 90, 90), font=font)
        draw.text((left, bottom + 3), f"{s_lo:.0f}", fill=(90, 90, 90), font=font)
        draw.text((right - 40, bottom + 3), f"{s_hi:.0f}", fill=(90, 90, 90), font=font)
    return canvas
