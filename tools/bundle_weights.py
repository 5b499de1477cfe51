"""Bundle a trained G_B (and its G_R) in ``weights/`` and register it, after checking its scores.

    python tools/bundle_weights.py runs/cpu-v2 --name nlcl-cpu-v2 \\
        --bench runs/eval-bench-dev.json --bench bench_gn=runs/eval-bench-gn.json \\
        --real runs/eval-real.json --licence MIT --publish-repo OWNER/REPO --default

``--bench [SET=]FILE`` (repeatable; SET defaults to ``bench_dev``): ``derain eval --json`` on a
benchmark of pairs with rows for the input, the run's ``G_B.safetensors`` and the models it must
beat (the current default, the authors' checkpoint); ``--real``: the same on real rain (NIQE).
Refuses weights below the rainy input or below any other model of the same evaluation on any
benchmark (Y-PSNR or SSIM), weights whose mean NIQE on real rain is not below the input's or is
above another model's of that evaluation, a benchmark of fewer than 24 pairs, and files of 20 MB
or more. Writes ``weights/NAME.safetensors`` (+ sha256 sidecar, metadata: evaluation, training
command, data, machine, wall time, licence), ``weights/NAME-rain.safetensors`` (G_R, for
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
#: The current default's recipe; DATA is the folder of research data the model card describes.
RECIPE = (
    "derain train DATA/rain-real DATA/syn-train/rainy --clean DATA/clean --clean DATA/clean-bsd "
    "--streaks DATA/streaks --config configs/cpu-v2.toml --out runs/cpu-v2"
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


def check(
    bench: dict[str, Any], label: str, name: str = "bench_dev"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model's and the input's rows of one benchmark; refuses a model below the input or
    below any other model scored in the same run (the default, the authors'), on Y-PSNR or SSIM."""
    rows = summary_rows(bench)
    model, base = row_for(rows, label), row_for(rows, "input")
    shown = name.replace("_", "-")
    if int(model.get("count", 0)) < BENCH_PAIRS:
        raise BundleError(f"{shown} evaluation covers {model.get('count')} < {BENCH_PAIRS} pairs")
    for other in [base, *(r for r in rows if r["method"] not in (label, "input"))]:
        below = [k for k in ("psnr", "ssim") if model[k] < other[k]]
        if below:
            raise BundleError(f"{label} is below {other['method']} on {shown} ({', '.join(below)})")
    return model, base


def bench_arg(text: str) -> tuple[str, Path]:
    """``SET=FILE`` or ``FILE`` (the set ``bench_dev``)."""
    name, sep, file = text.partition("=")
    return (name, Path(file)) if sep else ("bench_dev", Path(text))


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
    for other in rows:
        if other["method"] not in (label, "input") and other.get("niqe") is not None:
            if model["niqe"] > other["niqe"]:
                raise BundleError(
                    f"{label} is above {other['method']} on real-rain NIQE ({model['niqe']:.3f} "
                    f"against {other['niqe']:.3f})"
                )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="the run folder (G_B/G_R.safetensors, metrics)")
    parser.add_argument("--name", required=True)
    parser.add_argument("--bench", type=bench_arg, action="append", required=True,
                        metavar="[SET=]FILE")  # fmt: skip
    parser.add_argument("--real", type=Path, required=True)
    parser.add_argument("--label", default=None, help="the run's row label in the evaluation")
    parser.add_argument("--licence", required=True)
    parser.add_argument("--publish-repo", required=True)
    parser.add_argument("--command", default=RECIPE, help="the training command to record")
    parser.add_argument("--default", action="store_true")
    parser.add_argument("--weights-dir", type=Path, default=REPO / "weights")
    args = parser.parse_args(argv)

    from derain_cli.weights.files import (
        KEY_ARCH,
        KEY_FORMAT,
        KEY_HPARAMS,
        KEY_VERSION,
        save_weights,
    )
    from derain_cli.weights.loading import load_file, load_weights
    from derain_cli.weights.registry import load_registry

    try:
        benches = {name: json.loads(path.read_text(encoding="utf-8")) for name, path in args.bench}
        if len(benches) != len(args.bench):
            raise BundleError("each --bench needs its own SET name")
        real = json.loads(args.real.read_text(encoding="utf-8"))
        label = args.label or "G_B"
        checked = {name: check(bench, label, name) for name, bench in benches.items()}
        model, base = next(iter(checked.values()))  # the first benchmark names the model
        first = next(iter(checked)).replace("_", "-")
        check_real(real, label)
        metrics = [json.loads(x) for x in (args.run / "metrics.jsonl").read_text().splitlines()]
        wall = wall_seconds(metrics)
        meta = {
            "derain.registry_name": args.name,
            "derain.licence": args.licence,
            "derain.train_commands": json.dumps([args.command]),
            "derain.machine": f"{os.cpu_count()} CPU cores, {platform.machine()}, no GPU",
            "derain.wall_time_s": f"{wall:.0f}",
            "derain.eval_label": label,  # this model's row in derain.eval
            "derain.eval": json.dumps(
                {
                    **{n: summary_rows(b) for n, b in benches.items()},
                    "real_rain": summary_rows(real),
                },
                sort_keys=True,
            ),  # fmt: skip
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
                    f" trained on 2 CPU cores; {first} {model['psnr']:.2f} dB / "
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
        print(f"registered {args.name} in {registry_path}: {model['psnr']:.2f} dB {first}")
        return 0
    except BundleError as exc:
        print(f"bundle_weights.py: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
