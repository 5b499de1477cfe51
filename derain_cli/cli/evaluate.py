"""`derain eval`: score models (or saved results) against clean images; NIQE without them.

Forms:
  derain eval --rainy DIR --clean DIR [--weights W ...]   input row + one row per weights
  derain eval --pred DIR --clean DIR                      score existing results
  derain eval --rainy DIR [--weights W ...]               no ground truth: NIQE only

Exit codes: 0 every paired image scored, 1 some images not scored (listed; the rest is still
reported), 2 bad usage or weights that cannot be loaded.

The library (:mod:`derain_cli.evaluation.scoring`) pairs, runs and aggregates; this module wires
options, draws the rich table and the progress bar on stderr, and writes ``--json`` (stdout) /
``--csv``.
Metric conventions are in ``docs/evaluation.md``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from derain_cli.cli.common import err_console, user_errors
from derain_cli.cli.options import (
    DebugOption,
    DeviceOption,
    Precision,
    PrecisionOption,
    TileOption,
    json_option,
    quiet_option,
    weights_option,
)
from derain_cli.errors import UsageError

if TYPE_CHECKING:
    from derain_cli.evaluation.scoring import GridRow, Method, Plan, Report, Score, Summary
    from derain_cli.inference.settings import DerainerSettings

GRID_IMAGES = 4


def command(
    rainy: Annotated[
        Path | None, typer.Option(metavar="DIR", help="Rainy inputs (derained by each --weights).")
    ] = None,
    clean: Annotated[
        Path | None, typer.Option(metavar="DIR", help="Clean references, paired by file stem.")
    ] = None,
    pred: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="Existing results to score instead of running a model."),
    ] = None,
    weights: Annotated[
        list[str] | None,
        weights_option(
            "Weights to evaluate (repeat for several): a name, a .safetensors or .pth file, "
            "or hf://OWNER/REPO\\[@REV]\\[/FILE]. One table row each."
        ),
    ] = None,
    rgb: Annotated[
        bool, typer.Option("--rgb", help="PSNR/SSIM on RGB instead of the Y channel (BT.601).")
    ] = False,
    per_image: Annotated[
        bool, typer.Option("--per-image", help="Also show one table row per image.")
    ] = False,
    as_json: Annotated[bool, json_option("Print the full report as JSON on stdout.")] = False,
    csv_path: Annotated[
        Path | None,
        typer.Option("--csv", metavar="FILE", help="Write means and per-image rows as CSV."),
    ] = None,
    save_dir: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="Keep the derained images: DIR/<weights>/<stem>.png."),
    ] = None,
    grid: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE.png",
            help=f"Side-by-side picture (rainy | each weights | clean) of {GRID_IMAGES} images.",
        ),
    ] = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = Precision.auto,
    tile: TileOption = None,
    limit: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="N",
            help="Only the first N pairs (sorted by stem); later stems are not checked.",
        ),
    ] = None,
    no_niqe: Annotated[bool, typer.Option("--no-niqe", help="Skip NIQE (faster).")] = False,
    quiet: Annotated[
        bool,
        quiet_option(
            "No progress bar, model lines or table (errors and unscored images are still "
            "shown); read the scores from --json or --csv."
        ),
    ] = False,
    debug: DebugOption = False,
) -> None:
    """Score models on rainy/clean pairs (PSNR, SSIM, NIQE)."""
    with user_errors(debug):
        from derain_cli.evaluation import files as eval_files
        from derain_cli.evaluation import scoring as ev
        from derain_cli.inference.settings import DerainerSettings
        from derain_cli.inference.tiling import check_tile

        settings = None
        if weights:
            settings = DerainerSettings.check(device=device, precision=precision.value, tile=tile)
        else:
            check_tile(tile)
        if pred is not None and weights:
            raise UsageError("--weights derains --rainy images; it cannot be used with --pred")
        if clean is None and no_niqe:
            raise UsageError("nothing to compute: without --clean only NIQE applies")
        if grid is not None and grid.suffix.lower() != ".png":
            raise UsageError(f"--grid {grid}: must be a .png file")
        plan = ev.plan(rainy=rainy, clean=clean, pred=pred, limit=limit)
        methods = _methods(weights or [], pred, settings, quiet=quiet)
        report, rows = _run(
            plan, methods, rgb=rgb, with_niqe=not no_niqe, save_dir=save_dir,
            grid_images=GRID_IMAGES if grid is not None else 0, quiet=quiet,
        )  # fmt: skip
        _print_problems(report)
        if plan.skipped:  # stems left unscored, like the problems above: shown under -q too
            err_console.print(f"{plan.skipped} stem(s) beyond --limit {limit} skipped")
        if not quiet:
            has_clean, has_niqe = clean is not None, not no_niqe
            _print_table(report, per_image=per_image, has_clean=has_clean, has_niqe=has_niqe)
        if csv_path is not None:
            eval_files.write_csv(csv_path, report)
        if grid is not None and rows:
            eval_files.write_grid(grid, rows)
            if not quiet:
                err_console.print(f"grid: {grid}")
        if as_json:
            sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
    if report.problems:
        raise typer.Exit(1)  # like `derain run`: results written, but some images not scored


def _methods(
    weights: list[str],
    pred: Path | None,
    settings: DerainerSettings | None,
    *,
    quiet: bool = False,
) -> list[Method]:
    """One Method per weights (models loaded once, up front) or the --pred folder."""
    from derain_cli.evaluation.scoring import Method, unique_labels, weights_label

    if pred is not None:
        # Never "input": that label means "score the rainy image" when --rainy is also given.
        (label,) = unique_labels([pred.name or str(pred)])
        return [Method(label=label, description=str(pred))]
    if not weights:
        return []
    from derain_cli.inference.engine import Derainer

    methods = []
    labels = unique_labels([weights_label(w) for w in weights])
    for label, spec in zip(labels, weights, strict=True):
        derainer = Derainer.from_pretrained(spec, settings=settings)
        if not quiet:
            err_console.print(f"{label}: {derainer.source} on {derainer.description}")
        methods.append(Method(label=label, derain=derainer, description=derainer.source))
    return methods


def _run(
    plan: Plan, methods: list[Method], *, quiet: bool, **kwargs: Any
) -> tuple[Report, list[GridRow]]:
    """Run the evaluation under a progress bar over images x rows."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from derain_cli.evaluation.scoring import evaluate

    has_input = plan.items[0].rainy is not None
    total = len(plan.items) * (len(methods) + int(has_input))
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=quiet,
        transient=True,
    ) as progress:
        task = progress.add_task("scoring", total=total)

        def step(stem: str, label: str) -> None:
            progress.update(task, advance=1, description=f"{label}: {stem}")

        return evaluate(plan, methods, on_step=step, **kwargs)


