"""Clean stand-ins cut from the rainy photos themselves: their least-rainy crops.

NLCL's adversarial term (its discriminator's "real" examples) and the synthetic supervision (rain
rendered over clean crops) need unpaired clean photographs. Someone adapting the model to one
shoot often has none (``derain adapt`` without ``--clean``). Then the rainy photos' own crops where
the starting G_B finds the least rain stand in: random crops of every photo (seeded) are scored by
how much G_B takes away from them, and the lowest share is kept and written as PNG files.

The score is the mean of ``|O - G_B(O)|`` over the crop's pixels and channels, in [0, 1] units:
everything G_B would remove, streaks and veil alike. Not its high-frequency part alone: the
bundled default lifts veils far more than it removes streaks (its predicted rain is nearly flat,
docs/training.md, "What limits it"), so the high-passed estimate of the model that does the
ranking would be mostly noise; and a crop under a heavy veil is no clean example either.

Known bias: rain shows least on bright, flat areas (sky, pale walls), so the kept crops lean that
way and the discriminator learns that "clean" looks like them. Real clean photographs of similar
scenes (``--clean``) are better whenever there are any.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from derain_cli.atomic import atomic_write_bytes
from derain_cli.errors import DerainError
from derain_cli.images.tensors import to_model_range

#: The file in the crops folder that lists every kept crop, where it came from and its score.
MANIFEST = "crops.json"


@dataclass(frozen=True)
class ScoredCrop:
    """A square crop of a rainy photo and how much rain the starting G_B finds in it."""

    source: Path
    top: int
    left: int
    side: int
    rain: float  # mean |O - G_B(O)| in [0, 1] units
    pixels: np.ndarray = field(repr=False, compare=False)  # side x side x 3, uint8


@dataclass(frozen=True)
class CleanCrops:
    """The kept crops (least rain first), the folder they were written to, and the counts."""

    folder: Path
    kept: tuple[ScoredCrop, ...]
    files: tuple[Path, ...]
    candidates: int
    skipped: tuple[Path, ...] = ()

    @property
    def threshold(self) -> float:
        """The highest score kept: every crop above it was left out."""
        return max(crop.rain for crop in self.kept)


def score_crops(
    paths: Sequence[Path],
    g_b: nn.Module,
    *,
    side: int,
    per_image: int,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> tuple[list[ScoredCrop], list[Path]]:
    """Up to ``per_image`` random ``side``-px crops of each photo (smaller photos: their short
    side; a position drawn twice is scored once), scored by G_B; positions come from
    ``default_rng([seed, index])``. Returns the scored crops and the photos that could not be
    decoded (skipped)."""
    from derain_cli.data import decode

    if side < 1 or per_image < 1:
        raise ValueError("side and per_image must be >= 1")
    g_b = g_b.to(device).eval()
    scored: list[ScoredCrop] = []
    skipped: list[Path] = []
    for index, path in enumerate(paths):
        try:
            rgb = decode(path)
        except (DerainError, OSError, ValueError):
            skipped.append(path)
            continue
        height, width = rgb.shape[:2]
        size = min(side, height, width)
        rng = np.random.default_rng([seed, index])
        corners = list(  # a small photo has few places: each is scored once
            dict.fromkeys(
                (int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1)))
                for _ in range(per_image)
            )
        )
        crops = [rgb[top : top + size, left : left + size] for top, left in corners]
        o = torch.cat([to_model_range(crop) for crop in crops]).to(device)
        with torch.inference_mode():
            rain = ((o - g_b(o).float()).abs().mean(dim=(1, 2, 3)) / 2.0).cpu().tolist()
        for (top, left), crop, amount in zip(corners, crops, rain, strict=True):
            pixels = (np.clip(crop, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
            scored.append(ScoredCrop(path, top, left, size, float(amount), pixels))
    return scored, skipped


def least_rainy(scored: Sequence[ScoredCrop], keep: float) -> list[ScoredCrop]:
    """The ``keep`` share (at least one) of ``scored`` with the least rain, least first; ties are
    broken by file and position so the choice is deterministic."""
    if not 0 < keep <= 1:
        raise ValueError("keep must be in (0, 1]")
    count = max(1, round(len(scored) * keep))
    ranked = sorted(scored, key=lambda c: (c.rain, str(c.source), c.top, c.left))
    return ranked[:count]


def write_crops(crops: Sequence[ScoredCrop], folder: Path) -> list[Path]:
    """Write each crop as ``NNNN-<photo>-y<top>-x<left>.png`` (NNNN: its rank, least rain first)
    and a ``crops.json`` manifest (source, position, side, score) into ``folder``. Crops an
    earlier call listed in the manifest there are removed first (nothing else is touched), so an
    earlier attempt's crops never join this set."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    _remove_listed(folder)
    files = []
    for rank, crop in enumerate(crops):
        path = folder / f"{rank:04d}-{crop.source.stem}-y{crop.top}-x{crop.left}.png"
        buffer = io.BytesIO()
        Image.fromarray(crop.pixels).save(buffer, format="PNG")
        atomic_write_bytes(path, buffer.getvalue())
        files.append(path)
    manifest = [
        {"file": f.name, "source": str(c.source), "top": c.top, "left": c.left, "side": c.side,
         "rain": round(c.rain, 6)}
        for f, c in zip(files, crops, strict=True)
    ]  # fmt: skip
    atomic_write_bytes(folder / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
    return files


def _remove_listed(folder: Path) -> None:
    try:
        rows = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    for row in rows if isinstance(rows, list) else []:
        name = row.get("file") if isinstance(row, dict) else None
        if isinstance(name, str) and Path(name).name == name:
            (folder / name).unlink(missing_ok=True)


def choose_clean_crops(
    paths: Sequence[Path],
    g_b: nn.Module,
    folder: Path,
    *,
    side: int,
    per_image: int = 8,
    keep: float = 0.25,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> CleanCrops:
    """Score ``per_image`` crops of every photo with ``g_b``, keep the least-rainy ``keep`` share
    and write it into ``folder`` (:func:`score_crops`, :func:`least_rainy`, :func:`write_crops`)."""
    scored, skipped = score_crops(
        paths, g_b, side=side, per_image=per_image, seed=seed, device=device
    )
    if not scored:
        raise DerainError(f"none of the {len(paths)} rainy photos could be decoded")
    kept = least_rainy(scored, keep)
    files = write_crops(kept, folder)
    return CleanCrops(folder, tuple(kept), tuple(files), len(scored), tuple(skipped))
