"""`derain run` / `derain IN -o OUT` (placeholder: being written)."""

from __future__ import annotations

import typer

from derain_cli.cli.common import not_implemented


def command(ctx: typer.Context) -> None:
    """Not implemented yet."""
    raise not_implemented("run", "the foundation issue")
