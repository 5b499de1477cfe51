"""Synthetic supervision: a term that is NOT in the paper (derain's addition, off by default).

Symbols: C an unpaired clean crop (the discriminator's "real" example), ``S = render(C)`` the same
crop with rain rendered over it by :mod:`derain_cli.synth` (in the data-loader workers, seeded by
the sample counter), both ``(N, 3, H, W)`` in [-1, 1]::

    L_syn = mean |G_B(S) - C|

Why. NLCL learns from real rain without pairs, which on a small CPU budget moves slowly (a few
thousand steps remove little rain; docs/training.md). Rendered rain over the clean photos NLCL
already has gives G_B a direct target for every pixel, so streaks are removed within minutes; the
five NLCL terms on the real rainy photos keep training alongside it (``losses.use_synthetic``
adds this term, it replaces none). The renderer's breadth decides how far this transfers: a model
supervised by one rain model alone gains nothing on rain rendered by others.

L1 rather than L2: L2 rewards a blurred average wherever the rain is ambiguous; L1 keeps edges
(the usual choice of supervised deraining since PReNet, which used negative SSIM, and MPRNet's
Charbonnier, a smoothed L1).
"""

from __future__ import annotations

from torch import Tensor


def synthetic_supervision_loss(b_synthetic: Tensor, clean: Tensor) -> Tensor:
    """``mean |G_B(S) - C|``: G_B's output on the rendered rain against the clean crop."""
    if b_synthetic.shape != clean.shape:
        raise ValueError(
            f"shapes differ: G_B(S) {tuple(b_synthetic.shape)}, C {tuple(clean.shape)}"
        )
    return (b_synthetic.float() - clean.float()).abs().mean()
