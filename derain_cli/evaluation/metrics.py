"""Image-quality metrics with the deraining literature's conventions: PSNR, SSIM and NIQE.

PSNR and SSIM are full-reference (a derained image against its clean original). By default they
are computed on the Y channel of BT.601 YCbCr, as the deraining papers (and their MATLAB scripts)
do: ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` with R, G, B in 0..255, peak 255.
SSIM follows Wang et al. 2004 (``ssim.m``): an 11x11 Gaussian window with sigma 1.5, K1 = 0.01,
K2 = 0.03, statistics over the "valid" part of the image only (5 border pixels dropped).
``rgb=True`` scores the three RGB channels instead (PSNR over all values, SSIM averaged).

NIQE (Mittal, Soundararajan and Bovik, "Making a completely blind image quality analyzer",
IEEE SPL 2012) is no-reference: lower means more natural. It follows the authors' MATLAB release
(and BasicSR's port of it): Y channel rounded to integers, 96x96 blocks, two scales with
MATLAB's antialiased bicubic ``imresize(., 0.5)`` in between, the published pristine
multivariate-Gaussian model (``niqe/niqe_pris_params.npz``, see ``niqe/NIQE_README.md``).
Everything is vectorised over blocks, so a 1024-px photo takes a fraction of a second.

Images come in as the project's convention: float ``H x W x 3`` RGB in [0, 1]. Callers that
score files should quantise to the stored bit depth first (``evaluate.py`` does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from importlib import resources

import cv2
import numpy as np
from scipy.ndimage import convolve
from scipy.special import gamma as gamma_fn

#: BT.601 luma weights applied to RGB in [0, 1], giving Y in [16, 235] (0..255 scale).
BT601_Y = np.array([65.481, 128.553, 24.966], dtype=np.float64)

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
PEAK = 255.0

NIQE_BLOCK = 96


def rgb_to_y(rgb: np.ndarray) -> np.ndarray:
    """Y of BT.601 YCbCr on the 0..255 scale (float64, not rounded) from RGB in [0, 1]."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 RGB array, got shape {rgb.shape}")
    return 16.0 + rgb.astype(np.float64) @ BT601_Y


def _planes(rgb: np.ndarray, *, use_rgb: bool) -> np.ndarray:
    """The planes to score, H x W x C float64 on the 0..255 scale."""
    if use_rgb:
        return rgb.astype(np.float64) * PEAK
    return rgb_to_y(rgb)[..., None]


def _check_pair(pred: np.ndarray, target: np.ndarray) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"image sizes differ: {pred.shape} vs {target.shape}")


def _crop(planes: np.ndarray, border: int) -> np.ndarray:
    if border <= 0:
        return planes
    return planes[border:-border, border:-border]


def psnr(pred: np.ndarray, target: np.ndarray, *, rgb: bool = False, crop_border: int = 0) -> float:
    """Peak signal-to-noise ratio in dB (peak 255); ``inf`` for identical images."""
    _check_pair(pred, target)
    a = _crop(_planes(pred, use_rgb=rgb), crop_border)
    b = _crop(_planes(target, use_rgb=rgb), crop_border)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(PEAK**2 / mse)


@cache
def _ssim_kernel() -> np.ndarray:
    """1-D normalised Gaussian; MATLAB's ``fspecial('gaussian', 11, 1.5)`` is its outer product."""
    return cv2.getGaussianKernel(SSIM_WINDOW, SSIM_SIGMA).astype(np.float64)


def _ssim_plane(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of one plane over the valid window positions (Wang et al.'s ``ssim.m``)."""
    k = _ssim_kernel()
    pad = SSIM_WINDOW // 2

    def blur(x: np.ndarray) -> np.ndarray:
        # The filtered border is dropped below, so the border mode never reaches the result.
        return cv2.sepFilter2D(x, cv2.CV_64F, k, k, borderType=cv2.BORDER_REFLECT)[
            pad:-pad, pad:-pad
        ]

    c1 = (SSIM_K1 * PEAK) ** 2
    c2 = (SSIM_K2 * PEAK) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))


