"""Pure tile geometry: coverage, feather weights, exact round trips, odd sizes."""

from __future__ import annotations

import numpy as np
import pytest

from derain_cli.inference.tiling import (
    Blender,
    Box,
    feather_weights,
    grid_tiles,
    in_place_schedule,
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


def _box_sum(image: np.ndarray, box: Box, halo: int) -> np.ndarray:
    """Sum over a (2 halo + 1)^2 window (zero outside the image) for the pixels of ``box``."""
    padded = np.pad(image, halo)
    out = np.zeros((box.height, box.width))
    for dy in range(2 * halo + 1):
        for dx in range(2 * halo + 1):
            out += padded[box.y0 + dy : box.y1 + dy, box.x0 + dx : box.x1 + dx]
    return out


@pytest.mark.parametrize(
    ("height", "width", "tile", "halo"),
    [(80, 96, 48, 1), (80, 96, 48, 2), (80, 96, 32, 1), (70, 50, 20, 2), (9, 200, 8, 1)],
    ids=["strips-1", "strips-2", "grid-1", "grid-2", "wide-grid"],
)
def test_in_place_schedule_never_reads_overwritten_pixels(
    height: int, width: int, tile: int, halo: int
) -> None:
    """A local filter written over its own input with the schedule equals the filter."""
    rng = np.random.default_rng(3)
    image = rng.random((height, width))
    expected = _box_sum(image, Box(0, height, 0, width), halo)
    cores = strip_tiles(height, width, tile)
    schedule = in_place_schedule(cores, halo, height, width)
    buffer = image.copy()  # input and output share this array
    pending: list[tuple[int, Box, np.ndarray]] = []
    for index, core in enumerate(cores):
        read = with_halo(core, halo, height, width)
        # The filter sees only the read box (zero beyond the image edge, as the network does).
        window = np.zeros((read.height + 2 * halo, read.width + 2 * halo))
        window[halo:-halo, halo:-halo] = buffer[read.slices]
        local = _box_sum(window[halo:-halo, halo:-halo], Box(0, read.height, 0, read.width), halo)
        value = local[core.y0 - read.y0 : core.y1 - read.y0, core.x0 - read.x0 : core.x1 - read.x0]
        cut = core.y0 + schedule[index].safe_rows
        buffer[core.y0 : cut, core.x0 : core.x1] = value[: cut - core.y0]
        later = Box(cut, core.y1, core.x0, core.x1)
        pending.append((schedule[index].flush_after, later, value[cut - core.y0 :].copy()))
        assert schedule[index].flush_after >= index
        for _, box, rows in [p for p in pending if p[0] <= index]:
            buffer[box.slices] = rows
        pending = [p for p in pending if p[0] > index]
    assert not pending
    np.testing.assert_allclose(buffer, expected, rtol=0, atol=1e-12)


def test_in_place_schedule_of_strips_delays_only_the_halo_rows() -> None:
    cores = strip_tiles(100, 64, 32)  # 16-row strips
    assert all(core.width == 64 for core in cores)
    schedule = in_place_schedule(cores, 2, 100, 64)
    for index, (core, write) in enumerate(zip(cores, schedule, strict=True)):
        last = index == len(cores) - 1
        assert write.safe_rows == (core.height if last else core.height - 2)
        assert write.flush_after == index + (0 if last else 1)
    # 2 x 2 squares: a right neighbour reads the core's every row, the row below its last one.
    grid = grid_tiles(64, 64, 32)
    writes = in_place_schedule(grid, 1, 64, 64)
    assert [(w.safe_rows, w.flush_after) for w in writes] == [(0, 3), (31, 3), (0, 3), (32, 3)]
