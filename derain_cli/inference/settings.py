"""A derainer's settings, checked once: device, precision, tile and overlap.

:meth:`DerainerSettings.check` is the one rule for every way in (``Derainer``,
``Derainer.from_pretrained``, ``derain``, ``derain eval``); a caller that must refuse bad
settings before other work (the command line plans its files first) checks them, then hands the
checked settings to the derainer, which takes them as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from derain_cli import runtime
from derain_cli.errors import UsageError, setting
from derain_cli.inference.tiling import MIN_TILE, check_tile

#: Width of the feathered overlap between tiles when none is asked for, in pixels.
DEFAULT_OVERLAP = 32


@dataclass(frozen=True)
class DerainerSettings:
    """Where and how a derainer runs: the resolved device and dtype, the tile and the overlap."""

    device: torch.device
    dtype: torch.dtype
    #: None: from free memory for each image; 0: never tile; N: N x N tiles.
    tile: int | None = None
    #: Width of the feathered overlap between tiles, in pixels.
    overlap: int = DEFAULT_OVERLAP

    @classmethod
    def check(
        cls,
        *,
        device: str = "auto",
        precision: str = "auto",
        tile: int | None = None,
        overlap: int = DEFAULT_OVERLAP,
        smallest_tile: int = MIN_TILE,
    ) -> DerainerSettings:
        """Check the settings before anything is loaded; refuse bad ones (``UsageError``).

        ``tile`` is None (from free memory), 0 (off) or at least ``smallest_tile`` pixels,
        ``overlap`` is not negative, and the device is present and supports the precision
        (:mod:`derain_cli.runtime`). ``smallest_tile`` is
        :data:`~derain_cli.inference.tiling.MIN_TILE` unless a caller lowers it on purpose (tests
        tile small images as finely as large ones are tiled in use); below it the context read
        around each tile dominates and a run takes hours.
        """
        check_tile(tile, smallest=smallest_tile)
        if overlap < 0:
            raise UsageError(f"{setting('overlap')} {overlap}: must be >= 0")
        resolved = runtime.resolve_device(device)
        return cls(resolved, runtime.resolve_dtype(precision, resolved), tile, overlap)
