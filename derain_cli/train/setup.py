"""Everything a training run builds before its first step, and the checkpoint it writes.

:func:`build_run` puts the networks, optimisers, grad scaler and EMA on the device (seeded,
so two ranks build the same run), :func:`load_run_checkpoint` loads a checkpoint into them,
:func:`make_data` builds this rank's data loader from the resumed step on, and
:func:`save_run_checkpoint` writes the checkpoint that :func:`load_run_checkpoint` reads.
:func:`check_resume_config` refuses a resume that would be another experiment. The steps
themselves are in :mod:`derain_cli.train.loop`.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from derain_cli import runtime
from derain_cli.config import NLCLConfig, TrainConfig
from derain_cli.data import (
    CleanAugment,
    ImageFolders,
    StepSampler,
    SyntheticRain,
    UnpairedCrops,
)
from derain_cli.errors import UsageError, setting
from derain_cli.train import distributed as dist_utils
from derain_cli.train.checkpoint import (
    capture_rng,
    compact_keys,
    compact_moments,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from derain_cli.train.control import ignore_stop_signals
from derain_cli.train.distributed import DistContext
from derain_cli.train.ema import ModelEMA
from derain_cli.train.memory import check_step_memory
from derain_cli.train.run_folder import RunPaths, draw_curve
from derain_cli.train.step import StepParts

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


class Progress(Protocol):
    """Where rank 0 reports (the CLI draws a rich live display; tests pass nothing)."""

    def start(self, step: int, total: int) -> None: ...

    def update(self, record: Mapping[str, Any]) -> None: ...

    def note(self, text: str) -> None: ...

    def close(self) -> None: ...


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


def check_resume_config(saved: NLCLConfig, requested: NLCLConfig) -> None:
    """Refuse changes that would make a resumed run a different experiment."""
    old, new = flatten(saved.to_dict()), flatten(requested.to_dict())
    for key in sorted(old.keys() | new.keys()):
        if key not in RESUMABLE_KEYS and old.get(key) != new.get(key):
            raise UsageError(
                f"{setting('resume')}: {key} is {old.get(key)!r} in the checkpoint, "
                f"{new.get(key)!r} asked; start a new run (another {setting('out')}) to change it"
            )


def build_objective(config: NLCLConfig) -> NLCLObjective:
    """The networks and loss terms of ``config``; a config they cannot be built from (a layer
    index the generator or discriminator lacks) is a :class:`UsageError`."""
    from derain_cli.losses.objective import NLCLObjective

    try:
        return NLCLObjective(config.model, config.sampler, config.losses)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


@dataclass
class Run:
    """What one call of :func:`train` builds before its first step; the steps below share it."""

    config: NLCLConfig
    paths: RunPaths
    ctx: DistContext
    report: Progress | None
    dtype: torch.dtype
    channels_last: bool
    total: int
    objective: NLCLObjective
    g_b: nn.Module
    parts: StepParts
    ema: ModelEMA | None
    data_digest: str
    rainy: int
    clean: int
    start: int = 0
    #: What G_B and G_R started from (``init_weights.origin``; empty: random weights), kept in
    #: the checkpoint so that a resumed run records it without reading ``train.init`` again.
    origin: dict[str, str] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.ctx.device

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)


def build_run(
    config: NLCLConfig,
    folders: ImageFolders,
    paths: RunPaths,
    ctx: DistContext,
    report: Progress | None,
) -> Run:
    """Networks, optimisers, grad scaler and EMA on the device, seeded; the memory check."""
    tc = config.train
    device = ctx.device
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
    g_b = background_generator(objective)
    local_batch = tc.batch_size // ctx.world
    check_step_memory([objective.g_b, objective.g_r, objective.d], tc.crop, local_batch, dtype,
                      device)  # fmt: skip
    ema = ModelEMA(g_b, tc.ema_decay) if tc.ema_decay > 0 else None
    parts = StepParts(
        g_params=g_params,
        d_params=d_params,
        g_opt=g_opt,
        d_opt=d_opt,
        scaler=scaler,
        autocast=contextlib.nullcontext,  # replaced below, once the run exists
        sync=(lambda params: dist_utils.average_gradients(params, ctx)) if ctx.active else None,
        grad_clip=tc.grad_clip,
    )
    run = Run(
        config, paths, ctx, report, dtype, channels_last, total_steps(tc, len(folders.rainy)),
        objective, g_b, parts, ema, data_digest(folders), len(folders.rainy), len(folders.clean),
    )  # fmt: skip
    parts.autocast = run.autocast
    return run


def load_run_checkpoint(run: Run) -> None:
    """Load the checkpoint of ``run.paths`` into the networks, optimisers, EMA, scaler and RNGs."""
    parts = run.parts
    state = load_checkpoint(run.paths.checkpoint)  # CPU; load_state_dict moves to device
    run.objective.load_state_dict(state["models"])
    parts.g_opt.load_state_dict(state["optimizers"]["generator"])
    parts.d_opt.load_state_dict(state["optimizers"]["discriminator"])
    if run.ema is not None and state.get("ema"):
        run.ema.load_state_dict(state["ema"])
    if parts.scaler is not None and state.get("scaler"):
        parts.scaler.load_state_dict(state["scaler"])
    restore_rng(state["rng"])
    run.start = int(state["step"])
    run.origin = {str(k): str(v) for k, v in (state.get("init") or {}).items()}
    if run.report is not None:
        run.report.note(f"resuming {run.paths.checkpoint} at step {run.start}")
        if state.get("data", {}).get("digest") != run.data_digest:
            run.report.note("the image folders changed since the checkpoint: the order differs")


def align_replicas(run: Run) -> None:
    """Every rank starts from rank 0's weights; a new EMA starts at G_B (the ``--init`` weights
    when the run has them); optional compile."""
    dist_utils.broadcast_module(run.objective, run.ctx)
    if run.ema is not None and run.start == 0:
        run.ema.module.load_state_dict(run.g_b.state_dict())
    if run.config.train.compile:
        for module in compiled_modules(run.objective):
            module.compile()


Preview = tuple[torch.Tensor, torch.Tensor]  # fixed rainy and clean crops for the sample grids


def make_data(
    run: Run, folders: ImageFolders
) -> tuple[UnpairedCrops, torch.utils.data.DataLoader[Any], Preview | None]:
    """The crops, this rank's loader from ``run.start`` on, and the fixed preview crops."""
    tc, lc, ctx = run.config.train, run.config.losses, run.ctx
    synthetic = (
        SyntheticRain(
            lc.synthetic_style,
            lc.synthetic_scale,
            lc.synthetic_rain_only,
            lc.synthetic_streaks,
            lc.synthetic_clean_fraction,
        )
        if lc.use_synthetic
        else None
    )
    dataset = UnpairedCrops(
        folders,
        crop=tc.crop,
        seed=tc.seed,
        cache=tc.cache_images,
        synthetic=synthetic,
        augment=CleanAugment(tc.clean_zoom_max, tc.clean_flip),
    )
    preview = dataset.preview(tc.num_samples) if ctx.is_main and tc.sample_every else None
    workers = loader_workers(tc.num_workers)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=tc.batch_size // ctx.world,
        sampler=StepSampler(
            start=run.start,
            stop=run.total,
            global_batch=tc.batch_size,
            rank=ctx.rank,
            world=ctx.world,
        ),  # fmt: skip
        num_workers=workers,
        worker_init_fn=ignore_stop_signals if workers > 0 else None,
        pin_memory=run.device.type == "cuda",
        prefetch_factor=4 if workers > 0 else None,
    )
    return dataset, loader, preview


