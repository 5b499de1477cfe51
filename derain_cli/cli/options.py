"""Options that several commands share: one definition each."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer


class OutputFormat(str, Enum):
    auto = "auto"
    png = "png"
    jpg = "jpg"
    webp = "webp"
    tiff = "tiff"


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


# Flags that several commands take. Each is spelt here once; a command that says something of
# its own in --help passes that text (``quiet: Annotated[bool, quiet_option("...")] = False``).

DebugOption = Annotated[bool, typer.Option("--debug", help="Show tracebacks.")]


def quiet_option(help: str) -> Any:
    return typer.Option("-q", "--quiet", help=help)


def json_option(help: str) -> Any:
    return typer.Option("--json", help=help)


def overwrite_option(help: str) -> Any:
    return typer.Option("--overwrite", help=help)


def time_limit_option(help: str) -> Any:
    return typer.Option("--time-limit", metavar="DURATION", help=help, show_default=False)


def time_limit_seconds(text: str | None) -> float | None:
    """``--time-limit``'s seconds (None when not given); a bad duration names the flag."""
    from derain_cli.durations import parse_duration
    from derain_cli.errors import UsageError

    if text is None:
        return None
    try:
        return parse_duration(text)
    except UsageError as exc:
        raise UsageError(f"--time-limit: {exc}") from None


def weights_option(help: str) -> Any:
    """A weights spec: what :func:`derain_cli.weights.loading.load_weights` takes."""
    return typer.Option(metavar="SPEC", help=help, show_default=False)


def init_option(help: str, *, show_default: bool = True) -> Any:
    """The weights a training run starts from (``train.init``)."""
    return typer.Option("--init", metavar="SPEC", help=help, show_default=show_default)


def clean_option(help: str) -> Any:
    """Folders of unpaired clean photos, repeatable."""
    return typer.Option("--clean", metavar="DIR", help=help, show_default=False)


# Videos (derain run): the encoder and the temporal stage.
CodecOption = Annotated[
    str | None,
    typer.Option(
        metavar="NAME",
        help="Video encoder (FFmpeg name: libx264, libx265, libvpx-vp9, ffv1...). "
        "Default: libx264, libvpx-vp9 for .webm.",
        show_default=False,
    ),
]
CrfOption = Annotated[
    int | None,
    typer.Option(
        min=0,
        max=63,
        metavar="N",
        help="Video quality, lower is better: 0-51 for H.264/H.265 (default 18), "
        "0-63 for VP9/AV1 (default 24).",
        show_default=False,
    ),
]
NoTemporalOption = Annotated[
    bool,
    typer.Option(
        "--no-temporal",
        help="Videos: derain frames independently. By default each frame is fused with its "
        "aligned neighbours, favouring rain-free samples (less rain, less flicker).",
    ),
]
TemporalWindowOption = Annotated[
    int | None,
    typer.Option(
        min=0,
        max=8,
        metavar="K",
        help="Videos: fuse each frame with K frames before and after it (default 2; 0: no "
        "fusion, only a light recursive filter).",
        show_default=False,
    ),
]
TemporalStrengthOption = Annotated[
    float | None,
    typer.Option(
        min=0.0,
        max=1.0,
        metavar="S",
        help="Videos: how much of the fused frame replaces the derained one, 0-1 (default 1).",
        show_default=False,
    ),
]


# Configs (derain train, derain adapt): the same keys, from a file or one at a time.
ConfigFileOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        metavar="FILE",
        help="A TOML (or YAML) config file of derain train's keys (derain adapt: instead of its "
        "built-in recipe).",
        show_default=False,
    ),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Change one config key (repeatable), e.g. --set train.lr=5e-5.",
    ),
]
