"""Typed registry of generator architectures.

A weights file names its architecture (``derain.arch``) and hyper-parameters
(``derain.hparams``); :func:`build_generator` turns those, and the file's tensors, back into a
module. Every registered generator maps an image in [-1, 1] (N, 3, H, W) to the background layer
B in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
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


def build_generator(
    arch: str,
    hparams: Mapping[str, Any] | None = None,
    state: Mapping[str, torch.Tensor] | None = None,
) -> nn.Module:
    """Build a generator of a registered architecture: untrained, or holding ``state``.

    ``state`` is loaded strictly: every tensor the module has must be there with its exact shape,
    and nothing else; a :class:`~derain_cli.errors.WeightsError` counts what is missing, unexpected
    or of the wrong shape, with one example each.
    """
    try:
        spec = ARCHITECTURES[arch]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise WeightsError(f"unknown architecture {arch!r} (known: {known})") from None
    module = spec.build(**{**spec.defaults, **(hparams or {})})
    if state is not None:
        _load_strict(module, state, arch)
    return module


def _load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], arch: str) -> None:
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if mismatched:
        problems.append(f"{len(mismatched)} with the wrong shape (e.g. {mismatched[0]})")
    if problems:
        raise WeightsError(f"tensors do not fit arch {arch!r}: " + "; ".join(problems))
    module.load_state_dict(dict(state), strict=True)
