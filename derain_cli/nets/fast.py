"""A fast generator: the authors' residual blocks behind a lossless space-to-depth front.

``arch = "nlcl-s2d"``. The authors' generator runs every block at full resolution, so a megapixel
costs 37 full-resolution 3x3 convolutions (speeds: ``docs/benchmarks.md``). Here the image is
first rearranged, losslessly, into ``r x r`` pixel cells (``PixelUnshuffle(r)``:
``(N, 3, H, W) -> (N, 3 r^2, H/r, W/r)``), the same blocks run on that 1/r^2-size grid, and
``PixelShuffle(r)`` puts the pixels back::

    pad H, W up to a multiple of r (replicate), PixelUnshuffle(r)
    gen.0             Conv3x3(3 r^2 -> C)
    gen.1..gen.N      ResBlock(C)   (the authors' block: InstanceNorm, affine=False)
    gen.N+1           Tail(C)       (conv3x3, IN, ReLU, conv3x3)
    gen.N+2           Conv3x3(C -> 3 r^2)
    PixelShuffle(r), crop to H x W, then the output parametrisation (``apply_output``)

Nothing is thrown away (the rearrangement is a bijection), but each 3x3 convolution now sees a
``3r x 3r`` pixel neighbourhood, and every value of a cell is predicted jointly, so fine detail
has to be learned back by the convolutions: whether quality holds is for training to show.
With r=4, 48 channels and 12 blocks (the defaults) the blocks do about 1/r^2 of the full-resolution
work per pixel; ``bench/infer_speed.py`` measures the speed (``docs/benchmarks.md``).

Padding uses edge replication (no black border for the InstanceNorm statistics to see) and
always leaves at least two cells per side, so every image size works, even 1 x 1.

Tiling. The network is a lossless rearrangement (:meth:`to_cells`), a plain stack of 3x3
convolutions and InstanceNorms (``gen``), and the inverse rearrangement (:meth:`from_cells`).
:class:`derain_cli.inference.engine.Derainer` recognises that shape: it rearranges the image on
the host, streams ``gen`` over the cells tile by tile with exact whole-image InstanceNorm
statistics (as for the authors' net), and puts the pixels back, so ``--tile`` and automatic
tiling give the untiled result up to rounding. Activations live at 1/r^2 of the pixels
(``C / r^2 = 3`` floats per image pixel per live activation): run whole, an image took about
80 B/px of peak CPU memory (2048x2048: 0.34 GB; 4096x4096: 1.35 GB), against about 640 B/px for
the authors' layout.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from derain_cli.nets.generator import (
    Norm,
    Output,
    ResBlock,
    Tail,
    apply_output,
    check_norm,
    check_output,
)

#: Extra full-resolution planes ``gen`` hands to the refinement head (``refine > 0``) besides
#: its coarse output: where the cells see streaks and which way they run, for the head to place
#: them on the exact pixels.
REFINE_GUIDES = 5


class SpaceToDepthGenerator(nn.Module):
    """The NLCL blocks on ``r x r`` pixel cells (``arch = "nlcl-s2d"``); [-1, 1] in and out."""

    def __init__(
        self,
        *,
        in_channels: int = 3,
        channels: int = 48,
        blocks: int = 12,
        factor: int = 4,
        output: Output = "direct",
        norm: Norm = "instance",
        refine: int = 0,
    ) -> None:
        super().__init__()
        check_output(output)
        check_norm(norm)
        if refine < 0:
            raise ValueError(f"refine width must be >= 0 (0 = off), got {refine}")
        if factor < 1:
            raise ValueError(f"space-to-depth factor must be >= 1, got {factor}")
        if channels < 1 or blocks < 0 or in_channels < 1:
            raise ValueError(
                f"need channels >= 1, blocks >= 0, in_channels >= 1 "
                f"(got {channels}, {blocks}, {in_channels})"
            )
        self.output = output
        self.factor = factor
        self.in_channels = in_channels
        cell = in_channels * factor * factor
        planes = in_channels + (REFINE_GUIDES if refine else 0)  # full-resolution planes out
        self.unshuffle = nn.PixelUnshuffle(factor)
        layers: list[nn.Module] = [nn.Conv2d(cell, channels, 3, padding=1)]
        layers += [ResBlock(channels, norm) for _ in range(blocks)]
        layers += [Tail(channels, norm), nn.Conv2d(channels, planes * factor**2, 3, padding=1)]
        self.gen = nn.Sequential(*layers)
        self.shuffle = nn.PixelShuffle(factor)
        self.refine: nn.Module | None = None
        #: Pixels of context :meth:`from_cells` reads around each output pixel (the tiling
        #: engine runs it in strips with this halo).
        self.from_cells_halo = 2 if refine else 0
        if refine:
            self.refine = nn.Sequential(
                nn.Conv2d(in_channels + planes, refine, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(refine, in_channels, 3, padding=1),
            )

    def to_cells(self, x: torch.Tensor, *, always_pad: bool = False) -> torch.Tensor:
        """Replicate-pad to whole cells (at least two per side) and unshuffle: ``gen``'s input.

        Lossless and parameter-free: the tiling engine runs it on the host, streams ``gen`` (a
        plain stack of convolutions and InstanceNorms) over the cells tile by tile with exact
        whole-image statistics, and finishes with :meth:`from_cells`. ``always_pad`` pads even
        by 0 pixels (a copy) so that a traced graph (ONNX export) does not depend on the size.
        """
        r = self.factor
        height, width = x.shape[-2:]
        # whole cells, at least two; written so that it traces (ONNX export) for sizes >= 2 r
        pad_h = 2 * r - height if height < 2 * r else (-height) % r
        pad_w = 2 * r - width if width < 2 * r else (-width) % r
        if always_pad or pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        return self.unshuffle(x)

    def from_cells(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The background from input ``x`` and ``gen``'s output cells ``y``.

        Parameter-free unless ``refine`` is on; then two full-resolution 3x3 convolutions (a
        receptive radius of 2 pixels) see the input pixels beside the coarse output planes.
        """
        height, width = x.shape[-2:]
        planes = self.shuffle(y)[..., :height, :width]
        if self.refine is None:
            return apply_output(x, planes, self.output)
        coarse = planes[:, : self.in_channels]
        return apply_output(x, coarse + self.refine(torch.cat([x, planes], 1)), self.output)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_cells(x, self.gen(self.to_cells(x)))

    def encode(self, x: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        """Activations of ``gen[i]`` for each ``i`` in ``layers`` (at 1/r of the resolution).

        The location contrast's encoder (``encode_generator``): the same indexing as the
        authors' ``nce_layers`` on their ``gen``, counted from the first convolution after the
        space-to-depth front. ``gather_features`` maps patch centres onto these smaller maps.
        """
        wanted = list(layers)
        bad = [i for i in wanted if not 0 <= i < len(self.gen)]
        if bad or not wanted:
            raise ValueError(f"generator layers are 0..{len(self.gen) - 1}, got {bad or wanted}")
        found: dict[int, torch.Tensor] = {}
        h = self.to_cells(x)
        for i, layer in enumerate(list(self.gen)[: max(wanted) + 1]):
            h = layer(h)
            if i in wanted:
                found[i] = h
        return [found[i] for i in wanted]
