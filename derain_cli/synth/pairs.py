"""Rainy/clean pairs on disk: the library side of ``derain synth``.

:func:`write_pairs` renders rain over clean photographs and writes::

    OUT/clean/<stem>.png     the clean image the rain was rendered on (after --max-side)
    OUT/rainy/<stem>.png     the rainy image
    OUT/recipes.jsonl        one JSON line per pair: stem, source, style drawn, seed, recipe

which is the layout ``derain eval --rainy OUT/rainy --clean OUT/clean`` pairs by stem.

Decisions:

* Each picture's random generator comes from the seed and the file's *stem* (and the copy
  number), never from its position in the folder: adding, removing or renaming other files does
  not change a picture's rain, and a rerun with the same seed gives the same files. The same
  generator draws the recipe and then renders it (:func:`rng_for`).
* Rain sizes follow the picture: ``scale * short_side / 480`` (the scale the training loader
  uses), after the optional ``max_side`` downscale.
* The clean file is exactly the image the rain was rendered on: it is quantised to the file's
  bit depth (8, or 16 for 16-bit sources) before rendering, so the pair differs by the rain only.
  Both files are RGB PNGs carrying the source's ICC profile; alpha and EXIF are not kept.
* Every check that needs no pixels happens before anything is written (missing or empty input,
  output already holding pairs, unknown style, bad numbers, two inputs with one stem). A file that
  cannot be read is reported (``on_warning``) and listed in the summary; the others go on.
* ``overwrite`` deletes the image files already in ``OUT/rainy`` and ``OUT/clean`` and the old
  ``recipes.jsonl`` first, so that no stale pair from an earlier run is scored with the new ones.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from derain_cli.errors import DerainError, ImageError, UsageError, setting
from derain_cli.images.formats import READABLE_SUFFIXES
from derain_cli.images.io import Picture, atomic_write_bytes, read_image, write_image
from derain_cli.synth.bank import StreakBank
from derain_cli.synth.recipe import (
    STYLES,
    photo_scale,
    sample_recipe,
)
from derain_cli.synth.render import render_rain

RAINY_DIR = "rainy"
CLEAN_DIR = "clean"
RECIPES_FILE = "recipes.jsonl"


@dataclass(frozen=True)
class Failure:
    """An input that gave no pair, and why."""

    path: Path
    reason: str


@dataclass
class PairsSummary:
    """What :func:`write_pairs` did: the stems written (in order) and the inputs that failed."""

    out: Path
    written: list[str] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)

    @property
    def rainy_dir(self) -> Path:
        return self.out / RAINY_DIR

    @property
    def clean_dir(self) -> Path:
        return self.out / CLEAN_DIR

    @property
    def recipes(self) -> Path:
        return self.out / RECIPES_FILE


def rng_for(seed: int, stem: str, copy: int = 0) -> np.random.Generator:
    """The generator of one picture: from the seed, the output stem's source stem and the copy.

    ``stem`` is the *input* file's stem; ``copy`` counts from 0 (copy 0 is also what a run with
    one copy per image draws).
    """
    digest = hashlib.sha256(stem.encode("utf-8")).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    return np.random.default_rng([seed, *words, copy])


def pair_stem(stem: str, copy: int, copies: int) -> str:
    """``photo`` with one copy; ``photo-1``, ``photo-2``... with several."""
    return stem if copies == 1 else f"{stem}-{copy + 1}"


def list_clean_images(source: Path | str | Sequence[Path | str]) -> list[Path]:
    """The image files of a folder (not recursive, hidden files skipped), or of a list of files
    and folders; raises UsageError for a missing path or when no image is found."""
    entries = [Path(source)] if isinstance(source, Path | str) else [Path(s) for s in source]
    if not entries:
        raise UsageError("no clean images given")
    found: list[Path] = []
    for entry in entries:
        if entry.is_dir():
            found += [p for p in sorted(entry.iterdir()) if p.is_file() and _is_image_name(p.name)]
        elif entry.is_file():
            found.append(entry)
        else:
            raise UsageError(f"{entry}: no such file or folder")
    if not found:
        where = ", ".join(str(e) for e in entries)
        raise UsageError(
            f"{where}: no images found (looked for {', '.join(sorted(READABLE_SUFFIXES))})"
        )
    return found


def check_options(
    *,
    style: str,
    seed: int,
    copies: int,
    scale: float,
    max_side: int | None,
    streaks: Path | str | None = None,
) -> StreakBank | None:
    """UsageError for an option that cannot work; the streak bank of ``streaks`` (or None)."""
    if style not in STYLES:
        raise UsageError(f"unknown rain style {style!r} (choose one of: {', '.join(STYLES)})")
    bank = StreakBank(streaks) if streaks is not None else None
    if style == "bank" and bank is None:
        raise UsageError(f"rain style 'bank' needs {setting('streaks')} DIR (streak images)")
    if seed < 0:
        raise UsageError(f"seed {seed}: must be 0 or more")
    if copies < 1:
        raise UsageError(f"copies {copies}: must be at least 1")
    if not scale > 0 or not np.isfinite(scale):
        raise UsageError(f"scale {scale}: must be a number above 0")
    if max_side is not None and max_side < 8:
        raise UsageError(f"max side {max_side}: must be at least 8 pixels")
    return bank


def write_pairs(
    source: Path | str | Sequence[Path | str],
    out: Path | str,
    *,
    style: str = "mixed",
    seed: int = 0,
    copies: int = 1,
    scale: float = 1.0,
    max_side: int | None = None,
    overwrite: bool = False,
    streaks: Path | str | None = None,
    on_warning: Callable[[str], None] | None = None,
    on_pair: Callable[[str], None] | None = None,
) -> PairsSummary:
    """Render rain over every clean image of ``source`` and write the pairs under ``out``.

    ``streaks``: a folder of streak images on black, for style ``bank`` (and ``mixed``).

    ``on_warning`` gets one line per input that fails (default: :func:`warnings.warn`);
    ``on_pair`` is called with each input's name after it is done (progress bars).
    Raises UsageError before writing anything when the invocation cannot work.
    """
    bank = check_options(
        style=style, seed=seed, copies=copies, scale=scale, max_side=max_side, streaks=streaks
    )
    out = Path(out)
    inputs = list_clean_images(source)
    _check_stems(inputs)
    _check_output(out, inputs, overwrite)
    warn = on_warning or (lambda message: warnings.warn(message, stacklevel=3))

    summary = PairsSummary(out=out)
    summary.rainy_dir.mkdir(parents=True, exist_ok=True)
    summary.clean_dir.mkdir(parents=True, exist_ok=True)
    if overwrite:
        _remove_old_pairs(summary)
    lines: list[str] = []
    try:
        for path in inputs:
            try:
                lines += _write_one(path, summary, style, seed, copies, scale, max_side, bank)
            except ImageError as exc:
                summary.failed.append(Failure(path, exc.reason))
                warn(f"{path}: skipped ({exc.reason})")
            if on_pair is not None:
                on_pair(path.name)
    finally:  # the recipes of the pairs written, even when interrupted
        if lines:
            atomic_write_bytes(summary.recipes, "".join(lines).encode("utf-8"))
    return summary


# --------------------------------------------------------------------------------------------


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and Path(name).suffix.lower() in READABLE_SUFFIXES


def _check_stems(inputs: list[Path]) -> None:
    by_stem: dict[str, list[Path]] = {}
    for path in inputs:
        by_stem.setdefault(path.stem, []).append(path)
    for stem, paths in by_stem.items():
        if len(paths) > 1:
            names = ", ".join(str(p) for p in paths)
            raise UsageError(f"several inputs share the stem {stem!r} ({names}): rename one")


def _check_output(out: Path, inputs: list[Path], overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: output folder is a file")
    pair_dirs = [(out / name).resolve() for name in (RAINY_DIR, CLEAN_DIR)]
    for path in inputs:
        if path.resolve().parent in pair_dirs:
            raise UsageError(
                f"{path}: the clean images cannot be read from the output's {path.parent.name}/ "
                "folder (it is rewritten); choose another -o"
            )
    if overwrite:
        return
    for folder in (out / RAINY_DIR, out / CLEAN_DIR):
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"{folder}: is a file, not a folder")
        if folder.is_dir() and any(_is_image_name(p.name) for p in folder.iterdir()):
            raise UsageError(
                f"{folder} already holds images; use {setting('overwrite', True)} to replace them"
            )


def _remove_old_pairs(summary: PairsSummary) -> None:
    for folder in (summary.rainy_dir, summary.clean_dir):
        for path in folder.iterdir():
            if path.is_file() and _is_image_name(path.name):
                try:
                    path.unlink()
                except OSError as exc:
                    raise DerainError(f"{path}: cannot remove: {exc.strerror or exc}") from None
    summary.recipes.unlink(missing_ok=True)


def _prepare(picture: Picture, max_side: int | None) -> tuple[np.ndarray, int]:
    """The clean RGB to render on (downscaled, quantised to the output depth) and that depth."""
    rgb = picture.rgb
    height, width = rgb.shape[:2]
    if max_side is not None and max(height, width) > max_side:
        import cv2

        factor = max_side / max(height, width)
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    depth = 16 if picture.bit_depth == 16 else 8
    levels = float(2**depth - 1)
    rgb = (np.round(np.clip(rgb, 0.0, 1.0) * levels) / levels).astype(np.float32)
    return np.ascontiguousarray(rgb), depth


def _write_one(
    path: Path,
    summary: PairsSummary,
    style: str,
    seed: int,
    copies: int,
    scale: float,
    max_side: int | None,
    bank: StreakBank | None,
) -> list[str]:
    """Write one input's pairs; its recipes.jsonl lines. Raises ImageError (nothing kept)."""
    picture = read_image(path)
    clean, depth = _prepare(picture, max_side)
    height, width = clean.shape[:2]
    rain_scale = photo_scale(min(height, width), scale)
    target = Picture(
        rgb=clean,
        alpha=None,
        bit_depth=depth,
        grayscale=False,
        exif=None,
        icc_profile=picture.icc_profile,
        format="PNG",
        path=None,
    )
    lines, stems = [], []
    written: list[Path] = []
    try:
        for copy in range(copies):
            stem = pair_stem(path.stem, copy, copies)
            rng = rng_for(seed, path.stem, copy)
            recipe = sample_recipe(rng, style, rain_scale, bank=bank)
            rainy = render_rain(clean, recipe, rng, bank=bank)
            for folder, rgb in ((summary.clean_dir, clean), (summary.rainy_dir, rainy)):
                dest = folder / f"{stem}.png"
                write_image(dest, target, rgb, fmt="png")
                written.append(dest)
            record = {
                "stem": stem,
                "source": str(path),
                "style": recipe.style,
                "requested_style": style,
                "seed": seed,
                "copy": copy,
                "scale": rain_scale,
                "size": [width, height],
                "recipe": asdict(recipe),
            }
            if bank is not None:
                record["streaks"] = str(bank.folder)
            lines.append(json.dumps(record) + "\n")
            stems.append(stem)
    except ImageError:
        for dest in written:  # no half pair of this input stays behind
            dest.unlink(missing_ok=True)
        raise
    summary.written += stems
    return lines
