"""The derainer: device and precision choice, automatic tiling, InstanceNorm-exact tiles.

``Derainer(weights)(rgb)`` maps an ``H x W x 3`` float32 image in [0, 1] to the derained image,
running the generator once per image (or once per tile) in ``torch.inference_mode()``.

Tiling and InstanceNorm. The authors' generator normalises every channel over the WHOLE image
(InstanceNorm, ``affine=False``), so running it on tiles with per-tile statistics changes the
result and shows seams. For such networks tiles are computed *layer-streamed*: the traced network
is cut at every InstanceNorm that uses per-image statistics; each piece between two of them is
local (convolutions, pads, activations, residual sums) with a small receptive radius (1-3 px for
the authors' net). Pieces run tile by tile on the device (full-width strips of about ``tile**2``
pixels, so each host<->device copy is one contiguous block), with a halo equal to that radius, and
their outputs are kept at full resolution on the host while the exact whole-image per-channel
sum and sum of squares of every InstanceNorm input are accumulated (float64). The next piece then
normalises with these frozen whole-image statistics. The result equals the untiled output up to
floating-point rounding; only tiles (and one mean/std vector per norm) ever reach the device.

Host memory of the streamed path. A piece whose input is not needed afterwards writes its output
over that input (delaying the few rows that later tiles still read as halo), so the authors' net
keeps two full-resolution 32-channel tensors on the host instead of four. When even those exceed
the host budget (``host_memory``, ``$DERAIN_HOST_MEMORY_MB``, default half the memory available
now) they live in memory-mapped temporary files (``$DERAIN_TMPDIR`` or the system temp folder),
which the strip-by-strip access pattern lets the OS page cache serve well; the files are removed
when the image is done, failed or interrupted.

Space-to-depth networks (:class:`CellNetwork`, e.g. ``nlcl-s2d``) are
``from_cells(x, gen(to_cells(x)))``: the lossless rearrangements run on the host and ``gen`` is
streamed as above over the cell grid, so they tile exactly too.

Space-to-depth networks without norms (``norm = "none"``) are streamed the same way: one
segment, whose halo is ``gen``'s whole receptive radius, so their tiles are exact too. Other
networks without such a norm are tiled the classic way: overlapping tiles blended with cosine
feathering (``tiling.py``). See ``docs/inference.md`` for the measured agreement.
"""

from __future__ import annotations

import errno
import math
import operator
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from derain_cli.errors import DerainError, UsageError
from derain_cli.inference.tiling import (
    Blender,
    Box,
    InPlaceWrite,
    in_place_schedule,
    plan_tiles,
    strip_tiles,
    with_halo,
)

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_DTYPE_NAMES = {dtype: name for name, dtype in _DTYPES.items()}

#: Largest automatic tile on CPU: bigger tiles only grow the working set, they are not faster.
CPU_MAX_TILE = 1024
#: Smallest automatic tile: below this the halo and per-tile overhead dominate.
MIN_AUTO_TILE = 128
#: Live full-width activations at the peak of one forward step of a residual block (block input,
#: padded copy, conv output, norm output) plus one for the allocator's slack.
LIVE_ACTIVATIONS = 5
#: Bytes per element assumed for every precision: measured peaks on an H200 were 653 B/px (fp32)
#: and 455 B/px (bf16; norms and layout conversions keep float32 temporaries) for 32 channels.
ESTIMATE_ITEMSIZE = 4
#: Fraction of the free memory that automatic tiling plans to use.
MEMORY_FRACTION = 0.5
#: Fraction of the host memory available now that the streamed path's full-resolution buffers
#: may take before they move to memory-mapped temporary files.
HOST_MEMORY_FRACTION = 0.5
#: Environment variable: host memory budget in megabytes (MiB) for the streamed path's buffers.
HOST_MEMORY_ENV = "DERAIN_HOST_MEMORY_MB"
#: Environment variable: folder for the memory-mapped buffers (default: the system temp folder).
TMPDIR_ENV = "DERAIN_TMPDIR"


class HasModule(Protocol):
    """What the derainer needs from ``derain_cli.weights.LoadedWeights``."""

    module: nn.Module


