"""What the non-local sampler sees (the paper's Fig. 8): query patches and their matches.

For each query patch, the ``k`` nearest patches of the image (the non-local positives, paper
Eq. 7) and the ``k`` farthest (the reverse non-local negatives of the location contrast) are found
with :func:`derain_cli.sampling.select`, the entry training uses, on the same grid
(patch side, stride, overlap exclusion from :class:`derain_cli.config.SamplerConfig`).

With a decomposition (G_B and G_R, see :func:`decompose`), positives are searched in the
background layer B and negatives in the rain layer R, as training does; without one, both are
searched in the input O.

Large images are searched on a copy whose long side is at most ``max_side`` pixels (the grid
of a 4000-px photo would not fit in memory); every coordinate in the result is mapped back to
original-image pixels (top-left corners), and ``scale`` says how far the copy was reduced.
Distances are squared L2 over the ``3 x patch x patch`` values of the searched layer (RGB in
[0, 1]) at search resolution, what the sampler ranks; the sampler chooses the k patches and the
distances reported are recomputed exactly (float64) for them.

:func:`layout` gives the position of every tile in the picture, so tests (and users) can check
that the picture shows what the JSON says.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch

from derain_cli.config import SamplerConfig
from derain_cli.errors import UsageError, setting
from derain_cli.images.tensors import (
    from_model_range,
    pixels_to_tensor,
    tensor_to_pixels,
    to_model_range,
)
from derain_cli.sampling import grid_shape, random_indices, select

DEFAULT_MAX_SIDE = 512
ZOOM = 4  # each patch is drawn ZOOM times larger, nearest-neighbour, so pixels stay exact
THUMB_HEIGHT = 256
GAP = 6
LINE = 14  # height of one line of Pillow's default font, with spacing
LABEL_WIDTH = 120


@dataclass(frozen=True)
class Match:
    """A patch: top-left corner in original pixels (x, y) and at search resolution (sx, sy)."""

    x: int
    y: int
    distance: float
    sx: int
    sy: int

    def to_dict(self) -> dict[str, Any]:
        return {"x": self.x, "y": self.y, "distance": self.distance}


@dataclass(frozen=True)
class Query:
    x: int
    y: int
    sx: int
    sy: int
    nearest: list[Match]
    farthest: list[Match]


@dataclass
class Layers:
    """The images searched, at search resolution (float32 H x W x 3)."""

    image: np.ndarray  # O
    background: np.ndarray | None = None  # B
    rain: np.ndarray | None = None  # R (image units, may be negative)
    rain_source: str = ""  # "G_R" or "O - B"

    @property
    def positive_layer(self) -> tuple[str, np.ndarray]:
        return ("B", self.background) if self.background is not None else ("O", self.image)

    @property
    def negative_layer(self) -> tuple[str, np.ndarray]:
        return ("R", self.rain) if self.rain is not None else ("O", self.image)


@dataclass
class Inspection:
    image: str
    patch: int  # patch side in original-image pixels
    search_patch: int  # patch side at search resolution
    stride: int  # grid stride at search resolution
    scale: float  # search resolution / original resolution (<= 1)
    queries: list[Query]
    layers: Layers
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` document (nearest ascending, farthest descending)."""
        pos, _ = self.layers.positive_layer
        neg, _ = self.layers.negative_layer
        return {
            "image": self.image,
            "patch": self.patch,
            "search_patch": self.search_patch,
            "stride": self.stride,
            "scale": self.scale,
            "nearest_layer": pos,
            "farthest_layer": neg,
            **({"rain_layer": self.layers.rain_source} if self.layers.rain is not None else {}),
            "queries": [
                {
                    "x": q.x,
                    "y": q.y,
                    "nearest": [m.to_dict() for m in q.nearest],
                    "farthest": [m.to_dict() for m in q.farthest],
                }
                for q in self.queries
            ],
        }


# --------------------------------------------------------------------------------------------
# search


def search_scale(height: int, width: int, max_side: int | None) -> float:
    """Factor (<= 1) bringing the long side down to ``max_side``."""
    if not max_side or max(height, width) <= max_side:
        return 1.0
    return max_side / max(height, width)


