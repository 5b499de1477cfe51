"""`derain adapt`: the recipe, the refusals, and a few-step run end to end on tiny data."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from _trainkit import REPO, TINY_S2D, make_dataset, save_spec, tiny_without_generators
from typer.testing import CliRunner

from derain_cli.cli.app import app
from derain_cli.config import NLCLConfig
from derain_cli.toml_text import dumps_toml
from derain_cli.train.adapt import adapt, adapt_config, load_recipe
from derain_cli.train.init_weights import load_init
from derain_cli.weights.checksums import read_sidecar, sha256_file
from derain_cli.weights.loading import load_weights

runner = CliRunner()


def tiny_recipe(path: Path) -> Path:
    """The adapt recipe's shape at TINY's size: 2 steps meant for 60 s, synthetic supervision."""
    data = tiny_without_generators()
    data["losses"] |= {"use_synthetic": True, "synthetic_rain_only": True}
    data["train"] |= {"steps": 2, "time_limit_s": 60.0, "sample_every": 0, "clean_zoom_max": 2.0}
    path.write_text(dumps_toml(data), encoding="utf-8")
    return path


@pytest.fixture
def shoot(tmp_path: Path) -> Path:
    """Six rainy photos and no clean ones."""
    folder = make_dataset(tmp_path / "shoot")
    shutil.rmtree(folder / "clean")
    return folder


def test_a_bad_time_limit_names_the_flag_before_any_work(shoot: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine.safetensors"
    result = runner.invoke(app, ["adapt", str(shoot), "-o", str(out), "--time-limit", "soon"])
    assert result.exit_code == 2
    assert "--time-limit: duration 'soon': expected seconds" in result.output
    assert not out.exists()


def test_adapt_end_to_end_with_the_least_rainy_crops(shoot: Path, tmp_path: Path) -> None:
    spec = save_spec(tmp_path / "spec", "nlcl-s2d", TINY_S2D)
    out, run = tmp_path / "mine.safetensors", tmp_path / "run"
    args = ["adapt", str(shoot), "-o", str(out), "--init", str(spec), "--run-dir", str(run)]
    recipe = ["--config", str(tiny_recipe(tmp_path / "recipe.toml"))]
    result = runner.invoke(app, [*args, *recipe, "--time-limit", "90s"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    plan = next(i for i, line in enumerate(lines) if line.startswith("derain adapt: adapting"))
    first_step = next(i for i, line in enumerate(lines) if line.startswith("step 1/"))
    assert plan < first_step  # the ETA comes at once, before the crops and the first step
    assert "6 photos" in lines[plan]
    assert "3 steps, batch 2 x 32 px; about 1 min, done by" in lines[plan]
    assert "least-rainy crops stand in" in lines[plan]
    assert f"wrote {out} (sha256 " in result.output

    # The weights: written with their sidecar, loadable by derain, and saying where they began.
    assert read_sidecar(out) == sha256_file(out) == sha256_file(run / "G_B.safetensors")
    loaded = load_weights(str(out))
    assert loaded.arch == "nlcl-s2d" and loaded.metadata["derain.layer"] == "background"
    assert json.loads(loaded.metadata["derain.init"])["sha256"] == sha256_file(spec)
    trained = json.loads(loaded.metadata["derain.train_config"])
    assert trained["train"]["init"] == str(spec)
    assert trained["train"]["steps"] == 3  # 2 steps for 60 s, scaled to 90 s
    assert 0 < trained["train"]["time_limit_s"] <= 90  # less what choosing the crops took
    assert loaded.metadata["derain.trained_steps"] == "3"

    # The clean set: the rainy photos' least-rainy crops, written in the run folder.
    crops = run / "clean-crops"
    manifest = json.loads((crops / "crops.json").read_text())
    assert sorted(p.name for p in crops.glob("*.png")) == [row["file"] for row in manifest]
    assert {Path(row["source"]).parent for row in manifest} == {shoot}
    assert NLCLConfig.load(run / "config.toml").train.init == str(spec)

    # An existing output is refused before any work, and replaced with --overwrite.
    again = runner.invoke(app, [*args[:-1], str(tmp_path / "run2"), *recipe])
    assert again.exit_code == 2 and "exists (use --overwrite to replace it)" in again.output
    assert not (tmp_path / "run2").exists()


def test_adapt_with_clean_photos_in_a_temporary_run_folder(
    shoot: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = save_spec(tmp_path / "spec", "nlcl-s2d", TINY_S2D)
    clean = make_dataset(tmp_path / "other", rainy=0, clean=3) / "clean"
    made: list[Path] = []
    real_mkdtemp = tempfile.mkdtemp

    def mkdtemp(**kwargs: Any) -> str:
        made.append(Path(real_mkdtemp(dir=tmp_path, **kwargs)))
        return str(made[-1])

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    notes: list[str] = []
    (tmp_path / "mine.safetensors").write_bytes(b"an older file")
    result = adapt(
        shoot, tmp_path / "mine.safetensors", init=str(spec), clean=[clean],
        recipe=tiny_recipe(tmp_path / "recipe.toml"), note=notes.append, overwrite=True,
    )  # fmt: skip
    assert result.output == tmp_path / "mine.safetensors"
    assert load_weights(str(result.output)).arch == "nlcl-s2d"  # replaced, sidecar checked
    assert result.crops is None and result.folders.clean_dirs == (clean,)
    assert result.train.step == 2  # the recipe's own budget: its steps unscaled
    assert "least-rainy" not in notes[0]
    assert made and not made[0].exists()  # the temporary run folder is gone
    assert result.run_dir is None


def test_what_cannot_work_is_refused_before_any_work(shoot: Path, tmp_path: Path) -> None:
    spec = save_spec(tmp_path / "spec", "nlcl-s2d", TINY_S2D)
    recipe = tiny_recipe(tmp_path / "recipe.toml")
    base = ["adapt", str(shoot), "--init", str(spec), "--config", str(recipe)]
    run = tmp_path / "run"

    def refused(*args: str) -> str:
        result = runner.invoke(app, [*base, "--run-dir", str(run), *args])
        assert result.exit_code == 2, result.output
        assert not run.exists()
        return result.output

    assert "a .safetensors file" in refused("-o", str(tmp_path / "mine.pth"))
    mine = str(tmp_path / "mine.safetensors")
    assert "fewer than the batch size 8" in refused("-o", mine, "--set", "train.batch_size=8")
    assert "train.crop=128: crops must be between 16 px" in refused(
        "-o", mine, "--set", "train.crop=128"
    )
    assert "model.generator_hparams.channels is 16 in the config, 8 in" in refused(
        "-o", mine, "--set", "model.generator_hparams.channels=16"
    )
    result = runner.invoke(app, [*base, "-o", mine, "--run-dir", str(shoot / "run")])
    assert result.exit_code == 2 and "inside the rainy folder" in result.output


def test_the_packaged_recipe_fits_the_default_and_its_successor(tmp_path: Path) -> None:
    """The recipe takes the architecture from the weights: the bundled default (nlcl-s2d, 4x4
    cells, 48 x 12) and the layout that will replace it (2x2 cells, 32 x 8) both pass."""
    assert (REPO / "configs" / "adapt.toml").resolve() == (
        REPO / "derain_cli" / "presets" / "adapt.toml"
    )
    v2 = {"factor": 2, "channels": 32, "blocks": 8, "norm": "none", "refine": 16,
          "output": "subtract_rain"}  # fmt: skip
    successor = save_spec(tmp_path / "v2", "nlcl-s2d", v2)
    for spec in ("default", str(successor)):
        init = load_init(spec)
        config = adapt_config(init)
        assert config.model.generator_hparams == {**config.model.generator_hparams,
                                                  **init.background.hparams}  # fmt: skip
        assert config.train.init == spec and config.train.lr == 1e-4
        assert (config.train.steps, config.train.time_limit_s) == (450, 600.0)
        assert config.losses.use_synthetic and config.losses.synthetic_only_steps == 0
        assert config.train.lr_schedule == "linear"
    assert adapt_config(load_init(str(successor)), time_limit_s=1200).train.steps == 900
    recipe = load_recipe(NLCLConfig())
    assert recipe == NLCLConfig.load(REPO / "configs" / "adapt.toml")
