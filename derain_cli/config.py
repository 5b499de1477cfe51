"""Typed, frozen configuration for every part of derain (one place for every hyper-parameter).

Sections: model (generators), sampler (non-local search), losses (the paper's terms and weights),
training (optimisation, data, runtime). Loaded from TOML (``--config``), printable, and saved in
every run folder and checkpoint. Defaults follow the paper; where the
authors' released code differs, both are options and ``docs/training.md`` says which is default.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

from derain_cli.errors import UsageError, setting
from derain_cli.toml_text import dumps_toml, toml_loads


def _require(*checks: tuple[bool, str]) -> None:
    """Raise the first failing check's message as a UsageError (config validation)."""
    for ok, message in checks:
        if not ok:
            raise UsageError(message)


# --- method (model, sampler, losses) ---------------------------------------------------------

SamplingStrategy = Literal["random", "neighbour", "nonlocal"]
LayerContrastForm = Literal["infonce", "supcon"]
RainL1Target = Literal["r", "o_minus_b"]
LowfreqSpace = Literal["rgb", "chroma"]
SyntheticStyle = Literal[
    "drizzle", "streak", "heavy", "curtain", "storm", "photographic", "bank", "mixed"
]
SyntheticLoss = Literal["l1", "relative_l1"]


@dataclass(frozen=True)
class ModelConfig:
    """The trainable networks of NLCL (paper Sec. 4.1; ``docs/method.md``).

    Both generators come from the architecture registry (``derain_cli.nets.registry``); the
    discriminator is a PatchGAN (pix2pix ``n_layers=3``, 70x70 receptive field) whose encoder also
    feeds the layer contrast; every projection head is a 2-layer MLP with ``head_units`` units.
    """

    generator: str = "nlcl-resnet"  # G_B, the network exported for inference
    generator_hparams: dict[str, Any] = field(default_factory=dict)
    rain_generator: str = "nlcl-resnet"  # G_R (only used in training)
    rain_hparams: dict[str, Any] = field(default_factory=dict)
    d_channels: int = 64  # ndf
    d_layers: int = 3  # strided conv layers of the PatchGAN
    d_norm: Literal["instance", "none"] = "instance"
    head_units: int = 256

    def __post_init__(self) -> None:
        _require(
            (self.d_channels >= 1, "model.d_channels must be >= 1"),
            (self.d_layers >= 1, "model.d_layers must be >= 1"),
            (self.head_units >= 1, "model.head_units must be >= 1"),
        )


@dataclass(frozen=True)
class SamplerConfig:
    """Patch grid, block matching and the sampling strategy of each contrast (paper Sec. 3.2).

    ``"nonlocal"`` = block matching in image space (Eq. 7): nearest patches for positives (and
    for the neighbours of rain anchors), FARTHEST patches for the location contrast's negatives
    (reverse non-local sampling). ``"neighbour"`` = spatially adjacent grid positions, ``"random"``
    = uniform. The paper's Table 2 ablation (layer contrast) is a change of ``layer_positives``
    and ``layer_negatives``; Table 5's reverse non-local vs random negatives is
    ``location_negatives``.
    """

    patch: int = 16  # patch side in pixels (the authors' 16x16 patches)
    stride: int = 8  # grid step between patches, in pixels
    window: int | None = None  # search window in grid positions; None = whole image
    exclude_overlap: bool = True  # nearest matches may not overlap the query (really non-local)
    chunk_size: int | None = None  # queries per block-matching chunk; None = from memory_mb
    memory_mb: int = 256  # budget for one chunk's distance matrix
    layer_positives: SamplingStrategy = "nonlocal"  # B patches pulled together (Eq. 5)
    layer_negatives: SamplingStrategy = "nonlocal"  # R patches: anchors + their matches
    location_negatives: SamplingStrategy = "nonlocal"  # nonlocal = REVERSE (farthest), Eq. 6

    @property
    def memory_budget(self) -> int:
        """``memory_mb`` in bytes: the budget one block-matching chunk may use."""
        return self.memory_mb * 2**20

    def __post_init__(self) -> None:
        _require(
            (self.patch >= 1, "sampler.patch must be >= 1"),
            (self.stride >= 1, "sampler.stride must be >= 1"),
            (self.window is None or self.window >= 2, "sampler.window must be >= 2"),
            (self.chunk_size is None or self.chunk_size >= 1, "sampler.chunk_size must be >= 1"),
            (self.memory_mb >= 1, "sampler.memory_mb must be >= 1"),
        )


