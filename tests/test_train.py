"""End-to-end training on tiny synthetic folders (CPU, a few steps, 32 px crops)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _trainkit import (
    after_step,
    derain_cmd,
    make_dataset,
    run_cli,
    subprocess_env,
    tiny_config,
    write_tiny_toml,
)
from PIL import Image
from typer.testing import CliRunner

from derain_cli.cli.app import app
from derain_cli.config import NLCLConfig
from derain_cli.data import scan_folders
from derain_cli.errors import UsageError
from derain_cli.train.checkpoint import load_checkpoint
from derain_cli.train.loop import TrainingDiverged, train
from derain_cli.train.run_folder import read_metrics
from derain_cli.train.setup import build_objective, loader_workers
from derain_cli.train.step import StepParts, train_step

runner = CliRunner()


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "data")


def test_cli_run_exports_weights_that_derain_loads(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = write_tiny_toml(tmp_path / "tiny.toml")
    result = runner.invoke(app, ["train", str(data), "--out", str(out), "--config", str(config)])
    assert result.exit_code == 0, result.output

    # Every loss term of every logged step is finite, and all terms are there.
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    expected = {"d_real", "d_fake", "d_total", "g_adv", "g_consistency", "g_rain_l1"}
    expected |= {"g_layer_contrast", "g_location_contrast", "g_total"}
    for row in rows:
        assert expected <= row.keys()
        assert all(math.isfinite(row[k]) for k in expected | {"lr", "images_per_s"})
    assert NLCLConfig.load(out / "config.toml") == tiny_config()
    assert sorted(p.name for p in (out / "samples").iterdir()) == [
        "step-0000002.png",
        "step-0000004.png",
    ]
    assert (out / "loss-curve.png").stat().st_size > 1000
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 4

    # What the user is told, before the first step and as files appear.
    said = result.output
    assert "training on cpu (float32), batch 2 x 32 px, steps 1-4" in said
    assert "first step took" in said and "the next" in said and "2 more steps: about" in said
    assert f"step 2: checkpoint written to {out / 'checkpoint.pt'}" in said
    assert f"step 2: sample grid written to {out / 'samples' / 'step-0000002.png'}" in said
    assert "warning" not in said
    log = [line for line in said.splitlines() if line.startswith("step 2/4")]
    assert log and "G " in log[0] and "d_fake" not in log[0] and len(log[0]) < 140
    # The sample grid's columns are captioned: a white band with dark text above the images.
    grid = np.asarray(Image.open(out / "samples" / "step-0000002.png").convert("L"))
    assert grid.shape == (14 + 2 * 32 + 2, 4 * 32 + 3 * 2)
    assert grid[:14].min() < 100 and (grid[:14] == 255).mean() > 0.5

    from derain_cli.weights.loading import load_weights

    loaded = load_weights(str(out / "G_B.safetensors"))
    assert loaded.arch == "nlcl-resnet"
    assert loaded.hparams["channels"] == 8 and loaded.hparams["blocks"] == 2
    assert loaded.metadata["derain.trained_steps"] == "4"
    assert loaded.metadata["derain.ema"] == "true"
    # G_R is exported beside G_B, where derain inspect-patches looks for it.
    rain = load_weights(str(out / "G_R.safetensors"))
    assert rain.arch == "nlcl-resnet" and rain.hparams["channels"] == 8
    assert rain.metadata["derain.layer"] == "rain" and rain.metadata["derain.trained_steps"] == "4"
    state = load_checkpoint(out / "checkpoint.pt")["models"]
    for key, tensor in rain.module.state_dict().items():
        assert torch.equal(tensor, state[f"g_r.{key}"]), key
    from derain_cli.weights.loading import rain_weights_beside

    assert rain_weights_beside(str(out / "G_B.safetensors")) == out / "G_R.safetensors"
    # ...and the default command derains a photo with it.
    photo, cleaned = tmp_path / "photo.png", tmp_path / "clean.png"
    Image.fromarray(np.full((24, 20, 3), 128, np.uint8)).save(photo)
    from derain_cli.cli.app import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(photo), "-o", str(cleaned), "--weights", str(out / "G_B.safetensors")])
    assert exit_info.value.code in (0, None)
    assert Image.open(cleaned).size == (20, 24)


def test_resume_is_exact_and_reaches_the_step_count(data: Path, tmp_path: Path) -> None:
    folders = scan_folders(data, min_rainy=2)
    straight = train(tiny_config(steps=4, sample_every=0), folders, tmp_path / "a")
    assert straight.step == 4
    first = train(tiny_config(steps=2, sample_every=0), folders, tmp_path / "b")
    assert first.step == 2
    resumed = train(tiny_config(steps=4, sample_every=0), folders, tmp_path / "b", resume=True)
    assert resumed.step == 4
    a = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    for key, tensor in a["models"].items():
        torch.testing.assert_close(b["models"][key], tensor, rtol=0, atol=0, msg=key)
    for key, tensor in a["ema"]["module"].items():
        torch.testing.assert_close(b["ema"]["module"][key], tensor, rtol=0, atol=0, msg=key)
    assert [r["step"] for r in read_metrics(tmp_path / "b" / "metrics.jsonl")] == [1, 2, 3, 4]


def test_synthetic_supervision_trains_and_resumes_exactly(data: Path, tmp_path: Path) -> None:
    """The rendered crops come from the loader (workers included) and resume bit-exactly."""
    folders = scan_folders(data, min_rainy=2)
    synth = {"losses.use_synthetic": True, "losses.synthetic_style": "mixed"}
    config = tiny_config(steps=4, sample_every=0).with_overrides(synth)
    straight = train(config, folders, tmp_path / "a")
    assert straight.step == 4
    half = tiny_config(steps=2, sample_every=0, num_workers=1).with_overrides(synth)
    train(half, folders, tmp_path / "b")
    train(config, folders, tmp_path / "b", resume=True)
    a = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    for key, tensor in a["models"].items():
        torch.testing.assert_close(b["models"][key], tensor, rtol=0, atol=0, msg=key)
    rows = read_metrics(tmp_path / "a" / "metrics.jsonl")
    assert all(math.isfinite(r["g_synthetic"]) and r["g_synthetic"] > 0 for r in rows)


def test_synthetic_only_steps_train_the_supervision_alone_then_every_term(
    data: Path, tmp_path: Path
) -> None:
    """Steps before losses.synthetic_only_steps log the synthetic term alone and leave D as it
    was; from then on every NLCL term is trained, and a resume across the switch is exact."""
    folders = scan_folders(data, min_rainy=2)
    synth = {"losses.use_synthetic": True, "losses.synthetic_only_steps": 2}
    config = tiny_config(steps=4, sample_every=0, log_every=1).with_overrides(synth)
    train(config.with_overrides({"train.steps": 2}), folders, tmp_path / "b")
    early = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    torch.manual_seed(config.train.seed)  # as train() does before building the networks
    fresh = build_objective(config)
    for key, tensor in fresh.d.state_dict().items():  # D not trained before the switch
        torch.testing.assert_close(early["models"][f"d.{key}"], tensor, rtol=0, atol=0)
    train(config, folders, tmp_path / "b", resume=True)
    train(config, folders, tmp_path / "a")
    rows = read_metrics(tmp_path / "a" / "metrics.jsonl")
    assert [sorted(k for k in r if k.startswith("g_")) for r in rows[:2]] == [
        ["g_synthetic", "g_total"]
    ] * 2
    assert {"g_adv", "g_layer_contrast", "g_location_contrast"} <= set(rows[2])
    a = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    for key, tensor in a["models"].items():
        torch.testing.assert_close(b["models"][key], tensor, rtol=0, atol=0, msg=key)
    with pytest.raises(UsageError, match="synthetic_only_steps needs losses.use_synthetic"):
        tiny_config().with_overrides({"losses.synthetic_only_steps": 2})


def test_compact_checkpoint_is_smaller_and_resumes_close(data: Path, tmp_path: Path) -> None:
    """bfloat16 Adam moments and key encoder: smaller, float32 after loading, near-exact resume."""
    folders = scan_folders(data, min_rainy=2)
    straight = train(tiny_config(steps=3, sample_every=0), folders, tmp_path / "a")
    compact = tiny_config(steps=2, sample_every=0, compact_checkpoint=True)
    train(compact, folders, tmp_path / "b")
    a_file, b_file = tmp_path / "a" / "checkpoint.pt", tmp_path / "b" / "checkpoint.pt"
    state = load_checkpoint(b_file)
    moments = [
        value
        for opt in state["optimizers"].values()
        for entry in opt["state"].values()
        for key, value in entry.items()
        if key in ("exp_avg", "exp_avg_sq")
    ]
    assert moments and all(m.dtype == torch.bfloat16 for m in moments)
    models = {k: t for k, t in state["models"].items() if t.is_floating_point()}
    keys = [k for k in models if k.startswith(("key_d.", "key_heads."))]
    assert keys and all(models[k].dtype == torch.bfloat16 for k in keys)
    assert all(t.dtype == torch.float32 for k, t in models.items() if k not in keys)
    assert b_file.stat().st_size < 0.75 * a_file.stat().st_size

    resumed = train(
        tiny_config(steps=3, sample_every=0, compact_checkpoint=True),
        folders,
        tmp_path / "b",
        resume=True,
    )
    assert resumed.step == straight.step == 3
    a, b = load_checkpoint(a_file)["models"], load_checkpoint(b_file)["models"]
    worst = max(float((a[k] - b[k]).abs().max()) for k in a if a[k].is_floating_point())
    assert 0 < worst < 1e-3  # not bit-exact, but one Adam step of lr 1e-4 away at most


def test_one_step_trains_every_parameter_and_never_d_in_the_g_step(data: Path) -> None:
    config = tiny_config()
    objective = build_objective(config)
    groups = objective.param_groups()
    g_params, d_params = groups["generator"], groups["discriminator"]
    ids_g, ids_d = {id(p) for p in g_params}, {id(p) for p in d_params}
    trainable = {id(p) for p in objective.parameters() if p.requires_grad}
    assert not ids_g & ids_d and ids_g | ids_d == trainable

    g_opt = torch.optim.Adam(g_params, lr=1e-3)
    d_opt = torch.optim.Adam(d_params, lr=1e-3)
    d_grads_after_d_step: list[torch.Tensor] = []
    original_step = d_opt.step

    def recording_step(*args, **kwargs):  # type: ignore[no-untyped-def]
        d_grads_after_d_step.extend(p.grad.clone() for p in d_params)
        return original_step(*args, **kwargs)

    d_opt.step = recording_step  # type: ignore[method-assign]
    before = {name: p.detach().clone() for name, p in objective.named_parameters()}
    o = torch.rand(2, 3, 32, 32) * 2 - 1
    clean = torch.rand(2, 3, 32, 32) * 2 - 1
    parts = StepParts(g_params=g_params, d_params=d_params, g_opt=g_opt, d_opt=d_opt)
    terms = train_step(objective, o, clean, parts, generator=torch.Generator().manual_seed(0))
    assert all(torch.isfinite(v) for v in terms.values())

    params = dict(objective.named_parameters())
    unchanged = [n for n in before if params[n].requires_grad and torch.equal(before[n], params[n])]
    assert unchanged == []
    # The generator step added nothing to D's gradients (still exactly the D step's).
    assert len(d_grads_after_d_step) == len(d_params)
    for grad, param in zip(d_grads_after_d_step, d_params, strict=True):
        assert torch.equal(grad, param.grad)
    assert all(p.requires_grad for p in d_params)  # D is unfrozen again after the G step


@pytest.mark.parametrize("module", ["d", "g_b"])
def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(
    data: Path, tmp_path: Path, module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NaN in D shows up in the losses; NaN in G_B already breaks the patch search: both stop."""
    folders = scan_folders(data, min_rainy=2)
    out = tmp_path / "run"

    def poison(step: int, objective: torch.nn.Module) -> None:
        if step == 3:
            with torch.no_grad():
                next(getattr(objective, module).parameters()).fill_(float("nan"))

    with pytest.raises(TrainingDiverged, match="diverged by step 4.*step 2"):
        after_step(monkeypatch, poison)
        train(tiny_config(steps=6, sample_every=0), folders, out)
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["step"] == 2
    assert all(torch.isfinite(t).all() for t in state["models"].values())
    assert not (out / "G_B.safetensors").exists()
    if module == "d":
        events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert events[-1]["event"] == "diverged" and not math.isfinite(events[-1]["d_total"])


