"""`derain run` / `derain IN... -o OUT`: derain images, folders, globs or stdin.

The command only wires options to the library: :func:`~derain_cli.inference.batch.plan_jobs`
resolves paths (usage errors, exit 2, before anything heavy happens), the weights and the
:class:`~derain_cli.inference.engine.Derainer` are created once, before any input is read, and
:func:`~derain_cli.inference.batch.stream_jobs` does the work. Humans read stderr (device, progress,
one line per failure, a summary); stdout carries only data (``-o -`` image bytes or ``--json``).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from derain_cli.cli.common import err_console, print_error, unexpected_errors, user_errors
from derain_cli.cli.options import (
    CodecOption,
    CrfOption,
    DebugOption,
    DeviceOption,
    NoTemporalOption,
    OutputFormat,
    Precision,
    PrecisionOption,
    TemporalStrengthOption,
    TemporalWindowOption,
    TileOption,
    json_option,
    overwrite_option,
    quiet_option,
    weights_option,
)
from derain_cli.cli.signals import stop_like_interrupt
from derain_cli.errors import DerainError, UsageError

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from derain_cli.inference.batch import Job, Result
    from derain_cli.inference.report import LineStream, ReportFile


def command(
    sources: Annotated[
        list[str],
        typer.Argument(
            metavar="IN",
            help="Image or video files, folders, globs ('shots/**/*.jpg'), or a lone - for "
            "stdin (an image). With several INs, -o must be a folder.",
            show_default=False,
        ),
    ],
    output: Annotated[
        str | None,
        typer.Option(
            "-o",
            "--output",
            metavar="OUT",
            help="Output file, folder (required for several INs or a folder/glob) or - for PNG "
            "on stdout. "
            "Default for one file: NAME-derained.EXT next to it.",
            show_default=False,
        ),
    ] = None,
    recursive: Annotated[
        bool, typer.Option("-r", "--recursive", help="Walk subfolders and mirror the tree.")
    ] = False,
    suffix: Annotated[
        str, typer.Option(help="Appended to each output file stem, e.g. _clean.")
    ] = "",
    output_format: Annotated[
        OutputFormat,
        typer.Option("--format", help="Output format; auto keeps each input's format."),
    ] = OutputFormat.auto,
    skip_existing: Annotated[
        bool, typer.Option("--skip-existing", help="Leave existing outputs alone (no error).")
    ] = False,
    overwrite: Annotated[
        bool, overwrite_option("Replace existing outputs (else: an error).")
    ] = False,
    weights: Annotated[
        str | None,
        weights_option(
            "Weights: a name from 'derain weights list', a .safetensors file, the authors' "
            ".pth, or hf://OWNER/REPO (optionally @REV and /FILE). Default: the bundled default "
            "weights."
        ),
    ] = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = Precision.auto,
    tile: TileOption = None,
    overlap: Annotated[
        int | None,
        typer.Option(
            min=0,
            metavar="PIXELS",
            help="Overlap between tiles (blended), at most a quarter of the tile. Default: 32.",
            show_default=False,
        ),
    ] = None,
    max_megapixels: Annotated[
        float | None,
        typer.Option(
            min=0,
            metavar="MP",
            help="Refuse larger images (decompression-bomb guard); 0 = no limit. Default: 200.",
            show_default=False,
        ),
    ] = None,
    quality: Annotated[int, typer.Option(min=1, max=100, help="JPEG/WebP quality.")] = 95,
    codec: CodecOption = None,
    crf: CrfOption = None,
    no_temporal: NoTemporalOption = False,
    temporal_window: TemporalWindowOption = None,
    temporal_strength: TemporalStrengthOption = None,
    quiet: Annotated[bool, quiet_option("No progress, device line or summary.")] = False,
    as_json: Annotated[bool, json_option("One JSON line per file on stdout.")] = False,
    report: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE", help="Write the JSON lines to FILE as well.", show_default=False
        ),
    ] = None,
    debug: DebugOption = False,
) -> None:
    """Derain each IN and write the results to OUT."""
    with unexpected_errors(debug), user_errors(debug), stop_like_interrupt():
        from derain_cli.images.io import DEFAULT_MAX_MEGAPIXELS
        from derain_cli.inference.batch import plan_jobs, stream_jobs
        from derain_cli.inference.engine import Derainer
        from derain_cli.inference.report import LineStream, ReportFile, check_report_path
        from derain_cli.inference.settings import DEFAULT_OVERLAP, DerainerSettings
        from derain_cli.inference.shard import ShardedReport, shard_from_env, take
        from derain_cli.inference.writable import check_output_folders
        from derain_cli.torchrun import pin_local_gpu
        from derain_cli.video.consistency import TemporalSettings
        from derain_cli.video.formats import Encoder, check_encoder
        from derain_cli.video.pipeline import VideoOptions
        from derain_cli.weights.hub import download_progress

        if skip_existing and overwrite:
            raise UsageError("--skip-existing and --overwrite exclude each other; pick one")
        settings = DerainerSettings.check(
            device=device, precision=precision.value, tile=tile,
            overlap=DEFAULT_OVERLAP if overlap is None else overlap,
        )  # fmt: skip
        if overlap is not None and tile and overlap > tile // 4 and not quiet:
            _note(f"--overlap {overlap}: capped at {tile // 4} px, a quarter of --tile {tile}")
        encoder = Encoder(codec, crf)
        check_encoder(encoder)
        defaults = TemporalSettings()
        temporal = TemporalSettings(
            window=defaults.window if temporal_window is None else temporal_window,
            strength=defaults.strength if temporal_strength is None else temporal_strength,
        )
        video = VideoOptions(encoder, None if no_temporal else temporal)
        shard = shard_from_env()
        quiet = quiet or shard.rank > 0  # one progress bar and summary: rank 0's
        planned = plan_jobs(
            sources,
            output,
            recursive=recursive,
            suffix=suffix,
            fmt=output_format.value,
            skip_existing=skip_existing,
            overwrite=overwrite,
            on_skip=(lambda path, what: None) if quiet else _warn_skipped,
        )
        jobs = take(planned, shard)  # every job, unless torchrun started several processes
        writes_stdout = any(job.output is None for job in jobs)
        if as_json and writes_stdout:
            raise UsageError("--json and -o - both want stdout; use --report FILE instead")
        if max_megapixels is None:
            limit: float | None = DEFAULT_MAX_MEGAPIXELS
        else:
            limit = max_megapixels or None

        sharded = ShardedReport(report, shard, planned) if report is not None else None
        if report is not None:
            check_report_path(report, planned)
        check_output_folders(jobs, overwrite=overwrite)
        if shard.active:
            pin_local_gpu(device, shard.local_rank)
            if sharded is not None:
                sharded.begin()
            if not jobs:  # more processes than files: nothing to do here
                if sharded is not None:
                    sharded.write_empty()
                    sharded.merge()
                return

        with download_progress(not quiet):
            derainer = Derainer.from_pretrained(weights, settings=settings)
        if not quiet:
            err_console.print(
                Text.assemble(("derain: ", "bold"), f"{derainer.source} on {derainer.description}")
            )
        frames = _FrameBars()
        results = stream_jobs(
            jobs,
            derainer,
            skip_existing=skip_existing,
            overwrite=overwrite,
            max_megapixels=limit,
            quality=quality,
            stdin=sys.stdin.buffer if jobs[0].input is None else None,
            stdout=sys.stdout.buffer if writes_stdout else None,
            video=video,
            on_frame=frames.tick,
        )
        sinks: list[LineStream | ReportFile] = [LineStream(sys.stdout, "stdout")] if as_json else []
        if sharded is not None:
            sinks.append(ReportFile(sharded.path))
        failed = 0
        try:
            failed = _consume(
                results,
                len(jobs),
                sinks=sinks,
                quiet=quiet,
                debug=debug,
                frames=frames if any(job.is_video for job in jobs) else None,
            )
        finally:
            failed += _close_sinks(sinks)
        if sharded is not None and sharded.merge() and not quiet:
            err_console.print(f"derain: merged the report of {shard.world} processes: {report}")
    if failed:
        raise typer.Exit(1)


def _note(message: str) -> None:
    err_console.print(Text.assemble(("derain: note: ", "bold"), message))


def _warn_skipped(path: Path, what: str) -> None:
    """One stderr line per folder or glob entry that is skipped because it is not a file."""
    err_console.print(
        Text.assemble(("derain: warning: ", "bold yellow"), f"{path}: skipped (it is {what})")
    )


def _close_sinks(sinks: list[LineStream | ReportFile]) -> int:
    """Put the report in place; 1 if that failed (reported here), else 0."""
    failures = 0
    for sink in sinks:
        try:
            sink.close()
        except DerainError as exc:
            print_error(str(exc))
            failures = 1
    return failures


def _print_traceback(exc: BaseException) -> None:
    from rich.traceback import Traceback

    err_console.print(Traceback.from_exception(type(exc), exc, exc.__traceback__))


class _FrameBars:
    """One progress bar in frames (fps, ETA), re-titled for each video, once a display is open."""

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self._task: TaskID | None = None
        self._job: Job | None = None

    def tick(self, job: Job, done: int, total: int | None) -> None:
        progress = self.progress
        if progress is None:
            return
        if job != self._job:
            self._job = job
            name = f"  {job.input.name if job.input is not None else job.input_label}"
            if self._task is None:
                self._task = progress.add_task(name, total=total, megapixels=0.0, unit="frames")
            else:
                progress.reset(self._task, total=total, description=name)
        if self._task is not None:
            progress.update(self._task, completed=done)


def _consume(
    results: Generator[Result, None, None],
    total: int,
    *,
    sinks: Sequence[LineStream | ReportFile],
    quiet: bool,
    debug: bool,
    frames: _FrameBars | None = None,
) -> int:
    """Report each result as it arrives; return the number of failed files and sinks."""
    counts = {"ok": 0, "skipped": 0, "failed": 0}
    sink_failures = 0
    megapixels = 0.0
    video_frames = 0
    warned_alpha = False
    start = time.perf_counter()
    show = total >= 2 or frames is not None
    with contextlib.closing(results), _progress(show, quiet) as progress:
        task = (
            progress.add_task("derain", total=total, megapixels=0.0, unit="files")
            if progress and total >= 2
            else None
        )
        if frames is not None:
            frames.progress = progress
        for result in results:
            counts[result.status] += 1
            megapixels += result.megapixels
            video_frames += result.frames or 0
            line = json.dumps(result.record(), ensure_ascii=False)
            for sink in sinks:
                try:
                    sink.write(line)
                except DerainError as exc:  # raised once per sink: the images go on
                    print_error(str(exc))
                    sink_failures += 1
            for note in result.notes if not quiet else ():
                err_console.print(
                    Text.assemble(("derain: warning: ", "bold yellow"), f"{result.name}: {note}")
                )
            if result.status == "failed":
                if debug and result.exception is not None:
                    _print_traceback(result.exception)
                print_error(f"{result.name}: {result.error}")
            if result.alpha_dropped and not warned_alpha and not quiet:
                warned_alpha = True
                err_console.print(
                    Text.assemble(
                        ("derain: warning: ", "bold yellow"),
                        f"{result.name}: JPEG cannot store alpha; the alpha channel is dropped "
                        "(this and any further such files; use --format png to keep it)",
                    )
                )
            if progress is not None and task is not None:
                progress.update(task, advance=1, megapixels=megapixels)
    if not quiet:
        elapsed = time.perf_counter() - start
        if counts["ok"]:
            in_frames = f", {video_frames} video frames" if video_frames else ""
            work = f"{megapixels:.2f} MP{in_frames} in {elapsed:.1f} s"
        else:
            work = f"no image was processed; {elapsed:.1f} s"
        summary = (
            f"{counts['ok']} done, {counts['skipped']} skipped, {counts['failed']} failed ({work})"
        )
        err_console.print(Text.assemble(("derain: ", "bold"), summary))
    return counts["failed"] + sink_failures


@contextlib.contextmanager
def _progress(show: bool, quiet: bool) -> Iterator[Progress | None]:
    """Rich progress bars on stderr (files of a batch, frames of a video), only on a terminal."""
    if quiet or not show or not err_console.is_terminal:
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        Task,
        TextColumn,
        TimeRemainingColumn,
    )

    class MegapixelRate(ProgressColumn):
        def render(self, task: Task) -> Text:
            elapsed = task.elapsed or 0.0
            if task.fields.get("unit") == "frames":
                return Text(f"{task.completed / elapsed if elapsed > 0 else 0.0:.2f} fps")
            rate = task.fields.get("megapixels", 0.0) / elapsed if elapsed > 0 else 0.0
            return Text(f"{rate:.2f} MP/s")

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[unit]}"),
        MegapixelRate(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    ) as progress:
        yield progress
