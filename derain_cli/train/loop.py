"""The training loop: data, AMP, EMA, data-parallel ranks, logging, checkpoints, export.

One call of :func:`train` runs (or resumes) a run in ``out``; every rank calls it. Per step:
``lr`` from the schedule -> per-step seeded sampling generator -> :func:`train_step` (D then G)
-> EMA of G_B. Every ``log_every`` steps the loss terms (averaged over the interval and the
ranks) are checked for NaN/inf and appended to ``metrics.jsonl``; checkpoints, sample grids and
the loss-curve picture follow their own intervals. Only rank 0 writes files.

Honest numbers: ``images_per_s`` is measured between two log points after the values have been
copied to the host (a device sync), so it counts everything a step costs, data loading included.

Exact resume: the data order and crops are pure functions of (seed, step), and the sampler
generator is re-seeded from (seed, rank, step) every step, so a resumed run computes the same
updates as an uninterrupted one (``tests/test_train.py`` checks this on CPU).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import nn

from derain_cli import runtime
from derain_cli.atomic import atomic_write_bytes, remove_stale_temps
from derain_cli.config import NLCLConfig, TrainConfig
from derain_cli.data import ImageFolders, StepSampler, SyntheticRain, UnpairedCrops
from derain_cli.errors import DerainError, UsageError
from derain_cli.train import distributed as dist_utils
from derain_cli.train import messages
from derain_cli.train.checkpoint import (
    capture_rng,
    compact_keys,
    compact_moments,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from derain_cli.train.distributed import DistContext
from derain_cli.train.ema import ModelEMA
from derain_cli.train.export import export_weights
from derain_cli.train.memory import check_step_memory
from derain_cli.train.plots import GRID_COLUMNS, loss_curves, sample_grid, save_png
from derain_cli.train.step import StepParts, train_step

if TYPE_CHECKING:
    from derain_cli.losses.objective import NLCLObjective

#: Config keys a resumed run may change; anything else would make the checkpoint a different run.
RESUMABLE_KEYS = frozenset(
    f"train.{k}"
    for k in (
        "steps",
        "epochs",
        "log_every",
        "sample_every",
        "checkpoint_every",
        "compact_checkpoint",
        "time_limit_s",
        "num_samples",
        "num_workers",
        "cache_images",
        "device",
        "gpus",
        "compile",
        "precision",
        "channels_last",
    )
)


class TrainingDiverged(DerainError):
    """A loss became NaN/inf: the run stopped and the last good checkpoint is kept (exit 1)."""


@dataclass(frozen=True)
class RunPaths:
    """The run folder layout (see docs/training.md)."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.pt"

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    @property
    def curve(self) -> Path:
        return self.root / "loss-curve.png"

    @property
    def weights(self) -> Path:
        return self.root / "G_B.safetensors"

    @property
    def rain_weights(self) -> Path:
        """G_R beside G_B (``derain inspect-patches`` finds it by the name)."""
        return self.root / "G_R.safetensors"


@dataclass
class TrainResult:
    step: int
    total_steps: int
    interrupted: bool = False
    stop_signal: int | None = None  # SIGINT or SIGTERM when interrupted
    time_limited: bool = False  # stopped at train.time_limit_s: checkpoint saved, weights exported
    checkpoint: Path | None = None
    weights: Path | None = None
    replica_checksums: list[str] = field(default_factory=list)


class Progress(Protocol):
    """Where rank 0 reports (the CLI draws a rich live display; tests pass nothing)."""

    def start(self, step: int, total: int) -> None: ...

    def update(self, record: Mapping[str, Any]) -> None: ...

    def note(self, text: str) -> None: ...

    def close(self) -> None: ...


@dataclass
class Hooks:
    """Test hooks: ``after_step(step, objective)`` runs after every optimiser step."""

    after_step: Callable[[int, nn.Module], None] | None = None


