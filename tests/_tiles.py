"""Tiles below the users' smallest, so that small test images tile as large ones do."""

from __future__ import annotations

from derain_cli.inference.settings import DerainerSettings


def fine_tiles(tile: int, overlap: int = 32) -> DerainerSettings:
    """CPU settings with ``tile``-pixel tiles, however small (deliberately below ``MIN_TILE``)."""
    return DerainerSettings.check(device="cpu", tile=tile, overlap=overlap, smallest_tile=1)
