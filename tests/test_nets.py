"""Generator architectures beyond the authors' layout: ``nlcl-s2d`` (space-to-depth).

Tiny random-init networks (8 channels, 2 blocks): these check shapes, padding, the output
parametrisation, the encoder used by the location contrast and the inference fallback, never
quality.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _tiles import fine_tiles

from derain_cli.config import LossConfig, ModelConfig, SamplerConfig
from derain_cli.inference import engine
from derain_cli.inference.engine import Derainer
from derain_cli.losses import NLCLObjective
from derain_cli.losses.location_contrast import encode_generator, generator_channels
from derain_cli.nets.fast import SpaceToDepthGenerator
from derain_cli.nets.generator import apply_output
from derain_cli.nets.registry import ARCHITECTURES, build_generator

TINY = {"channels": 8, "blocks": 2}
ODD_SIZES = [(37, 53), (5, 7), (1, 1), (16, 12)]


def tiny(seed: int = 0, **changes: object) -> SpaceToDepthGenerator:
    torch.manual_seed(seed)
    net = build_generator("nlcl-s2d", {**TINY, **changes})
    assert isinstance(net, SpaceToDepthGenerator)
    return net.eval()


def image(height: int, width: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, height, width, generator=g) * 2 - 1


def rgb(height: int, width: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((height, width, 3), dtype=np.float32)


def as_rgb(out: torch.Tensor) -> np.ndarray:
    """The Derainer's [-1, 1] -> [0, 1] H x W x 3 conversion."""
    return out.add(1).mul(0.5).clamp(0, 1)[0].permute(1, 2, 0).numpy()


def test_registered_with_defaults_that_build() -> None:
    spec = ARCHITECTURES["nlcl-s2d"]
    assert spec.build is SpaceToDepthGenerator and spec.description
    net = build_generator("nlcl-s2d")
    assert isinstance(net, SpaceToDepthGenerator)
    assert (net.factor, net.output, len(net.gen)) == (4, "direct", 12 + 3)
    first, last = net.gen[0], net.gen[-1]
    assert isinstance(first, torch.nn.Conv2d) and isinstance(last, torch.nn.Conv2d)
    assert (first.in_channels, first.out_channels, last.out_channels) == (48, 48, 48)


