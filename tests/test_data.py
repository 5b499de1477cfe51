"""Unpaired folders, probing, crops and the deterministic, resumable sample order."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from _trainkit import make_dataset, save

from derain_cli.data import (
    StepSampler,
    UnpairedCrops,
    fit_to_crop,
    list_images,
    resolve_folders,
    scan_folders,
)
from derain_cli.errors import UsageError, speak_cli
from derain_cli.train.setup import data_digest


def test_clean_comes_from_flag_or_data_clean_or_is_an_error(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "d")
    assert resolve_folders(data, None) == ((data,), (data / "clean",))
    other = make_dataset(tmp_path / "o") / "clean"
    assert resolve_folders(data, other) == ((data,), (other,))
    split = tmp_path / "split"
    (split / "rainy").mkdir(parents=True)
    (split / "clean").mkdir()
    assert resolve_folders(split, None) == ((split / "rainy",), (split / "clean",))
    (tmp_path / "alone").mkdir()
    with pytest.raises(UsageError, match="pass clean DIR") as info:
        resolve_folders(tmp_path / "alone", None)
    assert info.value.exit_code == 2
    with speak_cli({}), pytest.raises(UsageError, match="pass --clean DIR"):
        resolve_folders(tmp_path / "alone", None)


def test_several_rainy_folders_train_together_in_the_order_given(tmp_path: Path) -> None:
    """Folder after folder, each sorted, in the order given; one folder's digest is unchanged."""
    first = make_dataset(tmp_path / "first", rainy=3, clean=2)
    second = make_dataset(tmp_path / "second", rainy=2, clean=1)
    folders = scan_folders([second, first])
    assert folders.rainy_dirs == (second, first)
    assert folders.rainy == (*list_images(second, exclude=[second / "clean"]),
                             *list_images(first, exclude=[first / "clean"]))  # fmt: skip
    assert len(folders.rainy) == 5 and len(folders.clean) == 3  # both clean/ folders
    assert folders.clean_dirs == (second / "clean", first / "clean")
    assert data_digest(folders) != data_digest(scan_folders([first, second]))
    # One folder: names relative to it, as runs started before several folders existed recorded
    # them, so those runs still resume.
    alone = scan_folders(first)
    before = hashlib.sha256()
    for group, root in ((alone.rainy, first), (alone.clean, first / "clean")):
        for path in group:
            before.update(str(path.relative_to(root)).encode() + b"\0")
        before.update(b"\1")
    assert data_digest(alone) == data_digest(scan_folders([first])) == before.hexdigest()


def test_a_rainy_folder_given_twice_or_nested_is_refused(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "d")
    (data / "more").mkdir()
    with pytest.raises(UsageError, match="rainy folder given twice"):
        resolve_folders([data, tmp_path / "d" / "."], None)
    with pytest.raises(UsageError, match=r"more: rainy folder inside"):
        resolve_folders([data, data / "more"], data / "clean")
    with pytest.raises(UsageError, match="no folder of rainy images"):
        resolve_folders([], None)


def test_scan_excludes_clean_and_skips_unreadable_files_once(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "d", rainy=3, clean=2)
    (data / "broken.jpg").write_bytes(b"not an image")
    (data / "notes.txt").write_text("ignored")
    skipped: list[Path] = []
    folders = scan_folders(data, on_skip=lambda p, reason: skipped.append(p))
    assert skipped == [data / "broken.jpg"]
    assert len(folders.rainy) == 3 and len(folders.clean) == 2
    assert all("clean" not in p.parent.name for p in folders.rainy)
    assert folders.skipped[0][0] == data / "broken.jpg"


def test_empty_or_too_small_datasets_are_clear_errors(tmp_path: Path) -> None:
    empty = tmp_path / "e"
    (empty / "clean").mkdir(parents=True)
    with pytest.raises(UsageError, match="no readable rainy images"):
        scan_folders(empty)
    data = make_dataset(tmp_path / "d", rainy=2, clean=1)
    with pytest.raises(UsageError, match="fewer than the batch size 4"):
        scan_folders(data, min_rainy=4)
    for file in (data / "clean").iterdir():
        file.unlink()
    with pytest.raises(UsageError, match="no readable clean images"):
        scan_folders(data)


def test_crops_are_deterministic_in_range_and_small_images_upscaled(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "d")
    save(data / "tiny.png", np.full((10, 14, 3), 0.5))
    folders = scan_folders(data)
    dataset = UnpairedCrops(folders, crop=32, seed=3)
    o, clean = dataset[5]
    assert o.shape == clean.shape == (3, 32, 32)
    assert o.min() >= -1 and o.max() <= 1
    again = UnpairedCrops(folders, crop=32, seed=3, cache=True)[5]
    torch.testing.assert_close(again[0], o, atol=1 / 255, rtol=0)
    assert not torch.equal(UnpairedCrops(folders, crop=32, seed=4)[5][0], o)
    assert fit_to_crop(np.zeros((10, 14, 3), np.float32), 32).shape == (32, 45, 3)
    # Every rainy image appears once per epoch.
    n = len(folders.rainy)
    from derain_cli.data import _RAINY_ORDER, _order

    assert sorted(_order(3, _RAINY_ORDER, n, g) for g in range(n, 2 * n)) == list(range(n))


