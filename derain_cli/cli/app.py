"""The ``derain`` entry point: composes one small module per subcommand.

``derain IN -o OUT`` runs the default command (``derain run``) whenever the first argument is not
a subcommand name, so ``derain photo.jpg -o clean.jpg`` works as users expect. Heavy imports
(torch) happen inside the commands, so ``derain --version`` and ``--help`` answer at once.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer

from derain_cli import __version__
from derain_cli.cli import evaluate, inspect_patches, run, train, weights

app = typer.Typer(
    name="derain",
    help="Remove rain from photographs with NLCL (CVPR 2022).\n\n"
    "Usage: derain IN... -o OUT \\[options]   (IN: images, folders, globs or -)\n\n"
    "derain --version prints the version.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)

app.command("run", help="Derain an image, a folder, a glob or stdin (the default command).")(
    run.command
)
app.add_typer(weights.app, name="weights", help="List, download, convert and inspect weights.")
app.command(
    "train",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    help="Train NLCL on a folder of rainy images.",
)(train.command)
app.command(
    "eval",
    help="Score models on rainy/clean pairs (PSNR, SSIM, NIQE).",
)(evaluate.command)
app.command(
    "inspect-patches",
    help="Show the non-local positives and negatives of query patches.",
)(inspect_patches.command)

SUBCOMMANDS = frozenset({"run", "weights", "train", "eval", "inspect-patches"})
TOP_LEVEL_OPTIONS = frozenset({"-h", "--help", "--version"})


def route(argv: Sequence[str]) -> list[str]:
    """Insert the default ``run`` command unless ``argv`` starts with a subcommand."""
    args = list(argv)
    if args and args[0] not in SUBCOMMANDS and args[0] not in TOP_LEVEL_OPTIONS:
        args.insert(0, "run")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--version"]:
        sys.stdout.write(f"derain {__version__}\n")
        raise SystemExit(0)
    app(args=route(args), prog_name="derain")


if __name__ == "__main__":  # pragma: no cover
    main()
