"""The training loop: data, AMP, EMA, data-parallel ranks, logging, checkpoints, export.

One call of :func:`train` runs (or resumes) a run in ``out``; every rank calls it. It reads top
to bottom: ``load_init`` (``train.init``, a new run only; :mod:`derain_cli.train.init_weights`),
:func:`~derain_cli.train.setup.build_run`, ``load_run_checkpoint`` (on ``--resume``) or
``start_from`` (the ``--init`` weights),
``align_replicas``, ``prepare_folder``, ``make_data`` (all in :mod:`derain_cli.train.setup` and
:mod:`derain_cli.train.run_folder`), then :func:`_run_steps` and :func:`_finish` here. Per step:
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
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from derain_cli import runtime
from derain_cli.config import NLCLConfig, TrainConfig
from derain_cli.data import ImageFolders, UnpairedCrops
from derain_cli.errors import DerainError, setting
from derain_cli.train import distributed as dist_utils
from derain_cli.train import messages
from derain_cli.train.control import Meter, StopOnSignal
from derain_cli.train.distributed import DistContext
from derain_cli.train.export import export_weights
from derain_cli.train.init_weights import check_init, load_init, origin, start_from
from derain_cli.train.run_folder import (
    RunPaths,
    append_metrics,
    draw_curve,
    prepare_folder,
    write_samples,
)
from derain_cli.train.setup import (
    Progress,
    Run,
    align_replicas,
    build_run,
    load_run_checkpoint,
    make_data,
    save_run_checkpoint,
)
from derain_cli.train.step import train_step


class TrainingDiverged(DerainError):
    """A loss became NaN/inf: the run stopped and the last good checkpoint is kept (exit 1)."""


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


def train(
    config: NLCLConfig,
    folders: ImageFolders,
    out: Path | str,
    *,
    resume: bool = False,
    ctx: DistContext | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Train (or continue) the run in ``out``; every rank calls this with the same arguments."""
    ctx = ctx or DistContext(device=runtime.resolve_device(config.train.device, training=True))
    paths = RunPaths(Path(out))
    resuming = resume and paths.checkpoint.is_file()
    init = None
    if config.train.init and not resuming:  # a resumed run has them in its checkpoint
        init = load_init(config.train.init)
        check_init(config, init)
    run = build_run(config, folders, paths, ctx, progress if ctx.is_main else None)
    if resuming:
        load_run_checkpoint(run)
    elif init is not None:
        start_from(run.objective, init)
        run.origin = origin(init)
    align_replicas(run)
    if ctx.is_main:
        prepare_folder(run.paths, config, run.start, run.origin)
    dataset, loader, preview = make_data(run, folders)
    result = _run_steps(run, dataset, loader, preview)
    if result.interrupted:
        if run.report is not None:
            run.report.close()
        return result
    return _finish(run, result)


def _run_steps(
    run: Run,
    dataset: UnpairedCrops,
    loader: torch.utils.data.DataLoader[Any],
    preview: tuple[torch.Tensor, torch.Tensor] | None,
) -> TrainResult:
    """The optimiser steps from ``run.start`` to the end, a signal or the time limit."""
    tc, ctx, report, total = run.config.train, run.ctx, run.report, run.total
    sampling_rng = torch.Generator(device=run.device)
    meter = Meter(global_batch=tc.batch_size)
    step = run.start
    last_saved = run.start if run.start > 0 else None
    result = TrainResult(step=run.start, total_steps=total)
    if report is not None:
        report.start(run.start, total)
        report.note(messages.run_summary(run.config, run.device, run.dtype, run.start, total))
        if run.origin and run.start == 0:
            report.note(messages.init_note(run.origin))
    deadline = time.monotonic() + tc.time_limit_s if tc.time_limit_s > 0 else None
    clock = _FirstSteps(run, deadline)
    with StopOnSignal() as stop:
        for batch in loader:
            lr = lr_at(tc, step, total)
            terms = _one_step(run, batch, step, lr, sampling_rng, last_saved)
            step += 1
            meter.add(terms)
            clock.tick(step)
            due_checkpoint = step % tc.checkpoint_every == 0 or step == total
            due_sample = tc.sample_every > 0 and (step % tc.sample_every == 0 or step == total)
            due_log = step % tc.log_every == 0 or due_checkpoint or due_sample
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
            _log(run, record, last_saved)
            if due_sample and ctx.is_main and preview is not None:
                gen = run.ema.module if run.ema is not None else run.g_b
                written = write_samples(
                    run.paths, step, run.objective, gen, preview, run.device, run.autocast
                )
                if report is not None:
                    report.note(messages.samples_note(step, written))
            if stop_all:
                save_run_checkpoint(run, step)
                if deadline is not None and not stop.requested:  # this rank's or a peer's clock
                    result.time_limited = True
                    if report is not None:
                        report.note(messages.time_limit_note(step, total, tc.time_limit_s))
                else:
                    result.interrupted = True
                    result.stop_signal = stop.received or signal.SIGINT  # a peer rank's signal
                break
            if due_checkpoint:
                save_run_checkpoint(run, step)
                last_saved = step
                if report is not None and step < total:
                    report.note(messages.checkpoint_note(step, run.paths.checkpoint))
    result.step = step
    result.checkpoint = run.paths.checkpoint if (ctx.is_main and step > 0) else None
    return result


