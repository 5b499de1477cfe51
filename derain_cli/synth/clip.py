"""Synthetic rainy video clips with their clean frames, to measure flicker and ghosting.

:func:`rainy_clip` cuts a window out of a clean photo and moves it in one of four ways:

* ``"still"``: nothing moves (a camera on a tripod, a still scene);
* ``"pan"``: the camera moves ``speed`` pixels per frame to the right, so the content moves left;
* ``"object"``: the scene stays still and a textured square slides across it;
* ``"cut"``: a still shot, then from frame ``frames // 2`` on a still shot of another window of
  the photo, mirrored (an edit: nothing of the first shot may carry over).

Every frame gets new rain from one recipe (fixed style, angle and colour, as in one shower), drawn
with its own generator, so rain moves between frames while the scene does not. Lens drops are
left out: on a real camera they stay put, and this renderer would scatter them anew per frame.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np

from derain_cli.synth.recipe import photo_scale, sample_recipe
from derain_cli.synth.render import render_rain

Motion = Literal["still", "pan", "object", "cut"]
MOTIONS: tuple[Motion, ...] = ("still", "pan", "object", "cut")


@dataclass
class Clip:
    rainy: list[np.ndarray]
    clean: list[np.ndarray]
    shift: tuple[int, int]  # (dy, dx) that carries clean frame t-1 onto frame t where static
    style: str
    cuts: tuple[int, ...] = ()  # frames that start a new shot (not frame 0)


def rainy_clip(
    photo: np.ndarray,
    rng: np.random.Generator,
    *,
    frames: int = 16,
    size: tuple[int, int] = (240, 320),
    motion: Motion = "object",
    speed: int = 2,
    style: str = "streak",
) -> Clip:
    """``frames`` float32 RGB frames of (H, W) = ``size`` cut from ``photo`` (at least as large)."""
    height, width = size
    travel = speed * (frames - 1) if motion == "pan" else 0
    if photo.shape[0] < height or photo.shape[1] < width + travel:
        raise ValueError(f"photo {photo.shape[:2]} too small for {size} and {travel} px of pan")
    top = int(rng.integers(0, photo.shape[0] - height + 1))
    left = int(rng.integers(0, photo.shape[1] - width - travel + 1))
    side = max(8, min(height, width) // 4)
    patch_y = int(rng.integers(0, photo.shape[0] - side + 1))
    patch_x = int(rng.integers(0, photo.shape[1] - side + 1))
    patch = photo[patch_y : patch_y + side, patch_x : patch_x + side]
    recipe = dataclasses.replace(
        sample_recipe(rng, style, scale=photo_scale(min(height, width))), drops=0
    )
    cut = frames // 2 if motion == "cut" else frames
    if motion == "cut":  # the second shot: the opposite corner's window, mirrored
        second = photo[photo.shape[0] - height - top :, photo.shape[1] - width - left :]
        second = np.ascontiguousarray(second[:height, :width][:, ::-1], dtype=np.float32)
    clean: list[np.ndarray] = []
    rainy: list[np.ndarray] = []
    for t in range(frames):
        x0 = left + (speed * t if motion == "pan" else 0)
        frame = np.ascontiguousarray(photo[top : top + height, x0 : x0 + width], dtype=np.float32)
        if motion == "object":
            frame = frame.copy()
            y = height // 2 - side // 2
            x = (speed * 2 * t) % max(1, width - side)
            frame[y : y + side, x : x + side] = patch
        if t >= cut:
            frame = second
        clean.append(frame)
        rainy.append(render_rain(frame, recipe, np.random.default_rng(rng.integers(2**63))))
    shift = (0, -speed) if motion == "pan" else (0, 0)
    return Clip(rainy, clean, shift, recipe.style, cuts=(cut,) if cut < frames else ())
