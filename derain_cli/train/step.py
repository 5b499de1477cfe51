"""One NLCL update: discriminator first, then the generators (the CUT/pix2pix order).

1. ``B, R = G_B(O), G_R(O)`` once, under autocast.
2. D step: LSGAN on real clean crops vs ``B.detach()``; backward, average gradients over ranks,
   (unscale, clip), step.
3. G step with D frozen (``requires_grad=False`` on the discriminator group, so the adversarial
   and layer-contrast terms send gradients THROUGH D into B but never INTO D): every generator
   term; backward, average, (unscale, clip), step.
4. Momentum (MoCo) encoder update, when the objective has one.

AMP order (fp16 only; bf16 needs no scaler): ``scale(loss).backward()`` -> ``unscale_`` -> clip
-> ``scaler.step`` for each optimiser, then ONE ``scaler.update()`` per iteration.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn


class Objective(Protocol):
    """What the training step needs from :class:`derain_cli.losses.objective.NLCLObjective`."""

    def forward_generators(self, o: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def discriminator_losses(
        self, o: torch.Tensor, clean: torch.Tensor, b: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]: ...

    def generator_losses(
        self,
        o: torch.Tensor,
        clean: torch.Tensor,
        b: torch.Tensor,
        r: torch.Tensor,
        generator: torch.Generator | None = None,
        *,
        synthetic: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]: ...

    def momentum_update(self) -> None: ...


@dataclass
class StepParts:
    """Optimisers and the parameter lists they own (from ``objective.param_groups()``)."""

    g_params: list[nn.Parameter]
    d_params: list[nn.Parameter]
    g_opt: torch.optim.Optimizer
    d_opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None = None
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext
    sync: Callable[[Sequence[nn.Parameter]], None] | None = None  # gradient averaging (DDP)
    grad_clip: float = 0.0


def set_requires_grad(params: Sequence[nn.Parameter], flag: bool) -> None:
    for param in params:
        param.requires_grad_(flag)


def train_step(
    objective: Objective,
    o: torch.Tensor,
    clean: torch.Tensor,
    parts: StepParts,
    *,
    generator: torch.Generator | None = None,
    synthetic: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Run one D-then-G update; return every loss term, detached, as ``d_*`` and ``g_*``.

    ``synthetic``: the clean crops with rain rendered over them (synthetic supervision), or None.
    """
    with parts.autocast():
        b, r = objective.forward_generators(o)

    # Discriminator: real clean crops vs the detached background layer.
    set_requires_grad(parts.d_params, True)
    parts.d_opt.zero_grad(set_to_none=True)
    with parts.autocast():
        d_terms = objective.discriminator_losses(o, clean, b.detach())
    _optimise(d_terms["total"], parts.d_opt, parts.d_params, parts)

    # Generators: D frozen, gradients flow through it into B only.
    set_requires_grad(parts.d_params, False)
    try:
        parts.g_opt.zero_grad(set_to_none=True)
        with parts.autocast():
            g_terms = objective.generator_losses(
                o, clean, b, r, generator=generator, synthetic=synthetic
            )
        _optimise(g_terms["total"], parts.g_opt, parts.g_params, parts)
    finally:
        set_requires_grad(parts.d_params, True)
    if parts.scaler is not None:
        parts.scaler.update()
    objective.momentum_update()

    terms = {f"d_{k}": v.detach().float() for k, v in d_terms.items()}
    terms |= {f"g_{k}": v.detach().float() for k, v in g_terms.items()}
    return terms


def _optimise(
    loss: torch.Tensor,
    optimiser: torch.optim.Optimizer,
    params: Sequence[nn.Parameter],
    parts: StepParts,
) -> None:
    if parts.scaler is not None:
        parts.scaler.scale(loss).backward()
    else:
        loss.backward()
    if parts.sync is not None:
        parts.sync(params)
    if parts.grad_clip > 0:
        if parts.scaler is not None:
            parts.scaler.unscale_(optimiser)
        torch.nn.utils.clip_grad_norm_(params, parts.grad_clip)
    if parts.scaler is not None:
        parts.scaler.step(optimiser)
    else:
        optimiser.step()
