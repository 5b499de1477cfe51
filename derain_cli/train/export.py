"""A run's weights as files: ``G_B.safetensors`` (for ``derain``) and ``G_R.safetensors``.

:func:`export_weights` is what the training loop calls when a run ends or reaches its time
limit. :func:`export_run` does the same from a run folder's checkpoint alone, without training
(``derain weights export RUN_DIR``): for a run that was killed, or to export into another folder.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path

from torch import nn

from derain_cli.config import NLCLConfig
from derain_cli.errors import UsageError, setting

#: Metadata key of exported weights: what the run's G_B and G_R started from (JSON; see
#: ``train/init_weights.py``); absent for a run from random weights.
KEY_INIT = "derain.init"


def export_weights(
    background_path: Path,
    rain_path: Path,
    config: NLCLConfig,
    background: nn.Module,
    rain: nn.Module,
    *,
    step: int,
    world: int,
    ema: bool,
    origin: Mapping[str, str] | None = None,
) -> Path:
    """Write G_B (``background``, the EMA copy when ``ema``) and G_R, each with the whole training
    config in its metadata; returns ``background_path``. G_R is the live network (it has no EMA).
    ``origin``: what the run started from (``--init``), as ``derain.init`` (JSON).
    """
    from derain_cli.nets.registry import ARCHITECTURES
    from derain_cli.weights.files import save_weights

    common = {
        "derain.source": "derain train",
        "derain.trained_steps": str(step),
        "derain.world_size": str(world),
        "derain.train_config": json.dumps(config.to_dict(), sort_keys=True),
        "derain.created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if origin:
        common[KEY_INIT] = json.dumps(dict(origin), sort_keys=True)
    mc = config.model
    for path, net, arch, hparams, meta in (
        (rain_path, rain, mc.rain_generator, mc.rain_hparams,
         {"derain.layer": "rain", "derain.ema": "false"}),
        (background_path, background, mc.generator, mc.generator_hparams,
         {"derain.layer": "background", "derain.ema": "true" if ema else "false"}),
    ):  # fmt: skip
        full = {**ARCHITECTURES[arch].defaults, **hparams}
        # Parameters stay fp32 under autocast; save_weights copies them to contiguous CPU tensors.
        save_weights(path, net, arch=arch, hparams=full, metadata={**common, **meta})
    return background_path


def export_run(
    run_dir: Path | str,
    out_dir: Path | str | None = None,
    *,
    ema: bool | None = None,
    overwrite: bool = False,
) -> tuple[Path, Path, int]:
    """Export the weights held by ``run_dir``'s checkpoint into ``out_dir`` (default: the run).

    ``ema``: export G_B's moving average (the run's ``train.export_ema`` when None; refused when
    the run kept none). Existing files are replaced only with ``overwrite`` or when ``out_dir`` is
    the run itself (where training would write them too). Returns (G_B path, G_R path, step).
    """
    from derain_cli.train.checkpoint import load_checkpoint
    from derain_cli.train.run_folder import RunPaths
    from derain_cli.train.setup import build_objective

    paths = RunPaths(Path(run_dir))
    if not paths.checkpoint.is_file():
        raise UsageError(f"{run_dir}: no training checkpoint here ({paths.checkpoint.name})")
    state = load_checkpoint(paths.checkpoint)
    config = NLCLConfig.from_dict(state["config"], source=str(paths.checkpoint))
    objective = build_objective(config)
    objective.load_state_dict(state["models"])
    use_ema = config.train.export_ema if ema is None else ema
    background: nn.Module = objective.g_b
    if use_ema:
        if not state.get("ema"):
            if ema:
                raise UsageError(f"{run_dir}: this run kept no EMA of G_B (train.ema_decay = 0)")
            use_ema = False
        else:
            background.load_state_dict(state["ema"]["module"])
    target = Path(out_dir) if out_dir is not None else paths.root
    outputs = (target / paths.weights.name, target / paths.rain_weights.name)
    in_run = target.resolve() == paths.root.resolve()
    for path in outputs:
        if path.exists() and not (overwrite or in_run):
            raise UsageError(f"{path}: exists (use {setting('overwrite', True)})")
    target.mkdir(parents=True, exist_ok=True)
    step = int(state["step"])
    export_weights(
        outputs[0], outputs[1], config, background, objective.g_r,
        step=step, world=int(state.get("world_size", 1)), ema=use_ema,
        origin=state.get("init") or None,
    )  # fmt: skip
    return outputs[0], outputs[1], step
