"""SIGTERM and SIGHUP end a `derain` run the way Ctrl-C does: cleanly, with no partial file.

Left to their default action, both signals kill the process on the spot, in the middle of writing
a temporary file (``kill``, ``timeout``, a closed terminal or SSH session, a batch scheduler). Here
they raise :class:`Terminated` in the main thread instead, a ``KeyboardInterrupt``, so every
``finally`` and ``except BaseException`` that already cleans up after Ctrl-C (atomic writes, the
video threads, the report file) runs for them too; the command then exits with ``128 + signal``
(143 for SIGTERM, 129 for SIGHUP), as a shell reports a process the signal ended.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

#: The signals handled like SIGINT (SIGHUP does not exist on Windows).
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class Terminated(KeyboardInterrupt):
    """The run was asked to stop by ``signum`` (SIGTERM, SIGHUP)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def exit_status(interrupt: KeyboardInterrupt) -> int:
    """``128 + signal``: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
    return 128 + int(getattr(interrupt, "signum", signal.SIGINT))


def describe(interrupt: KeyboardInterrupt) -> str:
    """``interrupted`` (Ctrl-C) or ``terminated by SIGTERM``."""
    signum = getattr(interrupt, "signum", None)
    return "interrupted" if signum is None else f"terminated by {signal.Signals(signum).name}"


@contextlib.contextmanager
def stop_like_interrupt() -> Iterator[None]:
    """Inside the block, :data:`STOP_SIGNALS` raise :class:`Terminated` (once: later ones, which
    would break the clean-up, are ignored). Only the main thread can set handlers; elsewhere the
    block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised = False

    def handle(signum: int, frame: FrameType | None) -> None:
        nonlocal raised
        if not raised:
            raised = True
            raise Terminated(signum)

    previous = {signum: signal.signal(signum, handle) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
