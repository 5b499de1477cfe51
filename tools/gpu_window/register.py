"""Bundle a trained G_B as named weights: file, sha256, registry entry, model card.

    python tools/gpu_window/register.py runs/NAME/G_B.safetensors --name nlcl-fidelity \\
        --results runs/results-ID.json --hub-repo OWNER/REPO --hub-revision <40-hex> \\
        --licence "MIT" --default

1. Refuses, with the numbers, weights that score below the rainy input on bench-dev (Y-PSNR or
   SSIM) in ``--results`` (issue 5: never ship a default worse than doing nothing), results
   computed on a bench-dev subset (unless ``--allow-subset``), and files of 20 MB or more.
2. Writes ``WEIGHTS_DIR/NAME.safetensors`` (same tensors) with extra metadata: the eval table,
   the exact training commands, the data digest, GPU, wall time (from ``provenance.json`` beside
   the G_B, written by collect.py); config and steps are already in the file's metadata.
3. Adds or replaces ``NAME`` in ``WEIGHTS_DIR/registry.json`` (sha256, arch, Hub repo id,
   revision and file), with ``--default`` pointing the ``default`` alias at it, and checks that
   ``derain`` loads it by name through that registry.
4. Regenerates ``WEIGHTS_DIR/README.md`` (the model card) from ``model_card.md.tmpl`` and
   ``model_card_entry.md.tmpl`` for every bundled entry.

``--weights-dir`` defaults to the repository's ``weights/``; dry runs pass a copy.
"""

from __future__ import annotations

import argparse
import json
import os
import string
import sys
import tempfile
from pathlib import Path
from typing import Any

from collect import markdown_table, targets
from gw_common import REPO, check_run_name, sha256_file

HERE = Path(__file__).resolve().parent
MAX_BYTES = 20_000_000  # issue 5: "size under 20 MB"
#: Metadata keys written here (beside derain train's own ``derain.*`` keys).
KEY_EVAL = "derain.eval"
KEY_COMMANDS = "derain.train_commands"
KEY_DATA = "derain.train_data"
KEY_GPU = "derain.gpu"
KEY_WALL = "derain.wall_time_s"
KEY_WINDOWS = "derain.windows"
KEY_NAME = "derain.registry_name"
KEY_LICENCE = "derain.licence"
KEY_SOURCE_SHA = "derain.source_sha256"
#: Keys save_weights writes itself.
_OWN_KEYS = ("derain.arch", "derain.hparams", "derain.format_version", "derain.version")


class RegisterError(Exception):
    """A refusal with a one-line reason (exit 1)."""


def find_row(results: dict[str, Any], sha256: str) -> dict[str, Any]:
    for row in results["rows"]:
        if row.get("sha256") == sha256:
            return dict(row)
    raise RegisterError(
        f"the results ({results.get('bench', {}).get('command', '?')}) do not include weights "
        f"with sha256 {sha256[:12]}...: evaluate them with collect.py first"
    )


def check_quality(results: dict[str, Any], row: dict[str, Any], *, allow_subset: bool) -> None:
    """The hard rules: a full bench-dev evaluation, and not below the rainy input."""
    bench = results["bench"]
    if bench.get("subset") and not allow_subset:
        raise RegisterError(
            f"the results cover only {bench.get('count')} bench-dev pairs (--bench-limit): "
            "register from a full evaluation (or pass --allow-subset for a dry run)"
        )
    base = next((r for r in results["rows"] if r["kind"] == "input"), None)
    if base is None or base.get("psnr") is None or row.get("psnr") is None:
        raise RegisterError("the results hold no bench-dev PSNR for the input or these weights")
    below = []
    if row["psnr"] < base["psnr"]:
        below.append(f"Y-PSNR {row['psnr']:.2f} dB < input {base['psnr']:.2f} dB")
    if row["ssim"] < base["ssim"]:
        below.append(f"SSIM {row['ssim']:.4f} < input {base['ssim']:.4f}")
    if below:
        raise RegisterError(
            f"refusing to register {row['label']}: it scores below the rainy input on bench-dev "
            f"({'; '.join(below)}). A model worse than doing nothing is never shipped (issue 5)."
        )


