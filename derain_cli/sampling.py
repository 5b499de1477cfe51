"""Patch-index selection for the contrastive terms: random, neighbour, non-local, reverse non-local.

Every function works on flat patch indices into the row-major grid that :func:`unfold_patches`
produces (patch ``p`` has its top-left corner at ``(p // cols * stride, p % cols * stride)``), so
the losses can gather encoder features at the same places and ``derain inspect-patches`` can draw
them.

Non-local sampling is block matching (paper Sec. 3.2, Eq. 7): the squared L2 distance between a
query patch and every candidate patch, in image space, then the ``k`` smallest (positives) or the
``k`` largest (reverse non-local: negatives of the location contrast). The authors' code searched a
40x40 window around ONE anchor with a Python loop; here all queries of all images are searched at
once with one batched matrix product per chunk (``|a|^2 + |b|^2 - 2 a.b``), in fp32 with TF32 and
autocast switched off so that the ranking is exact to fp32 rounding.

Randomness only comes from an explicit ``torch.Generator`` so runs are reproducible.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from derain_cli.config import SamplerConfig, SamplingStrategy

#: Bytes the fp32 distance matrix of one chunk may take when ``chunk_size`` is None (the
#: config's ``sampler.memory_mb``, so the default lives in one place).
DEFAULT_MEMORY_BUDGET = SamplerConfig().memory_budget


def grid_shape(height: int, width: int, patch: int, stride: int) -> tuple[int, int]:
    """Rows and columns of the patch grid (only patches that fit entirely inside the image)."""
    if patch < 1 or stride < 1:
        raise ValueError(f"patch ({patch}) and stride ({stride}) must be >= 1")
    if height < patch or width < patch:
        raise ValueError(f"image {width}x{height} is smaller than the patch size {patch}")
    return (height - patch) // stride + 1, (width - patch) // stride + 1


def unfold_patches(images: Tensor, patch: int, stride: int) -> Tensor:
    """``(N, C, H, W) -> (N, P, C * patch * patch)``, patches in row-major grid order."""
    grid_shape(images.shape[-2], images.shape[-1], patch, stride)  # validates
    return F.unfold(images, kernel_size=patch, stride=stride).transpose(1, 2)


def patch_centres(
    indices: Tensor, grid: tuple[int, int], patch: int, stride: int
) -> tuple[Tensor, Tensor]:
    """Pixel coordinates (y, x) of the centres of patches ``indices`` (any shape), as floats."""
    cols = grid[1]
    rows_i = torch.div(indices, cols, rounding_mode="floor")
    cols_i = indices - rows_i * cols
    half = (patch - 1) / 2
    return rows_i.float() * stride + half, cols_i.float() * stride + half


def feature_positions(
    indices: Tensor,
    grid: tuple[int, int],
    patch: int,
    stride: int,
    image_size: tuple[int, int],
    feature_size: tuple[int, int],
) -> Tensor:
    """Flat positions in an ``h x w`` feature map of the patches ``indices`` (same shape).

    A patch maps to the feature cell under its centre, so one patch grid serves encoder layers
    of any resolution (full-resolution generator layers and the strided discriminator alike).
    """
    cy, cx = patch_centres(indices, grid, patch, stride)
    fh, fw = feature_size
    fy = (cy * fh / image_size[0]).long().clamp_(0, fh - 1)
    fx = (cx * fw / image_size[1]).long().clamp_(0, fw - 1)
    return fy * fw + fx


def gather_features(
    features: Tensor,
    indices: Tensor,
    *,
    grid: tuple[int, int],
    patch: int,
    stride: int,
    image_size: tuple[int, int],
) -> Tensor:
    """Feature vectors ``(N, *indices.shape[1:], C)`` of ``features (N, C, h, w)`` at patches."""
    n, c, fh, fw = features.shape
    pos = feature_positions(indices, grid, patch, stride, image_size, (fh, fw))
    flat = features.flatten(2).transpose(1, 2)  # (N, h*w, C)
    picked = torch.gather(flat, 1, pos.reshape(n, -1, 1).expand(-1, -1, c))
    return picked.view(*indices.shape, c)


@contextlib.contextmanager
def _exact_fp32(device: torch.device) -> Iterator[None]:
    """No autocast and no TF32 inside: distances must rank exactly as fp32 arithmetic says."""
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.autocast(device_type=device.type, enabled=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


def _grid_coords(queries: Tensor, grid: tuple[int, int], num_patches: int) -> tuple[Tensor, ...]:
    """Grid rows/cols of the queries ``(N, q, 1)`` and of every candidate ``(P,)``."""
    cols = grid[1]
    cand = torch.arange(num_patches, device=queries.device)
    cand_r, cand_c = torch.div(cand, cols, rounding_mode="floor"), cand % cols
    q_r, q_c = torch.div(queries, cols, rounding_mode="floor"), queries % cols
    return q_r[..., None], q_c[..., None], cand_r, cand_c


def block_match(
    images: Tensor,
    queries: Tensor,
    *,
    patch: int,
    stride: int,
    k: int,
    farthest: bool = False,
    exclude_query: bool = True,
    chunk_size: int | None = None,
    window: int | None = None,
    exclude_overlap: bool = False,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> tuple[Tensor, Tensor]:
    """Top-``k`` nearest (or farthest) patches of every query, for every image at once.

    Args:
        images: ``(N, C, H, W)``, any float dtype (the search runs in fp32).
        queries: ``(N, Q)`` flat patch indices.
        k: matches per query.
        farthest: ``False`` returns the nearest patches in ascending distance (non-local
            sampling); ``True`` the farthest in descending distance (reverse non-local).
        exclude_query: never return the query itself.
        chunk_size: queries per chunk; ``None`` picks the largest chunk whose ``N x chunk x P``
            fp32 distance matrix fits ``memory_budget`` bytes.
        window: restrict candidates to a ``window x window`` block of grid positions centred on
            the query, shifted inwards at the borders (``None``: the whole image).
        exclude_overlap: also drop candidates whose pixels overlap the query's (so that the
            nearest "non-local" patches are not just the query shifted by a stride).

    Returns:
        ``(indices, distances)``, both ``(N, Q, k)``: LongTensor patch indices and fp32 squared
        L2 distances summed over the ``C * patch * patch`` values, clamped at 0.

    Raises:
        ValueError: when fewer than ``k`` candidates remain for some query.
    """
    if queries.dim() != 2 or queries.shape[0] != images.shape[0]:
        raise ValueError(
            f"queries must be (N, Q) with N={images.shape[0]}, got {tuple(queries.shape)}"
        )
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    grid = grid_shape(images.shape[-2], images.shape[-1], patch, stride)
    n, q_total = queries.shape
    queries = queries.to(device=images.device, dtype=torch.long)
    fill = -math.inf if farthest else math.inf
    with _exact_fp32(images.device):
        patches = unfold_patches(images.float(), patch, stride)  # (N, P, D)
        num_patches = patches.shape[1]
        if q_total and (int(queries.min()) < 0 or int(queries.max()) >= num_patches):
            raise ValueError(f"query indices must lie in [0, {num_patches})")
        if k > num_patches:
            raise ValueError(f"k={k} exceeds the {num_patches} patches of the grid")
        sq = patches.square().sum(-1)  # (N, P)
        if chunk_size is None:
            chunk_size = max(1, memory_budget // max(1, n * num_patches * 4))
        out_idx, out_dist = [], []
        for start in range(0, q_total, chunk_size):
            q = queries[:, start : start + chunk_size]  # (N, q)
            q_vec = torch.gather(patches, 1, q[..., None].expand(-1, -1, patches.shape[2]))
            q_sq = torch.gather(sq, 1, q)
            dist = (
                q_sq[..., None] + sq[:, None, :] - 2.0 * torch.bmm(q_vec, patches.transpose(1, 2))
            )
            dist = dist.clamp_min_(0.0)  # (N, q, P)
            invalid = _invalid_candidates(
                q, grid, num_patches, patch, stride, exclude_query, window, exclude_overlap
            )
            if invalid is not None:
                dist = dist.masked_fill(invalid, fill)
            vals, idx = torch.topk(dist, k, dim=-1, largest=farthest, sorted=True)
            if invalid is not None and bool(torch.isinf(vals).any()):
                raise ValueError(
                    f"fewer than k={k} candidate patches for some query (grid "
                    f"{grid[0]}x{grid[1]}, window={window}, exclude_overlap={exclude_overlap})"
                )
            out_idx.append(idx)
            out_dist.append(vals)
    return torch.cat(out_idx, dim=1), torch.cat(out_dist, dim=1)


def _invalid_candidates(
    queries: Tensor,
    grid: tuple[int, int],
    num_patches: int,
    patch: int,
    stride: int,
    exclude_query: bool,
    window: int | None,
    exclude_overlap: bool,
) -> Tensor | None:
    """Boolean ``(N, q, P)`` mask of candidates a query may not match, or None if all may."""
    if not (exclude_query or window is not None or exclude_overlap):
        return None
    q_r, q_c, cand_r, cand_c = _grid_coords(queries, grid, num_patches)
    dr, dc = cand_r - q_r, cand_c - q_c  # (N, q, P)
    invalid = torch.zeros(dr.shape, dtype=torch.bool, device=queries.device)
    if exclude_query:
        invalid |= (dr == 0) & (dc == 0)
    if window is not None:
        # A window x window block around the query, shifted inwards at the image borders so that
        # every query sees the same number of candidates (as a clipped search window does).
        for q_pos, cand, size in ((q_r, cand_r, grid[0]), (q_c, cand_c, grid[1])):
            lo = (q_pos - window // 2).clamp(0, max(0, size - window))
            invalid |= (cand < lo) | (cand >= lo + window)
    if exclude_overlap:
        invalid |= (dr.abs() * stride < patch) & (dc.abs() * stride < patch)
    return invalid


def random_indices(
    batch: int,
    num_patches: int,
    count: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """``(batch, count)`` distinct random patch indices per image (the query sets)."""
    if count > num_patches:
        raise ValueError(f"cannot draw {count} distinct patches from {num_patches}")
    scores = torch.rand(batch, num_patches, generator=generator, device=_gen_device(generator))
    return scores.to(device).topk(count, dim=1).indices


def random_matches(
    queries: Tensor,
    num_patches: int,
    k: int,
    *,
    generator: torch.Generator | None = None,
    exclude_query: bool = True,
) -> Tensor:
    """``(N, Q, k)`` random patches per query, distinct within a query, never the query itself.

    Drawn as ``query + 1 + j`` (mod P) for ``k`` distinct offsets ``j`` in ``[0, P - 1)``, so the
    query is excluded without an ``N x Q x P`` mask.
    """
    n, q = queries.shape
    span = num_patches - 1 if exclude_query else num_patches
    if k > span:
        raise ValueError(f"cannot draw {k} distinct patches from {span}")
    scores = torch.rand(n * q, span, generator=generator, device=_gen_device(generator))
    offsets = scores.to(queries.device).topk(k, dim=1).indices.view(n, q, k)
    if not exclude_query:
        return offsets
    return (queries[..., None] + 1 + offsets) % num_patches


def neighbour_indices(
    queries: Tensor,
    grid: tuple[int, int],
    k: int,
    *,
    generator: torch.Generator | None = None,
    exclude_query: bool = True,
) -> Tensor:
    """``(N, Q, k)`` the spatially nearest grid positions of each query (paper: "neighbour").

    Ranked by Euclidean grid distance; ties (same ring) are broken at random with ``generator``
    (or by index when it is None). Only a small window around each query is scored, so the cost
    does not depend on the image size.
    """
    rows, cols = grid
    avail = rows * cols - (1 if exclude_query else 0)
    if k > avail:
        raise ValueError(f"k={k} exceeds the {avail} available patches")
    # Smallest radius whose window holds k candidates even for a corner query.
    radius = 1
    while (min(radius, rows - 1) + 1) * (min(radius, cols - 1) + 1) - 1 < k and (
        radius < max(rows, cols)
    ):
        radius += 1
    span = torch.arange(-radius, radius + 1, device=queries.device)
    off_r, off_c = torch.meshgrid(span, span, indexing="ij")
    off_r, off_c = off_r.reshape(-1), off_c.reshape(-1)  # (S,)
    q_r, q_c = torch.div(queries, cols, rounding_mode="floor"), queries % cols
    cand_r, cand_c = q_r[..., None] + off_r, q_c[..., None] + off_c  # (N, Q, S)
    score = (off_r.square() + off_c.square()).float().expand_as(cand_r).clone()
    if generator is not None:
        jitter = torch.rand(score.shape, generator=generator, device=_gen_device(generator))
        score += 0.5 * jitter.to(score.device)  # < 1: only reorders within equal distances
    else:
        score += torch.linspace(0, 0.5, score.shape[-1], device=score.device)
    outside = (cand_r < 0) | (cand_r >= rows) | (cand_c < 0) | (cand_c >= cols)
    if exclude_query:
        outside |= (off_r == 0) & (off_c == 0)
    score = score.masked_fill(outside, math.inf)
    pick = score.topk(k, dim=-1, largest=False).indices
    return (torch.gather(cand_r, -1, pick) * cols + torch.gather(cand_c, -1, pick)).long()


def select_matches(
    strategy: str,
    images: Tensor,
    queries: Tensor,
    *,
    patch: int,
    stride: int,
    k: int,
    farthest: bool = False,
    generator: torch.Generator | None = None,
    window: int | None = None,
    exclude_overlap: bool = False,
    chunk_size: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> Tensor:
    """``(N, Q, k)`` matches of each query by ``strategy`` (paper Table 2 as a config value).

    ``"nonlocal"`` is block matching (nearest, or farthest with ``farthest=True``); ``"random"``
    draws uniformly; ``"neighbour"`` takes the spatially closest positions (``farthest`` makes no
    sense there and is rejected).
    """
    grid = grid_shape(images.shape[-2], images.shape[-1], patch, stride)
    if strategy == "nonlocal":
        idx, _ = block_match(
            images,
            queries,
            patch=patch,
            stride=stride,
            k=k,
            farthest=farthest,
            chunk_size=chunk_size,
            window=window,
            exclude_overlap=exclude_overlap and not farthest,
            memory_budget=memory_budget,
        )
        return idx
    if strategy == "random":
        return random_matches(queries, grid[0] * grid[1], k, generator=generator)
    if strategy == "neighbour":
        if farthest:
            raise ValueError("the neighbour strategy has no 'farthest' variant; use random")
        return neighbour_indices(queries, grid, k, generator=generator)
    raise ValueError(
        f"unknown sampling strategy {strategy!r} (known: {', '.join(get_args(SamplingStrategy))})"
    )


def select(
    sampler: SamplerConfig,
    strategy: str,
    images: Tensor,
    queries: Tensor,
    *,
    k: int,
    farthest: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``(N, Q, k)`` matches of each query on ``sampler``'s grid and search settings.

    The one entry of the contrasts (layer: positives and rain neighbours; location: negatives)
    and of ``derain inspect-patches``: patch, stride, window, overlap exclusion (nearest
    matches only), chunking and memory budget all come from ``sampler``.
    """
    return select_matches(
        strategy,
        images,
        queries,
        patch=sampler.patch,
        stride=sampler.stride,
        k=k,
        farthest=farthest,
        generator=generator,
        window=sampler.window,
        exclude_overlap=sampler.exclude_overlap,
        chunk_size=sampler.chunk_size,
        memory_budget=sampler.memory_budget,
    )


def _gen_device(generator: torch.Generator | None) -> torch.device | None:
    """Draw random numbers on the generator's own device (a CPU generator cannot fill CUDA)."""
    return None if generator is None else generator.device
