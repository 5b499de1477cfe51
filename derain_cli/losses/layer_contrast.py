"""Layer contrast L_LayerCon(B, R) (paper Eq. 5) with non-local sampling (Sec. 3.2).

Symbols: B, R ``(N, 3, H, W)`` background and rain layers; ``f = head(E_D(p))`` the
L2-normalised embedding of a patch p, taken from the discriminator's encoder E_D (Table 3) and a
2-layer MLP head; tau the temperature; N_B the positives of a background anchor (default 8),
N_R the rain patches (default 256).

Per image, the sampler picks ``Q_B`` background anchors and their N_B non-local neighbours IN B
(block matching on B, Eq. 7), and ``ceil(N_R / (N_B + 1))`` rain anchors with their neighbours in
R; those rain patches (anchors + neighbours, N_R in all) are the negatives of the background
anchors, and the background patches are the negatives of the rain anchors. This is Eq. 5's two
symmetric terms: B patches pulled together and pushed from R, R patches pulled together and
pushed from B.

Eq. 5 as printed has no logarithm and a denominator without the positive; we implement the
standard multi-positive InfoNCE (one log-softmax per (anchor, positive) pair, the positive
included in its denominator), which is what "contrastive loss [7]" denotes and is bounded below.
The authors' code used a supervised-contrastive loss (Khosla et al.) over D features of B patches
(label 1) and R patches (label 0), ``SupConLoss``; that is ``layer_form = "supcon"``.

Shapes: anchors ``(N, A, d)``, positives ``(N, A, k, d)``, negatives ``(N, M, d)``; logits are
computed in fp32 even under autocast (tau = 0.07 amplifies bf16 rounding by ~14x).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from derain_cli.config import SamplerConfig
from derain_cli.sampling import grid_shape, random_indices, select


def multi_positive_infonce(
    anchors: Tensor, positives: Tensor, negatives: Tensor, temperature: float
) -> Tensor:
    """Multi-positive InfoNCE, averaged over (image, anchor, positive).

    Each term is ``-log(e^{a.p/tau} / (e^{a.p/tau} + sum_n e^{a.n/tau}))``.

    Args:
        anchors: ``(N, A, d)``.
        positives: ``(N, A, k, d)``, the k positives of each anchor.
        negatives: ``(N, M, d)``, shared by every anchor of the same image.
    """
    with torch.autocast(anchors.device.type, enabled=False):  # fp32 logits under AMP
        a = anchors.float()
        pos = torch.einsum("nad,nakd->nak", a, positives.float()) / temperature
        neg = torch.einsum("nad,nmd->nam", a, negatives.float()) / temperature
    neg_lse = torch.logsumexp(neg, dim=-1, keepdim=True)  # (N, A, 1)
    return (torch.logaddexp(pos, neg_lse) - pos).mean()


def supcon_loss(features: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, ``L_out``), per image.

    Args:
        features: ``(N, M, d)`` L2-normalised embeddings.
        labels: ``(N, M)`` integer classes (1 = background, 0 = rain).

    Every patch is an anchor; its positives are the other patches of its class in the same
    image, the denominator runs over every other patch of the image.
    """
    f = features.float()
    with torch.autocast(f.device.type, enabled=False):  # fp32 logits under AMP
        logits = torch.einsum("nid,njd->nij", f, f) / temperature
    eye = torch.eye(f.shape[1], dtype=torch.bool, device=f.device)
    logits = logits.masked_fill(eye, -math.inf)
    log_prob = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    same = (labels[:, :, None] == labels[:, None, :]) & ~eye
    count = same.sum(-1)
    mean_log_prob = log_prob.masked_fill(~same, 0.0).sum(-1) / count.clamp_min(1)
    return -(mean_log_prob[count > 0]).mean()


