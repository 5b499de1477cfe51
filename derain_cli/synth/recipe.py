"""What one synthetic rainy picture looks like, and the named styles that draw it at random.

A :class:`RainRecipe` is a plain description, rendered by :func:`derain_cli.synth.render_rain`:

* ``layers``: depth layers of streaks, near to far. Each :class:`StreakLayer` has a density
  (streaks per 10,000 pixels), a mean length and width in pixels, an angle from vertical (degrees,
  positive = leaning right at the top) with a per-streak jitter, a peak opacity, a defocus blur
  and a ``kind``: ``"lines"`` draws every streak as its own segment (own angle, length, width and
  brightness, ends tapered by a short motion blur; overlapping streaks occlude), ``"field"``
  spreads random impulses and smears them with one oriented line kernel per angle band
  (overlapping streaks add up: the dense, veil-like curtains of heavy rain).
* ``blend``: how the rain meets the scene. ``"add"`` (``O = B + c R``), ``"screen"``
  (``O = 1 - (1 - B)(1 - c R)``, saturates gently on bright scenes) or ``"alpha"``
  (``O = B (1 - A) + c A``: a streak shows the drop's own radiance, which can be darker than a
  bright sky). ``colour`` is the drop radiance ``c``: a mix of white and the scene's mean colour,
  because a falling drop refracts light from a wide field of view (Garg and Nayar, 2004).
* ``veil``: haze of distant rain, ``O = O (1 - t) + a t``, with ``t`` growing with a depth proxy
  (a random vertical ramp plus a smooth random field) up to ``veil``; ``airlight`` is ``a``.
* ``drops``: out-of-focus drops close to the lens (large, soft, faint discs).
* camera: signal-dependent sensor ``noise`` (sigma at mid grey) and ``jpeg`` re-encoding quality
  (0 = none), applied to the rainy image only, as a camera would.

Sizes are in pixels of the image being rendered; :func:`sample_recipe` scales them with ``scale``
(1.0 for a photo about 480 px on its short side), so rain keeps its look across resolutions.

Two more kinds of layer come from outside this procedural model:

* :class:`PhotoLayer`, the classic photographic recipe that the Rain1400-family datasets used
  (noise on black, blur, levels, motion blur, levels, screen blend);
* :class:`~derain_cli.synth.bank.BankLayer`, a streak image from a folder of streak images (a
  *streak bank*, :mod:`derain_cli.synth.bank`), filtered by streak size, turned and zoomed.

Styles (``STYLES``) span what photographs show, from drizzle to storms: ``drizzle``, ``streak``,
``heavy``, ``curtain``, ``storm``, ``photographic``, ``bank`` (needs a streak bank), and ``mixed``
(each picture draws one of the others, ``bank`` only when a bank is given; the style that training
uses). Ranges are deliberately wide: a renderer tuned to one benchmark's rain does not transfer to
anybody else's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from derain_cli.synth.bank import BankLayer, StreakBank, Tier

Blend = Literal["add", "screen", "alpha"]

#: Short side (pixels) of a photo whose rain is drawn at ``scale = 1``.
REFERENCE_SHORT_SIDE = 480.0


def photo_scale(short_side: int, multiplier: float = 1.0) -> float:
    """The ``scale`` for a photo of this short side: its rain keeps its size relative to it."""
    return multiplier * short_side / REFERENCE_SHORT_SIDE


StreakKind = Literal["lines", "field"]


@dataclass(frozen=True)
class StreakLayer:
    """One depth layer of rain streaks (sizes in pixels, angles in degrees from vertical)."""

    density: float  # streaks per 10,000 pixels
    length: float
    width: float
    angle: float
    jitter: float  # per-streak angle spread (standard deviation)
    opacity: float  # peak alpha of a streak, in [0, 1]
    blur: float  # defocus (Gaussian sigma, pixels)
    kind: StreakKind = "lines"


@dataclass(frozen=True)
class PhotoLayer:
    """One layer of the classic photographic rain recipe (sizes in pixels, angle from vertical).

    Rendered as: Gaussian noise on black (``noise`` = its sigma), a Gaussian blur (``blur``),
    levels that keep the brightest ``density`` share of the specks, a motion blur of ``length``
    at ``angle``, and levels that stretch the streaks' top to ``opacity``.
    """

    noise: float
    blur: float
    density: float  # share of the pixels that seed a streak, (0, 1)
    length: float
    angle: float
    opacity: float


Layer = StreakLayer | PhotoLayer | BankLayer


@dataclass(frozen=True)
class RainRecipe:
    """Everything :func:`derain_cli.synth.render_rain` needs besides the clean image and a seed."""

    layers: tuple[Layer, ...]
    blend: Blend = "add"
    colour: tuple[float, float, float] = (1.0, 1.0, 1.0)
    scene_colour: float = 0.0  # how much of the scene's mean colour the drops take, in [0, 1]
    veil: float = 0.0  # haze at the farthest depth, in [0, 1)
    airlight: tuple[float, float, float] = (0.85, 0.85, 0.85)
    drops: int = 0  # out-of-focus drops on the lens
    drop_size: float = 20.0  # their radius, pixels
    noise: float = 0.0  # sensor noise sigma at mid grey (0..1 scale)
    jpeg: int = 0  # re-encode quality, 0 = none
    style: str = field(default="custom", compare=False)


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _log_u(rng: np.random.Generator, lo: float, hi: float) -> float:
    """Log-uniform: sizes and densities vary by ratios, not by differences."""
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


#: How often the wind angle is drawn within each limit (degrees from vertical). Streaks in a
#: photograph run at any angle: wind, a panning or tilted camera, a picture taken in portrait and
#: stored without its orientation, or rain rendered by tools with another angle convention. A model
#: that has only seen near-vertical streaks leaves the others in place, so a third of the pictures
#: get an angle from the whole half-circle.
WIND_LIMITS = ((30.0, 0.45), (60.0, 0.2), (90.0, 0.35))


def _wind(rng: np.random.Generator, table: tuple[tuple[float, float], ...] = WIND_LIMITS) -> float:
    """The picture's main streak angle: often near vertical, sometimes slanted, at times any
    (``table``: (limit, weight) pairs, the angle uniform within the limit drawn)."""
    limits, weights = zip(*table, strict=True)
    limit = limits[int(rng.choice(len(limits), p=np.array(weights) / sum(weights)))]
    return _u(rng, -limit, limit)


def _layer(
    rng: np.random.Generator,
    scale: float,
    angle: float,
    *,
    density: tuple[float, float],
    length: tuple[float, float],
    width: tuple[float, float],
    opacity: tuple[float, float],
    blur: tuple[float, float],
    cover: tuple[float, float] = (0.05, 0.3),
    kind: StreakKind | None = None,
) -> StreakLayer:
    """One layer; its density is capped so that the mean rain alpha stays within ``cover``.

    Mean alpha ~ density/1e4 * length * width * opacity * 0.7 (0.7: the mean streak level), so
    long, wide streaks come fewer: a dense curtain is faint, not a white wall. ``density`` is given
    for a photo at scale 1 and divided by ``scale**2``: the same scene at twice the resolution has
    the same streaks, each twice as long and wide, so a quarter as many per pixel.
    """
    length_px = _log_u(rng, *length) * scale
    width_px = _log_u(rng, *width) * scale
    level = _u(rng, *opacity)
    per_streak = length_px * max(width_px, 1.0) * level * 0.7 / 1e4
    return StreakLayer(
        density=min(_log_u(rng, *density) / scale**2, _u(rng, *cover) / max(per_streak, 1e-9)),
        length=length_px,
        width=width_px,
        angle=angle + float(rng.normal(0.0, 4.0)),
        jitter=_u(rng, 0.0, 8.0),
        opacity=level,
        blur=_u(rng, *blur) * scale,
        kind=kind or ("field" if rng.random() < 0.35 else "lines"),
    )


def _drizzle(rng: np.random.Generator, scale: float) -> list[StreakLayer]:
    angle = _wind(rng) * 0.5
    return [
        _layer(rng, scale, angle, density=(30, 200), length=(2, 10), width=(0.6, 1.3),
               opacity=(0.08, 0.35), blur=(0.0, 0.8))
        for _ in range(int(rng.integers(1, 3)))
    ]  # fmt: skip


def _streak(rng: np.random.Generator, scale: float) -> list[StreakLayer]:
    angle = _wind(rng)
    return [
        _layer(rng, scale, angle, density=(2, 80), length=(10, 60), width=(0.6, 2.5),
               opacity=(0.25, 0.85), blur=(0.0, 1.0))
        for _ in range(int(rng.integers(1, 3)))
    ]  # fmt: skip


def _heavy(rng: np.random.Generator, scale: float) -> list[StreakLayer]:
    angle = _wind(rng)
    near = _layer(rng, scale, angle, density=(1.5, 8), length=(30, 110), width=(1.5, 4.5),
                  opacity=(0.3, 0.8), blur=(0.5, 2.5))  # fmt: skip
    far = [
        _layer(rng, scale, angle, density=(15, 150), length=(8, 40), width=(0.6, 2),
               opacity=(0.1, 0.4), blur=(0.0, 1.0))
        for _ in range(int(rng.integers(1, 4)))
    ]  # fmt: skip
    return [near, *far]


def _curtain(rng: np.random.Generator, scale: float) -> list[StreakLayer]:
    angle = _wind(rng)
    return [
        _layer(rng, scale, angle, density=(20, 120), length=(40, 220), width=(2.5, 10),
               opacity=(0.05, 0.25), blur=(1.0, 4.0), cover=(0.05, 0.2), kind="field")
        for _ in range(int(rng.integers(1, 4)))
    ]  # fmt: skip


def _photographic(rng: np.random.Generator, scale: float) -> list[PhotoLayer]:
    """One to three layers of the photographic recipe; far layers finer and fainter."""
    angle = _wind(rng)
    layers = []
    for depth in range(int(rng.integers(1, 4))):
        near = 0.6**depth
        layers.append(
            PhotoLayer(
                noise=_u(rng, 0.3, 0.7),
                blur=_u(rng, 0.3, 1.2) * scale * near,
                density=_log_u(rng, 0.002, 0.03),
                length=_log_u(rng, 12, 70) * scale * near,
                angle=angle + float(rng.normal(0.0, 3.0)),
                opacity=_u(rng, 0.3, 0.9) * (0.5 + 0.5 * near),
            )
        )
    return layers


#: Main streak angle of bank rain (limit, weight): its streaks are photographs of falling drops,
#: mostly near vertical, sometimes blown or seen by a tilted camera.
BANK_WIND_LIMITS = ((20.0, 0.6), (45.0, 0.2), (90.0, 0.2))
#: How often a bank layer keeps each streak-size tier.
BANK_TIER_WEIGHTS: dict[Tier, float] = {"small": 0.3, "middle": 0.3, "large": 0.2, "all": 0.2}


def _bank(rng: np.random.Generator, scale: float, bank: StreakBank | None) -> list[BankLayer]:
    """One to four bank images, each of one streak-size tier, turned and zoomed together."""
    if bank is None or not len(bank):
        raise ValueError("rain style 'bank' needs a folder of streak images (a streak bank)")
    angle = _wind(rng, BANK_WIND_LIMITS)
    tiers = list(BANK_TIER_WEIGHTS)
    tier_p = np.array([BANK_TIER_WEIGHTS[t] for t in tiers])
    layers = []
    for _ in range(int(rng.integers(1, 5))):
        tier = tiers[int(rng.choice(len(tiers), p=tier_p / tier_p.sum()))]
        layers.append(
            BankLayer(
                source=bank.names[int(rng.integers(0, len(bank)))],
                tier=tier,
                zoom=_log_u(rng, 0.5, 1.6) * scale,
                angle=angle + float(rng.normal(0.0, 3.0)),
                flip=bool(rng.random() < 0.5),
                opacity=_u(rng, 0.5, 1.2),
                blur=_u(rng, 0.0, 0.8) * scale if rng.random() < 0.4 else 0.0,
                offset=(float(rng.random()), float(rng.random())),
            )
        )
    return layers


_LAYERS: dict[str, Callable[[np.random.Generator, float], list[StreakLayer]]] = {
    "drizzle": _drizzle,
    "streak": _streak,
    "heavy": _heavy,
    "curtain": _curtain,
    "storm": lambda rng, scale: _heavy(rng, scale) + _curtain(rng, scale)[:1],
}
#: How often ``mixed`` draws each style (``bank`` only when a streak bank is given).
MIXED_WEIGHTS = {"drizzle": 0.1, "streak": 0.2, "heavy": 0.2, "curtain": 0.1, "storm": 0.1,
                 "photographic": 0.15, "bank": 0.4}  # fmt: skip
STYLES = (*_LAYERS, "photographic", "bank", "mixed")
_VEIL = {"drizzle": (0.0, 0.1), "streak": (0.0, 0.08), "heavy": (0.0, 0.2),
         "curtain": (0.0, 0.15), "storm": (0.1, 0.3), "photographic": (0.0, 0.1),
         "bank": (0.0, 0.15)}  # fmt: skip


def sample_recipe(
    rng: np.random.Generator,
    style: str = "mixed",
    scale: float = 1.0,
    bank: StreakBank | None = None,
) -> RainRecipe:
    """Draw one recipe of ``style`` (see ``STYLES``); sizes multiplied by ``scale``.

    ``bank``: the streak images that style ``bank`` draws from (and ``mixed``, when given).
    """
    if style not in STYLES:
        raise ValueError(f"rain style {style!r}: choose one of {', '.join(STYLES)}")
    if scale <= 0:
        raise ValueError(f"rain scale must be > 0, got {scale}")
    if style == "mixed":
        names = [n for n in MIXED_WEIGHTS if n != "bank" or bank is not None]
        probs = np.array([MIXED_WEIGHTS[n] for n in names])
        style = names[int(rng.choice(len(names), p=probs / probs.sum()))]
    scale *= _log_u(rng, 0.7, 1.4)
    layers: list[Layer]
    if style == "bank":
        layers = list(_bank(rng, scale, bank))
    elif style == "photographic":
        layers = list(_photographic(rng, scale))
    else:
        layers = list(_LAYERS[style](rng, scale))

    blend: Blend = ("add", "screen", "alpha")[int(rng.choice(3, p=[0.35, 0.35, 0.3]))]
    if style == "photographic":
        blend = "screen"  # the recipe's own blend
    grey = _u(rng, 0.7, 1.0)
    tint = rng.normal(0.0, 0.03, size=3)
    tint[2] += _u(rng, 0.0, 0.05)  # rain light is often slightly blue
    colour = tuple(float(np.clip(grey + t, 0.0, 1.0)) for t in tint)
    veil_lo, veil_hi = _VEIL[style]
    veil = _u(rng, veil_lo, veil_hi) if rng.random() < 0.7 or style == "storm" else 0.0
    air = _u(rng, 0.6, 0.95)
    airlight = tuple(float(np.clip(air + t, 0.0, 1.0)) for t in rng.normal(0.0, 0.02, size=3))
    drops = int(rng.integers(1, 8)) if style == "storm" and rng.random() < 0.5 else 0
    return RainRecipe(
        layers=tuple(layers),
        blend=blend,
        colour=(colour[0], colour[1], colour[2]),
        scene_colour=_u(rng, 0.0, 0.6),
        veil=veil,
        airlight=(airlight[0], airlight[1], airlight[2]),
        drops=drops,
        drop_size=_u(rng, 8.0, 30.0) * scale,
        noise=_u(rng, 0.0, 0.02) if rng.random() < 0.5 else 0.0,
        jpeg=int(rng.integers(55, 96)) if rng.random() < 0.5 else 0,
        style=style,
    )
