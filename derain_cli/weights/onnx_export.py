"""Export a background generator G_B to ONNX, for runtimes without torch (edge boxes, cameras).

The exported graph is the whole deraining step of one batch, with the value range that images
have outside the library::

    clean = clamp((G_B(2 * rainy - 1) + 1) / 2, 0, 1)

``rainy`` and ``clean`` are float32 ``(N, 3, H, W)`` RGB in [0, 1]; ``N``, ``H`` and ``W`` are
dynamic (``H, W >= MIN_SIDE``). The graph has no tiling: a runtime feeds it whole images or its
own tiles (exact tiles need the overlap that docs/inference.md describes). Parity with torch is
tested (``tests/test_onnx_export.py``: < 1e-4 on CPU with onnxruntime, odd sizes included).

The exporter is torch's own (``torch.onnx.export(..., dynamo=True)``, which needs ``onnxscript``);
checking needs ``onnx`` and ``onnxruntime``. All three are the ``onnx`` extra
(``pip install 'derain[onnx]'``), imported only here.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from derain_cli.atomic import atomic_write_bytes
from derain_cli.errors import UsageError
from derain_cli.nets.fast import SpaceToDepthGenerator
from derain_cli.weights.files import LoadedWeights, require_background

#: The opset written unless asked otherwise (ONNX 1.13+, onnxruntime 1.14+, TensorRT 8.6+).
DEFAULT_OPSET = 18
#: Smallest height and width the exported graph accepts (two 4x4 cells of ``nlcl-s2d``).
MIN_SIDE = 8
MAX_SIDE = 65536
INPUT_NAME, OUTPUT_NAME = "rainy", "clean"


@dataclass(frozen=True)
class OnnxExport:
    path: Path
    opset: int
    size_bytes: int


class _Derain(nn.Module):
    """``G_B`` between [0, 1] images, written so that every size traces to one graph."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, rainy: torch.Tensor) -> torch.Tensor:
        x = rainy * 2 - 1
        g = self.generator
        if isinstance(g, SpaceToDepthGenerator):
            b = g.from_cells(x, g.gen(g.to_cells(x, always_pad=True)))
        else:
            b = g(x)
        return ((b + 1) / 2).clamp(0, 1)


def _exporter() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise UsageError(
            f"ONNX export needs the onnx extra ({exc.name} is missing): pip install 'derain[onnx]'"
        ) from None


def _trace(model: nn.Module, example: torch.Tensor, dims: dict[int, Any], opset: int) -> Any:
    """torch's ONNX exporter on ``model`` (an ``ONNXProgram``), its warnings silenced."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={"rainy": dims},
            opset_version=opset,
            verbose=False,
        )


def export_onnx(
    loaded: LoadedWeights, dest: Path | str, *, opset: int = DEFAULT_OPSET, overwrite: bool = False
) -> OnnxExport:
    """Write ``loaded``'s G_B as an ONNX model at ``dest`` (atomically); refuses G_R weights."""
    dest = Path(dest)
    if dest.suffix.lower() != ".onnx":
        raise UsageError(f"{dest}: the output must end in .onnx")
    if dest.exists() and not overwrite:
        raise UsageError(f"{dest}: exists already (not replaced)")
    if not 17 <= opset <= 23:
        raise UsageError(f"opset {opset}: choose 17..23")
    require_background(loaded)
    _exporter()
    import onnx

    model = _Derain(loaded.module).eval()
    example = torch.rand(1, 3, 2 * MIN_SIDE + 3, 3 * MIN_SIDE + 1, generator=torch.Generator())
    dims = {
        0: torch.export.Dim("batch", min=1, max=4096),
        2: torch.export.Dim("height", min=MIN_SIDE, max=MAX_SIDE),
        3: torch.export.Dim("width", min=MIN_SIDE, max=MAX_SIDE),
    }
    quiet = logging.getLogger("torch.onnx")  # it warns about absent torchvision operators
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        program = _trace(model, example, dims, opset)
    finally:
        quiet.setLevel(level)
    if program is None:  # only the legacy exporter returns None
        raise RuntimeError("torch.onnx.export returned no program")
    proto = program.model_proto
    meta = {
        "derain.arch": loaded.arch,
        "derain.hparams": json.dumps(loaded.hparams, sort_keys=True),
        "derain.source": loaded.source,
        "derain.source_sha256": loaded.sha256,
        "derain.range": "input and output RGB float32 in [0, 1], NCHW",
    }
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    atomic_write_bytes(dest, data)
    return OnnxExport(path=dest, opset=opset, size_bytes=len(data))
