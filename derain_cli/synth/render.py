"""Render a :class:`~derain_cli.synth.recipe.RainRecipe` over a clean image.

Order of operations, near to far as light travels to the camera::

    O = veil(B)                       haze of distant rain, t grows with a depth proxy
    A_i = streaks(layer_i)            one alpha map per depth layer, (H, W) in [0, 1]
    O = blend(O, A, colour)           add / screen / alpha, drop radiance from the scene's colour
    O = drops(O)                      out-of-focus drops on the lens
    O = camera(O)                     sensor noise, JPEG

Everything random comes from the ``numpy.random.Generator`` passed in, so a seed gives the same
picture. Streaks are drawn on a canvas padded by their length, so they enter the frame from
outside instead of starting at its edges. Images are float32 ``(H, W, 3)`` in [0, 1].
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from derain_cli.synth.bank import BankLayer, StreakBank
from derain_cli.synth.recipe import Layer, PhotoLayer, RainRecipe, StreakLayer

#: Upper bound on the streaks drawn one by one in a layer (a dense layer switches to a field).
MAX_LINES = 6000
_SHIFT = 4  # cv2 fixed-point bits: sub-pixel streak endpoints


def render_rain(
    clean: np.ndarray,
    recipe: RainRecipe,
    rng: np.random.Generator,
    *,
    bank: StreakBank | None = None,
) -> np.ndarray:
    """The rainy version of ``clean`` (float32 ``(H, W, 3)`` in [0, 1]); ``clean`` is untouched.

    ``bank``: the streak images that the recipe's bank layers name (needed only by those).
    """
    return render_pair(clean, recipe, rng, bank=bank)[0]


def render_pair(
    clean: np.ndarray,
    recipe: RainRecipe,
    rng: np.random.Generator,
    *,
    rain_only: bool = False,
    bank: StreakBank | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(rainy, target)`` for supervision; the rainy image is :func:`render_rain`'s.

    By default the target is ``clean`` itself. With ``rain_only`` the two differ by the rain alone,
    which is what a network of the form ``B = O - relu(G(O))`` can express: the rainy image is never
    darker than the clean one (``max(O, C)``, taken before the camera: a streak or veil darker than
    the scene does not show), and the target goes through the same camera (the same noise draw and
    the same JPEG quality), so the network learns to remove rain, not to denoise or deblock.
    """
    if clean.ndim != 3 or clean.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {clean.shape}")
    base = np.clip(clean.astype(np.float32, copy=True), 0.0, 1.0)
    image = base
    height, width = image.shape[:2]
    if recipe.veil > 0:
        image = _veil(image, recipe, rng)
    alphas = [layer_alpha((height, width), layer, rng, bank) for layer in recipe.layers]
    colour = _drop_colour(clean, recipe)
    if alphas:
        image = _blend(image, alphas, colour, recipe.blend)
    if recipe.drops > 0:
        image = _lens_drops(image, recipe, colour, rng)
    if not rain_only:
        return _camera(image, recipe, rng), base
    image = np.maximum(image, base)
    noise = _noise_field(image, recipe, rng)
    return _camera(image, recipe, rng, noise), _camera(base, recipe, rng, noise)


def layer_alpha(
    shape: tuple[int, int], layer: Layer, rng: np.random.Generator, bank: StreakBank | None
) -> np.ndarray:
    """Any layer's alpha map ``(H, W)`` float32 in [0, 1]."""
    if isinstance(layer, BankLayer):
        if bank is None:
            raise ValueError(f"a streak-bank layer ({layer.source}) needs the streak bank")
        return bank.alpha(shape, layer)
    if isinstance(layer, PhotoLayer):
        return photo_alpha(shape, layer, rng)
    return streak_alpha(shape, layer, rng)


def photo_alpha(shape: tuple[int, int], layer: PhotoLayer, rng: np.random.Generator) -> np.ndarray:
    """The photographic recipe: noise, blur, levels, motion blur, levels (alpha in [0, 1])."""
    height, width = shape
    pad = int(math.ceil(layer.length + 3 * layer.blur)) + 2
    canvas = np.abs(rng.normal(0.0, layer.noise, (height + 2 * pad, width + 2 * pad)))
    canvas = canvas.astype(np.float32)
    if layer.blur > 0.3:
        canvas = cv2.GaussianBlur(canvas, (0, 0), layer.blur)
    # levels: the black point keeps the brightest ``density`` of the specks
    black = float(np.quantile(canvas, 1.0 - min(max(layer.density, 1e-5), 0.5)))
    white = float(canvas.max())
    canvas = np.clip((canvas - black) / max(white - black, 1e-6), 0.0, 1.0)
    canvas = _motion_blur(canvas, max(layer.length, 1.0), layer.angle, normalise=True)
    # levels: a lone streak's core reaches ``opacity``
    top = float(np.quantile(canvas, 0.999))
    canvas = np.clip(canvas / max(top, 1e-6), 0.0, 1.0) * layer.opacity
    return np.ascontiguousarray(canvas[pad : pad + height, pad : pad + width])