def loader_workers(requested: int) -> int:
    """``train.num_workers`` capped at the CPUs this process may use.

    More workers than CPUs only adds contention (and torch warns about it twice per run); the
    data order does not depend on the worker count, so capping never changes the results.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    return max(0, min(requested, cpus))


def total_steps(train: TrainConfig, num_rainy: int) -> int:
    """``steps``, or ``ceil(epochs * images / batch)`` when ``epochs`` is set."""
    if train.epochs > 0:
        return max(1, math.ceil(train.epochs * num_rainy / train.batch_size))
    return train.steps


def lr_at(train: TrainConfig, step: int, total: int) -> float:
    """Learning rate for optimiser step ``step`` (0-based): warm-up, then constant or linear."""
    factor = 1.0
    if train.warmup_steps > 0 and step < train.warmup_steps:
        factor = (step + 1) / train.warmup_steps
    if train.lr_schedule == "linear":
        begin = train.lr_decay_start * total
        if step >= begin and total > begin:
            factor *= max(0.0, 1.0 - (step - begin) / (total - begin))
    return train.lr * factor


def check_resume_config(saved: NLCLConfig, requested: NLCLConfig) -> None:
    """Refuse changes that would make a resumed run a different experiment."""
    old, new = _flatten(saved.to_dict()), _flatten(requested.to_dict())
    for key in sorted(old.keys() | new.keys()):
        if key not in RESUMABLE_KEYS and old.get(key) != new.get(key):
            raise UsageError(
                f"--resume: {key} is {old.get(key)!r} in the checkpoint, {new.get(key)!r} asked; "
                "start a new run (another --out) to change it"
            )


def build_objective(config: NLCLConfig) -> NLCLObjective:
    from derain_cli.losses.objective import NLCLObjective

    return NLCLObjective(config.model, config.sampler, config.losses)


def train(
    config: NLCLConfig,
    folders: ImageFolders,
    out: Path | str,
    *,
    resume: bool = False,
    ctx: DistContext | None = None,
    progress: Progress | None = None,
    hooks: Hooks | None = None,
) -> TrainResult:
    """Train (or continue) the run in ``out``; every rank calls this with the same arguments."""
    tc = config.train
    ctx = ctx or DistContext(device=runtime.resolve_device(tc.device, training=True))
    paths = RunPaths(Path(out))
    hooks = hooks or Hooks()
    report = progress if ctx.is_main else None
    device = ctx.device
    total = total_steps(tc, len(folders.rainy))
    local_batch = tc.batch_size // ctx.world
    dtype = runtime.resolve_dtype(tc.precision, device, training=True)
    channels_last = tc.channels_last and device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    torch.manual_seed(tc.seed)
    objective = build_objective(config).to(device)
    if channels_last:
        # torch's stubs omit Module.to(memory_format=...), which it accepts at runtime.
        objective = objective.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    groups = objective.param_groups()
    g_params, d_params = list(groups["generator"]), list(groups["discriminator"])
    g_opt = torch.optim.Adam(g_params, lr=tc.lr, betas=tc.betas)
    d_opt = torch.optim.Adam(d_params, lr=tc.lr, betas=tc.betas)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    g_b = _background_generator(objective)
    check_step_memory([objective.g_b, objective.g_r, objective.d], tc.crop, local_batch, dtype,
                      device)  # fmt: skip
    ema = ModelEMA(g_b, tc.ema_decay) if tc.ema_decay > 0 else None

    data_digest = _data_digest(folders)  # the folders are fixed for the run: hash them once
    start = 0
    if resume and paths.checkpoint.is_file():
        state = load_checkpoint(paths.checkpoint)  # CPU; load_state_dict moves to device
        objective.load_state_dict(state["models"])
        g_opt.load_state_dict(state["optimizers"]["generator"])
        d_opt.load_state_dict(state["optimizers"]["discriminator"])
        if ema is not None and state.get("ema"):
            ema.load_state_dict(state["ema"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"])
        start = int(state["step"])
        if report is not None:
            report.note(f"resuming {paths.checkpoint} at step {start}")
            if state.get("data", {}).get("digest") != data_digest:
                report.note("the image folders changed since the checkpoint: the order differs")
    dist_utils.broadcast_module(objective, ctx)
    if ema is not None and start == 0:
        ema.module.load_state_dict(g_b.state_dict())

    if tc.compile:
        for module in _compiled_modules(objective):
            module.compile()

    if ctx.is_main:
        _prepare_folder(paths, config, start)
    lc = config.losses
    synthetic = (
        SyntheticRain(lc.synthetic_style, lc.synthetic_scale, lc.synthetic_rain_only)
        if lc.use_synthetic
        else None
    )
    dataset = UnpairedCrops(
        folders, crop=tc.crop, seed=tc.seed, cache=tc.cache_images, synthetic=synthetic
    )
    preview = dataset.preview(tc.num_samples) if ctx.is_main and tc.sample_every else None
    workers = loader_workers(tc.num_workers)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=local_batch,
        sampler=StepSampler(
            start=start, stop=total, global_batch=tc.batch_size, rank=ctx.rank, world=ctx.world
        ),
        num_workers=workers,
        worker_init_fn=ignore_stop_signals if workers > 0 else None,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers > 0 else None,
    )

    def autocast() -> contextlib.AbstractContextManager[Any]:
        if dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=dtype)

    parts = StepParts(
        g_params=g_params,
        d_params=d_params,
        g_opt=g_opt,
        d_opt=d_opt,
        scaler=scaler,
        autocast=autocast,
        sync=(lambda params: dist_utils.average_gradients(params, ctx)) if ctx.active else None,
        grad_clip=tc.grad_clip,
    )
    sampling_rng = torch.Generator(device=device)

    def save(step: int) -> None:
        if not ctx.is_main:
            return
        state = {
            "step": step,
            "total_steps": total,
            "config": config.to_dict(),
            "models": compact_keys(objective.state_dict())
            if tc.compact_checkpoint
            else objective.state_dict(),
            "optimizers": {
                name: compact_moments(opt.state_dict())
                if tc.compact_checkpoint
                else opt.state_dict()
                for name, opt in (("generator", g_opt), ("discriminator", d_opt))
            },
            "ema": ema.state_dict() if ema is not None else {},
            "scaler": scaler.state_dict() if scaler is not None else {},
            "rng": capture_rng(),
            "data": {
                "samples_seen": step * tc.batch_size,
                "global_batch": tc.batch_size,
                "rainy": len(folders.rainy),
                "clean": len(folders.clean),
                "digest": data_digest,
            },
            "world_size": ctx.world,
        }
        save_checkpoint(paths.checkpoint, state)
        _draw_curve(paths)

    meter = _Meter(global_batch=tc.batch_size)
    step = start
    last_saved = start if start > 0 else None
    result = TrainResult(step=start, total_steps=total)
    if report is not None:
        report.start(start, total)
        report.note(messages.run_summary(config, device, dtype, start, total))
    began = time.perf_counter()
    deadline = time.monotonic() + tc.time_limit_s if tc.time_limit_s > 0 else None
    first_s = 0.0  # the first step's time, start-up included (messages.first_step_estimate)
    with _StopOnSignal() as stop:
        for batch in loader:
            o, clean = (_to_device(x, device, channels_last) for x in batch[:2])
            rendered = _to_device(batch[2], device, channels_last) if len(batch) > 2 else None
            lr = lr_at(tc, step, total)
            for opt in (g_opt, d_opt):
                for group in opt.param_groups:
                    group["lr"] = lr
            sampling_rng.manual_seed(_step_seed(tc.seed, ctx.rank, step))
            phase = (
                objective.synthetic_only()
                if step < config.losses.synthetic_only_steps
                else contextlib.nullcontext()
            )
            try:
                with phase:
                    terms = train_step(
                        objective, o, clean, parts, generator=sampling_rng, synthetic=rendered
                    )
            except (RuntimeError, ValueError) as exc:
                # Non-finite weights make later stages fail (e.g. block matching on NaN images)
                # before any loss is seen: report that as divergence, anything else as is.
                if _all_finite(objective):
                    raise
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                _diverged(paths, step + 1, f"non-finite weights ({reason})", last_saved)
            if ema is not None:
                ema.update(g_b)
            step += 1
            meter.add(terms)
            if hooks.after_step is not None:
                hooks.after_step(step, objective)

            due_checkpoint = step % tc.checkpoint_every == 0 or step == total
            due_sample = tc.sample_every > 0 and (step % tc.sample_every == 0 or step == total)
            due_log = step % tc.log_every == 0 or due_checkpoint or due_sample
            if report is not None and step < total and step - start <= 2:
                now = time.perf_counter()
                if step == start + 1:
                    first_s, began = now - began, now
                else:
                    supervised_to = config.losses.synthetic_only_steps
                    lines = messages.first_step_estimate(
                        first_s,
                        now - began,
                        total - step,
                        device,
                        slower_from=supervised_to + 1 if step < supervised_to < total else None,
                    )
                    for line in lines:
                        if line is not None:
                            report.note(line)
            out_of_time = deadline is not None and time.monotonic() >= deadline
            wants_stop = stop.requested or out_of_time
            if not (due_log or (wants_stop and not ctx.active)):
                continue
            values, stop_all = meter.flush(ctx, wants_stop)
            record = {
                "step": step,
                "epoch": round(dataset.epoch(step * tc.batch_size), 4),
                "lr": lr,
                **values,
            }
            bad = [k for k, v in values.items() if not math.isfinite(v)]
            if bad:
                if ctx.is_main:
                    _append_jsonl(paths.metrics, {"event": "diverged", **record})
                detail = ", ".join(f"{k}={values[k]}" for k in bad[:4])
                _diverged(paths, step, detail, last_saved)
            if ctx.is_main:
                _append_jsonl(paths.metrics, record)
            if report is not None:
                report.update(record)
            if due_sample and ctx.is_main and preview is not None:
                gen = ema.module if ema is not None else g_b
                written = _write_samples(paths, step, objective, gen, preview, device, autocast)
                if report is not None:
                    report.note(messages.samples_note(step, written))
            if stop_all:
                save(step)
                if deadline is not None and not stop.requested:  # this rank's or a peer's clock
                    result.time_limited = True
                    if report is not None:
                        report.note(messages.time_limit_note(step, total, tc.time_limit_s))
                else:
                    result.interrupted = True
                    result.stop_signal = stop.received or signal.SIGINT  # a peer rank's signal
                break
            if due_checkpoint:
                save(step)
                last_saved = step
                if report is not None and step < total:
                    report.note(messages.checkpoint_note(step, paths.checkpoint))
    result.step = step
    result.checkpoint = paths.checkpoint if (ctx.is_main and step > 0) else None
    if result.interrupted:
        if report is not None:
            report.close()
        return result

    if start >= total:  # nothing left to train: re-export what the checkpoint holds
        save(step)
    exported = ema.module if (ema is not None and tc.export_ema) else g_b
    result.replica_checksums = dist_utils.gather_strings(_checksum(objective), ctx)
    if ctx.is_main:
        result.weights = export_weights(
            paths.weights, paths.rain_weights, config, exported, objective.g_r,
            step=step, world=ctx.world, ema=exported is not g_b,
        )  # fmt: skip
        _append_jsonl(
            paths.metrics,
            {"event": "end", "step": step, "replica_checksums": result.replica_checksums},
        )
        _draw_curve(paths)
    if report is not None:
        report.close()
    dist_utils.barrier(ctx)
    return result


class _Meter:
    """Sums loss terms on the device (no sync per step) and averages them at log points."""

    def __init__(self, *, global_batch: int) -> None:
        self.global_batch = global_batch
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}  # per term: the NLCL terms start mid-run
        self.count = 0
        self.since = time.perf_counter()
        self.begin = self.since

    def add(self, terms: Mapping[str, torch.Tensor]) -> None:
        for key, value in terms.items():
            self.sums[key] = self.sums[key] + value if key in self.sums else value.clone()
            self.counts[key] = self.counts.get(key, 0) + 1
        self.count += 1

    def flush(self, ctx: DistContext, stop_requested: bool) -> tuple[dict[str, float], bool]:
        """Mean of each term over the interval and the ranks; whether any rank wants to stop."""
        keys = sorted(self.sums)
        device = next(iter(self.sums.values())).device if self.sums else ctx.device
        vector = torch.stack(
            [self.sums[k] / self.counts[k] for k in keys] or [torch.zeros((), device=device)]
        )
        flag = torch.tensor([1.0 if stop_requested else 0.0], device=device)
        merged = dist_utils.mean_across_ranks(torch.cat([vector.reshape(-1), flag]), ctx)
        host = merged.cpu().tolist()  # the sync point: every queued kernel has finished here
        now = time.perf_counter()
        values = {k: float(v) for k, v in zip(keys, host[: len(keys)], strict=True)}
        values["images_per_s"] = round(
            self.count * self.global_batch / max(now - self.since, 1e-9), 3
        )
        values["seconds"] = round(now - self.begin, 3)
        self.sums, self.counts, self.count, self.since = {}, {}, 0, now
        return values, host[-1] > 0


#: Signals that make the loop checkpoint and stop at the next step boundary: Ctrl-C, and the
#: SIGTERM that job schedulers and ``timeout`` send at the end of a time-limited (GPU) window.
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)


def ignore_stop_signals(worker_id: int) -> None:
    """Data-loader workers leave SIGTERM (and SIGINT) to the training process.

    ``timeout``, Slurm and a terminal's Ctrl-C signal the whole process group. torch's workers
    ignore SIGINT but die on SIGTERM, and the main process then raises "DataLoader worker ...
    is killed by signal" in the middle of a step instead of checkpointing. Ignored here, the
    workers end when the main process closes the loader (or dies: they watch their parent).
    """
    del worker_id
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


class _StopOnSignal:
    """The first SIGINT/SIGTERM asks the loop to checkpoint and stop at the next step boundary.

    A second Ctrl-C interrupts at once (KeyboardInterrupt); repeated SIGTERMs (a launcher that
    forwards the signal to ranks which already got it from the process group) stay graceful.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.received is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.received is None:
            self.received = signum

    def __enter__(self) -> _StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


