"""Inference speed and peak memory of every registered generator and the authors' layout.

Runs ``Derainer`` exactly as the CLI does (automatic tiling unless ``--tile``) on a seeded
synthetic image and prints megapixels per second and peak memory per architecture, device and
size. CUDA peak memory is ``torch.cuda.max_memory_allocated``; CPU peak memory is the growth of
the resident set size, sampled every 5 ms while the run lasts.

    python bench/infer_speed.py                      # CPU (and CUDA when present), 512 and 2048
    python bench/infer_speed.py --device cuda --repeats 10 --json bench.json
    python bench/infer_speed.py --device cpu --sizes 512,1024x512 --arch nlcl-resnet,nlcl-s2d
    python bench/infer_speed.py --device cpu --sizes 1024x768 --arch nlcl-s2d --weights default

On the CPU, sizes above 1024 px run once (a 2048 x 2048 image takes about half a minute per
architecture on 2 cores); ``--cpu-max-size`` skips them entirely.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch
from torch import nn

from derain_cli.inference.engine import Derainer
from derain_cli.nets.generator import NLCLGenerator
from derain_cli.nets.registry import ARCHITECTURES, build_generator
from derain_cli.runtime import resolve_device

AUTHORS = "authors' layout (NLCLGenerator 32 ch x 16 blocks)"


@dataclass
class Row:
    model: str
    device: str
    dtype: str
    size: str
    tile: int
    repeats: int
    seconds: float
    megapixels_per_second: float
    peak_memory_mb: float
    parameters: int


class RssPeak:
    """Peak growth of this process's resident memory while the ``with`` block runs (Linux)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._base = 0

    @staticmethod
    def rss() -> int:
        try:
            with open("/proc/self/statm", encoding="ascii") as statm:
                return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            return 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss() - self._base)
            time.sleep(0.005)

    def __enter__(self) -> RssPeak:
        self._base = self.rss()
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss() - self._base)


def is_authors_layout(module: nn.Module) -> bool:
    """True when ``module`` computes the same function family as the authors' generator."""
    if type(module) is not NLCLGenerator or module.output != "direct":
        return False
    shapes = {k: v.shape for k, v in module.state_dict().items()}
    return shapes == {k: v.shape for k, v in NLCLGenerator().state_dict().items()}


def models(archs: list[str] | None = None) -> list[tuple[str, nn.Module]]:
    """The authors' layout plus every registered architecture (random weights: speed only).

    ``archs``: registered names to time, and ``"authors"`` for the authors' layout; None = all.
    A registered architecture whose defaults ARE the authors' layout is timed once, under both
    names.
    """
    wanted = set(archs) if archs is not None else {"authors", *ARCHITECTURES}
    found: list[tuple[str, nn.Module]] = []
    authors: nn.Module | None = NLCLGenerator() if "authors" in wanted else None
    for name in ARCHITECTURES:
        if name not in wanted:
            continue
        module = build_generator(name)
        if is_authors_layout(module):  # the registered default IS the authors' layout
            found.append((f"{name} = {AUTHORS}", module))
            authors = None
        else:
            found.append((name, module))
    if authors is not None:
        found.insert(0, (AUTHORS, authors))
    return found