def save_run_checkpoint(run: Run, step: int) -> None:
    """Rank 0 writes the checkpoint of ``step`` and redraws the loss curve."""
    if not run.ctx.is_main:
        return
    tc, parts = run.config.train, run.parts
    compact = tc.compact_checkpoint
    models = run.objective.state_dict()
    optimizers = (("generator", parts.g_opt), ("discriminator", parts.d_opt))
    state = {
        "step": step,
        "total_steps": run.total,
        "config": run.config.to_dict(),
        "models": compact_keys(models) if compact else models,
        "optimizers": {
            name: compact_moments(opt.state_dict()) if compact else opt.state_dict()
            for name, opt in optimizers
        },
        "ema": run.ema.state_dict() if run.ema is not None else {},
        "scaler": parts.scaler.state_dict() if parts.scaler is not None else {},
        "rng": capture_rng(),
        "data": {
            "samples_seen": step * tc.batch_size,
            "global_batch": tc.batch_size,
            "rainy": run.rainy,
            "clean": run.clean,
            "digest": run.data_digest,
        },
        "world_size": run.ctx.world,
        "init": dict(run.origin),
    }
    save_checkpoint(run.paths.checkpoint, state)
    draw_curve(run.paths)


def background_generator(objective: nn.Module) -> nn.Module:
    g_b = getattr(objective, "g_b", None)
    if not isinstance(g_b, nn.Module):
        raise TypeError("the objective must expose its background generator as .g_b")
    return g_b


def compiled_modules(objective: nn.Module) -> Iterator[nn.Module]:
    for name in ("g_b", "g_r", "d"):
        module = getattr(objective, name, None)
        if isinstance(module, nn.Module):
            yield module


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping) and prefix == "":
            flat |= flatten(value, f"{key}.")
        else:
            flat[prefix + key] = value
    return flat


def data_digest(folders: ImageFolders) -> str:
    """Names of the training images, each relative to its folder (and numbered by folder when
    there are several): a resumed run must see the same files in the same order."""
    digest = hashlib.sha256()
    for group, dirs in ((folders.rainy, folders.rainy_dirs), (folders.clean, folders.clean_dirs)):
        for path in group:
            index, root = next((i, d) for i, d in enumerate(dirs) if path.is_relative_to(d))
            name = str(path.relative_to(root))
            digest.update((f"{index}/{name}" if len(dirs) > 1 else name).encode() + b"\0")
        digest.update(b"\1")
    return digest.hexdigest()
