"""`derain eval`: pairing by stem, problems listed, rows per weights, machine output, anchors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from derain_cli.cli.app import app, route
from derain_cli.evaluation import scoring as ev

runner = CliRunner()


def _write(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def _pixels(seed: int, h: int = 40, w: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _folders(tmp_path: Path) -> tuple[Path, Path]:
    """rainy/ and clean/ with 4 good pairs (2 sets) and one of each kind of problem."""
    rainy, clean = tmp_path / "rainy", tmp_path / "clean"
    for i, stem in enumerate(["a-storm", "b-storm", "a-streak", "b-streak"]):
        target = _pixels(i)
        noisy = np.clip(target.astype(int) + _pixels(10 + i) // 16 - 8, 0, 255).astype(np.uint8)
        _write(rainy / f"{stem}.png", noisy)
        _write(clean / f"{stem}.jpg" if i == 0 else clean / f"{stem}.png", target)
    _write(rainy / "only-rainy.png", _pixels(20))
    _write(clean / "only-clean.png", _pixels(21))
    _write(rainy / "small-x.png", _pixels(22, 32, 32))
    _write(clean / "small-x.png", _pixels(23, 40, 48))
    return rainy, clean


def _invoke(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, route([str(a) for a in args]))


def test_pairing_lists_every_problem(tmp_path: Path) -> None:
    rainy, clean = _folders(tmp_path)
    plan = ev.plan(rainy=rainy, clean=clean, pred=None)
    assert [i.stem for i in plan.items] == ["a-storm", "a-streak", "b-storm", "b-streak", "small-x"]
    reasons = {p.stem: p.reason for p in plan.problems}
    assert "missing in clean" in reasons["only-rainy"]
    assert "missing in rainy" in reasons["only-clean"]
    report, _ = ev.evaluate(plan, [], with_niqe=False)
    reasons = {p.stem: p.reason for p in report.problems}
    assert "differs from the clean image" in reasons["small-x"]
    assert {s.stem for s in report.scores} == {"a-storm", "a-streak", "b-storm", "b-streak"}
    assert report.sets == ["storm", "streak"]
    means = {(s.method, s.set): s for s in report.summaries()}
    assert means[("input", "all")].count == 4
    expected = np.mean([s.psnr for s in report.scores if s.set == "storm"])
    assert means[("input", "storm")].psnr == pytest.approx(expected)


def test_sets_need_two_images_each() -> None:
    assert ev.infer_sets(["img-001", "img-002"]) == []
    assert ev.infer_sets(["a-x", "b-x", "a-y", "b-y"]) == ["x", "y"]
    assert ev.infer_sets(["a-x", "b-x", "plain"]) == []


def test_duplicate_stems_are_reported(tmp_path: Path) -> None:
    rainy, clean = _folders(tmp_path)
    _write(rainy / "a-storm.jpg", _pixels(30))
    plan = ev.plan(rainy=rainy, clean=clean, pred=None)
    assert "a-storm" not in [i.stem for i in plan.items]
    assert any("several files" in p.reason for p in plan.problems if p.stem == "a-storm")


def test_limit_reports_only_problems_among_the_selected_stems(tmp_path: Path) -> None:
    """Stems after the N-th pair are counted, not listed; before it, problems still show."""
    rainy, clean = _folders(tmp_path)
    everything = ev.plan(rainy=rainy, clean=clean, pred=None)
    assert everything.skipped == 0
    assert ev.plan(rainy=rainy, clean=clean, pred=None, limit=5) == everything
    # Sorted stems: a-storm a-streak b-storm b-streak only-clean only-rainy small-x.
    plan = ev.plan(rainy=rainy, clean=clean, pred=None, limit=2)
    assert [i.stem for i in plan.items] == ["a-storm", "a-streak"]
    assert (plan.problems, plan.skipped) == ([], 5)
    plan = ev.plan(rainy=rainy, clean=clean, pred=None, limit=4)
    assert [p.stem for p in plan.problems] == [] and plan.skipped == 3
    _write(rainy / "a-storm2.png", _pixels(40))  # between the selected pairs: still reported
    plan = ev.plan(rainy=rainy, clean=clean, pred=None, limit=2)
    assert [p.stem for p in plan.problems] == ["a-storm2"] and plan.skipped == 5


def test_cli_limit_skips_unpaired_stems_beyond_it(tmp_path: Path) -> None:
    rainy, pred = tmp_path / "rainy", tmp_path / "pred"
    for i in range(6):
        _write(rainy / f"r{i}.png", _pixels(i))
    for i in range(2):
        _write(pred / f"r{i}.png", _pixels(10 + i))
    result = _invoke("eval", "--rainy", rainy, "--pred", pred, "--limit", "2", "--json", "-q")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["problems"] == []
    assert "4 stem(s) beyond --limit 2 skipped" in " ".join(result.stderr.split())
    assert "not scored" not in result.stderr
    result = _invoke("eval", "--rainy", rainy, "--pred", pred, "--json", "-q")  # no --limit
    assert result.exit_code == 1, result.output
    assert [p["stem"] for p in json.loads(result.stdout)["problems"]] == ["r2", "r3", "r4", "r5"]
    assert "4 image(s) not scored" in result.stderr and "skipped" not in result.stderr


@pytest.fixture
def tiny_weights(tmp_path: Path) -> Path:
    from derain_cli.nets.registry import build_generator
    from derain_cli.weights.files import save_weights

    hparams = {"in_channels": 3, "channels": 4, "blocks": 1}
    module = build_generator("nlcl-resnet", hparams)
    path = tmp_path / "w" / "tiny.safetensors"
    save_weights(path, module, arch="nlcl-resnet", hparams=hparams, metadata={})
    return path


def test_cli_rows_json_csv_grid_and_save_dir(tmp_path: Path, tiny_weights: Path) -> None:
    rainy, clean = _folders(tmp_path)
    out = tmp_path / "out"
    result = _invoke(
        "eval", "--rainy", rainy, "--clean", clean, "--weights", tiny_weights,
        "--weights", tiny_weights, "--json", "--csv", out / "m.csv", "--save-dir", out / "saved",
        "--grid", out / "grid.png", "--no-niqe", "--device", "cpu", "-q",
    )  # fmt: skip
    assert result.exit_code == 1, result.output  # 3 stems not scored; the rest is reported
    doc = json.loads(result.stdout)
    assert doc["methods"] == ["input", "tiny", "tiny#2"]
    assert doc["space"] == "y"
    assert {p["stem"] for p in doc["problems"]} == {"only-rainy", "only-clean", "small-x"}
    # --no-niqe: the key stays, null everywhere (empty in the CSV), like PSNR without --clean.
    assert all(r["niqe"] is None for r in doc["images"] + doc["summary"])
    images = [r for r in doc["images"] if r["method"] == "tiny"]
    assert len(images) == 4 and all(r["seconds"] is not None for r in images)
    # The saved outputs are exactly what was scored.
    saved = np.asarray(Image.open(out / "saved" / "tiny" / "a-storm.png"), dtype=np.float32) / 255
    target = np.asarray(Image.open(clean / "a-storm.jpg"), dtype=np.float32) / 255
    from derain_cli.evaluation.metrics import psnr

    row = next(r for r in images if r["stem"] == "a-storm")
    assert psnr(saved, target) == pytest.approx(row["psnr"])
    with (out / "m.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {r["method"] for r in rows} == {"input", "tiny", "tiny#2"}
    assert len([r for r in rows if r["stem"]]) == 12
    assert all(r["niqe"] == "" for r in rows)
    grid = Image.open(out / "grid.png")
    assert grid.width > 3 * 40 and grid.height > 4 * 40  # 4 images x (rainy, 2 weights, clean)
    # -q printed the table and the model lines all the same (issue "Trust II"): only the
    # unscored images are left on stderr.
    assert "PSNR" not in result.stderr and " on cpu" not in result.stderr
    assert "grid:" not in result.stderr and "image(s) not scored:" in result.stderr


def test_cli_table_lists_problems_on_stderr(tmp_path: Path) -> None:
    rainy, clean = _folders(tmp_path)
    result = _invoke("eval", "--rainy", rainy, "--clean", clean, "--no-niqe", "--per-image")
    assert result.exit_code == 1, result.output
    assert "3 image(s) not scored" in result.stderr
    assert "only-clean" in result.stderr and "storm" in result.stderr
    assert "set / image" in result.stderr  # per-image rows put the stem in that column
    assert "PSNR" in result.stderr and "NIQE" not in result.stderr  # --no-niqe: no column
    assert result.stdout == ""


def test_cli_niqe_column_shown_by_default(tmp_path: Path) -> None:
    rainy, clean = _folders(tmp_path)
    result = _invoke("eval", "--rainy", rainy, "--clean", clean, "--limit", "1")
    assert result.exit_code == 0, result.output
    assert "NIQE" in result.stderr and "PSNR" in result.stderr


def test_cli_pred_folder_and_rgb(tmp_path: Path) -> None:
    rainy, clean = _folders(tmp_path)
    result = _invoke(
        "eval", "--pred", clean, "--clean", clean, "--rgb", "--json", "--no-niqe", "-q"
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["methods"] == ["clean"] and doc["space"] == "rgb"
    assert all(r["psnr"] is None and r["ssim"] == pytest.approx(1.0) for r in doc["images"])
    assert all(r["cast"] == pytest.approx(0.0) for r in doc["images"] + doc["summary"])


def test_cli_rainy_and_pred_named_input(tmp_path: Path) -> None:
    """A --pred folder called "input" gets its own row; it is not taken for the rainy input."""
    rainy, clean = _folders(tmp_path)
    for name in ("only-rainy.png", "only-clean.png", "small-x.png"):
        (rainy / name).unlink(missing_ok=True)
        (clean / name).unlink(missing_ok=True)
    pred = tmp_path / "input"
    for path in clean.iterdir():
        _write(pred / f"{path.stem}.png", np.asarray(Image.open(path)))
    args = ["--rainy", rainy, "--pred", pred, "--clean", clean, "--no-niqe", "--json", "-q"]
    result = _invoke("eval", *args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["methods"] == ["input", "input#2"] and not doc["problems"]
    means = {s["method"]: s for s in doc["summary"] if s["set"] == "all"}
    assert means["input"]["psnr"] < 40 and means["input#2"]["ssim"] > 0.99


def test_cli_niqe_only_without_clean(tmp_path: Path) -> None:
    rainy = tmp_path / "real"
    for i in range(2):
        _write(rainy / f"r{i}.png", _pixels(i, 200, 200))
    result = _invoke("eval", "--rainy", rainy, "--json", "-q")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert all(r["psnr"] is None and r["niqe"] > 0 for r in doc["images"])


@pytest.mark.parametrize(
    "args",
    [
        ["eval"],
        ["eval", "--clean", "."],
        ["eval", "--pred", ".", "--weights", "x.safetensors"],
        ["eval", "--rainy", ".", "--no-niqe"],
        ["eval", "--rainy", "does-not-exist", "--clean", "."],
        ["eval", "--rainy", ".", "--grid", "x.jpg"],
    ],
)
def test_cli_bad_usage_exits_2(args: list[str], tmp_path: Path) -> None:
    _write(tmp_path / "a.png", _pixels(0))
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        result = _invoke(*args)
    finally:
        os.chdir(cwd)
    assert result.exit_code == 2, result.output


def test_bench_dev_input_row_reproduces_the_anchor(shared: Path) -> None:
    """../shared/docs/reference.md: the rainy input scores 21.58 dB / 0.6613 on bench-dev."""
    data = shared / "data" / "bench-dev"
    plan = ev.plan(rainy=data / "rainy", clean=data / "clean", pred=None)
    report, _ = ev.evaluate(plan, [], with_niqe=False)
    assert not report.problems
    overall = report.summaries()[0]
    assert (overall.method, overall.set, overall.count) == ("input", "all", 24)
    assert round(overall.psnr, 2) == 21.58
    assert round(overall.ssim, 4) == 0.6613


def test_csv_is_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure while writing the CSV left it truncated (test failed before)."""
    from derain_cli.evaluation import files as eval_files

    path = tmp_path / "m.csv"
    path.write_text("old\n")
    report = ev.Report(methods=[], scores=[], problems=[], space="y")

    def broken() -> list[object]:
        raise OSError("disk gone")

    monkeypatch.setattr(report, "summaries", broken)
    with pytest.raises(OSError, match="disk gone"):
        eval_files.write_csv(path, report)
    assert path.read_text() == "old\n" and sorted(tmp_path.iterdir()) == [path]
