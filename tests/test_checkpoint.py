"""Checkpoints: weights_only round trip, RNG states, atomic replacement."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from derain_cli.atomic import remove_stale_temps
from derain_cli.train import checkpoint as ckpt
from derain_cli.train.checkpoint import (
    CheckpointError,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)


def _state(step: int) -> dict:
    model = torch.nn.Linear(3, 2)
    optimiser = torch.optim.Adam(model.parameters(), betas=(0.5, 0.999))
    model(torch.ones(1, 3)).sum().backward()
    optimiser.step()
    return {
        "step": step,
        "models": model.state_dict(),
        "optimizers": {"g": optimiser.state_dict()},
        "config": {"train": {"lr": 1e-4, "betas": [0.5, 0.999], "precision": "auto"}},
        "rng": capture_rng(),
    }


def test_round_trip_with_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    state = _state(7)
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)
    assert loaded["step"] == 7 and loaded["config"] == state["config"]
    for key, tensor in state["models"].items():
        assert torch.equal(loaded["models"][key], tensor)
    optimiser = torch.optim.Adam(torch.nn.Linear(3, 2).parameters())
    optimiser.load_state_dict(loaded["optimizers"]["g"])


def test_rng_states_restore_every_generator() -> None:
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    random.gauss(0, 1)  # leaves a cached Gaussian in Python's state
    state = capture_rng()
    first = (random.random(), random.gauss(0, 1), np.random.rand(), torch.rand(1).item())
    restore_rng(state)
    second = (random.random(), random.gauss(0, 1), np.random.rand(), torch.rand(1).item())
    assert first == second


def test_a_crash_while_writing_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, _state(1))

    def torn_save(obj: object, handle) -> None:  # type: ignore[no-untyped-def]
        handle.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, _state(2))
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_leftover_temp_files_are_ignored_and_cleaned(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, _state(3))
    leftover = tmp_path / ".checkpoint.pt.k3x9q1.tmp"  # what a SIGKILL mid-write leaves
    leftover.write_bytes(b"PK\x03\x04 torn")
    assert load_checkpoint(path)["step"] == 3
    assert remove_stale_temps(tmp_path) == [leftover]


def test_unreadable_or_foreign_files_are_one_line_errors(tmp_path: Path) -> None:
    torn = tmp_path / "torn.pt"
    torn.write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(CheckpointError, match="not a readable derain checkpoint"):
        load_checkpoint(torn)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.ones(1)}, foreign)
    with pytest.raises(CheckpointError, match="format mismatch"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
