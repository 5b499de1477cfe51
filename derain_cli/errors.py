"""Errors shown to users as one line (no traceback unless ``--debug``).

Every error a user can cause derives from :class:`DerainError` and carries the exit code the
CLI should use: 2 for bad usage (wrong option, missing weights), 1 for a failed file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

#: While the CLI runs a command: library setting name -> the flag that sets it (see setting()).
_cli_flags: Mapping[str, str] | None = None


def setting(name: str, value: object = ...) -> str:
    """How a message names the setting ``name`` (a keyword argument or a config key).

    A library caller reads ``tile`` or ``tile=0``; under the CLI (:func:`speak_cli`) the same
    message reads ``--tile`` or ``--tile 0`` (``--overwrite`` for ``overwrite=True``, and a
    ``name=value`` the CLI maps to a flag of its own, ``--no-niqe`` for ``with_niqe=False``), so
    that library code never spells a command-line flag itself. Config keys without a flag of their
    own (``train.lr``) stay as they are: that is how ``--set`` and TOML files spell them.
    """
    if _cli_flags is not None and value is not ... and f"{name}={value!r}" in _cli_flags:
        return _cli_flags[f"{name}={value!r}"]  # a flag of its own: with_niqe=False, --no-niqe
    flag = None if _cli_flags is None else _cli_flags.get(name, _default_flag(name))
    if flag is None:
        return name if value is ... else f"{name}={value!r}"
    if value is ... or value is True:
        return flag
    return f"{flag} {value}"


def _default_flag(name: str) -> str | None:
    return None if "." in name else "--" + name.replace("_", "-")


def cli_flags() -> dict[str, str] | None:
    """The flag names in force (None outside the CLI), to hand to a spawned process."""
    return None if _cli_flags is None else dict(_cli_flags)


@contextlib.contextmanager
def speak_cli(flags: Mapping[str, str] | None) -> Iterator[None]:
    """Inside the block, :func:`setting` names flags (``flags`` maps the names that differ;
    None: as a library caller reads them)."""
    global _cli_flags
    saved, _cli_flags = _cli_flags, flags
    try:
        yield
    finally:
        _cli_flags = saved


class DerainError(Exception):
    """An error with a one-line, user-facing message."""

    exit_code: int = 1


class UsageError(DerainError):
    """Bad invocation: options, devices, precisions, paths that cannot work (exit 2).

    Messages name settings through :func:`setting` (``tile 1: ...`` from the library,
    ``--tile 1: ...`` from the CLI).
    """

    exit_code = 2


class PixelError(UsageError, ValueError):
    """A picture handed to the library that cannot be derained: wrong type, dtype, shape or
    values (exit 2). Also a ``ValueError``, which such mistakes raised before."""


class WeightsError(UsageError):
    """Weights that cannot be found, downloaded, verified or loaded (exit 2)."""


class ImageError(DerainError):
    """One input or output image cannot be read or written (exit 1 for the batch)."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class VideoError(ImageError):
    """One input or output video cannot be read, decoded, encoded or written (exit 1)."""