def streak_alpha(
    shape: tuple[int, int], layer: StreakLayer, rng: np.random.Generator
) -> np.ndarray:
    """One layer's streaks as an alpha map ``(H, W)`` float32 in [0, 1]."""
    height, width = shape
    pad = int(math.ceil(layer.length + 3 * layer.blur + layer.width)) + 2
    canvas_shape = (height + 2 * pad, width + 2 * pad)
    count = int(rng.poisson(max(layer.density, 0.0) * canvas_shape[0] * canvas_shape[1] / 1e4))
    if layer.kind == "lines" and count <= MAX_LINES:
        canvas = _lines(canvas_shape, layer, count, rng)
    else:
        canvas = _field(canvas_shape, layer, count, rng)
    if layer.blur > 0.3:
        canvas = cv2.GaussianBlur(canvas, (0, 0), layer.blur)
    return np.clip(canvas[pad : pad + height, pad : pad + width], 0.0, 1.0)


def _lines(
    shape: tuple[int, int], layer: StreakLayer, count: int, rng: np.random.Generator
) -> np.ndarray:
    """Each streak its own anti-aliased segment: own angle, length, width and brightness."""
    canvas = np.zeros(shape, np.float32)
    if count == 0:
        return canvas
    ys = rng.uniform(0, shape[0], count)
    xs = rng.uniform(0, shape[1], count)
    angles = np.deg2rad(layer.angle + rng.normal(0.0, layer.jitter, count) if layer.jitter else
                        np.full(count, layer.angle))  # fmt: skip
    lengths = layer.length * rng.lognormal(0.0, 0.35, count)
    widths = layer.width * rng.uniform(0.6, 1.4, count)
    levels = layer.opacity * rng.uniform(0.4, 1.0, count)
    # Thinner than a pixel: draw one pixel wide, dimmer (the same light spread over less area).
    levels = np.where(widths < 1.0, levels * widths, levels)
    thickness = np.maximum(1, np.rint(widths)).astype(int)
    half_dx = 0.5 * lengths * np.sin(angles)
    half_dy = 0.5 * lengths * np.cos(angles)
    unit = 1 << _SHIFT
    x0 = np.rint((xs + half_dx) * unit).astype(int)  # top end leans with the angle
    y0 = np.rint((ys - half_dy) * unit).astype(int)
    x1 = np.rint((xs - half_dx) * unit).astype(int)
    y1 = np.rint((ys + half_dy) * unit).astype(int)
    for i in range(count):
        cv2.line(canvas, (int(x0[i]), int(y0[i])), (int(x1[i]), int(y1[i])), float(levels[i]),
                 int(thickness[i]), cv2.LINE_AA, _SHIFT)  # fmt: skip
    # Taper the ends and soften the profile: a short motion blur along the mean direction.
    return _motion_blur(canvas, max(3.0, 0.2 * layer.length), layer.angle, normalise=True)


def _field(
    shape: tuple[int, int], layer: StreakLayer, count: int, rng: np.random.Generator
) -> np.ndarray:
    """Impulses smeared by an oriented line kernel: overlapping streaks add up (curtains)."""
    canvas = np.zeros(shape, np.float32)
    bands = 3 if layer.jitter > 1.0 else 1
    sigma = max(0.5, layer.width / 2.0)
    # A Gaussian spot smeared along a line of length L is a ridge of height
    # level / (sqrt(2 pi) sigma L): undo that so a lone streak reaches its opacity, as in "lines".
    gain = max(layer.length, 1.0) * max(1.0, math.sqrt(2.0 * math.pi) * sigma)
    for band in range(bands):
        n = count // bands + (1 if band < count % bands else 0)
        if n == 0:
            continue
        impulses: np.ndarray = np.zeros(shape, np.float32)
        ys = rng.integers(0, shape[0], n)
        xs = rng.integers(0, shape[1], n)
        np.add.at(impulses, (ys, xs), (layer.opacity * rng.uniform(0.4, 1.0, n)).astype(np.float32))
        impulses = cv2.GaussianBlur(impulses, (0, 0), sigma)
        angle = layer.angle + (float(rng.normal(0.0, layer.jitter)) if bands > 1 else 0.0)
        length = layer.length * float(rng.lognormal(0.0, 0.2))
        canvas += _motion_blur(impulses, length, angle, normalise=True) * gain
    return canvas


def _motion_blur(image: np.ndarray, length: float, angle: float, *, normalise: bool) -> np.ndarray:
    """Convolve with an anti-aliased line of ``length`` px at ``angle`` degrees from vertical."""
    size = max(3, int(math.ceil(length)) | 1)
    kernel = np.zeros((size, size), np.float32)
    centre = size // 2
    rad = math.radians(angle)
    dx, dy = 0.5 * length * math.sin(rad), 0.5 * length * math.cos(rad)
    unit = 1 << _SHIFT
    p0 = (int(round((centre + dx) * unit)), int(round((centre - dy) * unit)))
    p1 = (int(round((centre - dx) * unit)), int(round((centre + dy) * unit)))
    cv2.line(kernel, p0, p1, 1.0, 1, cv2.LINE_AA, _SHIFT)
    total = float(kernel.sum())
    if normalise and total > 0:
        kernel /= total
    return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_CONSTANT)


