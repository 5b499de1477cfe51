"""Start a training run from trained weights (``train.init``, ``derain train --init SPEC``).

G_B starts from SPEC's weights, and G_R from SPEC's rain partner where there is one
(:func:`derain_cli.weights.loading.rain_weights_beside`: the registered ``NAME-rain`` entry, or the
``G_R`` file beside a ``G_B`` file); the discriminator, the projection heads and the momentum
encoder start fresh, seeded as in any run. SPEC is anything ``derain --weights`` takes, loaded by
the same code (:func:`derain_cli.weights.loading.load_weights`: safetensors, or ``torch.load`` with
``weights_only=True``; never code from the file).

Where the architecture comes from: :func:`architecture_overrides` gives the four ``model`` keys
that describe SPEC's generators. ``derain train`` applies them as a layer just above the defaults
(defaults < SPEC's architecture < ``--config`` < ``--set`` < options), so a config that leaves the
generators out takes SPEC's, and one that names others is refused before any work
(:func:`check_init`, one line naming each difference). Without a rain partner, G_R gets G_B's
architecture and starts fresh (every shipped recipe trains the two with one architecture).

What a run started from is recorded (:func:`origin`): ``train.init`` in its config, and SPEC's
resolved source and sha256 in its checkpoint, in the start (or resume) event of its
``metrics.jsonl`` and in the ``derain.init`` metadata of the weights it exports. A resumed run takes
them from its checkpoint and never reads SPEC again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from derain_cli.config import NLCLConfig
from derain_cli.errors import UsageError, WeightsError, setting
from derain_cli.weights.files import LAYER_RAIN, LoadedWeights
from derain_cli.weights.loading import load_pair

#: The model keys that describe the generators (what --init decides).
ARCHITECTURE_KEYS = (
    "model.generator",
    "model.generator_hparams",
    "model.rain_generator",
    "model.rain_hparams",
)


@dataclass(frozen=True)
class InitWeights:
    """SPEC's G_B and, when it has one, its rain partner G_R (loaded, on the CPU)."""

    spec: str
    background: LoadedWeights
    rain: LoadedWeights | None


def load_init(spec: str) -> InitWeights:
    """Load SPEC's G_B (refusing a G_R) and its rain partner, if any."""
    background, rain = load_pair(spec)
    if rain is not None and rain.layer not in ("", LAYER_RAIN):
        raise WeightsError(f"{rain.source}: found as {spec}'s rain partner but holds {rain.layer}")
    return InitWeights(spec=spec, background=background, rain=rain)


def full_hparams(arch: str, hparams: dict[str, Any]) -> dict[str, Any]:
    """``hparams`` with the architecture's defaults filled in (what the network is built with)."""
    from derain_cli.nets.registry import ARCHITECTURES

    known = ARCHITECTURES.get(arch)
    return {**(known.defaults if known is not None else {}), **hparams}


def architecture_overrides(init: InitWeights) -> dict[str, Any]:
    """The ``model`` keys of SPEC's generators (G_R: the partner's, else G_B's), as overrides."""
    background = init.background
    rain = init.rain or background
    return {
        "model.generator": background.arch,
        "model.generator_hparams": full_hparams(background.arch, background.hparams),
        "model.rain_generator": rain.arch,
        "model.rain_hparams": full_hparams(rain.arch, rain.hparams),
    }


def architecture_of(config: NLCLConfig) -> dict[str, Any]:
    """The same four keys of a config (a checkpoint's: what its ``--init`` decided)."""
    mc = config.model
    return {
        "model.generator": mc.generator,
        "model.generator_hparams": dict(mc.generator_hparams),
        "model.rain_generator": mc.rain_generator,
        "model.rain_hparams": dict(mc.rain_hparams),
    }


def check_init(config: NLCLConfig, init: InitWeights) -> None:
    """Refuse a config whose generators are not SPEC's (UsageError, every difference named)."""
    mc = config.model
    g_b_keys, g_r_keys = ARCHITECTURE_KEYS[:2], ARCHITECTURE_KEYS[2:]
    differences = _differences(g_b_keys, mc.generator, mc.generator_hparams, init.background)
    if init.rain is not None:
        differences += _differences(g_r_keys, mc.rain_generator, mc.rain_hparams, init.rain)
    if differences:
        raise UsageError(
            f"{setting('train.init')} {init.spec}: the config's generators differ from the "
            f"weights: {'; '.join(differences)}. Leave {', '.join(ARCHITECTURE_KEYS)} out of "
            "the config to take them from the weights"
        )
    _check_location_layers(config, init.background.module)


def _differences(
    keys: tuple[str, str], arch: str, hparams: dict[str, Any], loaded: LoadedWeights
) -> list[str]:
    """``keys``: the config keys of this generator's architecture and hyper-parameters."""
    arch_key, hparams_key = keys
    if arch != loaded.arch:
        return [f"{arch_key} is {arch!r} in the config, {loaded.arch!r} in {loaded.source}"]
    asked, have = full_hparams(arch, hparams), full_hparams(loaded.arch, loaded.hparams)
    return [
        f"{hparams_key}.{key} is {asked.get(key)!r} in the config, {have.get(key)!r} in "
        f"{loaded.source}"
        for key in sorted(asked.keys() | have.keys())
        if asked.get(key) != have.get(key)
    ]


def _check_location_layers(config: NLCLConfig, g_b: nn.Module) -> None:
    """The location contrast's G_B layers must exist in SPEC's G_B (its depth may differ)."""
    layers = config.losses.location_g_layers
    if not config.losses.use_location_contrast:
        return
    from derain_cli.losses.location_contrast import generator_channels

    try:
        generator_channels(g_b, layers)
    except ValueError as exc:
        raise UsageError(
            f"losses.location_g_layers = {list(layers)} do not fit the {setting('train.init')} "
            f"generator ({exc}); choose layers it has"
        ) from None


def origin(init: InitWeights) -> dict[str, str]:
    """What a run started from: SPEC as given, the files it resolved to and their sha256."""
    record = {
        "spec": init.spec,
        "source": init.background.source,
        "sha256": init.background.sha256,
    }
    if init.rain is not None:
        record |= {"rain_source": init.rain.source, "rain_sha256": init.rain.sha256}
    return record


def start_from(objective: nn.Module, init: InitWeights) -> None:
    """Copy SPEC's G_B (and G_R) into the objective's generators; nothing else changes."""
    for name, loaded in (("g_b", init.background), ("g_r", init.rain)):
        if loaded is None:
            continue
        module = getattr(objective, name)
        if not isinstance(module, nn.Module):
            raise TypeError(f"the objective has no {name}")
        module.load_state_dict(loaded.module.state_dict())
