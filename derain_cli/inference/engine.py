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
over that input, so the authors' net keeps two full-resolution 32-channel tensors on the host
instead of four; beyond the host budget they live in memory-mapped files
(:mod:`derain_cli.inference.arena`). Where the network is cut: :mod:`~.stream_plan`.

Space-to-depth networks (:class:`CellNetwork`, e.g. ``nlcl-s2d``) are
``from_cells(x, gen(to_cells(x)))``: the lossless rearrangements run on the host and ``gen`` is
streamed as above over the cell grid, so they tile exactly too.

Space-to-depth networks without norms (``norm = "none"``) are streamed the same way: one
segment, whose halo is ``gen``'s whole receptive radius, so their tiles are exact too. Other
networks without such a norm are tiled the classic way: overlapping tiles blended with cosine
feathering (``tiling.py``); docs/inference.md compares the two.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import fx, nn

from derain_cli import runtime
from derain_cli.errors import PixelError, UsageError, setting
from derain_cli.images.pixels import as_float_rgb, check_shape
from derain_cli.images.tensors import from_model_range, to_model_range
from derain_cli.inference.arena import (
    HOST_MEMORY_FRACTION,
    HostArena,
    host_memory_from_env,
    spill_directory,
)
from derain_cli.inference.memory import auto_tile, bytes_per_pixel, fits_untiled
from derain_cli.inference.settings import DEFAULT_OVERLAP, DerainerSettings
from derain_cli.inference.stream_plan import (
    Moments,
    Segment,
    StreamPlan,
    Unsupported,
    build_stream_plan,
    frozen_norm,
    host_buffer_bytes,
    needs_image_statistics,
    node_channels,
    only_input,
)
from derain_cli.inference.tiling import (
    Blender,
    Box,
    InPlaceWrite,
    in_place_schedule,
    plan_tiles,
    strip_tiles,
    with_halo,
)


class HasModule(Protocol):
    """What the derainer needs from ``derain_cli.weights.files.LoadedWeights``."""

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


# --------------------------------------------------------------------------- derainer


def _checked(
    settings: DerainerSettings | None,
    device: str,
    precision: str,
    tile: int | None,
    overlap: int,
) -> DerainerSettings:
    """``settings`` as given, else the four separate settings checked; never both."""
    if settings is None:
        return DerainerSettings.check(
            device=device, precision=precision, tile=tile, overlap=overlap
        )
    if (device, precision, tile, overlap) != ("auto", "auto", None, DEFAULT_OVERLAP):
        raise TypeError("pass settings= or device/precision/tile/overlap, not both")
    return settings


#: Images narrower or shorter than this are edge-padded to it before the network runs.
MIN_SIDE = 8
#: Smallest tile side, in cells, when a cell network is streamed (below it the halo dominates).
MIN_CELL_TILE = 16


