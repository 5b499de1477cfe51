"""Typed registry of generator architectures.

A weights file names its architecture (``derain.arch``) and hyper-parameters
(``derain.hparams``); :func:`build_generator` turns those back into a module. Every registered
generator maps an image in [-1, 1] (N, 3, H, W) to the background layer B in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from derain_cli.errors import WeightsError
from derain_cli.nets.fast import SpaceToDepthGenerator
from derain_cli.nets.generator import NLCLGenerator


@dataclass(frozen=True)
class Architecture:
    name: str
    build: Callable[..., nn.Module]
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""


ARCHITECTURES: dict[str, Architecture] = {
    "nlcl-resnet": Architecture(
        name="nlcl-resnet",
        build=NLCLGenerator,
        defaults={"in_channels": 3, "channels": 32, "blocks": 16, "output": "direct"},
        description="The authors' full-resolution ResNet generator (16 blocks, 32 channels).",
    ),
    "nlcl-s2d": Architecture(
        name="nlcl-s2d",
        build=SpaceToDepthGenerator,
        defaults={
            "in_channels": 3,
            "channels": 48,
            "blocks": 12,
            "factor": 4,
            "output": "direct",
            "norm": "instance",
        },
        description="The same blocks on 4x4 pixel cells (space-to-depth), 48 ch x 12: ~20x faster.",
    ),
}


def build_generator(arch: str, hparams: dict[str, Any] | None = None) -> nn.Module:
    """Build an untrained generator of a registered architecture."""
    try:
        spec = ARCHITECTURES[arch]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise WeightsError(f"unknown architecture {arch!r} (known: {known})") from None
    return spec.build(**{**spec.defaults, **(hparams or {})})
