"""Tiny NLCL runs for the training tests: synthetic rainy/clean folders and a tiny config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from derain_cli.config import NLCLConfig

REPO = Path(__file__).resolve().parents[1]

#: Generators with 8 channels and 2 blocks, a 2-layer D with 8 channels, 8x8 patches, few
#: queries and negatives: one step takes tens of milliseconds on one CPU core.
TINY: dict[str, Any] = {
    "model": {
        "generator_hparams": {"channels": 8, "blocks": 2},
        "rain_hparams": {"channels": 8, "blocks": 2},
        "d_channels": 8,
        "d_layers": 2,
        "head_units": 16,
    },
    "sampler": {"patch": 8, "stride": 4},
    "losses": {
        "layer_d_layers": [0, 1],
        "layer_queries": 4,
        "layer_positives": 2,
        "layer_negatives": 8,
        "location_g_layers": [0, 1, 2],
        "location_queries": 8,
        "location_negatives": 8,
    },
    "train": {
        "steps": 4,
        "batch_size": 2,
        "crop": 32,
        "log_every": 1,
        "sample_every": 2,
        "checkpoint_every": 2,
        "num_samples": 2,
        "num_workers": 0,
        "device": "cpu",
    },
}


#: A tiny nlcl-s2d (2x2 cells, no norm, a refinement head): starting weights for --init tests.
TINY_S2D: dict[str, Any] = {"channels": 8, "blocks": 2, "factor": 2, "norm": "none", "refine": 4}


def tiny_config(**train: Any) -> NLCLConfig:
    return NLCLConfig.from_dict(TINY).with_overrides({f"train.{k}": v for k, v in train.items()})


def write_tiny_toml(path: Path, **train: Any) -> Path:
    path.write_text(tiny_config(**train).dumps_toml(), encoding="utf-8")
    return path


def tiny_without_generators() -> dict[str, Any]:
    """TINY with the generator keys left out (``--init`` gives them)."""
    data: dict[str, Any] = json.loads(json.dumps(TINY))
    for key in ("generator_hparams", "rain_hparams"):
        data["model"].pop(key)
    return data


def save_spec(folder: Path, arch: str, hparams: dict[str, Any], *, rain: bool = True) -> Path:
    """Starting weights for ``--init``: a seeded random G_B, and G_R beside it (``rain``), with
    derain metadata, in ``folder``; returns the G_B file."""
    import torch

    from derain_cli.nets.registry import build_generator
    from derain_cli.weights.files import save_weights

    folder.mkdir(parents=True, exist_ok=True)
    layers = [("G_B", "background", 1)] + ([("G_R", "rain", 2)] if rain else [])
    for name, layer, seed in layers:
        torch.manual_seed(seed)
        net = build_generator(arch, hparams)
        save_weights(folder / f"{name}.safetensors", net, arch=arch, hparams=hparams,
                     metadata={"derain.layer": layer})  # fmt: skip
    return folder / "G_B.safetensors"


def make_dataset(root: Path, *, rainy: int = 6, clean: int = 4, seed: int = 0) -> Path:
    """``root`` with rainy-ish noise images and ``root/clean`` with smooth ones (PNG/JPEG)."""
    rng = np.random.default_rng(seed)
    (root / "clean").mkdir(parents=True, exist_ok=True)
    for i in range(rainy):
        base = rng.random((1, 1, 3)) * 0.6 + 0.2
        image = base + 0.08 * rng.standard_normal((40 + 4 * i, 48, 3))
        streaks = rng.random(image.shape[:2]) > 0.96
        image[streaks] += 0.5
        save(root / f"rain-{i}.png", image)
    for i in range(clean):
        image = rng.random((1, 1, 3)) * 0.6 + 0.2 + 0.04 * rng.standard_normal((44, 52, 3))
        save(root / "clean" / f"clean-{i}.jpg", image)
    return root


def save(path: Path, image: np.ndarray) -> None:
    Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8)).save(path)


def derain_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "derain_cli", *args]


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        derain_cmd(*args), capture_output=True, text=True, env=subprocess_env(), timeout=timeout
    )


def at_start(monkeypatch: Any, hear: Any) -> None:
    """``hear(run)`` once, just before the first optimiser step (after a resume or an init)."""
    from derain_cli.train import loop

    steps = loop._run_steps

    def run_steps(run: Any, *args: Any) -> Any:
        hear(run)
        return steps(run, *args)

    monkeypatch.setattr(loop, "_run_steps", run_steps)


def after_step(monkeypatch: Any, hear: Any) -> None:
    """``hear(step, objective)`` after every optimiser step (``step`` counts the steps done)."""
    from derain_cli.train import loop

    one_step = loop._one_step

    def stepped(run: Any, batch: Any, step: int, *args: Any) -> Any:
        terms = one_step(run, batch, step, *args)
        hear(step + 1, run.objective)
        return terms

    monkeypatch.setattr(loop, "_one_step", stepped)
