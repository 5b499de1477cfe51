"""Wall-clock durations as people write them: ``90m``, ``1h30m``, ``2h``, ``45s``, ``3600``.

Their display is :func:`derain_cli.train.messages.format_duration`.
"""

from __future__ import annotations

import re

from derain_cli.errors import UsageError

_PART = re.compile(r"(\d+(?:\.\d+)?)([hms])")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a plain number of seconds, or parts like ``1h30m`` / ``90m`` /
    ``20s`` (hours, minutes, seconds, each once, in that order). Raises :class:`UsageError`."""
    value = text.strip().lower().replace(" ", "")
    try:
        seconds = float(value)
    except ValueError:
        parts = _PART.findall(value)
        units = [unit for _, unit in parts]
        ordered = units == sorted(set(units), key="hms".index)
        if not parts or "".join(n + u for n, u in parts) != value or not ordered:
            raise UsageError(
                f"duration {text!r}: expected seconds or parts like 2h, 90m, 1h30m, 45s"
            ) from None
        seconds = sum(float(number) * _UNITS[unit] for number, unit in parts)
    if not seconds > 0 or seconds == float("inf"):
        raise UsageError(f"duration {text!r}: must be more than 0 seconds")
    return seconds
