"""Unpaired rainy/clean folders and random crops, in a deterministic, resumable order.

NLCL is unsupervised: each training sample is a rainy crop O and an UNPAIRED clean crop (the
discriminator's "real" example). Both come from the global sample counter ``g`` alone:

* image order: a seeded permutation of the folder per epoch (rainy and clean have separate
  permutations, since the folders differ in size), sample ``g`` takes position ``g % N`` of epoch
  ``g // N``;
* crop position: drawn from ``numpy.random.default_rng([seed, stream, g])``.

So the data a run sees depends only on (seed, files, step, global batch): resuming at step ``s``
continues at counter ``s * batch`` with no sampler or worker RNG state to save, every rank of a
data-parallel run can compute its shard of the same global batch, and the number of loader
workers does not change the data.

With synthetic supervision on (``synthetic=``), each item also carries the clean crop with rain
rendered over it (:mod:`derain_cli.synth`, style and size from the config), drawn from
``default_rng([seed, 4, g])``: rendering happens in the loader workers and is as reproducible and
resumable as the crops.

Images smaller than the crop are UPSCALED (bicubic, aspect kept) until the short side equals the
crop; padding would show the generators artificial borders that real photos never have.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from derain_cli.errors import DerainError, UsageError, setting
from derain_cli.images.formats import READABLE_SUFFIXES
from derain_cli.images.tensors import to_model_range

# Streams of the seeded generators (kept distinct so the seven draws are independent).
_RAINY_ORDER, _CLEAN_ORDER, _RAINY_CROP, _CLEAN_CROP, _SYNTH_RAIN, _CLEAN_AUGMENT, _DRY = range(7)


@dataclass(frozen=True)
class SyntheticRain:
    """Rain rendered over the clean crops (``losses.synthetic_style`` / ``synthetic_scale``)."""

    style: str = "mixed"
    scale: float = 1.0
    rain_only: bool = False  # pairs differ by rain alone (synth.render_pair)
    streaks: str = ""  # a folder of streak images for the "bank" style ("" = none)
    clean_fraction: float = 0.0  # this share of the pairs gets no rain (target = input)


@dataclass(frozen=True)
class CleanAugment:
    """Clean crops cut from a window up to ``zoom_max`` times the crop, shrunk to the crop
    (area-averaged), and mirrored left-right half of the time (``flip``)."""

    zoom_max: float = 1.0
    flip: bool = False

    @property
    def active(self) -> bool:
        return self.zoom_max > 1.0 or self.flip


@dataclass(frozen=True)
class ImageFolders:
    """The readable training images; ``skipped`` lists unreadable files and why.

    ``rainy`` and ``clean`` are in training order: each folder's images sorted, folder after
    folder, in the order the folders were given.
    """

    rainy_dirs: tuple[Path, ...]
    clean_dirs: tuple[Path, ...]
    rainy: tuple[Path, ...]
    clean: tuple[Path, ...]
    skipped: tuple[tuple[Path, str], ...] = field(default=())


def resolve_folders(
    data: Path | str | Sequence[Path | str],
    clean: Path | str | Sequence[Path | str] | None,
) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
    """The rainy and clean folders of one or more DATA folders.

    Each DATA is a folder of rainy images, or holds ``rainy/`` and ``clean/``. Clean images come
    from ``clean`` (one folder or several) when given, else from the ``clean/`` of each DATA that
    has one; with neither this is a :class:`UsageError` (exit 2), because the adversarial term
    needs unpaired clean photos. A folder given twice, or inside another one given, is refused:
    its images would be drawn twice as often.
    """
    datas = [Path(data)] if isinstance(data, (str, Path)) else [Path(d) for d in data]
    rainy_dirs = rainy_folders(datas)
    cleans = [clean] if isinstance(clean, (str, Path)) else list(clean or ())
    if cleans:
        clean_dirs: tuple[Path, ...] = tuple(Path(c) for c in cleans)
        for folder in clean_dirs:
            if not folder.is_dir():
                raise UsageError(f"{folder}: not a folder of clean images")
        _refuse_overlap(clean_dirs, "clean")
    else:
        clean_dirs = tuple(d / "clean" for d in datas if (d / "clean").is_dir())
        if not clean_dirs:
            raise UsageError(
                f"{datas[0]}: no clean images; NLCL's adversarial term needs unpaired clean "
                f"photos: pass {setting('clean')} DIR or create {datas[0] / 'clean'}"
            )
    return rainy_dirs, clean_dirs


def rainy_folders(data: Sequence[Path]) -> tuple[Path, ...]:
    """The rainy folder of each DATA (its ``rainy/`` when it has one), checked: each exists, and
    none is given twice or inside another (:class:`UsageError`)."""
    if not data:
        raise UsageError("no folder of rainy images given")
    for folder in data:
        if not folder.exists():
            raise UsageError(f"{folder}: no such folder")
        if not folder.is_dir():
            raise UsageError(f"{folder}: not a folder of rainy images")
    rainy_dirs = tuple(d / "rainy" if (d / "rainy").is_dir() else d for d in data)
    _refuse_overlap(rainy_dirs)
    return rainy_dirs


def _refuse_overlap(folders: Sequence[Path], kind: str = "rainy") -> None:
    resolved = [f.resolve() for f in folders]
    for i, a in enumerate(resolved):
        for j, b in enumerate(resolved):
            if i != j and a.is_relative_to(b):
                same = "given twice" if a == b else f"inside {folders[j]}"
                raise UsageError(f"{folders[i]}: {kind} folder {same}")


def list_images(folder: Path, *, exclude: Sequence[Path] = ()) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted, hidden files and ``exclude`` skipped)."""
    excluded = [e.resolve() for e in exclude]
    found = []
    for path in folder.rglob("*"):
        if path.suffix.lower() not in READABLE_SUFFIXES or not path.is_file():
            continue
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        resolved = path.resolve()
        if any(resolved.is_relative_to(e) for e in excluded):
            continue
        found.append(path)
    return sorted(found)


