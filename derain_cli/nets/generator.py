"""The NLCL generator exactly as the authors' released checkpoint lays it out.

Full resolution, no down/up-sampling, as in the authors' released code::

    gen.0           Conv3x3(3 -> C)
    gen.1..gen.N    residual blocks: [pad, conv3x3, IN, ReLU] -> [pad, conv3x3, IN] + skip
    gen.N+1.conv    Sequential(conv3x3, IN, ReLU, conv3x3)
    gen.N+2         Conv3x3(C -> 3)

InstanceNorm is ``affine=False``; there is no final tanh. Inputs and outputs are in [-1, 1]
(the authors' convention): ``x * 2 - 1`` in, ``(y + 1) / 2`` out. With C=32 and N=16 this is
316,195 parameters and the authors' ``G_B.pth`` loads with no key renaming.

Output parametrisation (hyper-parameter ``output``, stored in a weights file's ``derain.hparams``
so inference rebuilds the same function; :func:`apply_output`):

- ``"direct"`` (the paper and the authors): the network's output IS the background, ``B = y``.
- ``"subtract_rain"``: the network predicts the rain it removes and ``B = O - relu(y)``. Rain only
  adds light (Eq. 1 with R >= 0; the data's rain model clips ``B + R``), so the background can
  only be darker than the input where the net sees rain and equals the input elsewhere: an
  untrained or unsure network returns the input instead of shifting tone and colour
  (docs/training.md, "Early probes of the fidelity terms"). Not in the paper.

  The relu's gradient is one-sided (:class:`RainRelu`): where ``y < 0`` it still passes the part
  of the gradient that asks for more rain. With a plain relu a unit that went negative never
  learns again, and on training data where most pixels carry no rain the whole map went
  negative within a few hundred steps: the network stayed the identity, exactly, for good.
  The forward pass (and so inference) is the plain relu.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

#: How a generator's last layer becomes the background layer (module docstring).
OUTPUTS = ("direct", "subtract_rain")
Output = Literal["direct", "subtract_rain"]


#: What normalises the blocks' activations (hyper-parameter ``norm``). ``"instance"`` is the
#: authors' InstanceNorm (``affine=False``: no parameters, so both choices share one key layout).
#: ``"none"`` leaves activations unnormalised: InstanceNorm gives every channel unit variance over
#: the image whatever its content, so a channel that detects streaks is stretched to the same
#: strength on a crop with no streaks as on a crop full of them, and a rain map of the form
#: ``O - relu(y)`` cannot say how much rain there is (docs/training.md). Not in the paper.
NORMS = ("instance", "none")
Norm = Literal["instance", "none"]


def check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"generator norm {norm!r}: choose one of {', '.join(NORMS)}")


def _norm(channels: int, norm: Norm) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=False) if norm == "instance" else nn.Identity()


def check_output(output: str) -> None:
    if output not in OUTPUTS:
        raise ValueError(f"generator output {output!r}: choose one of {', '.join(OUTPUTS)}")


class RainRelu(torch.autograd.Function):
    """``relu(y)`` forward; backward passes the gradient where ``y > 0`` or where it asks for more.

    Gradient descent moves ``y`` by ``-grad``: a negative gradient asks for a larger rain map.
    Where ``y <= 0`` that request still reaches ``y`` (straight through), while a request for
    less (positive gradient) is dropped, as relu drops it; so no unit can die at zero.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, y: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(y)
        return y.clamp(min=0)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return grad * ((y > 0) | (grad < 0)).to(grad.dtype)


def apply_output(x: torch.Tensor, y: torch.Tensor, output: str) -> torch.Tensor:
    """The background layer from input ``x`` and last-layer output ``y``, both in [-1, 1]."""
    if output == "subtract_rain":
        rain: torch.Tensor = RainRelu.apply(y) if torch.is_grad_enabled() else torch.relu(y)
        return x - rain
    return y


class ConvUnit(nn.Module):
    """Zero-pad, 3x3 conv, InstanceNorm, optional ReLU (the authors' ``Conv2dBlock``)."""

    def __init__(self, channels: int, *, activation: bool, norm: Norm = "instance") -> None:
        super().__init__()
        self.pad = nn.ZeroPad2d(1)
        self.conv = nn.Conv2d(channels, channels, kernel_size=3)
        self.norm = _norm(channels, norm)
        self.activation: nn.Module = nn.ReLU(inplace=True) if activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.norm(self.conv(self.pad(x))))


class ResBlock(nn.Module):
    """``x + IN(conv(ReLU(IN(conv(x)))))`` with keys ``model.0.conv.*`` and ``model.1.conv.*``."""

    def __init__(self, channels: int, norm: Norm = "instance") -> None:
        super().__init__()
        self.model = nn.Sequential(
            ConvUnit(channels, activation=True, norm=norm),
            ConvUnit(channels, activation=False, norm=norm),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.model(x)


class Tail(nn.Module):
    """``conv3x3, IN, ReLU, conv3x3`` stored as ``conv.0`` and ``conv.3``."""

    def __init__(self, channels: int, norm: Norm = "instance") -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            _norm(channels, norm),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class NLCLGenerator(nn.Module):
    """The authors' generator (``arch = "nlcl-resnet"``); maps [-1, 1] images to [-1, 1]."""

    def __init__(
        self,
        *,
        in_channels: int = 3,
        channels: int = 32,
        blocks: int = 16,
        output: Output = "direct",
    ) -> None:
        super().__init__()
        check_output(output)
        self.output = output
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 3, padding=1)]
        layers += [ResBlock(channels) for _ in range(blocks)]
        layers += [Tail(channels), nn.Conv2d(channels, in_channels, 3, padding=1)]
        self.gen = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_output(x, self.gen(x), self.output)
