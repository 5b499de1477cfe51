"""Video deraining throughput: frames per second, end to end, as ``derain clip.mp4 -o out.mp4``.

For each size a rainy H.264 clip is generated first (``derain_cli.synth.clip`` over a clean photo
scaled to fit, AAC-free), then timed through :func:`derain_cli.video.pipeline.derain_video`:

- ``codec only``: an identity model, so decode + RGB conversion + encode (the floor);
- ``frame by frame``: the weights, ``--no-temporal``;
- ``temporal``: the weights with the default temporal filter (what ``derain`` does).

    python bench/video_speed.py                                  # 640x480 and 1280x720, CPU
    python bench/video_speed.py --sizes 480x640 --frames 48 --device cuda --json video.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import torch

from derain_cli.imaging import read_image
from derain_cli.inference.engine import Derainer
from derain_cli.synth.clip import rainy_clip
from derain_cli.video.pipeline import VideoOptions, derain_video
from derain_cli.video.temporal import TemporalSettings
from derain_cli.weights import load_weights


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
            cases = {
                "codec only": (lambda rgb: rgb, None),
                "frame by frame": (derainer, None),
                "temporal": (derainer, TemporalSettings()),
            }
            for name, (model, temporal) in cases.items():
                start = time.perf_counter()
                summary = derain_video(
                    source,
                    Path(tmp) / "out.mp4",
                    model,
                    VideoOptions(temporal=temporal),
                    overwrite=True,
                )
                seconds = time.perf_counter() - start
                fps = summary.frames / seconds
                print(f"{width}x{height} {name:15} {summary.frames} frames {seconds:6.2f} s "
                      f"{fps:6.2f} frames/s")  # fmt: skip
                rows.append({"size": f"{width}x{height}", "case": name, "frames": summary.frames,
                             "seconds": seconds, "fps": fps})  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
