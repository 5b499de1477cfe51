"""Shared helpers of the CLI trust tests: a CliRunner call of `derain run` and its error lines
(the ``weights_file`` fixture they use is in conftest.py)."""

from __future__ import annotations

from pathlib import Path

from click.testing import Result
from typer.testing import CliRunner

from derain_cli.cli.app import app

#: A tiny authors-layout generator: milliseconds a picture on the CPU.
HPARAMS = {"in_channels": 3, "channels": 8, "blocks": 2}


def invoke(*args: str, weights: Path | None = None) -> Result:
    argv = ["run", *args] + (["--weights", str(weights)] if weights is not None else [])
    return CliRunner().invoke(app, argv)


def error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if "derain: error:" in line]
