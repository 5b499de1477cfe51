"""`derain train DATA`: train NLCL on unpaired rainy/clean folders (see docs/training.md).

Config precedence: defaults < the ``--init`` weights' architecture < ``--config FILE`` <
``--set KEY=VALUE`` < the explicit options (``--steps``, ``--batch-size``...). On ``--resume`` the
checkpoint's config is the base, and only run-length and runtime settings may change.
"""

from __future__ import annotations

import shlex
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from derain_cli.cli.common import err_console, fail, user_errors
from derain_cli.config import NLCLConfig, TrainConfig

#: Shown in --help; the values themselves live in the config (one place for every default).
_DEFAULTS = TrainConfig()


#: The terms a plain log line shows, by short name (every term is in the run's metrics.jsonl).
SHORT_TERMS = (
    ("g_total", "G"),
    ("d_total", "D"),
    ("g_adv", "adv"),
    ("g_consistency", "cons"),
    ("g_rain_l1", "sparse"),
    ("g_layer_contrast", "layer"),
    ("g_location_contrast", "loc"),
    ("g_lowfreq", "lowfreq"),
    ("g_synthetic", "syn"),
)

#: The ETA's speed comes from the last few log points, not the whole run: a run's phases differ in
#: speed (configs/cpu-default.toml's supervised-only steps are about four times faster than its
#: full steps), and a mean since the start promised too early an end once the slow phase began.
ETA_WINDOW = 5


class RichProgress:
    """Live display on a terminal (step, ETA, images/s, each loss); plain lines otherwise."""

    def __init__(self, command: str = "train") -> None:
        self.command = command  # notes read "derain COMMAND: ..."
        self.total = 0
        self.first = 0
        self.live: Any = None
        self.interactive = err_console.is_terminal
        self.marks: deque[tuple[int, float]] = deque(maxlen=ETA_WINDOW + 1)

    def start(self, step: int, total: int) -> None:
        self.first, self.total = step, total
        self.marks.clear()
        self.marks.append((step, time.monotonic()))
        if self.interactive:
            from rich.live import Live

            self.live = Live(
                self._render({"step": step}), console=err_console, refresh_per_second=4
            )
            self.live.start()

    def update(self, record: Mapping[str, Any]) -> None:
        self.marks.append((int(record.get("step", self.first)), time.monotonic()))
        if self.live is not None:
            self.live.update(self._render(record))
        else:
            err_console.print(self._line(record), markup=False, highlight=False)

    def note(self, text: str) -> None:
        err_console.print(f"derain {self.command}: {text}", markup=False, highlight=False)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def _eta(self, record: Mapping[str, Any]) -> str:
        """Time left at the speed of the last ``ETA_WINDOW`` log intervals."""
        step = int(record.get("step", self.first))
        if len(self.marks) < 2 or self.marks[-1][0] <= self.marks[0][0]:
            return "?"
        (old_step, old_time), (new_step, new_time) = self.marks[0], self.marks[-1]
        rate = (new_step - old_step) / max(new_time - old_time, 1e-9)
        seconds = int(max(self.total - step, 0) / rate)
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"

    def _line(self, record: Mapping[str, Any]) -> str:
        terms = "  ".join(f"{short} {record[k]:.4g}" for k, short in SHORT_TERMS if k in record)
        return (
            f"step {record.get('step')}/{self.total}  eta {self._eta(record)}  "
            f"{record.get('images_per_s', 0):.1f} img/s  lr {record.get('lr', 0):.1e}  {terms}"
        )

    def _render(self, record: Mapping[str, Any]) -> Any:
        from rich.table import Table

        table = Table.grid(padding=(0, 2))
        step = int(record.get("step", 0))
        width = 30
        filled = int(width * step / max(1, self.total))
        table.add_row(
            f"[bold]step[/] {step}/{self.total}",
            "[green]" + "#" * filled + "[/]" + "." * (width - filled),
            f"[bold]eta[/] {self._eta(record)}",
            f"{record.get('images_per_s', 0):.1f} img/s",
        )
        losses = [(k, v) for k, v in record.items() if k.startswith(("d_", "g_"))]
        for i in range(0, len(losses), 4):
            table.add_row(*(f"{k} {v:.4g}" for k, v in losses[i : i + 4]))
        return table


