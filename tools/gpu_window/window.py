"""Drive one GPU window: train the plan's runs, stop them in time, export, and pack ``$OUT``.

``window.sh`` (the one command of the window) installs the carried wheels and calls this. The
plan (``plan.toml``) lists runs (name, config, ``--set`` overrides, target steps, a wall-clock
budget) and how to run them: all at once on the one GPU (``mode = "parallel"``) or one after
the other (``"sequential"``). Timeline, measured from the moment ``window.sh`` started (``t0``)::

    t0 ........ runs train ........ hard_stop ... kill ....... export_end ..... end
                                   (SIGTERM all)  (SIGKILL)    (exports killed)  (packed)
    hard_stop  = t0 + seconds - pack_reserve_s   (pack_reserve_s >= 60)
    kill       = hard_stop + stop_grace_s
    export_end = t0 + seconds - PACK_SECONDS

A run is sent SIGTERM at ``min(its start + budget_s, hard_stop)``; ``derain train`` then
finishes the step, writes its checkpoint and exits 143 WITHOUT exporting weights (the loop
exports only when the target step is reached). So every run that did not reach its target is
exported by the project's own re-export path: ``derain train ... --resume --steps S`` with S the
checkpoint's step trains nothing and writes ``G_B.safetensors`` / ``G_R.safetensors`` from the
checkpoint (EMA included). That export runs on the CPU (runtime keys only), beside any run still
training.

``$OUT`` then receives at most 8 files (16 MiB each, 64 MiB together): ``window.tar.gz`` (every
run's weights, logs, metrics, config, loss curve and last sample, plus ``window.json``),
``window.log`` (written by window.sh), and for at most one run (``carry_checkpoint``) its
checkpoint files in ``ckpt-RUN/``. What does not fit is listed in ``window.json`` under
``left_out``, by priority: logs and metrics, then G_B, then the checkpoint, then G_R, then
pictures.

    python tools/gpu_window/window.py --plan tools/gpu_window/plan.toml --check   # here, first

The plan and its timeline are ``gw_plan.py``; what goes into ``$OUT`` is ``gw_pack.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from gw_common import CHECKPOINT_PREFIX, REPO, STAGE_DIR, mib
from gw_pack import check_out, choose_pack, pack_items, write_pack
from gw_plan import (
    MIN_EXPORT_SECONDS,
    MIN_RUN_SECONDS,
    Deadlines,
    PlanError,
    RunPlan,
    WindowPlan,
    carried_step,
    check_configs,
    check_stage,
    deadlines,
    export_command,
    load_plan,
    read_stage_manifest,
    timeline,
    train_command,
    validate_plan,
)

STATUS_EVERY = 30.0
POLL = 0.5
WORK_MARKER = ".gpu_window-work"


@dataclass
class Job:
    run: RunPlan
    folder: Path
    status: str = "waiting"  # waiting training stopping exporting finished exported failed skipped
    proc: subprocess.Popen[bytes] | None = None
    export: subprocess.Popen[bytes] | None = None
    started: float | None = None
    ended: float | None = None
    stop_at: float | None = None
    term_sent: float | None = None
    killed: bool = False
    returncode: int | None = None
    export_returncode: int | None = None
    first_step: int = 0
    last_step: int | None = None
    commands: list[str] = field(default_factory=list)
    derain_commands: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def portable_command(cmd: list[str], job: Job) -> str:
    """The command as a user types it: ``derain train ... --out runs/NAME`` (for the card)."""
    words = ["derain", *cmd[3:]]
    words = [f"runs/{job.run.name}" if w == str(job.folder) else w for w in words]
    return shlex.join(words)


def _now() -> float:
    return time.time()


def _stamp(t0: float) -> str:
    return f"[{_now() - t0:6.1f}s]"


def _popen(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    handle = open(log, "ab")  # noqa: SIM115 - the child keeps it; closed when this process ends
    handle.write(f"$ {shlex.join(cmd)}\n".encode())
    handle.flush()
    return subprocess.Popen(
        cmd, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO, env=env, start_new_session=True
    )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def checkpoint_step(folder: Path) -> int | None:
    checkpoint = folder / "checkpoint.pt"
    if not checkpoint.is_file():
        return None
    from derain_cli.train.checkpoint import load_checkpoint

    try:
        return int(load_checkpoint(checkpoint)["step"])
    except Exception as exc:  # a torn or foreign checkpoint: report, do not crash the window
        print(f"  {folder.name}: checkpoint unreadable ({exc})", flush=True)
        return None


def metrics_summary(folder: Path) -> dict[str, Any]:
    """Last step and median images/s of a run (rows after each start's first, warm-up, row)."""
    path = folder / "metrics.jsonl"
    rows: list[dict[str, Any]] = []
    speeds: list[float] = []
    fresh = True
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if "event" in row:
                fresh = row["event"] in ("start", "resume")
                continue
            rows.append(row)
            if not fresh and isinstance(row.get("images_per_s"), (int, float)):
                speeds.append(float(row["images_per_s"]))
            fresh = False
    last = rows[-1] if rows else {}
    return {
        "last_step": last.get("step"),
        "images_per_s_median": round(statistics.median(speeds), 2) if speeds else None,
        "last_losses": {k: v for k, v in last.items() if k.startswith(("g_", "d_"))},
    }


def gpu_status() -> str:
    try:
        done = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=utilization.gpu,memory.used",
                "--format=csv,noheader,nounits",
            ],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    if done.returncode != 0 or not done.stdout.strip():
        return ""
    util, memory = (v.strip() for v in done.stdout.strip().splitlines()[0].split(","))
    return f"gpu {util}% {memory} MiB"


