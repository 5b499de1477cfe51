"""The issue's picture: real rainy photos, one per row, as input | ours | the authors' checkpoint.

    python tools/gpu_window/grid.py --weights runs/NAME/G_B.safetensors
    python tools/gpu_window/grid.py --weights weights/NAME.safetensors -o docs/images/x.jpg

The photos are chosen deterministically: ``--count`` of them drawn with ``--seed`` from the
sorted file list of ``--real`` (default ``../shared/data/rain-real``); the choice is printed and
written to a caption file beside the picture (``OUT`` with ``.md``). Every photo is derained at
full resolution, then each cell is downscaled to ``--height`` pixels (256) and labelled.

LICENCE: rain-real's photos are for research use only and must not be redistributed inside the
project (``../shared/data/README.md``). The default output therefore goes to the git-ignored
``runs/``; writing into ``docs/`` and committing it needs that question settled first.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from gw_common import REPO

SHARED = REPO.parent / "shared"
AUTHORS_COLUMN = "the authors' released checkpoint"
Derain = Callable[[np.ndarray], np.ndarray]
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm"})


def choose(files: Sequence[Path], count: int, seed: int) -> list[Path]:
    """``count`` files drawn without replacement with ``seed`` from the sorted list, sorted."""
    ordered = sorted(files)
    if count >= len(ordered):
        return ordered
    picks = np.random.default_rng(seed).choice(len(ordered), size=count, replace=False)
    return [ordered[i] for i in sorted(picks.tolist())]


def thumbnail(rgb: np.ndarray, height: int) -> np.ndarray:
    """Float RGB in [0, 1] resized (area filter) to ``height`` rows, aspect kept."""
    import cv2

    h, w = rgb.shape[:2]
    width = max(1, round(w * height / h))
    return np.asarray(cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA))


def build_grid(
    photos: Sequence[Path],
    columns: Sequence[tuple[str, Derain]],
    height: int,
) -> np.ndarray:
    """One row per photo: the input, then each (label, derainer) column; uint8 RGB picture."""
    from derain_cli.evaluate import GridRow, comparison_grid
    from derain_cli.imaging import read_image

    rows = []
    for photo in photos:
        rgb = read_image(photo).rgb
        cells = [("input", thumbnail(rgb, height))]
        for label, derain in columns:
            out = derain(rgb)
            cells.append((label, thumbnail(np.clip(out, 0.0, 1.0), height)))
        rows.append(GridRow(photo.stem, cells))
        print(f"  {photo.name}", flush=True)
    return comparison_grid(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="our G_B (file or registered name)")
    parser.add_argument("--label", default=None, help="column label (default: the file stem)")
    parser.add_argument(
        "--authors", type=Path, default=SHARED / "reference" / "nlcl-realrain-G_B.pth"
    )
    parser.add_argument("--real", type=Path, default=SHARED / "data" / "rain-real")
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("-o", "--out", type=Path, default=REPO / "runs" / "real-rain-grid.jpg")
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    from PIL import Image

    from derain_cli.atomic import atomic_write_bytes
    from derain_cli.inference.engine import Derainer
    from derain_cli.weights import load_weights

    files = [
        p
        for p in args.real.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    ]
    photos = choose(files, args.count, args.seed)
    ours = load_weights(args.weights)
    label = args.label or (
        Path(args.weights).stem
        if Path(args.weights).stem.lower() != "g_b"
        else Path(args.weights).parent.name
    )
    columns: list[tuple[str, Callable[[np.ndarray], np.ndarray]]] = [
        (f"ours: {label}", Derainer(ours, device=args.device))
    ]
    if args.authors.is_file():
        authors = load_weights(str(args.authors))
        columns.append(("authors' checkpoint", Derainer(authors, device=args.device)))
    else:
        print(f"grid.py: {args.authors} not found; the authors' column is left out")
    print(f"{len(photos)} photos (seed {args.seed}) of {args.real}:")
    picture = build_grid(photos, columns, args.height)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="JPEG", quality=args.quality)
    atomic_write_bytes(args.out, buffer.getvalue())
    caption = args.out.with_suffix(".md")
    names = ", ".join(f"`{p.name}`" for p in photos)
    caption.write_text(
        f"Real rainy photographs from `rain-real` (research use only; not redistributable), "
        f"{len(photos)} drawn with seed {args.seed} from the sorted list: {names}. Columns: "
        f"input | ours (`{args.weights}`, sha256 {ours.sha256[:12]}) | "
        f"{AUTHORS_COLUMN if len(columns) > 1 else '(authors not shown)'}. "
        f"Each cell derained at full resolution, shown {args.height} px tall.\n",
        encoding="utf-8",
    )
    print(f"grid: {args.out} ({picture.shape[1]}x{picture.shape[0]}); caption: {caption}")
    if "docs" in args.out.resolve().parts:
        print("NOTE: rain-real photos are research-use only: do not commit this file until the "
              "licence question is settled (tools/gpu_window/README.md).")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
