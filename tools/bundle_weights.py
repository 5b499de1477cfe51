"""Bundle a trained G_B (and its G_R) in ``weights/`` and register it, after checking its scores.

    python tools/bundle_weights.py runs/cpu-default --name nlcl-cpu-v1 \\
        --bench runs/eval-bench.json --real runs/eval-real.json \\
        --licence MIT --publish-repo OWNER/REPO --default

``--bench``: ``derain eval --json`` on bench-dev with rows for the input, the run's
``G_B.safetensors`` and the authors' checkpoint; ``--real``: the same on real rain (NIQE only).
Refuses weights below the rainy input or another model of the same evaluation (the authors'
checkpoint) on bench-dev (Y-PSNR or SSIM), weights that do not lower the input's mean NIQE on
real rain, a bench-dev evaluation of fewer than 24 pairs, and files of 20 MB or more. Writes
``weights/NAME.safetensors`` (+ sha256 sidecar, metadata: evaluation, training command, data,
machine, wall time, licence), ``weights/NAME-rain.safetensors`` (G_R, for
``derain inspect-patches``), the registry entry (``default`` alias with ``--default``), then
loads it by name to prove it works.

The Hub source is recorded as ``publish`` (repo id, filename): the pinned revision only exists
once the file is uploaded, and the registry accepts a ``hub`` source only with a 40-hex commit,
so ``hub`` is added at publication, not before.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RECIPE = (
    "derain train ../shared/data/rain-real ../shared/data/syn-train/rainy "
    "--clean ../shared/data/clean --config configs/cpu-default.toml --out runs/cpu-default"
)
MAX_BYTES = 20_000_000
BENCH_PAIRS = 24


class BundleError(Exception):
    pass


def summary_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The 'all' summary row of every method in a ``derain eval --json`` report."""
    return [row for row in report["summary"] if row.get("set") == "all"]


def row_for(rows: list[dict[str, Any]], label: str) -> dict[str, Any]:
    for row in rows:
        if row["method"] == label:
            return row
    raise BundleError(f"no row {label!r} in the evaluation (have {[r['method'] for r in rows]})")


