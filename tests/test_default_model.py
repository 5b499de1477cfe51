"""The bundled default model: registered, verified, documented, and it removes rain.

These tests read the real ``weights/registry.json`` (no ``DERAIN_REGISTRY`` override): they are the
README quick start's contract on a fresh clone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from derain_cli import weights_registry
from derain_cli.checksums import sha256_file
from derain_cli.metrics import psnr, ssim
from derain_cli.weights import load_weights

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "docs" / "examples" / "rainy-camera.jpg"
NAME = "nlcl-cpu-v1"
MAX_BYTES = 20_000_000


@pytest.fixture
def bundled_registry(monkeypatch: pytest.MonkeyPatch) -> weights_registry.Registry:
    monkeypatch.delenv("DERAIN_REGISTRY", raising=False)
    return weights_registry.load_registry()


def test_default_alias_points_at_the_bundled_cpu_model(
    bundled_registry: weights_registry.Registry,
) -> None:
    assert bundled_registry.aliases["default"] == NAME
    for name in (NAME, f"{NAME}-rain"):
        entry = bundled_registry.entries[name]
        assert entry.arch == "nlcl-s2d"
        assert entry.file is not None and entry.file.parent == REPO / "weights"
        assert entry.file.stat().st_size < MAX_BYTES
        assert sha256_file(entry.file) == entry.sha256


def test_default_weights_carry_their_provenance(
    bundled_registry: weights_registry.Registry,
) -> None:
    loaded = load_weights("default")
    meta = loaded.metadata
    assert loaded.arch == "nlcl-s2d"
    assert loaded.hparams["output"] == "subtract_rain" and loaded.hparams["norm"] == "none"
    assert meta["derain.layer"] == "background" and meta["derain.ema"] == "true"
    assert meta["derain.licence"] == "MIT"
    # The script that linked both rainy folders into one (now: derain train A B, same order).
    assert json.loads(meta["derain.train_commands"]) == [
        "bash tools/train_cpu_default.sh runs/cpu-default"
    ]
    trained = json.loads(meta["derain.train_config"])
    committed = (REPO / "configs" / "cpu-default.toml").read_text(encoding="utf-8")
    assert f"steps = {trained['train']['steps']}\n" in committed
    assert int(meta["derain.trained_steps"]) == trained["train"]["steps"]
    evaluation = json.loads(meta["derain.eval"])
    bench = {row["method"]: row for row in evaluation["bench_dev"]}
    real = {row["method"]: row for row in evaluation["real_rain"]}
    model = next(m for m in bench if m not in ("input",) and "realrain" not in m)
    assert bench[model]["psnr"] > bench["input"]["psnr"]
    assert bench[model]["ssim"] > bench["input"]["ssim"]
    assert real[model]["niqe"] < real["input"]["niqe"]
    rain = load_weights(f"{NAME}-rain")
    assert rain.metadata["derain.layer"] == "rain"


def test_quick_start_derains_the_example(tmp_path: Path) -> None:
    """README's quick start, as a user runs it: no --weights, the bundled default."""
    skdata = pytest.importorskip(
        "skimage.data", reason="scikit-image (test extra) gives the clean photo"
    )
    out = tmp_path / "clean.jpg"
    env = {k: v for k, v in os.environ.items() if k != "DERAIN_REGISTRY"}
    done = subprocess.run(
        [sys.executable, "-m", "derain_cli", str(EXAMPLE), "-o", str(out), "--quality", "100"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    clean = np.repeat(skdata.camera()[..., None], 3, axis=2).astype(np.float64) / 255.0
    rainy = np.asarray(Image.open(EXAMPLE).convert("RGB"), np.float64) / 255.0
    ours = np.asarray(Image.open(out).convert("RGB"), np.float64) / 255.0
    assert ours.shape == clean.shape
    assert psnr(ours, clean) > psnr(rainy, clean) + MIN_GAIN_DB
    assert ssim(ours, clean) > ssim(rainy, clean)


#: A regression guard: nlcl-cpu-v1 gained 3.71 dB (22.36 -> 26.07 dB RGB PSNR, SSIM 0.613 -> 0.810)
#: on the example when it was bundled.
MIN_GAIN_DB = 2.0
