"""Temporal consistency of video: fusion over a window of frames, then a light recursive filter.

:class:`TemporalStage` runs the derained frames of one video, in order, through
:class:`~derain_cli.video.fusion.TemporalFusion` (each frame combined with its aligned neighbours
t-k ... t+k, favouring the darker, rain-free samples) and then through the motion-compensated
recursive filter of :mod:`derain_cli.video.temporal` at a low strength, which steadies the
flicker the fusion leaves (the measurements behind this order and the filter's strength are in
docs/benchmarks.md, "Video", from ``bench/video_flicker.py``).

:class:`TemporalSettings` holds the options of both (``derain --temporal-window``,
``--temporal-strength``; ``--no-temporal`` derains frame by frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from derain_cli.errors import UsageError, setting
from derain_cli.video.fusion import (
    DEFAULT_STRENGTH,
    DEFAULT_TOLERANCE,
    DEFAULT_WINDOW,
    FusionSettings,
    TemporalFusion,
)
from derain_cli.video.temporal import RecursiveSettings, TemporalFilter

#: Strength of the recursive filter after the fusion (docs/benchmarks.md, "Video").
DEFAULT_RECURSIVE = 0.3


@dataclass(frozen=True)
class TemporalSettings:
    """How video frames are made consistent over time.

    ``window`` k: the fusion combines frames t-k ... t+k (0: no fusion); ``strength`` in [0, 1]:
    how much of the fused value replaces the derained frame; ``tolerance``: the fusion's coarse
    agreement limit (larger fuses more, and ghosts sooner); ``recursive`` in [0, 1): strength of
    the recursive filter after the fusion (0: off); ``flow_side``: long side (pixels) of the
    copies that optical flow and the checks run on.
    """

    window: int = DEFAULT_WINDOW
    strength: float = DEFAULT_STRENGTH
    tolerance: float = DEFAULT_TOLERANCE
    recursive: float = DEFAULT_RECURSIVE
    flow_side: int = 480

    def __post_init__(self) -> None:
        self.fusion  # noqa: B018  (validates window, strength, tolerance and flow_side)
        if not 0.0 <= self.recursive < 1.0:
            raise UsageError(f"{setting('temporal.recursive', self.recursive)}: must be in [0, 1)")

    @property
    def fusion(self) -> FusionSettings:
        return FusionSettings(self.window, self.strength, self.tolerance, self.flow_side)

    @property
    def lookahead(self) -> int:
        """How many frames after frame t the stage needs before it can give frame t."""
        return self.window if self.fusion.active else 0


class TemporalStage:
    """Push a video's derained frames in order; consistent frames come back in order."""

    def __init__(self, settings: TemporalSettings | None = None) -> None:
        self.settings = settings or TemporalSettings()
        fusion = self.settings.fusion
        self._fusion = TemporalFusion(fusion) if fusion.active else None
        self._filter = None
        if self.settings.recursive > 0.0:
            recursive = RecursiveSettings(
                strength=self.settings.recursive, flow_side=self.settings.flow_side
            )
            self._filter = TemporalFilter(recursive)

    def push(self, derained: np.ndarray) -> list[np.ndarray]:
        """The frames completed by this one, oldest first (none while the window fills)."""
        return self._steady(self._fusion.push(derained) if self._fusion else [derained])

    def flush(self) -> list[np.ndarray]:
        """The frames still held (the end of the video); the stage is then ready for another."""
        frames = self._steady(self._fusion.flush() if self._fusion else [])
        if self._filter is not None:
            self._filter.reset()
        return frames

    def _steady(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        if self._filter is None:
            return frames
        return [self._filter(frame) for frame in frames]