def check(bench: dict[str, Any], label: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model's and the input's bench-dev rows; refuses a model below the input or below any
    other model scored in the same run (the authors' checkpoint), on Y-PSNR or SSIM."""
    rows = summary_rows(bench)
    model, base = row_for(rows, label), row_for(rows, "input")
    if int(model.get("count", 0)) < BENCH_PAIRS:
        raise BundleError(f"bench-dev evaluation covers {model.get('count')} < {BENCH_PAIRS} pairs")
    for other in [base, *(r for r in rows if r["method"] not in (label, "input"))]:
        below = [k for k in ("psnr", "ssim") if model[k] < other[k]]
        if below:
            raise BundleError(
                f"{label} is below {other['method']} on bench-dev ({', '.join(below)})"
            )
    return model, base


def wall_seconds(metrics: list[dict[str, Any]]) -> float:
    """Training wall time from ``metrics.jsonl``: each process's ``seconds`` counts from its own
    start, so a resumed run adds the last figure before every ``resume`` event to the final one."""
    total, last = 0.0, 0.0
    for row in metrics:
        if row.get("event") == "resume":
            total, last = total + last, 0.0
        elif "event" not in row:
            last = float(row.get("seconds", last))
    return total + last


def check_real(real: dict[str, Any], label: str) -> None:
    """Refuses a model whose mean NIQE on real rain is not below the rainy input's."""
    rows = summary_rows(real)
    model, base = row_for(rows, label), row_for(rows, "input")
    if model.get("niqe") is None or base.get("niqe") is None:
        raise BundleError("the real-rain evaluation has no NIQE (run it without --no-niqe)")
    if model["niqe"] >= base["niqe"]:
        raise BundleError(
            f"{label} does not lower NIQE on real rain ({model['niqe']:.3f} against the input's "
            f"{base['niqe']:.3f})"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="the run folder (G_B/G_R.safetensors, metrics)")
    parser.add_argument("--name", required=True)
    parser.add_argument("--bench", type=Path, required=True)
    parser.add_argument("--real", type=Path, required=True)
    parser.add_argument("--label", default=None, help="the run's row label in the evaluation")
    parser.add_argument("--licence", required=True)
    parser.add_argument("--publish-repo", required=True)
    parser.add_argument("--command", default=RECIPE, help="the training command to record")
    parser.add_argument("--default", action="store_true")
    parser.add_argument("--weights-dir", type=Path, default=REPO / "weights")
    args = parser.parse_args(argv)

    from derain_cli.weights import (
        KEY_ARCH,
        KEY_FORMAT,
        KEY_HPARAMS,
        KEY_VERSION,
        load_file,
        load_weights,
        save_weights,
    )
    from derain_cli.weights_registry import load_registry

    try:
        bench = json.loads(args.bench.read_text(encoding="utf-8"))
        real = json.loads(args.real.read_text(encoding="utf-8"))
        label = args.label or "G_B"
        model, base = check(bench, label)
        check_real(real, label)
        metrics = [json.loads(x) for x in (args.run / "metrics.jsonl").read_text().splitlines()]
        wall = wall_seconds(metrics)
        meta = {
            "derain.registry_name": args.name,
            "derain.licence": args.licence,
            "derain.train_commands": json.dumps([args.command]),
            "derain.machine": f"{os.cpu_count()} CPU cores, {platform.machine()}, no GPU",
            "derain.wall_time_s": f"{wall:.0f}",
            "derain.eval": json.dumps(
                {"bench_dev": summary_rows(bench), "real_rain": summary_rows(real)}, sort_keys=True
            ),
        }
        out = args.weights_dir
        entries: dict[str, Any] = {}
        for source, suffix in (("G_B", ""), ("G_R", "-rain")):
            loaded = load_file(args.run / f"{source}.safetensors")
            dest = out / f"{args.name}{suffix}.safetensors"
            own = (KEY_ARCH, KEY_HPARAMS, KEY_FORMAT, KEY_VERSION)  # save_weights writes these
            kept = {k: v for k, v in loaded.metadata.items() if k not in own}
            digest = save_weights(
                dest, loaded.module, arch=loaded.arch, hparams=loaded.hparams,
                metadata={**kept, **meta},
            )  # fmt: skip
            size = dest.stat().st_size
            if size >= MAX_BYTES:
                dest.unlink()
                Path(f"{dest}.sha256").unlink(missing_ok=True)
                raise BundleError(f"{dest}: {size / 1e6:.1f} MB >= 20 MB")
            entries[args.name + suffix] = {
                "file": dest.name,
                "sha256": digest,
                "arch": loaded.arch,
                "description": (
                    f"NLCL {'G_B' if not suffix else 'G_R (rain layer, for inspect-patches)'}"
                    f" trained on 2 CPU cores; bench-dev {model['psnr']:.2f} dB / "
                    f"{model['ssim']:.4f} (input {base['psnr']:.2f} / {base['ssim']:.4f})"
                ),
                "publish": {"repo_id": args.publish_repo, "filename": dest.name},
            }
        registry_path = out / "registry.json"
        raw = json.loads(registry_path.read_text(encoding="utf-8"))
        raw.setdefault("weights", {}).update(entries)
        if args.default:
            raw.setdefault("aliases", {})["default"] = args.name
        registry_path.write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
        load_registry(registry_path)
        os.environ["DERAIN_REGISTRY"] = str(registry_path)
        load_weights(args.name)
        if args.default:
            load_weights(None)
        print(f"registered {args.name} in {registry_path}: {model['psnr']:.2f} dB bench-dev")
        return 0
    except BundleError as exc:
        print(f"bundle_weights.py: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