def test_undecodable_file_is_replaced_with_one_warning(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "d", rainy=2, clean=1)
    folders = scan_folders(data)
    assert len(folders.rainy) == 2
    # Broken after the scan (which decodes every file in full): header fine, pixels truncated.
    good = (data / "rain-0.png").read_bytes()
    (data / "rain-0.png").write_bytes(good[: len(good) // 2])
    dataset = UnpairedCrops(folders, crop=32, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for g in range(6):
            dataset[g]
    messages = [str(w.message) for w in caught if "rain-0.png" in str(w.message)]
    assert len(messages) == 1 and "skipped" in messages[0]


def test_sampler_resumes_where_it_stopped() -> None:
    full = list(StepSampler(start=0, stop=5, global_batch=2, rank=0, world=1))
    tail = list(StepSampler(start=3, stop=5, global_batch=2, rank=0, world=1))
    assert full == list(range(10)) and tail == full[6:]
    assert len(StepSampler(start=3, stop=5, global_batch=4, rank=1, world=2)) == 4


def test_missing_or_file_data_paths_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="nope: no such folder"):
        resolve_folders(tmp_path / "nope", None)
    a_file = tmp_path / "photo.jpg"
    a_file.write_bytes(b"x")
    with pytest.raises(UsageError, match="photo.jpg: not a folder of rainy images"):
        resolve_folders(a_file, None)


def test_synthetic_rain_is_rendered_over_the_clean_crop_reproducibly(tmp_path: Path) -> None:
    from derain_cli.data import SyntheticRain

    folders = scan_folders(make_dataset(tmp_path / "d", rainy=3, clean=2), min_rainy=2)
    plain = UnpairedCrops(folders, crop=24, seed=5)
    synth = UnpairedCrops(folders, crop=24, seed=5, synthetic=SyntheticRain("heavy", 2.0))
    o, clean = plain[7]
    o2, clean2, rendered = synth[7]
    torch.testing.assert_close(o2, o, rtol=0, atol=0)
    torch.testing.assert_close(clean2, clean, rtol=0, atol=0)
    assert rendered.shape == clean.shape and bool(torch.isfinite(rendered).all())
    assert float((rendered - clean).abs().mean()) > 1e-3  # rain was drawn
    assert float(rendered.min()) >= -1.0 and float(rendered.max()) <= 1.0
    again = UnpairedCrops(folders, crop=24, seed=5, synthetic=SyntheticRain("heavy", 2.0))
    torch.testing.assert_close(again[7][2], rendered, rtol=0, atol=0)  # pure function of g
    assert not torch.equal(synth[8][2] - synth[8][1], rendered - clean2)


def test_a_share_of_synthetic_pairs_is_left_dry_and_the_rest_keep_their_rain(
    tmp_path: Path,
) -> None:
    """``losses.synthetic_clean_fraction``: that share of the pairs gets the camera alone (input
    = target), drawn from a stream of its own, so every other pair keeps the rain it had."""
    from derain_cli.data import SyntheticRain

    folders = scan_folders(make_dataset(tmp_path / "d", rainy=3, clean=2), min_rainy=2)
    wet = UnpairedCrops(folders, crop=24, seed=5, synthetic=SyntheticRain("heavy", 2.0, True))
    mixed = UnpairedCrops(
        folders, crop=24, seed=5, synthetic=SyntheticRain("heavy", 2.0, True, clean_fraction=0.4)
    )
    dry = 0
    for g in range(40):
        _, target, rendered = mixed[g]
        if torch.equal(rendered, target):
            dry += 1
        else:
            _, wet_target, wet_rendered = wet[g]
            torch.testing.assert_close(rendered, wet_rendered, rtol=0, atol=0)
            torch.testing.assert_close(target, wet_target, rtol=0, atol=0)
    assert 8 <= dry <= 24  # 40 % of 40, give or take
    assert not any(torch.equal(wet[g][2], wet[g][1]) for g in range(40))


def test_training_reads_every_image_suffix_that_derain_reads(tmp_path: Path) -> None:
    """One suffix list: a folder that `derain` derains whole is a folder `derain train` reads."""
    from derain_cli.data import list_images
    from derain_cli.inference.plan import plan_jobs

    names = ["a.JPG", "b.jpe", "c.gif", "d.tga", "e.pnm", "f.webp", "g.TIFF", "h.txt"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    trained = sorted(p.name for p in list_images(tmp_path))
    derained = sorted(j.input.name for j in plan_jobs(str(tmp_path), str(tmp_path / "out")))
    assert trained == derained == sorted(names[:-1])
