"""Adversarial prior P_b(B) on the background layer (paper Eq. 3), as least squares (LSGAN).

The paper writes the log-likelihood GAN ``E_B[log D(B)] + E_O[log(1 - D(G_B(O)))]``; the
authors' code (CUT's ``GANLoss('lsgan')``) and this project use LSGAN: PatchGAN scores
``(N, 1, H', W')`` regressed to 1 for real and 0 for fake. "Real" are UNPAIRED clean photographs,
"fake" is B = G_B(O). Authors' names: ``loss_D_real``, ``loss_D_fake``, ``loss_G_GAN``.
"""

from __future__ import annotations

from torch import Tensor


def lsgan_discriminator_loss(real_scores: Tensor, fake_scores: Tensor) -> tuple[Tensor, Tensor]:
    """``(mean((D(clean) - 1)^2), mean(D(B)^2))``; the D step minimises half their sum."""
    return (real_scores.float() - 1.0).square().mean(), fake_scores.float().square().mean()


def lsgan_generator_loss(fake_scores: Tensor) -> Tensor:
    """``mean((D(B) - 1)^2)``: G_B is rewarded when D scores B as a clean photograph."""
    return (fake_scores.float() - 1.0).square().mean()
