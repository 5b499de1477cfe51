"""Where the JSON lines go: the ``--report`` file and the ``--json`` stream.

A report must never cost the user a file, and never stop the batch it describes:

* :func:`check_report_path` refuses, before anything is loaded or read, a report path that is an
  input, a planned output, or a folder the outputs go into, and one that cannot be written
  (missing folder, a folder itself, no write permission). :class:`~derain_cli.errors.UsageError`,
  exit 2; nothing is touched.
* :class:`ReportFile` opens nothing until the first line arrives, writes the lines (flushed one by
  one) into a hidden temporary file beside the report and replaces the report with it when the
  run ends, so a run that processes nothing leaves an old report as it was, and a reader sees
  the old report or the new one, never a truncated one. A report that is not a regular file
  (``/dev/null``, a FIFO, ``/dev/stderr``) is written to directly.
* A write that fails (a full disk) raises :class:`~derain_cli.errors.DerainError` once, naming
  the report and the reason; later lines are dropped, the temporary file is removed and the old
  report is kept. The caller reports it and goes on with the images. :class:`LineStream` does the
  same for an already open stream such as stdout, except that a closed pipe
  (:class:`BrokenPipeError`) propagates: the reader has gone, so the run should end.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from derain_cli.atomic import make_temp, new_file_mode, same_file_key
from derain_cli.errors import DerainError, UsageError, setting
from derain_cli.inference.plan import Job


def check_report_path(report: Path, jobs: Sequence[Job]) -> None:
    """Refuse a ``--report`` path that would destroy an input or an output, or cannot be written."""
    key = same_file_key(report)
    for job in jobs:
        if job.input is not None and same_file_key(job.input) == key:
            raise UsageError(f"{report}: the report would replace the input {job.input}; "
                             f"choose another {setting('report')} file")  # fmt: skip
        if job.output is None:
            continue
        output = same_file_key(job.output)
        if output == key:
            raise UsageError(f"{report}: the report would be written where the output of "
                             f"{job.input_label} goes; choose another "
                             f"{setting('report')} file")  # fmt: skip
        if Path(output).is_relative_to(key):
            raise UsageError(f"{report}: the outputs are written inside this path (e.g. "
                             f"{job.output}); choose another {setting('report')} file")  # fmt: skip
    if report.is_dir():
        raise UsageError(f"{report}: cannot write the report (it is a folder)")
    folder = report.parent
    if not folder.is_dir():
        raise UsageError(f"{report}: cannot write the report (folder {folder} does not exist)")
    if report.exists() and not os.access(report, os.W_OK):
        raise UsageError(f"{report}: cannot write the report (permission denied)")
    if _is_regular_or_absent(report) and not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{report}: cannot write the report (folder {folder} is not writable)")


def _is_regular_or_absent(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return True


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


class LineStream:
    """JSON lines to an open text stream (stdout), flushed one by one; see the module docstring."""

    def __init__(self, stream: IO[str], name: str) -> None:
        self.stream = stream
        self.name = name
        self.error: str | None = None

    def write(self, line: str) -> None:
        """Write one line; raise :class:`DerainError` on the first failure, drop lines after it."""
        if self.error is not None:
            return
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            self.error = _reason(exc)
            raise DerainError(f"{self.name}: cannot write the JSON lines ({self.error}); "
                              "the images are still processed") from None  # fmt: skip

    def close(self) -> None:
        """Nothing to finish for a stream the caller owns."""


class ReportFile:
    """The ``--report`` file: opened at the first line, replaced atomically by :meth:`close`."""

    def __init__(self, path: Path) -> None:
        self.path = path  # as the user wrote it, for messages
        self.target = Path(os.path.realpath(path))  # a symbolic link keeps pointing at the report
        self.error: str | None = None
        self._handle: IO[str] | None = None
        self._temp: str | None = None  # None while writing straight to a non-regular file

    def write(self, line: str) -> None:
        """Write one line; raise :class:`DerainError` on the first failure, drop lines after it."""
        if self.error is not None:
            return
        try:
            if self._handle is None:
                self._handle, self._temp = open_report(self.target)
            self._handle.write(line + "\n")
            self._handle.flush()
        except OSError as exc:
            raise self._failed(exc) from None

    def close(self) -> None:
        """Put the report in place (after a failure: remove what was written, keep the old file).

        Raises :class:`DerainError` if that last step fails.
        """
        handle, temp = self._handle, self._temp
        self._handle = None
        if handle is None:
            return
        try:
            if self.error is None and temp is not None:
                handle.flush()
                os.fsync(handle.fileno())
            handle.close()
            if self.error is None and temp is not None:
                os.chmod(temp, new_file_mode(self.target))
                os.replace(temp, self.target)
                self._temp = None
        except OSError as exc:
            if self.error is None:
                raise self._failed(exc) from None
        finally:
            self._discard()

    def _failed(self, exc: OSError) -> DerainError:
        self.error = _reason(exc)
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self._handle.close()
            self._handle = None
        self._discard()
        kept = "the old file is left as it was" if self.path.exists() else "no report is written"
        return DerainError(f"report {self.path}: cannot write ({self.error}); {kept}, "
                           "the images are still processed")  # fmt: skip

    def _discard(self) -> None:
        if self._temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._temp)
            self._temp = None


def open_report(path: Path) -> tuple[IO[str], str | None]:
    """A text handle for the report's lines and its temporary file (None: written in place)."""
    if not _is_regular_or_absent(path):
        return open(path, "a", encoding="utf-8"), None  # noqa: SIM115 (closed by ReportFile)
    fd, temp = make_temp(path)
    try:
        return os.fdopen(fd, "w", encoding="utf-8"), temp
    except BaseException:
        os.close(fd)
        os.unlink(temp)
        raise