def ssim(pred: np.ndarray, target: np.ndarray, *, rgb: bool = False, crop_border: int = 0) -> float:
    """Structural similarity (mean over the image; RGB: mean of the three channels)."""
    _check_pair(pred, target)
    a = _crop(_planes(pred, use_rgb=rgb), crop_border)
    b = _crop(_planes(target, use_rgb=rgb), crop_border)
    if min(a.shape[:2]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW} px, got {a.shape[:2]}")
    return float(np.mean([_ssim_plane(a[..., c], b[..., c]) for c in range(a.shape[2])]))


def colour_shift(pred: np.ndarray, target: np.ndarray) -> float:
    """Colour/tone cast in grey levels (0-255): ``max_c |mean(pred_c) - mean(target_c)|``.

    The mean signed difference of each RGB channel over the whole image: noise and detail cancel
    out, a tint or a brightness drift does not. PSNR barely moves under a shift of a few levels,
    yet a green cast of 3 levels is visible on a grey sky, so the project aims its default model at
    < 2. Largest channel, so a cast in one channel is not averaged away.
    """
    _check_pair(pred, target)
    diff = pred.astype(np.float64) - target.astype(np.float64)
    return float(np.abs(diff.reshape(-1, diff.shape[-1]).mean(axis=0)).max() * 255.0)


# --------------------------------------------------------------------------------------------
# NIQE


@dataclass(frozen=True)
class NiqeModel:
    """The pristine multivariate Gaussian (36 features) and the 7x7 local-normalisation window."""

    mu: np.ndarray
    cov: np.ndarray
    window: np.ndarray


@cache
def niqe_model() -> NiqeModel:
    """Load the published pristine parameters shipped with the package."""
    ref = resources.files("derain_cli.evaluation") / "niqe" / "niqe_pris_params.npz"
    with resources.as_file(ref) as path, np.load(path) as data:
        return NiqeModel(
            mu=data["mu_pris_param"].astype(np.float64).ravel(),
            cov=data["cov_pris_param"].astype(np.float64),
            window=data["gaussian_window"].astype(np.float64),
        )


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5, as MATLAB's ``imresize`` uses."""
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


def imresize_matrix(in_len: int, out_len: int, scale: float) -> np.ndarray:
    """The ``out_len x in_len`` matrix of MATLAB's bicubic ``imresize`` along one axis.

    With antialiasing for downscaling (the kernel is stretched by 1/scale) and MATLAB's
    symmetric edge handling (out-of-range taps mirror back into the image, edge pixel repeated).
    """
    kernel_width = 4.0
    if scale < 1:
        kernel_width /= scale
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + np.arange(taps)[None, :]
    dist = u[:, None] - indices
    weights = scale * _cubic(dist * scale) if scale < 1 else _cubic(dist)
    weights /= weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    cols = mirror[(indices.astype(np.int64) - 1) % (2 * in_len)]
    matrix = np.zeros((out_len, in_len), dtype=np.float64)
    np.add.at(matrix, (np.repeat(np.arange(out_len), taps), cols.ravel()), weights.ravel())
    return matrix


def imresize_half(plane: np.ndarray) -> np.ndarray:
    """MATLAB ``imresize(plane, 0.5)`` (bicubic, antialiased) of a 2-D float array."""
    h, w = plane.shape
    rows = imresize_matrix(h, math.ceil(h * 0.5), 0.5)
    cols = imresize_matrix(w, math.ceil(w * 0.5), 0.5)
    return rows @ plane @ cols.T


# The grid of AGGD shape parameters the MATLAB code searches, and the ratio it matches.
_GAMMAS = np.arange(0.2, 10.001, 0.001)
_R_GAMMA = gamma_fn(2 / _GAMMAS) ** 2 / (gamma_fn(1 / _GAMMAS) * gamma_fn(3 / _GAMMAS))


