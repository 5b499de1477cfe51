"""Shared test fixtures: seeded RNGs, the read-only ../shared folder, small thread counts."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def shared() -> Path:
    """The read-only shared data folder; tests that need it skip when it is absent."""
    if not (SHARED / "data").is_dir():
        pytest.skip(f"shared data not found at {SHARED}")
    return SHARED


@pytest.fixture
def reference(shared: Path) -> Path:
    ref = shared / "reference"
    if not (ref / "nlcl-realrain-G_B.pth").is_file():
        pytest.skip(f"authors' reference checkpoint not found in {ref}")
    return ref


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny authors-layout G_B (``_clikit.HPARAMS``): milliseconds a picture on the CPU."""
    from _clikit import HPARAMS

    from derain_cli.nets.registry import build_generator
    from derain_cli.weights.files import save_weights

    torch.manual_seed(0)
    module = build_generator("nlcl-resnet", HPARAMS)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_weights(path, module, arch="nlcl-resnet", hparams=HPARAMS)
    return path
