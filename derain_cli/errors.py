"""Errors shown to users as one line (no traceback unless ``--debug``).

Every error a user can cause derives from :class:`DerainError` and carries the exit code the
CLI should use: 2 for bad usage (wrong option, missing weights), 1 for a failed file.
"""

from __future__ import annotations


class DerainError(Exception):
    """An error with a one-line, user-facing message."""

    exit_code: int = 1


class UsageError(DerainError):
    """Bad invocation: options, devices, precisions, paths that cannot work (exit 2).

    ``option`` names the setting at fault as the library calls it (``tile``, ``skip_existing``);
    a message that starts with it is shown by the CLI with the flag (``--tile 1: ...``).
    """

    exit_code = 2

    def __init__(self, message: str = "", *, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


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