@dataclass(frozen=True)
class LossConfig:
    """Every term of Eq. 2-6, its weight, and a switch for the ablations (paper Table 6).

    Plus two terms that are not in the paper, off by default: the low-frequency consistency
    ``L1(avgpool_k(B), avgpool_k(O))`` (``use_lowfreq``; ``losses/fidelity.py`` says why) and
    synthetic supervision ``L1(G_B(render(C)), C)`` on the unpaired clean crops C
    (``use_synthetic``; ``losses/supervision.py``).

    Weights (paper Sec. 4.1): lambda (``rain_l1_weight``) = 0.1, delta (``adv_weight``) = mu
    (``layer_weight``) = sigma (``location_weight``) = 1. Temperatures default to 0.07, the
    authors' code's value, not the paper's 0.77 (``docs/method.md`` says why). The MoCo momentum
    encoder (paper: 0.99; absent from the authors' code) is on by default.
    """

    use_adv: bool = True
    use_consistency: bool = True
    use_rain_l1: bool = True
    use_layer_contrast: bool = True
    use_location_contrast: bool = True
    adv_weight: float = 1.0  # delta
    consistency_weight: float = 1.0
    rain_l1_weight: float = 0.1  # lambda
    rain_l1_target: RainL1Target = "r"  # paper ||R||_1; authors' code L1(O, B)
    layer_weight: float = 1.0  # mu
    location_weight: float = 1.0  # sigma
    # layer contrast (Eq. 5)
    layer_form: LayerContrastForm = "infonce"  # "supcon": the authors' supervised-contrastive form
    layer_d_layers: tuple[int, ...] = (1, 2, 3)  # PatchGAN blocks whose features are contrasted
    layer_queries: int = 16  # background anchors per image
    layer_positives: int = 8  # N_B: matches of each anchor
    layer_negatives: int = 256  # N_R: rain patches per image
    layer_temperature: float = 0.07
    momentum: bool = True  # MoCo key encoder (EMA of the D encoder and the layer heads)
    momentum_decay: float = 0.99
    # location contrast (Eq. 6)
    location_g_layers: tuple[int, ...] = (0, 2, 4, 8, 12)  # G_B layers (authors' nce_layers)
    location_queries: int = 256  # query locations per image
    location_negatives: int = 256  # N
    location_temperature: float = 0.07
    location_identity: bool = False  # authors: 0.5 * (NCE(O, B) + NCE(clean, G_B(clean)))
    # low-frequency consistency (not in the paper; losses/fidelity.py)
    use_lowfreq: bool = False
    lowfreq_weight: float = 2.0
    lowfreq_pool: int = 8  # k: side of the averaged blocks, in pixels
    lowfreq_space: LowfreqSpace = "rgb"  # "chroma": colour only, brightness free (veil removal)
    # synthetic supervision (not in the paper; losses/supervision.py): rain rendered over the
    # unpaired clean crops (derain_cli/synth), G_B asked to return the clean crop
    use_synthetic: bool = False
    synthetic_weight: float = 1.0
    synthetic_style: SyntheticStyle = "mixed"  # the renderer's style (derain synth --style)
    synthetic_scale: float = 1.0  # streak sizes x this (1.0: sized for the source photo)
    # a folder of streak images on black (derain train --streaks): style "bank" draws from it,
    # and so does "mixed" when it is set (derain_cli/synth/bank.py); "" = none
    synthetic_streaks: str = ""
    # pairs that differ by rain alone: never darker than the clean crop, the same camera noise and
    # JPEG on both (synth.render_pair); what an output = "subtract_rain" G_B can learn exactly
    synthetic_rain_only: bool = False
    # this share of the synthetic pairs gets no rain at all (target = input, through the same
    # camera): teaches G_B to leave rain-free texture alone
    synthetic_clean_fraction: float = 0.0
    # "relative_l1": each crop's L1 divided by its rain's (losses/supervision.py)
    synthetic_loss: SyntheticLoss = "l1"
    # w > 0 adds w * (1 - SSIM(G_B(S), C)): keeps the texture that L1 lets go with the rain
    synthetic_ssim_weight: float = 0.0
    # the first N steps train the synthetic term alone (the NLCL terms and D start at step N): the
    # supervised part is about 4x cheaper a step on a CPU and does the early work
    synthetic_only_steps: int = 0

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str]] = [
            (self.layer_queries >= 1, "losses.layer_queries must be >= 1"),
            (self.layer_positives >= 1, "losses.layer_positives must be >= 1"),
            (self.layer_negatives >= 1, "losses.layer_negatives must be >= 1"),
            (self.location_queries >= 1, "losses.location_queries must be >= 1"),
            (self.location_negatives >= 1, "losses.location_negatives must be >= 1"),
            (self.layer_temperature > 0, "losses.layer_temperature must be > 0"),
            (self.location_temperature > 0, "losses.location_temperature must be > 0"),
            (0 <= self.momentum_decay < 1, "losses.momentum_decay must be in [0, 1)"),
            (len(self.layer_d_layers) >= 1, "losses.layer_d_layers must not be empty"),
            (len(self.location_g_layers) >= 1, "losses.location_g_layers must not be empty"),
            (self.lowfreq_pool >= 1, "losses.lowfreq_pool must be >= 1"),
            (self.synthetic_scale > 0, "losses.synthetic_scale must be > 0"),
            (
                0 <= self.synthetic_clean_fraction < 1,
                "losses.synthetic_clean_fraction must be in [0, 1)",
            ),
            (self.synthetic_only_steps >= 0, "losses.synthetic_only_steps must be >= 0"),
            (self.synthetic_ssim_weight >= 0, "losses.synthetic_ssim_weight < 0"),
            (
                self.synthetic_style != "bank" or bool(self.synthetic_streaks),
                'losses.synthetic_style = "bank" needs a folder of streak images '
                "(losses.synthetic_streaks)",
            ),
            (
                self.synthetic_only_steps == 0 or self.use_synthetic,
                "losses.synthetic_only_steps needs losses.use_synthetic = true",
            ),
        ]
        names = ("adv", "consistency", "rain_l1", "layer", "location", "lowfreq", "synthetic")
        for name in names:
            checks.append((getattr(self, f"{name}_weight") >= 0, f"losses.{name}_weight < 0"))
        _require(*checks)


