"""Where a network runs: the device, the precision, and how much memory is free there.

The one place with these rules, for inference (``derain``), evaluation and training alike:

* devices: ``auto`` (CUDA, then Apple MPS, then the CPU), ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
  A device that is not there is an error, never a silent fallback. Training has no MPS path:
  ``mps`` is refused there with that reason, and its ``auto`` never picks MPS.
* precisions: ``auto`` (bf16 on CUDA, fp32 elsewhere), ``fp32``, ``bf16``, ``fp16``. Half
  precision on the CPU is refused; on MPS inference may use fp16 (and bf16 where the device
  has it), training may not.

Errors are :class:`~derain_cli.errors.UsageError` s that name the value, not a command-line
flag (``device cuda: no CUDA GPU is visible; use cpu or auto``).
"""

from __future__ import annotations

import os

import torch

from derain_cli.errors import UsageError, setting

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str, *, training: bool = False) -> torch.device:
    """The device called ``name`` (see the module docstring), or a :class:`UsageError`."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available() and not training:
            return torch.device("mps")
        return torch.device("cpu")
    bad = f"{setting('device')} {name}"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"{bad}: unknown device (choose from {', '.join(DEVICES)})")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            built = torch.backends.cuda.is_built()
            why = "no CUDA GPU is visible" if built else "this PyTorch build has no CUDA support"
            raise UsageError(f"{bad}: {why}; use cpu or auto")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise UsageError(
                f"{bad}: only {count} CUDA device(s) here (cuda:0 .. cuda:{count - 1})"
            )
    if device.type == "mps":
        if training:
            raise UsageError(f"{bad}: training runs on cpu or cuda only")
        if not mps_available():
            raise UsageError(f"{bad}: Apple Metal (MPS) is not available here; use cpu or auto")
    return device


def resolve_dtype(precision: str, device: torch.device, *, training: bool = False) -> torch.dtype:
    """The compute dtype for ``precision`` on ``device`` (see the module docstring)."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    bad = f"{setting('precision')} {precision}"
    if precision not in DTYPES:
        raise UsageError(f"{bad}: unknown precision (choose from {', '.join(PRECISIONS)})")
    if precision == "fp32" or device.type == "cuda":
        return DTYPES[precision]
    if device.type == "cpu":
        raise UsageError(f"{bad}: half precision is not supported on CPU; use fp32")
    if training:
        raise UsageError(f"{bad}: training in half precision needs CUDA; use fp32")
    if precision == "bf16" and not _mps_bf16_ok():
        raise UsageError(f"{bad}: not supported by this MPS device; use fp16 or fp32")
    return DTYPES[precision]


def _mps_bf16_ok() -> bool:
    try:
        torch.zeros(1, dtype=torch.bfloat16, device="mps")
    except (RuntimeError, TypeError):
        return False
    return True


def describe(device: torch.device, dtype: torch.dtype) -> str:
    """``cuda (NVIDIA H100 80GB HBM3), bf16`` / ``cpu (2 threads), fp32``."""
    if device.type == "cuda":
        where = f"cuda ({torch.cuda.get_device_name(device)})"
    elif device.type == "cpu":
        where = f"cpu ({torch.get_num_threads()} threads)"
    else:
        where = device.type
    return f"{where}, {DTYPE_NAMES[dtype]}"


#: What the memory probes assume where the platform tells nothing.
UNKNOWN_MEMORY_BYTES = 4 * 1024**3


def available_host_bytes() -> int:
    """Memory the OS can give us now (``MemAvailable``), else free physical pages, else a guess
    (:data:`UNKNOWN_MEMORY_BYTES`; :func:`host_bytes_known` says which)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return UNKNOWN_MEMORY_BYTES


def host_bytes_known() -> bool:
    """Whether :func:`available_host_bytes` measures rather than guesses on this platform."""
    if os.path.isfile("/proc/meminfo"):
        return True
    try:
        return os.sysconf("SC_AVPHYS_PAGES") > 0
    except (ValueError, OSError, AttributeError):
        return False


def free_device_bytes(device: torch.device) -> int:
    """Free memory on ``device`` (host RAM for the CPU)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "mps":
        mps = torch.mps
        return int(mps.recommended_max_memory() - mps.driver_allocated_memory())
    return available_host_bytes()
