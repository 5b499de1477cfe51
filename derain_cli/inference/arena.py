"""Host memory of a streamed run: its budget, and buffers in RAM or in memory-mapped files.

A streamed run (see :mod:`derain_cli.inference.stream_plan`) keeps a few full-resolution
activations on the host. :class:`HostArena` hands them out: in RAM while they fit the budget
(``$DERAIN_HOST_MEMORY_MB``, default half the memory available now), else in memory-mapped
temporary files under :func:`spill_directory` (``$DERAIN_TMPDIR``, or the system temp folder when
it is on disk), which are unlinked at once and whose folder is removed when the image is done,
failed or interrupted. Disk space is reserved up front, so a full disk is an error message, not a
SIGBUS.
"""

from __future__ import annotations

import errno
import math
import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType

import torch

from derain_cli.errors import DerainError, UsageError

#: Fraction of the host memory available now that the streamed path's full-resolution buffers
#: may take before they move to memory-mapped temporary files.
HOST_MEMORY_FRACTION = 0.5
#: Environment variable: host memory budget in megabytes (MiB) for the streamed path's buffers.
HOST_MEMORY_ENV = "DERAIN_HOST_MEMORY_MB"
#: Environment variable: folder for the memory-mapped buffers (default: the system temp folder).
TMPDIR_ENV = "DERAIN_TMPDIR"


def host_memory_from_env() -> int | None:
    """``$DERAIN_HOST_MEMORY_MB`` in bytes (None when unset); malformed values are UsageErrors."""
    text = os.environ.get(HOST_MEMORY_ENV, "").strip()
    if not text:
        return None
    try:
        megabytes = float(text)
    except ValueError:
        megabytes = -1.0
    if not megabytes >= 0:  # also rejects nan
        raise UsageError(f"{HOST_MEMORY_ENV}={text}: expected a number of megabytes >= 0")
    return int(megabytes * 2**20)


def _filesystem_type(path: Path) -> str:
    """Type of the filesystem holding ``path`` from ``/proc/mounts`` ("" where unknown)."""
    try:
        mounts = Path("/proc/mounts").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    best, kind = "", ""
    target = str(path.resolve())
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = fields[1].replace("\\040", " ")
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) > len(best):
            best, kind = mount, fields[2]
    return kind


def spill_directory() -> Path:
    """Where memory-mapped buffers go: ``$DERAIN_TMPDIR``, else the system temp folder.

    A temp folder on ``tmpfs`` (RAM-backed, the default ``/tmp`` on several Linux distributions)
    would not relieve memory at all, so ``/var/tmp`` (on disk) is used instead when it exists.
    """
    configured = os.environ.get(TMPDIR_ENV, "").strip()
    if configured:
        path = Path(configured).expanduser()
        if not path.is_dir():
            raise UsageError(f"{TMPDIR_ENV}={configured}: not an existing folder")
        return path
    default = Path(tempfile.gettempdir())
    var_tmp = Path("/var/tmp")
    if _filesystem_type(default) == "tmpfs" and var_tmp.is_dir() and os.access(var_tmp, os.W_OK):
        return var_tmp
    return default


class HostArena:
    """Full-resolution host buffers of one streamed run: in RAM or memory-mapped files.

    ``take`` returns a released buffer of the same shape when there is one; ``allocated`` counts
    the bytes of new buffers (what :func:`host_buffer_bytes` predicts). With ``spill_to`` every
    new buffer is a file in a private temporary folder under it, mapped with ``torch.from_file``
    and, on POSIX, unlinked at once (the mapping keeps the data), so that nothing is left behind
    even if the process is killed; the folder is removed on exit, also after an error or Ctrl-C.
    """

    def __init__(
        self, *, pin: bool, channels_last: bool, spill_to: Path | None, spill_bytes: int = 0
    ) -> None:
        self.pin = pin
        self.channels_last = channels_last
        self.spill_to = spill_to
        self.spill_bytes = spill_bytes
        self.allocated = 0
        self.directory: Path | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._buffers: list[torch.Tensor] = []  # released, reusable

    def __enter__(self) -> HostArena:
        if self.spill_to is not None:
            try:
                free = shutil.disk_usage(self.spill_to).free
                self._tmp = tempfile.TemporaryDirectory(
                    prefix="derain-", dir=self.spill_to, ignore_cleanup_errors=True
                )
            except OSError as exc:
                raise UsageError(
                    f"{self.spill_to}: cannot create temporary files ({exc.strerror}); "
                    f"set {TMPDIR_ENV} to a writable folder"
                ) from exc
            if free < self.spill_bytes:
                self._tmp.cleanup()
                raise _no_space(self.spill_to, self.spill_bytes, free)
            self.directory = Path(self._tmp.name)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._buffers.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def take(self, shape: tuple[int, int, int, int], dtype: torch.dtype) -> torch.Tensor:
        for index, buffer in enumerate(self._buffers):
            if buffer.shape == shape and buffer.dtype == dtype:
                return self._buffers.pop(index)
        self.allocated += math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
        if self.directory is not None:
            return self._mapped(shape, dtype)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return torch.empty(shape, dtype=dtype, pin_memory=self.pin, memory_format=memory_format)

    def give(self, buffer: torch.Tensor) -> None:
        self._buffers.append(buffer)

    def _mapped(self, shape: tuple[int, int, int, int], dtype: torch.dtype) -> torch.Tensor:
        assert self.directory is not None
        numel = math.prod(shape)
        nbytes = numel * torch.empty(0, dtype=dtype).element_size()
        fd, name = tempfile.mkstemp(prefix="buffer-", suffix=".bin", dir=self.directory)
        try:
            _reserve(fd, nbytes, self.directory)
        finally:
            os.close(fd)
        flat = torch.from_file(name, shared=True, size=numel, dtype=dtype)
        if os.name == "posix":
            os.unlink(name)  # the mapping keeps the pages; nothing survives the process
        batch, channels, height, width = shape
        if self.channels_last:
            return flat.view(batch, height, width, channels).permute(0, 3, 1, 2)
        return flat.view(shape)


def _reserve(fd: int, nbytes: int, directory: Path) -> None:
    """Give the file its size, reserving the disk blocks now where the OS can.

    Writing to a memory-mapped page that the disk has no room for kills the process (SIGBUS);
    reserving up front turns that into an error message instead.
    """
    allocate = getattr(os, "posix_fallocate", None)
    if allocate is not None:
        try:
            allocate(fd, 0, nbytes)
            return
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG):
                raise _no_space(directory, nbytes, shutil.disk_usage(directory).free) from exc
            # filesystems without fallocate (EOPNOTSUPP, EINVAL): a sparse file will do
    os.ftruncate(fd, nbytes)


def _no_space(directory: Path, needed: int, free: int) -> DerainError:
    return DerainError(
        f"{directory}: not enough free disk space for the image's temporary buffers "
        f"({needed / 2**30:.1f} GiB needed, {free / 2**30:.1f} GiB free); set {TMPDIR_ENV} to "
        f"another folder or raise {HOST_MEMORY_ENV}"
    )
