"""Synthetic supervision: a term that is NOT in the paper (derain's addition, off by default).

Symbols: C an unpaired clean crop (the discriminator's "real" example), ``S = render(C)`` the same
crop with rain rendered over it by :mod:`derain_cli.synth` (in the data-loader workers, seeded by
the sample counter), both ``(N, 3, H, W)`` in [-1, 1]::

    L_syn = mean |G_B(S) - C|

Why. NLCL learns from real rain without pairs, which on a small CPU budget moves slowly
(docs/training.md). Rendered rain over the clean photos NLCL already has gives G_B a direct target
for every pixel; the five NLCL terms on the real rainy photos keep training alongside it
(``losses.use_synthetic`` adds this term, it replaces none). The renderer's breadth decides how far
this transfers: a model supervised by one rain model alone gains nothing on rain rendered by
others.

L1 rather than L2: L2 rewards a blurred average wherever the rain is ambiguous; L1 keeps edges
(the usual choice of supervised deraining since PReNet, which used negative SSIM, and MPRNet's
Charbonnier, a smoothed L1).

``losses.synthetic_loss = "relative_l1"`` divides each crop's L1 by the L1 of its rain::

    L_syn = mean_n  mean |G_B(S_n) - C_n|  /  (mean |S_n - C_n| + eps)

so every crop counts alike: 1 for returning the input, 0 for removing all its rain. With plain L1
a crop under a veil, wrong at every pixel, outweighs a crop of thin streaks, wrong at a few
percent of its pixels, by ten to twenty times, and the network learned tone and veil changes
before streaks. A crop with (almost) no rain gets a large weight (up to ``1 / eps``): there the
answer is to leave the picture alone. ``eps`` is 0.02 in [-1, 1] units (about 2.5 grey levels).

``losses.synthetic_ssim_weight = w`` (> 0) adds a structure term to either form::

    L_syn += w * (1 - SSIM(G_B(S), C))

SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, C1 = 0.01^2, C2 = 0.03^2, on [0, 1]
images, per RGB channel, valid positions only) falls when texture or edges are taken out with the
rain, which L1 hardly sees: L1 alone lets a ``output = "subtract_rain"`` G_B dim bright texture
along with the streaks, raising PSNR while SSIM falls (docs/training.md, "Early probes of the
fidelity terms"). Off in every shipped config.
The mix of an L1 and an SSIM term is the usual restoration loss (Zhao et al.,
"Loss Functions for Image Restoration with Neural Networks", 2017).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from derain_cli.evaluation.metrics import SSIM_K1, SSIM_K2, SSIM_SIGMA, SSIM_WINDOW

#: ``eps`` of the relative form, in [-1, 1] units.
RELATIVE_EPS = 0.02


def ssim_map(a: Tensor, b: Tensor) -> Tensor:
    """Per-channel SSIM of ``a`` and ``b`` ``(N, C, H, W)`` in [-1, 1], at valid positions only
    (``H, W >= SSIM_WINDOW``); differentiable, computed in fp32. The same window and constants
    as :func:`derain_cli.evaluation.metrics.ssim`, which scores ``derain eval``."""
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(
            f"SSIM needs two (N, C, H, W) tensors of one shape, got {a.shape}, {b.shape}"
        )
    if min(a.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs crops of at least {SSIM_WINDOW} px, got {tuple(a.shape[-2:])}"
        )
    x, y = (a.float() + 1) / 2, (b.float() + 1) / 2
    channels = x.shape[1]
    g = torch.arange(SSIM_WINDOW, dtype=torch.float32, device=x.device) - (SSIM_WINDOW - 1) / 2
    g = torch.exp(-(g**2) / (2 * SSIM_SIGMA**2))
    g = g / g.sum()
    window = (g[:, None] * g[None, :]).expand(channels, 1, SSIM_WINDOW, SSIM_WINDOW).contiguous()

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(t, window, groups=channels)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))


def synthetic_supervision_loss(
    b_synthetic: Tensor,
    clean: Tensor,
    rainy: Tensor | None = None,
    *,
    form: str = "l1",
    ssim_weight: float = 0.0,
) -> Tensor:
    """``mean |G_B(S) - C|`` (``form="l1"``), or each crop's share of its rain left over
    (``form="relative_l1"``, which needs the rendered crops ``rainy`` = S); plus
    ``ssim_weight * (1 - SSIM(G_B(S), C))`` when ``ssim_weight > 0``."""
    base = _fidelity(b_synthetic, clean, rainy, form)
    if ssim_weight <= 0:
        return base
    return base + ssim_weight * (1 - ssim_map(b_synthetic, clean).mean())


def _fidelity(b_synthetic: Tensor, clean: Tensor, rainy: Tensor | None, form: str) -> Tensor:
    if b_synthetic.shape != clean.shape:
        raise ValueError(
            f"shapes differ: G_B(S) {tuple(b_synthetic.shape)}, C {tuple(clean.shape)}"
        )
    error = (b_synthetic.float() - clean.float()).abs()
    if form == "l1":
        return error.mean()
    if form != "relative_l1":
        raise ValueError(f"synthetic loss {form!r}: choose l1 or relative_l1")
    if rainy is None or rainy.shape != clean.shape:
        raise ValueError("the relative form needs the rendered crops S, shaped like C")
    rain = (rainy.float() - clean.float()).abs().mean(dim=(1, 2, 3))
    return (error.mean(dim=(1, 2, 3)) / (rain + RELATIVE_EPS)).mean()