class CellNetwork(Protocol):
    """A generator that is ``from_cells(x, gen(to_cells(x)))`` (e.g. ``nlcl-s2d``).

    ``to_cells`` and ``from_cells`` are lossless, parameter-free rearrangements (space-to-depth
    and back, padding and cropping, the output parametrisation) that run on the host; ``gen`` is
    the part with convolutions and norms, which is streamed tile by tile over the cell grid.
    ``factor`` is the cell side in pixels.
    """

    factor: int
    gen: nn.Module

    def to_cells(self, x: torch.Tensor) -> torch.Tensor: ...

    def from_cells(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...


def cell_network(module: nn.Module) -> CellNetwork | None:
    """``module`` as a :class:`CellNetwork` when it has that shape, else None."""
    parts = (getattr(module, name, None) for name in ("to_cells", "from_cells"))
    if not all(callable(part) for part in parts):
        return None
    if not isinstance(getattr(module, "gen", None), nn.Module):
        return None
    if not isinstance(getattr(module, "factor", None), int):
        return None
    return module  # type: ignore[return-value]


# --------------------------------------------------------------------------- device, dtype


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda, then mps, then cpu; a named device that is absent is a UsageError.

    Never falls back silently: asking for ``cuda`` on a machine without it is an error.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            built = torch.backends.cuda.is_built()
            why = "no CUDA GPU is visible" if built else "this PyTorch build has no CUDA support"
            raise UsageError(f"--device cuda: {why}; use --device cpu or --device auto")
        return torch.device("cuda")
    if name == "mps":
        if not _mps_available():
            raise UsageError(
                "--device mps: Apple Metal (MPS) is not available here; use --device cpu or auto"
            )
        return torch.device("mps")
    raise UsageError(f"--device {name}: unknown device (choose from {', '.join(DEVICES)})")


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """``auto`` -> bf16 on CUDA, fp32 elsewhere; half precision on CPU is a UsageError."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if precision not in _DTYPES:
        raise UsageError(
            f"--precision {precision}: unknown precision (choose from {', '.join(PRECISIONS)})"
        )
    if device.type == "cpu" and precision != "fp32":
        raise UsageError(
            f"half precision ({precision}) is not supported on CPU; use --precision fp32"
        )
    if device.type == "mps" and precision == "bf16" and not _mps_bf16_ok():
        raise UsageError("bf16 is not supported by this MPS device; use --precision fp16 or fp32")
    return _DTYPES[precision]


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
    return f"{where}, {_DTYPE_NAMES[dtype]}"


# --------------------------------------------------------------------------- memory


def available_host_bytes() -> int:
    """Memory the OS can give us now (``MemAvailable``), falling back to free physical pages."""
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
        return 4 * 1024**3  # unknown platform: assume a modest 4 GiB


def free_device_bytes(device: torch.device) -> int:
    """Free memory on ``device`` (host RAM for the CPU)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "mps":
        mps = torch.mps
        return int(mps.recommended_max_memory() - mps.driver_allocated_memory())
    return available_host_bytes()


def bytes_per_pixel(module: nn.Module) -> int:
    """Estimated peak activation bytes per image pixel of one forward pass of ``module``.

    ``widest conv output channels x 4 B x LIVE_ACTIVATIONS``: the generators here keep full
    resolution, so activations, not weights, fill the memory (32 x 4 x 5 = 640 B/px for the
    authors' net; measured on CUDA: 653 B/px in fp32, 455 B/px in bf16).
    """
    widths = [m.out_channels for m in module.modules() if isinstance(m, nn.Conv2d)]
    return max(widths, default=3) * ESTIMATE_ITEMSIZE * LIVE_ACTIVATIONS


def auto_tile(height: int, width: int, device: torch.device, per_pixel: int) -> int:
    """Tile side for an image on ``device`` (0 = no tiling), from the memory free right now."""
    budget = free_device_bytes(device) * MEMORY_FRACTION
    side = max(MIN_AUTO_TILE, int(math.sqrt(budget / per_pixel)) // 64 * 64)
    if device.type == "cpu":
        side = min(side, CPU_MAX_TILE)
        return 0 if height <= side and width <= side else side
    return 0 if height * width * per_pixel <= budget else side


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


# --------------------------------------------------------------------------- streaming plan


class _Unsupported(Exception):
    """The traced network contains an operation the layer streamer cannot tile exactly."""


_PAD_MODULES = (nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d)
_POINTWISE_MODULES = (
    *_PAD_MODULES,
    nn.ReLU,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ReLU6,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
    nn.Hardtanh,
    nn.Identity,
    nn.Dropout,
)
_POINTWISE_FUNCTIONS = {
    operator.add,
    operator.sub,
    operator.mul,
    operator.truediv,
    operator.neg,
    torch.add,
    torch.sub,
    torch.mul,
    torch.tanh,
    torch.sigmoid,
    torch.relu,
    torch.clamp,
    F.relu,
    F.leaky_relu,
    F.gelu,
    F.silu,
    F.pad,
}
_POINTWISE_METHODS = {"add", "sub", "mul", "div", "clamp", "tanh", "sigmoid", "relu", "neg"}


def _instance_norm_types() -> tuple[type[nn.Module], ...]:
    return (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


def needs_image_statistics(module: nn.Module) -> bool:
    """True for a norm layer that normalises with statistics of the whole input image."""
    if isinstance(module, _instance_norm_types()):
        norm: Any = module
        return not (norm.track_running_stats and not norm.training)
    return isinstance(module, nn.GroupNorm | nn.LayerNorm | nn.LocalResponseNorm)


def _own_radius(gm: fx.GraphModule, node: fx.Node) -> int:
    """Receptive radius (pixels) that ``node`` adds on top of its inputs'."""
    if node.op == "call_module":
        module = gm.get_submodule(str(node.target))
        if isinstance(module, nn.Conv2d):
            if module.stride != (1, 1):
                raise _Unsupported(f"strided convolution {node.target}")
            dilation = module.dilation
            kernel = module.kernel_size
            return max(d * (k - 1) // 2 for d, k in zip(dilation, kernel, strict=True))
        if isinstance(module, _POINTWISE_MODULES):
            return 0
        if isinstance(module, nn.BatchNorm2d) and not module.training:
            return 0
        if isinstance(module, _instance_norm_types()) and not needs_image_statistics(module):
            return 0
        raise _Unsupported(f"module {type(module).__name__} at {node.target}")
    if node.op == "call_function" and node.target in _POINTWISE_FUNCTIONS:
        return 0
    if node.op == "call_method" and node.target in _POINTWISE_METHODS:
        return 0
    raise _Unsupported(f"{node.op} {node.target}")


@dataclass
class Segment:
    """One piece of the network between two image-statistics norms."""

    nodes: list[fx.Node]  # executed in this order on every tile
    inputs: list[fx.Node]  # full-resolution host tensors the piece reads
    stores: list[fx.Node]  # outputs kept at full resolution on the host
    target: fx.Node  # input of the next norm (or the network output)
    halo: int  # receptive radius of the piece: context read around each tile
    release: list[fx.Node]  # host tensors no longer needed after this piece
    measured: list[fx.Node]  # stored outputs that feed a norm: whole-image stats gathered
    mutated: set[fx.Node]  # inputs that an in-place layer would overwrite: always copied
    #: store -> released input of the same shape whose host buffer the store takes over
    reuse: dict[fx.Node, fx.Node] = field(default_factory=dict)


@dataclass
class StreamPlan:
    """The network cut at its image-statistics norms into locally computable segments."""

    graph: fx.GraphModule
    placeholder: fx.Node
    segments: list[Segment]
    norms: dict[fx.Node, nn.Module]  # norm node -> its module (eps, affine parameters)


def build_stream_plan(module: nn.Module) -> StreamPlan:
    """Trace ``module`` and cut it at every image-statistics norm.

    Raises :class:`_Unsupported` for layouts the streamer cannot run exactly (strided or
    resampling layers, global pooling, attention, several inputs or outputs).
    """
    try:
        gm = fx.symbolic_trace(module)
    except Exception as exc:  # tracing failures come in many types; the caller falls back
        raise _Unsupported(f"cannot trace: {exc}") from exc
    nodes = list(gm.graph.nodes)
    order = {node: i for i, node in enumerate(nodes)}
    placeholders = [n for n in nodes if n.op == "placeholder"]
    outputs = [n for n in nodes if n.op == "output"]
    if len(placeholders) != 1 or len(outputs) != 1 or not isinstance(outputs[0].args[0], fx.Node):
        raise _Unsupported("network must map one tensor to one tensor")
    if any(n.op == "get_attr" for n in nodes):
        raise _Unsupported("network reads parameters outside modules")
    norms: dict[fx.Node, nn.Module] = {}
    for node in nodes:
        if node.op == "call_module":
            sub = gm.get_submodule(str(node.target))
            if needs_image_statistics(sub):
                if not isinstance(sub, nn.InstanceNorm2d):
                    raise _Unsupported(f"{type(sub).__name__} at {node.target}")
                norms[node] = sub
    _check_shapes(gm, nodes, norms)

    placeholder, result = placeholders[0], outputs[0].args[0]
    assert isinstance(result, fx.Node)
    norm_inputs = [_only_input(norm) for norm in norms]
    targets = [*norm_inputs, result]
    materialised = {placeholder}
    computed: set[fx.Node] = {placeholder}
    segments: list[Segment] = []
    for target in targets:
        if target in materialised:  # e.g. two norms reading the same tensor
            continue
        members: set[fx.Node] = set()
        inputs: set[fx.Node] = set()
        stack = [target]
        while stack:
            node = stack.pop()
            if node in materialised:
                inputs.add(node)
            elif node not in members:
                members.add(node)
                stack.extend(node.all_input_nodes)
        ordered = sorted(members, key=order.__getitem__)
        radius: dict[fx.Node, int] = {}
        for node in ordered:
            inner = [radius[a] for a in node.all_input_nodes if a in members]
            own = 0 if node in norms else _own_radius(gm, node)
            radius[node] = max(inner, default=0) + own
        stores = [
            node
            for node in ordered
            if node is target or any(user not in members for user in node.users)
        ]
        computed |= members
        materialised |= set(stores)
        release = [
            node
            for node in sorted(materialised, key=order.__getitem__)
            if node is not result and all(user in computed for user in node.users)
        ]
        materialised -= set(release)
        reusable = [node for node in release if node in inputs]
        reuse: dict[fx.Node, fx.Node] = {}
        for node in stores:
            match = next((r for r in reusable if _channels(r) == _channels(node)), None)
            if match is not None:
                reuse[node] = match
                reusable.remove(match)
        segments.append(
            Segment(
                nodes=ordered,
                inputs=sorted(inputs, key=order.__getitem__),
                stores=stores,
                target=target,
                halo=max(radius[s] for s in stores),
                release=release,
                measured=[node for node in stores if node in norm_inputs],
                mutated={node for node in inputs if _mutated_in_place(gm, node, members)},
                reuse=reuse,
            )
        )
    return StreamPlan(graph=gm, placeholder=placeholder, segments=segments, norms=norms)


def _channels(node: fx.Node) -> int:
    """Channel count of a traced tensor (from the shape propagation in ``_check_shapes``)."""
    return int(node.meta["tensor_meta"].shape[1])


def host_buffer_bytes(plan: StreamPlan, height: int, width: int, itemsize: int) -> int:
    """Bytes of the full-resolution host buffers a streamed run of ``plan`` allocates.

    Mirrors :meth:`Derainer._run_streamed`: a store that takes over a released input's buffer
    costs nothing, a released buffer is reused by a later store of the same shape, and every
    buffer stays allocated until the image is done. The input tensor itself is not counted.
    """
    spare: list[int] = []
    total = 0
    for segment in plan.segments:
        for node in segment.stores:
            if node in segment.reuse:
                continue
            channels = _channels(node)
            if channels in spare:
                spare.remove(channels)
            else:
                total += channels * height * width * itemsize
        taken = set(segment.reuse.values())
        spare += [_channels(node) for node in segment.release if node not in taken]
    return total


def _mutated_in_place(gm: fx.GraphModule, node: fx.Node, members: set[fx.Node]) -> bool:
    """Whether a layer of the segment may write into ``node``'s tensor (``ReLU(inplace=True)``)."""
    for user in node.users:
        if user not in members:
            continue
        if user.op == "call_module":
            if getattr(gm.get_submodule(str(user.target)), "inplace", False):
                return True
        elif user.op == "call_method" and str(user.target).endswith("_"):
            return True
        elif user.kwargs.get("inplace", False):
            return True
    return False


def _only_input(node: fx.Node) -> fx.Node:
    if len(node.all_input_nodes) != 1 or node.kwargs:
        raise _Unsupported(f"norm {node.target} must take exactly one tensor")
    return node.all_input_nodes[0]


def _check_shapes(gm: fx.GraphModule, nodes: list[fx.Node], norms: dict[fx.Node, Any]) -> None:
    """Every tensor kept on the host or normalised must have the image's spatial size."""
    side = 24
    first = next((m for m in gm.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise _Unsupported("no convolution to infer the input channels from")
    weight = first.weight
    probe = torch.zeros(1, first.in_channels, side, side, device=weight.device, dtype=weight.dtype)
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(probe)
    except (RuntimeError, ValueError, TypeError) as exc:
        # e.g. a pixel-unshuffle front whose first conv expects 3 r^2 channels, not 3
        raise _Unsupported(f"cannot probe the traced network's shapes: {exc}") from None
    for node in nodes:
        if node.op in ("output",):
            continue
        meta = node.meta.get("tensor_meta")
        shape = getattr(meta, "shape", None)
        spatial_ok = shape is not None and len(shape) == 4 and tuple(shape[-2:]) == (side, side)
        if not spatial_ok and not _is_pad(gm, node):
            raise _Unsupported(f"{node.name} changes the spatial size ({shape})")


def _is_pad(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Padding grows a tensor by a few pixels only for the convolution right after it."""
    if node.op == "call_module":
        return isinstance(gm.get_submodule(str(node.target)), _PAD_MODULES)
    return node.op == "call_function" and node.target is F.pad


# --------------------------------------------------------------------------- derainer


#: Images narrower or shorter than this are edge-padded to it before the network runs.
MIN_SIDE = 8
#: Smallest tile side, in cells, when a cell network is streamed (below it the halo dominates).
MIN_CELL_TILE = 16


def _to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """H x W x 3 float [0, 1] -> 1 x 3 x H x W float32 in [-1, 1] (the authors' convention)."""
    tensor = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32))
    return tensor.permute(2, 0, 1).unsqueeze(0).mul(2.0).sub(1.0)


def _to_image(tensor: torch.Tensor) -> np.ndarray:
    """1 x 3 x H x W in [-1, 1] (any dtype/device) -> H x W x 3 float32 in [0, 1], clipped."""
    out = tensor.float().add(1.0).mul(0.5).clamp_(0.0, 1.0)
    return out[0].permute(1, 2, 0).cpu().numpy().astype(np.float32, copy=False)


class Derainer:
    """Runs a background generator G_B on images: ``Derainer(weights)(rgb) -> rgb``.

    ``weights`` is a :class:`derain_cli.weights.LoadedWeights` (anything with ``.module``) or a
    bare ``nn.Module``; the module is put in eval mode and moved to the device once (in place).
    ``tile``: None picks a tile size from the free memory for each image (0 = no tiling when it
    fits), 0 never tiles, N uses N x N tiles. ``overlap`` is the width of the feathered overlap
    between tiles (at most a quarter of the tile) for networks without image-statistics norms;
    InstanceNorm networks are tiled exactly (module docstring) and need no blending.
    ``host_memory``: bytes of host RAM the full-resolution buffers of such a tiled run may take
    before they are memory-mapped to temporary files (None: ``$DERAIN_HOST_MEMORY_MB``, else half
    the memory available at each call; 0 always uses files).

    Calls are serialised by a lock, so one worker thread may run the model while others decode.
    """

    def __init__(
        self,
        weights: HasModule | nn.Module,
        *,
        device: str = "auto",
        precision: str = "auto",
        tile: int | None = None,
        overlap: int = 32,
        host_memory: int | None = None,
    ) -> None:
        module = weights if isinstance(weights, nn.Module) else getattr(weights, "module", None)
        if not isinstance(module, nn.Module):
            raise TypeError(f"expected LoadedWeights or nn.Module, got {type(weights).__name__}")
        if tile is not None and tile < 0:
            raise UsageError(f"--tile {tile}: must be 0 (off) or a positive number of pixels")
        if overlap < 0:
            raise UsageError(f"--overlap {overlap}: must be >= 0")
        if host_memory is not None and host_memory < 0:
            raise UsageError(f"host memory budget {host_memory}: must be >= 0 bytes")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(precision, self.device)
        self.tile = tile
        self.overlap = overlap
        self.host_memory = host_memory if host_memory is not None else host_memory_from_env()
        #: Whether the last streamed run kept its buffers in memory-mapped files.
        self.spilled = False
        self.arch: str = str(getattr(weights, "arch", type(module).__name__))
        self.description = describe(self.device, self.dtype)
        module.eval()
        self.stream_plan: StreamPlan | None
        self.unsupported_reason = ""
        #: Set for ``from_cells(x, gen(to_cells(x)))`` networks: tiles stream ``gen`` over cells.
        self.cells = cell_network(module)
        streamed = self.cells.gen if self.cells is not None else module
        has_norms = any(needs_image_statistics(m) for m in module.modules())
        try:
            # Cell networks stream even without norms: one segment whose halo is gen's whole
            # receptive radius gives exact tiles, where feathering would blend two answers.
            wanted = has_norms or self.cells is not None
            self.stream_plan = build_stream_plan(streamed) if wanted else None
        except _Unsupported as exc:
            self.stream_plan, self.unsupported_reason = None, str(exc)
        self.needs_statistics = has_norms
        self.channels_last = self.device.type == "cuda"
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        # torch's stubs omit Module.to(memory_format=...), which it accepts at runtime.
        self.module = module.to(  # type: ignore[call-overload]
            device=self.device, dtype=self.dtype, memory_format=memory_format
        )
        self.bytes_per_pixel = bytes_per_pixel(streamed)
        if self.cells is not None:  # activations live on the cell grid: factor^2 pixels a cell
            self.bytes_per_pixel = max(1, self.bytes_per_pixel // self.cells.factor**2)
        self._lock = threading.Lock()

    # ----------------------------------------------------------------------- public

    def tile_for(self, height: int, width: int) -> int:
        """The tile side used for a ``height x width`` image (0 = the image runs in one piece)."""
        if self.tile == 0:
            return 0
        if self.tile is not None:
            return 0 if height <= self.tile and width <= self.tile else self.tile
        side = auto_tile(height, width, self.device, self.bytes_per_pixel)
        if side and self.needs_statistics and self.stream_plan is None:
            return 0  # cannot tile this network exactly: run it whole and let memory decide
        return side

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """Derain one ``H x W x 3`` float32 image in [0, 1]; returns the same shape in [0, 1]."""
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an H x W x 3 image, got shape {rgb.shape}")
        height, width = rgb.shape[:2]
        if height < MIN_SIDE or width < MIN_SIDE:
            # InstanceNorm needs more than one pixel and 3x3 convs see mostly padding on tiny
            # inputs: run on an edge-replicated canvas of MIN_SIDE and crop the result back.
            padded = np.pad(
                rgb,
                ((0, max(0, MIN_SIDE - height)), (0, max(0, MIN_SIDE - width)), (0, 0)),
                mode="edge",
            )
            return self(padded)[:height, :width]
        with self._lock, torch.inference_mode():
            tile = self.tile_for(height, width)
            if tile == 0:
                return _to_image(self.module(self._device_tensor(_to_tensor(rgb))))
            if self.needs_statistics or (self.cells is not None and self.stream_plan):
                return self._run_streamed(rgb, tile)
            return self._run_feathered(rgb, tile)

    # ----------------------------------------------------------------------- internals

    def _device_tensor(self, host: torch.Tensor) -> torch.Tensor:
        """Copy (never alias: in-place layers must not touch host tensors) to device and dtype."""
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return host.to(device=self.device, dtype=self.dtype, memory_format=memory_format, copy=True)

    def _run_feathered(self, rgb: np.ndarray, tile: int) -> np.ndarray:
        height, width = rgb.shape[:2]
        boxes = plan_tiles(height, width, tile, min(self.overlap, tile // 4))
        blender = Blender(height, width, 3, boxes)
        for box in boxes:
            piece = self.module(self._device_tensor(_to_tensor(rgb[box.slices])))
            blender.add(box, _to_image(piece))
        return blender.result()

    def _run_streamed(self, rgb: np.ndarray, tile: int) -> np.ndarray:
        plan = self.stream_plan
        if plan is None:
            raise UsageError(
                f"cannot tile architecture {self.arch!r} exactly ({self.unsupported_reason}); "
                "use --tile 0"
            )
        image = _to_tensor(rgb)
        if self.cells is not None:
            # Rearrange on the host (lossless), stream gen over the cells, rearrange back.
            cells = self.cells.to_cells(image)
            tile = max(MIN_CELL_TILE, tile // self.cells.factor)
            out = self._stream(plan, cells.to(self.dtype), tile).float()
            return _to_image(self._from_cells_in_strips(image, out, tile * self.cells.factor))
        return _to_image(self._stream(plan, image.to(self.dtype), tile))

    def _from_cells_in_strips(
        self, image: torch.Tensor, out: torch.Tensor, tile: int
    ) -> torch.Tensor:
        """``from_cells(image, out)`` over full-width strips of about ``tile**2`` pixels.

        A network whose ``from_cells`` has layers of its own (``from_cells_halo`` > 0: the
        pixels of context they read) would otherwise run them on the whole image at once. Each
        strip is read with that halo, rounded out to whole cells, and only its core is kept.
        """
        assert self.cells is not None
        halo = int(getattr(self.cells, "from_cells_halo", 0))
        height, width = image.shape[-2:]
        r = self.cells.factor
        rows = max(r, (tile * tile // max(width, 1)) // r * r)
        if not halo or rows >= height:
            return self.cells.from_cells(image, out)
        pieces = []
        for y0 in range(0, height, rows):
            y1 = min(height, y0 + rows)
            a = max(0, y0 - halo) // r * r
            b = min(height, -(-(y1 + halo) // r) * r)
            piece = self.cells.from_cells(image[..., a:b, :], out[..., a // r : b // r + 1, :])
            pieces.append(piece[..., y0 - a : y1 - a, :])
        return torch.cat(pieces, dim=-2)

    def _stream(self, plan: StreamPlan, x: torch.Tensor, tile: int) -> torch.Tensor:
        """The streamed network's output for host tensor ``x`` (1, C, H, W), a host copy."""
        height, width = x.shape[-2:]
        itemsize = torch.empty(0, dtype=self.dtype).element_size()
        needed = host_buffer_bytes(plan, height, width, itemsize)
        budget = self.host_memory
        if budget is None:
            budget = int(available_host_bytes() * HOST_MEMORY_FRACTION)
        spill = spill_directory() if needed > budget else None
        self.spilled = spill is not None
        arena = _HostArena(
            pin=self.device.type == "cuda" and spill is None,
            channels_last=self.channels_last,
            spill_to=spill,
            spill_bytes=needed,
        )
        with arena:
            host = {plan.placeholder: x}
            self._stream_segments(plan, host, arena, strip_tiles(height, width, tile))
            return host[plan.segments[-1].target].clone()  # a copy: the arena may unmap

    def _stream_segments(
        self,
        plan: StreamPlan,
        host: dict[fx.Node, torch.Tensor],
        arena: _HostArena,
        cores: list[Box],
    ) -> None:
        """Run every segment over every core, filling ``host`` with the stored tensors.

        ``cores`` are full-width strips where possible: one contiguous host copy per strip.
        """
        _, _, height, width = host[plan.placeholder].shape
        stats: dict[fx.Node, tuple[torch.Tensor, torch.Tensor]] = {}
        for segment in plan.segments:
            moments = {node: _Moments() for node in segment.measured}
            for node in segment.stores:
                source = segment.reuse.get(node)
                channels = _channels(node)
                if source is not None:
                    host[node] = host[source]
                else:
                    host[node] = arena.take((1, channels, height, width), self.dtype)
            schedule = in_place_schedule(cores, segment.halo, height, width)
            pending: list[tuple[int, Box, dict[fx.Node, torch.Tensor]]] = []
            for index, core in enumerate(cores):
                read = with_halo(core, segment.halo, height, width)
                values = self._run_segment(plan, segment, host, stats, read)
                inner = (
                    slice(None),
                    slice(None),
                    slice(core.y0 - read.y0, core.y1 - read.y0),
                    slice(core.x0 - read.x0, core.x1 - read.x0),
                )
                kept = {node: values[node][inner] for node in segment.stores}
                for node, value in kept.items():
                    if node in moments:
                        moments[node].add(value)
                for node in segment.stores:  # fresh buffers first: a value may view an input
                    if node not in segment.reuse:
                        host[node][_region(core)].copy_(kept[node])
                pending.append(self._write_over_inputs(segment, host, kept, core, schedule[index]))
                for _, box, rows in [p for p in pending if p[0] <= index]:
                    for node, value in rows.items():
                        host[node][_region(box)].copy_(value)
                pending = [p for p in pending if p[0] > index]
            for norm_node, module in plan.norms.items():
                source = _only_input(norm_node)
                if source in moments:
                    eps = float(module.eps)  # type: ignore[arg-type]
                    stats[norm_node] = moments[source].frozen(eps, self.device)
            taken = set(segment.reuse.values())
            for node in segment.release:
                buffer = host.pop(node)
                if node not in taken:
                    arena.give(buffer)

    def _write_over_inputs(
        self,
        segment: Segment,
        host: dict[fx.Node, torch.Tensor],
        kept: dict[fx.Node, torch.Tensor],
        core: Box,
        write: InPlaceWrite,
    ) -> tuple[int, Box, dict[fx.Node, torch.Tensor]]:
        """Write the rows of ``core`` no later tile reads; return the rest for later.

        Applies to stores that took over an input's buffer: their deferred rows are copied (to
        the host) because the computed value may be a view of the very input being overwritten.
        """
        cut = core.y0 + write.safe_rows
        now = Box(core.y0, cut, core.x0, core.x1)
        later = Box(cut, core.y1, core.x0, core.x1)
        rows: dict[fx.Node, torch.Tensor] = {}
        for node in segment.reuse:
            value = kept[node]
            if now.height:
                host[node][_region(now)].copy_(value[:, :, : now.height])
            if later.height:
                rows[node] = value[:, :, now.height :].to("cpu", copy=True)
        return write.flush_after, later, rows

    def _run_segment(
        self,
        plan: StreamPlan,
        segment: Segment,
        host: dict[fx.Node, torch.Tensor],
        stats: dict[fx.Node, tuple[torch.Tensor, torch.Tensor]],
        read: Box,
    ) -> dict[fx.Node, torch.Tensor]:
        """Evaluate one segment on the ``read`` box; frozen whole-image stats for the norms."""
        env: dict[fx.Node, torch.Tensor] = {}
        read_index = _region(read)
        for node in segment.inputs:
            crop = host[node][read_index]
            # On the CPU a view suffices unless an in-place layer would write through it.
            view_ok = self.device.type == "cpu" and node not in segment.mutated
            env[node] = crop if view_ok else self._device_tensor(crop)
        for node in segment.nodes:
            if node in plan.norms:
                env[node] = _frozen_norm(env[_only_input(node)], *stats[node], plan.norms[node])
                continue
            args = fx.node.map_arg(node.args, env.__getitem__)
            kwargs = fx.node.map_arg(node.kwargs, env.__getitem__)
            if node.op == "call_module":
                env[node] = plan.graph.get_submodule(str(node.target))(*args, **kwargs)
            elif node.op == "call_function":
                env[node] = node.target(*args, **kwargs)  # type: ignore[operator]
            else:
                env[node] = getattr(args[0], str(node.target))(*args[1:], **kwargs)
        return env


class _Moments:
    """Exact per-channel mean and variance of a tensor seen tile by tile.

    Each tile contributes its own mean and centred sum of squares (float32 on the device, no
    cancellation), merged in float64 on the host with Chan et al.'s pairwise update.
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean = torch.zeros(0, dtype=torch.float64)
        self.m2 = torch.zeros(0, dtype=torch.float64)

    def add(self, values: torch.Tensor) -> None:
        x = values.float()
        n = x.shape[0] * x.shape[2] * x.shape[3]
        mean = x.mean(dim=(0, 2, 3))
        m2 = (x - mean.view(1, -1, 1, 1)).square().sum(dim=(0, 2, 3))
        mean64, m264 = mean.double().cpu(), m2.double().cpu()
        if self.count == 0:
            self.count, self.mean, self.m2 = n, mean64, m264
            return
        total = self.count + n
        delta = mean64 - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m264 + delta.square() * (self.count * n / total)
        self.count = total

    def frozen(self, eps: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, 1 / sqrt(var + eps)) as float32 ``1 x C x 1 x 1`` tensors on ``device``."""
        var = self.m2 / self.count  # biased, like InstanceNorm
        rstd = (var + eps).rsqrt()
        shape = (1, -1, 1, 1)
        return (
            self.mean.float().view(shape).to(device),
            rstd.float().view(shape).to(device),
        )


class _HostArena:
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

    def __enter__(self) -> _HostArena:
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


def _region(box: Box) -> tuple[slice, slice, slice, slice]:
    """Index of ``box`` in an ``N x C x H x W`` tensor."""
    return (slice(None), slice(None), *box.slices)


def _frozen_norm(
    x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor, module: nn.Module
) -> torch.Tensor:
    """InstanceNorm with given whole-image statistics (computed in float32)."""
    y = (x.float() - mean) * rstd
    norm: Any = module
    if norm.affine:
        y = y * norm.weight.float().view(1, -1, 1, 1) + norm.bias.float().view(1, -1, 1, 1)
    return y.to(x.dtype)
