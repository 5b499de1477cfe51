"""Module paths of release 0.1 still import (with a DeprecationWarning) and give the new module."""

from __future__ import annotations

import importlib
import sys

import pytest

from derain_cli._moved import OLD_PATHS


@pytest.mark.parametrize(("old", "new"), sorted(OLD_PATHS.items()))
def test_old_paths_import_the_new_module(
    old: str, new: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(sys.modules, old, raising=False)  # so that the old path is found anew
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert module.__spec__ is not None and module.__spec__.name == new


def test_the_weights_package_hands_on_the_old_module_names() -> None:
    files = importlib.import_module("derain_cli.weights.files")
    loading = importlib.import_module("derain_cli.weights.loading")
    from derain_cli.weights import LoadedWeights, fetch_entry, load_weights, save_weights

    assert (load_weights, fetch_entry, save_weights, LoadedWeights) == (
        loading.load_weights,
        loading.fetch_entry,
        files.save_weights,
        files.LoadedWeights,
    )
    with pytest.raises(AttributeError):
        importlib.import_module("derain_cli.weights").no_such_name  # noqa: B018
