"""Flicker and quality of video deraining: frame by frame, the recursive filter, temporal fusion.

Builds synthetic rainy clips (``derain_cli.synth.clip``) from the photos of a clean folder
(default ``../shared/data/clean``; never the benchmark), four per photo: a still scene, a camera
pan, a still scene with an object sliding across it, and a cut between two still shots. Every
frame gets new rain. Each frame is derained once by the weights given; each temporal method then
runs over those frames. Printed per kind of motion and per method:

- ``Y-PSNR`` / ``SSIM``: per frame against the clean frame, averaged;
- ``flicker``: temporal error on static pixels (``derain_cli.video.flicker.temporal_error``:
  mean |F_t - F_{t-1}| moved by the camera, where the clean clip is static; the clean clip
  scores 0);
- ``static err`` / ``moving err``: mean |F_t - C_t| on the pixels where the clean clip is static
  / changed (the moving object, the first frame after a cut): ghosts show in the second;
- ``warp err``: the warping error (``derain_cli.video.flicker.warping_error``) with flows from
  the clean frames;
- ``ms/frame``: the method's own time per frame (the model's is printed once, below).

    python bench/video_flicker.py                                # default weights, 12 photos
    python bench/video_flicker.py --photos 6 --offset 6 --frames 12 --json flicker.json
    python bench/video_flicker.py --windows 1,2,3                # fusion windows to compare
    python bench/video_flicker.py --real clip.mp4 --frames 60    # a real clip, no ground truth
    python bench/video_flicker.py --real clean.mp4 --add-rain streak   # real motion, known truth

With ``--real`` the flicker measure is the warping error with flows computed once, for every row
alike, on the frame-by-frame output; quality is the Y-PSNR against the input itself (on a clip
without rain: how much deraining changes it). With ``--add-rain STYLE`` the clip is taken as
clean: rain of one recipe is rendered over each frame, flows come from the clean frames and
Y-PSNR is against them: real camera and object motion with a ground truth.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from derain_cli.evaluation.metrics import psnr, ssim
from derain_cli.images.io import read_image
from derain_cli.inference.engine import Derainer
from derain_cli.synth import photo_scale, render_rain, sample_recipe
from derain_cli.synth.clip import MOTIONS, Clip, rainy_clip
from derain_cli.video.consistency import TemporalSettings, TemporalStage
from derain_cli.video.flicker import (
    STATIC_TOLERANCE,
    reference_flows,
    temporal_error,
    warping_error,
)
from derain_cli.video.temporal import RecursiveSettings, TemporalFilter
from derain_cli.weights.loading import load_weights

STYLES = ("streak", "heavy", "drizzle")
MEASURES = ("psnr", "ssim", "flicker", "static", "moving", "warp")
Method = Callable[[list[np.ndarray]], list[np.ndarray]]


def stage(settings: TemporalSettings) -> Method:
    def run(frames: list[np.ndarray]) -> list[np.ndarray]:
        temporal = TemporalStage(settings)
        return [out for frame in frames for out in temporal.push(frame)] + temporal.flush()

    return run


def recursive(settings: RecursiveSettings) -> Method:
    def run(frames: list[np.ndarray]) -> list[np.ndarray]:
        smoother = TemporalFilter(settings)
        return [smoother(frame) for frame in frames]

    return run


def methods(windows: list[int]) -> dict[str, Method]:
    """The temporal methods compared (frame by frame and the input are added by the caller)."""
    chosen = {"recursive filter only (s=0.7)": recursive(RecursiveSettings())}
    for k in windows:
        chosen[f"fusion k={k}, no recursive"] = stage(TemporalSettings(window=k, recursive=0.0))
        chosen[f"fusion k={k} + recursive 0.3"] = stage(TemporalSettings(window=k))
    return chosen


def measure(frames: list[np.ndarray], clip: Clip, flows: list) -> dict[str, float]:
    static, moving = _errors(frames, clip)
    return {
        "psnr": statistics.fmean(psnr(f, c) for f, c in zip(frames, clip.clean, strict=True)),
        "ssim": statistics.fmean(ssim(f, c) for f, c in zip(frames, clip.clean, strict=True)),
        "flicker": temporal_error(frames, clip.clean, clip.shift),
        "static": static,
        "moving": moving,
        "warp": warping_error(frames, flows),
    }


def _errors(frames: list[np.ndarray], clip: Clip) -> tuple[float, float]:
    """Mean |F_t - C_t| where the clean clip is static under the camera shift, and where not."""
    sums = {True: 0.0, False: 0.0}
    counts = {True: 0, False: 0}
    for t in range(1, len(frames)):
        moved = np.abs(clip.clean[t] - np.roll(clip.clean[t - 1], clip.shift, axis=(0, 1)))
        changed = moved.max(axis=2) > STATIC_TOLERANCE
        keep = np.ones_like(changed)
        if clip.shift != (0, 0):
            keep[:, -abs(clip.shift[1]) :] = False  # wrapped by the roll
        error = np.abs(frames[t] - clip.clean[t]).mean(axis=2)
        for is_static, mask in ((True, keep & ~changed), (False, keep & changed)):
            sums[is_static] += float(error[mask].sum())
            counts[is_static] += int(mask.sum())
    static = sums[True] / max(counts[True], 1)
    return static, (sums[False] / counts[False] if counts[False] else float("nan"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="weights spec (default: bundled default)")
    parser.add_argument("--clean", type=Path, default=Path("../shared/data/clean"))
    parser.add_argument("--photos", type=int, default=12)
    parser.add_argument("--offset", type=int, default=0, help="skip the first N photos")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", default="240x320", help="H x W of the clips")
    parser.add_argument("--motions", default=",".join(MOTIONS))
    parser.add_argument("--windows", default="2", help="fusion windows k to compare")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--real", type=Path, nargs="*", default=[], help="real clips to measure")
    parser.add_argument("--add-rain", default=None, metavar="STYLE", help="render rain on --real")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    height, width = (int(v) for v in args.size.lower().split("x"))
    compared = methods([int(k) for k in args.windows.split(",")])
    derainer = Derainer(load_weights(args.weights), device="cpu")
    if args.real:
        measure_real(args.real, derainer, compared, args.frames, args.add_rain)
        return
    photos = sorted(p for p in args.clean.iterdir() if p.suffix.lower() in {".jpg", ".png"})
    photos = photos[args.offset : args.offset + args.photos]
    motions = args.motions.split(",")
    rows: dict[tuple[str, str], list[dict[str, float]]] = {}
    seconds: dict[str, float] = {}
    derain_seconds, frames_done = 0.0, 0
    for index, path in enumerate(photos, start=args.offset):
        photo = read_image(path).rgb
        for motion in motions:
            draw = index * len(MOTIONS) + MOTIONS.index(motion)  # the same clip in any subset
            clip = rainy_clip(
                photo, np.random.default_rng(1000 + draw), frames=args.frames,
                size=(height, width), motion=motion, style=STYLES[draw % len(STYLES)],
            )  # fmt: skip
            start = time.perf_counter()
            derained = [derainer(frame) for frame in clip.rainy]
            derain_seconds += time.perf_counter() - start
            frames_done += len(derained)
            flows = reference_flows(clip.clean)
            candidates = {"rainy input": clip.rainy, "frame by frame": derained}
            for name, method in compared.items():
                start = time.perf_counter()
                candidates[name] = method(derained)
                seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
            for name, frames in candidates.items():
                rows.setdefault((motion, name), []).append(measure(frames, clip, flows))
            print(f"{path.name} {motion} {clip.style}: "
                  + " ".join(f"{rows[(motion, n)][-1]['psnr']:.2f}" for n in candidates),
                  flush=True)  # fmt: skip
    print(f"\n{len(photos)} photos x {len(motions)} motions, {args.frames} frames of "
          f"{width}x{height}, weights {args.weights or 'default'}")  # fmt: skip
    result = []
    for motion in motions:
        print(f"\n{motion} ({len(rows[(motion, 'rainy input')])} clips)")
        print(f"{'':32} {'Y-PSNR':>7} {'SSIM':>6} {'flicker':>8} {'static err':>10} "
              f"{'moving err':>10} {'warp err':>8} {'ms/frame':>8}")  # fmt: skip
        for (kind, name), values in rows.items():
            if kind != motion:
                continue
            mean = {key: float(np.nanmean([v[key] for v in values])) for key in MEASURES}
            ms = 1000 * seconds.get(name, 0.0) / max(frames_done, 1)
            print(f"{name:32} {mean['psnr']:7.2f} {mean['ssim']:6.4f} {mean['flicker']:8.4f} "
                  f"{mean['static']:10.4f} {mean['moving']:10.4f} {mean['warp']:8.4f} "
                  f"{ms:8.1f}")  # fmt: skip
            result.append({"motion": motion, "name": name, "ms_per_frame": ms, **mean,
                           "clips": values})  # fmt: skip
    print(f"\nderain: {1000 * derain_seconds / max(frames_done, 1):.1f} ms/frame")
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
    compared: dict[str, Method],
    limit: int,
    add_rain: str | None,
) -> None:
    against = "clean" if add_rain else "input"
    print(f"{'':44} {'warping err':>11} {'Y-PSNR vs ' + against:>15}")
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
        candidates.update({name: method(derained) for name, method in compared.items()})
        for name, frames in candidates.items():
            change = statistics.fmean(psnr(f, r) for f, r in zip(frames, truth, strict=True))
            label = f"{path.name}: {name}"
            print(f"{label:44} {warping_error(frames, flows):11.5f} {change:15.2f}")


if __name__ == "__main__":
    main()
