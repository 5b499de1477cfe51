"""Temporal fusion: each derained frame combined with its aligned neighbours, favouring the darker.

Rain moves and the scene mostly does not: a pixel covered by a streak in frame t is usually clear
in frames t-k ... t+k. :class:`TemporalFusion` keeps that window of derained frames, aligns each
neighbour onto frame t (:mod:`derain_cli.video.align`: the camera's motion where the scene follows
it, the optical flow elsewhere, checked both ways) and replaces every pixel by a robust statistic
of the aligned samples that favours the darker, rain-free ones
(:func:`derain_cli.video.statistic.lower_mean`, the mean of the lower three quarters of the
quantile function, frame t counted twice)::

    F_t = B_t + strength * (lower_mean(B_t, B_t, warp(B_s) where aligned) - B_t)

Where no neighbour aligns (a moving object the flow misses, an occlusion, the frame's border)
only frame t is left and ``F_t = B_t``: nothing ghosts. A scene cut (:mod:`derain_cli.video.cuts`)
starts a new window. Frames come out in order, ``window`` frames after they go in (fewer at the
end of the video or before a cut): :meth:`TemporalFusion.push` returns the frames completed by
the one given, :meth:`TemporalFusion.flush` the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from derain_cli.errors import UsageError, setting
from derain_cli.video.align import (
    Alignment,
    FrameAnalysis,
    analyse,
    analysis_size,
    candidates,
    choose,
)
from derain_cli.video.cuts import CutDetector
from derain_cli.video.statistic import lower_mean

#: Defaults of :class:`FusionSettings` (``derain --temporal-window``, ``--temporal-strength``).
DEFAULT_WINDOW = 2
DEFAULT_STRENGTH = 1.0
DEFAULT_TOLERANCE = 0.1
#: How many times frame t itself enters the statistic: it holds on to what only it shows.
ANCHOR_WEIGHT = 2
#: The statistic's upper quantile: the mean over quantiles 0 to this. Below 1 the brightest
#: samples (rain the model left) never enter; above 0.5 more samples are averaged, so noise and
#: what the model changes from frame to frame average out instead of biasing the result darker.
UPPER_QUANTILE = 0.75


@dataclass(frozen=True)
class FusionSettings:
    """``window`` k: frames t-k ... t+k (0: off); ``strength`` in [0, 1]: how much of the fused
    value replaces the derained frame; ``tolerance``: the coarse agreement check's limit (mean
    eroded RGB difference over 9x9); ``flow_side``: long side of the analysis copies."""

    window: int = DEFAULT_WINDOW
    strength: float = DEFAULT_STRENGTH
    tolerance: float = DEFAULT_TOLERANCE
    flow_side: int = 480

    def __post_init__(self) -> None:
        if not 0 <= self.window <= 8:
            raise UsageError(f"{setting('temporal.window', self.window)}: must be 0 to 8")
        if not 0.0 <= self.strength <= 1.0:
            raise UsageError(f"{setting('temporal.strength', self.strength)}: must be in [0, 1]")
        if not 0.0 < self.tolerance <= 1.0:
            raise UsageError(f"{setting('temporal.tolerance', self.tolerance)}: must be in (0, 1]")
        if self.flow_side < 16:
            raise UsageError(f"{setting('temporal.flow_side', self.flow_side)}: must be >= 16")

    @property
    def active(self) -> bool:
        return self.window > 0 and self.strength > 0.0


@dataclass
class _Held:
    rgb: np.ndarray  # the derained frame, float32 (H, W, 3)
    analysis: FrameAnalysis | None  # None: too small to align (kept as it is)
    shot: int


class TemporalFusion:
    """Push derained frames in order; fused frames come back in order (see the module doc)."""

    def __init__(self, settings: FusionSettings | None = None) -> None:
        self.settings = settings or FusionSettings()
        self._cuts = CutDetector()
        self._flow = cv2.DISOpticalFlow_create(  # type: ignore[attr-defined]
            cv2.DISOPTICAL_FLOW_PRESET_FAST
        )
        self._grids: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self.reset()

    def reset(self) -> None:
        """Forget every frame (a new video)."""
        self._held: dict[int, _Held] = {}
        self._flows: dict[tuple[int, int], np.ndarray] = {}
        self._pushed = 0  # index of the next frame to come in
        self._next = 0  # index of the next frame to go out
        self._shot = 0
        self._cuts.reset()

    def push(self, derained: np.ndarray) -> list[np.ndarray]:
        """Add the next derained frame (float32 ``(H, W, 3)`` in [0, 1]); returns the frames it
        completes, oldest first (none while the window fills)."""
        if not self.settings.active:
            return [derained]
        ready = []
        if self._cuts(derained):  # the old shot's frames need nothing more
            ready = self._emit_until(self._pushed)
            self._shot += 1
        index = self._pushed
        height, width = derained.shape[:2]
        size = analysis_size(height, width, self.settings.flow_side)
        rgb = np.ascontiguousarray(derained, dtype=np.float32)
        analysis = analyse(rgb, size) if size is not None else None
        self._held[index] = _Held(rgb, analysis, self._shot)
        self._pushed += 1
        return ready + self._emit_until(self._pushed - self.settings.window)

    def flush(self) -> list[np.ndarray]:
        """The frames still held, fused with the neighbours there are; then empty."""
        ready = self._emit_until(self._pushed)
        self.reset()
        return ready

    # ------------------------------------------------------------------------- internals

    def _emit_until(self, stop: int) -> list[np.ndarray]:
        """Fuse and release frames ``self._next .. stop - 1``; drop what no later frame needs."""
        out = []
        while self._next < stop:
            out.append(self._fuse(self._next))
            self._next += 1
            self._forget(self._next - self.settings.window)
        return out

    def _forget(self, first_needed: int) -> None:
        for index in [i for i in self._held if i < first_needed]:
            del self._held[index]
        for pair in [p for p in self._flows if min(p) < first_needed]:
            del self._flows[pair]

    def _fuse(self, t: int) -> np.ndarray:
        anchor = self._held[t]
        k = self.settings.window
        if anchor.analysis is None:
            return anchor.rgb
        neighbours: dict[int, FrameAnalysis] = {}
        for s in range(t - k, t + k + 1):
            held = self._held.get(s)
            if s != t and held is not None and held.shot == anchor.shot and held.analysis:
                neighbours[s] = held.analysis
        if not neighbours:
            return anchor.rgb
        grid = self._grid(anchor.analysis.grey.shape)
        cameras, locals_ = [], []
        for s, other in neighbours.items():
            camera, local = candidates(
                anchor.analysis,
                other,
                self._flow_between(t, anchor.analysis, s, other),
                self._flow_between(s, other, t, anchor.analysis),
                grid,
                self.settings.tolerance,
            )
            cameras.append(camera)
            locals_.append(local)
        alignments = choose(anchor.analysis, cameras, locals_, grid)
        samples = [anchor.rgb] * ANCHOR_WEIGHT
        valid = [np.ones(anchor.rgb.shape[:2], bool)] * ANCHOR_WEIGHT
        for s, alignment in zip(neighbours, alignments, strict=True):
            if alignment.valid.any():
                warped, inside = self._warp(self._held[s].rgb, alignment)
                samples.append(warped)
                valid.append(inside)
        if len(samples) == ANCHOR_WEIGHT:
            return anchor.rgb
        fused = lower_mean(samples, valid, UPPER_QUANTILE)
        strength = self.settings.strength
        if strength < 1.0:
            fused = anchor.rgb + strength * (fused - anchor.rgb)
        return fused

    def _flow_between(
        self, a: int, first: FrameAnalysis, b: int, second: FrameAnalysis
    ) -> np.ndarray:
        """DIS flow from frame ``a`` to frame ``b`` at the analysis size (cached by index)."""
        flow = self._flows.get((a, b))
        if flow is None:
            flow = self._flow.calc(first.grey, second.grey, None)
            self._flows[(a, b)] = flow
        return flow

    def _grid(self, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        height, width = shape[:2]
        grid = self._grids.get((height, width))
        if grid is None:
            xs, ys = np.meshgrid(
                np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)
            )
            grid = self._grids[(height, width)] = (xs, ys)
        return grid

    def _warp(self, rgb: np.ndarray, alignment: Alignment) -> tuple[np.ndarray, np.ndarray]:
        """``rgb`` (full size) resampled onto frame t, and where that sample is valid."""
        height, width = rgb.shape[:2]
        small_h, small_w = alignment.valid.shape
        displacement, valid = alignment.displacement, alignment.valid
        if (small_h, small_w) != (height, width):
            displacement = cv2.resize(displacement, (width, height), interpolation=cv2.INTER_LINEAR)
            displacement[..., 0] *= width / small_w
            displacement[..., 1] *= height / small_h
            mask = valid.astype(np.uint8)
            valid = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST) > 0
        xs, ys = self._grid((height, width))
        map_x = xs + displacement[..., 0]
        map_y = ys + displacement[..., 1]
        warped = cv2.remap(
            rgb, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
        return warped, inside & valid
