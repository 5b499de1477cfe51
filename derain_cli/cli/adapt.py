"""`derain adapt RAINY_DIR -o WEIGHTS.safetensors`: the default adapted to your rain, no labels.

Thin: parses, calls :func:`derain_cli.train.adapt.adapt`, prints. The recipe is
``derain_cli/presets/adapt.toml`` (docs/training.md, "Adapting the default to your rain").
"""

from __future__ import annotations

import functools
import shlex
import signal
from pathlib import Path
from typing import Annotated

import typer

from derain_cli.cli.common import ADAPT_FLAGS, err_console, user_errors
from derain_cli.cli.options import (
    ConfigFileOption,
    DebugOption,
    SetOption,
    clean_option,
    init_option,
    overwrite_option,
    time_limit_option,
    time_limit_seconds,
)


def command(
    rainy: Annotated[
        Path,
        typer.Argument(
            metavar="RAINY_DIR",
            help="A folder of rainy photos from one shoot (searched recursively).",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "-o",
            "--output",
            metavar="WEIGHTS.safetensors",
            help="Where to write the adapted G_B (for derain --weights).",
            show_default=False,
        ),
    ],
    time_limit: Annotated[
        str | None,
        time_limit_option(
            "Time budget (10m, 1h, seconds); the steps scale with it. Default: the recipe's, "
            "10 min."
        ),
    ] = None,
    clean: Annotated[
        list[Path] | None,
        clean_option(
            "Unpaired clean photos (repeatable). Default: RAINY_DIR/clean, else the rainy "
            "photos' least-rainy crops."
        ),
    ] = None,
    init: Annotated[
        str,
        init_option(
            "The weights to adapt: a registered name, a .safetensors/.pth file or hf://..."
        ),
    ] = "default",
    run_dir: Annotated[
        Path | None,
        typer.Option(
            "--run-dir",
            metavar="DIR",
            help="Keep the run (checkpoint, metrics, sample grids, chosen crops) here. Default: "
            "a temporary folder, removed at the end.",
            show_default=False,
        ),
    ] = None,
    overwrite: Annotated[bool, overwrite_option("Replace an existing output.")] = False,
    config_file: ConfigFileOption = None,
    overrides: SetOption = None,
    debug: DebugOption = False,
) -> None:
    """Adapt the default model to a folder of your own rainy photos, without clean versions."""
    with user_errors(debug, ADAPT_FLAGS):
        from derain_cli.toml_text import parse_override
        from derain_cli.train.adapt import adapt
        from derain_cli.train.progress import RichProgress

        limit_s = time_limit_seconds(time_limit)
        result = adapt(
            rainy, output, init=init, clean=clean or (), time_limit_s=limit_s, run_dir=run_dir,
            recipe=config_file, overrides=dict(parse_override(text) for text in overrides or ()),
            overwrite=overwrite, progress=functools.partial(RichProgress, "adapt"), note=_say,
        )  # fmt: skip
    trained = result.train
    if result.output is None:
        _say(f"interrupted at step {trained.step}; {output} was not written")
        if run_dir is not None:
            clean_args = [a for d in result.folders.clean_dirs for a in ("--clean", str(d))]
            again = shlex.join(["derain", "train", str(rainy), *clean_args, "--out", str(run_dir)])
            _say(
                f"continue with: {again} --resume, then derain weights export {run_dir} "
                f"(G_B.safetensors)"
            )
        raise typer.Exit(128 + int(trained.stop_signal or signal.SIGINT))
    why = " (the time limit)" if trained.time_limited else ""
    _say(
        f"wrote {result.output} (sha256 {result.sha256[:12]}) after {trained.step} of "
        f"{trained.total_steps} steps{why}, from {result.init.spec}. Use it: derain PHOTO -o "
        f"OUT --weights {result.output}"
    )


def _say(text: str) -> None:
    err_console.print(f"derain adapt: {text}", markup=False, highlight=False)
