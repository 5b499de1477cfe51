"""Options shared by the commands that run a generator (`run`, `eval`): one definition each."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


DeviceOption = Annotated[
    str,
    typer.Option(metavar="auto|cpu|cuda[:N]|mps", help="auto picks cuda, then mps, then cpu."),
]
PrecisionOption = Annotated[Precision, typer.Option(help="auto: bf16 on CUDA, fp32 elsewhere.")]
TileOption = Annotated[
    int | None,
    typer.Option(
        min=0,
        metavar="PIXELS",
        help="Tile size (at least 64); default: automatic from free memory; 0 disables tiling.",
        show_default=False,
    ),
]
