"""Streak-bank rain, the photographic recipe, and the training data around them.

The streak images are generated (tests/images.py ``streak_bank``): dots, short streaks and long
wide streaks on black, so each size tier has something to keep and something to drop.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from _recipes import recipe_from_dict
from _trainkit import make_dataset, tiny_config
from images import smooth_photo, streak_bank
from typer.testing import CliRunner

from derain_cli.cli.app import app, route
from derain_cli.data import (
    CleanAugment,
    SyntheticRain,
    UnpairedCrops,
    resolve_folders,
    scan_folders,
)
from derain_cli.errors import UsageError
from derain_cli.synth import (
    BankLayer,
    PhotoLayer,
    RainRecipe,
    StreakBank,
    render_pair,
    render_rain,
    sample_recipe,
)
from derain_cli.synth.bank import TIER_AREAS, layer_alpha
from derain_cli.synth.pairs import rng_for, write_pairs
from derain_cli.synth.render import photo_alpha


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> StreakBank:
    return StreakBank(streak_bank(tmp_path_factory.mktemp("streaks")))


def layer(**changes: object) -> BankLayer:
    base: dict[str, object] = {
        "source": "1-0.png", "tier": "all", "zoom": 1.0, "angle": 0.0, "flip": False,
        "opacity": 1.0, "blur": 0.0, "offset": (0.0, 0.0),
    }  # fmt: skip
    base.update(changes)
    return BankLayer(**base)  # type: ignore[arg-type]


def areas(grey: np.ndarray) -> np.ndarray:
    _, _, stats, _ = cv2.connectedComponentsWithStats((grey > 0.1).astype(np.uint8))
    return stats[1:, cv2.CC_STAT_AREA]


# ------------------------------------------------------------------------------- the bank


def test_a_bank_lists_its_images_and_refuses_an_empty_or_missing_folder(
    bank: StreakBank, tmp_path: Path
) -> None:
    assert bank.names == ("1-0.png", "2-0.png", "3-0.png") and len(bank) == 3
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no streak images found"):
        StreakBank(tmp_path / "empty")
    with pytest.raises(UsageError, match="no such folder"):
        StreakBank(tmp_path / "missing")


def test_tiers_keep_the_streaks_of_their_size_only(bank: StreakBank) -> None:
    every = bank.streaks("1-0.png", "all")
    small, middle, large = (bank.streaks("1-0.png", t) for t in ("small", "middle", "large"))
    assert areas(small).max() < TIER_AREAS[0] + 12  # dots (and their dilated rims)
    assert TIER_AREAS[0] <= areas(middle).min() and areas(middle).max() < TIER_AREAS[1] + 30
    assert areas(large).min() >= TIER_AREAS[1]
    # the tiers split the streaks: no pixel in two of them, and together they make the image
    assert ((small > 0) & (middle > 0)).sum() == 0 and ((middle > 0) & (large > 0)).sum() == 0
    np.testing.assert_allclose(np.maximum(np.maximum(small, middle), large), every, atol=1e-6)


def test_a_turned_layer_leans_the_way_its_angle_says(tmp_path: Path) -> None:
    """Positive angles lean the tops of the streaks to the right, as the procedural styles do."""
    canvas = np.zeros((200, 200), np.uint8)
    canvas[50:150, 99:101] = 255  # one vertical streak, 100 px
    cv2.imwrite(str(tmp_path / "one.png"), canvas)
    streaks = StreakBank(tmp_path).streaks("one.png", "all")
    alpha = layer_alpha(streaks, (200, 200), layer(source="one.png", angle=30.0))
    ys, xs = np.nonzero(alpha > 0.5)
    slope = np.polyfit(ys, xs, 1)[0]  # dx per dy (y grows downwards)
    assert slope == pytest.approx(-np.tan(np.radians(30.0)), abs=0.08)
    zoomed = layer_alpha(streaks, (400, 400), layer(source="one.png", zoom=2.0))
    ys, _ = np.nonzero(zoomed > 0.5)
    assert ys.max() - ys.min() == pytest.approx(200, abs=6)  # twice as long


def test_a_small_bank_image_covers_a_large_picture_without_a_border(bank: StreakBank) -> None:
    alpha = bank.alpha((300, 500), layer(zoom=0.5, angle=20.0))  # 48 x 80 bank px per picture
    assert alpha.shape == (300, 500) and alpha.dtype == np.float32
    assert 0.0 <= alpha.min() and alpha.max() <= 1.0
    for block in (alpha[:150, :250], alpha[:150, 250:], alpha[150:, :250], alpha[150:, 250:]):
        assert block.mean() > 0.3 * alpha.mean()  # rain everywhere, tiled by mirroring


def test_bank_recipes_render_reproducibly_and_need_their_bank(bank: StreakBank) -> None:
    clean = np.full((64, 80, 3), 0.3, np.float32)
    recipe = sample_recipe(np.random.default_rng(4), "bank", 0.2, bank=bank)
    assert recipe.style == "bank" and all(isinstance(x, BankLayer) for x in recipe.layers)
    one = render_rain(clean, recipe, np.random.default_rng(1), bank=bank)
    np.testing.assert_array_equal(
        one, render_rain(clean, recipe, np.random.default_rng(1), bank=bank)
    )
    assert float(one.mean()) > 0.3 + 1e-3 and np.isfinite(one).all()
    rainy, target = render_pair(clean, recipe, np.random.default_rng(1), rain_only=True, bank=bank)
    assert (rainy >= target - 1e-6).all()  # rain only adds light
    with pytest.raises(ValueError, match="needs the streak bank"):
        render_rain(clean, recipe, np.random.default_rng(1))
    with pytest.raises(ValueError, match="streak bank"):
        sample_recipe(np.random.default_rng(4), "bank", 1.0)


def test_mixed_draws_bank_rain_only_when_a_bank_is_given(bank: StreakBank) -> None:
    without = {sample_recipe(np.random.default_rng(s), "mixed").style for s in range(80)}
    with_bank = {
        sample_recipe(np.random.default_rng(s), "mixed", bank=bank).style for s in range(80)
    }
    assert "bank" not in without and "photographic" in without
    assert {"bank", "photographic", "streak"} <= with_bank


# ------------------------------------------------------------------------ photographic recipe


def photo(**changes: object) -> PhotoLayer:
    base: dict[str, object] = {"noise": 0.5, "blur": 0.6, "density": 0.01, "length": 24.0,
                               "angle": 0.0, "opacity": 0.8}  # fmt: skip
    base.update(changes)
    return PhotoLayer(**base)  # type: ignore[arg-type]


def test_photographic_streaks_run_along_their_angle_up_to_their_opacity() -> None:
    alpha = photo_alpha((128, 128), photo(), np.random.default_rng(0))
    assert alpha.shape == (128, 128) and 0.0 <= alpha.min() and alpha.max() <= 0.8 + 1e-6
    assert alpha.max() > 0.6
    along = np.abs(np.diff(alpha, axis=0)).mean()  # vertical streaks change little downwards
    across = np.abs(np.diff(alpha, axis=1)).mean()
    assert along < 0.5 * across
    sideways = photo_alpha((128, 128), photo(angle=90.0), np.random.default_rng(0))
    assert np.abs(np.diff(sideways, axis=1)).mean() < 0.5 * np.abs(np.diff(sideways, axis=0)).mean()


def test_photographic_density_sets_how_much_rain_there_is() -> None:
    sparse = photo_alpha((128, 128), photo(density=0.002), np.random.default_rng(0)).mean()
    dense = photo_alpha((128, 128), photo(density=0.03), np.random.default_rng(0)).mean()
    assert dense > 3 * sparse > 0


def test_the_photographic_style_screen_blends() -> None:
    recipe = sample_recipe(np.random.default_rng(2), "photographic", 0.2)
    assert recipe.blend == "screen" and all(isinstance(x, PhotoLayer) for x in recipe.layers)
    clean = np.random.default_rng(0).random((48, 48, 3), dtype=np.float32)
    out = render_rain(
        clean, RainRecipe(layers=recipe.layers, blend="screen"), np.random.default_rng(0)
    )
    assert (out >= clean - 1e-6).all() and (out > clean + 0.05).any()


# ----------------------------------------------------------------------------- derain synth


def test_synth_writes_bank_pairs_and_records_recipes_that_round_trip(
    bank: StreakBank, tmp_path: Path
) -> None:
    smooth_photo(tmp_path / "in" / "a.png", height=48, width=64, seed=1)
    smooth_photo(tmp_path / "in" / "b.png", height=48, width=64, seed=2)
    summary = write_pairs(tmp_path / "in", tmp_path / "out", style="bank", streaks=bank.folder)
    assert summary.written == ["a", "b"]
    records = [json.loads(line) for line in summary.recipes.read_text().splitlines()]
    assert all(r["style"] == "bank" and r["streaks"] == str(bank.folder) for r in records)
    recipe = recipe_from_dict(records[0]["recipe"])
    assert all(isinstance(x, BankLayer) for x in recipe.layers)
    assert recipe == sample_recipe(rng_for(0, "a"), "bank", 48 / 480, bank=bank)
    photographic = sample_recipe(np.random.default_rng(0), "photographic")
    assert recipe_from_dict(json.loads(json.dumps(asdict(photographic)))) == photographic


def test_synth_cli_needs_streaks_for_the_bank_style(bank: StreakBank, tmp_path: Path) -> None:
    smooth_photo(tmp_path / "in" / "a.png", height=40, width=48)
    runner = CliRunner()
    refused = runner.invoke(
        app, route(["synth", str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--style", "bank"])
    )
    assert refused.exit_code == 2 and "needs --streaks DIR" in refused.output
    assert not (tmp_path / "o").exists()  # refused before anything was written
    base = ["synth", str(tmp_path / "in"), "-o", str(tmp_path / "o")]
    missing = runner.invoke(app, route([*base, "--streaks", str(tmp_path / "nope")]))
    assert missing.exit_code == 2 and "no such folder of streak images" in missing.output
    done = runner.invoke(
        app, route([*base, "--style", "bank", "--streaks", str(bank.folder), "-q"])
    )
    assert done.exit_code == 0, done.output
    assert (tmp_path / "o" / "rainy" / "a.png").is_file()


# ------------------------------------------------------------------------------ training data


def test_several_clean_folders_are_used_together_and_one_given_twice_is_refused(
    tmp_path: Path,
) -> None:
    data = make_dataset(tmp_path / "d", rainy=3, clean=2)
    more = make_dataset(tmp_path / "m", rainy=0, clean=3) / "clean"
    folders = scan_folders(data, [data / "clean", more])
    assert folders.clean_dirs == (data / "clean", more) and len(folders.clean) == 5
    with pytest.raises(UsageError, match="clean folder given twice"):
        resolve_folders(data, [more, tmp_path / "m" / "clean" / "."])


def test_augmented_clean_crops_are_deterministic_zoomed_and_flipped(tmp_path: Path) -> None:
    folders = scan_folders(make_dataset(tmp_path / "d", rainy=3, clean=2), min_rainy=2)
    plain = UnpairedCrops(folders, crop=16, seed=3)
    zoomed = UnpairedCrops(folders, crop=16, seed=3, augment=CleanAugment(2.0, True))
    again = UnpairedCrops(folders, crop=16, seed=3, augment=CleanAugment(2.0, True))
    same = 0
    for g in range(12):
        o, clean = zoomed[g]
        assert (
            clean.shape == (3, 16, 16) and -1.0 <= float(clean.min()) <= float(clean.max()) <= 1.0
        )
        torch.testing.assert_close(again[g][1], clean, rtol=0, atol=0)
        torch.testing.assert_close(o, plain[g][0], rtol=0, atol=0)  # rainy crops unchanged
        same += int(torch.equal(clean, plain[g][1]))
    assert same < 12
    off = UnpairedCrops(folders, crop=16, seed=3, augment=CleanAugment(1.0, False))
    torch.testing.assert_close(off[5][1], plain[5][1], rtol=0, atol=0)  # off = plain crops


def test_training_renders_bank_rain_from_the_config(bank: StreakBank, tmp_path: Path) -> None:
    folders = scan_folders(make_dataset(tmp_path / "d", rainy=3, clean=2), min_rainy=2)
    synth = SyntheticRain("bank", 0.5, True, str(bank.folder))
    crops = UnpairedCrops(folders, crop=24, seed=1, synthetic=synth)
    _, clean, rendered = crops[3]
    assert float((rendered - clean).mean()) > 1e-3  # rain adds light
    clone = pickle.loads(pickle.dumps(crops))  # what a loader worker gets
    torch.testing.assert_close(clone[3][2], rendered, rtol=0, atol=0)


def test_the_bank_style_needs_a_streak_folder_in_the_config() -> None:
    with pytest.raises(UsageError, match="needs a folder of streak images"):
        tiny_config().with_overrides({"losses.synthetic_style": "bank"})
    with pytest.raises(UsageError, match="clean_zoom_max"):
        tiny_config().with_overrides({"train.clean_zoom_max": 0.5})
