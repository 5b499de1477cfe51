"""Derain one video file: decode, derain and encode overlapped in three threads, written atomically.

:func:`derain_video` reads ``source`` with :class:`~derain_cli.video.codec.VideoSource` in a
decoder thread, derains each frame in the caller's thread (where the model lives), optionally
through a :class:`~derain_cli.video.temporal.TemporalFilter`, and hands frames and the untouched
audio / subtitle packets, in their demux order, to an encoder thread that writes a temporary file
beside ``output``. Only a finished file replaces ``output``: an error, a failing encoder or ^C
leaves nothing behind (and an existing ``output`` as it was). Queues are short, so memory holds a
few frames whatever the video's length.

The command's safety rules hold for library callers too: ``output`` may not be ``source`` (the
same file under another name included), and an existing ``output`` is replaced only with
``overwrite=True``.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from derain_cli.atomic import atomic_path
from derain_cli.errors import UsageError, VideoError, setting
from derain_cli.video.codec import Frame, VideoSink, VideoSource
from derain_cli.video.formats import Encoder
from derain_cli.video.temporal import TemporalFilter, TemporalSettings

Derain = Callable[[np.ndarray], np.ndarray]
#: Called after each frame with (frames done, frames expected or None).
OnFrame = Callable[[int, "int | None"], None]


@dataclass(frozen=True)
class VideoOptions:
    """How videos are written: the encoder, and the temporal filter (``None``: frame by frame)."""

    encoder: Encoder = field(default_factory=Encoder)
    temporal: TemporalSettings | None = field(default_factory=TemporalSettings)


@dataclass
class VideoSummary:
    frames: int
    megapixels: float  # all frames together
    seconds: float
    notes: list[str]  # what did not survive (streams dropped), for a warning line


_END = object()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class _Pipe:
    """A bounded queue between two threads that gives up when ``stop`` is set."""

    def __init__(self, stop: threading.Event, size: int = 4) -> None:
        self.queue: queue.Queue[object] = queue.Queue(maxsize=size)
        self.stop = stop

    def put(self, item: object) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def items(self) -> Iterator[object]:
        """Until the end marker; a :class:`_Failed` from the other side is raised here."""
        while True:
            try:
                item = self.queue.get(timeout=0.05)
            except queue.Empty:
                if self.stop.is_set():
                    return
                continue
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield item


def derain_video(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    derain: Derain,
    options: VideoOptions | None = None,
    *,
    overwrite: bool = False,
    on_frame: OnFrame | None = None,
) -> VideoSummary:
    """Write the derained ``source`` to ``output``; raises :class:`VideoError` for a bad file.

    Refused before anything is read: an ``output`` that is ``source`` (:class:`UsageError`), and
    an existing ``output`` unless ``overwrite`` (:class:`VideoError`); ``source`` is never changed.
    """
    source, output = Path(source), Path(output)
    check_output(source, output, overwrite=overwrite)
    options = options or VideoOptions()
    start = time.perf_counter()
    video = VideoSource(source)
    try:
        expected = video.frame_estimate
        sink = VideoSink(output, video, options.encoder)
        smoother = TemporalFilter(options.temporal) if options.temporal else None
        megapixels = 0.0
        with atomic_path(output) as target:
            stop = threading.Event()
            decoded, to_encode = _Pipe(stop), _Pipe(stop)
            threads = [
                threading.Thread(target=_decode, args=(video, decoded), daemon=True),
                threading.Thread(target=_encode, args=(sink, target, to_encode), daemon=True),
            ]
            for thread in threads:
                thread.start()
            done = 0
            try:
                for item in decoded.items():
                    if isinstance(item, Frame):
                        clean = derain(item.rgb)
                        if smoother is not None:
                            clean = smoother(clean)
                        megapixels += item.rgb.shape[0] * item.rgb.shape[1] / 1e6
                        item = (item, clean)
                        done += 1
                    if not to_encode.put(item):
                        break
                    if on_frame is not None and isinstance(item, tuple):
                        on_frame(done, expected)
                to_encode.put(_END)
                threads[1].join()
            finally:
                stop.set()
                for thread in threads:
                    thread.join(timeout=10)
                sink.close()
            if sink.error is not None:  # the encoder thread failed: nothing is kept
                raise sink.error
        notes = _notes(video, sink.unfit)
        return VideoSummary(sink.frames, megapixels, time.perf_counter() - start, notes)
    finally:
        video.close()


def check_output(source: Path, output: Path, *, overwrite: bool) -> None:
    """Refuse an ``output`` that is ``source`` or, without ``overwrite``, exists at all."""
    from derain_cli.inference.plan import same_file_key

    same = same_file_key(source) == same_file_key(output)
    if not same and source.exists() and output.exists():
        try:
            same = os.path.samefile(source, output)  # a hard link, another mount of the folder
        except OSError:
            same = False
    if same:
        raise UsageError(
            f"{output}: output would replace the input {source}; choose another {setting('output')}"
        )
    if os.path.lexists(output) and not (overwrite and output.is_file()):
        reason = f"use {setting('overwrite', True)}" if output.is_file() else "not a file"
        raise VideoError(output, f"output exists ({reason})")


def _decode(video: VideoSource, pipe: _Pipe) -> None:
    try:
        for item in video:
            if not pipe.put(item):
                return
        pipe.put(_END)
    except BaseException as exc:  # raised again in the caller's thread
        pipe.put(_Failed(exc))


def _encode(sink: VideoSink, target: Path, pipe: _Pipe) -> None:
    """Open the sink at the first frame (it knows size and rotation); buffer packets till then."""
    early: list[Any] = []
    try:
        for item in pipe.items():
            if isinstance(item, tuple):
                frame, clean = item
                if sink.container is None:
                    assert sink.source.info is not None
                    sink.open(sink.source.info, target)
                    for packet in early:
                        sink.write_packet(packet)
                    early.clear()
                sink.write_frame(clean, frame)
            elif sink.container is None:
                early.append(item)
            else:
                sink.write_packet(item)  # type: ignore[arg-type]
        if not pipe.stop.is_set():
            if sink.container is None:
                raise VideoError(sink.path, "no frame to write")
            sink.finish()
    except BaseException as exc:
        sink.error = exc
        pipe.stop.set()


def _notes(video: VideoSource, unfit: list[str]) -> list[str]:
    notes = []
    if video.dropped_kinds:
        notes.append(f"not copied to the output: {', '.join(video.dropped_kinds)} stream(s)")
    if unfit:
        notes.append(f"the output container cannot hold: {', '.join(unfit)}; not copied")
    return notes