def command(
    ctx: typer.Context,
    data: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Folders of rainy images (or folders holding rainy/ and clean/), used together.",
            show_default=False,
        ),
    ] = None,
    clean: Annotated[
        list[Path] | None,
        typer.Option(
            "--clean",
            help="Unpaired clean photos; repeat for several folders (default: DATA/clean/).",
            show_default=False,
        ),
    ] = None,
    streaks: Annotated[
        Path | None,
        typer.Option(
            "--streaks",
            help="A folder of rain-streak images on black for synthetic supervision's 'bank' "
            "style (losses.synthetic_streaks).",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Run folder (default: runs/nlcl-YYYYmmdd-HHMMSS).", show_default=False
        ),
    ] = None,
    gpus: Annotated[
        int | None,
        typer.Option("--gpus", help=f"Data-parallel ranks (processes). Default: {_DEFAULTS.gpus}."),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option("--device", help=f"auto, cpu, cuda or cuda:N. Default: {_DEFAULTS.device}."),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option("--steps", help=f"Optimiser steps to reach. Default: {_DEFAULTS.steps}."),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option("--epochs", help="Passes over the rainy images.")
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            help=f"Global batch (split over ranks). Default: {_DEFAULTS.batch_size}.",
        ),
    ] = None,
    crop: Annotated[
        int | None,
        typer.Option("--crop", help=f"Random crop side in pixels. Default: {_DEFAULTS.crop}."),
    ] = None,
    init: Annotated[
        str | None,
        typer.Option(
            "--init",
            metavar="SPEC",
            help="Start G_B (and G_R, where the weights have a rain partner) from these weights: "
            "a registered name (default), a .safetensors/.pth file or hf://...; the discriminator "
            "and heads start fresh. The architecture is taken from them (train.init).",
            show_default=False,
        ),
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out.")] = False,
    time_limit: Annotated[
        str | None,
        typer.Option(
            "--time-limit",
            metavar="DURATION",
            help="Stop after this much wall time (2h, 90m, 1h30m, seconds), save a checkpoint and "
            "export the weights; continue with --resume. For Slurm and cloud time limits.",
            show_default=False,
        ),
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option("--config", help="TOML (or YAML) config file.", show_default=False),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override one config key, e.g. --set losses.adv_weight=0.5."),
    ] = None,
    print_config: Annotated[
        bool, typer.Option("--print-config", help="Print the resolved config as TOML and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Train NLCL and export G_B.safetensors into the run folder."""
    if ctx.args:
        raise fail(f"unknown option or extra argument: {ctx.args[0]}")
    if steps is not None and epochs is not None:
        raise fail("--steps and --epochs are exclusive")
    with user_errors(debug):
        limit_s = None
        if time_limit is not None:
            from derain_cli.durations import parse_duration
            from derain_cli.errors import UsageError

            try:
                limit_s = parse_duration(time_limit)
            except UsageError as exc:
                raise UsageError(f"--time-limit: {exc}") from None
        _run(
            data=data,
            clean=clean,
            out=out,
            resume=resume,
            config_file=config_file,
            print_config=print_config,
            overrides=overrides or [],
            flags={
                "train.gpus": gpus,
                "train.device": device,
                "train.steps": steps,
                "train.epochs": 0 if steps is not None else epochs,
                "train.batch_size": batch_size,
                "train.crop": crop,
                "train.time_limit_s": limit_s,
                "train.init": init,
                "losses.synthetic_streaks": str(streaks) if streaks is not None else None,
            },
        )


def _run(
    *,
    data: list[Path] | None,
    clean: list[Path] | None,
    out: Path | None,
    resume: bool,
    config_file: Path | None,
    print_config: bool,
    overrides: list[str],
    flags: Mapping[str, Any],
) -> None:
    from derain_cli.errors import UsageError
    from derain_cli.toml_text import parse_override

    changes = dict(parse_override(text) for text in overrides)
    changes |= {k: v for k, v in flags.items() if v is not None}

    def resolved(base: NLCLConfig) -> NLCLConfig:
        return base.with_overrides(changes, source="command line") if changes else base

    if out is None and resume:
        raise UsageError("--resume needs --out RUN_DIR (the run to continue)")
    saved = _saved_config(out, resume)
    if saved is not None:
        from derain_cli.train.setup import check_resume_config

        # The checkpoint's generators stand in for its --init weights, which are not read again.
        base = _architecture_base(saved) if saved.train.init else NLCLConfig()
        if config_file:
            requested = resolved(NLCLConfig.load(config_file, base=base))
        else:
            requested = resolved(saved)
        check_resume_config(saved, requested)
    else:
        requested = _resolve_new(config_file, changes, resolved)
    if print_config:
        sys.stdout.write(requested.dumps_toml())
        return
    if not data:
        raise UsageError("missing DATA (a folder of rainy images); see derain train --help")
    if out is None:
        out = Path("runs") / time.strftime("nlcl-%Y%m%d-%H%M%S")

    from derain_cli.data import check_crop, scan_folders
    from derain_cli.train.launch import run

    def warn(path: Path, reason: str) -> None:
        err_console.print(f"derain train: warning: {path}: skipped ({reason})", markup=False)

    if requested.losses.synthetic_streaks:  # a missing or empty folder is refused before work
        from derain_cli.synth.bank import StreakBank

        StreakBank(requested.losses.synthetic_streaks)
    folders = scan_folders(data, clean, min_rainy=requested.train.batch_size, on_skip=warn)
    from derain_cli.config import smallest_crop

    smallest = smallest_crop(requested.sampler, requested.losses)
    upscaled = check_crop(folders, requested.train.crop, smallest)
    err_console.print(
        f"derain train: {len(folders.rainy)} rainy images in {_names(folders.rainy_dirs)}, "
        f"{len(folders.clean)} clean in {_names(folders.clean_dirs)}; run folder {out}",
        markup=False,
    )
    if upscaled is not None:
        err_console.print(f"derain train: note: {upscaled}", markup=False)
    result = run(requested, folders, out, resume=resume, progress=RichProgress)
    again = " ".join(
        shlex.quote(str(part))
        for part in (
            "derain",
            "train",
            *data,
            *(arg for folder in clean or () for arg in ("--clean", folder)),
            "--out",
            out,
        )
    )
    if result.interrupted:
        err_console.print(
            f"derain train: interrupted at step {result.step}; checkpoint saved in {out}. "
            f"Continue with: {again} --resume",
            markup=False,
        )
        raise typer.Exit(128 + int(result.stop_signal or signal.SIGINT))
    if result.time_limited:
        err_console.print(
            f"derain train: time limit reached at step {result.step}/{result.total_steps}; "
            f"checkpoint saved, weights so far: {result.weights}. Continue with: {again} --resume",
            markup=False,
        )
        return
    err_console.print(
        f"derain train: done at step {result.step}/{result.total_steps}; weights: {result.weights}",
        markup=False,
    )


def _resolve_new(
    config_file: Path | None,
    changes: Mapping[str, Any],
    resolved: Callable[[NLCLConfig], NLCLConfig],
) -> NLCLConfig:
    """The config of a new run: defaults < the --init weights' architecture < --config < --set <
    options; with --init, checked against the weights before any work."""
    spec = changes.get("train.init")
    if spec is None:
        spec = NLCLConfig.load(config_file).train.init if config_file else ""
    if not spec:
        return resolved(NLCLConfig.load(config_file) if config_file else NLCLConfig())
    from derain_cli.train.init_weights import architecture_overrides, check_init, load_init

    init = load_init(str(spec))
    base = NLCLConfig().with_overrides(architecture_overrides(init), source=f"--init {spec}")
    requested = resolved(NLCLConfig.load(config_file, base=base) if config_file else base)
    check_init(requested, init)
    return requested


def _architecture_base(saved: NLCLConfig) -> NLCLConfig:
    """Defaults with a checkpoint's generators: the layer its --init put under the config."""
    from derain_cli.train.init_weights import architecture_of

    return NLCLConfig().with_overrides(architecture_of(saved), source="the checkpoint")


def _names(folders: tuple[Path, ...]) -> str:
    return ", ".join(str(folder) for folder in folders)


def _saved_config(out: Path | None, resume: bool) -> Any:
    """The config in ``out``'s checkpoint when resuming; refuse to overwrite a run otherwise."""
    from derain_cli.config import NLCLConfig
    from derain_cli.errors import UsageError
    from derain_cli.train.checkpoint import load_checkpoint
    from derain_cli.train.run_folder import RunPaths

    if out is None:
        return None
    checkpoint = RunPaths(out).checkpoint
    if not checkpoint.is_file():
        if resume:
            err_console.print(
                f"derain train: no checkpoint in {out} yet; starting a new run", markup=False
            )
        return None
    if not resume:
        raise UsageError(
            f"{out}: already holds a training run; pass --resume to continue it "
            "or choose another --out"
        )
    state = load_checkpoint(checkpoint)
    return NLCLConfig.from_dict(state["config"], source=str(checkpoint))
