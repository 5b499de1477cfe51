"""The typed config: TOML round trip, overrides, validation, the committed defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomllib
import torch
from typer.testing import CliRunner

from derain_cli.cli.app import app
from derain_cli.config import NLCLConfig, TrainConfig
from derain_cli.errors import UsageError
from derain_cli.nets.registry import build_generator
from derain_cli.toml_text import dumps_toml, parse_override

REPO = Path(__file__).resolve().parents[1]


def test_default_config_round_trips_through_toml(tmp_path: Path) -> None:
    config = NLCLConfig()
    path = tmp_path / "c.toml"
    path.write_text(config.dumps_toml())
    assert NLCLConfig.load(path) == config
    assert tomllib.loads(config.dumps_toml())["train"]["betas"] == [0.5, 0.999]


def test_committed_default_toml_is_the_paper_default() -> None:
    config = NLCLConfig.load(REPO / "configs" / "default.toml")
    assert config == NLCLConfig()
    assert (config.train.lr, config.train.batch_size, config.train.crop) == (1e-4, 4, 256)
    assert config.losses.layer_positives == 8 and config.losses.layer_negatives == 256


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_every_committed_config_loads_and_builds_its_networks(path: Path) -> None:
    """A config in configs/ must stay loadable as the code changes (they are cited in docs)."""
    config = NLCLConfig.load(path)
    for arch, hparams in (
        (config.model.generator, config.model.generator_hparams),
        (config.model.rain_generator, config.model.rain_hparams),
    ):
        assert isinstance(build_generator(arch, hparams), torch.nn.Module)


def test_partial_files_keep_defaults_and_json_works(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[train]\nlr = 2e-4\nsteps = 7\n[model.generator_hparams]\nchannels = 8\n")
    config = NLCLConfig.load(path)
    assert config.train.lr == 2e-4 and config.train.steps == 7 and config.train.crop == 256
    assert config.model.generator_hparams == {"channels": 8}
    as_json = tmp_path / "c.json"
    as_json.write_text(json.dumps({"train": {"batch_size": 8}}))
    assert NLCLConfig.load(as_json).train.batch_size == 8


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[train]\nlrr = 1\n", "unknown config key 'train.lrr'"),
        ("[train]\nsteps = 'many'\n", "train.steps"),
        ("[train]\nsteps = true\n", "train.steps"),
        ("[train]\nprecision = 'fp8'\n", "expected one of"),
        ("[train]\nbetas = [0.5]\n", "train.betas"),
        ("[nonsense]\n", "unknown config key 'nonsense'"),
        ("[train\n", "not a valid config file"),
        ("[train]\nbatch_size = 3\ngpus = 2\n", "divisible"),
    ],
)
def test_bad_files_name_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message):
        NLCLConfig.load(path)


def test_yaml_needs_pyyaml_or_loads(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  steps: 9\n")
    try:
        import yaml  # noqa: F401
    except ImportError:
        with pytest.raises(UsageError, match="PyYAML"):
            NLCLConfig.load(path)
    else:
        assert NLCLConfig.load(path).train.steps == 9


def test_overrides_parse_toml_values_and_reject_unknown_keys() -> None:
    assert parse_override("train.lr=2e-4") == ("train.lr", 2e-4)
    assert parse_override("train.compile=true") == ("train.compile", True)
    assert parse_override("sampler.layer_positives=random") == ("sampler.layer_positives", "random")
    assert parse_override("losses.layer_d_layers=[1, 2]") == ("losses.layer_d_layers", [1, 2])
    config = NLCLConfig().with_overrides({"losses.layer_d_layers": [1, 2], "train.steps": 5})
    assert config.losses.layer_d_layers == (1, 2) and config.train.steps == 5
    with pytest.raises(UsageError, match="unknown config key 'train.nope'"):
        NLCLConfig().with_overrides({"train.nope": 1})
    with pytest.raises(UsageError, match="expected SECTION.KEY=VALUE"):
        parse_override("steps")
    with pytest.raises(UsageError, match="train.batch_size must be >= 1"):
        TrainConfig(batch_size=0)


def test_toml_writer_escapes_strings_and_nested_tables() -> None:
    text = dumps_toml({"a": {"s": 'quote " and \\ back', "n": {"x": 1}, "f": float("inf")}})
    assert tomllib.loads(text) == {
        "a": {"s": 'quote " and \\ back', "n": {"x": 1}, "f": float("inf")}
    }


def test_print_config_applies_file_set_and_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[train]\nlr = 3e-4\nsteps = 10\n")
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--config",
            str(path),
            "--set",
            "train.seed=5",
            "--steps",
            "20",
            "--print-config",
        ],
    )
    assert result.exit_code == 0, result.output
    printed = tomllib.loads(result.stdout)
    assert printed["train"]["lr"] == 3e-4
    assert printed["train"]["seed"] == 5 and printed["train"]["steps"] == 20


def test_crop_too_small_for_the_layer_contrast_is_refused_up_front() -> None:
    """A crop whose patch grid cannot hold k positives would fail every step inside the sampler."""
    with pytest.raises(
        UsageError, match=r"train.crop=32: crops must be at least 48 px \(the layer"
    ):
        NLCLConfig().with_overrides({"train.crop": 32})
    assert NLCLConfig().with_overrides({"train.crop": 48}).train.crop == 48
    # Without the layer contrast, or with overlapping matches allowed, smaller crops are fine.
    NLCLConfig().with_overrides({"train.crop": 32, "losses.use_layer_contrast": False})
    NLCLConfig().with_overrides({"train.crop": 32, "sampler.exclude_overlap": False})
    with pytest.raises(UsageError, match=r"at least 32 px \(one 32-px sampler patch\)"):
        NLCLConfig().with_overrides(
            {"train.crop": 24, "sampler.patch": 32, "losses.use_layer_contrast": False}
        )


def test_retired_keys_of_older_run_folders_are_read_and_ignored() -> None:
    data = NLCLConfig().to_dict()
    data["train"]["checkpoint_part_mb"] = 15  # written by older versions into config.toml
    assert NLCLConfig.from_dict(data) == NLCLConfig()


def test_a_file_over_a_base_config_replaces_the_keys_it_names(tmp_path: Path) -> None:
    """``load(path, base=...)``: what ``derain train --init`` layers the config file over."""
    base = NLCLConfig().with_overrides(
        {"model.generator": "nlcl-s2d", "model.generator_hparams": {"factor": 2, "channels": 32},
         "train.lr": 3e-4}
    )  # fmt: skip
    path = tmp_path / "c.toml"
    path.write_text("[model.generator_hparams]\nchannels = 8\n[train]\nsteps = 7\n")
    loaded = NLCLConfig.load(path, base=base)
    assert loaded.model.generator == "nlcl-s2d"  # not named by the file: the base's
    assert loaded.model.generator_hparams == {"channels": 8}  # a value is replaced whole
    assert (loaded.train.lr, loaded.train.steps) == (3e-4, 7)
    assert NLCLConfig.load(path).model.generator == "nlcl-resnet"  # no base: the defaults