@dataclass(frozen=True)
class LayerSamples:
    """Patch indices of one layer-contrast draw (flat indices into the patch grid)."""

    b_anchors: Tensor  # (N, Q_B)
    b_positives: Tensor  # (N, Q_B, k)
    r_anchors: Tensor  # (N, Q_R)
    r_positives: Tensor  # (N, Q_R, k)
    num_negatives: int  # N_R: rain patches used as negatives (anchors + matches, truncated)

    @property
    def b_set(self) -> Tensor:
        """Every background patch, ``(N, Q_B * (k + 1))``: the negatives of the rain anchors."""
        return torch.cat([self.b_anchors[..., None], self.b_positives], -1).flatten(1)

    @property
    def r_set(self) -> Tensor:
        """``(N, N_R)`` rain patches: the negatives of the background anchors."""
        full = torch.cat([self.r_anchors[..., None], self.r_positives], -1).flatten(1)
        return full[:, : self.num_negatives]


def sample_layer_patches(
    b: Tensor,
    r: Tensor,
    *,
    sampler: SamplerConfig,
    queries: int,
    positives: int,
    negatives: int,
    generator: torch.Generator | None,
) -> LayerSamples:
    """Draw anchors and their matches in B (positives) and R (negatives), without gradients.

    The grid, the search and the two strategies (``sampler.layer_positives``,
    ``sampler.layer_negatives``: paper Table 2) come from ``sampler``. ``queries`` and
    ``negatives`` are capped at the number of grid patches (small crops).
    """
    n = b.shape[0]
    rows, cols = grid_shape(b.shape[-2], b.shape[-1], sampler.patch, sampler.stride)
    num_patches = rows * cols

    def matches(strategy: str, image: Tensor, anchors: Tensor) -> Tensor:
        return select(sampler, strategy, image.detach(), anchors, k=positives, generator=generator)

    with torch.no_grad():
        b_count = min(queries, num_patches)
        b_anchors = random_indices(n, num_patches, b_count, generator=generator, device=b.device)
        b_pos = matches(sampler.layer_positives, b, b_anchors)
        num_neg = min(negatives, num_patches)
        r_count = min(math.ceil(num_neg / (positives + 1)), num_patches)
        r_anchors = random_indices(n, num_patches, r_count, generator=generator, device=r.device)
        r_pos = matches(sampler.layer_negatives, r, r_anchors)
    return LayerSamples(b_anchors, b_pos, r_anchors, r_pos, min(num_neg, r_count * (positives + 1)))


#: ``embed(feature_map (N, C, h, w), patch_indices (N, ...)) -> (N, ..., d)`` unit vectors.
Embed = Callable[[Tensor, Tensor], Tensor]


def layer_contrast_infonce(
    embed_query: Embed,
    embed_key: Embed,
    query_maps: tuple[Tensor, Tensor],
    key_maps: tuple[Tensor, Tensor],
    samples: LayerSamples,
    temperature: float,
) -> Tensor:
    """Eq. 5 for one encoder layer: ``InfoNCE(B anchors) + InfoNCE(R anchors)``.

    ``query_maps``/``key_maps`` are ``(E(B), E(R))`` feature maps from the query encoder and the
    key encoder (the same encoder without the momentum option). Anchors are embedded by the
    query side, positives and negatives by the key side (MoCo).
    """
    q_b, q_r = query_maps
    k_b, k_r = key_maps
    b_term = multi_positive_infonce(
        embed_query(q_b, samples.b_anchors),
        embed_key(k_b, samples.b_positives),
        embed_key(k_r, samples.r_set),
        temperature,
    )
    r_term = multi_positive_infonce(
        embed_query(q_r, samples.r_anchors),
        embed_key(k_r, samples.r_positives),
        embed_key(k_b, samples.b_set),
        temperature,
    )
    return b_term + r_term


def layer_contrast_supcon(
    embed_query: Embed,
    query_maps: tuple[Tensor, Tensor],
    samples: LayerSamples,
    temperature: float,
) -> Tensor:
    """The authors' form: SupCon over background (label 1) and rain (label 0) patches."""
    q_b, q_r = query_maps
    f_b = embed_query(q_b, samples.b_set)
    f_r = embed_query(q_r, samples.r_set)
    labels = torch.cat(
        [
            torch.ones(f_b.shape[:2], dtype=torch.long, device=f_b.device),
            torch.zeros(f_r.shape[:2], dtype=torch.long, device=f_r.device),
        ],
        dim=1,
    )
    return supcon_loss(torch.cat([f_b, f_r], dim=1), labels, temperature)
