"""Start a run in the right shape: one process, N spawned ranks, or ranks made by torchrun.

Errors in spawned ranks come back to the parent as one-line messages with their exit code (a
queue carries them), so ``derain train --gpus 2`` fails like ``derain train`` does.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from derain_cli import runtime
from derain_cli.config import NLCLConfig, smallest_crop
from derain_cli.data import ImageFolders, check_crop, scan_folders
from derain_cli.errors import DerainError, cli_flags, speak_cli
from derain_cli.train import distributed as dist_utils
from derain_cli.train.loop import Progress, TrainResult, train

ProgressFactory = Callable[[], Progress]


class RankFailed(DerainError):
    """A spawned rank stopped with an error (its message and exit code are kept)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class _Job:
    config: dict[str, Any]
    folders: ImageFolders
    out: str
    resume: bool
    device: str
    world: int
    init_method: str
    progress: ProgressFactory | None
    flags: dict[str, str] | None  # the CLI's flag names, so ranks word errors as the parent


def training_folders(
    config: NLCLConfig,
    data: Path | str | Sequence[Path | str],
    clean: Path | str | Sequence[Path | str] | None = None,
    *,
    on_skip: Callable[[Path, str], None] | None = None,
) -> tuple[ImageFolders, str | None]:
    """The rainy and clean images ``config`` trains on, checked before any work; and a note.

    A streak folder the config names must hold streaks; every folder must hold readable images
    (unreadable files go to ``on_skip``), at least a global batch of rainy ones; the crop must fit
    some rainy image and be no smaller than the sampler and losses need
    (:func:`~derain_cli.config.smallest_crop`). The note says how many images will be upscaled to
    the crop (None when none). What ``derain train`` checks before it starts :func:`run`.
    """
    if config.losses.synthetic_streaks:
        from derain_cli.synth.bank import StreakBank

        StreakBank(config.losses.synthetic_streaks)  # a missing or empty folder is refused
    folders = scan_folders(data, clean, min_rainy=config.train.batch_size, on_skip=on_skip)
    smallest = smallest_crop(config.sampler, config.losses)
    return folders, check_crop(folders, config.train.crop, smallest)


def run(
    config: NLCLConfig,
    folders: ImageFolders,
    out: Path,
    *,
    resume: bool,
    progress: ProgressFactory | None = None,
) -> TrainResult:
    """Train with ``config.train.gpus`` ranks (or torchrun's) and return rank 0's result."""
    device = runtime.resolve_device(config.train.device, training=True)
    if dist_utils.under_launcher():
        ctx = dist_utils.context_from_env(device)
        try:
            sink = progress() if (progress is not None and ctx.is_main) else None
            return train(config, folders, out, resume=resume, ctx=ctx, progress=sink)
        finally:
            dist_utils.destroy()
    world = config.train.gpus
    dist_utils.check_gpus(device, world)
    if world == 1:
        ctx = dist_utils.DistContext(device=device)
        if device.type == "cuda" and device.index is None:
            ctx = dist_utils.DistContext(device=torch.device("cuda", 0))
        return train(config, folders, out, resume=resume, ctx=ctx, progress=_make(progress))
    return _spawn(config, folders, out, resume=resume, device=str(device.type), progress=progress)


def _make(progress: ProgressFactory | None) -> Progress | None:
    return progress() if progress is not None else None


def _spawn(
    config: NLCLConfig,
    folders: ImageFolders,
    out: Path,
    *,
    resume: bool,
    device: str,
    progress: ProgressFactory | None,
) -> TrainResult:
    import torch.multiprocessing as mp

    world = config.train.gpus
    queue = mp.get_context("spawn").SimpleQueue()
    job = _Job(
        config=config.to_dict(),
        folders=folders,
        out=str(out),
        resume=resume,
        device=device,
        world=world,
        init_method=f"tcp://127.0.0.1:{dist_utils.free_port()}",
        progress=progress,
        flags=cli_flags(),
    )
    context = dist_utils.spawn(_worker, (job, queue), world)
    # Ctrl-C reaches every rank (same process group); they checkpoint and stop together, and
    # the parent just waits for them instead of dying first. A SIGTERM sent to the parent alone
    # (``kill PID``, a scheduler) is passed on to the ranks, which stop the same way.

    def forward_term(signum: int, frame: object) -> None:
        for process in context.processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    previous_term = signal.signal(signal.SIGTERM, forward_term)
    failure: Exception | None = None
    try:
        while True:
            try:
                if context.join(timeout=1.0):
                    break
            except Exception as exc:  # a rank died: join() stops the others
                failure = exc
                break
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)
    messages = []
    while not queue.empty():
        messages.append(queue.get())
    errors = sorted((m for m in messages if m[0] == "error"), key=lambda m: m[1])
    if errors:
        _, _rank, code, text = errors[0]
        raise RankFailed(text, code)
    if failure is not None:
        raise RankFailed(f"a training rank failed: {str(failure).strip().splitlines()[-1]}")
    results = [m[2] for m in messages if m[0] == "ok" and m[1] == 0]
    if not results:
        raise RankFailed("the training ranks finished without a result")
    return results[0]


def _worker(rank: int, job: _Job, queue: Any) -> None:
    """Entry point of a spawned rank (module level: spawn pickles it by name)."""
    config = NLCLConfig.from_dict(job.config)
    try:
        with speak_cli(job.flags):
            ctx = dist_utils.init_process_group(
                torch.device(job.device),
                rank=rank,
                world=job.world,
                local_rank=rank,
                init_method=job.init_method,
            )
            sink = job.progress() if (job.progress is not None and rank == 0) else None
            result = train(
                config, job.folders, Path(job.out), resume=job.resume, ctx=ctx, progress=sink
            )
        queue.put(("ok", rank, result))
    except DerainError as exc:
        queue.put(("error", rank, exc.exit_code, str(exc)))
        raise SystemExit(exc.exit_code) from None
    finally:
        dist_utils.destroy()
