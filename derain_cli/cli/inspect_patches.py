"""`derain inspect-patches IMAGE -o grid.png`: what the non-local sampler sees (paper Fig. 8).

For each query patch: its k nearest patches (non-local positives) and k farthest (reverse
non-local negatives), found by the training sampler. With ``--weights`` the image is decomposed
by G_B and G_R first and, as in training, positives are searched in B and negatives in R. The
library side is :mod:`derain_cli.inspect`; conventions are in ``docs/evaluation.md``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from derain_cli.cli.common import err_console, user_errors
from derain_cli.cli.options import DebugOption, json_option, overwrite_option, weights_option
from derain_cli.errors import UsageError

if TYPE_CHECKING:
    import numpy as np


def _parse_point(text: str) -> tuple[int, int]:
    try:
        x, y = (int(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--at {text!r}: expected X,Y in pixels, e.g. --at 120,64") from None
    return x, y  # inside the image? checked by inspect_image, which knows its size


def command(
    image: Annotated[
        Path, typer.Argument(metavar="IMAGE", help="The image to inspect.", show_default=False)
    ],
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", metavar="FILE.png", help="Write the picture here."),
    ] = None,
    weights: Annotated[
        str | None,
        weights_option(
            "G_B weights: decompose into B and R, search positives in B, negatives in R."
        ),
    ] = None,
    rain_weights: Annotated[
        str | None,
        weights_option(
            "G_R weights (default: the file beside --weights with G_B -> G_R in its name, "
            "or NAME-rain for a registered NAME; none found: R = O - B)."
        ),
    ] = None,
    queries: Annotated[int, typer.Option(min=1, help="Random query patches.")] = 4,
    k: Annotated[int, typer.Option("--k", min=1, help="Matches shown per query and kind.")] = 5,
    patch: Annotated[int, typer.Option(min=2, help="Patch side in search pixels.")] = 16,
    stride: Annotated[
        int | None, typer.Option(min=1, help="Grid step (default: the training grid's, patch / 2).")
    ] = None,
    at: Annotated[
        list[str] | None,
        typer.Option(
            metavar="X,Y",
            help="Query at this top-left corner (original pixels; repeatable). Replaces --queries.",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random queries.")] = 0,
    max_side: Annotated[
        int,
        typer.Option(
            min=0,
            metavar="PIXELS",
            help="Search on a copy at most this long (0: full size); coordinates stay original.",
        ),
    ] = 512,
    as_json: Annotated[
        bool, json_option("Print the queries and matches as JSON on stdout.")
    ] = False,
    overwrite: Annotated[bool, overwrite_option("Replace an existing -o FILE.png.")] = False,
    debug: DebugOption = False,
) -> None:
    """Show the non-local positives and negatives of query patches."""
    with user_errors(debug):
        if output is None and not as_json:
            raise UsageError("give -o FILE.png for the picture and/or --json for the data")
        if output is not None and output.suffix.lower() != ".png":
            raise UsageError(f"-o {output}: must be a .png file")
        if output is not None and output.exists() and not overwrite:
            what = "use --overwrite to replace it" if output.is_file() else "not a file"
            raise UsageError(f"-o {output}: exists ({what})")
        if output is not None and image.exists() and output.resolve() == image.resolve():
            raise UsageError(f"-o {output}: would replace the input image")
        if rain_weights is not None and weights is None:
            raise UsageError("--rain-weights needs --weights (G_B) as well")
        if not image.exists():
            raise UsageError(f"{image}: no such file")
        points = [_parse_point(p) for p in at] if at else None

        from derain_cli import inspect as ins
        from derain_cli.images.io import atomic_write_bytes, read_image

        picture = read_image(image)
        decomposition = None
        if weights is not None:
            decomposition = _decompose(picture.rgb, weights, rain_weights, max_side)
        result = ins.inspect_image(
            picture.rgb, name=str(image), patch=patch, stride=stride, k=k, queries=queries,
            at=points, seed=seed, max_side=max_side or None, decomposition=decomposition,
        )  # fmt: skip
        for note in result.notes:
            err_console.print(f"note: {note}")
        if output is not None:
            atomic_write_bytes(output, ins.png_bytes(result))
            err_console.print(f"wrote {output}")
        if as_json:
            sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")


def _decompose(
    rgb: np.ndarray, spec: str, rain_spec: str | None, max_side: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """B and R (G_R when found, else None) at search resolution: G_B/G_R run on that copy."""
    from derain_cli import inspect as ins
    from derain_cli.weights.loading import load_pair

    g_b, g_r = load_pair(spec, rain_spec)
    err_console.print(f"G_B: {g_b.source}; G_R: {g_r.source if g_r else 'none (R = O - B)'}")
    h, w = rgb.shape[:2]
    small = ins.resize_for_search(rgb, ins.search_scale(h, w, max_side or None))
    return ins.decompose(small, g_b.module, g_r.module if g_r else None)
