"""The step-memory bound (derain_cli.train.memory): scaling, refusal before work, real configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _trainkit import make_dataset, tiny_config

from derain_cli.config import NLCLConfig
from derain_cli.data import scan_folders
from derain_cli.errors import UsageError
from derain_cli.train import memory
from derain_cli.train.loop import train
from derain_cli.train.setup import build_objective

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parents[1]


def networks(config: NLCLConfig) -> list[torch.nn.Module]:
    objective = build_objective(config)
    return [objective.g_b, objective.g_r, objective.d]


def test_the_bound_grows_with_batch_and_crop_squared() -> None:
    nets = networks(tiny_config())
    base = memory.activation_bytes(nets, 64, 1, torch.float32, CPU)
    assert base > 0
    assert memory.activation_bytes(nets, 128, 1, torch.float32, CPU) == 4 * base
    assert memory.activation_bytes(nets, 64, 3, torch.float32, CPU) == 3 * base
    assert memory.activation_bytes(nets, 64, 1, torch.bfloat16, CPU) == base // 2


def test_the_oversized_step_of_the_issue_is_refused_and_the_cpu_default_is_not() -> None:
    """The paper's config at --crop 2048 grew past 24 GB and was OOM-killed on a 24 GB machine;
    the bound alone says so. The CPU default's step is far below a gigabyte."""
    paper = NLCLConfig.load(REPO / "configs" / "default.toml")
    needed = memory.activation_bytes(networks(paper), 2048, 1, torch.float32, CPU)
    assert needed > 24 * 2**30
    with pytest.raises(UsageError, match=r"batch 1 x 2048 px needs at least .* GB on cpu, which"):
        memory.check_step_memory(networks(paper), 2048, 1, torch.float32, CPU, 24 * 2**30)
    default = NLCLConfig.load(REPO / "configs" / "cpu-default.toml")
    small = memory.check_step_memory(networks(default), 128, 8, torch.float32, CPU, 24 * 2**30)
    assert small < 2**30


def test_train_refuses_before_writing_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_dataset(tmp_path / "data")
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1024)
    out = tmp_path / "run"
    with pytest.raises(UsageError, match="lower the crop or the batch size"):
        train(tiny_config(), scan_folders(data, min_rainy=2), out)
    assert not out.exists() or not any(out.iterdir())


def test_free_memory_is_read_on_this_machine() -> None:
    free = memory.available_bytes(CPU)
    assert free is None or free > 0
    assert memory.available_bytes(torch.device("meta")) is None
