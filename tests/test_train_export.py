"""`derain train --time-limit` and `derain weights export RUN_DIR` on tiny CPU runs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from _trainkit import after_step, make_dataset, tiny_config, write_tiny_toml
from typer.testing import CliRunner

from derain_cli.cli.app import app
from derain_cli.data import scan_folders
from derain_cli.durations import parse_duration
from derain_cli.errors import UsageError, WeightsError
from derain_cli.train.checkpoint import load_checkpoint
from derain_cli.train.export import export_run
from derain_cli.train.loop import train
from derain_cli.weights.loading import load_weights

runner = CliRunner()


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "data")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("3600", 3600), ("90m", 5400), ("1h30m", 5400), ("2h", 7200), ("45s", 45), ("1.5h", 5400),
     ("1h 5m 3s", 3903)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "0", "-5", "5m1h", "1h1h", "10x", "inf", "1h-2m"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(UsageError, match="duration"):
        parse_duration(text)


def test_time_limit_checkpoints_and_exports_then_resume_finishes_exactly(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folders = scan_folders(data, min_rainy=2)
    straight = train(tiny_config(steps=6, sample_every=0), folders, tmp_path / "a")

    def slow(step: int, objective: object) -> None:
        time.sleep(0.6)  # the limit below falls after the second step

    after_step(monkeypatch, slow)
    limited = train(
        tiny_config(steps=6, sample_every=0, time_limit_s=1.0), folders, tmp_path / "b",
    )  # fmt: skip
    assert limited.time_limited and not limited.interrupted
    assert 1 <= limited.step < 6
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["step"] == limited.step
    weights = load_weights(str(tmp_path / "b" / "G_B.safetensors"))
    assert weights.metadata["derain.trained_steps"] == str(limited.step)
    assert (tmp_path / "b" / "G_R.safetensors").is_file()

    resumed = train(tiny_config(steps=6, sample_every=0), folders, tmp_path / "b", resume=True)
    assert resumed.step == 6 and not resumed.time_limited
    a = load_checkpoint(tmp_path / "a" / "checkpoint.pt")["models"]
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")["models"]
    for key, tensor in a.items():
        torch.testing.assert_close(b[key], tensor, rtol=0, atol=0, msg=key)
    assert straight.step == 6


def test_cli_time_limit_says_how_to_continue(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = write_tiny_toml(tmp_path / "tiny.toml", steps=2000, sample_every=0)
    args = ["train", str(data), "--out", str(out), "--config", str(config), "--time-limit", "2s"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "time limit reached at step" in result.output and "--resume" in result.output
    assert (out / "G_B.safetensors").is_file()
    step = load_checkpoint(out / "checkpoint.pt")["step"]
    assert 0 < step < 2000
    bad = runner.invoke(app, ["train", str(data), "--out", str(tmp_path / "x"), "--time-limit",
                              "soon"])  # fmt: skip
    assert bad.exit_code == 2 and "--time-limit" in bad.output


def test_weights_export_from_a_checkpoint_alone(data: Path, tmp_path: Path) -> None:
    folders = scan_folders(data, min_rainy=2)
    run = tmp_path / "run"
    train(tiny_config(steps=2, sample_every=0), folders, run)
    trained = load_weights(str(run / "G_B.safetensors")).module.state_dict()
    for name in ("G_B.safetensors", "G_R.safetensors"):
        (run / name).unlink()  # as if the run had been killed before exporting

    background, rain, step = export_run(run)
    assert (background, rain, step) == (run / "G_B.safetensors", run / "G_R.safetensors", 2)
    exported = load_weights(str(background))
    assert exported.metadata["derain.ema"] == "true"
    for key, tensor in trained.items():
        assert torch.equal(exported.module.state_dict()[key], tensor), key

    live = load_checkpoint(run / "checkpoint.pt")["models"]
    result = runner.invoke(app, ["weights", "export", str(run), "-o", str(tmp_path / "live"),
                                 "--no-ema"])  # fmt: skip
    assert result.exit_code == 0, result.output
    plain = load_weights(str(tmp_path / "live" / "G_B.safetensors"))
    assert plain.metadata["derain.ema"] == "false"
    for key, tensor in plain.module.state_dict().items():
        assert torch.equal(tensor, live[f"g_b.{key}"]), key
    again = runner.invoke(app, ["weights", "export", str(run), "-o", str(tmp_path / "live")])
    assert again.exit_code == 2 and "exists" in again.output
    empty = runner.invoke(app, ["weights", "export", str(tmp_path)])
    assert empty.exit_code == 2 and "no training checkpoint" in empty.output

    # --weights RUN/checkpoint.pt said "not a state dict of tensors" (issue "Trust II").
    checkpoint = run / "checkpoint.pt"
    with pytest.raises(WeightsError) as caught:
        load_weights(str(checkpoint))
    assert str(caught.value) == (
        f"{checkpoint}: a derain training checkpoint, not weights; export them with "
        f"'derain weights export {run}' and use {run / 'G_B.safetensors'}"
    )
