"""Time the exported ONNX graph (onnxruntime, CPU) against torch on the same weights, in one run.

    python bench/onnx_speed.py [--weights default] [--sizes 1024x768,512] [--repeats 3]

Both run the same computation on one random image: torch the G_B module between [0, 1] and
[-1, 1] (what the graph holds; no tiling), onnxruntime the file written by
``derain weights export-onnx``. Prints seconds (best of ``--repeats`` after one warm-up) and MP/s.
Needs the onnx extra.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch


def best_seconds(fn: Callable[[], None], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default="default")
    parser.add_argument("--sizes", default="1024x768")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import onnxruntime as ort

    from derain_cli.weights.loading import load_weights
    from derain_cli.weights.onnx_export import export_onnx

    loaded = load_weights(args.weights)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(loaded, Path(tmp) / "model.onnx").path
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        print(f"# torch {torch.__version__} ({torch.get_num_threads()} threads), "
              f"onnxruntime {ort.__version__}, weights {loaded.source}")  # fmt: skip
        print(f"{'size':>10} {'torch s':>8} {'MP/s':>6} {'ort s':>8} {'MP/s':>6} {'ratio':>6}")
        for size in args.sizes.split(","):
            w, h = (int(v) for v in (size.split("x") if "x" in size else (size, size)))
            rainy = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
            x = torch.from_numpy(rainy)

            def run_torch(x: torch.Tensor = x) -> None:
                with torch.inference_mode():
                    ((loaded.module(x * 2 - 1) + 1) / 2).clamp(0, 1)

            def run_ort(rainy: np.ndarray = rainy) -> None:
                session.run(None, {"rainy": rainy})

            t_torch = best_seconds(run_torch, args.repeats)
            t_ort = best_seconds(run_ort, args.repeats)
            mp = w * h / 1e6
            label = f"{w}x{h}"
            print(f"{label:>10} {t_torch:8.3f} {mp / t_torch:6.2f} {t_ort:8.3f} "
                  f"{mp / t_ort:6.2f} {t_torch / t_ort:6.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
