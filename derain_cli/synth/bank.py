"""Streak-bank rain: rain composed from a folder of photographed or rendered streak images.

A *streak bank* is any folder of images of rain streaks on black (for example the photometric
renderings of falling drops by Garg and Nayar, "Photorealistic Rendering of Rain Streaks", 2006,
from which the Rain100H-family datasets were composed). Nothing of such a bank ships with derain:
users point ``derain synth --streaks DIR`` or ``losses.synthetic_streaks`` at their own.

One :class:`BankLayer` turns one bank image into an alpha map for the picture::

    grey = luminance of the bank image, [0, 1]
    keep = its connected streaks (grey > THRESHOLD) whose pixel area falls in the tier:
           small < 20 <= middle < 120 <= large   (areas at the bank's own resolution),
           or every streak (tier "all")
    grey = grey * dilate(keep)                     the soft rims of the kept streaks stay
    layer = flip, rotate by ``angle``, zoom by ``zoom`` (about the centre of a large canvas),
            cut the picture's window at ``offset``, blur by ``blur``, times ``opacity``

Filtering by area follows the Rain100H generator, which composed each picture from small, middle
and large streaks of separate bank images: a picture's rain then mixes fine drizzle with a few
large near drops instead of one uniform texture. The bank image is tiled (mirrored) where the
zoomed, turned layer does not cover the picture.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from derain_cli.errors import UsageError

Tier = Literal["small", "middle", "large", "all"]
TIERS: tuple[Tier, ...] = ("small", "middle", "large", "all")
#: Component areas (pixels at the bank's resolution) separating the tiers.
TIER_AREAS = (20, 120)
#: A bank pixel belongs to a streak above this grey level (of 255).
THRESHOLD = 25


@dataclass(frozen=True)
class BankLayer:
    """One layer of streak-bank rain (``source`` is a file name inside the bank)."""

    source: str
    tier: Tier
    zoom: float  # bank pixels -> picture pixels
    angle: float  # degrees, positive leans the streaks' tops to the right
    flip: bool  # mirrored left-right before turning
    opacity: float  # multiplies the bank's grey levels
    blur: float  # defocus (Gaussian sigma, picture pixels)
    offset: tuple[float, float]  # where the picture's window sits in the turned layer, [0, 1)


class StreakBank:
    """The streak images of one folder, decoded on first use (grey float32 in [0, 1]).

    Picklable (data-loader workers get their own copy and decode on their own).
    """

    def __init__(self, folder: Path | str) -> None:
        from derain_cli.images.formats import READABLE_SUFFIXES

        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise UsageError(f"{self.folder}: no such folder of streak images")
        self.names: tuple[str, ...] = tuple(
            sorted(
                p.name
                for p in self.folder.iterdir()
                if p.is_file()
                and not p.name.startswith(".")
                and p.suffix.lower() in READABLE_SUFFIXES
            )
        )
        if not self.names:
            raise UsageError(f"{self.folder}: no streak images found")

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"StreakBank({str(self.folder)!r}, {len(self.names)} images)"

    def __getstate__(self) -> dict[str, object]:
        return {"folder": self.folder, "names": self.names}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.folder = state["folder"]  # type: ignore[assignment]
        self.names = state["names"]  # type: ignore[assignment]

    def streaks(self, name: str, tier: Tier) -> np.ndarray:
        """The grey streak image ``name`` keeping the streaks of ``tier`` only."""
        return _tier_image(self.folder / name, tier)

    def alpha(self, shape: tuple[int, int], layer: BankLayer) -> np.ndarray:
        """The layer as an alpha map ``(H, W)`` float32 in [0, 1] for a picture of ``shape``."""
        return layer_alpha(self.streaks(layer.source, layer.tier), shape, layer)


@functools.lru_cache(maxsize=1024)
def _decoded(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise UsageError(f"{path}: cannot be read as a streak image")
    return image


@functools.lru_cache(maxsize=256)
def _tier_image(path: Path, tier: Tier) -> np.ndarray:
    grey = _decoded(path)
    image = grey.astype(np.float32) / 255.0
    if tier == "all":
        return image
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        (grey > THRESHOLD).astype(np.uint8), connectivity=8
    )
    areas = stats[:, cv2.CC_STAT_AREA].copy()
    lo, hi = {"small": (0, TIER_AREAS[0]), "middle": TIER_AREAS, "large": (TIER_AREAS[1], 1 << 30)}[
        tier
    ]
    keep = (areas >= lo) & (areas < hi)
    keep[0] = False  # the background component
    mask = keep[labels].astype(np.uint8)
    mask = cv2.dilate(mask, np.ones((3, 3), np.uint8))
    return image * mask


def layer_alpha(streaks: np.ndarray, shape: tuple[int, int], layer: BankLayer) -> np.ndarray:
    """Flip, turn, zoom and cut ``streaks`` (grey, [0, 1]) to an alpha map of ``shape``."""
    height, width = shape
    src = streaks[:, ::-1] if layer.flip else streaks
    zoom = max(layer.zoom, 1e-3)
    # Bank pixels the picture's window needs, before turning: its diagonal covers any angle.
    need = math.hypot(height, width) / zoom + 4
    reps_y = max(1, math.ceil(need / src.shape[0]))
    reps_x = max(1, math.ceil(need / src.shape[1]))
    if reps_y > 1 or reps_x > 1:  # mirrored tiles: no seam, no visible period
        rows = [src if i % 2 == 0 else src[::-1] for i in range(reps_y)]
        column = np.concatenate(rows, axis=0)
        tiles = [column if j % 2 == 0 else column[:, ::-1] for j in range(reps_x)]
        src = np.concatenate(tiles, axis=1)
    src_h, src_w = src.shape
    # The window's centre in the source, chosen by ``offset`` where the source has room.
    half = need / 2
    cy = half + layer.offset[0] * max(src_h - need, 0.0)
    cx = half + layer.offset[1] * max(src_w - need, 0.0)
    # picture (x, y) -> source: rotate about the window centre, scale by 1/zoom (a positive
    # angle puts a vertical streak's top to the right of its bottom)
    rad = math.radians(-layer.angle)
    cos, sin = math.cos(rad) / zoom, math.sin(rad) / zoom
    px, py = (width - 1) / 2, (height - 1) / 2
    matrix = np.array(
        [
            [cos, -sin, cx - cos * px + sin * py],
            [sin, cos, cy - sin * px - cos * py],
        ],
        np.float32,
    )
    alpha = cv2.warpAffine(
        np.ascontiguousarray(src, np.float32),
        matrix,
        (width, height),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REFLECT,
    )
    if layer.blur > 0.3:
        alpha = cv2.GaussianBlur(alpha, (0, 0), layer.blur)
    return np.clip(alpha * layer.opacity, 0.0, 1.0)
