"""After a GPU window, here: unpack its results into ``runs/``, restore its checkpoint, evaluate.

    python tools/gpu_window/collect.py FILES_DIR      # the run call's files_at folder

1. ``FILES_DIR/window.tar.gz`` is unpacked into ``runs/NAME/`` per run (a run folder that holds
   a DIFFERENT experiment is refused unless ``--force``); ``window.json`` goes to
   ``runs/windows/ID.json`` and each run's ``provenance.json`` gains this window (GPU, steps,
   wall time, the exact ``derain train`` commands, the data digest).
2. ``FILES_DIR/ckpt-NAME/`` (checkpoint manifest + parts) goes into ``runs/NAME/`` and is loaded
   once, which checks every part's sha256: ``stage.py --resume runs/NAME`` then carries it into
   the next window.
3. ONE ``derain eval`` on bench-dev scores the rainy input, every run's G_B and the authors'
   checkpoint together: Y-PSNR / SSIM and the colour cast (eval's ``cast``: per image the
   largest |mean RGB channel shift| to the clean image in grey levels, averaged over images),
   overall and per style.
4. NIQE on rain-real (``--real-count`` photos spread evenly over the sorted folder; 0 = all)
   for the same rows, and CPU megapixels/s from ``bench/infer_speed.py`` (512 x 512).
5. ``--results`` (JSON) and ``--table`` (Markdown, ready for docs/training.md's ablation table).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gw_common import (
    CHECKPOINT_PREFIX,
    PACK_NAME,
    REPO,
    WINDOW_JSON,
    check_run_name,
    sha256_file,
    write_json,
)

SHARED = REPO.parent / "shared"
AUTHORS_DEFAULT = SHARED / "reference" / "nlcl-realrain-G_B.pth"
#: The issue's targets (issue 5), checked per run in the table.
TARGET_GAIN_DB = 3.0
TARGET_SSIM = 0.71
TARGET_CAST = 2.0
TARGET_MP_S = 0.7


class CollectError(Exception):
    """A refusal with a one-line reason (exit 1)."""


# ------------------------------------------------------------------------------------------
# unpacking


def safe_extract(tar_path: Path, dest: Path) -> None:
    """Extract regular files and folders only, every path inside ``dest``."""
    with tarfile.open(tar_path, "r:gz") as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if (
                member.name.startswith("/")
                or ".." in parts
                or not (member.isfile() or member.isdir())
            ):
                raise CollectError(f"{tar_path}: refusing member {member.name!r}")
        tar.extractall(dest)  # every member checked above


def same_experiment(old: Path, new: Path) -> bool:
    """Two run folders are one experiment when their configs agree (runtime keys aside)."""
    from derain_cli.config import NLCLConfig
    from derain_cli.errors import UsageError
    from derain_cli.train.loop import check_resume_config

    if not (old / "config.toml").is_file() or not (new / "config.toml").is_file():
        return True
    try:
        check_resume_config(
            NLCLConfig.load(old / "config.toml"), NLCLConfig.load(new / "config.toml")
        )
    except UsageError:
        return False
    return True


def provenance_entry(window: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    env = window.get("environment", {})
    return {
        "window_id": window.get("window_id"),
        "gpu": env.get("gpu"),
        "torch": env.get("torch"),
        "status": run.get("status"),
        "first_step": run.get("first_step"),
        "last_step": run.get("last_step"),
        "train_wall_s": run.get("train_wall_s"),
        "images_per_s_median": run.get("images_per_s_median"),
        "derain_commands": run.get("derain_commands", []),
        "sets": [*window.get("plan", {}).get("set_all", []), *run.get("sets", [])],
        "run_sets": list(run.get("sets", [])),
        "config": run.get("config"),
        "data_digest": window.get("data", {}).get("digest"),
        "data_groups": window.get("data", {}).get("groups"),
    }


def add_provenance(run_dir: Path, entry: dict[str, Any]) -> dict[str, Any]:
    path = run_dir / "provenance.json"
    data: dict[str, Any] = {"windows": []}
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
    data["windows"] = [w for w in data["windows"] if w.get("window_id") != entry["window_id"]]
    data["windows"].append(entry)
    data["windows"].sort(key=lambda w: str(w.get("window_id")))
    write_json(path, data)
    return data


def unpack(files: Path, runs_dir: Path, *, force: bool) -> dict[str, Any]:
    """Unpack the window's tar into ``runs_dir``; return its window.json."""
    tar_path = files if files.is_file() else files / PACK_NAME
    if not tar_path.is_file():
        raise CollectError(f"{tar_path}: no {PACK_NAME} (is this the run call's files folder?)")
    runs_dir.mkdir(parents=True, exist_ok=True)
    incoming = Path(tempfile.mkdtemp(prefix=".incoming-", dir=runs_dir))
    try:
        safe_extract(tar_path, incoming)
        window = json.loads((incoming / WINDOW_JSON).read_text(encoding="utf-8"))
        names = [check_run_name(p.name) for p in sorted((incoming / "runs").iterdir())]
        for name in names:
            if (runs_dir / name).is_dir() and not same_experiment(
                runs_dir / name, incoming / "runs" / name
            ):
                if not force:
                    raise CollectError(
                        f"{runs_dir / name}: holds a different experiment (config.toml differs); "
                        "rename it or pass --force"
                    )
        for name in names:
            shutil.copytree(incoming / "runs" / name, runs_dir / name, dirs_exist_ok=True)
        write_json(runs_dir / "windows" / f"{window['window_id']}.json", window)
        for run in window["runs"]:
            if (runs_dir / run["name"]).is_dir():
                add_provenance(runs_dir / run["name"], provenance_entry(window, run))
        for row in window.get("left_out", []):
            print(f"  left out on the device: {row['file']} ({row['reason']})")
        return dict(window)
    finally:
        shutil.rmtree(incoming, ignore_errors=True)


