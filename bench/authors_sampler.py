"""A faithful re-implementation of the authors' non-local sampler, for speed comparisons.

Their sampler (in their released code) takes ONE random anchor per call and scans a 40x40
window of candidate positions (stride 1) around it with a Python loop over 16x16 patches,
computing one squared-L2 distance per iteration, then sorts. It ran 4 times per iteration at
batch size 1 (about 132 ms per call on an H200). ``derain_cli.sampling.block_match`` does the
same search for every query of a whole batch with unfold + matmul + topk.

Run alone it times both and checks they return the same neighbours::

    python bench/authors_sampler.py --device cuda --calls 5
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from derain_cli.sampling import block_match


def authors_search(
    image: torch.Tensor,
    *,
    patch: int = 16,
    window: int = 40,
    k: int = 8,
    generator: torch.Generator | None = None,
) -> tuple[tuple[int, int], list[tuple[int, int]], torch.Tensor]:
    """One call: a random anchor in ``image`` (1, C, H, W), its ``k`` nearest window positions.

    Returns the anchor's top-left corner, the top-left corners of its matches (nearest first,
    the anchor itself excluded) and their squared-L2 distances.
    """
    _, _, height, width = image.shape
    y = int(torch.randint(0, height - patch + 1, (1,), generator=generator))
    x = int(torch.randint(0, width - patch + 1, (1,), generator=generator))
    y0, x0 = _window_origin(y, x, height, width, patch, window)
    anchor = image[:, :, y : y + patch, x : x + patch]
    positions: list[tuple[int, int]] = []
    distances: list[torch.Tensor] = []
    for yy in range(y0, y0 + window):  # the Python loop of the original: one patch at a time
        for xx in range(x0, x0 + window):
            if (yy, xx) == (y, x):
                continue
            candidate = image[:, :, yy : yy + patch, xx : xx + patch]
            distances.append(((candidate - anchor) ** 2).sum())
            positions.append((yy, xx))
    stacked = torch.stack(distances)
    values, order = torch.sort(stacked)
    picked = order[:k].tolist()
    return (y, x), [positions[i] for i in picked], values[:k]


def _window_origin(y: int, x: int, height: int, width: int, patch: int, window: int) -> tuple:
    """Top-left of the window of candidate corners: centred on the anchor, kept inside."""
    y0 = min(max(0, y - window // 2), height - patch - window + 1)
    x0 = min(max(0, x - window // 2), width - patch - window + 1)
    return y0, x0


def vectorised_same_search(
    image: torch.Tensor, anchor: tuple[int, int], *, patch: int = 16, window: int = 40, k: int = 8
) -> tuple[list[tuple[int, int]], torch.Tensor]:
    """The same window search through ``block_match`` (stride 1 over the window's region)."""
    _, _, height, width = image.shape
    y, x = anchor
    y0, x0 = _window_origin(y, x, height, width, patch, window)
    region = image[:, :, y0 : y0 + window + patch - 1, x0 : x0 + window + patch - 1]
    query = torch.tensor([[(y - y0) * window + (x - x0)]], device=image.device)
    indices, distances = block_match(region, query, patch=patch, stride=1, k=k)
    flat = indices[0, 0].tolist()
    return [(y0 + i // window, x0 + i % window) for i in flat], distances[0, 0]


def time_authors(image: torch.Tensor, calls: int, seed: int = 0) -> float:
    """Milliseconds per call of :func:`authors_search`."""
    generator = torch.Generator().manual_seed(seed)
    authors_search(image, generator=generator)  # warm-up
    _sync(image.device)
    start = time.perf_counter()
    for _ in range(calls):
        authors_search(image, generator=generator)
    _sync(image.device)
    return (time.perf_counter() - start) * 1000 / calls


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--json", dest="json_out", default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    image = torch.rand(1, 3, args.size, args.size, device=device) * 2 - 1
    anchor, theirs, their_d = authors_search(image, generator=torch.Generator().manual_seed(1))
    ours, our_d = vectorised_same_search(image, anchor)
    same = set(theirs) == set(ours) and torch.allclose(their_d.float(), our_d, rtol=1e-4)
    ms = time_authors(image, args.calls)
    result = {"device": str(device), "authors_ms_per_call": ms, "same_neighbours": same}
    print(json.dumps(result, indent=2))
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
