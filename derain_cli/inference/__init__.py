"""Inference: the derainer (device, precision, tiling) and pure tile geometry.

``Derainer``, ``resolve_device`` and ``resolve_dtype`` are imported lazily so that importing the
pure ``tiling`` module does not pull in torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from derain_cli.inference.engine import Derainer, resolve_device, resolve_dtype

__all__ = ["Derainer", "resolve_device", "resolve_dtype"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from derain_cli.inference import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
