"""Weights: files, the registry of named weights, the Hugging Face Hub, checksums, ONNX export.

* :mod:`~derain_cli.weights.files`: ``load_weights(spec)`` for every kind of spec,
  ``save_weights``, conversion of the authors' checkpoints.
* :mod:`~derain_cli.weights.registry`: named weights (``weights/registry.json``) and where bundled
  files live.
* :mod:`~derain_cli.weights.hub`: ``hf://`` specs, downloads, the cache, sha256 verification.
* :mod:`~derain_cli.weights.checksums`: sha256 of files and ``.sha256`` sidecars.
* :mod:`~derain_cli.weights.onnx_export`: G_B as one ONNX graph (the ``onnx`` extra).

``derain_cli.weights`` was one module in 0.1; the names it offered (``load_weights``,
``save_weights``, ``LoadedWeights`` ...) are still handed on from here, loaded on first use.
New code imports them from :mod:`derain_cli.weights.files` (or ``load_weights`` from
``derain_cli``).
"""

from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    if not name.startswith("_"):
        files = importlib.import_module("derain_cli.weights.files")
        if hasattr(files, name):
            return getattr(files, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
