"""The GPU-window tools (tools/gpu_window/): plan, packing limits, staging, collecting, registering.

The tools are scripts, imported here by path. Everything runs on tiny synthetic data; one slow
test drives a whole (CPU) window: a run stopped by its budget, exported, packed within limits.
"""

from __future__ import annotations

import importlib
import json
import sys
import tarfile
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from _trainkit import TINY, make_dataset, save

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / "tools" / "gpu_window"


def tool(name: str) -> ModuleType:
    """Import ``tools/gpu_window/NAME.py`` (its siblings import each other by name)."""
    if str(TOOLS) not in sys.path:
        sys.path.insert(0, str(TOOLS))
    return importlib.import_module(name)


gw_plan = tool("gw_plan")
gw_pack = tool("gw_pack")
gw_common = tool("gw_common")
stage = tool("stage")
collect = tool("collect")
register = tool("register")
window = tool("window")
grid = tool("grid")

MiB = 2**20


def plan_dict(**window: Any) -> dict[str, Any]:
    return {
        "window": {"seconds": 300, "pack_reserve_s": 90, **window},
        "run": [
            {"name": "a", "config": "configs/default.toml", "steps": 10, "budget_s": 100},
            {"name": "b", "config": "configs/default.toml", "steps": 10, "budget_s": 50},
        ],
    }


# ------------------------------------------------------------------------------------------
# the plan


def test_shipped_plans_parse_and_name_existing_configs() -> None:
    for path in sorted(TOOLS.glob("plan*.toml")):
        plan = gw_plan.load_plan(path)
        assert plan.runs and plan.pack_reserve_s >= 60
        for run in plan.runs:
            assert (REPO / run.config).is_file()
        assert plan.seconds + 15 <= 600  # the run call's limit leaves room for packing


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"window": {"pack_reserve_s": 59}}, "pack_reserve_s must be >= 60"),
        ({"window": {"mode": "both"}}, "mode 'both'"),
        ({"window": {"carry_checkpoint": "zz"}}, "carry_checkpoint 'zz'"),
        ({"window": {"colour": 1}}, "unknown [window] key"),
        ({"window": {"seconds": 100}}, "no time to train"),
        ({"window": {"stop_grace_s": 60}}, "to export the stopped runs"),
        ({"name": "../up"}, "run name"),
        ({"name": "b"}, "unique"),
        ({"set": ["--steps=3"]}, "not SECTION.KEY=VALUE"),
        ({"budget_s": 0}, "positive"),
    ],
)
def test_plan_errors_are_refused_before_the_window(change: dict[str, Any], message: str) -> None:
    data = plan_dict()
    if "window" in change:
        data["window"].update(change["window"])
    else:
        data["run"][0].update(change)
    with pytest.raises(gw_plan.PlanError, match=message.replace("[", r"\[")):
        gw_plan.parse_plan(data)


def test_deadlines_keep_the_pack_reserve_and_commands_resume() -> None:
    plan = gw_plan.parse_plan(plan_dict(set_all=["train.num_workers=2"]))
    when = gw_plan.deadlines(plan, 1000.0)
    assert when.hard_stop == 1000 + 300 - 90
    assert when.kill == when.hard_stop + plan.stop_grace_s
    assert when.end - when.export_end == gw_plan.PACK_SECONDS
    run = plan.runs[0]
    cmd = gw_plan.train_command(plan, run, Path("/w/a"), "py")
    assert cmd[:4] == ["py", "-m", "derain_cli", "train"]
    assert cmd[cmd.index("--set") + 1] == "train.num_workers=2"
    assert cmd[-5:] == ["--steps", "10", "--device", "cuda", "--resume"]
    lines = gw_plan.timeline(plan)
    assert "SIGTERM by 210" in lines[0]


def test_export_changes_only_keys_derain_allows_on_resume() -> None:
    from derain_cli.train.loop import RESUMABLE_KEYS

    plan = gw_plan.parse_plan(plan_dict())
    cmd = gw_plan.export_command(plan, Path("/w/a"), 123, "py")
    keys = [cmd[i + 1].split("=")[0] for i, w in enumerate(cmd) if w == "--set"]
    assert keys and set(keys) <= RESUMABLE_KEYS
    assert "--config" not in cmd  # the checkpoint's own config is the base
    assert cmd[cmd.index("--steps") + 1] == "123" and "--resume" in cmd


