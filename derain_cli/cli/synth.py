"""`derain synth`: render rain over clean photographs into rainy/clean pairs for `derain eval`.

  derain synth CLEAN_DIR -o PAIRS_DIR [--style S] [--streaks DIR] [--seed N] [--copies K]
               [--scale X] [--max-side PX] [--overwrite]

Exit codes: 0 every image gave its pairs, 1 some files could not be read or written (named; the
others are written), 2 bad usage (nothing written).

The library (:mod:`derain_cli.synth.pairs`) does the work; this module wires the options, the
progress bar and the messages on stderr. The renderer is described in ``docs/synth.md``.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, get_args

import typer

from derain_cli.cli.common import FLAGS, err_console, print_error, user_errors
from derain_cli.cli.options import DebugOption, overwrite_option, quiet_option
from derain_cli.config import SyntheticStyle
from derain_cli.errors import speak_cli

#: derain synth has no --max-megapixels: the reader's decompression-bomb limit is fixed here.
SYNTH_FLAGS = {**FLAGS, "max_megapixels": "fixed for derain synth; shrink the photo first"}

# From the config's type (light to import), which tests/test_synth.py holds equal to synth.STYLES.
STYLE_CHOICES = ", ".join(get_args(SyntheticStyle))


def command(
    clean_dir: Annotated[
        Path,
        typer.Argument(metavar="CLEAN_DIR", help="Folder of clean photographs (not recursive)."),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "-o",
            "--out",
            metavar="PAIRS_DIR",
            help="Writes PAIRS_DIR/rainy/, PAIRS_DIR/clean/ and PAIRS_DIR/recipes.jsonl.",
        ),
    ],
    style: Annotated[
        str,
        typer.Option(
            metavar="STYLE", help=f"Rain style: {STYLE_CHOICES} (one of the others each)."
        ),
    ] = "mixed",
    streaks: Annotated[
        Path | None,
        typer.Option(
            "--streaks",
            metavar="DIR",
            help="Folder of rain-streak images on black: style 'bank' composes rain from them, "
            "and 'mixed' draws that style too.",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[
        int,
        typer.Option(
            min=0,
            metavar="N",
            help="Same seed, same rain; each image's rain depends on its name only.",
        ),
    ] = 0,
    copies: Annotated[
        int,
        typer.Option(min=1, metavar="K", help="Rainy versions per clean image (stems get -1..-K)."),
    ] = 1,
    scale: Annotated[
        float,
        typer.Option(
            metavar="X", help="Rain size multiplier (on top of the image's short side / 480)."
        ),
    ] = 1.0,
    max_side: Annotated[
        int | None,
        typer.Option(
            min=8,
            metavar="PX",
            help="Downscale clean images whose long side is above PX first.",
            show_default=False,
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        overwrite_option("Replace the pairs already in PAIRS_DIR (deletes them)."),
    ] = False,
    quiet: Annotated[bool, quiet_option("No progress bar.")] = False,
    debug: DebugOption = False,
) -> None:
    """Render rain over clean photographs: rainy/clean pairs for derain eval."""
    with user_errors(debug):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        from derain_cli.synth.pairs import check_options, list_clean_images, write_pairs

        check_options(
            style=style, seed=seed, copies=copies, scale=scale, max_side=max_side, streaks=streaks
        )
        total = len(list_clean_images(clean_dir))

        with (
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                console=err_console,
                disable=quiet,
                transient=True,
            ) as progress,
            speak_cli(SYNTH_FLAGS),
        ):
            task = progress.add_task("synth", total=total)
            summary = write_pairs(
                clean_dir, out, style=style, seed=seed, copies=copies, scale=scale,
                max_side=max_side, overwrite=overwrite, streaks=streaks,
                on_warning=lambda message: None,
                on_pair=lambda name: progress.update(task, advance=1, description=name),
            )  # fmt: skip
    for failure in summary.failed:  # failed files are errors (exit 1), worded as derain's
        print_error(f"{failure.path}: {failure.reason}")
    rainy, clean = (shlex.quote(str(p)) for p in (summary.rainy_dir, summary.clean_dir))
    failed = f", {len(summary.failed)} image(s) failed" if summary.failed else ""
    err_console.print(
        f"derain synth: {len(summary.written)} pairs written to {summary.out}{failed}; "
        f"next: derain eval --rainy {rainy} --clean {clean} [--weights W]",
        markup=False,
    )
    if summary.failed:
        raise typer.Exit(1)
