"""PatchGAN discriminator (pix2pix ``NLayerDiscriminator``) whose encoder feeds the layer contrast.

With ``layers=3`` (the default) the receptive field of each output logit is 70x70 pixels::

    blocks[0]        Conv4x4 s2 (3 -> ndf), LeakyReLU(0.2)                 /2
    blocks[1..n-1]   Conv4x4 s2, InstanceNorm, LeakyReLU(0.2)              /4, /8
    blocks[n]        Conv4x4 s1, InstanceNorm, LeakyReLU(0.2)              ~/8
    blocks[n+1]      Conv4x4 s1 (-> 1): one real/fake logit per patch

Paper Sec. 3.3 / Table 3: the discriminator's encoder separates image structure from rain
streaks better than the generator's, so :meth:`PatchDiscriminator.encode` exposes the activations
of ``blocks[0..n]`` for the layer contrast. InstanceNorm is ``affine=False`` (pix2pix default),
so the discriminator has no buffers. Width, depth and norm have no defaults here: they are
``model.d_channels``, ``model.d_layers`` and ``model.d_norm`` in the config.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class PatchDiscriminator(nn.Module):
    """``(N, 3, H, W)`` in [-1, 1] -> ``(N, 1, H', W')`` LSGAN scores, one per ~70x70 patch."""

    def __init__(
        self,
        *,
        channels: int,
        layers: int,
        norm: str,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if norm not in ("instance", "none"):
            raise ValueError(f"unknown discriminator norm {norm!r} (instance, none)")

        def block(c_in: int, c_out: int, stride: int, normalise: bool) -> nn.Sequential:
            parts: list[nn.Module] = [nn.Conv2d(c_in, c_out, 4, stride=stride, padding=1)]
            if normalise and norm == "instance":
                parts.append(nn.InstanceNorm2d(c_out, affine=False))
            parts.append(nn.LeakyReLU(0.2, inplace=True))
            return nn.Sequential(*parts)

        widths = [channels * min(2**i, 8) for i in range(layers + 1)]
        blocks = [block(in_channels, widths[0], 2, normalise=False)]
        blocks += [block(widths[i - 1], widths[i], 2, normalise=True) for i in range(1, layers)]
        blocks.append(block(widths[layers - 1], widths[layers], 1, normalise=True))
        blocks.append(nn.Sequential(nn.Conv2d(widths[layers], 1, 4, stride=1, padding=1)))
        self.blocks = nn.ModuleList(blocks)
        #: Output channels of every encoder block (``encode`` layer index -> channels).
        self.channels: tuple[int, ...] = tuple(widths)

    @property
    def num_encoder_layers(self) -> int:
        return len(self.blocks) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return x

    def encode(self, x: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        """Activations after each block in ``layers`` (0-based, encoder blocks only), in order."""
        wanted = list(layers)
        bad = [i for i in wanted if not 0 <= i < self.num_encoder_layers]
        if bad:
            raise ValueError(
                f"discriminator encoder layers are 0..{self.num_encoder_layers - 1}, got {bad}"
            )
        found: dict[int, torch.Tensor] = {}
        for i, blk in enumerate(self.blocks[: max(wanted) + 1]):
            x = blk(x)
            if i in wanted:
                found[i] = x
        return [found[i] for i in wanted]
