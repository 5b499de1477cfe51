"""Location contrast L_LocCon(B, O) (paper Eq. 6): PatchNCE with reverse non-local negatives.

Symbols: O the rainy input and B = G_B(O), ``(N, 3, H, W)``; ``v = head(E_{G_B}(p))`` the
L2-normalised embedding of a patch p from G_B's OWN encoder (its intermediate layers, Table 3)
through a 2-layer MLP head per layer; tau the temperature; N the negatives (default 256).

For each query location i the positive is the patch of O at the same location, ``v_{O_i}``, and
the negatives are N other patches of O ``v_{O_j}``: the N patches FARTHEST from ``p_{O_i}`` in
image space (reverse non-local sampling, Sec. 3.2, Table 5), or random ones (CUT's choice), or
the adjacent ones: ``sampler.location_negatives``, drawn by ``NLCLObjective.sample_location``.
Eq. 6 as printed omits the ``-log``; we minimise the cross-entropy ``-log softmax`` with the
positive at index 0, as CUT's ``PatchNCELoss`` (the authors' ``loss_NCE``) does.

Following CUT, the keys (O side) are detached: gradients reach G_B and the heads through the
queries (B side) only. Features are taken at several G_B layers (authors' ``nce_layers``
0,4,8,12,16 in CUT; here ``losses.location_g_layers``) and the per-layer losses averaged.
Shapes: query embeddings ``(N, Q, d)``, key embeddings of every grid patch ``(N, P, d)``,
negative indices ``(N, Q, N_neg)``; logits in fp32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def patch_nce_loss(
    queries: Tensor,
    keys: Tensor,
    query_indices: Tensor,
    negative_indices: Tensor,
    temperature: float,
) -> Tensor:
    """Mean over (image, query) of ``-log(e^{q.k+/tau} / (e^{q.k+/tau} + sum_j e^{q.k_j/tau}))``.

    Args:
        queries: ``(N, Q, d)`` embeddings of B at the query patches.
        keys: ``(N, P, d)`` embeddings of O at EVERY grid patch (detach them for CUT's setup).
        query_indices: ``(N, Q)`` grid index of each query: its positive is ``keys[query]``.
        negative_indices: ``(N, Q, N_neg)`` grid indices of the negatives of each query.
    """
    with torch.autocast(queries.device.type, enabled=False):  # fp32 logits under AMP
        logits = torch.bmm(queries.float(), keys.float().transpose(1, 2)) / temperature  # (N,Q,P)
    pos = torch.gather(logits, 2, query_indices[..., None])
    neg = torch.gather(logits, 2, negative_indices)
    out = torch.cat([pos, neg], dim=2).flatten(0, 1)  # (N*Q, 1 + N_neg)
    target = torch.zeros(out.shape[0], dtype=torch.long, device=out.device)
    return F.cross_entropy(out, target)


def encode_generator(g: nn.Module, x: Tensor, layers: Sequence[int]) -> list[Tensor]:
    """Activations of a generator's layers ``layers`` for input ``x`` (its "encoder").

    Uses ``g.encode(x, layers)`` when the architecture provides one; otherwise the generator
    must keep its layers in an ``nn.Sequential`` called ``gen`` (the authors' layout), and layer
    i is the output of ``gen[i]`` -- the same indexing as the authors' ``nce_layers``.
    """
    wanted = list(layers)
    encode = getattr(g, "encode", None)
    if callable(encode):
        return list(encode(x, wanted))
    seq = getattr(g, "gen", None)
    if not isinstance(seq, nn.Sequential):
        raise ValueError(f"{type(g).__name__} exposes no encoder layers (no .encode, no .gen)")
    bad = [i for i in wanted if not 0 <= i < len(seq)]
    if bad:
        raise ValueError(f"generator layers are 0..{len(seq) - 1}, got {bad}")
    found: dict[int, Tensor] = {}
    for i, layer in enumerate(list(seq)[: max(wanted) + 1]):
        x = layer(x)
        if i in wanted:
            found[i] = x
    return [found[i] for i in wanted]


def generator_channels(g: nn.Module, layers: Sequence[int], size: int = 32) -> list[int]:
    """Channel counts of ``layers``, found with one tiny forward pass (to build heads up front)."""
    param = next(g.parameters())
    x = torch.zeros(1, 3, size, size, device=param.device, dtype=param.dtype)
    was_training = g.training
    g.eval()
    try:
        with torch.no_grad():
            return [f.shape[1] for f in encode_generator(g, x, layers)]
    finally:
        g.train(was_training)