def restore_checkpoint(files: Path, runs_dir: Path) -> list[tuple[str, int]]:
    """Copy ``ckpt-NAME/`` into ``runs/NAME/``, verify every part, delete stale parts."""
    from derain_cli.train.checkpoint import checkpoint_files, load_checkpoint

    restored = []
    base = files if files.is_dir() else files.parent
    for folder in sorted(base.glob(f"{CHECKPOINT_PREFIX}*")):
        name = check_run_name(folder.name[len(CHECKPOINT_PREFIX) :])
        run_dir = runs_dir / name
        run_dir.mkdir(parents=True, exist_ok=True)
        for path in sorted(folder.iterdir()):
            shutil.copyfile(path, run_dir / path.name)
        checkpoint = run_dir / "checkpoint.pt"
        step = int(load_checkpoint(checkpoint)["step"])  # raises on a missing/corrupt part
        keep = {p.name for p in checkpoint_files(checkpoint)}
        for stale in run_dir.glob("checkpoint.pt.*.part"):
            if stale.name not in keep:
                stale.unlink()
        restored.append((name, step))
    return restored


# ------------------------------------------------------------------------------------------
# metrics


def spread(items: Sequence[Path], count: int) -> list[Path]:
    """``count`` items spread evenly over the sorted list (all of them when count is 0)."""
    ordered = sorted(items)
    if count <= 0 or count >= len(ordered):
        return ordered
    picks = np.linspace(0, len(ordered) - 1, count).round().astype(int)
    return [ordered[i] for i in sorted(set(picks.tolist()))]