@pytest.mark.parametrize("output", ["direct", "subtract_rain"])
@pytest.mark.parametrize(("height", "width"), ODD_SIZES)
def test_any_size_keeps_its_shape(height: int, width: int, output: str) -> None:
    x = image(height, width)
    with torch.no_grad():
        y = tiny(output=output)(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


@pytest.mark.parametrize("factor", [2, 4])
def test_padding_replicates_edges_and_crops_the_top_left(factor: int) -> None:
    """The output of a ragged image is the top-left crop of its edge-replicated whole-cell run."""
    net = tiny(factor=factor)
    x = image(13, 22)
    target_h, target_w = -(-13 // factor) * factor, -(-22 // factor) * factor
    padded = F.pad(x, (0, target_w - 22, 0, target_h - 13), mode="replicate")
    with torch.no_grad():
        assert torch.equal(net(x), net(padded)[..., :13, :22])
        # a zero pad would let the norms see a black border: a different result
        zero = F.pad(x, (0, target_w - 22, 0, target_h - 13))
        assert not torch.allclose(net(x), net(zero)[..., :13, :22], atol=1e-4)


def test_subtract_rain_units_below_zero_still_learn_to_remove_rain() -> None:
    """A plain relu gave G_B zero gradient wherever its rain map was negative: trained on crops
    that are mostly rain-free the whole map went negative and the net stayed the identity.
    RainRelu passes the gradient that asks for more rain and drops the one that asks for less."""
    x = torch.zeros(1, 3, 2, 2)
    y = torch.full((1, 3, 2, 2), -0.5, requires_grad=True)
    target = torch.full((1, 3, 2, 2), -0.25).index_fill(3, torch.tensor([1]), 0.0)
    (apply_output(x, y, "subtract_rain") - target).abs().sum().backward()
    assert y.grad is not None
    assert (y.grad[..., 0] < 0).all()  # the loss wants rain here: y is pushed up, out of zero
    assert (y.grad[..., 1] == 0).all()  # no rain wanted where y is already below zero
    with torch.no_grad():  # forward is the plain relu, in training and at inference
        assert torch.equal(apply_output(x, y, "subtract_rain"), x)
    y2 = torch.tensor([0.3, -0.2], requires_grad=True)
    assert torch.equal(apply_output(torch.zeros(2), y2, "subtract_rain"), torch.tensor([-0.3, 0.0]))


@pytest.mark.parametrize(("height", "width"), [(37, 53), (5, 7), (40, 32)])
def test_subtract_rain_never_brightens_and_is_identity_with_a_zero_last_conv(
    height: int, width: int
) -> None:
    net = tiny(output="subtract_rain")
    x = image(height, width)
    with torch.no_grad():
        y = net(x)
        assert (y <= x).all()
        assert (x - y).max() > 1e-3  # an untrained net does remove something
        last = net.gen[-1]
        assert isinstance(last, torch.nn.Conv2d)
        last.weight.zero_()
        assert last.bias is not None
        last.bias.zero_()
        assert torch.equal(net(x), x)


def test_unknown_output_and_bad_factor_are_refused() -> None:
    with pytest.raises(ValueError, match="generator output 'tanh'"):
        SpaceToDepthGenerator(channels=8, blocks=1, output="tanh")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="factor must be >= 1"):
        SpaceToDepthGenerator(channels=8, blocks=1, factor=0)


def test_encode_gives_every_layer_at_cell_resolution() -> None:
    net = tiny()
    x = image(37, 53)
    layers = list(range(len(net.gen)))
    assert len(layers) == TINY["blocks"] + 3
    with torch.no_grad():
        feats = net.encode(x, layers)
        assert [f.shape[1] for f in feats] == [8] * (len(layers) - 1) + [3 * 16]
        assert {tuple(f.shape[-2:]) for f in feats} == {(10, 14)}  # ceil(37/4), ceil(53/4)
        # the last layer, shuffled back and cropped, IS the direct output
        rebuilt = F.pixel_shuffle(feats[-1], 4)[..., :37, :53]
        assert torch.equal(rebuilt, net(x))
        # encode_generator dispatches to encode; order follows the request
        picked = encode_generator(net, x, [3, 0])
        assert torch.equal(picked[0], feats[3]) and torch.equal(picked[1], feats[0])


def test_encode_refuses_layers_out_of_range() -> None:
    net = tiny()
    with pytest.raises(ValueError, match=r"generator layers are 0\.\.4, got \[5\]"):
        net.encode(image(16, 16), [0, 5])
    with pytest.raises(ValueError, match=r"generator layers are 0\.\.4, got \[-1\]"):
        encode_generator(net, image(16, 16), [-1])


def test_default_location_layers_fit_the_default_architecture() -> None:
    net = build_generator("nlcl-s2d")
    layers = LossConfig().location_g_layers
    assert generator_channels(net, layers) == [48] * len(layers)


OBJECTIVE_LOSSES = LossConfig(
    layer_queries=4,
    layer_positives=3,
    layer_negatives=16,
    location_queries=16,
    location_negatives=12,
    location_g_layers=(0, 1, 2, 4),
)


def s2d_objective(losses: LossConfig = OBJECTIVE_LOSSES) -> NLCLObjective:
    torch.manual_seed(0)
    model = ModelConfig(
        generator="nlcl-s2d",
        generator_hparams={**TINY, "output": "subtract_rain"},
        rain_generator="nlcl-s2d",
        rain_hparams=TINY,
        d_channels=8,
        head_units=16,
    )
    return NLCLObjective(model, SamplerConfig(patch=8, stride=4), losses)


def test_objective_trains_s2d_generators_with_the_location_contrast() -> None:
    obj = s2d_objective()
    g = torch.Generator().manual_seed(2)
    o = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    clean = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    b, r = obj.forward_generators(o)
    assert b.shape == r.shape == o.shape
    terms = obj.generator_losses(o, clean, b, r, torch.Generator().manual_seed(3))
    assert "location_contrast" in terms and "layer_contrast" in terms
    assert all(torch.isfinite(v) for v in terms.values())
    params = [p for p in obj.g_b.parameters() if p.requires_grad]
    grads = torch.autograd.grad(
        terms["location_contrast"], params, retain_graph=True, allow_unused=True
    )
    assert any(grad is not None and bool(grad.abs().sum() > 0) for grad in grads)
    terms["total"].backward()
    assert obj.location_heads is not None
    assert all(p.grad is not None for p in obj.location_heads.parameters())


def test_objective_refuses_a_location_layer_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"generator layers are 0\.\.4, got \[5\]"):
        s2d_objective(replace(OBJECTIVE_LOSSES, location_g_layers=(0, 5)))


@pytest.mark.parametrize(("height", "width"), [(37, 53), (5, 7)])
def test_derainer_matches_the_module(height: int, width: int) -> None:
    net = tiny()
    derainer = Derainer(net, device="cpu")
    assert derainer.cells is not None and derainer.stream_plan is not None
    picture = rgb(height, width)
    out = derainer(picture)
    assert out.shape == picture.shape and out.min() >= 0 and out.max() <= 1
    if min(height, width) >= engine.MIN_SIDE:  # smaller images run on an edge-padded canvas
        x = torch.from_numpy(picture).permute(2, 0, 1)[None] * 2 - 1
        with torch.no_grad():
            assert np.abs(out - as_rgb(net(x))).max() < 1e-6


