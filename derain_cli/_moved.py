"""Module paths of release 0.1, kept importable for older code, with a ``DeprecationWarning``.

The flat top level was gathered into packages by concept (``weights/``, ``images/``,
``evaluation/``). ``import derain_cli.imaging`` still works: it gives the module at its new path
(the same module object, so monkeypatching either name patches both) and warns once with the path
to import instead. ``derain_cli.weights`` became a package; its face hands on the old names.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

OLD_PATHS = {
    "derain_cli.weights_registry": "derain_cli.weights.registry",
    "derain_cli.hub": "derain_cli.weights.hub",
    "derain_cli.checksums": "derain_cli.weights.checksums",
    "derain_cli.onnx_export": "derain_cli.weights.onnx_export",
    "derain_cli.imaging": "derain_cli.images.io",
    "derain_cli.exif": "derain_cli.images.exif",
    "derain_cli.codecs": "derain_cli.images.codecs",
    "derain_cli.tensors": "derain_cli.images.tensors",
    "derain_cli.inference.pixels": "derain_cli.images.pixels",
    "derain_cli.metrics": "derain_cli.evaluation.metrics",
    "derain_cli.evaluate": "derain_cli.evaluation.scoring",
    "derain_cli.eval_files": "derain_cli.evaluation.files",
}


class _OldPath(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path and loads it as the module at the new one."""

    def __init__(self) -> None:
        self._specs: dict[str, importlib.machinery.ModuleSpec | None] = {}

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in OLD_PATHS:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = OLD_PATHS[spec.name]
        warnings.warn(
            f"{spec.name} moved to {new}; import it from there (the old path goes in 0.3)",
            DeprecationWarning,
            stacklevel=2,
        )
        module = importlib.import_module(new)
        self._specs[new] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The import system stamped the old path's spec on the module: give it back its own.
        module.__spec__ = self._specs[module.__name__]


def install_old_paths() -> None:
    if not any(isinstance(finder, _OldPath) for finder in sys.meta_path):
        sys.meta_path.append(_OldPath())
