"""A training run's folder: its layout, its metrics log, its sample grids and loss curve.

::

    RUN/config.toml         the resolved config (what --resume continues)
    RUN/checkpoint.pt       networks, optimisers, EMA, RNG states, data position
    RUN/metrics.jsonl       one JSON row per logged step, plus start/resume/end events
    RUN/samples/step-N.png  rainy | B | R | clean, for a few fixed crops
    RUN/loss-curve.png      every loss term, the learning rate and images/s over the steps
    RUN/G_B.safetensors     the background generator (what derain runs), G_R beside it

Only rank 0 writes here.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from derain_cli.atomic import atomic_write_bytes, remove_stale_temps
from derain_cli.config import NLCLConfig
from derain_cli.train.checkpoint import CHECKPOINT_NAME
from derain_cli.train.plots import GRID_COLUMNS, loss_curves, sample_grid, save_png

if TYPE_CHECKING:
    from derain_cli.losses.objective import NLCLObjective


@dataclass(frozen=True)
class RunPaths:
    """The run folder layout (see docs/training.md)."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def checkpoint(self) -> Path:
        return self.root / CHECKPOINT_NAME

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    @property
    def curve(self) -> Path:
        return self.root / "loss-curve.png"

    @property
    def weights(self) -> Path:
        return self.root / "G_B.safetensors"

    @property
    def rain_weights(self) -> Path:
        """G_R beside G_B (``derain inspect-patches`` finds it by the name)."""
        return self.root / "G_R.safetensors"


def prepare_folder(
    paths: RunPaths, config: NLCLConfig, start: int, origin: Mapping[str, str] | None = None
) -> None:
    """Create the folder, write the config and open the metrics log with a start (or resume)
    event; ``origin`` (what ``--init`` loaded: ``init_weights.origin``) is recorded in it."""
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.samples.mkdir(exist_ok=True)
    remove_stale_temps(paths.root)
    atomic_write_bytes(paths.config, config.dumps_toml().encode("utf-8"))
    # A resumed run continues the log at the checkpoint's step: rows a killed process wrote
    # after its last checkpoint are dropped, so every step appears once. The start and resume
    # events up to there stay: each process counts ``seconds`` from its own start, so the wall
    # time of a run resumed several times is the sum of its segments, one per event.
    kept: list[str] = []
    if start > 0 and paths.metrics.is_file():
        for line in paths.metrics.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                row = json.loads(line)
                kind = row.get("event")
                if int(row.get("step", 0)) <= start and kind in (None, "start", "resume"):
                    kept.append(line)
    event: dict[str, Any] = {"event": "resume" if start else "start", "step": start}
    if origin:
        event["init"] = dict(origin)
    kept.append(json.dumps(event))
    paths.metrics.write_text("\n".join(kept) + "\n", encoding="utf-8")


def append_metrics(path: Path, row: Mapping[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row, allow_nan=True) + "\n")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The numeric rows of a ``metrics.jsonl`` (events skipped)."""
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                row = json.loads(line)
                if "event" not in row:
                    rows.append(row)
    return rows


def draw_curve(paths: RunPaths) -> None:
    rows = read_metrics(paths.metrics)
    if not rows:
        return
    keys = [k for k in rows[-1] if k.startswith(("d_", "g_"))] + ["lr", "images_per_s"]
    save_png(paths.curve, loss_curves(rows, keys))


@torch.no_grad()
def write_samples(
    paths: RunPaths,
    step: int,
    objective: NLCLObjective,
    g_b: nn.Module,
    preview: tuple[torch.Tensor, torch.Tensor],
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]],
) -> Path:
    rainy, clean = (t.to(device) for t in preview)
    with autocast():
        _, r = objective.forward_generators(rainy)
        b = g_b(rainy)
    grid = sample_grid([rainy, b.float(), r.float(), clean], labels=GRID_COLUMNS)
    path = paths.samples / f"step-{step:07d}.png"
    save_png(path, grid)
    return path
