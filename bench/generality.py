"""The generality table: how models do on every kind of rain we can score, worst column first.

    python bench/generality.py --weights default --weights runs/x/G_B.safetensors \\
        [--data ../shared/data] [--streaks DIR] [--out runs/generality] [--no-real]

For each model, ``derain eval`` (Y-PSNR / SSIM of BT.601 Y) on

* ``bench-dev`` and ``bench-gn`` (the dev benchmarks with ground truth, never trained on);
* ``derain synth`` renders of each renderer style over bench-dev's clean photos (seed 11; the
  ``bank`` style only with ``--streaks``), written once under ``OUT/synth-STYLE``;
* NIQE on every real rainy photo of ``rain-real`` (no ground truth; lower is more natural).

Prints one markdown table: a row per model with each set's ``PSNR / SSIM``, its gain over the
rainy input, and the *worst* gain over all synthetic sets, which is the column to choose by: a
model is scored later on rain that others rendered and on real rain nobody here has. Every
report is kept as JSON under ``OUT`` (``eval-SET.json``). About 2 minutes a model per set of 24
768-px pairs on 2 CPU cores for the fast generators; the authors' network takes ten times that.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

STYLES = ("streak", "heavy", "drizzle", "curtain", "storm", "photographic", "bank")
SEED = 11


def derain(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "derain_cli", *args], check=True)


def render_sets(data: Path, out: Path, streaks: Path | None) -> dict[str, tuple[Path, Path]]:
    """The pair folders to score: the two benchmarks and one render per style."""
    sets = {
        name: (data / name / "rainy", data / name / "clean") for name in ("bench-dev", "bench-gn")
    }
    for style in STYLES:
        if style == "bank" and streaks is None:
            continue
        folder = out / f"synth-{style}"
        if not (folder / "rainy").is_dir():
            extra = ["--streaks", str(streaks)] if streaks is not None else []
            derain("synth", str(data / "bench-dev" / "clean"), "-o", str(folder), "--style", style,
                   "--seed", str(SEED), "-q", *extra)  # fmt: skip
        sets[f"synth-{style}"] = (folder / "rainy", folder / "clean")
    return sets


def evaluate(name: str, rainy: Path, clean: Path | None, spec: str, out: Path) -> Any:
    """``derain eval --json`` of one model on one set, kept as ``OUT/eval-SET-MODEL.json`` (a
    rerun with more models scores only the new ones)."""
    label = re.sub(r"[^A-Za-z0-9._-]+", "_", spec).strip("_")
    report = out / f"eval-{name}-{label}.json"
    if not report.is_file():
        args = ["eval", "--rainy", str(rainy), "--json", "-q", "--weights", spec]
        args += ["--clean", str(clean), "--no-niqe"] if clean is not None else []
        done = subprocess.run([sys.executable, "-m", "derain_cli", *args], check=True,
                              capture_output=True, text=True)  # fmt: skip
        report.write_text(done.stdout, encoding="utf-8")
    return json.loads(report.read_text(encoding="utf-8"))


def rows_of(reports: list[Any], specs: list[str]) -> dict[str, dict[str, Any]]:
    """The input's row and each model's, named by its spec, from one report per model."""
    rows: dict[str, dict[str, Any]] = {}
    for spec, report in zip(specs, reports, strict=True):
        for row in report["summary"]:
            if row.get("set") != "all":
                continue
            rows["input" if row["method"] == "input" else spec] = row
    return rows


def table(results: dict[str, dict[str, dict[str, Any]]], real: dict[str, dict[str, Any]]) -> str:
    sets = list(results)
    methods = list(next(iter(results.values())))  # input first, then the models in order
    head = ["model", *sets, "worst gain"] + (["NIQE real"] if real else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in methods:
        cells, gains = [method], []
        for name in sets:
            row, base = results[name][method], results[name]["input"]
            gain = row["psnr"] - base["psnr"]
            if method != "input":
                gains.append(gain)
            shown = f"{row['psnr']:.2f} / {row['ssim']:.4f}"
            cells.append(shown if method == "input" else f"{shown} ({gain:+.2f})")
        cells.append(f"{min(gains):+.2f}" if gains else "-")
        if real:
            niqe = real.get(method, {}).get("niqe")
            cells.append(f"{niqe:.3f}" if niqe is not None else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", action="append", required=True, metavar="SPEC")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--streaks", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("runs/generality"))
    parser.add_argument("--no-real", action="store_true", help="skip NIQE on rain-real")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    specs = args.weights
    results = {
        name: rows_of([evaluate(name, rainy, clean, w, args.out) for w in specs], specs)
        for name, (rainy, clean) in render_sets(args.data, args.out, args.streaks).items()
    }
    real = {}
    if not args.no_real:
        folder = args.data / "rain-real"
        real = rows_of([evaluate("rain-real", folder, None, w, args.out) for w in specs], specs)
    print(table(results, real))
    return 0


if __name__ == "__main__":
    sys.exit(main())
