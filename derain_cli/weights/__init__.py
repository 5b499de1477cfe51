"""Weights: files, the registry of named weights, the Hugging Face Hub, checksums, ONNX export.

A spec goes one way through the package (see :mod:`~derain_cli.weights.loading`):

* :mod:`~derain_cli.weights.loading`: ``load_weights(spec)`` for every kind of spec, ``load_pair``.
* :mod:`~derain_cli.weights.registry`: named weights (``weights/registry.json``), where bundled
  files live, and ``pin``: where a spec's file lives.
* :mod:`~derain_cli.weights.hub`: ``hf://`` specs, downloads, the cache, sha256 verification.
* :mod:`~derain_cli.weights.checksums`: sha256 of files and ``.sha256`` sidecars.
* :mod:`~derain_cli.weights.files`: what a weights file holds: reading, ``save_weights``,
  conversion of the authors' checkpoints.
* :mod:`~derain_cli.weights.onnx_export`: G_B as one ONNX graph (the ``onnx`` extra).

``derain_cli.weights`` was one module in 0.1; the names it offered (``load_weights``,
``save_weights``, ``LoadedWeights`` ...) are still handed on from here, loaded on first use.
New code imports them from :mod:`derain_cli.weights.loading` and
:mod:`derain_cli.weights.files` (or ``load_weights`` from ``derain_cli``).
"""

from __future__ import annotations

import importlib
from typing import Any

_HANDED_ON = ("derain_cli.weights.loading", "derain_cli.weights.files")


def __getattr__(name: str) -> Any:
    if not name.startswith("_"):
        for path in _HANDED_ON:
            module = importlib.import_module(path)
            if hasattr(module, name):
                return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
