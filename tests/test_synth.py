"""The rain renderer (derain_cli.synth), the pair writer and `derain synth`.

Images are tiny (<= 96 px) and every random draw is seeded: these tests check determinism, value
ranges, the blend and veil equations, the files written and exit codes, not how rain looks.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from _recipes import recipe_from_dict
from images import smooth_photo, streak_bank  # tests/images.py
from typer.testing import CliRunner

from derain_cli.cli import synth as synth_cli
from derain_cli.cli.app import app, route
from derain_cli.errors import UsageError
from derain_cli.evaluation import scoring as evaluate
from derain_cli.images.io import read_image
from derain_cli.synth import (
    STYLES,
    RainRecipe,
    StreakBank,
    StreakLayer,
    render_pair,
    render_rain,
    sample_recipe,
)
from derain_cli.synth.pairs import rng_for, write_pairs
from derain_cli.synth.render import streak_alpha

RENDER_STYLES = [s for s in STYLES if s != "mixed"]


def grey(value: float = 0.5, size: int = 64) -> np.ndarray:
    return np.full((size, size, 3), value, np.float32)


def rainy(
    clean: np.ndarray,
    seed: int,
    style: str = "mixed",
    scale: float = 0.15,
    bank: StreakBank | None = None,
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return render_rain(clean, sample_recipe(rng, style, scale, bank=bank), rng, bank=bank)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


LINES = StreakLayer(
    density=40.0, length=12.0, width=1.5, angle=10.0, jitter=3.0, opacity=0.6, blur=0.0
)


def plain(**changes: object) -> RainRecipe:
    """A recipe with one streak layer and no veil, drops or camera effects."""
    base: dict[str, object] = {"layers": (LINES,), "blend": "add", "colour": (1.0, 1.0, 1.0)}
    base.update(changes)
    return RainRecipe(**base)  # type: ignore[arg-type]


def clean_folder(folder: Path, stems: tuple[str, ...] = ("a", "b", "c")) -> Path:
    for stem in stems:  # each stem its own picture, whatever else is in the folder
        smooth_photo(folder / f"{stem}.png", height=40, width=48, seed=ord(stem[0]))
    return folder


def stems_in(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.iterdir() if p.is_file())


# --------------------------------------------------------------------------------- renderer


def test_same_seed_same_rain_and_different_seeds_differ() -> None:
    clean = grey()
    np.testing.assert_array_equal(rainy(clean, 3), rainy(clean, 3))
    assert not np.array_equal(rainy(clean, 3), rainy(clean, 4))


@pytest.mark.parametrize("style", RENDER_STYLES)
def test_every_style_renders_plausible_rain(style: str, tmp_path: Path) -> None:
    clean = grey(0.5)
    before = clean.copy()
    bank = StreakBank(streak_bank(tmp_path / "streaks")) if style == "bank" else None
    for seed in range(3):
        out = rainy(clean, seed, style, scale=0.5 if bank else 0.15, bank=bank)
        np.testing.assert_array_equal(clean, before)  # the input is untouched
        assert out.shape == clean.shape and out.dtype == np.float32
        assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
        assert float(np.abs(out - clean).mean()) > 0.0
        assert 5.0 < psnr(out, clean) < 60.0, (style, seed, psnr(out, clean))


def test_mixed_draws_several_styles() -> None:
    drawn = {sample_recipe(np.random.default_rng(seed), "mixed").style for seed in range(50)}
    assert len(drawn) >= 4 and drawn <= set(RENDER_STYLES)


def test_streaks_run_at_every_angle_most_of_them_near_vertical() -> None:
    """A renderer of near-vertical rain only trains a model that leaves slanted and sideways
    streaks in place (wind, tilted or rotated cameras, other renderers' angle conventions)."""
    rng = np.random.default_rng(5)
    angles = np.array([sample_recipe(rng, "streak").layers[0].angle for _ in range(600)])
    sideways = np.abs(angles) > 55.0
    assert 0.05 < sideways.mean() < 0.3
    assert (angles > 55.0).any() and (angles < -55.0).any()
    assert (np.abs(angles) < 30.0).mean() > 0.5


def test_scale_multiplies_the_sizes() -> None:
    one = sample_recipe(np.random.default_rng(7), "streak", 1.0)
    two = sample_recipe(np.random.default_rng(7), "streak", 2.0)
    assert len(one.layers) == len(two.layers)
    for small, large in zip(one.layers, two.layers, strict=True):
        assert large.length == pytest.approx(2.0 * small.length)
        assert large.width == pytest.approx(2.0 * small.width)
    assert two.drop_size == pytest.approx(2.0 * one.drop_size)


def rain_cover(style: str, scale: float, seeds: int = 6) -> float:
    """Mean streak alpha over a 96 px square, averaged over seeds."""
    covers = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        recipe = sample_recipe(rng, style, scale)
        covers.append(sum(float(streak_alpha((96, 96), lay, rng).mean()) for lay in recipe.layers))
    return float(np.mean(covers))


@pytest.mark.parametrize("style", ["drizzle", "heavy"])
def test_rain_cover_does_not_depend_on_the_scale(style: str) -> None:
    ratio = rain_cover(style, 1.0) / rain_cover(style, 0.5)
    assert 0.6 < ratio < 1.6, ratio


def test_bad_style_or_scale_raises() -> None:
    with pytest.raises(ValueError, match="style"):
        sample_recipe(np.random.default_rng(0), "monsoon")
    with pytest.raises(ValueError, match="scale"):
        sample_recipe(np.random.default_rng(0), "streak", 0.0)


@pytest.mark.parametrize("kind", ["lines", "field"])
def test_zero_density_renders_nothing(kind: str) -> None:
    clean = np.random.default_rng(0).random((48, 56, 3), dtype=np.float32)
    layer = StreakLayer(0.0, 20.0, 2.0, 0.0, 5.0, 0.8, 1.0, kind)  # type: ignore[arg-type]
    out = render_rain(clean, plain(layers=(layer,)), np.random.default_rng(0))
    np.testing.assert_array_equal(out, clean)


@pytest.mark.parametrize("blend", ["add", "screen"])
def test_add_and_screen_never_darken(blend: str) -> None:
    clean = np.random.default_rng(1).random((64, 64, 3), dtype=np.float32)
    out = render_rain(clean, plain(blend=blend), np.random.default_rng(0))
    assert (out >= clean - 1e-6).all()
    assert (out > clean + 0.01).any()


def test_alpha_with_a_dark_colour_darkens() -> None:
    clean = grey(0.8)
    dark = render_rain(
        clean, plain(blend="alpha", colour=(0.1, 0.1, 0.1)), np.random.default_rng(0)
    )
    assert (dark < 0.8 - 0.05).any() and (dark <= 0.8 + 1e-6).all()
    white = render_rain(clean, plain(blend="alpha"), np.random.default_rng(0))
    assert (white >= 0.8 - 1e-6).all() and (white > 0.85).any()


def test_render_pair_default_is_render_rain_and_the_clean_image() -> None:
    clean = np.random.default_rng(2).random((48, 48, 3), dtype=np.float32)
    recipe = plain(noise=0.02, jpeg=80, veil=0.2)
    rainy, target = render_pair(clean, recipe, np.random.default_rng(5))
    np.testing.assert_array_equal(rainy, render_rain(clean, recipe, np.random.default_rng(5)))
    np.testing.assert_array_equal(target, clean)


def test_rain_only_pairs_differ_by_rain_alone() -> None:
    """Darkening rain does not show, and the target shares the camera's noise and JPEG."""
    clean = np.random.default_rng(3).random((48, 48, 3), dtype=np.float32) * 0.5 + 0.4
    dark = plain(blend="alpha", colour=(0.05, 0.05, 0.05), airlight=(0.1, 0.1, 0.1), veil=0.3)
    rainy, target = render_pair(clean, dark, np.random.default_rng(0), rain_only=True)
    np.testing.assert_allclose(rainy, target, atol=1e-6)  # nothing brighter: all rain hidden
    np.testing.assert_allclose(target, clean, atol=1e-6)  # no camera effects in this recipe
    rainy, target = render_pair(clean, plain(noise=0.03), np.random.default_rng(0), rain_only=True)
    rain_free = (rainy == target).all(axis=2)  # where no streak fell: the same noisy pixels
    assert 0.2 < rain_free.mean() < 1.0
    assert (rainy >= target - 1e-6).all()  # rain only adds light
    assert psnr(target, clean) < 40.0  # the target carries the camera noise
    _, target = render_pair(clean, plain(jpeg=60), np.random.default_rng(0), rain_only=True)
    bgr8 = (clean[..., ::-1] * 255 + 0.5).astype(np.uint8)
    data = cv2.imencode(".jpg", bgr8, [cv2.IMWRITE_JPEG_QUALITY, 60])[1]
    blocks = cv2.imdecode(data, cv2.IMREAD_COLOR)
    np.testing.assert_allclose(target, blocks[..., ::-1] / 255.0, atol=1e-6)  # and its JPEG


def test_veil_brightens_a_dark_image_towards_the_airlight() -> None:
    clean = grey(0.1)
    recipe = RainRecipe(layers=(), veil=0.4, airlight=(0.9, 0.9, 0.9))
    out = render_rain(clean, recipe, np.random.default_rng(0))
    assert (out > 0.1 + 0.05).all() and (out <= 0.9 + 1e-6).all()
    # t = veil * (0.3 + 0.7 depth), depth in [0, 1]: between 0.12 and 0.4 of the way to 0.9
    assert out.min() == pytest.approx(0.1 + 0.12 * 0.8, abs=1e-3)
    assert out.max() == pytest.approx(0.1 + 0.4 * 0.8, abs=1e-3)


def test_render_rejects_a_grey_plane() -> None:
    with pytest.raises(ValueError, match="H, W, 3"):
        render_rain(np.zeros((8, 8), np.float32), plain(), np.random.default_rng(0))


# ------------------------------------------------------------------------------------ pairs


def test_pairs_match_by_stem_and_eval_pairs_them(tmp_path: Path) -> None:
    summary = write_pairs(clean_folder(tmp_path / "in"), tmp_path / "out", seed=5)
    assert summary.written == ["a", "b", "c"] and summary.failed == []
    assert stems_in(summary.rainy_dir) == stems_in(summary.clean_dir) == ["a", "b", "c"]
    plan = evaluate.plan(rainy=summary.rainy_dir, clean=summary.clean_dir, pred=None)
    assert [item.stem for item in plan.items] == ["a", "b", "c"] and plan.problems == []

    records = [json.loads(line) for line in summary.recipes.read_text().splitlines()]
    assert [r["stem"] for r in records] == ["a", "b", "c"]
    assert all(r["seed"] == 5 and r["style"] in RENDER_STYLES for r in records)
    assert records[0]["size"] == [48, 40]
    assert recipe_from_dict(records[0]["recipe"]).style == records[0]["style"]
    # the clean file is the source (8-bit: exact), the rainy one is what the recipe renders
    source = read_image(tmp_path / "in" / "a.png").rgb
    np.testing.assert_array_equal(read_image(summary.clean_dir / "a.png").rgb, source)
    rng = rng_for(5, "a")
    recipe = sample_recipe(rng, "mixed", 40 / 480)
    assert recipe == recipe_from_dict(records[0]["recipe"])
    expected = np.round(render_rain(source, recipe, rng) * 255) / 255
    got = read_image(summary.rainy_dir / "a.png").rgb
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_rain_depends_on_the_stem_not_the_folder(tmp_path: Path) -> None:
    two = write_pairs(clean_folder(tmp_path / "two", ("b", "c")), tmp_path / "o2")
    three = write_pairs(clean_folder(tmp_path / "three", ("a", "b", "c")), tmp_path / "o3")
    for stem in ("b", "c"):
        assert (two.rainy_dir / f"{stem}.png").read_bytes() == (
            three.rainy_dir / f"{stem}.png"
        ).read_bytes()


def test_copies_get_suffixes_and_the_first_matches_one_copy(tmp_path: Path) -> None:
    source = clean_folder(tmp_path / "in", ("a",))
    one = write_pairs(source, tmp_path / "one")
    many = write_pairs(source, tmp_path / "many", copies=3)
    assert many.written == ["a-1", "a-2", "a-3"]
    assert stems_in(many.clean_dir) == ["a-1", "a-2", "a-3"]
    assert len(many.recipes.read_text().splitlines()) == 3
    first = (many.rainy_dir / "a-1.png").read_bytes()
    assert first == (one.rainy_dir / "a.png").read_bytes()
    assert first != (many.rainy_dir / "a-2.png").read_bytes()


def test_max_side_downscales_and_scale_follows_the_short_side(tmp_path: Path) -> None:
    source = tmp_path / "in"
    smooth_photo(source / "wide.png", height=48, width=96)
    summary = write_pairs(source, tmp_path / "out", max_side=48, scale=2.0)
    assert read_image(summary.clean_dir / "wide.png").rgb.shape == (24, 48, 3)
    assert read_image(summary.rainy_dir / "wide.png").rgb.shape == (24, 48, 3)
    (record,) = [json.loads(line) for line in summary.recipes.read_text().splitlines()]
    assert record["scale"] == pytest.approx(2.0 * 24 / 480)


def test_rerun_refuses_without_overwrite_and_overwrite_replaces(tmp_path: Path) -> None:
    source = clean_folder(tmp_path / "in")
    write_pairs(source, tmp_path / "out", copies=2)
    with pytest.raises(UsageError, match="use overwrite=True"):
        write_pairs(source, tmp_path / "out")
    summary = write_pairs(source, tmp_path / "out", overwrite=True)
    assert stems_in(summary.rainy_dir) == ["a", "b", "c"]  # the a-1, a-2... pairs are gone
    assert len(summary.recipes.read_text().splitlines()) == 3


def test_a_bad_file_is_skipped_and_the_others_written(tmp_path: Path) -> None:
    source = clean_folder(tmp_path / "in", ("a", "c"))
    (source / "b.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    warnings: list[str] = []
    summary = write_pairs(source, tmp_path / "out", on_warning=warnings.append)
    assert summary.written == ["a", "c"]
    assert [f.path.name for f in summary.failed] == ["b.jpg"]
    assert len(warnings) == 1 and "b.jpg" in warnings[0]
    assert stems_in(summary.rainy_dir) == stems_in(summary.clean_dir) == ["a", "c"]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"style": "monsoon"}, "style"),
        ({"copies": 0}, "copies"),
        ({"scale": 0.0}, "scale"),
        ({"scale": -1.0}, "scale"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_options_are_refused_before_writing(
    tmp_path: Path, options: dict[str, object], match: str
) -> None:
    with pytest.raises(UsageError, match=match):
        write_pairs(clean_folder(tmp_path / "in"), tmp_path / "out", **options)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


def test_missing_empty_and_clashing_inputs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such"):
        write_pairs(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(UsageError, match="no images"):
        write_pairs(tmp_path / "empty", tmp_path / "out")
    twins = clean_folder(tmp_path / "twins", ("a",))
    smooth_photo(twins / "a.jpg", height=40, width=48)
    with pytest.raises(UsageError, match="stem"):
        write_pairs(twins, tmp_path / "out")
    out = tmp_path / "out"
    first = write_pairs(clean_folder(tmp_path / "in", ("a",)), out)
    with pytest.raises(UsageError, match="output"):  # the clean/ folder it would rewrite
        write_pairs(first.clean_dir, out, overwrite=True)


# -------------------------------------------------------------------------------------- CLI


def test_cli_writes_pairs_and_exit_codes(tmp_path: Path) -> None:
    assert route(["synth", "x"])[0] == "synth"
    assert synth_cli.STYLE_CHOICES == ", ".join(STYLES)
    source = clean_folder(tmp_path / "in", ("a", "b"))
    runner = CliRunner()
    args = ["synth", str(source), "-o", str(tmp_path / "out"), "--seed", "3", "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "2 pairs written" in result.output and "derain eval --rainy" in result.output
    assert stems_in(tmp_path / "out" / "rainy") == ["a", "b"]

    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--overwrite" in again.output
    bad_style = runner.invoke(app, [*args, "--overwrite", "--style", "monsoon"])
    assert bad_style.exit_code == 2 and "monsoon" in bad_style.output
    missing = runner.invoke(app, ["synth", str(tmp_path / "nowhere"), "-o", str(tmp_path / "o")])
    assert missing.exit_code == 2

    (source / "z.png").write_bytes(b"\x89PNG broken")
    partial = runner.invoke(app, [*args, "--overwrite", "--style", "drizzle"])
    assert partial.exit_code == 1 and "z.png" in partial.output
    assert stems_in(tmp_path / "out" / "rainy") == ["a", "b"]


def test_the_config_and_cli_know_exactly_the_renderer_styles() -> None:
    from typing import get_args

    from derain_cli.config import SyntheticStyle

    assert get_args(SyntheticStyle) == STYLES
    assert synth_cli.STYLE_CHOICES == ", ".join(STYLES)


def test_cli_failed_files_are_errors_and_the_bomb_limit_names_no_missing_option(
    tmp_path: Path,
) -> None:
    """A failed file read "warning: FILE: skipped (...)" while the run exited 1, and a bomb was
    refused naming --max-megapixels, which derain synth does not have (issue "Trust II")."""
    from images import bomb_png  # tests/images.py

    source = clean_folder(tmp_path / "in", ("a",))
    (source / "bomb.png").write_bytes(bomb_png())
    (source / "z.png").write_bytes(b"\x89PNG broken")
    result = CliRunner().invoke(app, ["synth", str(source), "-o", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("derain: ")]
    assert errors[:2] == [
        f"derain: error: {source / 'bomb.png'}: image is 10000.0 megapixels, above the 200 MP "
        "limit (fixed for derain synth; shrink the photo first)",
        f"derain: error: {source / 'z.png'}: truncated or corrupt image data",
    ]
    assert "warning" not in result.stderr and "skipped" not in result.stderr
    assert "1 pairs written" in result.stderr and "2 image(s) failed" in result.stderr
