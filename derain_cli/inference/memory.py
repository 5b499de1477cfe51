"""How much memory the generator needs, and the tile size that fits it into the free memory.

The generators keep full resolution, so activations, not weights, fill the memory: the estimate
is bytes per image pixel (:func:`bytes_per_pixel`), and :func:`auto_tile` picks the tile side
that fits half of what is free on the device right now (:func:`fits_untiled` says whether a
number of pixels runs in one piece).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from derain_cli import runtime

#: Largest automatic tile on CPU: bigger tiles only grow the working set, they are not faster.
CPU_MAX_TILE = 1024
#: Smallest automatic tile: below this the halo and per-tile overhead dominate.
MIN_AUTO_TILE = 128
#: Live full-width activations at the peak of one forward step of a residual block (block input,
#: padded copy, conv output, norm output) plus one for the allocator's slack.
LIVE_ACTIVATIONS = 5
#: Bytes per element assumed for every precision: norms and layout conversions keep float32
#: temporaries under bf16 too (measured peaks: docs/inference.md).
ESTIMATE_ITEMSIZE = 4
#: Fraction of the free memory that automatic tiling plans to use.
MEMORY_FRACTION = 0.5


def bytes_per_pixel(module: nn.Module) -> int:
    """Estimated peak activation bytes per image pixel of one forward pass of ``module``.

    ``widest conv output channels x 4 B x LIVE_ACTIVATIONS``: the generators here keep full
    resolution, so activations, not weights, fill the memory (32 x 4 x 5 = 640 B/px for the
    authors' net; the measured peaks are in docs/inference.md).
    """
    widths = [m.out_channels for m in module.modules() if isinstance(m, nn.Conv2d)]
    return max(widths, default=3) * ESTIMATE_ITEMSIZE * LIVE_ACTIVATIONS


def auto_tile(height: int, width: int, device: torch.device, per_pixel: int) -> int:
    """Tile side for an image on ``device`` (0 = no tiling), from the memory free right now."""
    budget = runtime.free_device_bytes(device) * MEMORY_FRACTION
    side = max(MIN_AUTO_TILE, int(math.sqrt(budget / per_pixel)) // 64 * 64)
    if device.type == "cpu":
        side = min(side, CPU_MAX_TILE)
        return 0 if height <= side and width <= side else side
    return 0 if height * width * per_pixel <= budget else side


def fits_untiled(pixels: int, device: torch.device, per_pixel: int) -> bool:
    """Whether ``pixels`` image pixels (one image or a batch) fit the free memory in one pass."""
    return pixels * per_pixel <= runtime.free_device_bytes(device) * MEMORY_FRACTION