# ------------------------------------------------------------------------------------------
# packing within the device's limits


def _file(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return path


def _item(tmp: Path, name: str, size: int, priority: int) -> Any:
    return gw_pack.PackItem(_file(tmp / name, size), name, priority, size)


def test_pack_keeps_weights_before_checkpoint_before_pictures(tmp_path: Path) -> None:
    items = [
        _item(tmp_path, "log", 1000, 0),
        _item(tmp_path, "G_B", 3 * MiB, 1),
        _item(tmp_path, "G_R", 3 * MiB, 3),
        _item(tmp_path, "sample.jpg", 3 * MiB, 4),
    ]
    parts = [_file(tmp_path / f"ckpt.{i}.part", 2 * MiB) for i in range(3)]
    choice = gw_pack.choose_pack(items, parts, tar_limit=7 * MiB, total_limit=20 * MiB)
    assert [i.arcname for i in choice.items] == ["log", "G_B", "G_R"]
    assert choice.checkpoint == parts
    assert [r["file"] for r in choice.left_out] == ["sample.jpg"]
    assert choice.tar_estimate <= 7 * MiB


def test_pack_drops_a_checkpoint_that_breaks_a_limit(tmp_path: Path) -> None:
    items = [_item(tmp_path, "G_B", 2 * MiB, 1)]
    parts = [_file(tmp_path / f"p{i}", MiB) for i in range(7)]
    too_many = gw_pack.choose_pack(items, parts)  # 7 parts + tar + log > 8 files
    assert not too_many.checkpoint and "exceed 8 files" in too_many.left_out[0]["reason"]
    big = [_file(tmp_path / "one", 3 * MiB)]
    over_total = gw_pack.choose_pack(items, big, total_limit=4 * MiB)
    assert not over_total.checkpoint and "$OUT would pass" in over_total.left_out[0]["reason"]
    over_file = gw_pack.choose_pack(items, big, file_limit=2 * MiB)
    assert "checkpoint_part_mb" in over_file.left_out[0]["reason"]
    assert [i.arcname for i in over_file.items] == ["G_B"]


def test_check_out_applies_the_device_rules(tmp_path: Path) -> None:
    assert gw_pack.check_out(tmp_path) == []
    _file(tmp_path / "a" / "b" / "c" / "deep.txt", 1)
    _file(tmp_path / "bad name.txt", 1)
    for i in range(7):
        _file(tmp_path / f"f{i}", 1)
    problems = " | ".join(gw_pack.check_out(tmp_path))
    assert "9 files" in problems and "deeper than 2" in problems and "bad name.txt" in problems


def test_metrics_summary_skips_each_starts_warm_up_row(tmp_path: Path) -> None:
    rows = [
        {"event": "start", "step": 0},
        {"step": 10, "images_per_s": 1.0, "g_total": 3.0},
        {"step": 20, "images_per_s": 50.0},
        {"event": "resume", "step": 20},
        {"step": 30, "images_per_s": 2.0},
        {"step": 40, "images_per_s": 60.0, "g_total": 1.5},
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    info = window.metrics_summary(tmp_path)
    assert info["last_step"] == 40 and info["images_per_s_median"] == 55.0
    assert info["last_losses"] == {"g_total": 1.5}


# ------------------------------------------------------------------------------------------
# staging


def fake_shared(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for folder, count in (("rain-real", 3), ("syn-train/rainy", 2), ("clean", 2), ("bench-dev", 1)):
        (root / folder).mkdir(parents=True)
        for i in range(count):
            save(root / folder / f"img-{i}.png", rng.random((20, 24, 3)))
    return root


def test_stage_copies_training_data_with_a_manifest(tmp_path: Path) -> None:
    shared = fake_shared(tmp_path / "shared")
    dest = tmp_path / "stage"
    code = stage.main(
        ["--shared", str(shared), "--dest", str(dest), "--whl", str(tmp_path / "no-whl")]
    )
    assert code == 0
    manifest = json.loads((dest / "manifest.json").read_text())
    files = {r["file"] for r in manifest["files"]}
    assert files == {
        "data/rainy/rain-real/img-0.png",
        "data/rainy/rain-real/img-1.png",
        "data/rainy/rain-real/img-2.png",
        "data/rainy/syn-train/img-0.png",
        "data/rainy/syn-train/img-1.png",
        "data/clean/clean/img-0.png",
        "data/clean/clean/img-1.png",
    }
    for row in manifest["files"]:
        assert gw_common.sha256_file(dest / row["file"]) == row["sha256"]
    assert manifest["groups"]["data/rainy/rain-real"]["count"] == 3
    assert manifest["digest"] == stage.digest_of(manifest["files"])
    assert not any("bench-dev" in r["source"] for r in manifest["files"])


def test_stage_refuses_bench_dev_and_its_copies(tmp_path: Path) -> None:
    shared = fake_shared(tmp_path / "shared")
    with pytest.raises(stage.StageError, match="bench-dev"):
        stage.check_not_bench_dev(shared / "bench-dev" / "img-0.png")
    copy = tmp_path / "extra" / "renamed.png"
    copy.parent.mkdir()
    copy.write_bytes((shared / "bench-dev" / "img-0.png").read_bytes())
    dest = tmp_path / "stage"
    args = ["--shared", str(shared), "--dest", str(dest), "--extra-clean", str(copy.parent)]
    assert stage.main(args) == 1
    assert not dest.exists()
    # A source folder inside bench-dev is refused by its path alone.
    args = ["--shared", str(shared), "--dest", str(dest)]
    assert stage.main([*args, "--extra-clean", str(shared / "bench-dev")]) == 1


def test_stage_refuses_a_resized_reencoded_bench_dev_photo(tmp_path: Path, capsys: Any) -> None:
    """The original of a bench-dev photo (other size, other codec) is caught by its thumbnail."""
    from PIL import Image

    shared = fake_shared(tmp_path / "shared")
    yy, xx = np.mgrid[0:64, 0:80] / 80.0
    scene = np.stack([np.sin(6 * xx) * yy, np.cos(5 * yy + xx), xx * yy], axis=-1) * 0.5 + 0.5
    save(shared / "bench-dev" / "img-0.png", scene)  # a smooth "photo", as real ones are
    extra = tmp_path / "extra"
    extra.mkdir()
    with Image.open(shared / "bench-dev" / "img-0.png") as image:
        image.convert("RGB").resize((120, 96), Image.Resampling.BICUBIC).save(
            extra / "original.jpg", quality=80
        )
    save(extra / "unrelated.png", np.random.default_rng(5).random((40, 48, 3)))
    args = ["--shared", str(shared), "--dest", str(tmp_path / "stage"), "--whl", str(tmp_path)]
    assert stage.main([*args, "--extra-clean", str(extra)]) == 1
    assert "original.jpg: looks like bench-dev's img-0.png" in capsys.readouterr().err
    (extra / "original.jpg").unlink()
    assert stage.main([*args, "--extra-clean", str(extra)]) == 0


def test_stage_refuses_a_payload_over_budget(tmp_path: Path, capsys: Any) -> None:
    shared = fake_shared(tmp_path / "shared")
    dest = tmp_path / "stage"
    assert stage.main(["--shared", str(shared), "--dest", str(dest), "--budget-mb", "0.01"]) == 1
    assert "exceeds the budget" in capsys.readouterr().err
    assert not dest.exists() and not list(tmp_path.glob("stage.new-*"))


def test_reencode_caps_the_long_side(tmp_path: Path) -> None:
    save(tmp_path / "big.png", np.random.default_rng(1).random((60, 100, 3)))
    import io

    from PIL import Image

    data = stage.reencode(tmp_path / "big.png", 50, 90)
    assert Image.open(io.BytesIO(data)).size == (50, 30)


# ------------------------------------------------------------------------------------------
# collecting


def eval_report(methods: list[str], psnr: list[float], ssim: list[float], cast: list[float]) -> Any:
    summary = []
    for m, p, s, c in zip(methods, psnr, ssim, cast, strict=True):
        summary.append({"method": m, "set": "all", "count": 4, "psnr": p, "ssim": s, "cast": c})
        for name, delta in (("storm", -2.0), ("streak", 2.0)):
            summary.append(
                {"method": m, "set": name, "count": 2, "psnr": p + delta, "ssim": s, "cast": c}
            )
    return {"methods": methods, "summary": summary, "images": [], "problems": [], "space": "y"}


def results_for(rows_psnr: tuple[float, float, float], sha: str = "ab" * 32) -> dict[str, Any]:
    candidates = [
        collect.Candidate("input", "input"),
        collect.Candidate("r1", "run", "runs/r1/G_B.safetensors", "r1", {"sha256": sha}),
        collect.Candidate("authors' checkpoint", "authors", "G_B.pth"),
    ]
    labels = ["input", "r1/G_B", "nlcl-realrain-G_B"]
    bench = eval_report(labels, list(rows_psnr), [0.66, 0.72, 0.59], [23.0, 1.5, 25.0])
    real = {
        "methods": labels,
        "summary": [
            {"method": m, "set": "all", "count": 2, "niqe": n}
            for m, n in zip(labels, [4.2, 4.0, 4.5], strict=True)
        ],
    }
    rows = collect.build_rows(candidates, bench, real, {"r1": 0.9})
    return {
        "bench": {"count": 4, "subset": False, "command": "derain eval ...", "limit": None},
        "real": {"count": 2, "command": "derain eval --rainy ..."},
        "speed": {"size": 512},
        "rows": rows,
    }


def test_rows_and_targets_from_one_eval_run() -> None:
    results = results_for((21.58, 24.7, 19.33))
    input_row, run, authors = results["rows"]
    assert run["sets"]["storm"]["psnr"] == pytest.approx(22.7)
    assert run["niqe_real"] == 4.0 and run["cpu_mp_s"] == 0.9 and authors["cpu_mp_s"] is None
    marks = collect.targets(run, results["rows"])
    assert marks == {
        "psnr_input_plus_3db": True,
        "ssim_0.71": True,
        "cast_below_2": True,
        "niqe_below_input": True,
        "above_input": True,
        "beats_authors": True,
        "cpu_0.7_mp_s": True,
    }
    weak = collect.targets(results_for((21.58, 24.0, 19.33))["rows"][1], results["rows"])
    assert weak["psnr_input_plus_3db"] is False and weak["above_input"] is True


def test_markdown_table_has_one_row_per_model_and_the_styles() -> None:
    text = collect.markdown_table(results_for((21.58, 22.0, 19.33)))
    assert "| input | - | - | 21.58 |" in text
    assert "| r1 | " in text and "22.00 (+0.42)" in text
    assert "storm PSNR / SSIM" in text and "streak PSNR / SSIM" in text
    assert "| r1 | NO | yes | yes | yes | yes | yes | yes |" in text


def test_spread_is_deterministic_and_covers_the_list() -> None:
    items = [Path(f"p{i:02d}") for i in range(10)]
    assert collect.spread(list(reversed(items)), 3) == [items[0], items[4], items[9]]
    assert collect.spread(items, 0) == items


def test_unpack_refuses_members_outside_the_folder(tmp_path: Path) -> None:
    evil = tmp_path / "evil.tar.gz"
    (tmp_path / "x").write_text("x")
    with tarfile.open(evil, "w:gz") as tar:
        tar.add(tmp_path / "x", arcname="../x")
    with pytest.raises(collect.CollectError, match="refusing member"):
        collect.safe_extract(evil, tmp_path / "out")


def _window_tar(tmp_path: Path, window_id: str, first: int, last: int) -> Path:
    files = tmp_path / f"files-{window_id}"
    src = tmp_path / f"src-{window_id}"
    run = src / "runs" / "r1"
    run.mkdir(parents=True)
    from derain_cli.config import NLCLConfig

    (run / "config.toml").write_text(NLCLConfig.from_dict(TINY).dumps_toml())
    (run / "metrics.jsonl").write_text(json.dumps({"step": last}) + "\n")
    summary = {
        "window_id": window_id,
        "environment": {"gpu": "NVIDIA H200, 143771 MiB"},
        "plan": {"set_all": ["train.num_workers=3"]},
        "data": {"digest": "d" * 64, "groups": {"data/rainy/rain-real": {"count": 3}}},
        "runs": [
            {
                "name": "r1",
                "status": "exported",
                "first_step": first,
                "last_step": last,
                "train_wall_s": 400.0,
                "sets": ["losses.adv_weight=0.5"],
                "config": "configs/default.toml",
                "derain_commands": [f"derain train x --steps {last}"],
            }
        ],
    }
    (src / "window.json").write_text(json.dumps(summary))
    files.mkdir()
    with tarfile.open(files / "window.tar.gz", "w:gz") as tar:
        tar.add(src / "window.json", arcname="window.json")
        tar.add(src / "runs", arcname="runs")
    return files


def test_unpack_merges_windows_and_records_provenance(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    collect.unpack(_window_tar(tmp_path, "w1", 0, 100), runs, force=False)
    collect.unpack(_window_tar(tmp_path, "w2", 100, 250), runs, force=False)
    prov = json.loads((runs / "r1" / "provenance.json").read_text())
    assert [(w["window_id"], w["first_step"], w["last_step"]) for w in prov["windows"]] == [
        ("w1", 0, 100),
        ("w2", 100, 250),
    ]
    assert prov["windows"][1]["sets"] == ["train.num_workers=3", "losses.adv_weight=0.5"]
    assert (runs / "windows" / "w2.json").is_file()
    # A different experiment under the same name is refused.
    from derain_cli.config import NLCLConfig

    other = NLCLConfig.from_dict(TINY).with_overrides({"losses.adv_weight": 0.1})
    (runs / "r1" / "config.toml").write_text(other.dumps_toml())
    with pytest.raises(collect.CollectError, match="different experiment"):
        collect.unpack(_window_tar(tmp_path, "w3", 250, 300), runs, force=False)


def test_restore_checkpoint_verifies_parts_and_drops_stale_ones(tmp_path: Path) -> None:
    import torch

    from derain_cli.train.checkpoint import save_checkpoint

    files = tmp_path / "files"
    save_checkpoint(
        files / "ckpt-r1" / "checkpoint.pt",
        {"step": 7, "w": torch.arange(5000.0)},
        part_bytes=8000,
    )
    assert len(list((files / "ckpt-r1").glob("*.part"))) >= 2
    runs = tmp_path / "runs"
    _file(runs / "r1" / "checkpoint.pt.old00000.000.part", 10)
    assert collect.restore_checkpoint(files, runs) == [("r1", 7)]
    assert not (runs / "r1" / "checkpoint.pt.old00000.000.part").exists()
    part = sorted((runs / "r1").glob("*.part"))[0]
    part.write_bytes(b"corrupt")
    with pytest.raises(Exception, match="corrupt|sha256"):
        from derain_cli.train.checkpoint import load_checkpoint

        load_checkpoint(runs / "r1" / "checkpoint.pt")


# ------------------------------------------------------------------------------------------
# registering


def tiny_weights(path: Path, steps: int = 123) -> Path:
    import torch

    from derain_cli.nets.generator import NLCLGenerator
    from derain_cli.weights import save_weights

    torch.manual_seed(0)
    net = NLCLGenerator(channels=4, blocks=1)
    config = {"train": {"batch_size": 8, "crop": 256}}
    save_weights(
        path,
        net,
        arch="nlcl-resnet",
        hparams={"in_channels": 3, "channels": 4, "blocks": 1, "output": "direct"},
        metadata={
            "derain.trained_steps": str(steps),
            "derain.train_config": json.dumps(config),
            "derain.ema": "true",
        },
    )
    return path


@pytest.fixture
def registered_setup(tmp_path: Path) -> dict[str, Path]:
    run = tmp_path / "runs" / "r1"
    weights = tiny_weights(run / "G_B.safetensors")
    collect.add_provenance(
        run,
        collect.provenance_entry(
            {
                "window_id": "w1",
                "environment": {"gpu": "NVIDIA H200"},
                "plan": {"set_all": []},
                "data": {"digest": "d" * 64, "groups": {"data/rainy/rain-real": {"count": 156}}},
            },
            {
                "status": "exported",
                "first_step": 0,
                "last_step": 123,
                "train_wall_s": 470.0,
                "sets": ["losses.adv_weight=0.5"],
                "config": "configs/default.toml",
                "derain_commands": ["derain train .stage/data/rainy --steps 20000"],
            },
        ),
    )
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "registry.json").write_text(
        json.dumps({"format_version": 1, "aliases": {"default": None}, "weights": {}})
    )
    return {"weights": weights, "folder": folder, "tmp": tmp_path}


def _write_results(tmp: Path, psnr: float, weights: Path, *, subset: bool = False) -> Path:
    results = results_for((21.58, psnr, 19.33), sha=gw_common.sha256_file(weights))
    results["bench"]["subset"] = subset
    path = tmp / f"results-{psnr}.json"
    path.write_text(json.dumps(results))
    return path


def _register(setup: dict[str, Path], results: Path, *extra: str) -> int:
    args = [str(setup["weights"]), "--name", "nlcl-test", "--results", str(results)]
    args += ["--hub-repo", "derain/nlcl", "--hub-revision", "0123456789" * 4]
    args += ["--licence", "MIT", "--weights-dir", str(setup["folder"]), *extra]
    return int(register.main(args))


def test_register_bundles_weights_registry_entry_and_card(
    registered_setup: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = registered_setup
    assert _register(setup, _write_results(setup["tmp"], 24.7, setup["weights"]), "--default") == 0
    folder = setup["folder"]
    registry = json.loads((folder / "registry.json").read_text())
    entry = registry["weights"]["nlcl-test"]
    assert registry["aliases"]["default"] == "nlcl-test"
    assert entry["sha256"] == gw_common.sha256_file(folder / "nlcl-test.safetensors")
    assert entry["hub"] == {
        "repo_id": "derain/nlcl",
        "revision": "0123456789" * 4,
        "filename": "nlcl-test.safetensors",
    }
    from derain_cli.weights import load_weights, read_safetensors

    _, meta = read_safetensors(folder / "nlcl-test.safetensors")
    assert meta["derain.trained_steps"] == "123"  # kept from training
    assert json.loads(meta["derain.eval"])["rows"][1]["psnr"] == 24.7
    assert json.loads(meta["derain.train_commands"]) == [
        "derain train .stage/data/rainy --steps 20000"
    ]
    assert meta["derain.gpu"] == "NVIDIA H200" and meta["derain.wall_time_s"] == "470"
    monkeypatch.setenv("DERAIN_REGISTRY", str(folder / "registry.json"))
    assert load_weights(None).metadata["derain.registry_name"] == "nlcl-test"
    card = (folder / "README.md").read_text()
    for needle in (
        "## `nlcl-test` (default)",
        entry["sha256"],
        "derain/nlcl",
        "0123456789" * 4,
        "derain train .stage/data/rainy --steps 20000",
        "NVIDIA H200",
        "470 s of training",
        "| licence of the weights | MIT |",
        "24.70 (+3.12)",
        "Targets of issue 5 not met: none",
        "research use only",
    ):
        assert needle in card, needle


def test_register_refuses_weights_below_the_rainy_input(
    registered_setup: dict[str, Path], capsys: Any
) -> None:
    setup = registered_setup
    before = (setup["folder"] / "registry.json").read_text()
    assert _register(setup, _write_results(setup["tmp"], 21.0, setup["weights"]), "--default") == 1
    err = capsys.readouterr().err
    assert "below the rainy input" in err and "21.00 dB < input 21.58 dB" in err
    assert (setup["folder"] / "registry.json").read_text() == before
    assert not list(setup["folder"].glob("*.safetensors"))


def test_register_refuses_subsets_oversize_and_unevaluated_files(
    registered_setup: dict[str, Path], capsys: Any
) -> None:
    setup = registered_setup
    subset = _write_results(setup["tmp"], 24.7, setup["weights"], subset=True)
    assert _register(setup, subset) == 1
    assert "only 4 bench-dev pairs" in capsys.readouterr().err
    assert _register(setup, subset, "--allow-subset", "--max-mb", "0.001") == 1
    assert "must stay under" in capsys.readouterr().err
    other = tiny_weights(setup["tmp"] / "other" / "G_B.safetensors", steps=5)
    results = _write_results(setup["tmp"], 24.7, other)
    assert _register(setup, results) == 1
    assert "do not include weights" in capsys.readouterr().err
    assert not list(setup["folder"].glob("*.safetensors"))


# ------------------------------------------------------------------------------------------
# grid


def test_grid_choice_is_seeded_and_sorted() -> None:
    files = [Path(f"f{i}.jpg") for i in range(20)]
    first = grid.choose(list(reversed(files)), 8, 0)
    assert first == grid.choose(files, 8, 0) == sorted(first) and len(set(first)) == 8
    assert grid.choose(files, 8, 1) != first


def test_grid_rows_have_input_and_model_columns(tmp_path: Path) -> None:
    photo = tmp_path / "rain-1.png"
    save(photo, np.random.default_rng(0).random((40, 60, 3)))
    picture = grid.build_grid([photo], [("ours", lambda x: x * 0.5)], 32)
    assert picture.dtype == np.uint8 and picture.shape[2] == 3
    assert picture.shape[1] >= 2 * 48  # two 48-px-wide cells (60 x 32/40)


# ------------------------------------------------------------------------------------------
# a whole window on the CPU


@pytest.mark.slow
def test_cpu_window_stops_exports_and_packs(tmp_path: Path) -> None:
    """A run stopped by its budget has no G_B until the export step, then all of it is packed."""
    data = make_dataset(tmp_path / "data", rainy=4, clean=2)
    sets = [f"{section}.{key}={json.dumps(value)}" for section, table in TINY.items()
            for key, value in table.items() if not isinstance(value, dict)]  # fmt: skip
    sets += [
        "model.generator_hparams={channels = 8, blocks = 2}",
        "model.rain_hparams={channels = 8, blocks = 2}",
        "train.checkpoint_every=1",
        "train.sample_every=1",
        "train.checkpoint_part_mb=1",
    ]
    plan = {
        "window": {
            "seconds": 90,
            "pack_reserve_s": 60,
            "stop_grace_s": 20,
            "device": "cpu",
            "data": str(data),
            "clean": str(data / "clean"),
            "set_all": [s for s in sets if not s.startswith("train.steps")],
            "carry_checkpoint": "long",
        },
        "run": [{"name": "long", "config": "configs/default.toml", "steps": 100000, "budget_s": 6}],
    }
    plan_path = tmp_path / "plan.toml"
    plan_path.write_text(_toml(plan))
    out, work = tmp_path / "out", tmp_path / "work"
    args = ["--plan", str(plan_path), "--out", str(out), "--work", str(work)]
    code = window.main([*args, "--stage", str(tmp_path / "no-stage")])
    assert code == 0
    assert gw_pack.check_out(out) == []
    with tarfile.open(out / "window.tar.gz") as tar:
        names = set(tar.getnames())
        summary = json.load(tar.extractfile("window.json"))  # type: ignore[arg-type]
    assert {"runs/long/G_B.safetensors", "runs/long/G_R.safetensors"} <= names
    assert {"runs/long/metrics.jsonl", "runs/long/train.log", "runs/long/export.log"} <= names
    run = summary["runs"][0]
    assert run["status"] == "exported" and run["train_returncode"] == 143
    assert run["last_step"] >= 1 and "stopped by SIGTERM" in run["notes"]
    assert (out / "ckpt-long" / "checkpoint.pt").is_file()
    assert summary["checkpoint"]["step"] == run["last_step"]
    assert run["derain_commands"][0].startswith("derain train ")
    assert "--out runs/long" in run["derain_commands"][0]


def _toml(data: dict[str, Any]) -> str:
    lines = ["[window]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in data["window"].items()]
    for run in data["run"]:
        lines += ["", "[[run]]"] + [f"{k} = {json.dumps(v)}" for k, v in run.items()]
    return "\n".join(lines) + "\n"