def probe_image(path: Path) -> str | None:
    """Why ``path`` cannot be used, in derain's words (``None`` when it decodes).

    A full decode with the reader training uses (:func:`decode`): a header that reads is not
    enough, since a truncated file would then fail in the middle of the run.
    """
    from derain_cli.errors import ImageError
    from derain_cli.images.io import read_image

    try:
        read_image(path, max_megapixels=None)
    except ImageError as exc:
        return exc.reason
    return None


def scan_folders(
    data: Path | str | Sequence[Path | str],
    clean: Path | str | Sequence[Path | str] | None = None,
    *,
    min_rainy: int = 1,
    on_skip: Callable[[Path, str], None] | None = None,
) -> ImageFolders:
    """Find and probe the rainy and clean images; unreadable files are skipped (``on_skip``).

    Raises :class:`UsageError` when a folder holds no readable image, or fewer rainy images than
    ``min_rainy`` (the global batch: a batch should not repeat an image).
    """
    rainy_dirs, clean_dirs = resolve_folders(data, clean)
    skipped: list[tuple[Path, str]] = []

    def readable(paths: list[Path]) -> tuple[Path, ...]:
        good = []
        for path in paths:
            reason = probe_image(path)
            if reason is None:
                good.append(path)
            else:
                skipped.append((path, reason))
                if on_skip is not None:
                    on_skip(path, reason)
        return tuple(good)

    suffixes = ", ".join(sorted(READABLE_SUFFIXES))
    where = ", ".join(str(d) for d in rainy_dirs)
    rainy = readable([p for d in rainy_dirs for p in list_images(d, exclude=clean_dirs)])
    if not rainy:
        raise UsageError(f"{where}: no readable rainy images (looked for {suffixes})")
    if len(rainy) < min_rainy:
        raise UsageError(
            f"{where}: only {len(rainy)} readable rainy image(s), fewer than the batch size "
            f"{min_rainy}; add images or lower {setting('train.batch_size')}"
        )
    clean_images = readable([p for d in clean_dirs for p in list_images(d)])
    if not clean_images:
        where = ", ".join(str(d) for d in clean_dirs)
        raise UsageError(f"{where}: no readable clean images (looked for {suffixes})")
    return ImageFolders(rainy_dirs, clean_dirs, rainy, clean_images, tuple(skipped))


def check_crop(
    folders: ImageFolders, crop: int, smallest: tuple[int, str] = (16, "the smallest crop")
) -> str | None:
    """Refuse a crop that no rainy image can hold; a note when some images will be upscaled.

    Every image whose short side is below the crop is upscaled (``fit_to_crop``). When that is
    every rainy image, the crop is a mistake (``--crop 2048`` on 1024-px photos grows a CPU step
    past 20 GB): :class:`UsageError` naming the usable range, from ``smallest`` (the config's
    :func:`~derain_cli.config.smallest_crop`) to the largest short side. Otherwise the returned note
    says how many images will be upscaled (``None`` when none).
    """
    from PIL import Image

    def short_side(path: Path) -> int:
        try:
            with Image.open(path) as image:
                return min(image.size)
        except (OSError, ValueError):
            return crop  # unreadable files are skipped later, with their own warning

    rainy = [short_side(p) for p in folders.rainy]
    clean = [short_side(p) for p in folders.clean]
    if rainy and max(rainy) < crop:
        from derain_cli.config import crop_message

        raise UsageError(crop_message(crop, *smallest, largest=max(rainy)))
    small = sum(side < crop for side in rainy + clean)
    if small:
        return (
            f"{small} of {len(rainy) + len(clean)} images are smaller than the {crop}-px crop "
            "and will be upscaled"
        )
    return None


