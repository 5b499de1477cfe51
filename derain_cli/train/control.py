"""When a training run logs and when it stops: the loss meter and the stop signals.

:class:`Meter` sums the loss terms on the device and averages them over a log interval and over
the data-parallel ranks; the same all-reduce carries each rank's wish to stop (a signal, or the
time limit), so all ranks stop at the same step. :class:`StopOnSignal` turns the first Ctrl-C or
SIGTERM into such a wish.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Mapping
from types import FrameType
from typing import Any

import torch

from derain_cli.train import distributed as dist_utils
from derain_cli.train.distributed import DistContext


class Meter:
    """Sums loss terms on the device (no sync per step) and averages them at log points."""

    def __init__(self, *, global_batch: int) -> None:
        self.global_batch = global_batch
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}  # per term: the NLCL terms start mid-run
        self.count = 0
        self.since = time.perf_counter()
        self.begin = self.since

    def add(self, terms: Mapping[str, torch.Tensor]) -> None:
        for key, value in terms.items():
            self.sums[key] = self.sums[key] + value if key in self.sums else value.clone()
            self.counts[key] = self.counts.get(key, 0) + 1
        self.count += 1

    def flush(self, ctx: DistContext, stop_requested: bool) -> tuple[dict[str, float], bool]:
        """Mean of each term over the interval and the ranks; whether any rank wants to stop."""
        keys = sorted(self.sums)
        device = next(iter(self.sums.values())).device if self.sums else ctx.device
        vector = torch.stack(
            [self.sums[k] / self.counts[k] for k in keys] or [torch.zeros((), device=device)]
        )
        flag = torch.tensor([1.0 if stop_requested else 0.0], device=device)
        merged = dist_utils.mean_across_ranks(torch.cat([vector.reshape(-1), flag]), ctx)
        host = merged.cpu().tolist()  # the sync point: every queued kernel has finished here
        now = time.perf_counter()
        values = {k: float(v) for k, v in zip(keys, host[: len(keys)], strict=True)}
        values["images_per_s"] = round(
            self.count * self.global_batch / max(now - self.since, 1e-9), 3
        )
        values["seconds"] = round(now - self.begin, 3)
        self.sums, self.counts, self.count, self.since = {}, {}, 0, now
        return values, host[-1] > 0


#: Signals that make the loop checkpoint and stop at the next step boundary: Ctrl-C, and the
#: SIGTERM that job schedulers and ``timeout`` send at the end of a time-limited (GPU) window.
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)


def ignore_stop_signals(worker_id: int) -> None:
    """Data-loader workers leave SIGTERM (and SIGINT) to the training process.

    ``timeout``, Slurm and a terminal's Ctrl-C signal the whole process group. torch's workers
    ignore SIGINT but die on SIGTERM, and the main process then raises "DataLoader worker ...
    is killed by signal" in the middle of a step instead of checkpointing. Ignored here, the
    workers end when the main process closes the loader (or dies: they watch their parent).
    """
    del worker_id
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


class StopOnSignal:
    """The first SIGINT/SIGTERM asks the loop to checkpoint and stop at the next step boundary.

    A second Ctrl-C interrupts at once (KeyboardInterrupt); repeated SIGTERMs (a launcher that
    forwards the signal to ranks which already got it from the process group) stay graceful.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.received is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.received is None:
            self.received = signum

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
