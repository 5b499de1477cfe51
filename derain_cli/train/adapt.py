"""``derain adapt``: trained weights adapted to one folder of rainy photos, without labels.

One call of :func:`adapt`:

1. refuses what cannot work, before any work: an output that exists (unless ``overwrite``) or is
   not ``.safetensors``, a run folder that already holds a run, starting weights whose
   generators the recipe cannot train;
2. builds the config (:func:`adapt_config`): the recipe (``derain_cli/presets/adapt.toml``, or
   another file) over the starting weights' architecture, its steps scaled to the time budget
   (:func:`plan_steps`), then the caller's overrides, and ``train.init`` = the starting weights;
3. finds the clean set: the ``clean`` folders, else the rainy folder's ``clean/``, else the rainy
   photos' own least-rainy crops (:mod:`derain_cli.train.clean_crops`), written into the run
   folder (``clean-crops/``);
4. trains as ``derain train --init`` does (:func:`derain_cli.train.launch.run`), with the time
   left of the budget as ``train.time_limit_s``, and copies the exported G_B to ``output``
   atomically, with its ``.sha256`` sidecar.

Without ``run_dir`` the run lives in a temporary folder that is removed at the end (interrupted
or not); with it, everything stays: checkpoint, metrics, sample grids and the chosen crops.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from derain_cli.atomic import atomic_write_bytes
from derain_cli.config import NLCLConfig, TrainConfig
from derain_cli.data import (
    ImageFolders,
    check_crop,
    list_images,
    probe_image,
    rainy_folders,
    scan_folders,
)
from derain_cli.errors import UsageError, setting
from derain_cli.toml_text import toml_loads
from derain_cli.train.clean_crops import CleanCrops, choose_clean_crops
from derain_cli.train.init_weights import (
    InitWeights,
    architecture_overrides,
    check_init,
    load_init,
)
from derain_cli.train.launch import ProgressFactory, run
from derain_cli.train.loop import TrainResult
from derain_cli.train.messages import format_duration
from derain_cli.train.run_folder import RunPaths
from derain_cli.weights.checksums import write_sidecar

#: The recipe, shipped inside the package (``configs/adapt.toml`` links to it).
RECIPE = "presets/adapt.toml"
#: The least-rainy crops are written here, inside the run folder.
CROPS_FOLDER = "clean-crops"
#: Crops scored over all photos at most (per photo: this divided by the photos, 1 to PER_IMAGE).
CANDIDATES = 256
PER_IMAGE = 8
#: The least-rainy share of the scored crops that is kept as the clean set.
KEEP = 0.25

Note = Callable[[str], None]


@dataclass(frozen=True)
class AdaptResult:
    """What :func:`adapt` did. ``output`` is None when the run was interrupted (nothing written)."""

    output: Path | None
    sha256: str
    train: TrainResult
    init: InitWeights
    config: NLCLConfig
    folders: ImageFolders
    crops: CleanCrops | None
    run_dir: Path | None  # None: a temporary folder, removed


def load_recipe(base: NLCLConfig, path: Path | None = None) -> NLCLConfig:
    """The recipe (``path``, or the packaged one) over ``base`` (the starting architecture)."""
    if path is not None:
        return NLCLConfig.load(path, base=base)
    text = resources.files("derain_cli").joinpath(RECIPE).read_text(encoding="utf-8")
    return NLCLConfig.from_dict(toml_loads(text), source=f"derain_cli/{RECIPE}", base=base)


def plan_steps(train: TrainConfig, budget_s: float) -> int:
    """Steps for a time budget: the recipe's ``steps`` are meant for its own ``time_limit_s``,
    so they scale in proportion (unchanged when the recipe sets no limit)."""
    if train.time_limit_s <= 0:
        return train.steps
    return max(1, round(train.steps * budget_s / train.time_limit_s))


def adapt_config(
    init: InitWeights,
    *,
    recipe: Path | None = None,
    time_limit_s: float | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> NLCLConfig:
    """The run's config: recipe over the weights' architecture, steps for the budget
    (``time_limit_s``, else the recipe's), ``overrides``, ``train.init``; checked against
    the weights (:func:`~derain_cli.train.init_weights.check_init`)."""
    base = NLCLConfig().with_overrides(architecture_overrides(init), source=init.spec)
    config = load_recipe(base, recipe)
    budget = time_limit_s if time_limit_s is not None else config.train.time_limit_s
    changes: dict[str, Any] = {}
    if budget > 0:
        steps = plan_steps(config.train, budget)
        changes |= {"train.time_limit_s": budget, "train.steps": steps, "train.epochs": 0}
    changes |= dict(overrides or {})
    changes["train.init"] = init.spec
    config = config.with_overrides(changes, source="derain adapt")
    check_init(config, init)
    return config


def adapt(
    rainy: Path | str,
    output: Path | str,
    *,
    init: str = "default",
    clean: Sequence[Path | str] = (),
    time_limit_s: float | None = None,
    run_dir: Path | str | None = None,
    recipe: Path | str | None = None,
    overrides: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    progress: ProgressFactory | None = None,
    note: Note | None = None,
) -> AdaptResult:
    """Adapt ``init`` to the rainy photos in ``rainy`` and write G_B to ``output`` (see the
    module docstring); ``note`` receives what a user should read (the plan and its ETA at once,
    the clean set), ``progress`` the training's own reports."""
    say: Note = note or (lambda text: None)
    started = time.monotonic()
    rainy, output = Path(rainy), Path(output)
    _check_output(output, overwrite)
    if run_dir is not None:
        _check_run_dir(Path(run_dir), rainy)
    weights = load_init(init)
    config = adapt_config(
        weights,
        recipe=Path(recipe) if recipe is not None else None,
        time_limit_s=time_limit_s,
        overrides=overrides,
    )
    root = Path(run_dir) if run_dir is not None else Path(tempfile.mkdtemp(prefix="derain-adapt-"))
    try:
        crops_folder = root / CROPS_FOLDER
        clean_dirs = [Path(folder) for folder in clean] or _clean_subfolder(rainy)
        rainy_dirs = rainy_folders([rainy])
        photos = _rainy_photos(rainy_dirs, clean_dirs, config.train.batch_size)
        # the crop against the rainy photos (the clean set may not exist yet), before any work
        listed = ImageFolders(rainy_dirs, tuple(clean_dirs), tuple(photos), ())
        upscaled = check_crop(listed, config.train.crop)
        say(_plan_note(weights, config, rainy, len(photos), bool(clean_dirs), started))
        if upscaled is not None:
            say(f"note: {upscaled}")
        crops = None
        if not clean_dirs:
            crops = _least_rainy(photos, weights, config, crops_folder)
            say(_crops_note(crops))
            clean_dirs = [crops.folder]
        folders = scan_folders(rainy, clean_dirs, min_rainy=config.train.batch_size)
        budget = config.train.time_limit_s
        if budget > 0:  # the crops took some of it
            left = max(1.0, budget - (time.monotonic() - started))
            config = config.with_overrides({"train.time_limit_s": round(left, 1)})
        result = run(config, folders, root, resume=False, progress=progress)
        digest = ""
        written: Path | None = None
        if not result.interrupted:
            digest = _publish(RunPaths(root).weights, output)
            written = output
        return AdaptResult(
            output=written, sha256=digest, train=result, init=weights, config=config,
            folders=folders, crops=crops, run_dir=Path(run_dir) if run_dir is not None else None,
        )  # fmt: skip
    finally:
        if run_dir is None:
            shutil.rmtree(root, ignore_errors=True)


def _check_output(output: Path, overwrite: bool) -> None:
    if output.suffix.lower() != ".safetensors":
        raise UsageError(
            f"{setting('output')} {output}: the adapted weights are a .safetensors file "
            "(what derain --weights takes)"
        )
    if output.is_dir():
        raise UsageError(f"{setting('output')} {output}: is a folder")
    if output.exists() and not overwrite:
        raise UsageError(f"{output}: exists (use {setting('overwrite', True)} to replace it)")


def _check_run_dir(root: Path, rainy: Path) -> None:
    if RunPaths(root).checkpoint.is_file():
        raise UsageError(
            f"{setting('run_dir')} {root}: already holds a training run; choose another folder "
            f"(continue that one with derain train --resume)"
        )
    if rainy.is_dir() and root.resolve().is_relative_to(rainy.resolve()):
        raise UsageError(
            f"{setting('run_dir')} {root}: inside the rainy folder {rainy}; its sample grids "
            "and crops would be taken for rainy photos next time"
        )


def _clean_subfolder(rainy: Path) -> list[Path]:
    """Without ``--clean``: the rainy folder's ``clean/`` (as ``derain train``), else none."""
    return [rainy / "clean"] if (rainy / "clean").is_dir() else []


def _rainy_photos(rainy_dirs: Sequence[Path], clean_dirs: Sequence[Path], batch: int) -> list[Path]:
    """The readable rainy photos, as ``derain train`` lists them (it warns about each unreadable
    one); refused, before any work, when fewer than a batch."""
    found = [p for d in rainy_dirs for p in list_images(d, exclude=clean_dirs)]
    readable = [p for p in found if probe_image(p) is None]
    if len(readable) < batch:
        where = ", ".join(str(d) for d in rainy_dirs)
        raise UsageError(
            f"{where}: {len(readable)} readable rainy image(s), fewer than the batch size "
            f"{batch}; add images or lower {setting('train.batch_size')}"
        )
    return readable


def _least_rainy(
    photos: Sequence[Path], weights: InitWeights, config: NLCLConfig, folder: Path
) -> CleanCrops:
    """The least-rainy crops of ``photos`` by the starting G_B, at twice the training crop (room
    for ``train.clean_zoom_max``), on the training device."""
    from derain_cli import runtime

    if len(photos) > CANDIDATES:  # one crop each of CANDIDATES photos spread over the folder
        step = len(photos) / CANDIDATES
        photos = [photos[int(i * step)] for i in range(CANDIDATES)]
    per_image = max(1, min(PER_IMAGE, CANDIDATES // len(photos)))
    device = runtime.resolve_device(config.train.device, training=True)
    side = round(config.train.crop * max(1.0, config.train.clean_zoom_max))
    return choose_clean_crops(
        photos, weights.background.module, folder, side=side, per_image=per_image, keep=KEEP,
        seed=config.train.seed, device=device,
    )  # fmt: skip


def _publish(source: Path, output: Path) -> str:
    """Copy the exported G_B to ``output`` atomically, with its sidecar; returns its sha256."""
    data = source.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if output.resolve() != source.resolve():
        output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(output, data)
        write_sidecar(output, digest)
    return digest


def _plan_note(
    weights: InitWeights,
    config: NLCLConfig,
    rainy: Path,
    photos: int,
    has_clean: bool,
    started: float,
) -> str:
    """The plan and when it ends, at once: before the clean crops and the first step."""
    tc = config.train
    source = weights.background.source
    start = weights.spec if source == weights.spec else f"{weights.spec} ({source})"
    clean = "" if has_clean else "; no clean photos: their least-rainy crops stand in"
    text = (
        f"adapting {start} to {photos} photos in {rainy}{clean}; {tc.steps} steps, batch "
        f"{tc.batch_size} x {tc.crop} px"
    )
    if tc.time_limit_s <= 0:
        return text + " (the time a step takes is shown after the first two)"
    end = time.localtime(time.time() + tc.time_limit_s - (time.monotonic() - started))
    return (
        text + f"; about {format_duration(tc.time_limit_s)}, done by about "
        f"{time.strftime('%H:%M', end)} (the time limit; a faster machine ends sooner)"
    )


def _crops_note(crops: CleanCrops) -> str:
    return (
        f"kept the {len(crops.kept)} least-rainy of {crops.candidates} crops as the clean set "
        f"(rain score <= {crops.threshold:.4f}): {crops.folder}"
    )