def decode(path: Path) -> np.ndarray:
    """RGB image as float32 H x W x 3 in [0, 1] (EXIF orientation applied)."""
    from derain_cli.images.io import read_image

    return read_image(path, max_megapixels=None).rgb


def fit_to_crop(rgb: np.ndarray, crop: int) -> np.ndarray:
    """Upscale (bicubic, aspect kept) so that the short side is at least ``crop``."""
    height, width = rgb.shape[:2]
    short = min(height, width)
    if short >= crop:
        return rgb
    import cv2

    scale = crop / short
    size = (max(crop, round(width * scale)), max(crop, round(height * scale)))
    resized = cv2.resize(rgb, size, interpolation=cv2.INTER_CUBIC)
    if resized.dtype == np.float32:
        np.clip(resized, 0.0, 1.0, out=resized)
    return resized


class UnpairedCrops(Dataset[tuple[torch.Tensor, ...]]):
    """Item ``g`` (the global sample counter) -> (rainy crop O, unpaired clean crop), [-1, 1].

    With ``synthetic`` the item is (O, clean crop C, C with rain rendered over it); with
    ``synthetic.rain_only`` C is the crop through the same camera as its rainy version.
    Unreadable files found while training are replaced by the next file in sorted order, with one
    warning each (per process); ``cache`` decodes each file once and keeps it as uint8.
    """

    def __init__(
        self,
        folders: ImageFolders,
        *,
        crop: int,
        seed: int,
        cache: bool = False,
        synthetic: SyntheticRain | None = None,
        augment: CleanAugment | None = None,
    ) -> None:
        self.rainy = folders.rainy
        self.clean = folders.clean
        self.crop = crop
        self.seed = seed
        self.synthetic = synthetic
        self.augment = augment if augment is not None and augment.active else None
        self.bank = None
        if synthetic is not None and synthetic.streaks:
            from derain_cli.synth.bank import StreakBank

            self.bank = StreakBank(synthetic.streaks)
        self._cache: dict[Path, np.ndarray] | None = None
        self._warned: set[Path] = set()
        if cache:
            self._cache = {}
            for path in dict.fromkeys(self.rainy + self.clean):
                image = self._try_decode(path)
                if image is not None:
                    self._cache[path] = (image * 255.0 + 0.5).astype(np.uint8)

    def __len__(self) -> int:
        return len(self.rainy)

    def __getitem__(self, g: int) -> tuple[torch.Tensor, ...]:
        rainy, _ = self._crop(self.rainy, _order(self.seed, _RAINY_ORDER, len(self.rainy), g), g, 0)
        index = _order(self.seed, _CLEAN_ORDER, len(self.clean), g)
        if self.augment is None:
            clean, side = self._crop(self.clean, index, g, 1)
        else:
            clean, side = self._augmented_crop(index, g, self.augment)
        if self.synthetic is None:
            return _chw(rainy), _chw(clean)
        from derain_cli.synth import photo_scale, render_pair, sample_recipe

        rng = np.random.default_rng([self.seed, _SYNTH_RAIN, g])
        scale = photo_scale(side, self.synthetic.scale)
        clean_rgb = clean.astype(np.float32) / 255.0 if clean.dtype == np.uint8 else clean
        recipe = sample_recipe(rng, self.synthetic.style, scale, bank=self.bank)
        if self.synthetic.clean_fraction > 0 and _dry(self.seed, g, self.synthetic.clean_fraction):
            recipe = replace(recipe, layers=(), veil=0.0, drops=0)  # the camera alone
        rendered, target = render_pair(
            clean_rgb, recipe, rng, rain_only=self.synthetic.rain_only, bank=self.bank
        )
        return _chw(rainy), _chw(target), _chw(rendered)

    def _augmented_crop(self, index: int, g: int, augment: CleanAugment) -> tuple[np.ndarray, int]:
        """A clean crop from a window ``zoom`` times larger, shrunk to the crop, maybe mirrored;
        with the short side of the image as seen at the crop's scale (for the rain's size)."""
        import cv2

        image = self._image(self.clean, index)
        height, width = image.shape[:2]
        rng = np.random.default_rng([self.seed, _CLEAN_AUGMENT, g])
        most = min(augment.zoom_max, min(height, width) / self.crop)
        zoom = float(np.exp(rng.uniform(0.0, np.log(most)))) if most > 1.0 else 1.0
        window = min(max(self.crop, round(self.crop * zoom)), height, width)
        top = int(rng.integers(0, height - window + 1))
        left = int(rng.integers(0, width - window + 1))
        crop = image[top : top + window, left : left + window]
        if window != self.crop:
            crop = cv2.resize(crop, (self.crop, self.crop), interpolation=cv2.INTER_AREA)
        if augment.flip and rng.random() < 0.5:
            crop = crop[:, ::-1]
        return np.ascontiguousarray(crop), max(1, round(min(height, width) * self.crop / window))

    def epoch(self, samples_seen: int) -> float:
        """Passes over the rainy images after ``samples_seen`` samples."""
        return samples_seen / len(self.rainy)

    def preview(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Fixed centre crops of the first ``count`` rainy and clean images (for sample grids)."""
        rainy = [self._centre(self.rainy, i % len(self.rainy)) for i in range(count)]
        clean = [self._centre(self.clean, i % len(self.clean)) for i in range(count)]
        return torch.stack(rainy), torch.stack(clean)

    def _crop(
        self, paths: tuple[Path, ...], index: int, g: int, kind: int
    ) -> tuple[np.ndarray, int]:
        """A random crop of image ``index`` and the short side of the image it came from."""
        image = self._image(paths, index)
        height, width = image.shape[:2]
        rng = np.random.default_rng([self.seed, _RAINY_CROP + kind, g])
        top = int(rng.integers(0, height - self.crop + 1))
        left = int(rng.integers(0, width - self.crop + 1))
        return image[top : top + self.crop, left : left + self.crop], min(height, width)

    def _centre(self, paths: tuple[Path, ...], index: int) -> torch.Tensor:
        image = self._image(paths, index)
        top = (image.shape[0] - self.crop) // 2
        left = (image.shape[1] - self.crop) // 2
        return _chw(image[top : top + self.crop, left : left + self.crop])

    def _image(self, paths: tuple[Path, ...], index: int) -> np.ndarray:
        for offset in range(len(paths)):
            path = paths[(index + offset) % len(paths)]
            if self._cache is not None:
                image = self._cache.get(path)
            else:
                image = self._try_decode(path)
            if image is not None:
                return fit_to_crop(image, self.crop)
        raise DerainError(f"{paths[0].parent}: none of the {len(paths)} images can be decoded")

    def _try_decode(self, path: Path) -> np.ndarray | None:
        try:
            return decode(path)
        except (DerainError, OSError, ValueError, SyntaxError) as exc:
            if path not in self._warned:
                self._warned.add(path)
                warnings.warn(f"{path}: skipped, cannot decode ({exc})", stacklevel=2)
            return None


def _dry(seed: int, g: int, fraction: float) -> bool:
    """Whether synthetic pair ``g`` gets no rain: a draw of its own stream, so the rain of the
    other pairs is what it would be without dry ones."""
    return bool(np.random.default_rng([seed, _DRY, g]).random() < fraction)


def _order(seed: int, stream: int, count: int, g: int) -> int:
    epoch, position = divmod(g, count)
    return int(_permutation(seed, stream, count, epoch)[position])


@functools.lru_cache(maxsize=8)
def _permutation(seed: int, stream: int, count: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, stream, epoch]).permutation(count)


class StepSampler(Sampler[int]):
    """This rank's sample counters for steps ``start..stop-1`` of a global batch.

    Step ``s`` covers counters ``s*B .. s*B+B-1``; rank ``r`` of ``W`` takes the contiguous slice
    ``r*B/W .. (r+1)*B/W-1``, so W ranks together see exactly the single-process batch.
    """

    def __init__(self, *, start: int, stop: int, global_batch: int, rank: int, world: int) -> None:
        if global_batch % world:
            raise UsageError(f"batch size {global_batch} is not divisible by {world} ranks")
        self.start, self.stop = start, stop
        self.global_batch = global_batch
        self.local_batch = global_batch // world
        self.rank = rank

    def __iter__(self) -> Iterator[int]:
        for step in range(self.start, self.stop):
            first = step * self.global_batch + self.rank * self.local_batch
            yield from range(first, first + self.local_batch)

    def __len__(self) -> int:
        return max(0, self.stop - self.start) * self.local_batch


def _chw(rgb: np.ndarray) -> torch.Tensor:
    """``H x W x 3`` float [0, 1] or uint8 -> ``3 x H x W`` float32 in [-1, 1] (one crop)."""
    return to_model_range(rgb)[0]
