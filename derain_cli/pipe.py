"""A worker thread handing items to its consumer: bounded, stoppable, and its crash forwarded.

Decoding runs ahead of computing in a thread (files in :mod:`derain_cli.inference.batch`, frames
in :mod:`derain_cli.video.pipeline`). A :class:`Pipe` bounds what waits between the two; setting
its ``stop`` event makes both sides give up at once; whatever kills the worker (an error, a
``KeyboardInterrupt``) is raised again in the consumer's thread by :meth:`Pipe.items`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator

_END = object()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Pipe:
    """A bounded queue between two threads that gives up when ``stop`` is set."""

    def __init__(self, stop: threading.Event, size: int = 4) -> None:
        self.queue: queue.Queue[object] = queue.Queue(maxsize=size)
        self.stop = stop

    def put(self, item: object) -> bool:
        """Hand ``item`` over; False when ``stop`` was set first."""
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def close(self) -> bool:
        """No more items: the consumer's :meth:`items` ends."""
        return self.put(_END)

    def items(self) -> Iterator[object]:
        """Until the end marker or ``stop``; the worker's crash is raised here."""
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


def feed(pipe: Pipe, items: Iterable[object]) -> None:
    """A worker's body: put each item, then the end; a crash goes to the consumer instead."""
    try:
        for item in items:
            if not pipe.put(item):
                return
        pipe.close()
    except BaseException as exc:  # raised again in the consumer's thread
        pipe.put(_Failed(exc))
