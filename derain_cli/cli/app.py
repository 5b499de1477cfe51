"""The ``derain`` entry point: composes one small module per subcommand.

``derain IN -o OUT`` runs the default command (``derain run``) whenever the first argument is not
a subcommand name, so ``derain photo.jpg -o clean.jpg`` works as users expect. Heavy imports
(torch) happen inside the commands, so ``derain --version`` and ``--help`` answer at once.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import typer

from derain_cli.cli import adapt, evaluate, inspect_patches, run, synth, train, weights
from derain_cli.version import __version__


def _hide_flag_types() -> None:
    """Show no ``<bool>`` type beside on/off flags (``--quiet``, ``--help``) in ``--help``.

    Typer 0.2x labels every option with its type, flags included, where nothing follows the
    flag. Patched once here because Typer offers no setting for it; a Typer without the hook
    is left alone.
    """
    from typer.core import TyperOption

    original = getattr(TyperOption, "display_type_rich", None)
    if original is None or getattr(original, "_derain_patched", False):
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        if getattr(self, "is_flag", False) and self.metavar is None:
            return None
        return original(self, ctx)

    display_type_rich._derain_patched = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_hide_flag_types()

app = typer.Typer(
    name="derain",
    help="Remove rain from photographs with NLCL (CVPR 2022).\n\n"
    "Usage: derain IN... -o OUT \\[options]   (IN: images, folders, globs or -)\n\n"
    "derain --version (or -V) prints the version.",
    no_args_is_help=True,
    add_completion=True,
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
    "adapt",
    help="Adapt the default model to a folder of your own rainy photos (no clean versions).",
)(adapt.command)
app.command(
    "eval",
    help="Score models on rainy/clean pairs (PSNR, SSIM, NIQE).",
)(evaluate.command)
app.command(
    "inspect-patches",
    help="Show the non-local positives and negatives of query patches.",
)(inspect_patches.command)
app.command(
    "synth",
    help="Render rain over clean photographs: rainy/clean pairs for derain eval.",
)(synth.command)

SUBCOMMANDS = frozenset({"run", "weights", "train", "adapt", "eval", "inspect-patches", "synth"})
TOP_LEVEL_OPTIONS = frozenset(
    {"-h", "--help", "-V", "--version", "--install-completion", "--show-completion"}
)


def route(argv: Sequence[str]) -> list[str]:
    """Insert the default ``run`` command unless ``argv`` starts with a subcommand."""
    args = list(argv)
    if args and args[0] not in SUBCOMMANDS and args[0] not in TOP_LEVEL_OPTIONS:
        args.insert(0, "run")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["--version"], ["-V"]):
        sys.stdout.write(f"derain {__version__}\n")
        raise SystemExit(0)
    app(args=route(args), prog_name="derain")


if __name__ == "__main__":  # pragma: no cover
    main()