def _background_generator(objective: nn.Module) -> nn.Module:
    g_b = getattr(objective, "g_b", None)
    if not isinstance(g_b, nn.Module):
        raise TypeError("the objective must expose its background generator as .g_b")
    return g_b


def _compiled_modules(objective: nn.Module) -> Iterator[nn.Module]:
    for name in ("g_b", "g_r", "d"):
        module = getattr(objective, name, None)
        if isinstance(module, nn.Module):
            yield module


def _to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _step_seed(seed: int, rank: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1, np.uint64)[0] >> 1)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping) and prefix == "":
            flat |= _flatten(value, f"{key}.")
        else:
            flat[prefix + key] = value
    return flat


def _data_digest(folders: ImageFolders) -> str:
    digest = hashlib.sha256()
    for group, root in ((folders.rainy, folders.rainy_dir), (folders.clean, folders.clean_dir)):
        for path in group:
            digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(b"\1")
    return digest.hexdigest()


def _checksum(objective: nn.Module) -> str:
    """sha256 of every parameter and buffer (proves that data-parallel replicas agree)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(objective.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _prepare_folder(paths: RunPaths, config: NLCLConfig, start: int) -> None:
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.samples.mkdir(exist_ok=True)
    remove_stale_temps(paths.root)
    atomic_write_bytes(paths.config, config.dumps_toml().encode("utf-8"))
    # A resumed run continues the log at the checkpoint's step: rows a killed process wrote
    # after its last checkpoint are dropped, so every step appears once.
    kept: list[str] = []
    if start > 0 and paths.metrics.is_file():
        for line in paths.metrics.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                row = json.loads(line)
                if int(row.get("step", 0)) <= start and "event" not in row:
                    kept.append(line)
    kept.append(json.dumps({"event": "resume" if start else "start", "step": start}))
    paths.metrics.write_text("\n".join(kept) + "\n", encoding="utf-8")


def _append_jsonl(path: Path, row: Mapping[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row, allow_nan=True) + "\n")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The numeric rows of a ``metrics.jsonl`` (events skipped)."""
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                row = json.loads(line)
                if "event" not in row:
                    rows.append(row)
    return rows


