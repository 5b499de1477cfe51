"""Data parallelism on CPU: ``--gpus 2 --device cpu`` runs two gloo ranks that stay identical
and compute exactly what one process computes on the same global batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _trainkit import make_dataset, tiny_config

from derain_cli.data import StepSampler, scan_folders
from derain_cli.errors import UsageError
from derain_cli.runtime import resolve_device
from derain_cli.train.checkpoint import load_checkpoint
from derain_cli.train.distributed import DistContext, average_gradients
from derain_cli.train.launch import run
from derain_cli.train.run_folder import read_metrics
from derain_cli.train.setup import build_objective


def test_ranks_split_the_global_batch_exactly() -> None:
    single = list(StepSampler(start=3, stop=6, global_batch=4, rank=0, world=1))
    shards = [list(StepSampler(start=3, stop=6, global_batch=4, rank=r, world=2)) for r in (0, 1)]
    for step in range(3):
        batch = single[4 * step : 4 * step + 4]
        assert shards[0][2 * step : 2 * step + 2] + shards[1][2 * step : 2 * step + 2] == batch
    with pytest.raises(UsageError):
        StepSampler(start=0, stop=1, global_batch=3, rank=0, world=2)


def test_single_process_helpers_are_no_ops() -> None:
    param = torch.nn.Parameter(torch.ones(3))
    param.grad = torch.full((3,), 2.0)
    average_gradients([param], DistContext())
    assert torch.equal(param.grad, torch.full((3,), 2.0))
    assert resolve_device("cpu", training=True) == torch.device("cpu")


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    # Deterministic terms only: the contrastive terms draw their query patches per rank, which
    # legitimately differs from one process drawing for the whole batch.
    data = make_dataset(tmp_path / "data")
    folders = scan_folders(data, min_rainy=4)
    base = tiny_config(steps=2, batch_size=4, sample_every=0, ema_decay=0.0).with_overrides(
        {"losses.use_layer_contrast": False, "losses.use_location_contrast": False}
    )
    one = run(base, folders, tmp_path / "one", resume=False)
    two = run(base.with_overrides({"train.gpus": 2}), folders, tmp_path / "two", resume=False)

    assert two.step == one.step == 2
    assert len(two.replica_checksums) == 2
    assert two.replica_checksums[0] == two.replica_checksums[1]  # replicas hold identical weights
    a = load_checkpoint(tmp_path / "one" / "checkpoint.pt")["models"]
    b = load_checkpoint(tmp_path / "two" / "checkpoint.pt")["models"]
    # A conv bias right before an affine-free InstanceNorm has an analytically zero gradient:
    # Adam turns its float noise into +-lr steps, which cannot match between two reductions.
    # It is also invisible (the norm subtracts it), so those are compared through the outputs.
    noise_only = _biases_before_instance_norm(build_objective(base))
    assert noise_only and set(noise_only) < set(a)
    for key, tensor in a.items():
        if key not in noise_only:
            torch.testing.assert_close(b[key], tensor, rtol=0, atol=1e-6, msg=key)
    nets_one, nets_two = build_objective(base), build_objective(base)
    nets_one.load_state_dict(a)
    nets_two.load_state_dict(b)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        for name in ("g_b", "g_r", "d"):
            out_one, out_two = getattr(nets_one, name)(x), getattr(nets_two, name)(x)
            torch.testing.assert_close(out_two, out_one, rtol=0, atol=1e-5, msg=name)
    initial = build_objective(base).state_dict()
    assert any(not torch.equal(a[k], initial[k]) for k in a)  # the runs did train
    loss_one = read_metrics(tmp_path / "one" / "metrics.jsonl")[-1]["g_total"]
    loss_two = read_metrics(tmp_path / "two" / "metrics.jsonl")[-1]["g_total"]
    assert loss_two == pytest.approx(loss_one, rel=1e-5)  # logged losses are global means


def _biases_before_instance_norm(model: torch.nn.Module) -> set[str]:
    found = set()
    for prefix, module in model.named_modules():
        children = list(module.named_children())
        for (name, child), (_, following) in zip(children, children[1:], strict=False):
            if isinstance(child, torch.nn.Conv2d) and isinstance(
                following, torch.nn.InstanceNorm2d
            ):
                found.add(f"{prefix}.{name}.bias" if prefix else f"{name}.bias")
    return found