# --- training (derain train) -----------------------------------------------------------------

Precision = Literal["auto", "fp32", "bf16", "fp16"]
LRSchedule = Literal["constant", "linear"]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, data and runtime settings of ``derain train``.

    Paper (Sec. 4): Adam, lr 1e-4, batch 4, random 256x256 crops, no augmentation. The paper does
    not give Adam's betas or the number of iterations: betas are the authors' code's (CUT's)
    (0.5, 0.999); ``steps`` is ours. ``batch_size`` is the GLOBAL batch, split evenly over the
    ``gpus`` ranks, so a run means the same thing on 1 or 8 GPUs.
    """

    steps: int = 20_000  # optimiser steps (one D step + one G step each)
    epochs: int = 0  # > 0 overrides steps: one epoch = one pass over the rainy images
    batch_size: int = 4
    crop: int = 256
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)
    lr_schedule: LRSchedule = "constant"  # "linear": decay to 0 from lr_decay_start * steps
    lr_decay_start: float = 0.5
    warmup_steps: int = 0
    grad_clip: float = 0.0  # max global grad norm per optimiser; 0 = off
    seed: int = 0
    # weights G_B (and G_R, where they have a rain partner) start from: a registered name, a
    # .safetensors/.pth file or hf://... (derain train --init; train/init_weights.py); "" = random.
    # The discriminator and the heads always start fresh. Not resumable: the checkpoint has them.
    init: str = ""
    precision: Precision = "auto"  # auto = bf16 autocast on CUDA, fp32 on CPU
    channels_last: bool = True  # CUDA only
    compile: bool = False  # torch.compile the generators and the discriminator
    ema_decay: float = 0.999  # EMA of G_B (with 1+t/10+t warm-up); 0 = no EMA
    export_ema: bool = True  # G_B.safetensors holds the EMA weights
    log_every: int = 10
    sample_every: int = 500
    checkpoint_every: int = 500
    # > 0: stop after this many seconds of wall time (from the start of the run or the resume),
    # save a checkpoint and export the weights; continue later with --resume.
    time_limit_s: float = 0.0
    compact_checkpoint: bool = False  # Adam moments + MoCo keys in bfloat16 (61.7 -> 39.6 MiB)
    # the clean crops (the discriminator's real examples, under synthetic rain too): cut from a
    # window up to this many times the crop and shrunk to it (1 = plain crops), mirrored at random
    clean_zoom_max: float = 1.0
    clean_flip: bool = False
    num_samples: int = 4  # rows of each sample grid
    num_workers: int = 4  # data-loading processes per rank
    cache_images: bool = False  # decode every image once into RAM (uint8)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    gpus: int = 1  # data-parallel ranks (processes)

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str]] = [
            (self.steps >= 1, "train.steps must be >= 1"),
            (self.epochs >= 0, "train.epochs must be >= 0"),
            (self.batch_size >= 1, "train.batch_size must be >= 1"),
            (self.lr > 0, "train.lr must be > 0"),
            (all(0 <= b < 1 for b in self.betas), "train.betas must be in [0, 1)"),
            (0 <= self.lr_decay_start <= 1, "train.lr_decay_start must be in [0, 1]"),
            (self.warmup_steps >= 0, "train.warmup_steps must be >= 0"),
            (self.grad_clip >= 0, "train.grad_clip must be >= 0"),
            (0 <= self.ema_decay < 1, "train.ema_decay must be in [0, 1)"),
            (self.log_every >= 1, "train.log_every must be >= 1"),
            (self.sample_every >= 0, "train.sample_every must be >= 0 (0 = off)"),
            (self.time_limit_s >= 0, "train.time_limit_s must be >= 0 (0: no limit)"),
            (self.checkpoint_every >= 1, "train.checkpoint_every must be >= 1"),
            (self.num_samples >= 1, "train.num_samples must be >= 1"),
            (self.clean_zoom_max >= 1, "train.clean_zoom_max must be >= 1 (1 = plain crops)"),
            (self.num_workers >= 0, "train.num_workers must be >= 0"),
            (self.gpus >= 1, f"{setting('train.gpus', self.gpus)}: must be >= 1"),
            (
                self.gpus < 1 or self.batch_size % self.gpus == 0,
                f"{setting('train.batch_size', self.batch_size)}: must be divisible by "
                f"{setting('train.gpus', self.gpus)}",
            ),
        ]
        _require(*checks)


#: No crop is smaller than this, whatever the sampler and the losses.
MIN_CROP = 16


def smallest_crop(sampler: SamplerConfig, losses: LossConfig) -> tuple[int, str]:
    """The smallest ``train.crop`` these settings can train on, and why it is that.

    A crop holds at least one sampler patch, and, with the layer contrast, a patch grid that
    leaves every query ``losses.layer_positives`` candidates (else every step would fail deep
    in the sampler). The one rule behind every crop message (:func:`crop_message`).
    """
    start = max(MIN_CROP, sampler.patch)
    k = losses.layer_positives
    if losses.use_layer_contrast and _worst_case_candidates(sampler, start) < k:
        for crop in range(start, start + 64 * sampler.patch):
            if _worst_case_candidates(sampler, crop) >= k:
                return crop, (
                    f"the layer contrast needs {k} candidate patches per query on the "
                    f"{sampler.patch}-px patch grid, stride {sampler.stride}"
                )
    if start == sampler.patch and start > MIN_CROP:
        return start, f"one {sampler.patch}-px sampler patch"
    return start, "the smallest crop"


def crop_message(crop: int, smallest: int, why: str, largest: int | None = None) -> str:
    """How every refusal of ``train.crop`` reads: the allowed range, and why.

    ``largest``: the largest short side among the rainy images, where they are known (a crop
    above it would upscale every image).
    """
    name = setting("train.crop", crop)
    if largest is None:
        return f"{name}: crops must be at least {smallest} px ({why})"
    if largest < smallest:
        return (
            f"{name}: crops must be at least {smallest} px ({why}), but no rainy image is that "
            f"large (the largest short side is {largest} px); use larger images"
        )
    return (
        f"{name}: crops must be between {smallest} px ({why}) and {largest} px (the largest "
        "short side of the rainy images: a larger crop would upscale every one)"
    )


def _worst_case_candidates(sampler: SamplerConfig, crop: int) -> int:
    """Fewest block-matching candidates any query has on a ``crop x crop`` image (an interior
    query: the query itself and, with ``exclude_overlap``, every overlapping patch are excluded;
    a search window bounds the rest)."""
    side = (crop - sampler.patch) // sampler.stride + 1
    if sampler.window is not None:
        side = min(side, sampler.window)
    reach = (sampler.patch - 1) // sampler.stride if sampler.exclude_overlap else 0
    excluded = min(side, 2 * reach + 1) ** 2
    return side * side - excluded


@dataclass(frozen=True)
class NLCLConfig:
    """Every hyper-parameter of a training run; saved in the run folder and every checkpoint."""

    model: ModelConfig = field(default_factory=lambda: ModelConfig())
    sampler: SamplerConfig = field(default_factory=lambda: SamplerConfig())
    losses: LossConfig = field(default_factory=lambda: LossConfig())
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        # Checks that need two sections: the crop must hold a patch grid large enough for the
        # layer contrast's k positives, else every training step would fail deep in the sampler.
        smallest, why = smallest_crop(self.sampler, self.losses)
        if self.train.crop < smallest:
            raise UsageError(crop_message(self.train.crop, smallest, why))

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict (tuples become lists), ready for JSON/TOML and ``torch.save``."""
        return _to_plain(self)

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, source: str = "config", base: NLCLConfig | None = None
    ) -> NLCLConfig:
        """Build from a (partial) nested dict; missing keys keep their defaults (or ``base``'s).

        With ``base``, each section of ``data`` replaces the keys it names in ``base`` and keeps
        the others (a key's value, a dict like ``model.generator_hparams`` too, is replaced
        whole). Unknown keys and wrong types raise :class:`UsageError` naming ``source`` and the
        key.
        """
        if base is not None and isinstance(data, Mapping):
            merged = base.to_dict()
            for section, table in data.items():
                if isinstance(table, Mapping) and isinstance(merged.get(section), dict):
                    merged[section] = {**merged[section], **table}
                else:
                    merged[section] = table
            data = merged
        return _build(cls, data, source, "")

    @classmethod
    def load(cls, path: Path | str, *, base: NLCLConfig | None = None) -> NLCLConfig:
        """Read a TOML (or JSON, or YAML when PyYAML is installed) file; keys it does not set
        keep their defaults, or ``base``'s values (see :meth:`from_dict`)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{path}: cannot read config ({exc.strerror or exc})") from None
        suffix = path.suffix.lower()
        try:
            if suffix in (".yaml", ".yml"):
                try:
                    import yaml  # type: ignore[import-untyped]
                except ImportError:
                    raise UsageError(
                        f"{path}: YAML configs need PyYAML (pip install pyyaml); or use TOML"
                    ) from None
                data = yaml.safe_load(text) or {}
            elif suffix == ".json":
                data = json.loads(text)
            else:
                data = toml_loads(text)
        except UsageError:
            raise
        except Exception as exc:  # the parsers' own errors carry line numbers
            raise UsageError(f"{path}: not a valid config file ({exc})") from None
        if not isinstance(data, dict):
            raise UsageError(f"{path}: a config file must hold tables (model, train, ...)")
        return cls.from_dict(data, source=str(path), base=base)

    def dumps_toml(self) -> str:
        """The config as TOML text that :meth:`load` reads back to an equal config."""
        return dumps_toml(self.to_dict())

    def with_overrides(
        self, overrides: Mapping[str, Any], *, source: str = "overrides"
    ) -> NLCLConfig:
        """Apply dotted overrides such as ``{"train.lr": 2e-4}`` on top of this config."""
        data = self.to_dict()
        for dotted, value in overrides.items():
            *parents, leaf = dotted.split(".")
            node: Any = data
            for part in parents:
                if not isinstance(node, dict) or part not in node:
                    raise UsageError(f"{source}: unknown config key {dotted!r}")
                node = node[part]
            if not isinstance(node, dict) or leaf not in node or not parents:
                raise UsageError(f"{source}: unknown config key {dotted!r}")
            node[leaf] = value
        return NLCLConfig.from_dict(data, source=source)


def _to_plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, tuple | list):
        return [_to_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _to_plain(v) for k, v in value.items()}
    return value


#: Keys that older configs (and the configs saved in older run folders) may hold; read and ignored.
RETIRED_KEYS = frozenset({"train.checkpoint_part_mb"})


def _build(cls: type, data: Mapping[str, Any], source: str, prefix: str) -> Any:
    if not isinstance(data, Mapping):
        raise UsageError(f"{source}: {prefix.rstrip('.') or 'config'} must be a table")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls) if f.init}
    data = {k: v for k, v in data.items() if prefix + k not in RETIRED_KEYS}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UsageError(f"{source}: unknown config key {prefix + unknown[0]!r}")
    kwargs = {k: _coerce(hints[k], v, source, prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, source: str, key: str) -> Any:
    """Check ``value`` against the annotation ``hint``; ints widen to float, lists to tuples."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)

    def bad() -> UsageError:
        return UsageError(f"{source}: {key} = {value!r} is not a valid {_hint_name(hint)}")

    if isinstance(hint, type) and is_dataclass(hint):
        return _build(hint, value, source, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, source, key)
            except UsageError:
                continue
        raise bad()
    if origin is Literal:
        if value in args:
            return value
        raise UsageError(f"{source}: {key} = {value!r}; expected one of {list(args)}")
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise bad()
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise bad()
            return tuple(_coerce(a, v, source, key) for a, v in zip(args, value, strict=True))
        item = args[0] if args else Any
        items = [_coerce(item, v, source, key) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise bad()
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad()
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise bad()
        return value
    return value


def _hint_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


# --- end of training section -----------------------------------------------------------------
