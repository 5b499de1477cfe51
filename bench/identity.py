"""Do no harm: how much each model changes clean photographs (no rain added).

    python bench/identity.py --weights nlcl-cpu-v1 --weights default \\
        [--clean DIR] [--sizes 320,640,0] [--per-image]

Every photo of ``--clean`` (default ``../shared/data/clean``), shrunk to each size on its long
side (``0``: as it is; Lanczos), goes through each model; printed per size and model: the mean
and the worst RGB PSNR of the output against the photo itself (higher: the photo is left alone)
and the mean change of brightness in grey levels (negative: darker). With ``--per-image``, one
line per photo at the first size.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from derain_cli.evaluation.metrics import psnr
from derain_cli.images.formats import READABLE_SUFFIXES
from derain_cli.inference.engine import Derainer


def photo(path: Path, side: int) -> np.ndarray:
    image = Image.open(path).convert("RGB")
    if side:
        scale = side / max(image.size)
        size = (round(image.width * scale), round(image.height * scale))
        image = image.resize(size, Image.Resampling.LANCZOS)
    return np.asarray(image).astype(np.float32) / 255.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", action="append", required=True, metavar="SPEC")
    parser.add_argument("--clean", type=Path, default=Path("../shared/data/clean"))
    parser.add_argument("--sizes", default="320,640,0", help="long sides; 0 = as is")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--per-image", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    files = sorted(p for p in args.clean.iterdir() if p.suffix.lower() in READABLE_SUFFIXES)
    models = {spec: Derainer.from_pretrained(spec, device="cpu") for spec in args.weights}
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"{len(files)} photos in {args.clean}: RGB PSNR of output vs input, mean / worst")
    for n, side in enumerate(sizes):
        scores: dict[str, list[tuple[float, float]]] = {spec: [] for spec in models}
        for path in files:
            x = photo(path, side)
            for spec, derainer in models.items():
                y = derainer(x)
                scores[spec].append((psnr(y, x), float((y - x).mean()) * 255.0))
            if args.per_image and n == 0:
                cells = "  ".join(f"{spec} {scores[spec][-1][0]:.2f}" for spec in models)
                print(f"  {path.name:32s} {cells}")
        for spec, rows in scores.items():
            values = np.array(rows)
            mean, worst, change = values[:, 0].mean(), values[:, 0].min(), values[:, 1].mean()
            print(f"{side or 'full':>5} {spec:40s} {mean:6.2f} / {worst:6.2f}  {change:+6.2f} grey")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
