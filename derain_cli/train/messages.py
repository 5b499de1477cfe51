"""What a training run tells its user: the opening summary, the time warning, file notes.

Kept apart from the loop so the wording lives in one place; every function returns text and
prints nothing (the loop hands it to its :class:`~derain_cli.train.loop.Progress`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from derain_cli.config import NLCLConfig
from derain_cli.errors import setting

#: A run expected to take longer than this gets a warning after its first step.
LONG_RUN_S = 24 * 3600.0


def run_summary(
    config: NLCLConfig, device: torch.device, dtype: torch.dtype, start: int, total: int
) -> str:
    """One line: device, precision, batch, crop, steps left, and the phases of the schedule."""
    tc, lc = config.train, config.losses
    precision = str(dtype).removeprefix("torch.")
    text = (
        f"training on {device} ({precision}), batch {tc.batch_size} x {tc.crop} px, "
        f"steps {start + 1}-{total}"
    )
    if lc.use_synthetic and lc.synthetic_only_steps > start:
        switch = min(lc.synthetic_only_steps, total)
        text += (
            f"; synthetic supervision alone to step {switch} (faster steps), then every NLCL term"
            if switch < total
            else "; synthetic supervision alone"
        )
    return text + f"; checkpoint every {tc.checkpoint_every} steps"


def init_note(origin: Mapping[str, str]) -> str:
    """Where G_B (and G_R) start from, with the sha256 of the weights loaded."""
    spec, source = origin["spec"], origin["source"]
    named = spec if source == spec else f"{spec} ({source})"
    text = f"G_B starts from {named}, sha256 {origin['sha256'][:12]}"
    if "rain_source" in origin:
        text += f"; G_R from {origin['rain_source']}, sha256 {origin['rain_sha256'][:12]}"
    else:
        text += "; G_R starts fresh (the weights have no rain partner)"
    return text + "; the discriminator and the heads start fresh"


def format_duration(seconds: float) -> str:
    """``3 h 20 min``, ``2.5 days``, ``40 s``: for estimates, not for logs."""
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    if seconds >= 60:
        return f"{int(seconds // 60)} min"
    return f"{int(seconds)} s"


def first_step_estimate(
    first_s: float,
    second_s: float,
    steps_left: int,
    device: torch.device,
    *,
    slower_from: int | None = None,
    time_left_s: float | None = None,
) -> tuple[str, str | None]:
    """After the second step: the estimate line, and a warning when it runs past a day.

    The first step pays for start-up (loader workers, the first batches, allocator warm-up), so
    the estimate uses the second. ``slower_from``: the first step of a slower phase still to come
    (the NLCL terms after a supervised-only phase); the estimate then says it is a lower bound.
    ``time_left_s``: the time limit's seconds left (``train.time_limit_s``), when one is set; a
    run it will stop sooner says so.
    """
    estimate = second_s * steps_left
    line = (
        f"first step took {first_s:.1f} s on {device} (start-up included), the next "
        f"{second_s:.2f} s; {steps_left} more steps: about {format_duration(estimate)}"
    )
    if slower_from is not None:
        line += f" or more (the steps from {slower_from} on, with every NLCL term, are slower)"
    if time_left_s is not None and estimate > time_left_s:
        line += (
            f"; the time limit stops it sooner, in about {format_duration(time_left_s)} "
            f"(about {int(time_left_s / max(second_s, 1e-9))} more steps)"
        )
        estimate = time_left_s
    if estimate <= LONG_RUN_S:
        return line, None
    warning = (
        f"warning: at this speed the run takes about {format_duration(estimate)} on {device}; "
        f"lower {setting('train.steps')}, {setting('train.crop')} or "
        f"{setting('train.batch_size')}, or train on a GPU (Ctrl-C stops with a checkpoint; "
        f"{setting('resume', True)} continues)"
    )
    return line, warning


def time_limit_note(step: int, total: int, limit_s: float) -> str:
    return (
        f"step {step} of {total}: the time limit ({format_duration(limit_s)}) is reached; "
        "checkpoint saved, weights exported"
    )


def checkpoint_note(step: int, path: Path) -> str:
    return f"step {step}: checkpoint written to {path}"


def samples_note(step: int, path: Path) -> str:
    return f"step {step}: sample grid written to {path}"
