"""Temporal fusion on arrays: rain removed on a still scene, no ghost of a moving object, cuts.

"Derained" frames are made here: a clean picture plus the rain a single-frame model leaves
(thin bright streaks, new every frame) and a little noise. No model, no codec.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from derain_cli.errors import UsageError
from derain_cli.video.consistency import TemporalSettings, TemporalStage
from derain_cli.video.cuts import CutDetector
from derain_cli.video.fusion import FusionSettings, TemporalFusion
from derain_cli.video.statistic import lower_mean, rank_weights


def textured(height: int = 96, width: int = 128, seed: int = 0) -> np.ndarray:
    """A smooth random texture (something optical flow can lock on to)."""
    rng = np.random.default_rng(seed)
    noise = rng.random((height, width, 3)).astype(np.float32)
    return np.clip(cv2.GaussianBlur(noise, (0, 0), 3) * 3 - 1, 0.05, 0.95).astype(np.float32)


def left_over_rain(frame: np.ndarray, rng: np.random.Generator, streaks: int = 40) -> np.ndarray:
    """``frame`` with thin bright streaks at new places and a little noise."""
    rain = np.zeros(frame.shape[:2], np.float32)
    height, width = rain.shape
    for _ in range(streaks):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        cv2.line(rain, (x, y), (x + 2, y + 12), 0.5, 1)
    noisy = frame + rain[..., None] + rng.normal(0, 0.005, frame.shape).astype(np.float32)
    return np.clip(noisy, 0, 1).astype(np.float32)


def other_shot(height: int = 96, width: int = 128) -> np.ndarray:
    """Another scene: another texture, darker and bluer (what a cut usually brings)."""
    return (textured(height, width, seed=9) * np.array([0.4, 0.5, 0.9], np.float32)).astype(
        np.float32
    )


def fuse(frames: list[np.ndarray], settings: FusionSettings | None = None) -> list[np.ndarray]:
    fusion = TemporalFusion(settings)
    out = [fused for frame in frames for fused in fusion.push(frame)]
    return out + fusion.flush()


def error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def test_on_a_still_scene_the_fused_frame_beats_every_single_frame() -> None:
    clean = textured()
    rng = np.random.default_rng(1)
    derained = [left_over_rain(clean, rng) for _ in range(7)]
    fused = fuse(derained)
    assert len(fused) == len(derained)
    best_single = min(error(frame, clean) for frame in derained)
    for t in range(1, 6):  # every frame with neighbours on both sides
        assert error(fused[t], clean) < 0.5 * best_single
    steadiness = np.mean([error(fused[t], fused[t - 1]) for t in range(1, 7)])
    flicker = np.mean([error(derained[t], derained[t - 1]) for t in range(1, 7)])
    assert steadiness < 0.5 * flicker


def test_a_camera_pan_is_followed() -> None:
    wide = textured(96, 200)
    rng = np.random.default_rng(2)
    clean = [np.ascontiguousarray(wide[:, 3 * t : 3 * t + 128]) for t in range(7)]
    derained = [left_over_rain(frame, rng) for frame in clean]
    fused = fuse(derained)
    inner = (slice(None), slice(12, 116))  # neighbours cover it in every frame
    for t in range(2, 5):
        assert error(fused[t][inner], clean[t][inner]) < 0.6 * error(
            derained[t][inner], clean[t][inner]
        )


def test_a_moving_square_leaves_no_ghost() -> None:
    """A dark square moving 8 px a frame over a still background (the darker-favouring statistic
    would pick it up wherever it leaked): where it was in the neighbours and is no more, and
    where it will be, the background stays; on the square the output is no worse than the frame."""
    background = textured()
    square = textured(28, 28, seed=7) * 0.3
    rng = np.random.default_rng(3)
    clean = []
    for t in range(7):
        frame = background.copy()
        frame[34:62, 10 + 8 * t : 38 + 8 * t] = square
        clean.append(frame)
    derained = [left_over_rain(frame, rng, streaks=10) for frame in clean]
    fused = fuse(derained)
    t = 3
    luma = np.array([0.299, 0.587, 0.114], np.float32)
    for region in (
        (slice(34, 62), slice(10 + 8 * (t - 2), 10 + 8 * t)),  # the square at t-2 and t-1
        (slice(34, 62), slice(38 + 8 * t, 38 + 8 * (t + 2))),  # the square at t+1 and t+2
    ):
        darkened = (clean[t][region] - fused[t][region]) @ luma > 0.1
        assert darkened.mean() < 0.1  # a ghost would darken most of it (a 1-px seam: 3 %)
        assert error(fused[t][region], clean[t][region]) < 0.015
    on = (slice(34, 62), slice(10 + 8 * t, 38 + 8 * t))
    assert error(fused[t][on], clean[t][on]) <= error(derained[t][on], clean[t][on]) + 0.002


def test_a_cut_starts_a_new_window() -> None:
    """At a cut the old shot's frames come out at once, and no frame borrows across it."""
    first, second = textured(seed=1), other_shot()
    rng = np.random.default_rng(4)
    derained = [left_over_rain(first, rng) for _ in range(4)]
    derained += [left_over_rain(second, rng) for _ in range(4)]
    fusion = TemporalFusion(FusionSettings(window=2))
    released = [len(fusion.push(frame)) for frame in derained]
    assert released == [0, 0, 1, 1, 2, 0, 1, 1]  # frame 4 (a cut) releases frames 2 and 3
    fusion = TemporalFusion(FusionSettings(window=2))
    out = [fused for frame in derained for fused in fusion.push(frame)] + fusion.flush()
    assert error(out[3], first) < error(derained[3], first)
    assert error(out[4], second) < error(derained[4], second)