def _draw_curve(paths: RunPaths) -> None:
    rows = read_metrics(paths.metrics)
    if not rows:
        return
    keys = [k for k in rows[-1] if k.startswith(("d_", "g_"))] + ["lr", "images_per_s"]
    save_png(paths.curve, loss_curves(rows, keys))


@torch.no_grad()
def _write_samples(
    paths: RunPaths,
    step: int,
    objective: NLCLObjective,
    g_b: nn.Module,
    preview: tuple[torch.Tensor, torch.Tensor],
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]],
) -> Path:
    rainy, clean = (t.to(device) for t in preview)
    with autocast():
        _, r = objective.forward_generators(rainy)
        b = g_b(rainy)
    grid = sample_grid([rainy, b.float(), r.float(), clean], labels=GRID_COLUMNS)
    path = paths.samples / f"step-{step:07d}.png"
    save_png(path, grid)
    return path


def _diverged(paths: RunPaths, step: int, detail: str, last_saved: int | None) -> None:
    kept = (
        f"the last good checkpoint {paths.checkpoint} (step {last_saved}) is kept; "
        "resume from it with --resume (e.g. with a lower lr)"
        if last_saved is not None
        else "no checkpoint was written before it"
    )
    raise TrainingDiverged(f"training diverged by step {step}: {detail}; stopped. {kept}")


def _all_finite(module: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in module.parameters())
