"""The config a training run uses, from every source that may set a key.

A new run: defaults < the ``train.init`` weights' architecture < a config file < the changes
(``--set KEY=VALUE``, then the explicit options, under the CLI). Resuming: the checkpoint's
config is the base, and only run-length and runtime settings may change
(:func:`~derain_cli.train.setup.check_resume_config`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from derain_cli.config import NLCLConfig
from derain_cli.errors import UsageError, setting


def resolve_config(
    *,
    out: Path | None,
    resume: bool,
    config_file: Path | None,
    changes: Mapping[str, Any],
    note: Callable[[str], None] = lambda text: None,
) -> NLCLConfig:
    """The checked config of the run in ``out`` (new, or resumed from its checkpoint).

    ``changes`` maps config keys to values; ``note`` hears that a resume found no checkpoint yet
    and starts a new run.
    """

    def resolved(base: NLCLConfig) -> NLCLConfig:
        return base.with_overrides(changes, source="command line") if changes else base

    saved = _saved_config(out, resume, note)
    if saved is None:
        return _resolve_new(config_file, changes, resolved)
    from derain_cli.train.setup import check_resume_config

    # The checkpoint's generators stand in for its init weights, which are not read again.
    base = _architecture_base(saved) if saved.train.init else NLCLConfig()
    if config_file:
        requested = resolved(NLCLConfig.load(config_file, base=base))
    else:
        requested = resolved(saved)
    check_resume_config(saved, requested)
    return requested


def _resolve_new(
    config_file: Path | None,
    changes: Mapping[str, Any],
    resolved: Callable[[NLCLConfig], NLCLConfig],
) -> NLCLConfig:
    """The config of a new run: defaults < the init weights' architecture < the config file <
    the changes; with init weights, checked against them before any work."""
    spec = changes.get("train.init")
    if spec is None:
        spec = NLCLConfig.load(config_file).train.init if config_file else ""
    if not spec:
        return resolved(NLCLConfig.load(config_file) if config_file else NLCLConfig())
    from derain_cli.train.init_weights import architecture_overrides, check_init, load_init

    init = load_init(str(spec))
    base = NLCLConfig().with_overrides(
        architecture_overrides(init), source=f"{setting('train.init')} {spec}"
    )
    requested = resolved(NLCLConfig.load(config_file, base=base) if config_file else base)
    check_init(requested, init)
    return requested


def _architecture_base(saved: NLCLConfig) -> NLCLConfig:
    """Defaults with a checkpoint's generators: the layer its init weights put under the config."""
    from derain_cli.train.init_weights import architecture_of

    return NLCLConfig().with_overrides(architecture_of(saved), source="the checkpoint")


def _saved_config(out: Path | None, resume: bool, note: Callable[[str], None]) -> NLCLConfig | None:
    """The config in ``out``'s checkpoint when resuming; refuse to overwrite a run otherwise."""
    from derain_cli.train.checkpoint import load_checkpoint
    from derain_cli.train.run_folder import RunPaths

    if out is None:
        return None
    checkpoint = RunPaths(out).checkpoint
    if not checkpoint.is_file():
        if resume:
            note(f"no checkpoint in {out} yet; starting a new run")
        return None
    if not resume:
        raise UsageError(
            f"{out}: already holds a training run; pass {setting('resume')} to continue it "
            f"or choose another {setting('out')}"
        )
    state = load_checkpoint(checkpoint)
    return NLCLConfig.from_dict(state["config"], source=str(checkpoint))
