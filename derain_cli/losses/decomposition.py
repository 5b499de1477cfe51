"""Decomposition terms of L_decom (paper Eq. 2), apart from the adversarial prior.

Symbols: O the rainy input, B = G_B(O) the background layer, R = G_R(O) the rain layer, all
``(N, 3, H, W)`` in [-1, 1]. Eq. 1 models ``O = B + R``.

- Self-consistency ``||B + R - O||_F^2``: we use the MEAN squared error (the authors' code:
  ``MSELoss()(fake_B + fake_R, real_A)``), which is the paper's sum divided by the number of
  values, so the weights stay independent of the crop size.
- Rain sparsity ``lambda * ||R||_1`` (P_r, lambda = 0.1): mean absolute value of R. The authors'
  code instead penalised ``L1(O, B)`` (``criterionL1(real_A, fake_B)``); that variant is
  ``rain_l1_target = "o_minus_b"``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def consistency_loss(b: Tensor, r: Tensor, o: Tensor) -> Tensor:
    """``mean((B + R - O)^2)`` over every value (Eq. 2, first term); a 0-dim tensor."""
    return (b + r - o).float().square().mean()


def rain_sparsity_loss(r: Tensor) -> Tensor:
    """``mean(|R|)`` (Eq. 2, P_r(R) = ||R||_1, up to the 1/numel normalisation)."""
    return r.float().abs().mean()


def background_fidelity_loss(b: Tensor, o: Tensor) -> Tensor:
    """``mean(|O - B|)``: the authors' code's stand-in for ||R||_1 (their ``loss_L1``)."""
    return torch.abs(o.float() - b.float()).mean()