def measure(
    name: str,
    module: nn.Module,
    device: str,
    precision: str,
    size: tuple[int, int],
    repeats: int,
    tile: int | None,
    host_memory: int | None = None,
) -> Row:
    derainer = Derainer(
        module, device=device, precision=precision, tile=tile, host_memory=host_memory
    )
    height, width = size
    rng = np.random.default_rng(0)
    image = rng.random((height, width, 3), dtype=np.float32)
    derainer(image[: min(height, 64), : min(width, 64)])  # warm up kernels and allocator
    cuda = derainer.device.type == "cuda"
    times: list[float] = []
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with RssPeak() as rss:
        for _ in range(repeats):
            start = time.perf_counter()
            derainer(image)
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() if cuda else rss.peak
    seconds = statistics.median(times)
    return Row(
        model=name,
        device=derainer.description,
        dtype=str(derainer.dtype).removeprefix("torch."),
        size=f"{width}x{height}",
        tile=derainer.tile_for(height, width),
        repeats=repeats,
        seconds=round(seconds, 4),
        megapixels_per_second=round(height * width / 1e6 / seconds, 4),
        peak_memory_mb=round(peak / 2**20, 1),
        parameters=sum(p.numel() for p in module.parameters()),
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="512,2048", help="square sizes or WxH, comma-separated")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (median)")
    parser.add_argument(
        "--device", default="all", choices=["all", "cpu", "cuda", "mps"], help="all = cpu + GPU"
    )
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--tile", type=int, default=None, help="default: automatic, as the CLI")
    parser.add_argument(
        "--cpu-max-size", type=int, default=4096, help="skip CPU sizes with a side above this"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--arch",
        default="all",
        help="comma-separated registered architectures to time, 'authors' for the authors' "
        f"layout, or 'all' (registered: {', '.join(ARCHITECTURES)})",
    )
    parser.add_argument(
        "--host-memory-mb",
        type=float,
        default=None,
        help="host budget of streamed tiles before memory-mapped files (0 = always files)",
    )
    parser.add_argument(
        "--weights",
        action="append",
        default=[],
        help="also time these weights (a file, a registered name such as 'default'); repeatable",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    return parser.parse_args(argv)


def weights_models(specs: list[str]) -> list[tuple[str, nn.Module]]:
    """Each ``--weights`` as it loads for ``derain`` (its architecture and hyper-parameters)."""
    from derain_cli.weights.loading import load_weights

    found = []
    for spec in specs:
        loaded = load_weights(spec)
        hparams = ", ".join(f"{k}={v}" for k, v in sorted(loaded.hparams.items()))
        found.append((f"{spec} ({loaded.arch}: {hparams})", loaded.module))
    return found


def parse_size(text: str) -> tuple[int, int]:
    if "x" in text:
        width, height = (int(v) for v in text.lower().split("x"))
        return height, width
    return int(text), int(text)


def parse_archs(text: str) -> list[str] | None:
    """``--arch`` as a list of names (None = all); unknown names stop with the known ones."""
    if text == "all":
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    known = {"authors", *ARCHITECTURES}
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        choices = ", ".join(sorted(known))
        raise SystemExit(f"--arch {text}: unknown {unknown}; choose from {choices}")
    return names


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    archs = parse_archs(args.arch)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "all":
        devices = ["cpu"] + (
            [resolve_device("auto").type] if resolve_device("auto").type != "cpu" else []
        )
    else:
        devices = [args.device]
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    machine: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    print(f"# machine: {machine}", flush=True)
    header = (
        f"{'model':58} {'device':32} {'size':>9} {'tile':>5} {'s':>8} {'MP/s':>8} {'peak MB':>9}"
    )
    print(header, flush=True)
    rows: list[Row] = []
    for device in devices:
        precision = "fp32" if device == "cpu" else args.precision
        for height, width in sizes:
            if device == "cpu" and max(height, width) > args.cpu_max_size:
                continue
            repeats = 1 if device == "cpu" and max(height, width) > 1024 else args.repeats
            for name, module in models(archs) + weights_models(args.weights):
                host = None if args.host_memory_mb is None else int(args.host_memory_mb * 2**20)
                size = (height, width)
                row = measure(name, module, device, precision, size, repeats, args.tile, host)
                rows.append(row)
                print(
                    f"{row.model[:58]:58} {row.device[:32]:32} {row.size:>9} {row.tile:>5} "
                    f"{row.seconds:8.3f} {row.megapixels_per_second:8.3f} "
                    f"{row.peak_memory_mb:9.1f}",
                    flush=True,
                )
    if args.json:
        payload = {"machine": machine, "rows": [asdict(row) for row in rows]}
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