def resize_for_search(rgb: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return rgb
    h, w = rgb.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def _at_search_size(layer: np.ndarray, shape: tuple[int, ...], scale: float) -> np.ndarray:
    """A layer given at search resolution is used as is; at original size it is reduced."""
    return layer if layer.shape == shape else resize_for_search(layer, scale)


def _query_indices(
    points: list[tuple[int, int]] | None,
    count: int,
    grid: tuple[int, int],
    stride: int,
    scale: float,
    seed: int,
) -> list[int]:
    """Flat grid indices of the queries: the grid positions nearest ``points`` (original
    pixels, top-left corners, inside the image), else ``count`` distinct random ones drawn
    with ``seed``. Points past the last grid position snap to it."""
    rows, cols = grid
    if points:
        out = []
        for x, y in points:
            r = min(rows - 1, max(0, round(y * scale / stride)))
            c = min(cols - 1, max(0, round(x * scale / stride)))
            out.append(r * cols + c)
        return out
    if count > rows * cols:
        raise UsageError(
            f"{setting('queries')} {count}: the image has only {rows * cols} patch positions"
        )
    generator = torch.Generator().manual_seed(seed)
    return [int(i) for i in random_indices(1, rows * cols, count, generator=generator)[0]]


def inspect_image(
    rgb: np.ndarray,
    *,
    name: str = "",
    patch: int = 16,
    stride: int | None = None,
    k: int = 5,
    queries: int = 4,
    at: list[tuple[int, int]] | None = None,
    seed: int = 0,
    max_side: int | None = DEFAULT_MAX_SIDE,
    decomposition: tuple[np.ndarray, np.ndarray | None] | None = None,
) -> Inspection:
    """Find the nearest and farthest patches of each query.

    ``rgb`` is the original image; ``decomposition`` an optional ``(B, R)`` at the original or
    the search size (``R`` None: ``R = O - B``). ``stride`` defaults to the training grid's ratio
    (``SamplerConfig``: 16 px patches every 8 px).
    """
    cfg = SamplerConfig()
    if stride is None:
        stride = max(1, round(patch * cfg.stride / cfg.patch))
    if patch < 2 or stride < 1 or k < 1 or queries < 1:
        raise UsageError(
            f"{setting('patch')} must be >= 2, {setting('stride')}, {setting('k')} and "
            f"{setting('queries')} >= 1"
        )
    h, w = rgb.shape[:2]
    for x, y in at or []:
        # In-image points snap to the nearest grid position; points outside it are refused
        # rather than clamped to the border, which would show a patch nobody asked for.
        if not (0 <= x < w and 0 <= y < h):
            raise UsageError(
                f"{setting('at')} {x},{y}: outside {name or 'the image'} ({w}x{h} pixels: "
                f"X 0-{w - 1}, Y 0-{h - 1})"
            )
    scale = search_scale(h, w, max_side)
    image = resize_for_search(rgb, scale)
    layers = Layers(image=image)
    notes = []
    if decomposition is not None:
        background, rain = decomposition
        layers.background = _at_search_size(background, image.shape, scale)
        if rain is None:
            layers.rain = image - layers.background
            layers.rain_source = "O - B"
            notes.append("no G_R weights found: R = O - B")
        else:
            layers.rain = _at_search_size(rain, image.shape, scale)
            layers.rain_source = "G_R"
    try:
        grid = grid_shape(image.shape[0], image.shape[1], patch, stride)
    except ValueError as exc:
        raise UsageError(f"{name or 'image'}: {exc}") from None
    q_idx = _query_indices(at, queries, grid, stride, scale, seed)
    q_tensor = torch.tensor([q_idx], dtype=torch.long)
    _, pos_img = layers.positive_layer
    _, neg_img = layers.negative_layer
    try:
        grid_cfg = dataclasses.replace(cfg, patch=patch, stride=stride)
        near_i = select(grid_cfg, "nonlocal", pixels_to_tensor(pos_img), q_tensor, k=k)
        far_i = select(
            grid_cfg, "nonlocal", pixels_to_tensor(neg_img), q_tensor, k=k, farthest=True
        )
    except ValueError as exc:
        raise UsageError(f"{name or 'image'}: {exc}; try a smaller k or patch") from None

    cols = grid[1]

    def corners(index: int) -> tuple[int, int, int, int]:
        """(x, y) in original pixels and (sx, sy) at search resolution of a grid index."""
        gy, gx = divmod(index, cols)
        sx, sy = gx * stride, gy * stride
        return round(sx / scale), round(sy / scale), sx, sy

    def matches(query: int, idx: torch.Tensor, layer: np.ndarray, farthest: bool) -> list[Match]:
        # The sampler picks the k patches (its fp32 |a|^2 + |b|^2 - 2ab expansion carries
        # rounding of ~1e-4); the distances shown are recomputed exactly in float64, and the k
        # re-sorted by them, so an exact repeat reads 0.
        _, _, qx, qy = corners(query)
        ref = layer[qy : qy + patch, qx : qx + patch].astype(np.float64)
        out = []
        for i in idx.tolist():
            x, y, sx, sy = corners(int(i))
            cand = layer[sy : sy + patch, sx : sx + patch].astype(np.float64)
            out.append(Match(x=x, y=y, distance=float(np.sum((cand - ref) ** 2)), sx=sx, sy=sy))
        return sorted(out, key=lambda m: m.distance, reverse=farthest)

    found = [
        Query(*corners(q), nearest=matches(q, near_i[0, j], pos_img, False),
              farthest=matches(q, far_i[0, j], neg_img, True))
        for j, q in enumerate(q_idx)
    ]  # fmt: skip
    return Inspection(
        image=name,
        patch=round(patch / scale),
        search_patch=patch,
        stride=stride,
        scale=scale,
        queries=found,
        layers=layers,
        notes=notes,
    )


# --------------------------------------------------------------------------------------------
# decomposition


def decompose(
    rgb: np.ndarray, g_b: torch.nn.Module, g_r: torch.nn.Module | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """B (in [0, 1]) and R (image units: O = B + R) from the generators, [-1, 1] convention.

    The generators work in [-1, 1]: ``B' = G_B(2 O - 1)``, ``R' = G_R(2 O - 1)`` with
    ``B' + R' = O'`` during training, so in image units ``B = (B' + 1) / 2`` and ``R = R' / 2``.
    """
    x = to_model_range(rgb)
    with torch.inference_mode():
        b = from_model_range(g_b(x))
        r = tensor_to_pixels(g_r(x) / 2.0) if g_r is not None else None
    return b, r


# --------------------------------------------------------------------------------------------
# picture


@dataclass(frozen=True)
class Box:
    """Where one tile sits in the picture (PNG pixels, x1/y1 exclusive)."""

    kind: str  # "query", "nearest", "farthest", "thumb"
    row: str  # the row a tile belongs to: "nearest", "farthest" or "thumbs"
    query: int  # query number (0-based); -1 for thumbnails
    rank: int  # 0-based rank among the matches; 0 for query tiles and thumbnails
    layer: str  # "O", "B" or "R"
    x0: int
    y0: int
    x1: int
    y1: int


def layout(inspection: Inspection) -> tuple[tuple[int, int], list[Box]]:
    """Size (width, height) of the picture and the box of every tile in it.

    Top: thumbnails of O (query boxes drawn on it), B and R when decomposed. Then two rows per
    query: "nearest" (query tile, then the k nearest) and "farthest" (query tile, then the k
    farthest), each tile ``ZOOM`` times the search patch with its distance printed under it.
    """
    layers = inspection.layers
    h, w = layers.image.shape[:2]
    thumb_w = max(1, round(w * THUMB_HEIGHT / h))
    boxes: list[Box] = []
    x = GAP
    thumbs = ["O"] + (["B", "R"] if layers.background is not None else [])
    top = 2 * LINE
    for name in thumbs:
        boxes.append(Box("thumb", "thumbs", -1, 0, name, x, top, x + thumb_w, top + THUMB_HEIGHT))
        x += thumb_w + GAP
    width = x
    tile = inspection.search_patch * ZOOM
    y = top + THUMB_HEIGHT + GAP
    pos, _ = layers.positive_layer
    neg, _ = layers.negative_layer
    row_h = LINE + tile + LINE + GAP
    for qi, query in enumerate(inspection.queries):
        for kind, layer, matches in (
            ("nearest", pos, query.nearest),
            ("farthest", neg, query.farthest),
        ):
            ty = y + LINE
            boxes.append(
                Box("query", kind, qi, 0, layer, LABEL_WIDTH, ty, LABEL_WIDTH + tile, ty + tile)
            )
            tx = LABEL_WIDTH + tile + 3 * GAP
            for rank in range(len(matches)):
                boxes.append(Box(kind, kind, qi, rank, layer, tx, ty, tx + tile, ty + tile))
                tx += tile + GAP
            width = max(width, tx)
            y += row_h
    return (width + GAP, y + GAP), boxes


def _display(layer: str, pixels: np.ndarray) -> np.ndarray:
    """uint8 RGB of a layer for showing; R is stretched to its 99th percentile to be visible."""
    if layer == "R":
        top = float(np.percentile(np.abs(pixels), 99)) or 1.0
        pixels = np.abs(pixels) / top
    return (np.clip(pixels, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def render(inspection: Inspection) -> np.ndarray:
    """The picture (uint8 RGB H x W x 3) described by :func:`layout`."""
    from PIL import Image, ImageDraw

    layers = inspection.layers
    planes = {"O": layers.image}
    if layers.background is not None and layers.rain is not None:
        planes |= {"B": layers.background, "R": layers.rain}
    shown = {name: _display(name, px) for name, px in planes.items()}
    size, boxes = layout(inspection)
    canvas = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(canvas)
    p = inspection.search_patch
    stride_note = f"patch {p}px, stride {inspection.stride}px"
    if inspection.scale != 1.0:
        stride_note += f" at {inspection.scale:.3g}x (coordinates in original pixels)"
    titles = {"O": "input O", "B": "background B (G_B)", "R": f"rain R ({layers.rain_source})"}
    for box in boxes:
        if box.kind == "thumb":
            thumb = cv2.resize(
                shown[box.layer], (box.x1 - box.x0, box.y1 - box.y0), interpolation=cv2.INTER_AREA
            )
            canvas.paste(Image.fromarray(thumb), (box.x0, box.y0))
            draw.text((box.x0, box.y0 - LINE), titles[box.layer], fill="black")
    _draw_query_boxes(draw, inspection, boxes)
    for box in boxes:
        if box.kind == "thumb":
            continue
        q = inspection.queries[box.query]
        match: Match | None = None if box.kind == "query" else getattr(q, box.kind)[box.rank]
        src = q if match is None else match
        crop = shown[box.layer][src.sy : src.sy + p, src.sx : src.sx + p]
        canvas.paste(
            Image.fromarray(np.repeat(np.repeat(crop, ZOOM, 0), ZOOM, 1)), (box.x0, box.y0)
        )
        if box.kind == "query":
            what = "positives" if box.row == "nearest" else "negatives"
            draw.text((GAP, box.y0), f"q{box.query + 1} {box.row}", fill="black")
            draw.text((GAP, box.y0 + LINE), f"in {box.layer} ({what})", fill=(90, 90, 90))
            draw.text((box.x0, box.y1 + 1), f"({q.x},{q.y})", fill="black")
        elif match is not None:
            draw.text((box.x0, box.y1 + 1), f"{match.distance:.3g}", fill="black")
    draw.text((GAP, 1), stride_note, fill=(90, 90, 90))
    return np.asarray(canvas)


def _draw_query_boxes(draw: Any, inspection: Inspection, boxes: list[Box]) -> None:
    """Numbered query rectangles on the input thumbnail."""
    thumb = next(b for b in boxes if b.kind == "thumb" and b.layer == "O")
    h = inspection.layers.image.shape[0]
    f = (thumb.y1 - thumb.y0) / h  # thumbnail pixels per search pixel
    side = max(2, math.ceil(inspection.search_patch * f))
    for i, q in enumerate(inspection.queries):
        x0 = thumb.x0 + round(q.x * inspection.scale * f)
        y0 = thumb.y0 + round(q.y * inspection.scale * f)
        draw.rectangle((x0, y0, x0 + side, y0 + side), outline=(255, 40, 40), width=2)
        draw.text((x0 + side + 2, y0), str(i + 1), fill=(255, 40, 40))


def png_bytes(inspection: Inspection) -> bytes:
    from derain_cli.images import codecs

    return codecs.png_bytes(render(inspection))