@pytest.mark.parametrize("output", ["direct", "subtract_rain"])
@pytest.mark.parametrize("size", [(100, 130), (129, 67)])
def test_tiles_stream_gen_over_cells_exactly(output: str, size: tuple[int, int]) -> None:
    """Rearranged on the host, gen streamed over the cells with whole-image InstanceNorm
    statistics, rearranged back: the untiled result, for any image size and either output."""
    torch.manual_seed(0)
    net = SpaceToDepthGenerator(channels=8, blocks=2, factor=2, output=output)  # type: ignore[arg-type]
    picture = rgb(*size)
    whole = Derainer(net, device="cpu", tile=0)(picture)
    tiled = Derainer(net, settings=fine_tiles(32))  # 16-cell strips: several per image
    assert tiled.tile_for(*size) == 32
    assert np.abs(tiled(picture) - whole).max() < 1e-5


def test_automatic_tiling_follows_memory_on_the_cell_grid(monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory pressure tiles it (exactly); the estimate is per image pixel, not per cell."""
    net = tiny()
    derainer = Derainer(net, device="cpu")
    assert derainer.bytes_per_pixel == engine.bytes_per_pixel(net.gen) // net.factor**2
    monkeypatch.setattr(engine, "auto_tile", lambda *args: 64)
    assert derainer.tile_for(100, 130) == 64
    picture = rgb(100, 130)
    whole = Derainer(net, device="cpu", tile=0)(picture)
    assert np.abs(derainer(picture) - whole).max() < 1e-5


# ----------------------------------------------------------------- norm and refinement head


def test_norm_none_is_local_and_keeps_the_key_layout() -> None:
    """InstanceNorm normalises every channel over the whole image, so a change in one corner
    changes the output in the opposite one; without it the output depends on its receptive field
    alone. Both share one state-dict layout (the authors' norm has no parameters)."""
    with_in, without = tiny(), tiny(norm="none")
    assert with_in.state_dict().keys() == without.state_dict().keys()
    assert not any(isinstance(m, torch.nn.InstanceNorm2d) for m in without.modules())
    x = image(128, 128)
    x2 = x.clone()
    x2[..., :8, :8] = 1.0
    with torch.no_grad():
        for net, far_changes in ((with_in, True), (without, False)):
            far = (net(x2) - net(x))[..., -32:, -32:].abs().max().item()
            assert (far > 1e-4) is far_changes
    with pytest.raises(ValueError, match="generator norm 'batch'"):
        tiny(norm="batch")


@pytest.mark.parametrize(("height", "width"), [(37, 53), (5, 7), (40, 32)])
def test_refinement_head_sees_pixels_and_keeps_the_output_rules(height: int, width: int) -> None:
    net = tiny(output="subtract_rain", refine=6)
    assert net.refine is not None and net.from_cells_halo == 2
    x = image(height, width)
    with torch.no_grad():
        y = net(x)
        assert y.shape == x.shape and (y <= x).all()
        # The head reads the input pixels: a change of one pixel changes its own output even when
        # gen's cells are held fixed.
        cells = net.gen(net.to_cells(x))
        x2 = x.clone()
        x2[..., height // 2, width // 2] += 0.5
        changed = (net.from_cells(x2, cells) - net.from_cells(x, cells)).abs().sum(1)[0]
        assert changed[height // 2, width // 2] > 0
        assert changed[: max(0, height // 2 - 2)].abs().sum() == 0  # radius 2 pixels
    with pytest.raises(ValueError, match="refine width must be >= 0"):
        tiny(refine=-1)


@pytest.mark.parametrize(
    "changes", [{"norm": "none"}, {"norm": "none", "refine": 6}, {"refine": 6}]
)
@pytest.mark.parametrize("size", [(100, 130), (129, 67)])
def test_tiles_are_exact_without_norms_and_with_the_head(
    changes: dict[str, object], size: tuple[int, int]
) -> None:
    """No InstanceNorm: still streamed (one segment, gen's whole radius as halo), not feathered;
    the head runs in strips with its own halo. Both give the untiled result."""
    net = tiny(output="subtract_rain", **changes)
    picture = rgb(*size)
    whole = Derainer(net, device="cpu", tile=0)(picture)
    tiled = Derainer(net, settings=fine_tiles(32))
    assert tiled.stream_plan is not None
    assert np.abs(tiled(picture) - whole).max() < 1e-5