def environment() -> dict[str, Any]:
    info: dict[str, Any] = {"python": sys.version.split()[0], "host": os.uname().nodename}
    try:
        done = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=name,memory.total,driver_version",
                "--format=csv,noheader",
            ],
            capture_output=True,
            text=True,
            timeout=10,
        )
        info["gpu"] = done.stdout.strip() if done.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        info["gpu"] = None
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.version.cuda
        info["cuda_available"] = torch.cuda.is_available()
    except ImportError:
        info["torch"] = None
    info["cpus"] = os.cpu_count()
    return info


class Driver:
    """The window's state machine (poll loop: start, stop, reap, export, report)."""

    def __init__(
        self, plan: WindowPlan, work: Path, t0: float, *, python: str, stage: Path
    ) -> None:
        self.plan = plan
        self.when = deadlines(plan, t0)
        self.python = python
        self.stage = stage
        self.jobs = [Job(run, work / "runs" / run.name) for run in plan.runs]
        self.last_status = t0
        self.stop_requested = False
        parallel = len(plan.runs) if plan.mode == "parallel" else 1
        threads = max(1, (os.cpu_count() or 1) // parallel)
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(threads))
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
        )

    def log(self, text: str) -> None:
        print(f"{_stamp(self.when.t0)} {text}", flush=True)

    # -- phases ------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Put carried checkpoints in place (``.stage/resume/RUN`` -> the run folder)."""
        for job in self.jobs:
            job.folder.mkdir(parents=True, exist_ok=True)
            if job.run.resume:
                source = self.stage / "resume" / job.run.name
                for path in sorted(source.iterdir()):
                    shutil.copyfile(path, job.folder / path.name)
                job.first_step = carried_step(self.stage, job.run.name) or 0
                self.log(f"{job.run.name}: resuming the carried checkpoint (step {job.first_step})")

    def start(self, job: Job) -> None:
        now = _now()
        if self.when.hard_stop - now < min(MIN_RUN_SECONDS, job.run.budget_s):
            job.status = "skipped"
            job.notes.append("no time left in the window")
            self.log(f"{job.run.name}: skipped (no time left)")
            return
        cmd = train_command(self.plan, job.run, job.folder, self.python)
        job.commands.append(shlex.join(cmd))
        job.derain_commands.append(portable_command(cmd, job))
        job.proc = _popen(cmd, job.folder / "train.log", self.env)
        job.started = now
        job.stop_at = min(now + job.run.budget_s, self.when.hard_stop)
        job.status = "training"
        self.log(
            f"{job.run.name}: started (pid {job.proc.pid}, target step {job.run.steps}, "
            f"stop at +{job.stop_at - self.when.t0:.0f}s)"
        )

    def reap(self, job: Job) -> None:
        assert job.proc is not None
        job.returncode = job.proc.returncode
        job.ended = _now()
        summary = metrics_summary(job.folder)
        weights = job.folder / "G_B.safetensors"
        if job.returncode == 0 and weights.is_file():
            job.status = "finished"
            job.last_step = summary["last_step"]
            self.log(f"{job.run.name}: reached its target and exported (step {job.last_step})")
            return
        how = {143: "stopped by SIGTERM", 130: "stopped by SIGINT"}.get(
            job.returncode or 0, f"exited with {job.returncode}"
        )
        if job.killed:
            how = "killed (SIGKILL) after the grace period"
        job.notes.append(how)
        step = checkpoint_step(job.folder)
        if step is None or step <= 0:
            job.status = "failed"
            self.log(f"{job.run.name}: {how}; no checkpoint, nothing to export (see train.log)")
            return
        exported_before = weights.is_file()
        cmd = export_command(self.plan, job.folder, step, self.python)
        job.commands.append(shlex.join(cmd))
        job.derain_commands.append(portable_command(cmd, job))
        job.export = _popen(cmd, job.folder / "export.log", self.env)
        job.last_step = step
        job.status = "exporting"
        # Checked in every window: derain train exports only on reaching its target.
        note = "G_B.safetensors present" if exported_before else "no G_B.safetensors yet"
        self.log(f"{job.run.name}: {how} at checkpoint step {step} ({note}); exporting on CPU")

    def tick(self) -> bool:
        """One poll; False when nothing is left to do."""
        now = _now()
        if self.stop_requested:
            self.when = Deadlines(
                self.when.t0,
                min(self.when.hard_stop, now),
                min(self.when.kill, now + self.plan.stop_grace_s),
                min(self.when.export_end, now + self.plan.stop_grace_s + MIN_EXPORT_SECONDS),
                self.when.end,
            )
        waiting = [j for j in self.jobs if j.status == "waiting"]
        busy = [j for j in self.jobs if j.status in ("training", "stopping")]
        if waiting and (self.plan.mode == "parallel" or not busy):
            for job in waiting if self.plan.mode == "parallel" else waiting[:1]:
                self.start(job)
        for job in self.jobs:
            if job.status in ("training", "stopping") and job.proc is not None:
                if job.proc.poll() is not None:
                    self.reap(job)
                    continue
                stop_at = min(job.stop_at or self.when.hard_stop, self.when.hard_stop)
                if job.status == "training" and now >= stop_at:
                    job.proc.send_signal(signal.SIGTERM)
                    job.term_sent = now
                    job.status = "stopping"
                    self.log(f"{job.run.name}: budget reached, SIGTERM (checkpoint, then exit)")
                elif job.status == "stopping" and now >= max(
                    self.when.kill, (job.term_sent or now) + self.plan.stop_grace_s
                ):
                    _kill_group(job.proc)
                    job.killed = True
            if job.status == "exporting" and job.export is not None:
                code = job.export.poll()
                if code is not None:
                    job.export_returncode = code
                    ok = code == 0 and (job.folder / "G_B.safetensors").is_file()
                    job.status = "exported" if ok else "failed"
                    self.log(f"{job.run.name}: export {'done' if ok else f'FAILED ({code})'}")
                elif now >= self.when.export_end:
                    _kill_group(job.export)
                    job.notes.append("export killed at the export deadline")
        if now - self.last_status >= STATUS_EVERY:
            self.last_status = now
            self.status_line()
        active = [
            j for j in self.jobs if j.status in ("waiting", "training", "stopping", "exporting")
        ]
        if active and now >= self.when.export_end + 5:
            for job in active:  # nothing may outlive the packing time
                for proc in (job.proc, job.export):
                    if proc is not None and proc.poll() is None:
                        _kill_group(proc)
                job.status = "failed" if job.status != "waiting" else "skipped"
                job.notes.append("killed at the export deadline")
            return False
        return bool(active)

    def status_line(self) -> None:
        parts = []
        for job in self.jobs:
            if job.status in ("training", "stopping"):
                info = metrics_summary(job.folder)
                parts.append(
                    f"{job.run.name} step {info['last_step']} ({info['images_per_s_median']} img/s)"
                )
        if parts:
            gpu = gpu_status()
            self.log("; ".join(parts) + (f"; {gpu}" if gpu else ""))

    def run(self) -> None:
        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

        def request_stop(signum: int, frame: object) -> None:
            self.stop_requested = True

        for signum in previous:
            signal.signal(signum, request_stop)
        try:
            while self.tick():
                time.sleep(POLL)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def summary(self, info: dict[str, Any], stage_manifest: dict[str, Any]) -> dict[str, Any]:
        runs = []
        for job in self.jobs:
            metrics = metrics_summary(job.folder)
            train_s = (job.ended - job.started) if job.started and job.ended else None
            runs.append(
                {
                    **asdict(job.run),
                    "status": job.status,
                    "first_step": job.first_step,
                    "last_step": job.last_step,
                    "train_returncode": job.returncode,
                    "export_returncode": job.export_returncode,
                    "train_wall_s": round(train_s, 1) if train_s else None,
                    "commands": job.commands,
                    "derain_commands": job.derain_commands,
                    "notes": job.notes,
                    **metrics,
                }
            )
        return {
            "format": 1,
            "window_id": time.strftime("%Y%m%d-%H%M%S", time.gmtime(self.when.t0)),
            "plan": {k: v for k, v in asdict(self.plan).items() if k != "runs"},
            "deadlines_s": {
                k: round(v - self.when.t0, 1) for k, v in asdict(self.when).items() if k != "t0"
            },
            "environment": info,
            "data": {
                k: stage_manifest.get(k)
                for k in ("digest", "groups", "data_bytes", "transform", "created")
            },
            "runs": runs,
        }


