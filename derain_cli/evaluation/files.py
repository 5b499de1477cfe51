"""What ``derain eval`` writes besides its table: the CSV of scores and the comparison grid."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from derain_cli.atomic import atomic_write_bytes
from derain_cli.evaluation.scoring import GridRow, Report, finite_row

CSV_FIELDS = ("method", "set", "stem", "count", "psnr", "ssim", "niqe", "cast", "seconds")


def write_csv(path: Path, report: Report) -> None:
    """Means (``stem`` empty) then per-image rows, one CSV for spreadsheets and plots; written
    atomically (an interrupted run leaves the previous file, or none)."""
    import csv
    import io

    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for summary in report.summaries():
        writer.writerow(finite_row({**asdict(summary), "stem": ""}))
    for score in report.scores:
        writer.writerow(finite_row({**asdict(score), "count": 1}))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.getvalue().encode("utf-8"))


def comparison_grid(rows: Sequence[GridRow], *, gap: int = 4, line: int = 14) -> np.ndarray:
    """A labelled side-by-side picture: one row per image, one column per method (uint8 RGB).

    Each row starts with the image's stem; each cell has its method label above it (cut to the
    cell's width).
    """
    from PIL import Image, ImageDraw

    if not rows:
        raise ValueError("no rows to draw")
    cell_h = max(im.shape[0] for row in rows for _, im in row.columns)
    widths = [sum(im.shape[1] + gap for _, im in row.columns) + gap for row in rows]
    row_h = 2 * line + cell_h + gap
    canvas = Image.new("RGB", (max(widths), len(rows) * row_h + gap), "white")
    draw = ImageDraw.Draw(canvas)
    y = gap
    for row in rows:
        draw.text((gap, y), _fit(draw, row.stem, max(widths) - 2 * gap), fill="black")
        x = gap
        for label, image in row.columns:
            draw.text((x, y + line), _fit(draw, label, image.shape[1]), fill=(60, 60, 60))
            tile = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
            canvas.paste(Image.fromarray(tile), (x, y + 2 * line))
            x += image.shape[1] + gap
        y += row_h
    return np.asarray(canvas)


def _fit(draw: object, text: str, width: int) -> str:
    """``text`` shortened with an ellipsis until Pillow's default font fits it in ``width``."""
    length = draw.textlength  # type: ignore[attr-defined]
    if length(text) <= width:
        return text
    while text and length(text + "...") > width:
        text = text[:-1]
    return text + "..."


def write_grid(path: Path, rows: Sequence[GridRow]) -> None:
    """Save :func:`comparison_grid` as a PNG (atomically, like every image we write)."""
    from derain_cli.images.codecs import png_bytes

    atomic_write_bytes(path, png_bytes(comparison_grid(rows)))