def _aggd(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit an asymmetric generalised Gaussian to each row of ``values`` (moment matching).

    Returns (alpha, beta_left, beta_right) per row. Rows without negative (or positive) values
    (flat or clipped blocks) have no ratio to match: MATLAB's ``min`` over all-NaN differences
    then returns the first grid position, so alpha is 0.2 (kept, it enters ``nanmean``) while the
    betas are NaN (the caller's ``nanmean``/``nancov`` skip them), exactly as the MATLAB code does.
    """
    neg, pos = values < 0, values > 0
    sq = values * values
    with np.errstate(invalid="ignore", divide="ignore"):
        left_std = np.sqrt((sq * neg).sum(axis=1) / neg.sum(axis=1))
        right_std = np.sqrt((sq * pos).sum(axis=1) / pos.sum(axis=1))
        gammahat = left_std / right_std
        rhat = np.mean(np.abs(values), axis=1) ** 2 / np.mean(sq, axis=1)
        rhatnorm = rhat * (gammahat**3 + 1) * (gammahat + 1) / (gammahat**2 + 1) ** 2
    # argmin over the grid of (r_gamma - rhatnorm)^2: r_gamma increases with gamma, so the
    # nearest grid value is one of the two neighbours of the insertion point (first one on ties).
    valid = np.isfinite(rhatnorm)
    target = np.where(valid, rhatnorm, 0.0)
    hi = np.clip(np.searchsorted(_R_GAMMA, target), 1, len(_R_GAMMA) - 1)
    lo = hi - 1
    pick = np.where((_R_GAMMA[lo] - target) ** 2 <= (_R_GAMMA[hi] - target) ** 2, lo, hi)
    alpha = np.where(valid, _GAMMAS[pick], _GAMMAS[0])
    with np.errstate(invalid="ignore"):
        ratio = np.sqrt(gamma_fn(1 / alpha) / gamma_fn(3 / alpha))
    return alpha, left_std * ratio, right_std * ratio


def _block_features(blocks: np.ndarray) -> np.ndarray:
    """The 18 NIQE features of each block (``blocks``: n x bh x bw of normalised luminance)."""
    n = blocks.shape[0]
    alpha, beta_l, beta_r = _aggd(blocks.reshape(n, -1))
    feats = [alpha, (beta_l + beta_r) / 2]
    # Products of neighbours (horizontal, vertical, two diagonals); shifts wrap inside the block
    # as in the reference code.
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        shifted = np.roll(blocks, shift, axis=(1, 2))
        a, bl, br = _aggd((blocks * shifted).reshape(n, -1))
        with np.errstate(invalid="ignore"):
            mean = (br - bl) * gamma_fn(2 / a) / gamma_fn(1 / a)
        feats.extend([a, mean, bl, br])
    return np.stack(feats, axis=1)


def _to_blocks(plane: np.ndarray, bh: int, bw: int) -> np.ndarray:
    h, w = plane.shape
    return plane.reshape(h // bh, bh, w // bw, bw).transpose(0, 2, 1, 3).reshape(-1, bh, bw)


def niqe_y(y: np.ndarray, *, block: int = NIQE_BLOCK) -> float:
    """NIQE of a luminance plane on the 0..255 scale (already rounded, as MATLAB's uint8)."""
    model = niqe_model()
    h, w = y.shape
    nh, nw = h // block, w // block
    if nh < 1 or nw < 1:
        raise ValueError(f"NIQE needs images of at least {block}x{block} px, got {w}x{h}")
    img = y[: nh * block, : nw * block].astype(np.float64)
    features = []
    for scale in (1, 2):
        mu = convolve(img, model.window, mode="nearest")
        sigma = np.sqrt(np.abs(convolve(img * img, model.window, mode="nearest") - mu * mu))
        normalised = (img - mu) / (sigma + 1.0)
        features.append(_block_features(_to_blocks(normalised, block // scale, block // scale)))
        if scale == 1:
            img = imresize_half(img)
    feats = np.concatenate(features, axis=1)
    mu_d = np.nanmean(feats, axis=0)
    complete = feats[~np.isnan(feats).any(axis=1)]
    if complete.shape[0] < 2:
        raise ValueError("NIQE needs at least two blocks with complete statistics")
    cov_d = np.cov(complete, rowvar=False)
    diff = model.mu - mu_d
    quality = diff @ np.linalg.pinv((model.cov + cov_d) / 2) @ diff
    return float(np.sqrt(quality))


def niqe(rgb: np.ndarray, *, crop_border: int = 0) -> float:
    """NIQE of an RGB image in [0, 1] (lower is more natural); Y channel as in BasicSR/MATLAB."""
    return niqe_y(_crop(np.round(rgb_to_y(rgb)), crop_border))
