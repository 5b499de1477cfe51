"""A lower bound on one training step's memory, checked before the first step.

A step keeps every activation of G_B(O), G_R(O) and D(B) for the backward pass, so its memory
grows with ``batch x crop^2``. The bound counts the outputs of every leaf module in one forward
pass of the three networks on a small probe image, scales it to the batch and crop, and compares
it with the memory the device has free. It is a lower bound (the gradients, the optimiser state,
the contrastive features and the synthetic crops come on top), so a refusal is never a false
alarm: a step that needs more than the machine has would end in an out-of-memory kill instead.
"""

from __future__ import annotations

import torch
from torch import nn

from derain_cli import runtime
from derain_cli.errors import UsageError

#: Side of the probe image, pixels (a multiple of every network's cell size).
PROBE = 64


def activation_bytes(
    networks: list[nn.Module], crop: int, batch: int, dtype: torch.dtype, device: torch.device
) -> int:
    """Bytes of the forward activations of ``networks`` (run in turn) at ``batch x crop^2``."""
    kept: dict[int, int] = {}  # storage address -> elements, per network
    alive: list[torch.Tensor] = []  # held so that no address is reused within a network

    def hook(_module: nn.Module, _inputs: object, output: object) -> None:
        outputs = output if isinstance(output, tuple | list) else (output,)
        for tensor in outputs:
            if isinstance(tensor, torch.Tensor):  # in-place ops (ReLU) share their input's storage
                kept[tensor.untyped_storage().data_ptr()] = tensor.numel()
                alive.append(tensor)

    leaves = [m for net in networks for m in net.modules() if not any(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            x = torch.zeros(1, 3, PROBE, PROBE, device=device)
            count = 0
            for net in networks:
                net(x)
                count += sum(kept.values())
                kept.clear()
                alive.clear()
    finally:
        for handle in handles:
            handle.remove()
    element = torch.empty((), dtype=dtype).element_size()
    return int(count * (crop / PROBE) ** 2 * batch * element)


def available_bytes(device: torch.device) -> int | None:
    """Free memory of ``device`` (CPU: the kernel's MemAvailable); ``None`` when unknown."""
    if device.type == "cpu" and not runtime.host_bytes_known():
        return None
    if device.type not in ("cpu", "cuda"):
        return None
    return runtime.free_device_bytes(device)


def check_step_memory(
    networks: list[nn.Module],
    crop: int,
    batch: int,
    dtype: torch.dtype,
    device: torch.device,
    available: int | None = None,
) -> int:
    """The bound in bytes; :class:`UsageError` when it is more than the device has free."""
    needed = activation_bytes(networks, crop, batch, dtype, device)
    free = available_bytes(device) if available is None else available
    if free is not None and needed > free:
        raise UsageError(
            f"a training step at batch {batch} x {crop} px needs at least {needed / 2**30:.1f} GB "
            f"on {device}, which has {free / 2**30:.1f} GB free: lower the crop or the batch size"
        )
    return needed
