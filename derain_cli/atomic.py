"""Atomic file writes: readers see the old file or the whole new one, never a truncated one.

Used for every file the tool writes (images, videos, weights, sha256 sidecars, reports). The
temporary file sits in the destination's folder (same file system, so ``os.replace`` is atomic),
is named ``.NAME.XXXX.tmp`` so image globs do not pick it up, and is removed on any failure.
``tempfile.mkstemp`` creates files readable by the owner only; the final file gets the mode a
plain ``open()`` would give it (0o666 minus the umask), or keeps the mode of the file it replaces.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

#: Temporary files are ``.NAME.XXXX.tmp``; :func:`remove_stale_temps` matches this pattern.
TEMP_GLOB = ".*.tmp"


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """A temporary path beside ``path`` that replaces it only when the block ends cleanly.

    For writers that want a file name rather than a handle (FFmpeg's muxers). The temporary file
    exists (empty) when the block starts; on any exception (or KeyboardInterrupt) it is removed and
    ``path`` is left as it was. Raises ``OSError`` like ``open``.
    """
    path = Path(path)
    folder = path.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        yield Path(tmp_name)
        with open(tmp_name, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp_name, new_file_mode(path))
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_folder(folder)


@contextlib.contextmanager
def atomic_open(path: Path | str) -> Iterator[BinaryIO]:
    """Open a binary handle whose content replaces ``path`` only when the block ends cleanly.

    On any exception (or KeyboardInterrupt) the temporary file is removed and ``path`` is left as
    it was. Raises ``OSError`` like ``open``.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        yield handle
        handle.flush()


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically; raises ``OSError`` (nothing left behind)."""
    with atomic_open(path) as handle:
        handle.write(data)


def remove_stale_temps(folder: Path | str) -> list[Path]:
    """Delete temporary files a process killed mid-write left in ``folder`` (never complete)."""
    removed = []
    for temp in sorted(Path(folder).glob(TEMP_GLOB)):
        with contextlib.suppress(OSError):
            temp.unlink()
            removed.append(temp)
    return removed


def new_file_mode(path: Path) -> int:
    """Keep an existing file's permissions; new files get 0o666 minus the umask, like open()."""
    with contextlib.suppress(OSError):
        return path.stat().st_mode & 0o7777
    return 0o666 & ~_umask()


_UMASK: int | None = None
_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    global _UMASK
    if _UMASK is None:
        with _UMASK_LOCK:  # os.umask can only be read by setting it
            current = os.umask(0o022)
            os.umask(current)
            _UMASK = current
    return _UMASK


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable where the platform allows it (not on Windows)."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
