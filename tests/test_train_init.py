"""`derain train --init SPEC` (train.init): G_B and G_R start from trained weights, D fresh."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from _trainkit import TINY_S2D, make_dataset, save_spec, tiny_config, tiny_without_generators
from _trainkit import at_start as trainkit_at_start
from typer.testing import CliRunner

from derain_cli.cli.app import app
from derain_cli.config import NLCLConfig
from derain_cli.data import scan_folders
from derain_cli.toml_text import dumps_toml
from derain_cli.train.checkpoint import load_checkpoint
from derain_cli.train.export import export_run
from derain_cli.train.init_weights import full_hparams
from derain_cli.train.loop import train
from derain_cli.train.setup import Run, build_objective
from derain_cli.weights.checksums import sha256_file
from derain_cli.weights.loading import load_weights

runner = CliRunner()
TINY_RESNET = {"channels": 8, "blocks": 2}  # TINY's generators


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "data")


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key, tensor in a.items():
        torch.testing.assert_close(b[key], tensor, rtol=0, atol=0, msg=key)


def test_init_starts_g_b_g_r_and_the_ema_from_the_weights_and_d_fresh(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = save_spec(tmp_path / "spec", "nlcl-resnet", TINY_RESNET)
    config = tiny_config(steps=1, sample_every=0).with_overrides({"train.init": str(spec)})
    seen: dict[str, dict[str, torch.Tensor]] = {}

    def at_start(run: Run) -> None:
        seen.update(g_b=snapshot(run.objective.g_b), g_r=snapshot(run.objective.g_r))
        seen.update(d=snapshot(run.objective.d), heads=snapshot(run.objective.location_heads))
        assert run.ema is not None
        seen["ema"] = snapshot(run.ema.module)

    folders = scan_folders(data, min_rainy=2)
    trainkit_at_start(monkeypatch, at_start)
    train(config, folders, tmp_path / "run")
    assert_same(load_weights(str(spec)).module.state_dict(), seen["g_b"])
    assert_same(
        load_weights(str(spec.with_name("G_R.safetensors"))).module.state_dict(), seen["g_r"]
    )
    assert_same(seen["g_b"], seen["ema"])  # the EMA starts at the initial G_B
    torch.manual_seed(config.train.seed)  # what a run from random weights starts with
    fresh = build_objective(config)
    assert_same(snapshot(fresh.d), seen["d"])
    assert_same(snapshot(fresh.location_heads), seen["heads"])
    assert any(not torch.equal(v, seen["g_b"][k]) for k, v in fresh.g_b.state_dict().items())

    # One step later the EMA is 0.1 * initial + 0.9 * live (decay (1 + 0) / (10 + 0)).
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    for key, start in seen["ema"].items():
        live = state["models"][f"g_b.{key}"]
        torch.testing.assert_close(state["ema"]["module"][key], 0.1 * start + 0.9 * live)


def test_without_a_rain_partner_g_r_starts_fresh_with_g_b_architecture(
    data: Path, tmp_path: Path
) -> None:
    spec = save_spec(tmp_path / "spec", "nlcl-s2d", TINY_S2D, rain=False)
    partial = tmp_path / "partial.toml"
    partial.write_text(dumps_toml(tiny_without_generators()), encoding="utf-8")
    out = tmp_path / "run"
    args = ["train", str(data), "--config", str(partial), "--init", str(spec), "--out", str(out)]
    result = runner.invoke(app, [*args, "--steps", "1"])
    assert result.exit_code == 0, result.output
    assert "G_R starts fresh (the weights have no rain partner)" in result.output
    model = NLCLConfig.load(out / "config.toml").model
    assert (model.generator, model.rain_generator) == ("nlcl-s2d", "nlcl-s2d")
    assert model.generator_hparams == model.rain_hparams
    assert model.generator_hparams == full_hparams("nlcl-s2d", TINY_S2D)  # defaults filled in
    meta = load_weights(str(out / "G_B.safetensors")).metadata
    assert "rain_sha256" not in json.loads(meta["derain.init"])


@pytest.mark.parametrize(
    ("arch", "hparams", "named"),
    [
        ("nlcl-s2d", TINY_S2D, "model.generator is 'nlcl-resnet' in the config, 'nlcl-s2d' in"),
        ("nlcl-resnet", {"channels": 16, "blocks": 2},
         "model.generator_hparams.channels is 8 in the config, 16 in"),
    ],
)  # fmt: skip
def test_a_config_with_other_generators_is_refused_before_work(
    data: Path, tmp_path: Path, arch: str, hparams: dict[str, Any], named: str
) -> None:
    spec = save_spec(tmp_path / "spec", arch, hparams)
    full = tmp_path / "tiny.toml"  # names its generators: TINY's nlcl-resnet, 8 channels
    full.write_text(tiny_config().dumps_toml(), encoding="utf-8")
    out = tmp_path / "run"
    args = ["train", str(data), "--config", str(full), "--init", str(spec), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert message.startswith("derain: error: --init ") and "\n" not in message
    assert named in message and "out of the config to take them from the weights" in message
    assert not out.exists()


def test_location_layers_the_init_generator_lacks_are_refused(data: Path, tmp_path: Path) -> None:
    spec = save_spec(tmp_path / "spec", "nlcl-s2d", TINY_S2D)  # gen layers 0..4
    partial = tmp_path / "partial.toml"
    partial.write_text(dumps_toml(tiny_without_generators()), encoding="utf-8")
    args = ["train", str(data), "--config", str(partial), "--init", str(spec)]
    result = runner.invoke(app, [*args, "--set", "losses.location_g_layers=[0, 6]", "--out",
                                 str(tmp_path / "run")])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "losses.location_g_layers = [0, 6] do not fit the --init generator" in result.output


def test_an_initialised_run_resumes_exactly_without_the_weights_and_records_them(
    data: Path, tmp_path: Path
) -> None:
    spec = save_spec(tmp_path / "spec", "nlcl-s2d", TINY_S2D)
    rain = spec.with_name("G_R.safetensors")
    digests = {"sha256": sha256_file(spec), "rain_sha256": sha256_file(rain)}
    partial = tmp_path / "partial.toml"
    partial.write_text(dumps_toml(tiny_without_generators()), encoding="utf-8")
    common = ["--config", str(partial), "--set", "train.sample_every=0", "--init", str(spec)]
    a, b = tmp_path / "a", tmp_path / "b"
    result = runner.invoke(app, ["train", str(data), *common, "--out", str(a)])
    assert result.exit_code == 0, result.output
    assert f"G_B starts from {spec}, sha256 {digests['sha256'][:12]}; G_R from" in result.output
    result = runner.invoke(app, ["train", str(data), *common, "--out", str(b), "--steps", "2"])
    assert result.exit_code == 0, result.output

    moved = shutil.move(tmp_path / "spec", tmp_path / "elsewhere")  # SPEC is not needed again
    other = save_spec(tmp_path / "other", "nlcl-s2d", TINY_S2D)
    refused = runner.invoke(app, ["train", str(data), "--out", str(b), "--resume", "--init",
                                  str(other)])  # fmt: skip
    assert refused.exit_code == 2
    assert f"train.init is '{spec}' in the checkpoint, '{other}' asked" in refused.output
    result = runner.invoke(app, ["train", str(data), *common, "--out", str(b), "--resume"])
    assert result.exit_code == 0, result.output
    assert "G_B starts from" not in result.output
    state_a, state_b = (load_checkpoint(run / "checkpoint.pt") for run in (a, b))
    assert state_a["step"] == state_b["step"] == 4
    assert_same(state_a["models"], state_b["models"])
    assert_same(state_a["ema"]["module"], state_b["ema"]["module"])

    # What both runs started from: config, checkpoint, metrics event, exported metadata.
    recorded = {"spec": str(spec), "source": str(spec), **digests}
    recorded["rain_source"] = str(rain)
    for run in (a, b):
        assert NLCLConfig.load(run / "config.toml").train.init == str(spec)
        assert load_checkpoint(run / "checkpoint.pt")["init"] == recorded
        events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [e.get("init") for e in events if "event" in e][0] == recorded
        for name in ("G_B", "G_R"):
            meta = load_weights(str(run / f"{name}.safetensors")).metadata
            assert json.loads(meta["derain.init"]) == recorded
    exported, _, _ = export_run(b, tmp_path / "export")
    assert json.loads(load_weights(str(exported)).metadata["derain.init"]) == recorded
    assert Path(moved).is_dir()


def test_a_run_from_random_weights_records_no_origin(data: Path, tmp_path: Path) -> None:
    folders = scan_folders(data, min_rainy=2)
    train(tiny_config(steps=1, sample_every=0), folders, tmp_path / "run")
    assert "derain.init" not in load_weights(str(tmp_path / "run" / "G_B.safetensors")).metadata
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["init"] == {}
