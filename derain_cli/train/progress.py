"""The live display of a training run on stderr: step, ETA, images/s and each loss.

A :class:`~derain_cli.train.setup.Progress` for ``train()``: a rich live table on a terminal,
one plain line per log point otherwise. ``derain train`` and ``derain adapt`` hand it to the
loop; a Python caller may too (the loop itself never prints).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from rich.console import Console

#: Where the display goes: stderr, beside the command's other messages.
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


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
