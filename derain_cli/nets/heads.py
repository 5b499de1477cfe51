"""Projection heads of the contrastive terms: a 2-layer MLP per encoder layer (paper Sec. 4.1).

Built up front from known channel counts, never lazily on the first batch: the authors' code
created its MLPs lazily and wired optimisers by hand, and one head was never stepped while
another was stepped twice. Here the heads are ordinary submodules, so they land in exactly one
optimiser parameter group (``NLCLObjective.param_groups``). The width has no default here: it
is ``model.head_units`` in the config (256, paper Sec. 4.1), the one place it is set.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ProjectionHead(nn.Module):
    """``Linear(C, units) -> ReLU -> Linear(units, units)``, then L2-normalised (CUT's ``MLP``)."""

    def __init__(self, in_channels: int, units: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_channels, units), nn.ReLU(inplace=True), nn.Linear(units, units)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., C) -> (..., units)`` unit vectors (dot products are cosine similarities)."""
        return F.normalize(self.mlp(x), dim=-1, eps=1e-7)


class HeadSet(nn.ModuleList):
    """One :class:`ProjectionHead` per contrasted layer, in the order of the layers."""

    def __init__(self, channels: Sequence[int], units: int) -> None:
        super().__init__([ProjectionHead(c, units) for c in channels])
