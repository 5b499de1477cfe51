"""A streamed runner over planned jobs: decode ahead, derain, write, one result per job.

:func:`stream_jobs` runs the :class:`~derain_cli.inference.plan.Job` s that
:func:`~derain_cli.inference.plan.plan_jobs` made (re-exported here). A background thread decodes
image ``i + 1`` while the caller's derainer computes image ``i`` (bounded queue, so memory stays at
a couple of decoded images); results are encoded and written atomically by
:func:`derain_cli.images.io.write_image`. One :class:`Result` per job comes back, in input order; a
file that fails never stops the batch. Nothing here is CLI code, so the library can batch-process
too. A video job is handed whole to :func:`derain_cli.video.pipeline.derain_video`, which
streams its frames the same way.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal

import numpy as np

from derain_cli.errors import DerainError, ImageError, UsageError, setting
from derain_cli.images.formats import SUPPORTED_FORMATS
from derain_cli.images.io import (
    DEFAULT_MAX_MEGAPIXELS,
    STDIN_NAME,
    Picture,
    encode_image,
    read_image,
    write_image,
)
from derain_cli.inference.plan import (
    STDIO,
    Job,
    plan_jobs,
)
from derain_cli.pipe import Pipe, feed

if TYPE_CHECKING:
    from derain_cli.video.pipeline import VideoOptions

__all__ = [
    "Derain",
    "Job",
    "Result",
    "Status",
    "plan_jobs",
    "stream_jobs",
]

Status = Literal["ok", "skipped", "failed"]
Derain = Callable[[np.ndarray], np.ndarray]
#: Hears of each video frame: (job, frames done, frames expected or None).
OnFrame = Callable[[Job, int, "int | None"], None]


@dataclass
class Result:
    """What happened to one job; :meth:`record` is the ``--json`` / ``--report`` line."""

    input: str
    output: str
    status: Status
    error: str | None = None
    seconds: float = 0.0
    megapixels: float = 0.0
    alpha_dropped: bool = False
    frames: int | None = None  # videos only
    notes: list[str] = field(default_factory=list)  # warnings: what the output lost
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        """How messages name the input: its path, or ``<stdin>`` (JSON lines keep ``-``)."""
        return STDIN_NAME if self.input == STDIO else self.input

    def record(self) -> dict[str, object]:
        record: dict[str, object] = {
            "input": self.input,
            "output": self.output,
            "status": self.status,
            "error": self.error,
            "seconds": round(self.seconds, 4),
            "megapixels": round(self.megapixels, 4),
        }
        if self.frames is not None:
            record["frames"] = self.frames
        return record


# --------------------------------------------------------------------------------------------
# Streaming: decode ahead in a thread, compute and write in the caller's thread.
# --------------------------------------------------------------------------------------------


@dataclass
class _Decoded:
    job: Job
    picture: Picture | None = None
    result: Result | None = None  # already settled (skipped, or failed before/while decoding)
    seconds: float = 0.0


def _failure(job: Job, exc: BaseException, seconds: float = 0.0) -> Result:
    own_names = {job.input_label, STDIN_NAME} if job.input is None else {job.input_label}
    if isinstance(exc, ImageError) and str(exc.path) in own_names:
        message = exc.reason  # the CLI prefixes the input name; do not repeat it
    elif isinstance(exc, DerainError):
        message = str(exc)
    else:
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return Result(job.input_label, job.output_label, "failed", message, seconds, exception=exc)


def _existing_output(job: Job, *, skip_existing: bool, overwrite: bool) -> Result | None:
    """Settle a job whose output already exists: skipped, refused, or ``None`` to go ahead."""
    if job.output is None or not os.path.lexists(job.output):
        return None
    if skip_existing:
        return Result(job.input_label, job.output_label, "skipped")
    if overwrite and job.output.is_file():
        return None
    either = f"use {setting('overwrite', True)} or {setting('skip_existing', True)}"
    reason = "not a file" if not job.output.is_file() else either
    return _failure(job, ImageError(job.output, f"output exists ({reason})"))


def stream_jobs(
    jobs: Iterable[Job],
    derain: Derain,
    *,
    skip_existing: bool = False,
    overwrite: bool = False,
    max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS,
    quality: int = 95,
    prefetch: int = 2,
    stdin: IO[bytes] | None = None,
    stdout: IO[bytes] | None = None,
    video: VideoOptions | None = None,
    on_frame: OnFrame | None = None,
) -> Generator[Result, None, None]:
    """Derain each job, yielding one :class:`Result` per job in order.

    ``derain`` maps float32 ``H x W x 3`` in [0, 1] to the same (a
    :class:`~derain_cli.inference.engine.Derainer`, or any callable). Decoding runs ``prefetch``
    images ahead in a daemon thread; closing the generator early stops it. Per-file problems
    (unreadable input, existing output, a failing write) become ``failed`` results; anything
    else propagates, and so does a :class:`BrokenPipeError` from ``stdout`` (its reader has gone).
    Video jobs are written with ``video`` (default :class:`~derain_cli.video.pipeline.VideoOptions`)
    and report each frame to ``on_frame``.
    """
    if prefetch < 1:
        raise ValueError("prefetch must be >= 1")
    stop = threading.Event()
    pending = Pipe(stop, size=prefetch)

    def decode(job: Job) -> _Decoded:
        start = time.perf_counter()
        settled = _existing_output(job, skip_existing=skip_existing, overwrite=overwrite)
        if settled is not None:
            return _Decoded(job, result=settled)
        if job.is_video:  # decoded frame by frame by the video pipeline, in the caller's thread
            return _Decoded(job)
        try:
            if job.input is None:
                if stdin is None:
                    raise UsageError("reading '-' needs a stdin stream")
                data: Path | bytes = stdin.read()
            else:
                data = job.input
            picture = read_image(data, max_megapixels=max_megapixels)
        except Exception as exc:  # one bad file must not stop the batch
            return _Decoded(job, result=_failure(job, exc, time.perf_counter() - start))
        return _Decoded(job, picture=picture, seconds=time.perf_counter() - start)

    decoded = (decode(job) for job in itertools.takewhile(lambda _: not stop.is_set(), jobs))
    thread = threading.Thread(
        target=feed, args=(pending, decoded), name="derain-decoder", daemon=True
    )
    thread.start()
    try:
        for item in pending.items():
            assert isinstance(item, _Decoded)
            if item.result is not None:
                yield item.result
                continue
            if not item.job.is_video:
                yield _compute_and_write(
                    item,
                    derain,
                    skip_existing=skip_existing,
                    overwrite=overwrite,
                    quality=quality,
                    stdout=stdout,
                )
                continue
            yield _derain_video_job(
                item.job,
                derain,
                video,
                on_frame,
                skip_existing=skip_existing,
                overwrite=overwrite,
            )
    finally:
        stop.set()
        thread.join(timeout=5)


def _compute_and_write(
    item: _Decoded,
    derain: Derain,
    *,
    skip_existing: bool,
    overwrite: bool,
    quality: int,
    stdout: IO[bytes] | None,
) -> Result:
    job, picture = item.job, item.picture
    assert picture is not None
    start = time.perf_counter()
    height, width = picture.rgb.shape[:2]
    megapixels = height * width / 1e6
    try:
        clean = derain(picture.rgb)
        if job.output is None:
            if stdout is None:
                raise UsageError("writing '-' needs a stdout stream")
            data = encode_image(picture, clean, job.fmt, quality=quality)
            stdout.write(data)
            stdout.flush()
        else:
            # Re-check: the file may have appeared while this image was decoded and computed.
            settled = _existing_output(job, skip_existing=skip_existing, overwrite=overwrite)
            if settled is not None:
                settled.seconds = item.seconds + time.perf_counter() - start
                return settled
            make_folder(job.output.parent)
            write_image(job.output, picture, clean, fmt=job.fmt, quality=quality)
    except BrokenPipeError:
        raise  # stdout's reader has gone: no later file can be written there either
    except Exception as exc:  # one bad file must not stop the batch
        return _failure(job, exc, item.seconds + time.perf_counter() - start)
    return Result(
        job.input_label,
        job.output_label,
        "ok",
        seconds=item.seconds + time.perf_counter() - start,
        megapixels=megapixels,
        alpha_dropped=picture.alpha is not None and not SUPPORTED_FORMATS[job.fmt].alpha,
    )


def make_folder(folder: Path) -> None:
    """Create an output folder; a failure is an :class:`ImageError` naming it, not an OSError."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise ImageError(folder, f"cannot create the output folder ({reason})") from None


def _derain_video_job(
    job: Job,
    derain: Derain,
    options: VideoOptions | None,
    on_frame: OnFrame | None,
    *,
    skip_existing: bool,
    overwrite: bool,
) -> Result:
    from derain_cli.video.pipeline import derain_video

    assert job.input is not None and job.output is not None
    start = time.perf_counter()
    settled = _existing_output(job, skip_existing=skip_existing, overwrite=overwrite)
    if settled is not None:
        return settled
    tick = None if on_frame is None else (lambda done, total: on_frame(job, done, total))
    try:
        make_folder(job.output.parent)
        summary = derain_video(
            job.input, job.output, derain, options, overwrite=overwrite, on_frame=tick
        )
    except Exception as exc:  # one bad file must not stop the batch
        return _failure(job, exc, time.perf_counter() - start)
    return Result(
        job.input_label,
        job.output_label,
        "ok",
        seconds=summary.seconds,
        megapixels=summary.megapixels,
        frames=summary.frames,
        notes=summary.notes,
    )
