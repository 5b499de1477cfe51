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