def run_eval(args: list[str]) -> tuple[dict[str, Any], str]:
    """``derain eval ... --json``; exit code 1 (some images not scored) is still a report."""
    cmd = [sys.executable, "-m", "derain_cli", "eval", *args, "--json", "-q"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    shown = shlex.join(["derain", "eval", *(display_path(a) for a in args)])
    print(f"$ {shown}", flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if done.returncode not in (0, 1):
        raise CollectError(f"derain eval failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    sys.stderr.write(done.stderr)
    return json.loads(done.stdout), shown


def display_path(arg: str) -> str:
    """A path as the README writes it: relative to the repository (``../shared/...``)."""
    if not arg.startswith("/"):
        return arg
    path = Path(arg).resolve()
    for base, prefix in ((REPO, ""), (REPO.parent, "../")):
        if path.is_relative_to(base):
            return prefix + path.relative_to(base).as_posix()
    return arg


def cpu_speed(spec: str, size: int, repeats: int) -> float:
    """Megapixels/s of ``spec`` on the CPU, measured by bench/infer_speed.py's ``measure``."""
    path = REPO / "bench" / "infer_speed.py"
    module_spec = importlib.util.spec_from_file_location("derain_bench_infer_speed", path)
    if module_spec is None or module_spec.loader is None:
        raise CollectError(f"{path}: cannot import")
    bench = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = bench  # dataclasses look their module up there
    module_spec.loader.exec_module(bench)
    from derain_cli.weights import load_weights

    loaded = load_weights(spec)
    row = bench.measure(spec, loaded.module, "cpu", "fp32", (size, size), repeats, None)
    return float(row.megapixels_per_second)


# ------------------------------------------------------------------------------------------
# results


@dataclass
class Candidate:
    """A row of the results: the input, the authors' checkpoint, a run's G_B, other weights."""

    label: str
    kind: str  # input | authors | run | weights
    spec: str | None = None
    run: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def weights_info(path: Path) -> dict[str, Any]:
    """sha256 and training facts of a weights file (safetensors metadata when present)."""
    info: dict[str, Any] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    if path.suffix == ".safetensors":
        from derain_cli.weights import read_safetensors

        _, meta = read_safetensors(path)
        info["trained_steps"] = (
            int(meta["derain.trained_steps"]) if meta.get("derain.trained_steps") else None
        )
        info["arch"] = meta.get("derain.arch")
        info["hparams"] = json.loads(meta.get("derain.hparams", "{}"))
    return info


def summary_rows(report: dict[str, Any], method: str) -> dict[str, dict[str, Any]]:
    return {row["set"]: row for row in report["summary"] if row["method"] == method}


def build_rows(
    candidates: Sequence[Candidate],
    bench: dict[str, Any],
    real: dict[str, Any] | None,
    speeds: dict[str, float | None],
) -> list[dict[str, Any]]:
    """One results row per candidate, labels taken in the eval reports' order."""
    labels = bench["methods"]
    real_labels = real["methods"] if real is not None else [None] * len(labels)
    if len(labels) != len(candidates):
        raise CollectError(f"eval returned {len(labels)} rows for {len(candidates)} candidates")
    rows = []
    for candidate, label, real_label in zip(candidates, labels, real_labels, strict=True):
        sets = summary_rows(bench, label)
        overall = sets.pop("all", {})
        niqe = None
        if real is not None and real_label is not None:
            niqe = summary_rows(real, real_label).get("all", {}).get("niqe")
        rows.append(
            {
                "label": candidate.label,
                "eval_label": label,
                "kind": candidate.kind,
                "spec": candidate.spec,
                "run": candidate.run,
                "count": overall.get("count"),
                "psnr": overall.get("psnr"),
                "ssim": overall.get("ssim"),
                "cast": overall.get("cast"),
                "sets": {
                    name: {k: r.get(k) for k in ("psnr", "ssim", "cast", "count")}
                    for name, r in sets.items()
                },
                "niqe_real": niqe,
                "cpu_mp_s": speeds.get(candidate.label),
                **candidate.extra,
            }
        )
    return rows


def _f(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _mark(ok: bool | None) -> str:
    return "-" if ok is None else ("yes" if ok else "NO")


def targets(row: dict[str, Any], rows: Sequence[dict[str, Any]]) -> dict[str, bool | None]:
    """The issue's targets for one row, against the input and the authors' rows."""
    by_kind = {r["kind"]: r for r in rows if r["kind"] in ("input", "authors")}
    base, authors = by_kind.get("input", {}), by_kind.get("authors")

    def ge(a: float | None, b: float | None, margin: float = 0.0) -> bool | None:
        return None if a is None or b is None else a >= b + margin

    def lt(a: float | None, b: float | None) -> bool | None:
        return None if a is None or b is None else a < b

    cast = row["cast"]
    result = {
        "psnr_input_plus_3db": ge(row["psnr"], base.get("psnr"), TARGET_GAIN_DB),
        "ssim_0.71": ge(row["ssim"], TARGET_SSIM),
        "cast_below_2": lt(cast, TARGET_CAST),
        "niqe_below_input": lt(row["niqe_real"], base.get("niqe_real")),
        "above_input": None
        if row["psnr"] is None or base.get("psnr") is None
        else bool(row["psnr"] >= base["psnr"] and row["ssim"] >= base["ssim"]),
        "beats_authors": None,
        "cpu_0.7_mp_s": ge(row["cpu_mp_s"], TARGET_MP_S),
    }
    if authors is not None:
        checks = [
            ge(row["psnr"], authors["psnr"]),
            ge(row["ssim"], authors["ssim"]),
            lt(cast, authors["cast"]),
            lt(row["niqe_real"], authors["niqe_real"]),
        ]
        known = [c for c in checks if c is not None]
        result["beats_authors"] = all(known) if known else None
    return result


def markdown_table(results: dict[str, Any]) -> str:
    """The ablation table (one row per model) and the issue's targets per run."""
    rows = results["rows"]
    sets = sorted({name for r in rows for name in r["sets"]})
    bench, real = results["bench"], results.get("real") or {}
    head = ["model", "steps", "config + change (--set)", "Y-PSNR dB", "SSIM"]
    head += [f"{s} PSNR / SSIM" for s in sets]
    head += ["cast (grey lvl)", f"NIQE real (n={real.get('count', '-')})", "CPU MP/s"]
    lines = [
        f"bench-dev: {bench['count']} pairs{' (SUBSET)' if bench['subset'] else ''}, "
        f"Y channel; one `derain eval` run: `{bench['command']}`",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    base = next((r for r in rows if r["kind"] == "input"), None)
    for row in rows:
        delta = ""
        if base is not None and row is not base and row["psnr"] is not None and base["psnr"]:
            delta = f" ({row['psnr'] - base['psnr']:+.2f})"
        cells = [
            row["label"],
            "-" if row.get("trained_steps") is None else str(row["trained_steps"]),
            "<br>".join(f"`{s}`" for s in row.get("run_sets") or []) or "-",
            _f(row["psnr"], 2) + delta,
            _f(row["ssim"], 4),
        ]
        for name in sets:
            info = row["sets"].get(name, {})
            cells.append(f"{_f(info.get('psnr'), 2)} / {_f(info.get('ssim'), 4)}")
        cells += [
            _f(row["cast"], 2),
            _f(row["niqe_real"], 3),
            _f(row["cpu_mp_s"], 3),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Colour cast: `derain eval`'s `cast` (per image the largest |mean RGB channel shift| to "
        "the clean image, grey levels 0-255, averaged over images).",
    ]
    run_rows = [r for r in rows if r["kind"] in ("run", "weights")]
    if run_rows:
        keys = list(targets(run_rows[0], rows))
        lines += ["", "| run | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
        for row in run_rows:
            marks = targets(row, rows)
            lines.append(f"| {row['label']} | " + " | ".join(_mark(marks[k]) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def candidates_for(
    window: dict[str, Any] | None,
    runs_dir: Path,
    only: Sequence[str],
    extra: Sequence[str],
    authors: Path | None,
) -> list[Candidate]:
    found = [Candidate("input", "input")]
    names = [r["name"] for r in window["runs"]] if window else []
    if only:
        names = list(only)
    for name in names:
        weights = runs_dir / name / "G_B.safetensors"
        if not weights.is_file():
            print(f"  {name}: no G_B.safetensors, not evaluated")
            continue
        change: list[str] = []
        prov = runs_dir / name / "provenance.json"
        if prov.is_file():
            windows = json.loads(prov.read_text(encoding="utf-8"))["windows"]
            if windows:
                last = windows[-1]
                change = [str(last.get("config"))]
                change += [s for s in last.get("run_sets", []) if _is_change(s)]
        info = weights_info(weights) | {"run_sets": change}
        found.append(Candidate(name, "run", str(weights), name, info))
    for spec in extra:
        path = Path(spec)
        info = weights_info(path) if path.is_file() else {}
        found.append(Candidate(path.stem if path.is_file() else spec, "weights", spec, None, info))
    if authors is not None:
        found.append(Candidate("authors' checkpoint", "authors", str(authors), None))
    return found


#: ``--set`` keys that are runtime settings, not a change of the experiment (left out of the
#: table's "change" column).
_RUNTIME_PREFIXES = (
    "train.num_workers",
    "train.cache_images",
    "train.checkpoint_part_mb",
    "train.log_every",
    "train.sample_every",
    "train.checkpoint_every",
    "train.compile",
)


def _is_change(item: str) -> bool:
    return not item.startswith(_RUNTIME_PREFIXES)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", type=Path, nargs="?", help="the window's files folder (or tar)")
    parser.add_argument("--runs-dir", type=Path, default=REPO / "runs")
    parser.add_argument("--force", action="store_true", help="overwrite a different experiment")
    parser.add_argument("--runs", default="", help="comma-separated runs to evaluate")
    parser.add_argument("--weights", action="append", default=[], help="more weights to score")
    parser.add_argument("--bench", type=Path, default=SHARED / "data" / "bench-dev")
    parser.add_argument("--bench-limit", type=int, default=None, help="first N pairs only")
    parser.add_argument("--real", type=Path, default=SHARED / "data" / "rain-real")
    parser.add_argument("--real-count", type=int, default=24, help="0 = every photo")
    parser.add_argument("--no-real", action="store_true", help="skip NIQE on real rain")
    parser.add_argument("--authors", type=Path, default=AUTHORS_DEFAULT)
    parser.add_argument("--no-authors", action="store_true")
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument("--speed-size", type=int, default=512)
    parser.add_argument("--speed-repeats", type=int, default=3)
    parser.add_argument("--device", default="auto", help="derain eval --device")
    parser.add_argument("--results", type=Path, default=None, help="default runs/results-ID.json")
    parser.add_argument("--table", type=Path, default=None, help="default runs/results-ID.md")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        window = None
        if args.files is not None:
            window = unpack(args.files, args.runs_dir, force=args.force)
            print(f"unpacked window {window['window_id']} into {args.runs_dir}")
            for name, step in restore_checkpoint(args.files, args.runs_dir):
                print(f"restored {args.runs_dir / name}/checkpoint.pt (step {step}): resume with "
                      f"`stage.py --resume {args.runs_dir / name}`")  # fmt: skip
        authors = None if args.no_authors else args.authors
        if authors is not None and not authors.is_file():
            raise CollectError(f"{authors}: authors' checkpoint not found (or pass --no-authors)")
        only = [n for n in args.runs.split(",") if n]
        candidates = candidates_for(window, args.runs_dir, only, args.weights, authors)
        specs = [c.spec for c in candidates if c.spec is not None]
        if not specs:
            raise CollectError("nothing to evaluate (no run has G_B.safetensors)")
        stamp = window["window_id"] if window else time.strftime("%Y%m%d-%H%M%S")
        weights_args = [a for s in specs for a in ("--weights", s)]
        bench_args = ["--rainy", str(args.bench / "rainy"), "--clean", str(args.bench / "clean")]
        bench_args += [*weights_args, "--no-niqe"]
        bench_args += ["--device", args.device]
        if args.bench_limit:
            bench_args += ["--limit", str(args.bench_limit)]
        bench, bench_cmd = run_eval(bench_args)
        real = None
        real_info: dict[str, Any] | None = None
        if not args.no_real:
            photos = spread(
                [p for p in args.real.iterdir() if p.is_file() and not p.name.startswith(".")],
                args.real_count,
            )
            with tempfile.TemporaryDirectory(prefix="real-") as tmp:
                for photo in photos:
                    os.symlink(photo.resolve(), Path(tmp) / photo.name)
                real, real_cmd = run_eval(["--rainy", tmp, *weights_args, "--device", args.device])
            real_info = {
                "folder": str(args.real),
                "count": len(photos),
                "photos": [p.name for p in photos],
                "command": real_cmd.replace(
                    display_path(tmp), f"<{len(photos)} photos of {display_path(str(args.real))}>"
                ),
            }
        speeds: dict[str, float | None] = {}
        if not args.no_speed:
            for candidate in candidates:
                if candidate.spec is not None:
                    speeds[candidate.label] = round(
                        cpu_speed(candidate.spec, args.speed_size, args.speed_repeats), 4
                    )
                    print(f"  {candidate.label}: {speeds[candidate.label]} MP/s on the CPU")
        import torch

        results = {
            "format": 1,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "window_id": window["window_id"] if window else None,
            "bench": {
                "folder": str(args.bench),
                "limit": args.bench_limit,
                "count": len({i["stem"] for i in bench["images"]}),
                "subset": args.bench_limit is not None,
                "space": bench["space"],
                "command": bench_cmd,
            },
            "real": real_info,
            "speed": None
            if args.no_speed
            else {"size": args.speed_size, "threads": torch.get_num_threads(), "device": "cpu"},
            "rows": build_rows(candidates, bench, real, speeds),
            "problems": bench["problems"] + (real["problems"] if real else []),
            "bench_eval": bench,
            "real_eval": real,
        }
        results_path = args.results or args.runs_dir / f"results-{stamp}.json"
        table_path = args.table or args.runs_dir / f"results-{stamp}.md"
        write_json(results_path, results)
        table_path.write_text(markdown_table(results), encoding="utf-8")
        print(markdown_table(results))
        print(f"results: {results_path}\ntable: {table_path}")
        print(f"collect.py: {time.monotonic() - started:.0f} s")
        return 0
    except CollectError as exc:
        print(f"collect.py: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
