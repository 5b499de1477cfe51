"""Synthetic rain: render rain over clean photographs (``derain synth``, synthetic supervision).

* :mod:`derain_cli.synth.recipe`: what one rainy picture looks like (streak layers, blending,
  veil, camera), and the named styles that draw recipes at random.
* :mod:`derain_cli.synth.render`: turns a recipe and a clean image into the rainy image
  (``render_pair``: the rainy image and its supervision target).
* :mod:`derain_cli.synth.bank`: streak-bank rain, composed from a folder of streak images.
* :mod:`derain_cli.synth.pairs`: writes ``rainy/`` + ``clean/`` folders that ``derain eval`` reads.
"""

from derain_cli.synth.bank import BankLayer, StreakBank
from derain_cli.synth.recipe import (
    STYLES,
    PhotoLayer,
    RainRecipe,
    StreakLayer,
    photo_scale,
    sample_recipe,
)
from derain_cli.synth.render import render_pair, render_rain

__all__ = [
    "STYLES",
    "BankLayer",
    "PhotoLayer",
    "StreakBank",
    "RainRecipe",
    "StreakLayer",
    "photo_scale",
    "render_pair",
    "render_rain",
    "sample_recipe",
]
