"""Least-rainy crops of the rainy photos as the clean set (derain_cli/train/clean_crops.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _trainkit import save
from PIL import Image
from torch import nn

from derain_cli.train.clean_crops import MANIFEST, choose_clean_crops, least_rainy, score_crops


class Opening(nn.Module):
    """A G_B that removes thin bright streaks and nothing else: a 3x3 grey opening."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eroded = -F.max_pool2d(-x, 3, stride=1, padding=1)
        return F.max_pool2d(eroded, 3, stride=1, padding=1)


def make_photos(folder: Path, count: int = 6) -> tuple[list[Path], set[Path]]:
    """Smooth textured photos; every other one gets thin bright diagonal streaks."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    paths, streaked = [], set()
    yy, xx = np.mgrid[0:64, 0:80]
    for i in range(count):
        base = rng.random(3) * 0.4 + 0.2
        image = base + 0.15 * np.sin(xx / 9.0 + i)[..., None] * np.cos(yy / 11.0)[..., None]
        image = image + 0.01 * rng.standard_normal(image.shape)
        path = folder / f"photo-{i}.png"
        if i % 2:
            image[(xx + 2 * yy + i) % 7 == 0] = 0.95  # 1-px streaks, 7 px apart
            streaked.add(path)
        save(path, image)
        paths.append(path)
    return paths, streaked


def test_the_clean_looking_crops_are_chosen(tmp_path: Path) -> None:
    paths, streaked = make_photos(tmp_path / "rainy")
    chosen = choose_clean_crops(
        paths, Opening(), tmp_path / "clean", side=32, per_image=4, keep=0.5, seed=3
    )
    assert chosen.candidates == 24 and len(chosen.kept) == 12
    assert all(crop.source not in streaked for crop in chosen.kept)
    rains = [crop.rain for crop in chosen.kept]
    assert rains == sorted(rains) and chosen.threshold == rains[-1]

    # Written as PNG files, least rain first, with their pixels, and listed in the manifest.
    assert sorted(chosen.folder.glob("*.png")) == list(chosen.files)
    first = chosen.kept[0]
    source = np.asarray(Image.open(first.source))
    crop = source[first.top : first.top + 32, first.left : first.left + 32]
    assert np.array_equal(np.asarray(Image.open(chosen.files[0])), crop)
    assert chosen.files[0].name == f"0000-{first.source.stem}-y{first.top}-x{first.left}.png"
    manifest = json.loads((chosen.folder / MANIFEST).read_text())
    assert [row["file"] for row in manifest] == [f.name for f in chosen.files]
    assert manifest[0]["source"] == str(first.source)

    # Written again (an earlier attempt's folder): only the new crops are there, and a file
    # the manifest does not list is left alone.
    (chosen.folder / "mine.png").write_bytes(b"")
    again = choose_clean_crops(
        paths[:2], Opening(), chosen.folder, side=32, per_image=1, keep=1.0, seed=3
    )
    assert sorted(chosen.folder.glob("*.png")) == sorted([*again.files, chosen.folder / "mine.png"])


def test_crops_are_seeded_and_fit_small_photos(tmp_path: Path) -> None:
    paths, _ = make_photos(tmp_path / "rainy", count=2)
    a, _ = score_crops(paths, Opening(), side=48, per_image=3, seed=1)
    b, _ = score_crops(paths, Opening(), side=48, per_image=3, seed=1)
    assert [(c.top, c.left, c.rain) for c in a] == [(c.top, c.left, c.rain) for c in b]
    big, _ = score_crops(paths, Opening(), side=500, per_image=3)
    assert {c.side for c in big} == {64}  # the photos' short side
    assert len({(c.source, c.top, c.left) for c in big}) == len(big)  # each place scored once
    assert len(least_rainy(big, 0.01)) == 1  # never fewer than one


def test_undecodable_photos_are_skipped(tmp_path: Path) -> None:
    paths, _ = make_photos(tmp_path / "rainy", count=2)
    broken = tmp_path / "rainy" / "broken.png"
    broken.write_bytes(b"not a png")
    scored, skipped = score_crops([*paths, broken], Opening(), side=16, per_image=2)
    assert skipped == [broken] and len(scored) == 4
