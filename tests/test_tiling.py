"""Pure tile geometry: coverage, feather weights, exact round trips, odd sizes."""

from __future__ import annotations

import numpy as np
import pytest

from derain_cli.inference.tiling import (
    Blender,
    Box,
    feather_weights,
    grid_tiles,
    merge,
    plan_tiles,
    split,
    strip_tiles,
    tile_starts,
    with_halo,
)


@pytest.mark.parametrize(
    ("length", "tile", "overlap"),
    [(100, 32, 8), (97, 32, 8), (33, 32, 8), (500, 96, 32), (7, 3, 1)],
)
def test_tile_starts_cover_with_at_least_the_overlap(length: int, tile: int, overlap: int) -> None:
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0
    assert starts[-1] + tile == length
    assert starts == sorted(set(starts))
    for a, b in zip(starts, starts[1:], strict=False):
        assert a + tile - b >= overlap  # shared pixels with the next tile


def test_tile_larger_than_image_is_one_tile() -> None:
    assert tile_starts(20, 64, 16) == [0]
    assert plan_tiles(20, 30, 64, 16) == [Box(0, 20, 0, 30)]


def test_bad_tile_arguments_raise() -> None:
    with pytest.raises(ValueError):
        tile_starts(10, 0, 0)
    with pytest.raises(ValueError):
        tile_starts(100, 16, 16)


@pytest.mark.parametrize(("height", "width"), [(37, 53), (64, 64), (101, 47), (5, 200)])
def test_identity_round_trip_is_exact(height: int, width: int) -> None:
    rng = np.random.default_rng(1)
    image = rng.random((height, width, 3), dtype=np.float32)
    boxes = plan_tiles(height, width, 16, 5)
    assert len(boxes) > 1
    out = merge([piece.copy() for piece in split(image, boxes)], boxes, height, width)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, image)


def test_feather_weights_sum_to_one_and_are_one_on_borders() -> None:
    height, width = 70, 90
    boxes = plan_tiles(height, width, 32, 12)
    total = np.zeros((height, width))
    for box in boxes:
        weights = feather_weights(box, boxes)
        assert weights.shape == (box.height, box.width)
        assert np.all(weights >= 0)
        total[box.slices] += weights
    np.testing.assert_allclose(total, 1.0, atol=1e-12)
    corner = feather_weights(boxes[0], boxes)
    assert corner[0, 0] == 1.0  # image corner: no neighbour there, so no ramp
    shared = boxes[0].x1 - boxes[1].x0
    assert shared >= 12
    edge = corner[0, -shared:]
    assert np.all(edge[-(shared // 4) :] == 0.0)  # the tile's own edge is not used
    assert np.all(edge[: shared // 4] == 1.0)  # nor is the neighbour's
    assert np.all(np.diff(edge) <= 0)


def test_blend_spreads_a_step_over_the_overlap() -> None:
    """Two tiles that disagree by a constant blend smoothly, and exactly outside the overlap."""
    boxes = plan_tiles(10, 56, 32, 8)
    assert len(boxes) == 2 and boxes[0].x1 - boxes[1].x0 == 8
    left = np.zeros((10, 32, 1), dtype=np.float32)
    right = np.ones((10, 32, 1), dtype=np.float32)
    out = merge([left, right], boxes, 10, 56)[0, :, 0]
    overlap_start, overlap_end = boxes[1].x0, boxes[0].x1
    assert np.all(out[: overlap_start + 2] == 0.0)  # left tile only, up to the inner quarter
    assert np.all(out[overlap_end - 2 :] == 1.0)
    assert np.all(np.diff(out[overlap_start + 1 : overlap_end - 1]) > 0)
    assert np.max(np.diff(out)) < 0.4  # no step: the change is spread over 4 pixels


def test_blender_checks_shapes_and_coverage() -> None:
    boxes = plan_tiles(20, 20, 12, 4)
    blender = Blender(20, 20, 3, boxes)
    with pytest.raises(ValueError):
        blender.add(boxes[0], np.zeros((5, 5, 3), dtype=np.float32))
    blender.add(boxes[0], np.zeros((12, 12, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="no tile"):
        blender.result()


@pytest.mark.parametrize(("height", "width", "tile"), [(37, 53, 16), (64, 64, 64), (9, 100, 7)])
def test_grid_tiles_partition_the_image(height: int, width: int, tile: int) -> None:
    count = np.zeros((height, width), dtype=int)
    for box in grid_tiles(height, width, tile):
        assert 0 < box.height <= tile and 0 < box.width <= tile
        count[box.slices] += 1
    assert np.all(count == 1)


def test_with_halo_is_clipped_to_the_image() -> None:
    assert with_halo(Box(0, 10, 5, 20), 3, 12, 21) == Box(0, 12, 2, 21)
    assert with_halo(Box(4, 8, 4, 8), 2, 100, 100) == Box(2, 10, 2, 10)


def test_strip_tiles_cover_whole_rows_or_fall_back_to_squares() -> None:
    strips = strip_tiles(100, 64, 48)  # 48 * 48 // 64 = 36 rows per strip at most
    assert all(b.x0 == 0 and b.x1 == 64 for b in strips)
    assert [b.y0 for b in strips][0] == 0 and strips[-1].y1 == 100
    assert all(a.y1 == b.y0 for a, b in zip(strips, strips[1:], strict=False))  # no gap, no overlap
    assert all(b.height * b.width <= 48 * 48 for b in strips) and len(strips) == 3
    # Too wide for strips of MIN_STRIP_ROWS rows: square tiles, same as grid_tiles.
    assert strip_tiles(100, 1000, 64) == grid_tiles(100, 1000, 64)
    assert strip_tiles(10, 20, 64) == [Box(0, 10, 0, 20)]
    with pytest.raises(ValueError):
        strip_tiles(10, 10, 0)
