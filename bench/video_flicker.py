"""Flicker and quality of video deraining, frame by frame against the temporal filter.

Builds synthetic rainy clips (``derain_cli.synth.clip``) from the photos of a clean folder
(default ``../shared/data/clean``; never the benchmark), two per photo: a static scene with a
moving object, and a camera pan. Each frame is derained once by the weights given; the temporal
filter then runs over those frames with each setting in ``--settings``. Printed per setting, over
all clips: the temporal error on static pixels (``derain_cli.video.flicker.temporal_error``,
lower = steadier; the clean clip scores 0), the mean per-frame Y-PSNR / SSIM against the clean
frames, and the mean absolute error on the pixels that moved (where ghosts would show). The
rainy input and frame-by-frame deraining are the first two rows.

    python bench/video_flicker.py                                # default weights, 12 photos
    python bench/video_flicker.py --photos 4 --frames 12 --json flicker.json
    python bench/video_flicker.py --settings 0.6:0.03,0.8:0.03   # strength:tolerance pairs
    python bench/video_flicker.py --real clip.mp4 --frames 60    # a real clip, no ground truth
    python bench/video_flicker.py --real clean.mp4 --add-rain streak   # real motion, known truth

With ``--real`` the flicker measure is the warping error
(``derain_cli.video.flicker.warping_error``) with flows computed once, for every row alike, on
the frame-by-frame output; quality is the Y-PSNR against the input itself (on a clip without
rain: how much deraining changes it). With ``--add-rain STYLE`` the clip is taken as clean: rain
of one recipe is rendered over each frame, flows come from the clean frames and Y-PSNR is
against them: real camera and object motion with a ground truth.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from derain_cli.imaging import read_image
from derain_cli.inference.engine import Derainer
from derain_cli.metrics import psnr, ssim
from derain_cli.synth import photo_scale, render_rain, sample_recipe
from derain_cli.synth.clip import Clip, rainy_clip
from derain_cli.video.flicker import (
    STATIC_TOLERANCE,
    reference_flows,
    temporal_error,
    warping_error,
)
from derain_cli.video.temporal import TemporalFilter, TemporalSettings
from derain_cli.weights import load_weights

STYLES = ("streak", "heavy", "drizzle")


def _quality(frames: list[np.ndarray], clip: Clip) -> tuple[float, float, float]:
    """Mean Y-PSNR and SSIM per frame, and the mean absolute error where the scene moved."""
    p = statistics.fmean(psnr(f, c) for f, c in zip(frames, clip.clean, strict=True))
    s = statistics.fmean(ssim(f, c) for f, c in zip(frames, clip.clean, strict=True))
    return p, s, _moving_error(frames, clip)


def _moving_error(frames: list[np.ndarray], clip: Clip) -> float:
    """Mean |F_t - C_t| where the clean clip changed (the moving object): ghosts show here."""
    total, count = 0.0, 0
    for t in range(1, len(frames)):
        moved = np.abs(clip.clean[t] - np.roll(clip.clean[t - 1], clip.shift, axis=(0, 1)))
        mask = moved.max(axis=2) > STATIC_TOLERANCE
        if clip.shift != (0, 0):
            mask[:, -abs(clip.shift[1]) :] = False  # wrapped by the roll
        total += float(np.abs(frames[t] - clip.clean[t]).mean(axis=2)[mask].sum())
        count += int(mask.sum())
    return total / max(count, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="weights spec (default: bundled default)")
    parser.add_argument("--clean", type=Path, default=Path("../shared/data/clean"))
    parser.add_argument("--photos", type=int, default=12)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", default="240x320", help="H x W of the clips")
    parser.add_argument("--settings", default="0.4:0.03,0.6:0.03,0.8:0.03,0.6:0.015,0.6:0.06")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--real", type=Path, nargs="*", default=[], help="real clips to measure")
    parser.add_argument("--add-rain", default=None, metavar="STYLE", help="render rain on --real")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    height, width = (int(v) for v in args.size.lower().split("x"))
    settings = [
        TemporalSettings(strength=float(s), tolerance=float(t))
        for s, t in (pair.split(":") for pair in args.settings.split(","))
    ]
    derainer = Derainer(load_weights(args.weights), device="cpu")
    if args.real:
        measure_real(args.real, derainer, settings, args.frames, args.add_rain)
        return
    photos = sorted(p for p in args.clean.iterdir() if p.suffix.lower() in {".jpg", ".png"})
    photos = photos[: args.photos]
    rows: dict[str, list[tuple[float, float, float]]] = {}
    filter_seconds: dict[str, float] = {}
    derain_seconds = 0.0
    frames_done = 0
    for index, path in enumerate(photos):
        photo = read_image(path).rgb
        for motion in ("object", "pan"):
            rng = np.random.default_rng(1000 + index * 2 + (motion == "pan"))
            style = STYLES[(index * 2 + (motion == "pan")) % len(STYLES)]
            clip = rainy_clip(
                photo, rng, frames=args.frames, size=(height, width), motion=motion, style=style
            )
            start = time.perf_counter()
            derained = [derainer(frame) for frame in clip.rainy]
            derain_seconds += time.perf_counter() - start
            frames_done += len(derained)
            candidates = {"rainy input": clip.rainy, "frame by frame": derained}
            for setting in settings:
                name = f"temporal s={setting.strength:g} tau={setting.tolerance:g}"
                smoother = TemporalFilter(setting)
                start = time.perf_counter()
                candidates[name] = [smoother(frame) for frame in derained]
                filter_seconds[name] = filter_seconds.get(name, 0.0) + time.perf_counter() - start
            for name, frames in candidates.items():
                error = temporal_error(frames, clip.clean, clip.shift)
                rows.setdefault(name, []).append((error, *_quality(frames, clip)))
    print(f"{len(photos) * 2} clips of {args.frames} frames, {height}x{width}, {args.weights}")
    print(
        f"{'':30} {'temporal err':>12} {'Y-PSNR':>7} {'SSIM':>6} {'moving err':>10} {'ms/frame':>8}"
    )
    result = []
    for name, values in rows.items():
        error, p, s, moving = (statistics.fmean(v[i] for v in values) for i in range(4))
        ms = 1000 * filter_seconds.get(name, 0.0) / max(frames_done, 1)
        print(f"{name:30} {error:12.5f} {p:7.2f} {s:6.4f} {moving:10.5f} {ms:8.1f}")
        result.append(
            {"name": name, "temporal_error": error, "psnr": p, "ssim": s, "moving_error": moving,
             "ms_per_frame": ms}
        )  # fmt: skip
    print(f"derain: {1000 * derain_seconds / max(frames_done, 1):.1f} ms/frame")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


def read_frames(path: Path, limit: int) -> list[np.ndarray]:
    import av

    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24").astype(np.float32) / 255.0)
            if len(frames) == limit:
                break
    return frames


def measure_real(
    paths: list[Path],
    derainer: Derainer,
    settings: list[TemporalSettings],
    limit: int,
    add_rain: str | None,
) -> None:
    against = "clean" if add_rain else "input"
    print(f"{'':36} {'warping err':>11} {'Y-PSNR vs ' + against:>15}")
    for path in paths:
        rainy = read_frames(path, limit)
        truth = rainy
        if add_rain is not None:
            rng = np.random.default_rng(0)
            size = min(rainy[0].shape[:2])
            recipe = replace(sample_recipe(rng, add_rain, scale=photo_scale(size)), drops=0)
            rainy = [render_rain(frame, recipe, np.random.default_rng(t)) for t, frame in
                     enumerate(truth)]  # fmt: skip
        derained = [derainer(frame) for frame in rainy]
        flows = reference_flows(truth if add_rain else derained)
        candidates = {"input": rainy, "frame by frame": derained}
        for setting in settings:
            smoother = TemporalFilter(setting)
            name = f"temporal s={setting.strength:g} tau={setting.tolerance:g}"
            candidates[name] = [smoother(frame) for frame in derained]
        for name, frames in candidates.items():
            change = statistics.fmean(psnr(f, r) for f, r in zip(frames, truth, strict=True))
            label = f"{path.name}: {name}"
            print(f"{label:36} {warping_error(frames, flows):11.5f} {change:15.2f}")


if __name__ == "__main__":
    main()