def _drop_colour(clean: np.ndarray, recipe: RainRecipe) -> np.ndarray:
    """Drop radiance: the recipe's colour, pulled towards the scene's mean colour."""
    scene = clean.reshape(-1, 3).mean(axis=0)
    scene = scene / max(float(scene.max()), 1e-3)  # the scene's hue at full brightness
    colour = np.asarray(recipe.colour, np.float32)
    mix = recipe.scene_colour
    return ((1.0 - mix) * colour + mix * colour * scene).astype(np.float32)


def _blend(
    image: np.ndarray, alphas: list[np.ndarray], colour: np.ndarray, blend: str
) -> np.ndarray:
    if blend == "alpha":
        keep = np.ones(image.shape[:2], np.float32)
        for alpha in alphas:  # near layers occlude far ones: union of coverage
            keep *= 1.0 - alpha
        cover = (1.0 - keep)[..., None]
        return image * (1.0 - cover) + colour * cover
    rain = np.clip(np.sum(alphas, axis=0), 0.0, 1.0)[..., None] * colour
    if blend == "screen":
        return 1.0 - (1.0 - image) * (1.0 - rain)
    if blend == "add":
        return np.clip(image + rain, 0.0, 1.0)
    raise ValueError(f"rain blend {blend!r}: choose add, screen or alpha")


def depth_proxy(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A plausible distance map in [0, 1]: a random vertical ramp plus a smooth random field."""
    height, width = shape
    ramp = np.linspace(1.0, 0.0, height, dtype=np.float32)[:, None] * np.ones(
        (1, width), np.float32
    )
    coarse = rng.random((4, 4)).astype(np.float32)
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    mix = float(rng.uniform(0.0, 1.0))
    depth = mix * ramp + (1.0 - mix) * smooth
    lo, hi = float(depth.min()), float(depth.max())
    return (depth - lo) / (hi - lo) if hi > lo + 1e-6 else np.full(shape, 0.5, np.float32)


def _veil(image: np.ndarray, recipe: RainRecipe, rng: np.random.Generator) -> np.ndarray:
    """Atmospheric veil ``O (1 - t) + a t``, ``t = veil * (0.3 + 0.7 * depth)``."""
    t = (recipe.veil * (0.3 + 0.7 * depth_proxy(image.shape[:2], rng)))[..., None]
    airlight = np.asarray(recipe.airlight, np.float32)
    return image * (1.0 - t) + airlight * t


def _lens_drops(
    image: np.ndarray, recipe: RainRecipe, colour: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Large, soft, faint discs: drops too close to the lens to be in focus."""
    height, width = image.shape[:2]
    alpha: np.ndarray = np.zeros((height, width), np.float32)
    for _ in range(recipe.drops):
        radius = max(2, int(recipe.drop_size * rng.uniform(0.5, 1.5)))
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.circle(alpha, centre, radius, float(rng.uniform(0.05, 0.2)), -1, cv2.LINE_AA)
    if recipe.drops:
        alpha = cv2.GaussianBlur(alpha, (0, 0), max(1.0, recipe.drop_size / 3.0))[..., None]
        image = image * (1.0 - alpha) + colour * alpha
    return image


def _noise_field(
    image: np.ndarray, recipe: RainRecipe, rng: np.random.Generator
) -> np.ndarray | None:
    """Signal-dependent sensor noise, ``sigma(x) = noise * sqrt((x + 0.05) / 0.55)``."""
    if recipe.noise <= 0:
        return None
    sigma = recipe.noise * np.sqrt((np.clip(image, 0.0, 1.0) + 0.05) / 0.55)
    return sigma * rng.standard_normal(image.shape, np.float32)


def _camera(
    image: np.ndarray,
    recipe: RainRecipe,
    rng: np.random.Generator,
    noise: np.ndarray | None = None,
) -> np.ndarray:
    """Sensor noise (``noise``, or a fresh draw) and JPEG re-encoding."""
    image = np.clip(image, 0.0, 1.0).astype(np.float32)
    if noise is None:
        noise = _noise_field(image, recipe, rng)
    if noise is not None:
        image = np.clip(image + noise, 0.0, 1.0)
    if recipe.jpeg > 0:
        rgb8 = (image * 255.0 + 0.5).astype(np.uint8)
        ok, data = cv2.imencode(".jpg", rgb8[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, recipe.jpeg])
        decoded = cv2.imdecode(data, cv2.IMREAD_COLOR) if ok else None
        if decoded is not None:
            image = decoded[..., ::-1].astype(np.float32) / 255.0
    return np.ascontiguousarray(image, dtype=np.float32)
