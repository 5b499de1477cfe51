"""The window plan (``plan.toml``): its runs, its timeline, and the commands it runs.

A plan has one ``[window]`` table (how long, how to share the GPU, where the staged data is) and
one ``[[run]]`` table per training run (name, config, ``--set`` overrides, target steps, budget).
Everything is validated before any GPU second is spent: ``window.py --check`` runs this here.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gw_common import MANIFEST_NAME, REPO, check_run_name, load_toml

MIN_PACK_RESERVE = 60.0  # seconds kept after the last SIGTERM for checkpoint, export and pack
PACK_SECONDS = 20.0  # of those, the seconds kept for packing alone
MIN_EXPORT_SECONDS = 15.0
MIN_RUN_SECONDS = 30.0  # a sequential run that would get less is skipped
MODES = ("parallel", "sequential")


class PlanError(Exception):
    """The plan cannot run as written (exit 2, before any training)."""


@dataclass(frozen=True)
class RunPlan:
    name: str
    config: str
    sets: tuple[str, ...] = ()
    steps: int = 20000
    budget_s: float = 300.0
    resume: bool = False
    device: str | None = None


@dataclass(frozen=True)
class WindowPlan:
    runs: tuple[RunPlan, ...]
    seconds: float = 570.0
    pack_reserve_s: float = 90.0
    stop_grace_s: float = 25.0
    mode: str = "parallel"
    data: str = ".stage/data/rainy"
    clean: str = ".stage/data/clean"
    device: str = "cuda"
    set_all: tuple[str, ...] = ()
    carry_checkpoint: str = ""


@dataclass(frozen=True)
class Deadlines:
    t0: float
    hard_stop: float
    kill: float
    export_end: float
    end: float


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PlanError(f"{what}: expected a list of strings")
    for item in value:
        if "=" not in item or item.startswith("-"):
            raise PlanError(f"{what}: {item!r} is not SECTION.KEY=VALUE")
    return tuple(value)


def parse_plan(data: dict[str, Any], *, source: str = "plan") -> WindowPlan:
    """Validate a plan (the ``[window]`` table and ``[[run]]`` tables)."""
    window = dict(data.get("window", {}))
    raw_runs = data.get("run", [])
    unknown = set(data) - {"window", "run"}
    if unknown:
        raise PlanError(f"{source}: unknown table(s) {sorted(unknown)}")
    allowed_window = {f for f in WindowPlan.__dataclass_fields__ if f != "runs"}
    if set(window) - allowed_window:
        raise PlanError(f"{source}: unknown [window] key(s) {sorted(set(window) - allowed_window)}")
    if "set_all" in window:
        window["set_all"] = _strings(window["set_all"], f"{source}: window.set_all")
    if not isinstance(raw_runs, list) or not raw_runs:
        raise PlanError(f"{source}: no [[run]] tables")
    runs = []
    allowed_run = set(RunPlan.__dataclass_fields__) - {"sets"} | {"set"}
    for index, raw in enumerate(raw_runs):
        what = f"{source}: run {index + 1}"
        if set(raw) - allowed_run:
            raise PlanError(f"{what}: unknown key(s) {sorted(set(raw) - allowed_run)}")
        for key in ("name", "config", "steps", "budget_s"):
            if key not in raw:
                raise PlanError(f"{what}: {key} is required")
        try:
            name = check_run_name(str(raw["name"]))
        except ValueError as exc:
            raise PlanError(f"{what}: {exc}") from None
        run = RunPlan(
            name=name,
            config=str(raw["config"]),
            sets=_strings(raw.get("set", []), f"{what}: set"),
            steps=int(raw["steps"]),
            budget_s=float(raw["budget_s"]),
            resume=bool(raw.get("resume", False)),
            device=raw.get("device"),
        )
        if run.steps < 1 or run.budget_s <= 0:
            raise PlanError(f"{what}: steps and budget_s must be positive")
        runs.append(run)
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise PlanError(f"{source}: run names must be unique ({names})")
    return validate_plan(WindowPlan(runs=tuple(runs), **window), source=source)


def validate_plan(plan: WindowPlan, *, source: str = "plan") -> WindowPlan:
    """The [window] rules: a known mode, time to train, export and pack, a known carry run."""
    names = [r.name for r in plan.runs]
    if plan.mode not in MODES:
        raise PlanError(f"{source}: mode {plan.mode!r}: choose {' or '.join(MODES)}")
    if plan.pack_reserve_s < MIN_PACK_RESERVE:
        raise PlanError(f"{source}: pack_reserve_s must be >= {MIN_PACK_RESERVE:.0f} s")
    if plan.pack_reserve_s - plan.stop_grace_s - PACK_SECONDS < MIN_EXPORT_SECONDS:
        raise PlanError(
            f"{source}: pack_reserve_s - stop_grace_s - {PACK_SECONDS:.0f} s (packing) leaves "
            f"under {MIN_EXPORT_SECONDS:.0f} s to export the stopped runs"
        )
    if plan.seconds - plan.pack_reserve_s < MIN_RUN_SECONDS:
        raise PlanError(f"{source}: seconds - pack_reserve_s leaves no time to train")
    if plan.carry_checkpoint and plan.carry_checkpoint not in names:
        raise PlanError(f"{source}: carry_checkpoint {plan.carry_checkpoint!r} is not a run name")
    return plan


def load_plan(path: Path) -> WindowPlan:
    try:
        return parse_plan(load_toml(path), source=str(path))
    except (OSError, ValueError) as exc:
        if isinstance(exc, PlanError):
            raise
        raise PlanError(f"{path}: {exc}") from None


def deadlines(plan: WindowPlan, t0: float) -> Deadlines:
    hard_stop = t0 + plan.seconds - plan.pack_reserve_s
    return Deadlines(
        t0=t0,
        hard_stop=hard_stop,
        kill=hard_stop + plan.stop_grace_s,
        export_end=t0 + plan.seconds - PACK_SECONDS,
        end=t0 + plan.seconds,
    )


def train_command(plan: WindowPlan, run: RunPlan, folder: Path, python: str) -> list[str]:
    """``derain train`` for one run; ``--resume`` always (it starts fresh without a checkpoint)."""
    cmd = [python, "-m", "derain_cli", "train", plan.data, "--clean", plan.clean]
    cmd += ["--out", str(folder), "--config", run.config]
    for item in (*plan.set_all, *run.sets):
        cmd += ["--set", item]
    cmd += ["--steps", str(run.steps), "--device", run.device or plan.device, "--resume"]
    return cmd


def export_command(plan: WindowPlan, folder: Path, step: int, python: str) -> list[str]:
    """Re-export a stopped run's checkpoint: ``--resume --steps S`` trains nothing, exports.

    Only runtime keys change (CPU, fp32, no workers, no cache, no compile), so the checkpoint's
    experiment is untouched and a later window resumes it with the plan's own settings.
    """
    cmd = [python, "-m", "derain_cli", "train", plan.data, "--clean", plan.clean]
    cmd += ["--out", str(folder), "--resume", "--steps", str(step), "--device", "cpu"]
    for item in (
        "train.precision=fp32",
        "train.num_workers=0",
        "train.cache_images=false",
        "train.compile=false",
    ):
        cmd += ["--set", item]
    return cmd


def carried_step(stage: Path, name: str) -> int | None:
    manifest = read_stage_manifest(stage)
    for row in manifest.get("resume", []):
        if str(row.get("file", "")).startswith(f"resume/{name}/") and "step" in row:
            return int(row["step"])
    return None


def read_stage_manifest(stage: Path) -> dict[str, Any]:
    path = stage / MANIFEST_NAME
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def check_stage(plan: WindowPlan, stage: Path) -> list[str]:
    """Problems that would stop the window: missing data, resume folders that do not match."""
    problems = []
    for folder in (plan.data, plan.clean):
        if not (REPO / folder).is_dir():
            problems.append(f"{folder}: missing (run tools/gpu_window/stage.py)")
    names = {r.name for r in plan.runs}
    for run in plan.runs:
        carried = stage / "resume" / run.name / "checkpoint.pt"
        if run.resume and not carried.is_file():
            problems.append(f"run {run.name}: resume = true but {carried} is missing")
        if not run.resume and carried.is_file():
            problems.append(f"run {run.name}: a checkpoint is staged but resume = false")
        if not (REPO / run.config).is_file():
            problems.append(f"run {run.name}: config {run.config} not found")
    resume_root = stage / "resume"
    if resume_root.is_dir():
        for carried_dir in resume_root.iterdir():
            if carried_dir.name not in names:
                problems.append(f"{carried_dir}: staged checkpoint of a run the plan does not name")
    return problems


def timeline(plan: WindowPlan) -> list[str]:
    """The plan's schedule in seconds after window.sh starts, for ``--check`` and the README."""
    when = deadlines(plan, 0.0)
    lines = [
        f"timeline (s after window.sh starts): SIGTERM by {when.hard_stop:.0f}, SIGKILL at "
        f"{when.kill:.0f}, exports end {when.export_end:.0f}, packed by {when.end:.0f}; "
        f"give the run call timeout_s >= {plan.seconds + 15:.0f} (at most 600)"
    ]
    start = 0.0
    for run in plan.runs:
        begin = 0.0 if plan.mode == "parallel" else start
        stop = min(begin + run.budget_s, when.hard_stop)
        lines.append(f"  {run.name:24} trains {begin:5.0f} -> {stop:5.0f} s (to step {run.steps})")
        start = stop
    if plan.seconds + 15 > 600:
        lines.append("  WARNING: seconds + 15 > 600: the run call's limit would cut the packing")
    return lines


def check_configs(plan: WindowPlan, python: str) -> list[str]:
    """``derain train --print-config`` for every run (keys, values, crop/patch checks)."""
    problems = []
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    procs = []
    for run in plan.runs:
        cmd = train_command(plan, run, Path("/nonexistent-run"), python)
        cmd = [c for c in cmd if c != "--resume"] + ["--print-config"]
        pipe = subprocess.PIPE
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=pipe, stderr=pipe, text=True)
        procs.append((run, proc))
    for run, proc in procs:
        out, err = proc.communicate(timeout=120)
        if proc.returncode != 0:
            problems.append(f"run {run.name}: {err.strip().splitlines()[-1] if err else out}")
    return problems
