"""Output folders that cannot be written are refused before any work, not after every image.

A run into a read-only folder (or one below a regular file) would otherwise decode and derain every
input and then fail each write. :func:`check_output_folders` tries, for every folder the planned
outputs go into, to create a temporary file in it (or in its nearest existing ancestor, where the
folder is still to be made): the one test that also holds for root, network file systems and
ACLs, where permission bits or ``os.access`` can say yes to a write that then fails.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

from derain_cli.atomic import make_temp
from derain_cli.errors import UsageError
from derain_cli.inference.plan import Job

#: The name the probe's temporary file is made for (``..derain-write-test.derain-PID-X.tmp``).
PROBE_NAME = ".derain-write-test"


def check_output_folders(jobs: Iterable[Job], *, overwrite: bool = False) -> None:
    """Raise :class:`UsageError` for the first output folder that cannot be written or created.

    Only outputs that will be written count: an existing output is written only with
    ``overwrite`` (else it is skipped or refused on its own). Standard output is not a folder.
    """
    probed: set[Path] = set()
    outputs = [job.output for job in jobs if job.output is not None]
    for folder in sorted({out.parent for out in outputs if overwrite or not os.path.lexists(out)}):
        existing = _nearest_existing(folder)
        if existing in probed:
            continue
        if not existing.is_dir():
            raise UsageError(f"{folder}: output folder cannot be created ({existing} is a file)")
        reason = _write_error(existing)
        if reason is not None:
            if existing == folder:
                raise UsageError(f"{folder}: output folder cannot be written ({reason})")
            raise UsageError(
                f"{folder}: output folder cannot be created ({existing} cannot be written: "
                f"{reason})"
            )
        probed.add(existing)


def _nearest_existing(folder: Path) -> Path:
    for candidate in (folder, *folder.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(".")


def _write_error(folder: Path) -> str | None:
    """Why a file cannot be created in ``folder`` (None: it can; the test file is removed)."""
    try:
        fd, name = make_temp(folder / PROBE_NAME)
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)
    return None
