"""Video deraining throughput: frames per second, end to end, as ``derain clip.mp4 -o out.mp4``.

For each size a rainy H.264 clip is generated first (``derain_cli.synth.clip`` over a clean photo
scaled to fit, AAC-free), then timed through :func:`derain_cli.video.pipeline.derain_video`:

- ``codec only``: an identity model, so decode + RGB conversion + encode (the floor);
- ``frame by frame``: the weights, ``--no-temporal``;
- ``recursive only``: the recursive filter alone at strength 0.7 (what ``derain`` did before the
  fusion);
- ``fusion k=K``: the weights with temporal fusion over frames t-K ... t+K and the light
  recursive filter after it (``k=2`` is what ``derain`` does).

Each case runs ``--repeats`` times, the cases interleaved, so that a busy machine slows them
alike; the median is printed with its ratio to frame by frame from the same run. ``--batch``
sets the frames per network pass (default: what the device allows, one on a CPU).

On a machine that is busy with other work, whole runs minutes apart are too noisy to compare, so
the parts are timed too, interleaved frame by frame in one process: the model on frame t, then
each temporal stage on its output. The ratio ``model / (model + stage)`` is what the stage
leaves of the frame-by-frame rate when decoding and encoding overlap (they run in threads).

    python bench/video_speed.py                                  # 640x480 and 1280x720, CPU
    python bench/video_speed.py --sizes 480x640 --frames 48 --device cuda --json video.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import torch

from derain_cli.images.io import read_image
from derain_cli.inference.engine import Derainer
from derain_cli.synth.clip import rainy_clip
from derain_cli.video.consistency import TemporalSettings, TemporalStage
from derain_cli.video.pipeline import VideoOptions, derain_video
from derain_cli.weights.loading import load_weights


def write_clip(path: Path, frames: list[np.ndarray], fps: int = 25) -> None:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"crf": "18"})
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray((rgb * 255 + 0.5).astype(np.uint8), format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="480x640,720x1280", help="H x W, comma-separated")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--photo", type=Path, default=Path("../shared/data/clean/ocv-fruits.jpg"))
    parser.add_argument("--windows", default="1,2,3", help="fusion windows k to time")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    derainer = Derainer(load_weights(args.weights), device=args.device)
    photo = read_image(args.photo).rgb
    rows = []
    machine = platform.processor() or platform.machine()
    print(f"{machine}, {args.threads} threads, {derainer.description}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            height, width = (int(v) for v in size.lower().split("x"))
            travel = 2 * args.frames
            scale = max(height / photo.shape[0], (width + travel) / photo.shape[1])
            big = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
            clip = rainy_clip(
                np.clip(big, 0, 1), np.random.default_rng(0), frames=args.frames,
                size=(height, width), motion="pan",
            )  # fmt: skip
            source = Path(tmp) / f"rain-{size}.mp4"
            write_clip(source, clip.rainy)
            derainer(clip.rainy[0])  # warm-up (allocations, thread pools)
            cases: dict[str, tuple[Callable[[np.ndarray], np.ndarray], TemporalSettings | None]] = {
                "codec only": (lambda rgb: rgb, None),
                "frame by frame": (derainer, None),
                "recursive only": (derainer, TemporalSettings(window=0, recursive=0.7)),
            }
            for k in (int(v) for v in args.windows.split(",")):
                cases[f"fusion k={k}"] = (derainer, TemporalSettings(window=k))
            parts(derainer, clip.rainy, cases, f"{width}x{height}")
            times: dict[str, list[float]] = {name: [] for name in cases}
            frames = 0
            for _ in range(args.repeats):
                for name, (model, temporal) in cases.items():
                    options = VideoOptions(temporal=temporal, batch=args.batch)
                    start = time.perf_counter()
                    summary = derain_video(
                        source, Path(tmp) / "out.mp4", model, options, overwrite=True
                    )
                    times[name].append(time.perf_counter() - start)
                    frames = summary.frames
            base = frames / statistics.median(times["frame by frame"])
            for name, seconds in times.items():
                median = statistics.median(seconds)
                fps = frames / median
                print(f"{width}x{height} {name:15} {frames} frames {median:6.2f} s "
                      f"{fps:6.2f} frames/s  {fps / base:5.2f} x frame by frame")  # fmt: skip
                rows.append({"size": f"{width}x{height}", "case": name, "frames": frames,
                             "seconds": seconds, "fps": fps, "ratio": fps / base})  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


def parts(
    derainer: Derainer,
    frames: list[np.ndarray],
    cases: dict[str, tuple[Callable[[np.ndarray], np.ndarray], TemporalSettings | None]],
    label: str,
) -> None:
    """Model and temporal stages timed on the same frames, interleaved (see the docstring)."""
    stages = {name: TemporalStage(t) for name, (_, t) in cases.items() if t is not None}
    seconds = dict.fromkeys(["model", *stages], 0.0)
    for frame in frames:
        start = time.perf_counter()
        clean = derainer(frame)
        seconds["model"] += time.perf_counter() - start
        for name, stage in stages.items():
            start = time.perf_counter()
            stage.push(clean)
            seconds[name] += time.perf_counter() - start
    for name, stage in stages.items():
        start = time.perf_counter()
        stage.flush()
        seconds[name] += time.perf_counter() - start
    model = seconds.pop("model")
    print(f"{label} parts: model {1000 * model / len(frames):.0f} ms/frame")
    for name, spent in seconds.items():
        print(f"{label} parts: {name:15} {1000 * spent / len(frames):5.0f} ms/frame, "
              f"{model / (model + spent):.2f} x frame by frame")  # fmt: skip


if __name__ == "__main__":
    main()
