"""The temporal filter and the flicker measures, on arrays (no codec involved)."""

from __future__ import annotations

import numpy as np
import pytest

from derain_cli.errors import UsageError
from derain_cli.synth.clip import rainy_clip
from derain_cli.video.flicker import reference_flows, temporal_error, warping_error
from derain_cli.video.temporal import RecursiveSettings, TemporalFilter


def textured(height: int = 96, width: int = 160, seed: int = 0) -> np.ndarray:
    """A smooth random texture (something optical flow can lock on to)."""
    import cv2

    rng = np.random.default_rng(seed)
    noise = rng.random((height, width, 3)).astype(np.float32)
    return np.clip(cv2.GaussianBlur(noise, (0, 0), 3) * 3 - 1, 0, 1).astype(np.float32)


def flickering(clean: list[np.ndarray], amount: float, seed: int = 1) -> list[np.ndarray]:
    """Each frame plus its own low-amplitude, spatially smooth error: derained-frame flicker."""
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for frame in clean:
        error = cv2.GaussianBlur(rng.normal(0, 1, frame.shape).astype(np.float32), (0, 0), 2)
        out.append(np.clip(frame + amount * error / error.std(), 0, 1).astype(np.float32))
    return out


def run(frames: list[np.ndarray], settings: RecursiveSettings | None = None) -> list[np.ndarray]:
    smoother = TemporalFilter(settings)
    return [smoother(frame) for frame in frames]


def test_static_scene_flickers_less_and_gets_closer_to_the_truth() -> None:
    clean = [textured()] * 10
    noisy = flickering(clean, 0.01)
    filtered = run(noisy)
    assert temporal_error(filtered, clean) < 0.5 * temporal_error(noisy, clean)
    late = slice(3, None)  # once the recursion has a few frames behind it
    error = np.mean(
        [np.abs(f - c).mean() for f, c in zip(filtered[late], clean[late], strict=True)]
    )
    noisy_error = np.mean(
        [np.abs(n - c).mean() for n, c in zip(noisy[late], clean[late], strict=True)]
    )
    assert error < 0.8 * noisy_error


def test_panning_camera_is_followed_by_the_flow() -> None:
    wide = textured(96, 200)
    clean = [np.ascontiguousarray(wide[:, 3 * t : 3 * t + 160]) for t in range(10)]
    noisy = flickering(clean, 0.01)
    filtered = run(noisy)
    assert temporal_error(filtered, clean, (0, -3)) < 0.7 * temporal_error(noisy, clean, (0, -3))


def test_a_moving_object_leaves_no_ghost() -> None:
    background = textured()
    clean = []
    for t in range(8):
        frame = background.copy()
        frame[30:60, 10 + 12 * t : 40 + 12 * t] = (1.0, 0.1, 0.1)  # moves 12 px a frame
        clean.append(frame)
    filtered = run(flickering(clean, 0.005))
    # Where the square was two frames ago and is no more, the output shows the background.
    uncovered = (slice(30, 60), slice(10 + 12 * 5, 10 + 12 * 6))
    assert np.abs(filtered[7][uncovered] - background[uncovered]).mean() < 0.02
    square = (slice(32, 58), slice(12 + 12 * 7, 38 + 12 * 7))
    assert np.abs(filtered[7][square] - clean[7][square]).mean() < 0.02


def test_a_cut_is_taken_as_it_is() -> None:
    first, second = textured(seed=1), textured(seed=2)
    smoother = TemporalFilter()
    smoother(first)
    after_cut = smoother(second)
    assert np.abs(after_cut - second).max() < 0.05


def test_zero_strength_is_the_identity_and_reset_forgets() -> None:
    frames = flickering([textured()] * 3, 0.02)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(run(frames, RecursiveSettings(0.0)), frames, strict=True)
    )
    smoother = TemporalFilter()
    smoother(frames[0])
    smoother.reset()
    assert np.array_equal(smoother(frames[1]), frames[1])


@pytest.mark.parametrize("bad", [{"strength": 1.0}, {"strength": -0.1}, {"tolerance": 0.0}])
def test_settings_out_of_range_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(UsageError, match="recursive filter"):
        RecursiveSettings(**bad)


def test_temporal_error_of_the_clean_clip_is_zero_and_rain_is_not() -> None:
    photo = textured(200, 300)
    for motion, shift in (("still", (0, 0)), ("object", (0, 0)), ("pan", (0, -2)), ("cut", (0, 0))):
        clip = rainy_clip(photo, np.random.default_rng(0), frames=5, size=(96, 128), motion=motion)
        assert clip.shift == shift
        assert temporal_error(clip.clean, clip.clean, clip.shift) < 1e-5  # object edges
        assert temporal_error(clip.rainy, clip.clean, clip.shift) > 0.005


def test_still_and_cut_clips() -> None:
    photo = textured(200, 300)
    still = rainy_clip(photo, np.random.default_rng(0), frames=4, size=(96, 128), motion="still")
    assert still.cuts == () and all(np.array_equal(c, still.clean[0]) for c in still.clean)
    assert not np.array_equal(still.rainy[0], still.rainy[1])  # new rain every frame
    cut = rainy_clip(photo, np.random.default_rng(0), frames=6, size=(96, 128), motion="cut")
    assert cut.cuts == (3,)
    assert np.array_equal(cut.clean[0], cut.clean[2]) and np.array_equal(cut.clean[3], cut.clean[5])
    assert np.abs(cut.clean[3] - cut.clean[2]).mean() > 0.05


def test_warping_error_follows_a_pan_and_sees_flicker() -> None:
    wide = textured(96, 200)
    clean = [np.ascontiguousarray(wide[:, 2 * t : 2 * t + 160]) for t in range(5)]
    flows = reference_flows(clean)
    assert warping_error(clean, flows) < 0.01
    assert warping_error(flickering(clean, 0.02), flows) > 2 * warping_error(clean, flows)
