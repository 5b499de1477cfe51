"""The patch sampler against a brute-force float64 block matcher, plus the other strategies."""

from __future__ import annotations

import itertools

import pytest
import torch

from derain_cli.sampling import (
    block_match,
    grid_shape,
    neighbour_indices,
    random_indices,
    random_matches,
    select_matches,
    unfold_patches,
)


def _brute_force(
    images: torch.Tensor,
    queries: torch.Tensor,
    patch: int,
    stride: int,
    k: int,
    farthest: bool,
    exclude_overlap: bool = False,
    window: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loop over every (query, candidate) pair in float64 by slicing the image directly."""
    n, _, h, w = images.shape
    rows, cols = grid_shape(h, w, patch, stride)
    img = images.double()
    all_idx, all_dist = [], []
    for b in range(n):
        per_q_idx, per_q_dist = [], []
        for qi in queries[b].tolist():
            qr, qc = divmod(qi, cols)
            qp = img[b, :, qr * stride : qr * stride + patch, qc * stride : qc * stride + patch]
            cands = []
            for r, c in itertools.product(range(rows), range(cols)):
                if (r, c) == (qr, qc):
                    continue
                if (
                    exclude_overlap
                    and abs(r - qr) * stride < patch
                    and abs(c - qc) * stride < patch
                ):
                    continue
                if window is not None:
                    r0 = min(max(qr - window // 2, 0), max(0, rows - window))
                    c0 = min(max(qc - window // 2, 0), max(0, cols - window))
                    if not (r0 <= r < r0 + window and c0 <= c < c0 + window):
                        continue
                cp = img[b, :, r * stride : r * stride + patch, c * stride : c * stride + patch]
                cands.append((float(((qp - cp) ** 2).sum()), r * cols + c))
            cands.sort(reverse=farthest)
            per_q_idx.append([i for _, i in cands[:k]])
            per_q_dist.append([d for d, _ in cands[:k]])
        all_idx.append(per_q_idx)
        all_dist.append(per_q_dist)
    return torch.tensor(all_idx), torch.tensor(all_dist, dtype=torch.float64)


def _images(n: int = 2, size: int = 24, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def test_unfold_layout_is_row_major_with_channel_major_values() -> None:
    img = torch.arange(2 * 5 * 6, dtype=torch.float32).view(1, 2, 5, 6)
    patches = unfold_patches(img, patch=2, stride=2)
    assert grid_shape(5, 6, 2, 2) == (2, 3)
    assert patches.shape == (1, 6, 8)
    # patch 4 = row 1, col 1 -> top-left (2, 2)
    expected = img[0, :, 2:4, 2:4].reshape(-1)
    assert torch.equal(patches[0, 4], expected)


@pytest.mark.parametrize("farthest", [False, True])
@pytest.mark.parametrize("exclude_overlap", [False, True])
def test_block_match_equals_float64_brute_force(farthest: bool, exclude_overlap: bool) -> None:
    images = _images()
    patch, stride, k = 6, 3, 5
    queries = torch.tensor([[0, 7, 24, 13], [5, 11, 20, 1]])
    idx, dist = block_match(
        images,
        queries,
        patch=patch,
        stride=stride,
        k=k,
        farthest=farthest,
        exclude_overlap=exclude_overlap and not farthest,
    )
    ref_idx, ref_dist = _brute_force(
        images, queries, patch, stride, k, farthest, exclude_overlap and not farthest
    )
    assert idx.shape == dist.shape == (2, 4, k)
    assert dist.dtype == torch.float32 and idx.dtype == torch.long
    assert torch.equal(idx, ref_idx)  # random continuous data: no ties
    torch.testing.assert_close(dist.double(), ref_dist, rtol=1e-4, atol=1e-3)
    diffs = dist[..., 1:] - dist[..., :-1]
    assert bool((diffs <= 0).all()) if farthest else bool((diffs >= 0).all())


def test_block_match_window_matches_brute_force() -> None:
    images = _images(1, 30)
    queries = torch.tensor([[0, 24, 48]])
    idx, _ = block_match(images, queries, patch=4, stride=4, k=4, window=3)
    ref_idx, _ = _brute_force(images, queries, 4, 4, 4, False, window=3)
    assert torch.equal(idx, ref_idx)


def test_block_match_excludes_query_and_finds_a_planted_copy() -> None:
    images = _images(1, 32, seed=3)
    images[0, :, 24:32, 24:32] = images[0, :, 0:8, 0:8]  # patch 15 is a copy of patch 0
    idx, dist = block_match(images, torch.tensor([[0]]), patch=8, stride=8, k=1)
    assert idx.item() == 15
    assert dist.item() == pytest.approx(0.0, abs=1e-4)
    idx_all, _ = block_match(images, torch.tensor([[0]]), patch=8, stride=8, k=15)
    assert 0 not in idx_all.tolist()[0][0]


def test_chunked_equals_unchunked() -> None:
    images = _images(3, 40, seed=5)
    queries = random_indices(
        3, grid_shape(40, 40, 8, 2)[0] ** 2, 37, generator=torch.Generator().manual_seed(0)
    )
    full = block_match(images, queries, patch=8, stride=2, k=6)
    for chunk in (1, 5, 16):
        part = block_match(images, queries, patch=8, stride=2, k=6, chunk_size=chunk)
        assert torch.equal(full[0], part[0])
        torch.testing.assert_close(full[1], part[1])  # bmm blocking may round differently
    tiny_budget = block_match(images, queries, patch=8, stride=2, k=6, memory_budget=1)
    assert torch.equal(full[0], tiny_budget[0])


def test_too_many_matches_is_an_error() -> None:
    images = _images(1, 16)
    with pytest.raises(ValueError, match="candidate"):
        block_match(
            images, torch.tensor([[0]]), patch=8, stride=8, k=3, exclude_overlap=True, window=1
        )
    with pytest.raises(ValueError, match="exceeds"):
        block_match(images, torch.tensor([[0]]), patch=8, stride=8, k=5)


def test_half_precision_input_is_searched_in_fp32() -> None:
    images = _images(1, 24, seed=9)
    queries = torch.tensor([[3, 10]])
    a = block_match(images, queries, patch=6, stride=3, k=4)
    b = block_match(images.bfloat16().float(), queries, patch=6, stride=3, k=4)
    c = block_match(images.bfloat16(), queries, patch=6, stride=3, k=4)
    assert c[1].dtype == torch.float32
    assert torch.equal(b[0], c[0])
    assert a[0].shape == c[0].shape


def test_random_strategies_are_seeded_distinct_and_exclude_the_query() -> None:
    queries = random_indices(2, 50, 10, generator=torch.Generator().manual_seed(7))
    again = random_indices(2, 50, 10, generator=torch.Generator().manual_seed(7))
    assert torch.equal(queries, again)
    assert all(len(set(row)) == 10 for row in queries.tolist())
    m1 = random_matches(queries, 50, 8, generator=torch.Generator().manual_seed(1))
    m2 = random_matches(queries, 50, 8, generator=torch.Generator().manual_seed(1))
    m3 = random_matches(queries, 50, 8, generator=torch.Generator().manual_seed(2))
    assert torch.equal(m1, m2) and not torch.equal(m1, m3)
    assert bool((m1 != queries[..., None]).all())
    assert bool(((m1 >= 0) & (m1 < 50)).all())
    assert all(len(set(row)) == 8 for row in m1.view(-1, 8).tolist())


def test_neighbours_are_the_closest_grid_positions() -> None:
    grid = (6, 7)
    queries = torch.tensor([[0, 24, 41]])  # corner, interior, last
    nb = neighbour_indices(queries, grid, 8, generator=torch.Generator().manual_seed(0))
    for q, row in zip(queries[0].tolist(), nb[0].tolist(), strict=True):
        qr, qc = divmod(q, grid[1])
        d = sorted(((r - qr) ** 2 + (c - qc) ** 2) for r, c in (divmod(i, grid[1]) for i in row))
        every = sorted(
            (r - qr) ** 2 + (c - qc) ** 2
            for r in range(grid[0])
            for c in range(grid[1])
            if (r, c) != (qr, qc)
        )
        assert d == every[:8]
        assert q not in row and len(set(row)) == 8
    # interior query: the 8-neighbourhood exactly
    assert sorted(nb[0, 1].tolist()) == sorted(
        24 + dr * 7 + dc for dr in (-1, 0, 1) for dc in (-1, 0, 1) if dr or dc
    )


def test_select_matches_dispatch() -> None:
    images = _images(2, 32)
    queries = torch.tensor([[0, 5], [9, 2]])
    g = torch.Generator().manual_seed(0)
    for strategy in ("random", "neighbour", "nonlocal"):
        out = select_matches(strategy, images, queries, patch=8, stride=4, k=3, generator=g)
        assert out.shape == (2, 2, 3)
    with pytest.raises(ValueError, match="unknown"):
        select_matches("bogus", images, queries, patch=8, stride=4, k=3)
    with pytest.raises(ValueError, match="neighbour"):
        select_matches("neighbour", images, queries, patch=8, stride=4, k=3, farthest=True)


def test_block_match_ignores_autocast() -> None:
    images = _images(2, 32, seed=4)
    queries = torch.tensor([[0, 9, 30], [4, 17, 33]])
    ref = block_match(images, queries, patch=8, stride=4, k=5, farthest=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = block_match(images, queries, patch=8, stride=4, k=5, farthest=True)
    assert torch.equal(ref[0], amp[0])
    assert amp[1].dtype == torch.float32
    torch.testing.assert_close(ref[1], amp[1])
