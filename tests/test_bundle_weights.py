"""tools/bundle_weights.py: refuses weights below the input or too large, registers the rest."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from derain_cli.nets.registry import build_generator
from derain_cli.weights.files import save_weights
from derain_cli.weights.loading import load_weights

REPO = Path(__file__).resolve().parents[1]
HPARAMS = {"in_channels": 3, "channels": 8, "blocks": 2}


def _tool() -> ModuleType:
    sys.path.insert(0, str(REPO / "tools"))
    try:
        return importlib.import_module("bundle_weights")
    finally:
        sys.path.pop(0)


def _run(tmp: Path) -> Path:
    run = tmp / "run"
    run.mkdir()
    torch.manual_seed(0)
    for name, layer in (("G_B", "background"), ("G_R", "rain")):
        net = build_generator("nlcl-resnet", HPARAMS)
        meta = {"derain.layer": layer}
        save_weights(run / f"{name}.safetensors", net, arch="nlcl-resnet", hparams=HPARAMS,
                     metadata=meta)  # fmt: skip
    (run / "metrics.jsonl").write_text(json.dumps({"step": 2, "seconds": 12.5}) + "\n")
    return run


def _eval(tmp: Path, psnr: float, ssim: float, niqe: float = 4.0, authors: float = 19.0) -> Path:
    rows = [
        {"method": "input", "set": "all", "count": 24, "psnr": 21.0, "ssim": 0.66, "niqe": 4.2},
        {"method": "G_B", "set": "all", "count": 24, "psnr": psnr, "ssim": ssim, "niqe": niqe},
        {"method": "authors", "set": "all", "count": 24, "psnr": authors, "ssim": 0.6, "niqe": 4.5},
    ]
    path = tmp / f"eval-{psnr}-{ssim}-{niqe}-{authors}.json"
    path.write_text(json.dumps({"summary": rows}))
    return path


def _weights_dir(tmp: Path) -> Path:
    folder = tmp / "weights"
    folder.mkdir()
    empty = {"format_version": 1, "aliases": {"default": None}, "weights": {}}
    (folder / "registry.json").write_text(json.dumps(empty))
    return folder


def _args(run: Path, bench: Path, folder: Path) -> list[str]:
    return [str(run), "--name", "tiny", "--bench", str(bench), "--real", str(bench),
            "--licence", "MIT", "--publish-repo", "o/r", "--weights-dir", str(folder),
            "--default"]  # fmt: skip


def test_weights_below_the_input_are_refused_and_nothing_written(tmp_path: Path) -> None:
    folder = _weights_dir(tmp_path)
    bench = _eval(tmp_path, psnr=22.0, ssim=0.65)  # better PSNR, worse SSIM
    assert _tool().main(_args(_run(tmp_path), bench, folder)) == 1
    assert sorted(p.name for p in folder.iterdir()) == ["registry.json"]


@pytest.mark.parametrize(
    ("niqe", "authors", "reason"),
    [(4.3, 19.0, "does not lower NIQE"), (4.0, 23.5, "below authors on bench-dev (psnr)")],
)
def test_weights_that_fail_real_rain_or_lose_to_the_authors_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], niqe: float, authors: float, reason: str
) -> None:
    folder = _weights_dir(tmp_path)
    bench = _eval(tmp_path, psnr=23.0, ssim=0.70, niqe=niqe, authors=authors)
    assert _tool().main(_args(_run(tmp_path), bench, folder)) == 1
    assert reason in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["registry.json"]


def test_an_oversized_file_is_refused_with_its_size_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tool = _tool()
    monkeypatch.setattr(tool, "MAX_BYTES", 1000)
    folder = _weights_dir(tmp_path)
    bench = _eval(tmp_path, psnr=23.0, ssim=0.70)
    assert tool.main(_args(_run(tmp_path), bench, folder)) == 1
    assert "MB >= 20 MB" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["registry.json"]


def test_good_weights_are_bundled_registered_and_load_as_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _weights_dir(tmp_path)
    bench = _eval(tmp_path, psnr=23.0, ssim=0.70)
    monkeypatch.setenv("DERAIN_REGISTRY", str(folder / "registry.json"))
    assert _tool().main(_args(_run(tmp_path), bench, folder)) == 0
    registry = json.loads((folder / "registry.json").read_text())
    assert registry["aliases"]["default"] == "tiny"
    assert set(registry["weights"]) == {"tiny", "tiny-rain"}
    loaded = load_weights(None)
    assert loaded.metadata["derain.layer"] == "background"
    assert json.loads(loaded.metadata["derain.eval"])["bench_dev"][1]["psnr"] == 23.0


def test_wall_time_adds_the_segments_of_a_resumed_run() -> None:
    """Each process's ``seconds`` starts at 0: a run resumed once took both segments (the first
    bundled default's metadata said 1739 s for a 2934 s run before this)."""
    metrics = [
        {"step": 50, "seconds": 60.0},
        {"step": 2016, "seconds": 1194.8},
        {"event": "resume", "step": 2016},
        {"step": 2050, "seconds": 40.0},
        {"step": 3000, "seconds": 1739.4},
        {"event": "end", "step": 3000},
    ]
    assert _tool().wall_seconds(metrics) == pytest.approx(2934.2)
    assert _tool().wall_seconds(metrics[:2]) == pytest.approx(1194.8)
    assert _tool().wall_seconds([]) == 0.0


def test_every_benchmark_and_real_rain_niqe_must_beat_the_other_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Never ship a model below the current default on any column: a second benchmark where it
    loses, or a real-rain NIQE above another model's, is refused."""
    folder = _weights_dir(tmp_path)
    good = _eval(tmp_path, psnr=23.0, ssim=0.70)
    losing = _eval(tmp_path, psnr=23.0, ssim=0.70, authors=23.5)
    args = _args(_run(tmp_path), good, folder) + ["--bench", f"bench_gn={losing}"]
    assert _tool().main(args) == 1
    assert "below authors on bench-gn (psnr)" in capsys.readouterr().err
    real = tmp_path / "real.json"
    rows = [
        {"method": "input", "set": "all", "niqe": 4.2},
        {"method": "G_B", "set": "all", "niqe": 4.1},
        {"method": "nlcl-cpu-v1", "set": "all", "niqe": 4.0},
    ]
    real.write_text(json.dumps({"summary": rows}))
    args = _args(tmp_path / "run", good, folder)
    args[args.index("--real") + 1] = str(real)
    assert _tool().main(args) == 1
    assert "above nlcl-cpu-v1 on real-rain NIQE" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["registry.json"]
