"""Atomic file writes: readers see the old file or the whole new one, never a truncated one.

Used for every file the tool writes (images, videos, weights, sha256 sidecars, reports). The
temporary file sits in the destination's folder (same file system, so ``os.replace`` is atomic),
is named ``.NAME.derain-PID-XXXX.tmp`` (hidden, so image globs do not pick it up) and is removed
on any failure. A process killed outright (SIGKILL, a power cut) cannot remove it; the PID in the
name lets the next write of the same ``NAME`` find it and remove it once that process is gone
(:func:`make_temp`).
``tempfile.mkstemp`` creates files readable by the owner only; the final file gets the mode a
plain ``open()`` would give it (0o666 minus the umask), or keeps the mode of the file it replaces.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

#: Temporary files are ``.NAME.derain-PID-XXXX.tmp``; :func:`remove_stale_temps` matches this.
TEMP_GLOB = ".*.tmp"
#: The part of a temporary file's name after ``.NAME``: the writing process and a random part.
_OWNED = re.compile(r"\.derain-(\d+)-[a-z0-9_]+\.tmp")


def make_temp(path: Path | str) -> tuple[int, str]:
    """Create ``.NAME.derain-PID-XXXX.tmp`` beside ``path``: ``(fd, name)`` as ``mkstemp`` returns.

    Temporary files of ``path`` left by processes that no longer run (killed mid-write) are
    removed first. Raises ``OSError``.
    """
    path = Path(path)
    remove_orphans(path)
    return tempfile.mkstemp(
        prefix=f".{path.name}.derain-{os.getpid()}-", suffix=".tmp", dir=path.parent
    )


def remove_orphans(path: Path | str) -> list[Path]:
    """Remove the temporary files of ``path`` whose writing process has gone (never complete).

    Only files named by :func:`make_temp` for this very ``path`` are looked at, and only those of
    a process that does not exist any more are removed: a live writer's file is left alone.
    """
    path = Path(path)
    prefix = f".{path.name}"
    removed = []
    for temp in sorted(path.parent.glob(glob.escape(prefix) + ".derain-*.tmp")):
        owned = _OWNED.fullmatch(temp.name[len(prefix) :])
        if owned is None or process_alive(int(owned.group(1))):
            continue
        with contextlib.suppress(OSError):
            temp.unlink()
            removed.append(temp)
    return removed


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (True where that cannot be told)."""
    if os.name != "posix" or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, as another user
        return True
    return True


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """A temporary path beside ``path`` that replaces it only when the block ends cleanly.

    For writers that want a file name rather than a handle (FFmpeg's muxers). The temporary file
    exists (empty) when the block starts; on any exception (or KeyboardInterrupt) it is removed and
    ``path`` is left as it was. Raises ``OSError`` like ``open``.
    """
    path = Path(path)
    folder = path.parent
    fd, tmp_name = make_temp(path)
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


def same_file_key(path: Path) -> str:
    """One string for every name of a file (links, case on case-blind systems): an output must
    never replace its input."""
    return os.path.normcase(os.path.realpath(path))