def compact_eval(results: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """What the card needs from the results: input, this model, authors; how they were made."""
    keep = ["label", "kind", "count", "psnr", "ssim", "cast", "sets", "niqe_real", "cpu_mp_s"]
    keep += ["trained_steps", "run_sets"]
    rows = [r for r in results["rows"] if r["kind"] in ("input", "authors")]
    rows.insert(1, row)
    return {
        "bench": results["bench"],
        "real": {k: v for k, v in (results.get("real") or {}).items() if k != "photos"},
        "speed": results.get("speed"),
        "rows": [{k: r.get(k) for k in keep} for r in rows],
    }


def read_provenance(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RegisterError(
            f"{path}: missing (collect.py writes it; it holds the training commands, GPU and "
            "wall time the model card needs; pass --provenance)"
        )
    data = json.loads(path.read_text(encoding="utf-8"))
    if not data.get("windows"):
        raise RegisterError(f"{path}: records no GPU window")
    return dict(data)


def provenance_metadata(prov: dict[str, Any]) -> dict[str, str]:
    windows = prov["windows"]
    commands = [c for w in windows for c in w.get("derain_commands", [])]
    gpus = sorted({str(w.get("gpu")) for w in windows if w.get("gpu")})
    wall = sum(float(w.get("train_wall_s") or 0.0) for w in windows)
    last = windows[-1]
    data = {
        "digest": last.get("data_digest"),
        "groups": last.get("data_groups"),
        "config": last.get("config"),
        "sets": last.get("sets", []),
    }
    return {
        KEY_COMMANDS: json.dumps(commands),
        KEY_DATA: json.dumps(data, sort_keys=True),
        KEY_GPU: "; ".join(gpus) or "unknown",
        KEY_WALL: f"{wall:.0f}",
        KEY_WINDOWS: json.dumps([w.get("window_id") for w in windows]),
    }


def write_weights(
    source: Path, dest: Path, metadata: dict[str, str], max_bytes: int
) -> tuple[str, int]:
    """Re-save ``source``'s tensors with ``metadata`` as ``dest`` (+ sidecar); sha256, size."""
    from derain_cli.weights import load_file, save_weights

    loaded = load_file(source)
    meta = {k: v for k, v in loaded.metadata.items() if k not in _OWN_KEYS} | metadata
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        staged = Path(tmp) / dest.name
        digest = save_weights(
            staged, loaded.module, arch=loaded.arch, hparams=loaded.hparams, metadata=meta
        )
        size = staged.stat().st_size
        if size >= max_bytes:
            raise RegisterError(
                f"{source}: {size / 1e6:.1f} MB as safetensors; bundled weights must stay under "
                f"{max_bytes / 1e6:.0f} MB"
            )
        staged.replace(dest)
        Path(str(staged) + ".sha256").replace(Path(str(dest) + ".sha256"))
    return digest, size


def update_registry(
    path: Path, name: str, entry: dict[str, Any], *, make_default: bool
) -> dict[str, Any]:
    """Add/replace ``name`` (and the default alias); validated by derain before it replaces."""
    from derain_cli.errors import WeightsError
    from derain_cli.weights_registry import load_registry

    raw = json.loads(path.read_text(encoding="utf-8"))
    raw.setdefault("weights", {})[name] = entry
    raw.setdefault("aliases", {})
    if make_default:
        raw["aliases"]["default"] = name
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    try:
        load_registry(tmp)
    except WeightsError as exc:
        tmp.unlink()
        raise RegisterError(f"the new registry entry is invalid: {exc}") from None
    tmp.replace(path)
    return dict(raw)


def check_loads(registry: Path, name: str, *, default: bool) -> None:
    """``derain`` resolves the name (and ``default``) through this registry and loads it."""
    from derain_cli.weights import load_weights

    previous = os.environ.get("DERAIN_REGISTRY")
    os.environ["DERAIN_REGISTRY"] = str(registry)
    try:
        load_weights(name)
        if default:
            load_weights(None)
    finally:
        if previous is None:
            os.environ.pop("DERAIN_REGISTRY", None)
        else:
            os.environ["DERAIN_REGISTRY"] = previous


# ------------------------------------------------------------------------------------------
# the model card


def _code(items: list[str]) -> str:
    return "<br>".join(f"`{i}`" for i in items) if items else "-"


def render_entry(name: str, entry: dict[str, Any], folder: Path, *, is_default: bool) -> str:
    """One card section, from the registry entry and the file's own metadata."""
    from derain_cli.weights import count_parameters, load_file

    template = string.Template((HERE / "model_card_entry.md.tmpl").read_text(encoding="utf-8"))
    path = folder / entry["file"]
    loaded = load_file(path, sha256=entry["sha256"])
    meta = loaded.metadata
    config = json.loads(meta.get("derain.train_config", "{}"))
    train = config.get("train", {})
    data = json.loads(meta.get(KEY_DATA, "{}"))
    groups = data.get("groups") or {}
    data_text = ", ".join(f"`{g}` {v['count']} files" for g, v in groups.items())
    data_text += f" (staged data digest `{str(data.get('digest'))[:16]}`)" if data else ""
    evaluation = json.loads(meta.get(KEY_EVAL, "null"))
    if evaluation:
        table = markdown_table(evaluation)
        model_row = evaluation["rows"][1]
        marks = targets(model_row, evaluation["rows"])
        unmet = [k for k, v in marks.items() if v is False]
        table += "\nTargets of issue 5 not met: " + (", ".join(unmet) if unmet else "none") + ".\n"
    else:
        table = "No evaluation recorded in the file's metadata.\n"
    hub = entry.get("hub") or {}
    wall = float(meta.get(KEY_WALL, "0") or 0)
    return template.substitute(
        name=name,
        default_tag=" (default)" if is_default else "",
        description=entry.get("description", ""),
        file=entry["file"],
        size_mb=f"{path.stat().st_size / 1e6:.2f}",
        sha256=entry["sha256"],
        arch=loaded.arch,
        hparams=json.dumps(loaded.hparams, sort_keys=True),
        parameters=f"{count_parameters(loaded.module):,}",
        commands=_code(json.loads(meta.get(KEY_COMMANDS, "[]"))),
        config=data.get("config", "-"),
        sets=_code(list(data.get("sets", []))),
        data=data_text or "-",
        steps=meta.get("derain.trained_steps", "-"),
        batch=train.get("batch_size", "-"),
        crop=train.get("crop", "-"),
        ema="EMA weights" if meta.get("derain.ema") == "true" else "live weights (no EMA)",
        gpu=meta.get(KEY_GPU, "-"),
        wall=f"{wall:.0f} s of training ({wall / 60:.1f} min) over windows "
        + ", ".join(json.loads(meta.get(KEY_WINDOWS, "[]"))),
        hub_repo_id=hub.get("repo_id", "-"),
        hub_revision=hub.get("revision", "-"),
        hub_filename=hub.get("filename", "-"),
        licence=meta.get(KEY_LICENCE, "-"),
        eval_table=table.rstrip(),
    )


def render_card(registry: dict[str, Any], folder: Path) -> str:
    default = registry.get("aliases", {}).get("default")
    entries = []
    for name, entry in sorted(registry.get("weights", {}).items()):
        if entry.get("file") and (folder / entry["file"]).is_file():
            entries.append(render_entry(name, entry, folder, is_default=name == default))
    default_line = (
        f"`derain photo.jpg -o clean.jpg` without `--weights` uses **`{default}`**."
        if default
        else "No default is set: `derain` without `--weights` stops with exit code 2."
    )
    page = string.Template((HERE / "model_card.md.tmpl").read_text(encoding="utf-8"))
    return page.substitute(default_line=default_line, entries="\n\n".join(entries).rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights", type=Path, help="a trained G_B.safetensors")
    parser.add_argument("--name", required=True, help="registry name (file NAME.safetensors)")
    parser.add_argument("--results", type=Path, required=True, help="collect.py's results JSON")
    parser.add_argument("--hub-repo", required=True, help="OWNER/REPO it will be published in")
    parser.add_argument("--hub-revision", required=True, help="the pinned 40-hex Hub commit")
    parser.add_argument("--hub-filename", default=None, help="default: NAME.safetensors")
    parser.add_argument("--licence", required=True, help="licence of the weights (card + meta)")
    parser.add_argument("--description", default=None)
    parser.add_argument("--default", action="store_true", help="point the default alias here")
    parser.add_argument("--provenance", type=Path, default=None, help="default: beside WEIGHTS")
    parser.add_argument("--weights-dir", type=Path, default=REPO / "weights")
    parser.add_argument("--allow-subset", action="store_true", help="dry runs only")
    parser.add_argument("--max-mb", type=float, default=MAX_BYTES / 1e6)
    args = parser.parse_args(argv)
    try:
        try:
            check_run_name(args.name)
        except ValueError as exc:
            raise RegisterError(str(exc).replace("run name", "--name")) from None
        if args.name == "default":
            raise RegisterError("--name default: that is the alias; pass --default instead")
        results = json.loads(args.results.read_text(encoding="utf-8"))
        source_sha = sha256_file(args.weights)
        row = find_row(results, source_sha)
        check_quality(results, row, allow_subset=args.allow_subset)
        prov = read_provenance(args.provenance or args.weights.parent / "provenance.json")
        metadata = provenance_metadata(prov) | {
            KEY_EVAL: json.dumps(compact_eval(results, row), sort_keys=True),
            KEY_NAME: args.name,
            KEY_LICENCE: args.licence,
            KEY_SOURCE_SHA: source_sha,
        }
        folder: Path = args.weights_dir
        dest = folder / f"{args.name}.safetensors"
        digest, size = write_weights(args.weights, dest, metadata, int(args.max_mb * 1e6))
        description = args.description or (
            f"NLCL G_B trained with derain train ({row.get('trained_steps')} steps); bench-dev "
            f"{row['psnr']:.2f} dB / {row['ssim']:.4f} (input "
            f"{next(r for r in results['rows'] if r['kind'] == 'input')['psnr']:.2f} dB)"
        )
        entry = {
            "file": dest.name,
            "sha256": digest,
            "arch": _arch(dest),
            "description": description,
            "hub": {
                "repo_id": args.hub_repo,
                "revision": args.hub_revision,
                "filename": args.hub_filename or dest.name,
            },
        }
        registry_path = folder / "registry.json"
        registry = update_registry(registry_path, args.name, entry, make_default=args.default)
        check_loads(registry_path, args.name, default=args.default)
        (folder / "README.md").write_text(render_card(registry, folder), encoding="utf-8")
        unmet = [k for k, v in targets(row, results["rows"]).items() if v is False]
        print(f"registered {args.name}: {dest} ({size / 1e6:.2f} MB, sha256 {digest})")
        print(f"registry: {registry_path}{' (default)' if args.default else ''}")
        print(f"model card: {folder / 'README.md'}")
        if unmet:
            print(f"WARNING: issue-5 targets not met: {', '.join(unmet)}")
        return 0
    except RegisterError as exc:
        print(f"register.py: {exc}", file=sys.stderr)
        return 1


def _arch(path: Path) -> str:
    from derain_cli.weights import read_safetensors

    _, meta = read_safetensors(path)
    return meta["derain.arch"]


if __name__ == "__main__":
    sys.exit(main())
