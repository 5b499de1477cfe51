"""Module paths of release 0.1 still import (with a DeprecationWarning) and give the new module."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest


def test_old_paths_import_the_new_module() -> None:
    """In a fresh process, so that each old path is imported for the first time."""
    code = (
        "import importlib, warnings\n"
        "from derain_cli._moved import OLD_PATHS\n"
        "for old, new in OLD_PATHS.items():\n"
        "    with warnings.catch_warnings(record=True) as seen:\n"
        "        warnings.simplefilter('always')\n"
        "        module = importlib.import_module(old)\n"
        "    assert module is importlib.import_module(new), (old, new)\n"
        "    assert module.__spec__.name == new, (old, module.__spec__.name)\n"
        "    assert any(issubclass(w.category, DeprecationWarning) for w in seen), old\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_weights_package_hands_on_the_old_module_names() -> None:
    files = importlib.import_module("derain_cli.weights.files")
    from derain_cli.weights import LoadedWeights, load_weights, save_weights

    assert (load_weights, save_weights, LoadedWeights) == (
        files.load_weights,
        files.save_weights,
        files.LoadedWeights,
    )
    with pytest.raises(AttributeError):
        importlib.import_module("derain_cli.weights").no_such_name  # noqa: B018
