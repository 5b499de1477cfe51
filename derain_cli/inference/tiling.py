"""Pure tile geometry: split an image into overlapping tiles and merge them back seamlessly.

No torch and no model code here, so the geometry is tested on its own. Two layouts are offered:

* :func:`plan_tiles` + :class:`Blender`: tiles of ``tile x tile`` pixels that overlap their
  neighbours by at least ``overlap`` pixels. Across every overlap a tile's weight is 0 on the
  outer quarter (its own edge, the least reliable pixels), rises along a cosine ramp over the
  middle half and is 1 on the inner quarter; elsewhere, in particular along the image borders,
  it is 1. Weights are normalised per pixel, so constant regions merge exactly, a network whose
  receptive radius is at most a quarter of the overlap merges exactly, and any remaining
  disagreement is spread over half the overlap instead of showing as a step.
* :func:`grid_tiles` / :func:`strip_tiles` + :func:`with_halo`: non-overlapping core tiles (or
  full-width strips of about the same area) read with a halo of context around them; the caller
  keeps only the core. This is exact when the halo covers the receptive
  radius of what runs on the tile, and is what the InstanceNorm streaming in ``engine.py`` uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from derain_cli.errors import UsageError, setting

#: Smallest ``--tile`` the command accepts (0, no tiling, is always allowed). Every tile costs a
#: fixed overhead per layer (the default nets stream 26-34 layer pieces, each re-reading a 1-2 px
#: halo), so tiny tiles multiply the work: ``--tile 1`` on a photo means millions of tiles and
#: hours. 64 px is also the smallest tile nlcl-s2d streams anyway (16 cells of 4 px) and the step
#: of the automatic tile sizes. The library's Derainer itself takes any size.
MIN_TILE = 64


def check_tile(tile: int | None, *, smallest: int = MIN_TILE) -> None:
    """Refuse a negative tile side, or one below ``smallest`` pixels (None = automatic, 0 = off).

    ``smallest`` is :data:`MIN_TILE` for every derainer; only a caller that means it lowers it
    (:meth:`~derain_cli.inference.settings.DerainerSettings.check`).
    """
    if tile is not None and tile < 0:
        raise UsageError(
            f"{setting('tile')} {tile}: must be 0 (off) or a positive number of pixels"
        )
    if tile is not None and 0 < tile < smallest:
        raise UsageError(
            f"{setting('tile')} {tile}: too small; tiles are at least {MIN_TILE} pixels (below "
            "that the context read around each tile dominates and a run takes hours); "
            "0 disables tiling"
        )


@dataclass(frozen=True)
class Box:
    """A half-open pixel rectangle ``[y0, y1) x [x0, x1)``."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels covering ``length`` with >= ``overlap`` shared.

    The first tile starts at 0, the last ends at ``length``, and the starts in between are spread
    evenly, so every overlap is at least ``overlap`` (and as equal as integer pixels allow).
    """
    if tile <= 0:
        raise ValueError(f"tile must be positive, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got {overlap} for tile {tile}")
    if length <= tile:
        return [0]
    step = tile - overlap
    count = math.ceil((length - tile) / step) + 1
    span = length - tile
    return [round(i * span / (count - 1)) for i in range(count)]


def plan_tiles(height: int, width: int, tile: int, overlap: int) -> list[Box]:
    """Overlapping ``tile x tile`` boxes covering the image, row-major (clipped to the image)."""
    ys = tile_starts(height, tile, overlap)
    xs = tile_starts(width, tile, overlap)
    return [Box(y, min(y + tile, height), x, min(x + tile, width)) for y in ys for x in xs]


def _ramp(length: int) -> np.ndarray:
    """Cosine ramp rising from ~0 to ~1 over ``length`` pixels; ``r[i] + r[-1 - i] == 1``."""
    t = (np.arange(length, dtype=np.float64) + 0.5) / length
    return 0.5 - 0.5 * np.cos(np.pi * t)


def _rise(shared: int) -> np.ndarray:
    """Weights across an overlap of ``shared`` pixels for the tile entering it (leading edge).

    The outer quarter (the tile's own edge, where a convolution saw zero padding instead of the
    neighbouring pixels) gets weight 0, the inner quarter 1, and a cosine ramp joins them. The
    neighbour leaving the overlap uses the mirror image, so the two always sum to one.
    """
    margin = shared // 4
    weights = np.ones(shared, dtype=np.float64)
    weights[:margin] = 0.0
    weights[margin : shared - margin] = _ramp(shared - 2 * margin)
    return weights


def _axis_weights(start: int, stop: int, starts: list[int], stops: list[int]) -> np.ndarray:
    """1-D feather weights of one tile along one axis given all tiles' extents on that axis."""
    weights = np.ones(stop - start, dtype=np.float64)
    for other_start, other_stop in zip(starts, stops, strict=True):
        if other_start < start < other_stop:  # neighbour overlapping our leading edge
            shared = min(other_stop, stop) - start
            weights[:shared] *= _rise(shared)
        if other_start < stop < other_stop and other_start > start:  # trailing edge
            shared = stop - other_start
            weights[-shared:] *= _rise(shared)[::-1]
    return weights


def feather_weights(box: Box, boxes: list[Box]) -> np.ndarray:
    """``box.height x box.width`` blending weights of ``box`` within the layout ``boxes``.

    Weights ramp down only towards edges that a neighbouring tile overlaps; along the image
    borders they stay 1, so a border pixel covered by one tile is copied exactly.
    """
    ys = sorted({(b.y0, b.y1) for b in boxes})
    xs = sorted({(b.x0, b.x1) for b in boxes})
    wy = _axis_weights(box.y0, box.y1, [a for a, _ in ys], [b for _, b in ys])
    wx = _axis_weights(box.x0, box.x1, [a for a, _ in xs], [b for _, b in xs])
    return np.outer(wy, wx)


