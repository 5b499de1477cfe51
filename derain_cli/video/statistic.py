"""A per-pixel robust statistic that favours the darker samples: rain only adds light.

:func:`lower_mean` takes ``n`` aligned pictures of one scene point, each with a validity mask,
ranks the valid samples of every pixel by luma and returns the mean of the lower part of their
quantile function: with ``upper = 0.5`` the mean over the quantiles 0 to 1/2. With 5 valid samples
that weighs the darkest three 1/4, 1/2 and 1/4; with 2, three quarters of the darker and one
quarter of the brighter; with 1 it is that sample. Bright outliers (a streak in one frame) never
enter it, and averaging the lower half, rather than taking the minimum, keeps noise from darkening
it much.
Samples are ranked by luma and averaged as RGB triplets, so colours are never mixed across
samples channel by channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import cv2
import numpy as np

#: BT.601 luma weights, the ranking key.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@cache
def rank_weights(count: int, upper: float) -> np.ndarray:
    """Weights of ranks ``0..count-1`` in the mean of the quantile function over ``[0, upper]``.

    The quantile function runs piecewise linearly through the sorted samples, placed at
    ``r / (count - 1)``; its mean over ``[0, upper]`` is a fixed blend of those samples.
    """
    if count == 1:
        return np.ones(1, np.float32)
    step = 1.0 / (count - 1)
    weights = np.zeros(count, np.float64)
    for r in range(count):
        # The integral over [0, upper] of the hat function centred at r * step (height 1).
        lo, mid, hi = (r - 1) * step, r * step, (r + 1) * step
        weights[r] = _ramp_area(lo, mid, upper, rising=True) + _ramp_area(mid, hi, upper, False)
    return (weights / weights.sum()).astype(np.float32)


def _ramp_area(a: float, b: float, upper: float, rising: bool) -> float:
    """Area under the ramp from (a, 0) to (b, 1) (or (a, 1) to (b, 0)) within [0, upper]."""
    lo, hi = max(a, 0.0), min(b, upper)
    if hi <= lo:
        return 0.0

    def height(x: float) -> float:
        t = (x - a) / (b - a)
        return t if rising else 1.0 - t

    return (hi - lo) * (height(lo) + height(hi)) / 2.0


def lower_mean(
    samples: Sequence[np.ndarray], valid: Sequence[np.ndarray], upper: float = 0.5
) -> np.ndarray:
    """``n`` float32 ``(H, W, 3)`` samples and ``n`` bool ``(H, W)`` masks -> ``(H, W, 3)``.

    Every pixel needs at least one valid sample (the frame itself, in the fusion). Ranks come
    from pairwise comparisons (``n`` is small), so no sort or gather of whole pictures is needed;
    equal samples rank in the order given.
    """
    if not 0.0 < upper <= 1.0:
        raise ValueError(f"upper quantile must be in (0, 1], got {upper}")
    count = len(samples)
    pairs = zip(samples, valid, strict=True)
    keys = [np.where(mask, cv2.transform(sample, LUMA[None]), np.inf) for sample, mask in pairs]
    table = np.zeros((count + 1, count + 1), np.float32)  # [valid count, rank]; 0 past the valid
    for m in range(1, count + 1):
        table[m, :m] = rank_weights(m, upper)
    # Row of each pixel's weights in the flattened table: its valid count times (n + 1).
    row = np.zeros(keys[0].shape, np.int32)
    for mask in valid:
        row += mask
    row *= count + 1
    flat = table.ravel()
    out = np.zeros(samples[0].shape, np.float32)
    for i, sample in enumerate(samples):
        index = row.copy()
        for j in range(count):
            if j != i:  # j ranks before i: darker, or as dark and given earlier
                index += keys[j] <= keys[i] if j < i else keys[j] < keys[i]
        out += np.take(flat, index)[..., None] * sample
    return out
