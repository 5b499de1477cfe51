"""Inference: the derainer, its streaming plan and host buffers, tiles, batches of files.

* :mod:`~derain_cli.inference.engine`: :class:`Derainer` (an image in, the derained image out;
  tiling chosen from free memory, exact for InstanceNorm and space-to-depth networks).
* :mod:`~derain_cli.inference.stream_plan`: where a traced network can be cut for exact tiles.
* :mod:`~derain_cli.inference.arena`: full-resolution host buffers, in RAM or memory-mapped.
* :mod:`~derain_cli.inference.tiling`: pure tile geometry and feathered blending.
* :mod:`~derain_cli.inference.plan`, :mod:`~derain_cli.inference.batch`,
  :mod:`~derain_cli.inference.shard`, :mod:`~derain_cli.inference.report`: files in, files out.

``Derainer`` is imported lazily so that importing the pure modules does not pull in torch.
Devices and precisions are resolved in :mod:`derain_cli.runtime`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from derain_cli.inference.engine import Derainer

__all__ = ["Derainer"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from derain_cli.inference import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
