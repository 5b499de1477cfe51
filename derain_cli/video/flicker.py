"""How much a video flickers: temporal error where the true scene does not change.

Two measures, both mean absolute differences of RGB in [0, 1] (lower is steadier):

- :func:`temporal_error` needs the clean frames (synthetic rain over a known clip): it compares
  ``F_t`` with ``F_{t-1}`` moved by the clip's known camera shift, on the pixels where the clean
  clip itself agrees with that shift (so moving objects and uncovered borders do not count). The
  clean clip scores 0 there; the rainy input scores the rain's own flicker.
- :func:`warping_error` needs no ground truth (real clips): ``F_{t-1}`` is warped onto ``F_t``
  with optical flow computed once on a *reference* video (pass the same one for every method you
  compare), counting only pixels whose forward and backward flow agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from derain_cli.video.temporal import grey_u8

#: A clean pixel is "static" when it moves exactly as the camera does, to within this.
STATIC_TOLERANCE = 2.0 / 255.0


def _shifted(frame: np.ndarray, shift: tuple[int, int]) -> np.ndarray:
    """``frame`` moved by (dy, dx) pixels (content at (y, x) goes to (y + dy, x + dx))."""
    return np.roll(frame, shift, axis=(0, 1))


def temporal_error(
    frames: Sequence[np.ndarray], clean: Sequence[np.ndarray], shift: tuple[int, int] = (0, 0)
) -> float:
    """Mean ``|F_t - shift(F_{t-1})|`` where the clean clip is static under ``shift``."""
    if len(frames) != len(clean) or len(frames) < 2:
        raise ValueError("temporal_error needs as many frames as clean frames, at least 2")
    dy, dx = shift
    total, count = 0.0, 0
    for t in range(1, len(frames)):
        expected = _shifted(clean[t - 1], shift)
        static = np.abs(clean[t] - expected).max(axis=2) < STATIC_TOLERANCE
        static[: max(dy, 0)] = False  # rows and columns that np.roll wrapped around
        static[static.shape[0] + min(dy, 0) :] = False
        static[:, : max(dx, 0)] = False
        static[:, static.shape[1] + min(dx, 0) :] = False
        diff = np.abs(frames[t] - _shifted(frames[t - 1], shift)).mean(axis=2)
        total += float(diff[static].sum())
        count += int(static.sum())
    return total / max(count, 1)


def reference_flows(
    reference: Sequence[np.ndarray], consistency: float = 1.0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """For t >= 1: (map, valid) that warp frame t-1 onto frame t of ``reference``.

    ``map`` is (H, W, 2) float32 sample positions in frame t-1; ``valid`` marks pixels whose
    forward-backward flow round trip lands within ``consistency`` pixels and inside the frame.
    """
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)  # type: ignore[attr-defined]
    grey = [grey_u8(frame) for frame in reference]
    height, width = grey[0].shape
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    flows = []
    for t in range(1, len(grey)):
        back = dis.calc(grey[t], grey[t - 1], None)  # t -> t-1
        forth = dis.calc(grey[t - 1], grey[t], None)  # t-1 -> t
        map_x, map_y = xs + back[..., 0], ys + back[..., 1]
        returned = cv2.remap(forth, map_x, map_y, cv2.INTER_LINEAR)
        loop = np.hypot(back[..., 0] + returned[..., 0], back[..., 1] + returned[..., 1])
        inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
        flows.append((np.stack([map_x, map_y], axis=2), inside & (loop < consistency)))
    return flows


def warping_error(
    frames: Sequence[np.ndarray], flows: Sequence[tuple[np.ndarray, np.ndarray]]
) -> float:
    """Mean ``|F_t - warp(F_{t-1})|`` over the valid pixels of :func:`reference_flows`."""
    if len(flows) != len(frames) - 1:
        raise ValueError("warping_error needs one flow per pair of consecutive frames")
    total, count = 0.0, 0
    for t, (sample_at, valid) in enumerate(flows, start=1):
        warped = cv2.remap(frames[t - 1], sample_at[..., 0], sample_at[..., 1], cv2.INTER_LINEAR)
        diff = np.abs(frames[t] - warped).mean(axis=2)
        total += float(diff[valid].sum())
        count += int(valid.sum())
    return total / max(count, 1)