def test_no_window_or_no_strength_is_frame_by_frame() -> None:
    rng = np.random.default_rng(5)
    frames = [left_over_rain(textured(), rng) for _ in range(3)]
    for settings in (FusionSettings(window=0), FusionSettings(strength=0.0)):
        assert all(
            np.array_equal(a, b) for a, b in zip(fuse(frames, settings), frames, strict=True)
        )
    half = fuse(frames, FusionSettings(strength=0.5))
    full = fuse(frames, FusionSettings(strength=1.0))
    np.testing.assert_allclose(half[1], (frames[1] + full[1]) / 2, atol=1e-5)


def test_the_stage_gives_every_frame_once_in_order_and_starts_afresh() -> None:
    rng = np.random.default_rng(6)
    frames = [left_over_rain(textured(), rng) for _ in range(5)]
    stage = TemporalStage(TemporalSettings(window=2))
    assert TemporalSettings(window=2).lookahead == 2
    first = [out for frame in frames for out in stage.push(frame)] + stage.flush()
    second = [out for frame in frames for out in stage.push(frame)] + stage.flush()
    assert len(first) == 5 and all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"window": 9}, "temporal.window=9: must be 0 to 8"),
        ({"strength": 1.5}, "temporal.strength=1.5"),
        ({"tolerance": 0.0}, "temporal.tolerance=0.0"),
        ({"recursive": 1.0}, "temporal.recursive=1.0"),
    ],
)
def test_settings_out_of_range_are_refused(settings: dict[str, float], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        TemporalSettings(**settings)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------- statistic


def test_rank_weights_are_the_mean_of_the_lower_half_of_the_quantile_function() -> None:
    np.testing.assert_allclose(rank_weights(1, 0.5), [1.0])
    np.testing.assert_allclose(rank_weights(2, 0.5), [0.75, 0.25])
    np.testing.assert_allclose(rank_weights(3, 0.5), [0.5, 0.5, 0.0])
    np.testing.assert_allclose(rank_weights(5, 0.5), [0.25, 0.5, 0.25, 0.0, 0.0])
    np.testing.assert_allclose(rank_weights(4, 1.0), [1 / 6, 1 / 3, 1 / 3, 1 / 6], atol=1e-6)


def test_lower_mean_ignores_bright_outliers_and_invalid_samples() -> None:
    grey = np.full((1, 1, 3), 0.4, np.float32)
    samples = np.stack([grey, grey + 0.5, grey, grey - 0.3, grey])  # a streak, a dark invalid
    valid = np.array([True, True, True, False, True])[:, None, None]
    out = lower_mean(samples, valid)
    np.testing.assert_allclose(out, 0.4, atol=1e-6)  # the lower half of 0.4, 0.4, 0.4, 0.9
    ranked_by_luma = np.stack([[[[1.0, 0.0, 0.0]]], [[[0.0, 1.0, 0.0]]]]).astype(np.float32)
    both = lower_mean(ranked_by_luma, np.ones((2, 1, 1), bool))
    np.testing.assert_allclose(both[0, 0], [0.75, 0.25, 0.0])  # whole samples, by luma


# -------------------------------------------------------------------------------------- cuts


def test_cuts_are_found_and_pans_and_rain_are_not() -> None:
    wide = textured(96, 220)
    rng = np.random.default_rng(8)
    detector = CutDetector()
    pan = [
        left_over_rain(np.ascontiguousarray(wide[:, 4 * t : 4 * t + 128]), rng) for t in range(6)
    ]
    assert [detector(frame) for frame in pan] == [False] * 6
    assert detector(left_over_rain(other_shot(), rng))
    assert detector(np.zeros((48, 64, 3), np.float32))  # a new size is a new shot


def test_frames_too_small_or_thin_for_optical_flow_pass_as_they_are() -> None:
    rng = np.random.default_rng(10)
    for shape in ((7, 9, 3), (16, 2000, 3)):
        frames = [rng.random(shape).astype(np.float32) for _ in range(4)]
        stage = TemporalStage()
        out = [o for frame in frames for o in stage.push(frame)] + stage.flush()
        assert all(np.array_equal(a, b) for a, b in zip(out, frames, strict=True))
