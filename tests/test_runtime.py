"""Devices and precisions: one vocabulary and one set of rules for inference and training."""

from __future__ import annotations

import pytest
import torch

from derain_cli import runtime
from derain_cli.errors import UsageError
from derain_cli.inference.engine import Derainer
from derain_cli.nets.generator import NLCLGenerator
from derain_cli.runtime import resolve_device, resolve_dtype


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
@pytest.mark.parametrize("training", [False, True])
def test_absent_cuda_is_an_error_not_a_fallback(training: bool) -> None:
    for name in ("cuda", "cuda:1"):
        with pytest.raises(UsageError, match=rf"^device {name}: .*; use cpu or auto$"):
            resolve_device(name, training=training)
    with pytest.raises(UsageError, match="device cuda"):
        Derainer(NLCLGenerator(channels=8, blocks=1), device="cuda")


@pytest.mark.parametrize("training", [False, True])
def test_unknown_devices_are_errors_that_list_the_vocabulary(training: bool) -> None:
    for name in ("tpu", "gpu", "cuda:x", ""):
        with pytest.raises(UsageError, match="unknown device .*auto, cpu, cuda, cuda:N, mps"):
            resolve_device(name, training=training)


def test_mps_is_for_inference_only() -> None:
    with pytest.raises(UsageError, match="training runs on cpu or cuda only"):
        resolve_device("mps", training=True)
    if not runtime.mps_available():
        with pytest.raises(UsageError, match="MPS"):
            resolve_device("mps")


def test_auto_device_order() -> None:
    cuda = torch.cuda.is_available()
    expected = "cuda" if cuda else "mps" if runtime.mps_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("auto", training=True).type == ("cuda" if cuda else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_precision_rules() -> None:
    cpu, cuda, mps = torch.device("cpu"), torch.device("cuda"), torch.device("mps")
    for training in (False, True):
        assert resolve_dtype("auto", cpu, training=training) is torch.float32
        assert resolve_dtype("auto", cuda, training=training) is torch.bfloat16
        assert resolve_dtype("fp16", cuda, training=training) is torch.float16
        assert resolve_dtype("fp32", cpu, training=training) is torch.float32
        for half in ("fp16", "bf16"):
            with pytest.raises(UsageError, match=rf"^precision {half}: half precision is not"):
                resolve_dtype(half, cpu, training=training)
        with pytest.raises(UsageError, match="unknown precision"):
            resolve_dtype("fp8", cpu, training=training)
    assert resolve_dtype("fp16", mps) is torch.float16
    with pytest.raises(UsageError, match="needs CUDA"):
        resolve_dtype("fp16", mps, training=True)


def test_training_and_inference_share_the_rules() -> None:
    """No second copy: the training modules call the same functions."""
    from derain_cli.train import distributed, loop

    assert not hasattr(distributed, "resolve_device")
    assert not hasattr(loop, "resolve_dtype")
