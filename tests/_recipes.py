"""Synthetic-rain recipes read back from ``recipes.jsonl`` (the ``dataclasses.asdict`` form)."""

from __future__ import annotations

from derain_cli.synth.bank import BankLayer
from derain_cli.synth.recipe import PhotoLayer, RainRecipe, StreakLayer


def recipe_from_dict(data: dict[str, object]) -> RainRecipe:
    """A :class:`RainRecipe` back from its ``recipes.jsonl`` form (``dataclasses.asdict``)."""
    values = dict(data)
    layers = values.pop("layers", ())
    assert isinstance(layers, list | tuple)
    for key in ("colour", "airlight"):
        if key in values:
            values[key] = tuple(values[key])  # type: ignore[arg-type]
    return RainRecipe(layers=tuple(_layer_from_dict(layer) for layer in layers), **values)  # type: ignore[arg-type]


def _layer_from_dict(data: dict[str, object]) -> StreakLayer | PhotoLayer | BankLayer:
    """A layer back from its ``asdict`` form; its fields tell its kind."""
    if "source" in data:
        values = dict(data)
        values["offset"] = tuple(values["offset"])  # type: ignore[arg-type]
        return BankLayer(**values)  # type: ignore[arg-type]
    if "noise" in data:
        return PhotoLayer(**data)  # type: ignore[arg-type]
    return StreakLayer(**data)  # type: ignore[arg-type]
