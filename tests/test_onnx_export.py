"""``derain weights export-onnx``: the ONNX graph derains like torch, at any size and batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from derain_cli.cli.app import app
from derain_cli.errors import UsageError
from derain_cli.nets.registry import build_generator
from derain_cli.weights.files import save_weights
from derain_cli.weights.loading import load_weights
from derain_cli.weights.onnx_export import export_onnx

ort = pytest.importorskip("onnxruntime", reason="the onnx extra (part of the test extra)")
onnx = pytest.importorskip("onnx", reason="the onnx extra (part of the test extra)")

SIZES = [(1, 8, 8), (1, 37, 53), (2, 64, 96), (1, 131, 70)]


def _torch_reference(module: torch.nn.Module, rainy: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        b = module(torch.from_numpy(rainy) * 2 - 1)
    return ((b + 1) / 2).clamp(0, 1).numpy()


def _check_parity(path: Path, module: torch.nn.Module) -> None:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for n, h, w in SIZES:
        rainy = rng.random((n, 3, h, w), dtype=np.float32)
        (out,) = session.run(None, {"rainy": rainy})
        assert out.shape == rainy.shape
        np.testing.assert_allclose(out, _torch_reference(module, rainy), atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def default_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "default.onnx"
    code = CliRunner().invoke(app, ["weights", "export-onnx", "default", "-o", str(path)])
    assert code.exit_code == 0, code.output
    return path


def test_bundled_default_exports_and_matches_torch(default_onnx: Path) -> None:
    _check_parity(default_onnx, load_weights("default").module)
    model = onnx.load(str(default_onnx))
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims[1] == 3 and all(isinstance(d, str) for d in (dims[0], dims[2], dims[3]))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["derain.arch"] == "nlcl-s2d" and "[0, 1]" in meta["derain.range"]
    assert meta["derain.source_sha256"] == load_weights("default").sha256


def test_other_architectures_export(tmp_path: Path) -> None:
    """The authors' full-resolution layout, and nlcl-s2d with InstanceNorm and factor 2."""
    torch.manual_seed(0)
    for arch, hparams in (
        ("nlcl-resnet", {"channels": 8, "blocks": 2}),
        ("nlcl-s2d", {"channels": 8, "blocks": 1, "factor": 2, "output": "subtract_rain"}),
    ):
        weights = tmp_path / f"{arch}.safetensors"
        save_weights(weights, build_generator(arch, hparams), arch=arch, hparams=hparams)
        loaded = load_weights(str(weights))
        done = export_onnx(loaded, tmp_path / f"{arch}.onnx", opset=17)
        assert done.opset == 17 and done.size_bytes == done.path.stat().st_size
        _check_parity(done.path, loaded.module)


def test_refusals_leave_nothing(tmp_path: Path, default_onnx: Path) -> None:
    runner = CliRunner()
    before = default_onnx.read_bytes()
    result = runner.invoke(app, ["weights", "export-onnx", "default", "-o", str(default_onnx)])
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert default_onnx.read_bytes() == before
    result = runner.invoke(app, ["weights", "export-onnx", "nlcl-cpu-v1-rain", "-o",
                                 str(tmp_path / "r.onnx")])  # fmt: skip
    assert result.exit_code == 2 and "G_R" in result.output
    assert not (tmp_path / "r.onnx").exists()
    with pytest.raises(UsageError, match="must end in .onnx"):
        export_onnx(load_weights("default"), tmp_path / "x.bin")
    result = runner.invoke(app, ["weights", "export-onnx", "-o", str(tmp_path / "o.onnx"),
                                 "--opset", "9"])  # fmt: skip
    assert result.exit_code == 2 and not (tmp_path / "o.onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
