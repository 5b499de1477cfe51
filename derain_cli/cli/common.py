"""Shared CLI plumbing: one-line errors with the right exit code, stderr console."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping

import typer
from rich.console import Console
from rich.markup import escape

from derain_cli.cli.signals import describe, exit_status
from derain_cli.errors import DerainError, speak_cli

#: Everything human-readable goes to stderr so that stdout stays free for ``-o -`` and ``--json``.
err_console = Console(stderr=True, highlight=False, soft_wrap=True)
#: What a command exists to print (``derain weights list``'s table) goes to stdout, for pipes.
out_console = Console(highlight=False, soft_wrap=True)


def print_error(message: str) -> None:
    """Print ``derain: error: message`` on stderr (the message is shown verbatim, no markup)."""
    text = f"[bold red]derain: error:[/] {escape(message)}"
    err_console.print(text, markup=True, highlight=False)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``derain: error: message`` on stderr and return the Exit to raise."""
    print_error(message)
    return typer.Exit(code)


#: Library setting names whose flag is not ``--`` + the name with dashes (see errors.setting).
FLAGS: dict[str, str] = {
    "output": "-o",
    "with_niqe=False": "--no-niqe",
    "train.gpus": "--gpus",
    "train.device": "--device",
    "train.steps": "--steps",
    "train.epochs": "--epochs",
    "train.batch_size": "--batch-size",
    "train.crop": "--crop",
    "train.time_limit_s": "--time-limit",
    "train.init": "--init",
    "temporal.window": "--temporal-window",
    "temporal.strength": "--temporal-strength",
}


#: ``derain adapt``'s flags; config keys without a flag stay keys (its ``--set`` takes them).
ADAPT_FLAGS: dict[str, str] = {
    "output": "-o",
    "weights": "--init",  # "no default weights are bundled yet: pass --init FILE..."
    "train.time_limit_s": "--time-limit",
    "train.init": "--init",
}


@contextlib.contextmanager
def user_errors(debug: bool = False, flags: Mapping[str, str] = FLAGS) -> Iterator[None]:
    """Turn :class:`DerainError` into a one-line message and its exit code; inside the block,
    library messages name command-line flags (``flags``; :func:`derain_cli.errors.speak_cli`).

    With ``debug`` the traceback is shown as well.
    """
    try:
        with speak_cli(flags):
            yield
    except DerainError as exc:
        if debug:
            err_console.print_exception()
        raise fail(str(exc), exc.exit_code) from None


#: Exit status when stdout is a pipe whose reader has gone: 128 + SIGPIPE, as a shell shows it.
BROKEN_PIPE_EXIT = 141


@contextlib.contextmanager
def unexpected_errors(debug: bool) -> Iterator[None]:
    """A bug or an environment failure: one line (traceback with --debug), exit 1; ^C is 130,
    SIGTERM 143 and SIGHUP 129 (see :mod:`derain_cli.cli.signals`)."""
    try:
        yield
    except (typer.Exit, typer.Abort, typer.TyperException):
        raise
    except BrokenPipeError:
        # The reader of stdout went away (``derain ... --json | head -1``): stop quietly, like
        # other Unix tools, with the status a shell shows for a process ended by SIGPIPE.
        _silence_stdout()
        raise typer.Exit(BROKEN_PIPE_EXIT) from None
    except KeyboardInterrupt as exc:
        err_console.print(
            f"derain: {describe(exc)} (finished outputs are complete; no partial files)"
        )
        raise typer.Exit(exit_status(exc)) from None
    except Exception as exc:
        if debug:
            err_console.print_exception()
        print_error(f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for details)")
        raise typer.Exit(1) from None


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that flushing it at exit raises no second BrokenPipeError."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
