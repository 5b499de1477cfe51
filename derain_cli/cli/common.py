"""Shared CLI plumbing: one-line errors with the right exit code, stderr console."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer
from rich.console import Console
from rich.markup import escape

from derain_cli.errors import DerainError

#: Everything human-readable goes to stderr so that stdout stays free for ``-o -`` and ``--json``.
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def print_error(message: str) -> None:
    """Print ``derain: error: message`` on stderr (the message is shown verbatim, no markup)."""
    text = f"[bold red]derain: error:[/] {escape(message)}"
    err_console.print(text, markup=True, highlight=False)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``derain: error: message`` on stderr and return the Exit to raise."""
    print_error(message)
    return typer.Exit(code)


def cli_text(exc: DerainError) -> str:
    """The message as a command-line user reads it: the setting at fault becomes its flag."""
    text = str(exc)
    option = getattr(exc, "option", None)
    if option and text.startswith(option):
        return "--" + option.replace("_", "-") + text[len(option) :]
    return text


@contextlib.contextmanager
def user_errors(debug: bool = False) -> Iterator[None]:
    """Turn :class:`DerainError` into a one-line message and its exit code.

    With ``debug`` the traceback is shown as well.
    """
    try:
        yield
    except DerainError as exc:
        if debug:
            err_console.print_exception()
        raise fail(cli_text(exc), exc.exit_code) from None