class Derainer:
    """Runs a background generator G_B on images: ``Derainer(weights)(rgb) -> rgb``.

    ``weights`` is a :class:`derain_cli.weights.files.LoadedWeights` (anything with ``.module``)
    or a bare ``nn.Module``; the module is put in eval mode and moved to the device once (in place).
    ``tile``: None picks a tile size from the free memory for each image (0 = no tiling when it
    fits), 0 never tiles, N (at least 64) uses N x N tiles. ``overlap`` is the width of the
    feathered overlap between tiles (at most a quarter of the tile) for networks without
    image-statistics norms; InstanceNorm networks are tiled exactly (module docstring) and need no
    blending.
    ``host_memory``: bytes of host RAM the full-resolution buffers of such a tiled run may take
    before they are memory-mapped to temporary files (None: ``$DERAIN_HOST_MEMORY_MB``, else half
    the memory available at each call; 0 always uses files). ``settings``: device, precision, tile
    and overlap checked already (:class:`~derain_cli.inference.settings.DerainerSettings`), in
    place of the four separate settings.

    Calls are serialised by a lock, so one worker thread may run the model while others decode.
    """

    def __init__(
        self,
        weights: HasModule | nn.Module,
        *,
        device: str = "auto",
        precision: str = "auto",
        tile: int | None = None,
        overlap: int = DEFAULT_OVERLAP,
        host_memory: int | None = None,
        settings: DerainerSettings | None = None,
    ) -> None:
        module = weights if isinstance(weights, nn.Module) else getattr(weights, "module", None)
        if not isinstance(module, nn.Module):
            raise TypeError(f"expected LoadedWeights or nn.Module, got {type(weights).__name__}")
        checked = _checked(settings, device, precision, tile, overlap)
        if host_memory is not None and host_memory < 0:
            raise UsageError(f"host memory budget {host_memory}: must be >= 0 bytes")
        self.device, self.dtype = checked.device, checked.dtype
        self.tile, self.overlap = checked.tile, checked.overlap
        self.host_memory = host_memory if host_memory is not None else host_memory_from_env()
        #: Whether the last streamed run kept its buffers in memory-mapped files.
        self.spilled = False
        self.arch: str = str(getattr(weights, "arch", type(module).__name__))
        #: Where the weights came from (a file, a registered name, ``hf://``), or the module's type.
        self.source: str = str(getattr(weights, "source", type(module).__name__))
        self.description = runtime.describe(self.device, self.dtype)
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
        except Unsupported as exc:
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

    @classmethod
    def from_pretrained(
        cls,
        spec: str | os.PathLike[str] | None = "default",
        *,
        device: str = "auto",
        precision: str = "auto",
        tile: int | None = None,
        overlap: int = DEFAULT_OVERLAP,
        settings: DerainerSettings | None = None,
    ) -> Derainer:
        """A derainer for the weights ``spec`` names (what ``derain --weights`` takes).

        ``"default"`` (or ``None``) is the bundled default model; else a registered name, a
        ``.safetensors`` file, the authors' ``.pth`` checkpoint, or ``hf://OWNER/REPO[@REV][/FILE]``
        (downloaded once into the cache, verified). Weights that are not a background generator
        G_B are refused (:class:`~derain_cli.errors.WeightsError`). The settings are checked
        (:meth:`DerainerSettings.check`) before the weights are read, unless ``settings`` were
        checked already (then the four separate settings must be left out).
        """
        from derain_cli.weights.loading import load_weights

        checked = _checked(settings, device, precision, tile, overlap)
        loaded = load_weights(None if spec is None else os.fspath(spec), background=True)
        return cls(loaded, settings=checked)

    def derain_image(self, image: Any) -> Any:
        """Derain a picture and return it in the caller's type.

        ``image``: a ``PIL.Image`` or a ``numpy`` array (``uint8``, ``uint16`` or float in [0, 1];
        grey, RGB or RGBA). The result has the same type, dtype, size and channels; alpha passes
        through untouched and grey stays grey (see :mod:`derain_cli.images.pixels`).
        """
        rgb, restore = as_float_rgb(image)
        return restore(self(rgb))

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
        if not isinstance(rgb, np.ndarray):
            raise PixelError(f"image: expected a numpy array, got {type(rgb).__name__}")
        check_shape(rgb.shape, accepted="an H x W x 3 float32 image")
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise PixelError(f"image: expected an H x W x 3 float32 image, got shape {rgb.shape}")
        if not np.issubdtype(rgb.dtype, np.floating):
            raise PixelError(
                f"image: expected float32 pixels in [0, 1], got {rgb.dtype} "
                "(derain_image takes uint8 and uint16 too)"
            )
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
                return from_model_range(self.module(self._device_tensor(to_model_range(rgb))))
            if self.needs_statistics or (self.cells is not None and self.stream_plan):
                return self._run_streamed(rgb, tile)
            return self._run_feathered(rgb, tile)

    def batch_for(self, height: int, width: int, most: int = 8) -> int:
        """Frames of ``height x width`` one network pass should take (for :meth:`derain_batch`).

        1 on a CPU, where a batch of 4 ran no faster than 4 single calls, and for frames that
        are tiled; on a GPU as many as fit untiled in the free memory, at most ``most``.
        """
        if self.device.type == "cpu" or self.tile_for(height, width) != 0:
            return 1
        count = 1
        while count < most and fits_untiled(
            height * width * (count + 1), self.device, self.bytes_per_pixel
        ):
            count += 1
        return count

    def derain_batch(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Derain same-size ``H x W x 3`` frames in one pass of the network: the same pictures
        as one call each (which is what frames of mixed sizes, frames that are tiled, and
        batches that do not fit the free memory get)."""
        shape = frames[0].shape if frames else ()
        height, width = shape[:2] if len(shape) == 3 else (0, 0)
        if (
            len(frames) < 2
            or any(frame.shape != shape for frame in frames)
            or min(height, width) < MIN_SIDE
            or self.tile_for(height, width) != 0
            or not fits_untiled(height * width * len(frames), self.device, self.bytes_per_pixel)
        ):
            return [self(frame) for frame in frames]
        with self._lock, torch.inference_mode():
            batch = torch.cat([to_model_range(frame) for frame in frames])
            out = self.module(self._device_tensor(batch))
            return [from_model_range(image[None]) for image in out]

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
            piece = self.module(self._device_tensor(to_model_range(rgb[box.slices])))
            blender.add(box, from_model_range(piece))
        return blender.result()

    def _run_streamed(self, rgb: np.ndarray, tile: int) -> np.ndarray:
        plan = self.stream_plan
        if plan is None:
            raise UsageError(
                f"cannot tile architecture {self.arch!r} exactly ({self.unsupported_reason}); "
                f"use {setting('tile', 0)}"
            )
        image = to_model_range(rgb)
        if self.cells is not None:
            # Rearrange on the host (lossless), stream gen over the cells, rearrange back.
            cells = self.cells.to_cells(image)
            tile = max(MIN_CELL_TILE, tile // self.cells.factor)
            out = self._stream(plan, cells.to(self.dtype), tile).float()
            return from_model_range(
                self._from_cells_in_strips(image, out, tile * self.cells.factor)
            )
        return from_model_range(self._stream(plan, image.to(self.dtype), tile))

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
            budget = int(runtime.available_host_bytes() * HOST_MEMORY_FRACTION)
        spill = spill_directory() if needed > budget else None
        self.spilled = spill is not None
        arena = HostArena(
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
        arena: HostArena,
        cores: list[Box],
    ) -> None:
        """Run every segment over every core, filling ``host`` with the stored tensors.

        ``cores`` are full-width strips where possible: one contiguous host copy per strip.
        """
        _, _, height, width = host[plan.placeholder].shape
        stats: dict[fx.Node, tuple[torch.Tensor, torch.Tensor]] = {}
        for segment in plan.segments:
            moments = {node: Moments() for node in segment.measured}
            for node in segment.stores:
                source = segment.reuse.get(node)
                channels = node_channels(node)
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
                source = only_input(norm_node)
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
                env[node] = frozen_norm(env[only_input(node)], *stats[node], plan.norms[node])
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


def _region(box: Box) -> tuple[slice, slice, slice, slice]:
    """Index of ``box`` in an ``N x C x H x W`` tensor."""
    return (slice(None), slice(None), *box.slices)
