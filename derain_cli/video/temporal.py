"""A motion-compensated recursive filter: each frame blended with the previous output, warped.

Deraining each frame on its own flickers: the model's rain estimate, and the rain it leaves
behind, change from frame to frame even where the scene stands still. Video first goes through
the fusion over a window of frames (:mod:`derain_cli.video.fusion`), which removes most of it;
this filter then steadies what is left (:mod:`derain_cli.video.consistency` runs the two).
:class:`TemporalFilter` carries the previous *filtered* frame forward, warped onto the current one
with OpenCV's DIS optical flow (so a panning camera is followed), and blends it in where the two
agree::

    warped_t = warp(F_{t-1}, flow(B_t -> F_{t-1}))
    d_t      = box_k( mean_c |B_t - warped_t| )            local disagreement
    w_t      = s * exp(-(d_t / tau)^2), 0 where the warp leaves the frame
    F_t      = w_t * warped_t + (1 - w_t) * B_t

``B_t`` is frame t as the model derained it. Where the scene is static (or moves as the flow
says), ``d`` is small and ``F`` averages over about ``1 / (1 - s)`` frames, which removes flicker
and the rain the model left (rain does not stay put). Where something moves against the flow,
appears, or the shot cuts, ``d`` is large, ``w`` falls to 0 and the frame is taken as derained:
no ghosts. ``d`` is a local mean over ``k x k`` pixels, so a thin streak of left-over rain barely
raises it, while a moving object does. The flow runs on grey frames at most ``flow_side`` pixels
on their long side; its cost is small next to the model's (see docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from derain_cli.errors import UsageError

#: Smallest side (px) of the grey copies DIS optical flow can follow; smaller frames pass as is.
MIN_FLOW_SIDE = 16
#: Defaults of :class:`RecursiveSettings` (the filter on its own, as it ran before the fusion).
DEFAULT_STRENGTH = 0.7
DEFAULT_TOLERANCE = 0.05


@dataclass(frozen=True)
class RecursiveSettings:
    """``strength`` s in [0, 1) (0: off), ``tolerance`` tau in (0, 1], ``window`` k, flow size."""

    strength: float = DEFAULT_STRENGTH
    tolerance: float = DEFAULT_TOLERANCE
    window: int = 9
    flow_side: int = 480

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength < 1.0:
            raise UsageError(f"recursive filter strength {self.strength}: must be in [0, 1)")
        if not 0.0 < self.tolerance <= 1.0:
            raise UsageError(f"recursive filter tolerance {self.tolerance}: must be in (0, 1]")
        if self.window < 1 or self.flow_side < 16:
            raise UsageError("recursive filter window must be >= 1 and flow_side >= 16")


class TemporalFilter:
    """Call once per frame, in order: ``filtered = f(derained)``; :meth:`reset` between videos."""

    def __init__(self, settings: RecursiveSettings | None = None) -> None:
        self.settings = settings or RecursiveSettings()
        self._previous: np.ndarray | None = None
        self._grid: tuple[np.ndarray, np.ndarray] | None = None
        self._flow = cv2.DISOpticalFlow_create(  # type: ignore[attr-defined]
            cv2.DISOPTICAL_FLOW_PRESET_FAST
        )

    def reset(self) -> None:
        self._previous = None

    def __call__(self, derained: np.ndarray) -> np.ndarray:
        """Float32 ``(H, W, 3)`` in [0, 1] in, the same out (a new array)."""
        previous = self._previous
        if (
            self.settings.strength == 0.0
            or previous is None
            or previous.shape != derained.shape
            or min(self._flow_size(derained)) < MIN_FLOW_SIDE  # DIS cannot follow it
        ):
            self._previous = derained.astype(np.float32, copy=True)
            return self._previous.copy()
        warped, inside = self._warp(previous, derained)
        s = self.settings
        disagreement = np.abs(derained - warped).mean(axis=2)
        disagreement = cv2.blur(disagreement, (s.window, s.window))
        weight = s.strength * np.exp(-np.square(disagreement / s.tolerance)) * inside
        weight = weight[..., None].astype(np.float32)
        filtered = (weight * warped + (1.0 - weight) * derained).astype(np.float32)
        self._previous = filtered
        return filtered.copy()

    def _flow_size(self, frame: np.ndarray) -> tuple[int, int]:
        """(W, H) of the grey copies the flow runs on."""
        height, width = frame.shape[:2]
        scale = min(1.0, self.settings.flow_side / max(height, width))
        return round(width * scale), round(height * scale)

    def _warp(self, previous: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``previous`` resampled onto ``current``'s pixels, and where that sample is inside."""
        height, width = current.shape[:2]
        scale = min(1.0, self.settings.flow_side / max(height, width))
        small = self._flow_size(current)
        grey_now = grey_u8(current, small)
        grey_then = grey_u8(previous, small)
        flow = self._flow.calc(grey_now, grey_then, None)
        if scale < 1.0:
            flow = cv2.resize(flow, (width, height), interpolation=cv2.INTER_LINEAR)
            flow[..., 0] *= width / small[0]
            flow[..., 1] *= height / small[1]
        if self._grid is None or self._grid[0].shape != (height, width):
            self._grid = tuple(  # type: ignore[assignment]
                np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
            )
        assert self._grid is not None
        xs, ys = self._grid
        map_x = xs + flow[..., 0]
        map_y = ys + flow[..., 1]
        warped = cv2.remap(
            previous, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
        return warped, inside.astype(np.float32)


def grey_u8(rgb: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """BT.601 luma of float RGB as uint8, resized to ``size`` (W, H) when given: what DIS reads."""
    grey: np.ndarray = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if size is not None and grey.shape[::-1] != size:
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    return np.clip(grey * 255.0 + 0.5, 0, 255).astype(np.uint8)
