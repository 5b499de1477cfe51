"""Derain one video file: decode, derain and encode overlapped in three threads, written atomically.

:func:`derain_video` reads ``source`` with :class:`~derain_cli.video.codec.VideoSource` in a
decoder thread, derains the frames in the caller's thread (where the model lives; a batch of
frames per network pass where the device allows, :meth:`Derainer.batch_for
<derain_cli.inference.engine.Derainer.batch_for>`), makes them consistent over time
(:class:`~derain_cli.video.consistency.TemporalStage`, which needs ``window`` frames after each
one), and hands frames and the untouched audio / subtitle packets, in their demux order, to an
encoder thread that writes a temporary file beside ``output``. Only a finished file replaces
``output``: an error, a failing encoder or ^C leaves nothing behind (and an existing ``output``
as it was). Queues are short and at most ``batch + window`` decoded frames wait for their
output, so memory holds a few frames whatever the video's length.

The command's safety rules hold for library callers too: ``output`` may not be ``source`` (the
same file under another name included), and an existing ``output`` is replaced only with
``overwrite=True``.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from derain_cli.atomic import atomic_path
from derain_cli.errors import UsageError, VideoError, setting
from derain_cli.pipe import Pipe, feed
from derain_cli.video.codec import Frame, VideoSink, VideoSource
from derain_cli.video.consistency import TemporalSettings, TemporalStage
from derain_cli.video.formats import Encoder

Derain = Callable[[np.ndarray], np.ndarray]
#: Called after each frame with (frames done, frames expected or None).
OnFrame = Callable[[int, "int | None"], None]


@runtime_checkable
class BatchDerain(Protocol):
    """A derainer that takes several frames per network pass (:class:`Derainer` does)."""

    def __call__(self, rgb: np.ndarray) -> np.ndarray: ...

    def derain_batch(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]: ...

    def batch_for(self, height: int, width: int) -> int: ...


@dataclass(frozen=True)
class VideoOptions:
    """How videos are written: the encoder, temporal consistency (``None``: frame by frame), and
    ``batch``, frames per network pass (``None``: what the device allows, one on a CPU)."""

    encoder: Encoder = field(default_factory=Encoder)
    temporal: TemporalSettings | None = field(default_factory=TemporalSettings)
    batch: int | None = None

    def __post_init__(self) -> None:
        if self.batch is not None and self.batch < 1:
            raise UsageError(f"{setting('batch', self.batch)}: must be >= 1")


@dataclass
class VideoSummary:
    frames: int
    megapixels: float  # all frames together
    seconds: float
    notes: list[str]  # what did not survive (streams dropped), for a warning line


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
        frames = _Frames(derain, options)
        with atomic_path(output) as target:
            stop = threading.Event()
            decoded, to_encode = Pipe(stop), Pipe(stop)
            threads = [
                threading.Thread(target=feed, args=(decoded, video), daemon=True),
                threading.Thread(target=_encode, args=(sink, target, to_encode), daemon=True),
            ]
            for thread in threads:
                thread.start()
            done = 0

            def send(items: Iterator[object]) -> bool:
                nonlocal done
                for item in items:
                    if not to_encode.put(item):
                        return False
                    if isinstance(item, tuple):
                        done += 1
                        if on_frame is not None:
                            on_frame(done, expected)
                return True

            try:
                for item in decoded.items():
                    if not send(frames.add(item)):
                        break
                else:
                    if send(frames.finish()):
                        to_encode.close()
                        threads[1].join()
            finally:
                stop.set()
                for thread in threads:
                    thread.join(timeout=10)
                sink.close()
            if sink.error is not None:  # the encoder thread failed: nothing is kept
                raise sink.error
        notes = _notes(video, sink.unfit)
        return VideoSummary(sink.frames, frames.megapixels, time.perf_counter() - start, notes)
    finally:
        video.close()


def check_output(source: Path, output: Path, *, overwrite: bool) -> None:
    """Refuse an ``output`` that is ``source`` or, without ``overwrite``, exists at all."""
    from derain_cli.atomic import same_file_key

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


@dataclass
class _Slot:
    item: object  # a Frame or a packet, in demux order
    output: np.ndarray | None = None


class _Frames:
    """Decoded items in, ``(frame, output)`` pairs and packets out, in demux order.

    Frames are derained a batch at a time and go through the temporal stage, which gives a
    frame's output ``lookahead`` frames later; an item leaves once it and everything before it
    are done, so packets keep their place between the frames.
    """

    def __init__(self, derain: Derain, options: VideoOptions) -> None:
        self.derain = derain
        self.batch = options.batch
        self.temporal = TemporalStage(options.temporal) if options.temporal else None
        self.megapixels = 0.0
        self._slots: deque[_Slot] = deque()
        self._waiting: deque[_Slot] = deque()  # frames without an output yet, oldest first
        self._undone: list[Frame] = []  # decoded, not derained yet

    def add(self, item: object) -> Iterator[object]:
        slot = _Slot(item)
        self._slots.append(slot)
        if isinstance(item, Frame):
            self._waiting.append(slot)
            self._undone.append(item)
            if self.batch is None:
                self.batch = self._batch_for(item.rgb)
            if len(self._undone) >= self.batch:
                self._run()
        return self._ready()

    def finish(self) -> Iterator[object]:
        """After the last item: derain what is left and flush the temporal stage."""
        self._run()
        if self.temporal is not None:
            self._give(self.temporal.flush())
        return self._ready()

    def _batch_for(self, rgb: np.ndarray) -> int:
        if isinstance(self.derain, BatchDerain):
            return max(1, self.derain.batch_for(*rgb.shape[:2]))
        return 1

    def _run(self) -> None:
        if not self._undone:
            return
        pictures = [frame.rgb for frame in self._undone]
        if len(pictures) > 1 and isinstance(self.derain, BatchDerain):
            cleans = self.derain.derain_batch(pictures)
        else:
            cleans = [self.derain(rgb) for rgb in pictures]
        self._undone.clear()
        for rgb, clean in zip(pictures, cleans, strict=True):
            self.megapixels += rgb.shape[0] * rgb.shape[1] / 1e6
            self._give(self.temporal.push(clean) if self.temporal is not None else [clean])

    def _give(self, outputs: list[np.ndarray]) -> None:
        for output in outputs:
            self._waiting.popleft().output = output

    def _ready(self) -> Iterator[object]:
        while self._slots:
            slot = self._slots[0]
            if isinstance(slot.item, Frame):
                if slot.output is None:
                    return
                yield (slot.item, slot.output)
            else:
                yield slot.item
            self._slots.popleft()


def _encode(sink: VideoSink, target: Path, pipe: Pipe) -> None:
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
