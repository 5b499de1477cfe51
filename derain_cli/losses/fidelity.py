"""Low-frequency consistency: a fidelity term that is NOT in the paper (derain's addition).

Symbols: O the rainy input, B the background layer, ``(N, 3, H, W)`` in [-1, 1]; ``A_k`` the
mean over non-overlapping ``k x k`` blocks (``avg_pool2d``, stride k)::

    L_low(B, O) = mean |A_k(B) - A_k(O)|        (k = losses.lowfreq_pool, default 8)

Why. Rain streaks are thin, sparse and high-frequency: averaging O over 8x8 blocks leaves mostly
the scene's tone and colour, which a derained image should keep. The adversarial prior, matched
against a few unpaired clean photos, is free to move exactly those (short NLCL runs drift to a
colour cast: docs/training.md, "Early probes of the fidelity terms"); this term pins them to the
input per channel, so it also guards against colour casts, while leaving
the fine scale, where the rain lives, to the other terms. The price is that a dense veil (the
haze of heavy rain) is a low-frequency change too, and this term resists removing it; its weight
trades veil removal against tone fidelity (``docs/training.md``'s ablation table).

``space = "chroma"`` compares only the colour of the block means, ``x - mean_c(x)`` (each pixel
minus the mean of its three channels), and leaves their brightness free. Rain and its veil add
near-grey light (the data's rain model: streaks and a veil ``B (1 - t) + A t`` with a scalar
airlight A), so a rainy input is brighter than its clean image (docs/evaluation.md, "cast"): the
RGB form pins B to that brightness, the chroma form keeps
only the hue, which is what a colour cast changes. The veil also lowers saturation by (1 - t)
(t <= 0.2), which the chroma form keeps.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

LOWFREQ_SPACES = ("rgb", "chroma")


def lowfreq_consistency_loss(b: Tensor, o: Tensor, pool: int, space: str = "rgb") -> Tensor:
    """``mean(|avgpool_k(B) - avgpool_k(O)|)`` with ``k = pool``; a 0-dim fp32 tensor.

    ``space="chroma"`` first removes each pixel's channel mean from B and O (module docstring).
    Blocks that do not fit at the right/bottom edge are dropped (``avg_pool2d`` floor mode); an
    image smaller than one block is compared as a whole.
    """
    if space not in LOWFREQ_SPACES:
        raise ValueError(f"lowfreq space {space!r}: choose one of {', '.join(LOWFREQ_SPACES)}")
    b, o = b.float(), o.float()
    if space == "chroma":
        b = b - b.mean(dim=1, keepdim=True)
        o = o - o.mean(dim=1, keepdim=True)
    k = max(1, min(pool, b.shape[-2], b.shape[-1]))
    return (F.avg_pool2d(b, k) - F.avg_pool2d(o, k)).abs().mean()