def prepare_work(work: Path) -> None:
    if work.exists():
        if not (work / WORK_MARKER).is_file() and any(work.iterdir()):
            raise PlanError(f"{work}: exists and is not a window work folder; choose another")
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / WORK_MARKER).write_text("gpu_window scratch folder\n", encoding="utf-8")


def pack(driver: Driver, out: Path, work: Path, info: dict[str, Any]) -> dict[str, Any]:
    plan = driver.plan
    scratch = work / "pack"
    run_dirs = [j.folder for j in driver.jobs if j.folder.is_dir()]
    items = pack_items(run_dirs, scratch)
    checkpoint: list[Path] = []
    if plan.carry_checkpoint:
        folder = work / "runs" / plan.carry_checkpoint
        if (folder / "checkpoint.pt").is_file():
            from derain_cli.train.checkpoint import checkpoint_files

            try:
                checkpoint = checkpoint_files(folder / "checkpoint.pt")
            except Exception as exc:  # the results matter more than the checkpoint
                driver.log(f"{plan.carry_checkpoint}: checkpoint not packed ({exc})")
    choice = choose_pack(items, checkpoint)
    summary = driver.summary(info, read_stage_manifest(driver.stage))
    summary["left_out"] = choice.left_out
    summary["checkpoint"] = {
        "run": plan.carry_checkpoint or None,
        "files": [p.name for p in choice.checkpoint],
        "bytes": sum(p.stat().st_size for p in choice.checkpoint),
        "step": checkpoint_step(checkpoint[0].parent) if choice.checkpoint else None,
    }
    tar = write_pack(out, choice, summary, scratch)
    if choice.checkpoint:
        dest = out / f"{CHECKPOINT_PREFIX}{plan.carry_checkpoint}"
        dest.mkdir(exist_ok=True)
        for path in choice.checkpoint:
            shutil.copyfile(path, dest / path.name)
    driver.log(f"packed {tar.name}: {mib(tar.stat().st_size)} ({len(choice.items)} files)")
    for row in choice.left_out:
        driver.log(f"left out: {row['file']} ({row['reason']})")
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    print("\n== window summary ==", flush=True)
    print(f"gpu: {summary['environment'].get('gpu')}", flush=True)
    for run in summary["runs"]:
        print(
            f"{run['name']:24} {run['status']:9} steps {run['first_step']}->{run['last_step']} "
            f"of {run['steps']}  train {run['train_wall_s']} s  "
            f"{run['images_per_s_median']} img/s  {'; '.join(run['notes'])}",
            flush=True,
        )
    ckpt = summary["checkpoint"]
    if ckpt["files"]:
        print(f"checkpoint of {ckpt['run']} (step {ckpt['step']}): {mib(ckpt['bytes'])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plan", type=Path, default=Path(__file__).with_name("plan.toml"))
    parser.add_argument("--out", type=Path, default=None, help="default: $OUT")
    parser.add_argument("--work", type=Path, default=Path("/tmp/gpu_window-work"))
    parser.add_argument("--stage", type=Path, default=STAGE_DIR)
    parser.add_argument("--t0", type=float, default=None, help="when window.sh started (epoch s)")
    parser.add_argument("--seconds", type=float, default=None, help="override [window] seconds")
    parser.add_argument("--check", action="store_true", help="validate here; train nothing")
    args = parser.parse_args(argv)
    t0 = args.t0 or _now()
    python = sys.executable
    try:
        plan = load_plan(args.plan)
        if args.seconds is not None:
            plan = validate_plan(replace(plan, seconds=args.seconds), source="--seconds")
        problems = check_stage(plan, args.stage)
        if args.check:
            problems += check_configs(plan, python)
            print("\n".join(timeline(plan)))
        if problems:
            raise PlanError("; ".join(problems))
        if args.check:
            print("plan OK")
            return 0
        out = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
        if out is None:
            raise PlanError("no --out and $OUT is not set")
        out.mkdir(parents=True, exist_ok=True)
        prepare_work(args.work)
    except PlanError as exc:
        print(f"window.py: {exc}", file=sys.stderr, flush=True)
        return 2
    driver = Driver(plan, args.work, t0, python=python, stage=args.stage)
    driver.log(f"plan {args.plan}: {len(plan.runs)} run(s), {plan.mode}, window {plan.seconds} s")
    driver.prepare()
    info: dict[str, Any] = {}
    try:
        driver.tick()  # start the runs before anything slow
        info = environment()
        driver.log(f"environment: {json.dumps(info)}")
        driver.run()
    finally:
        summary = pack(driver, out, args.work, info)
        print_summary(summary)
        problems = check_out(out)
        for problem in problems:
            driver.log(f"$OUT problem: {problem}")
    return 0 if any(r["status"] in ("finished", "exported") for r in summary["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
