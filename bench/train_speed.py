"""Speed of one full NLCL training step and of its non-local search, vs the authors' sampler.

Measures, on random tensors already on the device (no disk I/O, so it is the step itself):

* images/s and ms of a full D-then-G step (``derain_cli.train.step.train_step``) at the given
  batch and crop, with the run's precision (bf16 autocast on CUDA) and channels_last;
* ms of the non-local searches one step makes (layer contrast: anchors + nearest matches in B
  and R; location contrast: farthest patches of O), and their share of the step;
* ms per call of the authors' sampler (one anchor, 40x40 window, Python loop), and what it
  would cost to feed the same batch (4 calls per image, as their code does), with the ratio.

CPU example (tiny): ``python bench/train_speed.py --device cpu --steps 2 --batch-size 2
--crop 64 --authors-calls 1``. GPU: ``python bench/train_speed.py --device cuda --json out.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from authors_sampler import time_authors  # noqa: E402

from derain_cli.config import NLCLConfig  # noqa: E402
from derain_cli.runtime import resolve_dtype  # noqa: E402
from derain_cli.sampling import block_match, grid_shape, random_indices  # noqa: E402
from derain_cli.train.setup import build_objective  # noqa: E402
from derain_cli.train.step import StepParts, train_step  # noqa: E402

AUTHORS_CALLS_PER_IMAGE = 4


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Any, device: torch.device, repeats: int) -> float:
    """Mean milliseconds of ``fn()`` over ``repeats`` calls (after the caller's warm-up)."""
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - start) * 1000 / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (after 3 warm-up)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--config", type=Path, default=None, help="TOML config (model/losses)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the networks")
    parser.add_argument("--authors-calls", type=int, default=5)
    parser.add_argument("--json", dest="json_out", type=Path, default=None)
    args = parser.parse_args()

    device = torch.device(args.device)
    config = NLCLConfig.load(args.config) if args.config else NLCLConfig()
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    dtype = resolve_dtype(config.train.precision, device, training=True)
    channels_last = config.train.channels_last and device.type == "cuda"
    objective = build_objective(config).to(device)
    if channels_last:
        objective = objective.to(memory_format=torch.channels_last)
    if args.compile:
        for module in (objective.g_b, objective.g_r, objective.d):
            module.compile()
    groups = objective.param_groups()
    betas = config.train.betas
    parts = StepParts(
        g_params=groups["generator"],
        d_params=groups["discriminator"],
        g_opt=torch.optim.Adam(groups["generator"], lr=config.train.lr, betas=betas),
        d_opt=torch.optim.Adam(groups["discriminator"], lr=config.train.lr, betas=betas),
        autocast=(
            contextlib.nullcontext
            if dtype == torch.float32
            else lambda: torch.autocast(device.type, dtype=dtype)
        ),
    )
    shape = (args.batch_size, 3, args.crop, args.crop)
    memory = torch.channels_last if channels_last else torch.contiguous_format
    o = (torch.rand(shape, device=device) * 2 - 1).contiguous(memory_format=memory)
    clean = (torch.rand(shape, device=device) * 2 - 1).contiguous(memory_format=memory)
    generator = torch.Generator(device=device)

    def step() -> None:
        generator.manual_seed(0)
        train_step(objective, o, clean, parts, generator=generator)

    for _ in range(3):
        step()
    step_ms = timed(step, device, args.steps)

    # The searches of one step, timed alone with the step's own settings.
    sc, lc = config.sampler, config.losses
    with torch.no_grad():
        b, r = objective.forward_generators(o)
    rows, cols = grid_shape(args.crop, args.crop, sc.patch, sc.stride)
    num_patches = rows * cols

    def layer_search() -> None:
        if lc.use_layer_contrast:
            objective.sample_layer(b, r, generator.manual_seed(0))

    def location_search() -> None:
        if lc.use_location_contrast and sc.location_negatives == "nonlocal":
            queries = random_indices(
                args.batch_size,
                num_patches,
                min(lc.location_queries, num_patches),
                generator=generator.manual_seed(0),
                device=device,
            )
            block_match(
                o,
                queries,
                patch=sc.patch,
                stride=sc.stride,
                k=min(lc.location_negatives, num_patches - 1),
                farthest=True,
                window=sc.window,
                chunk_size=sc.chunk_size,
                memory_budget=sc.memory_mb * 2**20,
            )

    layer_search()
    location_search()
    search_ms = timed(layer_search, device, args.steps) + timed(location_search, device, args.steps)

    authors_ms = time_authors(o[:1].float(), args.authors_calls)
    authors_batch_ms = authors_ms * AUTHORS_CALLS_PER_IMAGE * args.batch_size
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result = {
        "device": name,
        "precision": str(dtype).removeprefix("torch."),
        "batch_size": args.batch_size,
        "crop": args.crop,
        "compile": args.compile,
        "step_ms": round(step_ms, 3),
        "images_per_s": round(args.batch_size * 1000 / step_ms, 2),
        "search_ms_per_step": round(search_ms, 3),
        "search_share_of_step": round(search_ms / step_ms, 4),
        "authors_ms_per_call": round(authors_ms, 3),
        "authors_ms_for_the_batch": round(authors_batch_ms, 3),
        "authors_over_ours": round(authors_batch_ms / max(search_ms, 1e-9), 1),
    }
    print(json.dumps(result, indent=2))
    print(
        f"step {step_ms:.1f} ms ({result['images_per_s']} img/s); our non-local search "
        f"{search_ms:.2f} ms ({100 * search_ms / step_ms:.1f}% of the step); authors' sampler "
        f"{authors_ms:.1f} ms/call -> {authors_batch_ms:.0f} ms for the batch: "
        f"{result['authors_over_ours']}x slower",
        file=sys.stderr,
    )
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