def split(image: np.ndarray, boxes: list[Box]) -> list[np.ndarray]:
    """Crop ``image`` (H x W x ...) to every box (views, not copies)."""
    return [image[box.slices] for box in boxes]


class Blender:
    """Accumulates feather-weighted tiles into an ``H x W x C`` float32 image.

    Tiles may be added in any order; :meth:`result` divides by the summed weights, so the
    weights need not sum to one and overlaps of any width blend correctly.
    """

    def __init__(self, height: int, width: int, channels: int, boxes: list[Box]) -> None:
        self.boxes = boxes
        self._sum = np.zeros((height, width, channels), dtype=np.float64)
        self._weight = np.zeros((height, width), dtype=np.float64)

    def add(self, box: Box, piece: np.ndarray) -> None:
        if piece.shape[:2] != (box.height, box.width):
            raise ValueError(f"tile of shape {piece.shape} does not fit {box}")
        weights = feather_weights(box, self.boxes)
        self._sum[box.slices] += piece * weights[..., None]
        self._weight[box.slices] += weights

    def result(self) -> np.ndarray:
        if np.any(self._weight <= 0):
            raise ValueError("some pixels are covered by no tile")
        return (self._sum / self._weight[..., None]).astype(np.float32)


def merge(pieces: list[np.ndarray], boxes: list[Box], height: int, width: int) -> np.ndarray:
    """Blend ``pieces`` (one ``h x w x C`` array per box) into an ``H x W x C`` float32 image."""
    if len(pieces) != len(boxes):
        raise ValueError(f"{len(pieces)} pieces for {len(boxes)} tiles")
    blender = Blender(height, width, pieces[0].shape[2], boxes)
    for box, piece in zip(boxes, pieces, strict=True):
        blender.add(box, piece)
    return blender.result()


def grid_tiles(height: int, width: int, tile: int) -> list[Box]:
    """Non-overlapping core boxes of at most ``tile x tile`` pixels, evenly sized, row-major."""
    if tile <= 0:
        raise ValueError(f"tile must be positive, got {tile}")
    rows = math.ceil(height / tile)
    cols = math.ceil(width / tile)
    ys = [round(i * height / rows) for i in range(rows + 1)]
    xs = [round(j * width / cols) for j in range(cols + 1)]
    return [Box(ys[i], ys[i + 1], xs[j], xs[j + 1]) for i in range(rows) for j in range(cols)]


def with_halo(box: Box, halo: int, height: int, width: int) -> Box:
    """``box`` grown by ``halo`` pixels on every side, clipped to the image."""
    return Box(
        max(box.y0 - halo, 0),
        min(box.y1 + halo, height),
        max(box.x0 - halo, 0),
        min(box.x1 + halo, width),
    )


#: Strips thinner than this are mostly halo: :func:`strip_tiles` uses square tiles instead.
MIN_STRIP_ROWS = 16


def strip_tiles(height: int, width: int, tile: int) -> list[Box]:
    """Full-width strips of about ``tile x tile`` pixels each, evenly sized, top to bottom.

    A strip of whole rows is one contiguous block of a row-major (or channels-last) image, so it
    moves between host and device in a single copy instead of one per row. Images so wide that a
    strip would have fewer than :data:`MIN_STRIP_ROWS` rows get :func:`grid_tiles` instead.
    """
    if tile <= 0:
        raise ValueError(f"tile must be positive, got {tile}")
    rows = tile * tile // max(width, 1)
    if rows < MIN_STRIP_ROWS:
        return grid_tiles(height, width, tile)
    count = math.ceil(height / rows)
    ys = [round(i * height / count) for i in range(count + 1)]
    return [Box(ys[i], ys[i + 1], 0, width) for i in range(count)]


@dataclass(frozen=True)
class InPlaceWrite:
    """When a core's result may overwrite the input it was computed from (see below)."""

    safe_rows: int  # rows from the top of the core that no later tile reads: write at once
    flush_after: int  # index of the last tile that reads the other rows: write them after it


def in_place_schedule(cores: list[Box], halo: int, height: int, width: int) -> list[InPlaceWrite]:
    """Let a tile loop write its outputs into the buffer of an input it is still reading.

    ``cores`` are processed in order, each read with ``halo`` pixels of context. Writing core
    ``j``'s output over the input at once would corrupt the halo that later tiles still read, so
    the rows of the core that a later read box touches wait until the last such tile has run.
    For full-width strips that is only the bottom ``halo`` rows of each strip, for which one tile
    of delay suffices; for a grid it is the whole core until the next row of tiles has run.
    Cores must be ordered by their top row (as :func:`grid_tiles` and :func:`strip_tiles` are).
    """
    reads = [with_halo(core, halo, height, width) for core in cores]
    schedule: list[InPlaceWrite] = []
    for index, core in enumerate(cores):
        cut, last = core.y1, index
        for later in range(index + 1, len(cores)):
            read = reads[later]
            if read.y0 >= core.y1:
                break  # read boxes start no higher than their predecessors': none can touch it
            if read.y1 > core.y0 and read.x0 < core.x1 and read.x1 > core.x0:
                cut, last = min(cut, max(read.y0, core.y0)), later
        schedule.append(InPlaceWrite(safe_rows=cut - core.y0, flush_after=last))
    return schedule
