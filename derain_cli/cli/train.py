"""`derain train DATA`: train NLCL on unpaired rainy/clean folders (see docs/training.md).

Config precedence: defaults < the ``--init`` weights' architecture < ``--config FILE`` <
``--set KEY=VALUE`` < the explicit options (``--steps``, ``--batch-size``...). On ``--resume`` the
checkpoint's config is the base, and only run-length and runtime settings may change.
"""

from __future__ import annotations

import shlex
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from derain_cli.cli.common import err_console, fail, user_errors
from derain_cli.cli.options import (
    ConfigFileOption,
    DebugOption,
    SetOption,
    clean_option,
    init_option,
    time_limit_option,
    time_limit_seconds,
)
from derain_cli.config import TrainConfig

#: Shown in --help; the values themselves live in the config (one place for every default).
_DEFAULTS = TrainConfig()


def command(
    ctx: typer.Context,
    data: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Folders of rainy images (or folders holding rainy/ and clean/), used together.",
            show_default=False,
        ),
    ] = None,
    clean: Annotated[
        list[Path] | None,
        clean_option("Unpaired clean photos; repeat for several folders (default: DATA/clean/)."),
    ] = None,
    streaks: Annotated[
        Path | None,
        typer.Option(
            "--streaks",
            help="A folder of rain-streak images on black for synthetic supervision's 'bank' "
            "style (losses.synthetic_streaks).",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Run folder (default: runs/nlcl-YYYYmmdd-HHMMSS).", show_default=False
        ),
    ] = None,
    gpus: Annotated[
        int | None,
        typer.Option("--gpus", help=f"Data-parallel ranks (processes). Default: {_DEFAULTS.gpus}."),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option("--device", help=f"auto, cpu, cuda or cuda:N. Default: {_DEFAULTS.device}."),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option("--steps", help=f"Optimiser steps to reach. Default: {_DEFAULTS.steps}."),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option("--epochs", help="Passes over the rainy images.")
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            help=f"Global batch (split over ranks). Default: {_DEFAULTS.batch_size}.",
        ),
    ] = None,
    crop: Annotated[
        int | None,
        typer.Option("--crop", help=f"Random crop side in pixels. Default: {_DEFAULTS.crop}."),
    ] = None,
    init: Annotated[
        str | None,
        init_option(
            "Start G_B (and G_R, where the weights have a rain partner) from these weights: "
            "a registered name (default), a .safetensors/.pth file or hf://...; the discriminator "
            "and heads start fresh. The architecture is taken from them (train.init).",
            show_default=False,
        ),
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out.")] = False,
    time_limit: Annotated[
        str | None,
        time_limit_option(
            "Stop after this much wall time (2h, 90m, 1h30m, seconds), save a checkpoint and "
            "export the weights; continue with --resume. For Slurm and cloud time limits."
        ),
    ] = None,
    config_file: ConfigFileOption = None,
    overrides: SetOption = None,
    print_config: Annotated[
        bool, typer.Option("--print-config", help="Print the resolved config as TOML and exit.")
    ] = False,
    debug: DebugOption = False,
) -> None:
    """Train NLCL and export G_B.safetensors into the run folder."""
    if ctx.args:
        raise fail(f"unknown option or extra argument: {ctx.args[0]}")
    if steps is not None and epochs is not None:
        raise fail("--steps and --epochs are exclusive")
    with user_errors(debug):
        limit_s = time_limit_seconds(time_limit)
        _run(
            data=data,
            clean=clean,
            out=out,
            resume=resume,
            config_file=config_file,
            print_config=print_config,
            overrides=overrides or [],
            flags={
                "train.gpus": gpus,
                "train.device": device,
                "train.steps": steps,
                "train.epochs": 0 if steps is not None else epochs,
                "train.batch_size": batch_size,
                "train.crop": crop,
                "train.time_limit_s": limit_s,
                "train.init": init,
                "losses.synthetic_streaks": str(streaks) if streaks is not None else None,
            },
        )


def _run(
    *,
    data: list[Path] | None,
    clean: list[Path] | None,
    out: Path | None,
    resume: bool,
    config_file: Path | None,
    print_config: bool,
    overrides: list[str],
    flags: Mapping[str, Any],
) -> None:
    from derain_cli.errors import UsageError
    from derain_cli.toml_text import parse_override
    from derain_cli.train.run_config import resolve_config

    changes = dict(parse_override(text) for text in overrides)
    changes |= {k: v for k, v in flags.items() if v is not None}
    if out is None and resume:
        raise UsageError("--resume needs --out RUN_DIR (the run to continue)")
    requested = resolve_config(
        out=out, resume=resume, config_file=config_file, changes=changes, note=_note
    )
    if print_config:
        sys.stdout.write(requested.dumps_toml())
        return
    if not data:
        raise UsageError("missing DATA (a folder of rainy images); see derain train --help")
    if out is None:
        out = Path("runs") / time.strftime("nlcl-%Y%m%d-%H%M%S")

    from derain_cli.train.launch import run, training_folders
    from derain_cli.train.progress import RichProgress

    def warn(path: Path, reason: str) -> None:
        err_console.print(f"derain train: warning: {path}: skipped ({reason})", markup=False)

    folders, upscaled = training_folders(requested, data, clean, on_skip=warn)
    err_console.print(
        f"derain train: {len(folders.rainy)} rainy images in {_names(folders.rainy_dirs)}, "
        f"{len(folders.clean)} clean in {_names(folders.clean_dirs)}; run folder {out}",
        markup=False,
    )
    if upscaled is not None:
        err_console.print(f"derain train: note: {upscaled}", markup=False)
    result = run(requested, folders, out, resume=resume, progress=RichProgress)
    again = " ".join(
        shlex.quote(str(part))
        for part in (
            "derain",
            "train",
            *data,
            *(arg for folder in clean or () for arg in ("--clean", folder)),
            "--out",
            out,
        )
    )
    if result.interrupted:
        err_console.print(
            f"derain train: interrupted at step {result.step}; checkpoint saved in {out}. "
            f"Continue with: {again} --resume",
            markup=False,
        )
        raise typer.Exit(128 + int(result.stop_signal or signal.SIGINT))
    if result.time_limited:
        err_console.print(
            f"derain train: time limit reached at step {result.step}/{result.total_steps}; "
            f"checkpoint saved, weights so far: {result.weights}. Continue with: {again} --resume",
            markup=False,
        )
        return
    err_console.print(
        f"derain train: done at step {result.step}/{result.total_steps}; weights: {result.weights}",
        markup=False,
    )


def _note(text: str) -> None:
    err_console.print(f"derain train: {text}", markup=False)


def _names(folders: tuple[Path, ...]) -> str:
    return ", ".join(str(folder) for folder in folders)
