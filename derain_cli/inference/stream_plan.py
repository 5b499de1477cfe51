"""The streaming plan: where a traced generator can be cut so that its tiles are exact.

:func:`build_stream_plan` traces a network with ``torch.fx`` and cuts it at every InstanceNorm
that normalises over the whole image (``affine`` or not, no running statistics). Each
:class:`Segment` between two cuts holds only local operations (convolutions, pads, pointwise
activations, residual sums), so it can run tile by tile with a halo equal to its receptive
radius; the norm that ends it is applied afterwards (:func:`frozen_norm`) with statistics
gathered over the whole image (:class:`Moments`).
A network with an operation this cannot tile exactly raises :class:`Unsupported` (the derainer
then falls back to blended tiles). :func:`host_buffer_bytes` predicts the full-resolution host
memory a streamed run needs. The derainer that runs a plan is
:class:`derain_cli.inference.engine.Derainer`.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp


class Unsupported(Exception):
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
                raise Unsupported(f"strided convolution {node.target}")
            dilation = module.dilation
            kernel = module.kernel_size
            return max(d * (k - 1) // 2 for d, k in zip(dilation, kernel, strict=True))
        if isinstance(module, _POINTWISE_MODULES):
            return 0
        if isinstance(module, nn.BatchNorm2d) and not module.training:
            return 0
        if isinstance(module, _instance_norm_types()) and not needs_image_statistics(module):
            return 0
        raise Unsupported(f"module {type(module).__name__} at {node.target}")
    if node.op == "call_function" and node.target in _POINTWISE_FUNCTIONS:
        return 0
    if node.op == "call_method" and node.target in _POINTWISE_METHODS:
        return 0
    raise Unsupported(f"{node.op} {node.target}")


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

    Raises :class:`Unsupported` for layouts the streamer cannot run exactly (strided or
    resampling layers, global pooling, attention, several inputs or outputs).
    """
    try:
        gm = fx.symbolic_trace(module)
    except Exception as exc:  # tracing failures come in many types; the caller falls back
        raise Unsupported(f"cannot trace: {exc}") from exc
    nodes = list(gm.graph.nodes)
    order = {node: i for i, node in enumerate(nodes)}
    placeholders = [n for n in nodes if n.op == "placeholder"]
    outputs = [n for n in nodes if n.op == "output"]
    if len(placeholders) != 1 or len(outputs) != 1 or not isinstance(outputs[0].args[0], fx.Node):
        raise Unsupported("network must map one tensor to one tensor")
    if any(n.op == "get_attr" for n in nodes):
        raise Unsupported("network reads parameters outside modules")
    norms: dict[fx.Node, nn.Module] = {}
    for node in nodes:
        if node.op == "call_module":
            sub = gm.get_submodule(str(node.target))
            if needs_image_statistics(sub):
                if not isinstance(sub, nn.InstanceNorm2d):
                    raise Unsupported(f"{type(sub).__name__} at {node.target}")
                norms[node] = sub
    _check_shapes(gm, nodes, norms)

    placeholder, result = placeholders[0], outputs[0].args[0]
    assert isinstance(result, fx.Node)
    norm_inputs = [only_input(norm) for norm in norms]
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
            match = next((r for r in reusable if node_channels(r) == node_channels(node)), None)
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


def node_channels(node: fx.Node) -> int:
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
            channels = node_channels(node)
            if channels in spare:
                spare.remove(channels)
            else:
                total += channels * height * width * itemsize
        taken = set(segment.reuse.values())
        spare += [node_channels(node) for node in segment.release if node not in taken]
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


def only_input(node: fx.Node) -> fx.Node:
    if len(node.all_input_nodes) != 1 or node.kwargs:
        raise Unsupported(f"norm {node.target} must take exactly one tensor")
    return node.all_input_nodes[0]


def _check_shapes(gm: fx.GraphModule, nodes: list[fx.Node], norms: dict[fx.Node, Any]) -> None:
    """Every tensor kept on the host or normalised must have the image's spatial size."""
    side = 24
    first = next((m for m in gm.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise Unsupported("no convolution to infer the input channels from")
    weight = first.weight
    probe = torch.zeros(1, first.in_channels, side, side, device=weight.device, dtype=weight.dtype)
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(probe)
    except (RuntimeError, ValueError, TypeError) as exc:
        # e.g. a pixel-unshuffle front whose first conv expects 3 r^2 channels, not 3
        raise Unsupported(f"cannot probe the traced network's shapes: {exc}") from None
    for node in nodes:
        if node.op in ("output",):
            continue
        meta = node.meta.get("tensor_meta")
        shape = getattr(meta, "shape", None)
        spatial_ok = shape is not None and len(shape) == 4 and tuple(shape[-2:]) == (side, side)
        if not spatial_ok and not _is_pad(gm, node):
            raise Unsupported(f"{node.name} changes the spatial size ({shape})")


def _is_pad(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Padding grows a tensor by a few pixels only for the convolution right after it."""
    if node.op == "call_module":
        return isinstance(gm.get_submodule(str(node.target)), _PAD_MODULES)
    return node.op == "call_function" and node.target is F.pad


class Moments:
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


def frozen_norm(
    x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor, module: nn.Module
) -> torch.Tensor:
    """InstanceNorm with given whole-image statistics (computed in float32)."""
    y = (x.float() - mean) * rstd
    norm: Any = module
    if norm.affine:
        y = y * norm.weight.float().view(1, -1, 1, 1) + norm.bias.float().view(1, -1, 1, 1)
    return y.to(x.dtype)