def _print_problems(report: Report) -> None:
    if not report.problems:
        return
    err_console.print(f"[yellow]{len(report.problems)} image(s) not scored:[/]")
    for problem in report.problems:
        err_console.print(f"  {problem.stem}: {problem.reason}", markup=False)


def _fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    return "inf" if value == float("inf") else f"{value:.{digits}f}"


def _print_table(report: Report, *, per_image: bool, has_clean: bool, has_niqe: bool) -> None:
    """The means (and per-image rows); columns of metrics not computed are left out."""
    from rich.table import Table

    space = "RGB" if report.space == "rgb" else "Y"
    about = (
        [f"{space} PSNR/SSIM; cast = largest mean RGB channel shift, grey levels"]
        if has_clean
        else []
    )
    about += ["NIQE lower is better"] if has_niqe else []
    table = Table(title=f"derain eval ({'; '.join(about)})")
    table.add_column("method")
    table.add_column("set / image" if per_image else "set")
    table.add_column("n", justify="right")
    if has_clean:
        table.add_column("PSNR dB", justify="right")
        table.add_column("SSIM", justify="right")
        table.add_column("cast", justify="right")
    if has_niqe:
        table.add_column("NIQE", justify="right")

    def cells(row: Score | Summary) -> list[str]:
        out = [_fmt(row.psnr, 2), _fmt(row.ssim, 4), _fmt(row.cast, 2)] if has_clean else []
        return [*out, _fmt(row.niqe, 3)] if has_niqe else out

    for summary in report.summaries():
        table.add_row(summary.method, summary.set, str(summary.count), *cells(summary))
    if per_image:
        table.add_section()
        for score in report.scores:
            table.add_row(score.method, score.stem, "1", *cells(score))
    err_console.print(table)