def test_loader_workers_are_capped_at_the_usable_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert loader_workers(4) == 2
    assert loader_workers(1) == 1
    assert loader_workers(0) == 0


def test_missing_clean_folder_exits_2(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data")
    for file in (data / "clean").iterdir():
        file.unlink()
    (data / "clean").rmdir()
    result = runner.invoke(app, ["train", str(data), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "--clean" in result.output and "clean" in result.output


def test_several_rainy_folders_train_together(tmp_path: Path) -> None:
    first = make_dataset(tmp_path / "first", rainy=2, clean=1)
    second = make_dataset(tmp_path / "second", rainy=2, clean=1, seed=1)
    config = write_tiny_toml(tmp_path / "tiny.toml")
    out = tmp_path / "run"
    args = ["train", str(first), str(second), "--out", str(out)]
    result = runner.invoke(app, [*args, "--config", str(config), "--steps", "1"])
    assert result.exit_code == 0, result.output
    clean = f"{first / 'clean'}, {second / 'clean'}"
    assert f"4 rainy images in {first}, {second}, 2 clean in {clean}" in result.output
    assert (out / "G_B.safetensors").is_file()
    again = runner.invoke(app, [*args, "--config", str(config), "--steps", "1"])
    assert again.exit_code == 2 and "--resume" in again.output


def test_empty_dataset_and_existing_run_are_clear_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / "clean").mkdir(parents=True)
    result = runner.invoke(app, ["train", str(empty), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "no readable rainy images" in result.output

    run = tmp_path / "run2"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"x")
    data = make_dataset(tmp_path / "data")
    result = runner.invoke(app, ["train", str(data), "--out", str(run)])
    assert result.exit_code == 2 and "--resume" in result.output


def _start(
    data: Path, out: Path, config: Path, steps: int, *extra: str, own_group: bool = False
) -> subprocess.Popen[str]:
    args = ["train", str(data), *extra, "--out", str(out), "--config", str(config)]
    return subprocess.Popen(
        derain_cmd(*args, "--steps", str(steps)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
        start_new_session=own_group,
    )


def _wait_for(path: Path, process: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_completes(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = write_tiny_toml(tmp_path / "tiny.toml", sample_every=0, log_every=2)
    process = _start(data, out, config, steps=40)
    _wait_for(out / "checkpoint.pt", process)
    process.kill()  # SIGKILL: no handler runs, a checkpoint write may be cut anywhere
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(out / "checkpoint.pt")["step"]  # loads: never a torn file
    assert 2 <= killed_at < 40 and not (out / "G_B.safetensors").exists()

    args = ["train", str(data), "--out", str(out), "--config", str(config), "--steps", "40"]
    done = subprocess.run(
        derain_cmd(*args, "--resume"), capture_output=True, text=True, env=subprocess_env()
    )
    assert done.returncode == 0, done.stderr
    assert f"resuming {out / 'checkpoint.pt'} at step" in done.stderr
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 40
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl")]
    assert steps == list(range(2, 41, 2))  # every logged step exactly once
    assert not list(out.glob(".*.tmp"))
    assert (out / "G_B.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_to_the_whole_process_group_with_loader_workers(
    data: Path, tmp_path: Path, signum: signal.Signals
) -> None:
    """``timeout``, Slurm and a terminal's Ctrl-C signal every process of the group, the data
    loader's workers too: the run must still checkpoint and stop cleanly, not crash because a
    worker died."""
    out = tmp_path / "run"
    config = write_tiny_toml(tmp_path / "tiny.toml", sample_every=0, log_every=1, num_workers=2)
    process = _start(data, out, config, 400, "--clean", str(data / "clean"), own_group=True)
    _wait_for(out / "checkpoint.pt", process)
    os.killpg(process.pid, signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, stderr
    assert "interrupted at step" in stderr
    assert 2 <= load_checkpoint(out / "checkpoint.pt")["step"] < 400


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_checkpoints_and_exits_cleanly(
    data: Path, tmp_path: Path, signum: signal.Signals
) -> None:
    """Ctrl-C, or the SIGTERM ending a time-limited GPU window: checkpoint, then exit 128+sig."""
    out = tmp_path / "run"
    config = write_tiny_toml(tmp_path / "tiny.toml", sample_every=0, log_every=1)
    process = _start(data, out, config, 400, "--clean", str(data / "clean"))
    _wait_for(out / "checkpoint.pt", process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, stderr
    assert "interrupted at step" in stderr
    # The printed command continues the same run (same clean folder).
    assert f"--clean {data / 'clean'} --out {out} --resume" in stderr
    state = load_checkpoint(out / "checkpoint.pt")
    assert 2 <= state["step"] < 400
    assert read_metrics(out / "metrics.jsonl")[-1]["step"] == state["step"]


def test_a_crop_larger_than_every_image_is_refused_before_training(tmp_path: Path) -> None:
    """Issue: --crop 2048 on <= 1024-px photos upscaled them all and was OOM-killed (exit 137)."""
    data = make_dataset(tmp_path / "d", rainy=3, clean=2)  # 40-48 px rainy images
    result = run_cli("train", str(data), "--out", str(tmp_path / "run"), "--steps", "1",
                     "--batch-size", "2", "--crop", "2048", "--device", "cpu")  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "--crop 2048: crops must be between 48 px (the layer contrast" in result.stderr
    assert "and 48 px (the largest short side of the rainy images" in result.stderr
    assert not (tmp_path / "run").exists()


def test_some_images_smaller_than_the_crop_are_named_once(tmp_path: Path) -> None:
    from derain_cli.data import check_crop

    folders = scan_folders(make_dataset(tmp_path / "d", rainy=3, clean=2), min_rainy=2)
    assert check_crop(folders, 32) is None
    note = check_crop(folders, 44)  # rainy short sides 40, 44, 48; clean 44
    assert note == "1 of 5 images are smaller than the 44-px crop and will be upscaled"


def test_a_run_resumed_twice_keeps_every_segment_in_its_log(tmp_path: Path) -> None:
    """Each process counts ``seconds`` from its own start; the wall time of a run is the sum of
    its segments. The log kept only the last resume event (the first ones were dropped at every
    resume), so a run resumed twice counted its first segment as part of the second."""
    from derain_cli.train.run_folder import RunPaths, prepare_folder

    paths = RunPaths(tmp_path / "run")
    config = tiny_config()
    prepare_folder(paths, config, 0)
    rows = [{"step": 2, "seconds": 10.0}, {"step": 4, "seconds": 20.0}]
    with open(paths.metrics, "a", encoding="utf-8") as log:
        log.writelines(json.dumps(r) + "\n" for r in rows)
    prepare_folder(paths, config, 4)  # resumed at step 4
    with open(paths.metrics, "a", encoding="utf-8") as log:
        log.write(json.dumps({"step": 6, "seconds": 5.0}) + "\n")
        log.write(json.dumps({"event": "end", "step": 6}) + "\n")
    prepare_folder(paths, config, 6)  # resumed again, to extend the run
    lines = [json.loads(x) for x in paths.metrics.read_text().splitlines()]
    events = [(x["event"], x["step"]) for x in lines if "event" in x]
    assert events == [("start", 0), ("resume", 4), ("resume", 6)]
    assert [x["step"] for x in lines if "event" not in x] == [2, 4, 6]


@pytest.mark.parametrize(
    ("key", "layers", "named"),
    [
        ("losses.location_g_layers", [0, 1, 9], "generator layers are 0..4, got [9]"),
        ("losses.layer_d_layers", [0, 7], "discriminator layers are 0..2, got [7]"),
    ],
)
def test_layers_the_networks_lack_are_a_one_line_error(
    tmp_path: Path, key: str, layers: list[int], named: str
) -> None:
    """A generator of 8 blocks under the default location layers (0, 2, 4, 8, 12) stopped the run
    with a traceback; a layer index the networks lack is a config mistake, told in one line."""
    data = make_dataset(tmp_path / "d", rainy=3, clean=2)
    config = tmp_path / "tiny.toml"
    config.write_text(tiny_config().dumps_toml(), encoding="utf-8")
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(data), "--config", str(config), "--out", str(out),
                                 "--set", f"{key}={layers}"])  # fmt: skip
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith(f"derain: error: {key}: "), result.output
    assert named in errors[0]
    assert "Traceback" not in result.output
    assert not out.exists()


def test_training_folders_checks_in_the_library_what_derain_train_checks(tmp_path: Path) -> None:
    from derain_cli.train.launch import training_folders

    data = make_dataset(tmp_path / "data")
    (data / "bad.png").write_bytes(b"not a png")
    skipped: list[Path] = []
    folders, note = training_folders(
        tiny_config(crop=32), data, on_skip=lambda path, why: skipped.append(path)
    )
    assert (len(folders.rainy), len(folders.clean), note, skipped) == (
        6,
        4,
        None,
        [data / "bad.png"],
    )
    with pytest.raises(UsageError, match="crop"):
        training_folders(tiny_config(crop=4096), data)
    streakless = tiny_config().with_overrides(
        {"losses.synthetic_streaks": str(tmp_path / "no-such-folder")}
    )
    with pytest.raises(UsageError, match="no-such-folder"):
        training_folders(streakless, data)
