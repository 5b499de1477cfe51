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

``losses.synthetic_loss = "relative_l1"`` divides each crop's L1 by the L1 of its rain::

    L_syn = mean_n  mean |G_B(S_n) - C_n|  /  (mean |S_n - C_n| + eps)

so every crop counts alike: 1 for returning the input, 0 for removing all its rain. With plain L1
a crop under a veil, wrong at every pixel, outweighs a crop of thin streaks, wrong at a few
percent of its pixels, by ten to twenty times, and the network learned tone and veil changes
before streaks. A crop with (almost) no rain gets a large weight (up to ``1 / eps``): there the
answer is to leave the picture alone. ``eps`` is 0.02 in [-1, 1] units (about 2.5 grey levels).
"""

from __future__ import annotations

from torch import Tensor

#: ``eps`` of the relative form, in [-1, 1] units.
RELATIVE_EPS = 0.02


def synthetic_supervision_loss(
    b_synthetic: Tensor, clean: Tensor, rainy: Tensor | None = None, *, form: str = "l1"
) -> Tensor:
    """``mean |G_B(S) - C|`` (``form="l1"``), or each crop's share of its rain left over
    (``form="relative_l1"``, which needs the rendered crops ``rainy`` = S)."""
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
