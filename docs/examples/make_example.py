"""Make ``docs/examples/rainy-camera.jpg``: a CC0 photo with synthetic rain streaks added.

Source: scikit-image's ``camera`` image (512 x 512, grayscale), "CC0 by the photographer (Lav
Varshney)" per ``skimage.data.camera``'s documentation. The rain follows the streak recipe of the
synthetic training sets: sparse random noise, a small Gaussian blur, an oriented line
(motion-blur) kernel, scaled and added, clipped to [0, 1]. Two layers (fine, far
drops and longer, brighter near ones) make it look less regular.

Run from the repository root (needs scikit-image, a test extra)::

    python docs/examples/make_example.py

The output is deterministic for a given numpy/OpenCV/Pillow.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "rainy-camera.jpg"
SEED = 2022


def line_kernel(length: int, angle_deg: float) -> np.ndarray:
    """A normalised 1-px line of ``length`` pixels at ``angle_deg`` from vertical."""
    size = length if length % 2 else length + 1
    kernel = np.zeros((size, size), np.float32)
    kernel[:, size // 2] = 1.0
    rotation = cv2.getRotationMatrix2D(((size - 1) / 2, (size - 1) / 2), angle_deg, 1.0)
    kernel = cv2.warpAffine(kernel, rotation, (size, size), flags=cv2.INTER_LINEAR)
    return kernel / kernel.sum()


def streak_layer(
    shape: tuple[int, int],
    rng: np.random.Generator,
    *,
    density: float,
    length: int,
    angle_deg: float,
    strength: float,
) -> np.ndarray:
    """Sparse noise -> small blur -> oriented motion blur -> scaled to ``strength`` at the top."""
    seeds = (rng.random(shape) < density).astype(np.float32) * rng.uniform(0.5, 1.0, shape)
    seeds = cv2.GaussianBlur(seeds.astype(np.float32), (3, 3), 0.6)
    streaks = cv2.filter2D(seeds, -1, line_kernel(length, angle_deg))
    top = float(np.percentile(streaks, 99.9)) or 1.0
    return np.clip(streaks / top, 0.0, 1.0) * strength


def make(output: Path = OUTPUT) -> Path:
    from skimage import data

    clean = data.camera().astype(np.float32) / 255.0  # 512 x 512, CC0
    rng = np.random.default_rng(SEED)
    angle = 12.0
    rain = streak_layer(clean.shape, rng, density=0.004, length=19, angle_deg=angle, strength=0.35)
    rain += streak_layer(clean.shape, rng, density=0.0012, length=37, angle_deg=angle, strength=0.5)
    rainy = np.clip(clean + rain, 0.0, 1.0)
    pixels = np.rint(rainy * 255.0).astype(np.uint8)
    Image.fromarray(pixels, mode="L").save(output, "JPEG", quality=90, optimize=True)
    return output


if __name__ == "__main__":
    path = make()
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
