"""The full NLCL objective (paper Eq. 4) and every network it trains.

``L = L_decom + mu * L_LayerCon(B, R) + sigma * L_LocCon(B, O)`` with
``L_decom = ||B + R - O||^2 + delta * P_b(B) + lambda * ||R||_1`` (Eq. 2), plus, when
``losses.use_lowfreq`` is on, derain's low-frequency consistency ``L_low(B, O)``
(``losses/fidelity.py``; not in the paper), and when ``losses.use_synthetic`` is on, synthetic
supervision ``L_syn = |G_B(render(C)) - C|`` on the clean crops (``losses/supervision.py``; not in
the paper either).

:class:`NLCLObjective` owns G_B, G_R, the PatchGAN D, the projection heads and the optional
momentum (key) encoder, all built up front from the config. A training step is::

    b, r = objective.forward_generators(o)
    d_terms = objective.discriminator_losses(o, clean, b)      # D step: optimise "discriminator"
    g_terms = objective.generator_losses(o, clean, b, r, gen, synthetic=s)  # G step
    objective.momentum_update()                                # after the optimiser steps

Parameter groups (``param_groups``): "generator" = G_B + G_R + every projection head;
"discriminator" = D. The heads belong to the generator step because that is the only step whose
loss reaches them: D is trained by the adversarial loss alone and is a FIXED feature extractor
inside the generator step (its parameters get no gradient there; the layer contrast trains the
heads, G_B and G_R through it). The momentum encoder is updated by EMA, never by gradient.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from derain_cli.config import LossConfig, ModelConfig, SamplerConfig
from derain_cli.losses.adversarial import lsgan_discriminator_loss, lsgan_generator_loss
from derain_cli.losses.decomposition import (
    background_fidelity_loss,
    consistency_loss,
    rain_sparsity_loss,
)
from derain_cli.losses.fidelity import lowfreq_consistency_loss
from derain_cli.losses.layer_contrast import (
    LayerSamples,
    layer_contrast_infonce,
    layer_contrast_supcon,
    sample_layer_patches,
)
from derain_cli.losses.location_contrast import (
    encode_generator,
    generator_channels,
    patch_nce_loss,
)
from derain_cli.losses.supervision import synthetic_supervision_loss
from derain_cli.nets.discriminator import PatchDiscriminator
from derain_cli.nets.heads import HeadSet
from derain_cli.nets.registry import build_generator
from derain_cli.sampling import gather_features, grid_shape, random_indices, select


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Run ``module`` as a fixed function: gradients flow through it to its input, not to it."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class NLCLObjective(nn.Module):
    """Every trainable network of NLCL and the losses of its two optimisation steps."""

    def __init__(
        self,
        model: ModelConfig | None = None,
        sampler: SamplerConfig | None = None,
        losses: LossConfig | None = None,
    ) -> None:
        super().__init__()
        self.model_config = model or ModelConfig()
        self.sampler_config = sampler or SamplerConfig()
        self.loss_config = losses or LossConfig()
        mc, lc = self.model_config, self.loss_config

        self.g_b = build_generator(mc.generator, mc.generator_hparams)
        self.g_r = build_generator(mc.rain_generator, mc.rain_hparams)
        self.d = PatchDiscriminator(channels=mc.d_channels, layers=mc.d_layers, norm=mc.d_norm)

        # Heads exist only for enabled terms, so every parameter that exists gets trained.
        self.layer_heads: HeadSet | None = None
        self.key_d: PatchDiscriminator | None = None
        self.key_heads: HeadSet | None = None
        if lc.use_layer_contrast:
            bad = [i for i in lc.layer_d_layers if not 0 <= i < self.d.num_encoder_layers]
            if bad:
                raise ValueError(
                    f"losses.layer_d_layers: discriminator layers are "
                    f"0..{self.d.num_encoder_layers - 1}, got {bad}"
                )
            channels = [self.d.channels[i] for i in lc.layer_d_layers]
            self.layer_heads = HeadSet(channels, mc.head_units)
            if lc.momentum:
                self.key_d = copy.deepcopy(self.d).requires_grad_(False)
                self.key_heads = copy.deepcopy(self.layer_heads).requires_grad_(False)
        self.location_heads: HeadSet | None = None
        if lc.use_location_contrast:
            try:
                channels = generator_channels(self.g_b, lc.location_g_layers)
            except ValueError as exc:
                raise ValueError(f"losses.location_g_layers: {exc}") from None
            self.location_heads = HeadSet(channels, mc.head_units)

    # -- parameters ----------------------------------------------------------------------------

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Disjoint trainable parameter lists, one per optimiser, covering every trainable one."""
        generator: list[nn.Module] = [self.g_b, self.g_r]
        generator += [h for h in (self.layer_heads, self.location_heads) if h is not None]
        return {
            "generator": [p for m in generator for p in m.parameters() if p.requires_grad],
            "discriminator": [p for p in self.d.parameters() if p.requires_grad],
        }

    @torch.no_grad()
    def momentum_update(self) -> None:
        """``key = m * key + (1 - m) * query`` for the D encoder and the layer heads (MoCo)."""
        if self.key_d is None or self.key_heads is None or self.layer_heads is None:
            return
        m = self.loss_config.momentum_decay
        for src, dst in ((self.d, self.key_d), (self.layer_heads, self.key_heads)):
            for p_q, p_k in zip(src.parameters(), dst.parameters(), strict=True):
                p_k.lerp_(p_q.detach(), 1.0 - m)

    # -- forward -------------------------------------------------------------------------------

    def forward_generators(self, o: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, R) = (G_B(O), G_R(O))`` for ``O`` in [-1, 1], ``(N, 3, H, W)``."""
        return self.g_b(o), self.g_r(o)

    def forward(self, o: Tensor) -> tuple[Tensor, Tensor]:
        return self.forward_generators(o)

    def discriminator_losses(
        self, o: Tensor, clean: Tensor, b: Tensor | None = None
    ) -> dict[str, Tensor]:
        """LSGAN D loss: unpaired clean crops are real, the detached B = G_B(O) is fake.

        Returns ``{"real", "fake", "total"}`` with ``total = 0.5 * (real + fake)`` (CUT's
        weighting). With the adversarial term disabled, ``total`` is a differentiable zero.
        """
        if not self.loss_config.use_adv:
            zero = self._zero(self.d)
            return {"real": zero.detach(), "fake": zero.detach(), "total": zero}
        if b is None:
            with torch.no_grad():
                b = self.g_b(o)
        real, fake = lsgan_discriminator_loss(self.d(clean), self.d(b.detach()))
        return {"real": real, "fake": fake, "total": 0.5 * (real + fake)}

    @contextlib.contextmanager
    def synthetic_only(self) -> Iterator[None]:
        """Inside: the synthetic term alone (``losses.synthetic_only_steps``); D's loss is zero."""
        saved = self.loss_config
        self.loss_config = dataclasses.replace(
            saved,
            use_adv=False,
            use_consistency=False,
            use_rain_l1=False,
            use_layer_contrast=False,
            use_location_contrast=False,
            use_lowfreq=False,
        )
        try:
            yield
        finally:
            self.loss_config = saved

    def generator_losses(
        self,
        o: Tensor,
        clean: Tensor,
        b: Tensor,
        r: Tensor,
        generator: torch.Generator | None = None,
        *,
        synthetic: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Every generator-step term by name (unweighted) plus ``"total"`` (the weighted sum).

        Disabled terms are omitted and not computed. D's parameters receive no gradient.
        ``generator`` drives every random patch choice (seeded runs are reproducible).
        ``synthetic`` is ``clean`` with rain rendered over it (needed by ``use_synthetic``).
        """
        lc = self.loss_config
        terms: dict[str, Tensor] = {}
        weights: dict[str, float] = {}
        if lc.use_adv:
            with frozen(self.d):
                terms["adv"] = lsgan_generator_loss(self.d(b))
            weights["adv"] = lc.adv_weight
        if lc.use_consistency:
            terms["consistency"] = consistency_loss(b, r, o)
            weights["consistency"] = lc.consistency_weight
        if lc.use_rain_l1:
            terms["rain_l1"] = (
                rain_sparsity_loss(r)
                if lc.rain_l1_target == "r"
                else background_fidelity_loss(b, o)
            )
            weights["rain_l1"] = lc.rain_l1_weight
        if lc.use_layer_contrast:
            terms["layer_contrast"] = self.layer_contrast(b, r, generator)
            weights["layer_contrast"] = lc.layer_weight
        if lc.use_location_contrast:
            loss = self.location_contrast(o, b, generator)
            if lc.location_identity:
                loss = 0.5 * (loss + self.location_contrast(clean, self.g_b(clean), generator))
            terms["location_contrast"] = loss
            weights["location_contrast"] = lc.location_weight
        if lc.use_lowfreq:
            terms["lowfreq"] = lowfreq_consistency_loss(b, o, lc.lowfreq_pool, lc.lowfreq_space)
            weights["lowfreq"] = lc.lowfreq_weight
        if lc.use_synthetic:
            if synthetic is None:
                raise ValueError("losses.use_synthetic needs the rendered crops (synthetic=...)")
            terms["synthetic"] = synthetic_supervision_loss(
                self.g_b(synthetic),
                clean,
                synthetic,
                form=lc.synthetic_loss,
                ssim_weight=lc.synthetic_ssim_weight,
            )
            weights["synthetic"] = lc.synthetic_weight
        total = sum((weights[k] * v for k, v in terms.items()), self._zero(self.g_b))
        terms["total"] = total
        return terms

    # -- the contrastive terms -----------------------------------------------------------------

    def sample_layer(self, b: Tensor, r: Tensor, generator: torch.Generator | None) -> LayerSamples:
        """Patch indices for the layer contrast (also timed by ``bench/train_speed.py``)."""
        lc = self.loss_config
        return sample_layer_patches(
            b,
            r,
            sampler=self.sampler_config,
            queries=lc.layer_queries,
            positives=lc.layer_positives,
            negatives=lc.layer_negatives,
            generator=generator,
        )

    def sample_location(
        self, o: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """``(queries (N, Q), negatives (N, Q, N_neg))`` grid indices for the location contrast.

        Queries are random grid positions; negatives follow ``sampler.location_negatives``:
        ``"nonlocal"`` = REVERSE non-local sampling (the farthest patches of O, Sec. 3.2),
        ``"random"`` = CUT's and the authors' choice, ``"neighbour"`` = the adjacent patches.
        """
        sc, lc = self.sampler_config, self.loss_config
        grid = grid_shape(o.shape[-2], o.shape[-1], sc.patch, sc.stride)
        num_patches = grid[0] * grid[1]
        num_q = min(lc.location_queries, num_patches)
        num_neg = min(lc.location_negatives, num_patches - 1)
        queries = random_indices(
            o.shape[0], num_patches, num_q, generator=generator, device=o.device
        )
        with torch.no_grad():
            negatives = select(
                sc,
                sc.location_negatives,
                o.detach(),
                queries,
                k=num_neg,
                farthest=sc.location_negatives == "nonlocal",
                generator=generator,
            )
        return queries, negatives

    def layer_contrast(self, b: Tensor, r: Tensor, generator: torch.Generator | None) -> Tensor:
        """Eq. 5 averaged over ``losses.layer_d_layers`` (D encoder frozen, heads trained)."""
        sc, lc = self.sampler_config, self.loss_config
        assert self.layer_heads is not None
        samples = self.sample_layer(b, r, generator)
        grid = grid_shape(b.shape[-2], b.shape[-1], sc.patch, sc.stride)
        where: dict[str, Any] = dict(
            grid=grid, patch=sc.patch, stride=sc.stride, image_size=tuple(b.shape[-2:])
        )
        layers = lc.layer_d_layers
        with frozen(self.d):
            q_b, q_r = self.d.encode(b, layers), self.d.encode(r, layers)
        if self.key_d is not None:
            with torch.no_grad():
                k_b, k_r = self.key_d.encode(b, layers), self.key_d.encode(r, layers)
        else:
            k_b, k_r = q_b, q_r

        total = self._zero(self.layer_heads)
        for i, head in enumerate(self.layer_heads):
            embed_q = _embedder(head, where)
            if lc.layer_form == "supcon":
                loss = layer_contrast_supcon(
                    embed_q, (q_b[i], q_r[i]), samples, lc.layer_temperature
                )
            else:
                if self.key_heads is not None:
                    embed_k = _embedder(self.key_heads[i], where, no_grad=True)
                else:
                    embed_k = embed_q
                loss = layer_contrast_infonce(
                    embed_q, embed_k, (q_b[i], q_r[i]), (k_b[i], k_r[i]), samples,
                    lc.layer_temperature,
                )  # fmt: skip
            total = total + loss
        return total / len(self.layer_heads)

    def location_contrast(self, o: Tensor, b: Tensor, generator: torch.Generator | None) -> Tensor:
        """Eq. 6 averaged over ``losses.location_g_layers`` of G_B (keys from O detached)."""
        sc, lc = self.sampler_config, self.loss_config
        assert self.location_heads is not None
        n = o.shape[0]
        grid = grid_shape(o.shape[-2], o.shape[-1], sc.patch, sc.stride)
        num_patches = grid[0] * grid[1]
        queries, negatives = self.sample_location(o, generator)

        all_patches = torch.arange(num_patches, device=o.device).expand(n, -1)
        where: dict[str, Any] = dict(
            grid=grid, patch=sc.patch, stride=sc.stride, image_size=tuple(o.shape[-2:])
        )
        layers = lc.location_g_layers
        feats_b = encode_generator(self.g_b, b, layers)
        with torch.no_grad():
            feats_o = encode_generator(self.g_b, o, layers)
        total = self._zero(self.location_heads)
        for head, f_b, f_o in zip(self.location_heads, feats_b, feats_o, strict=True):
            q = head(gather_features(f_b, queries, **where))
            with torch.no_grad():
                keys = head(gather_features(f_o, all_patches, **where))
            total = total + patch_nce_loss(q, keys, queries, negatives, lc.location_temperature)
        return total / len(self.location_heads)

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _zero(module: nn.Module) -> Tensor:
        """A zero that depends on ``module``'s parameters (backward-safe when a term is off)."""
        params = [p for p in module.parameters() if p.requires_grad]
        if not params:
            return torch.zeros(())
        return torch.stack([p.reshape(-1)[0] for p in params]).sum() * 0.0


def _embedder(
    head: nn.Module, where: dict[str, Any], *, no_grad: bool = False
) -> Callable[[Tensor, Tensor], Tensor]:
    """``(feature map, patch indices) -> head embeddings`` at the patches' centres."""

    def embed(features: Tensor, indices: Tensor) -> Tensor:
        with torch.no_grad() if no_grad else contextlib.nullcontext():
            return head(gather_features(features, indices, **where)).float()

    return embed