def _one_step(
    run: Run,
    batch: list[torch.Tensor],
    step: int,
    lr: float,
    sampling_rng: torch.Generator,
    last_saved: int | None,
) -> dict[str, torch.Tensor]:
    """One D-then-G update at ``lr`` with the sampler seeded for (seed, rank, step), then EMA."""
    tc, parts = run.config.train, run.parts
    o, clean = (_to_device(x, run.device, run.channels_last) for x in batch[:2])
    rendered = _to_device(batch[2], run.device, run.channels_last) if len(batch) > 2 else None
    for opt in (parts.g_opt, parts.d_opt):
        for group in opt.param_groups:
            group["lr"] = lr
    sampling_rng.manual_seed(_step_seed(tc.seed, run.ctx.rank, step))
    phase = (
        run.objective.synthetic_only()
        if step < run.config.losses.synthetic_only_steps
        else contextlib.nullcontext()
    )
    try:
        with phase:
            terms = train_step(
                run.objective, o, clean, parts, generator=sampling_rng, synthetic=rendered
            )
    except (RuntimeError, ValueError) as exc:
        # Non-finite weights make later stages fail (e.g. block matching on NaN images) before
        # any loss is seen: report that as divergence, anything else as is.
        if _all_finite(run.objective):
            raise
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        _diverged(run.paths, step + 1, f"non-finite weights ({reason})", last_saved)
    if run.ema is not None:
        run.ema.update(run.g_b)
    return terms


def _log(run: Run, record: dict[str, Any], last_saved: int | None) -> None:
    """Append a log row (rank 0) and show it; a non-finite term stops the run as diverged."""
    bad = [k for k, v in record.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        if run.ctx.is_main:
            append_metrics(run.paths.metrics, {"event": "diverged", **record})
        detail = ", ".join(f"{k}={record[k]}" for k in bad[:4])
        _diverged(run.paths, int(record["step"]), detail, last_saved)
    if run.ctx.is_main:
        append_metrics(run.paths.metrics, record)
    if run.report is not None:
        run.report.update(record)


class _FirstSteps:
    """Times the first two steps and tells rank 0's report how long the run will take."""

    def __init__(self, run: Run, deadline: float | None) -> None:
        self.run = run
        self.deadline = deadline  # time.monotonic() of the time limit, if any
        self.began = time.perf_counter()
        self.first_s = 0.0  # the first step's time, start-up included

    def tick(self, step: int) -> None:
        run, start, total = self.run, self.run.start, self.run.total
        if run.report is None or step >= total or step - start > 2:
            return
        now = time.perf_counter()
        if step == start + 1:
            self.first_s, self.began = now - self.began, now
            return
        supervised_to = run.config.losses.synthetic_only_steps
        lines = messages.first_step_estimate(
            self.first_s,
            now - self.began,
            total - step,
            run.device,
            slower_from=supervised_to + 1 if step < supervised_to < total else None,
            time_left_s=max(0.0, self.deadline - time.monotonic()) if self.deadline else None,
        )
        for line in lines:
            if line is not None:
                run.report.note(line)


def _finish(run: Run, result: TrainResult) -> TrainResult:
    """Export G_B (its EMA by default) and G_R, log the end, and wait for every rank."""
    step = result.step
    if run.start >= run.total:  # nothing left to train: re-export what the checkpoint holds
        save_run_checkpoint(run, step)
    use_ema = run.ema is not None and run.config.train.export_ema
    exported = run.ema.module if (run.ema is not None and use_ema) else run.g_b
    result.replica_checksums = dist_utils.gather_strings(_checksum(run.objective), run.ctx)
    if run.ctx.is_main:
        result.weights = export_weights(
            run.paths.weights, run.paths.rain_weights, run.config, exported, run.objective.g_r,
            step=step, world=run.ctx.world, ema=exported is not run.g_b, origin=run.origin,
        )  # fmt: skip
        append_metrics(
            run.paths.metrics,
            {"event": "end", "step": step, "replica_checksums": result.replica_checksums},
        )
        draw_curve(run.paths)
    if run.report is not None:
        run.report.close()
    dist_utils.barrier(run.ctx)
    return result


def _to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _step_seed(seed: int, rank: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1, np.uint64)[0] >> 1)


def _checksum(objective: nn.Module) -> str:
    """sha256 of every parameter and buffer (proves that data-parallel replicas agree)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(objective.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _diverged(paths: RunPaths, step: int, detail: str, last_saved: int | None) -> None:
    kept = (
        f"the last good checkpoint {paths.checkpoint} (step {last_saved}) is kept; "
        f"resume from it with {setting('resume', True)} (e.g. with a lower lr)"
        if last_saved is not None
        else "no checkpoint was written before it"
    )
    raise TrainingDiverged(f"training diverged by step {step}: {detail}; stopped. {kept}")


def _all_finite(module: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in module.parameters())
