"""NLCLObjective: named finite terms, gradients reach exactly the right modules, and one
optimiser step per parameter group trains every parameter exactly once."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from derain_cli.config import LossConfig, ModelConfig, SamplerConfig
from derain_cli.errors import UsageError
from derain_cli.evaluation.metrics import ssim
from derain_cli.losses import NLCLObjective
from derain_cli.losses.supervision import RELATIVE_EPS, ssim_map, synthetic_supervision_loss
from derain_cli.sampling import block_match, grid_shape

TINY_MODEL = ModelConfig(
    generator_hparams={"channels": 8, "blocks": 2},
    rain_hparams={"channels": 8, "blocks": 2},
    d_channels=8,
    head_units=16,
)
TINY_SAMPLER = SamplerConfig(patch=8, stride=4)
TINY_LOSSES = LossConfig(
    layer_queries=4,
    layer_positives=3,
    layer_negatives=16,
    location_queries=16,
    location_negatives=12,
    location_g_layers=(0, 1, 2, 3),
)


def _objective(**loss_changes: object) -> NLCLObjective:
    torch.manual_seed(0)
    return NLCLObjective(TINY_MODEL, TINY_SAMPLER, replace(TINY_LOSSES, **loss_changes))


def _batch(size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return (
        torch.rand(2, 3, size, size, generator=g) * 2 - 1,
        torch.rand(2, 3, size, size, generator=g) * 2 - 1,
    )


def _trainable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def _reached(term: torch.Tensor, module: nn.Module | None) -> bool:
    """Whether ``term`` has a non-zero gradient for some parameter of ``module``."""
    if module is None:
        return False
    params = _trainable(module)
    grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
    return any(g is not None and bool(g.abs().sum() > 0) for g in grads)


def test_param_groups_are_disjoint_and_cover_every_trainable_parameter() -> None:
    obj = _objective()
    groups = obj.param_groups()
    assert set(groups) == {"generator", "discriminator"}
    ids = {name: {id(p) for p in ps} for name, ps in groups.items()}
    assert all(len(ids[n]) == len(groups[n]) for n in groups)  # no duplicates inside a group
    assert not ids["generator"] & ids["discriminator"]
    every = {id(p) for p in obj.parameters() if p.requires_grad}
    assert ids["generator"] | ids["discriminator"] == every
    assert ids["discriminator"] == {id(p) for p in obj.d.parameters()}
    for heads in (obj.layer_heads, obj.location_heads):
        assert heads is not None
        assert {id(p) for p in heads.parameters()} <= ids["generator"]
    # the momentum encoder is a copy updated by EMA only
    assert obj.key_d is not None and obj.key_heads is not None
    assert not any(p.requires_grad for p in obj.key_d.parameters())
    assert not any(p.requires_grad for p in obj.key_heads.parameters())


def test_generator_terms_are_named_finite_and_leave_d_without_gradient() -> None:
    obj = _objective()
    o, clean = _batch()
    b, r = obj.forward_generators(o)
    assert b.shape == r.shape == o.shape
    terms = obj.generator_losses(o, clean, b, r, torch.Generator().manual_seed(0))
    names = ("adv", "consistency", "rain_l1", "layer_contrast", "location_contrast", "total")
    assert tuple(terms) == names
    assert all(torch.isfinite(v) and v.dim() == 0 for v in terms.values())
    lc = obj.loss_config
    weighted = (
        lc.adv_weight * terms["adv"]
        + lc.consistency_weight * terms["consistency"]
        + lc.rain_l1_weight * terms["rain_l1"]
        + lc.layer_weight * terms["layer_contrast"]
        + lc.location_weight * terms["location_contrast"]
    )
    torch.testing.assert_close(terms["total"], weighted)
    terms["total"].backward()
    assert all(p.grad is None for p in obj.d.parameters())
    assert all(p.requires_grad for p in obj.d.parameters())  # restored after the frozen use
    assert all(p.grad is not None for p in obj.param_groups()["generator"])


def test_each_term_reaches_exactly_its_modules() -> None:
    obj = _objective(momentum=False)
    o, clean = _batch()
    b, r = obj.forward_generators(o)
    terms = obj.generator_losses(o, clean, b, r, torch.Generator().manual_seed(0))
    modules = {
        "g_b": obj.g_b,
        "g_r": obj.g_r,
        "d": obj.d,
        "layer_heads": obj.layer_heads,
        "location_heads": obj.location_heads,
    }
    expected = {
        "adv": {"g_b"},
        "consistency": {"g_b", "g_r"},
        "rain_l1": {"g_r"},
        "layer_contrast": {"g_b", "g_r", "layer_heads"},
        "location_contrast": {"g_b", "location_heads"},
    }
    for name, wanted in expected.items():
        got = {m for m, mod in modules.items() if _reached(terms[name], mod)}
        assert got == wanted, name
    d_terms = obj.discriminator_losses(o, clean, b)
    assert {m for m, mod in modules.items() if _reached(d_terms["total"], mod)} == {"d"}


def test_derain_additions_are_weighted_and_reach_only_g_b() -> None:
    """``B = O - relu(G_B(O))`` and the low-frequency term: options, not paper defaults."""
    torch.manual_seed(0)
    model = replace(
        TINY_MODEL, generator_hparams={**TINY_MODEL.generator_hparams, "output": "subtract_rain"}
    )
    obj = NLCLObjective(model, TINY_SAMPLER, replace(TINY_LOSSES, use_lowfreq=True))
    o, clean = _batch()
    b, r = obj.forward_generators(o)
    assert bool((b <= o).all())
    terms = obj.generator_losses(o, clean, b, r, torch.Generator().manual_seed(0))
    assert tuple(terms)[-2:] == ("lowfreq", "total")
    assert _reached(terms["lowfreq"], obj.g_b) and not _reached(terms["lowfreq"], obj.g_r)
    lc = obj.loss_config
    without = sum(
        getattr(lc, {"adv": "adv_weight", "consistency": "consistency_weight",
                     "rain_l1": "rain_l1_weight", "layer_contrast": "layer_weight",
                     "location_contrast": "location_weight"}[k]) * terms[k]
        for k in ("adv", "consistency", "rain_l1", "layer_contrast", "location_contrast")
    )  # fmt: skip
    torch.testing.assert_close(terms["total"], without + lc.lowfreq_weight * terms["lowfreq"])
    assert "lowfreq" not in _objective().generator_losses(o, clean, b, r)


def test_authors_variants_route_gradients_too() -> None:
    obj = _objective(rain_l1_target="o_minus_b", layer_form="supcon", location_identity=True)
    o, clean = _batch()
    b, r = obj.forward_generators(o)
    terms = obj.generator_losses(o, clean, b, r, torch.Generator().manual_seed(0))
    assert all(torch.isfinite(v) for v in terms.values())
    assert _reached(terms["rain_l1"], obj.g_b) and not _reached(terms["rain_l1"], obj.g_r)
    assert _reached(terms["layer_contrast"], obj.layer_heads)
    assert not _reached(terms["layer_contrast"], obj.d)


def test_one_step_per_group_steps_every_parameter_exactly_once() -> None:
    obj = _objective()
    groups = obj.param_groups()
    opts = {name: torch.optim.Adam(ps, lr=1e-3) for name, ps in groups.items()}
    before = {id(p): p.detach().clone() for p in obj.parameters()}
    o, clean = _batch()
    b, r = obj.forward_generators(o)

    opts["discriminator"].zero_grad()
    obj.discriminator_losses(o, clean, b)["total"].backward()
    opts["discriminator"].step()
    opts["generator"].zero_grad()
    obj.generator_losses(o, clean, b, r, torch.Generator().manual_seed(0))["total"].backward()
    opts["generator"].step()
    obj.momentum_update()

    for name, ps in groups.items():
        for p in ps:
            assert p.grad is not None, name
            assert int(opts[name].state[p]["step"]) == 1, name
    unchanged = [
        n for n, p in obj.named_parameters() if p.requires_grad and torch.equal(p, before[id(p)])
    ]
    # Only biases of convolutions that feed an InstanceNorm(affine=False) may stay put: the
    # norm subtracts the mean, so their gradient is exactly zero (a property of the layout).
    assert all(n.endswith(".bias") for n in unchanged), unchanged
    changed = len([p for p in obj.parameters() if p.requires_grad]) - len(unchanged)
    assert changed > 0.7 * len([p for p in obj.parameters() if p.requires_grad])
    # key encoder moved towards the updated query encoder by (1 - m)
    assert obj.key_d is not None
    m = obj.loss_config.momentum_decay
    for p_q, p_k in zip(obj.d.parameters(), obj.key_d.parameters(), strict=True):
        torch.testing.assert_close(p_k, m * before[id(p_q)] + (1 - m) * p_q)


def test_disabled_terms_are_omitted_and_build_no_heads() -> None:
    obj = _objective(use_layer_contrast=False, use_location_contrast=False, use_adv=False)
    assert obj.layer_heads is None and obj.location_heads is None and obj.key_d is None
    o, clean = _batch()
    b, r = obj.forward_generators(o)
    terms = obj.generator_losses(o, clean, b, r)
    assert tuple(terms) == ("consistency", "rain_l1", "total")
    d_terms = obj.discriminator_losses(o, clean, b)
    assert d_terms["total"].item() == 0.0
    d_terms["total"].backward()  # still safe to call


@pytest.mark.parametrize(
    "sampler",
    [
        SamplerConfig(patch=8, stride=4, layer_positives="random", layer_negatives="random",
                      location_negatives="random"),
        SamplerConfig(patch=8, stride=4, layer_positives="neighbour", layer_negatives="neighbour"),
        SamplerConfig(patch=8, stride=4, window=4, exclude_overlap=False, chunk_size=3),
    ],
)  # fmt: skip
def test_sampling_strategies_are_config_changes(sampler: SamplerConfig) -> None:
    torch.manual_seed(0)
    obj = NLCLObjective(TINY_MODEL, sampler, TINY_LOSSES)
    o, clean = _batch()
    b, r = obj.forward_generators(o)
    terms = obj.generator_losses(o, clean, b, r, torch.Generator().manual_seed(0))
    assert torch.isfinite(terms["total"])


def _strategy_of(image: torch.Tensor, queries: torch.Tensor, found: torch.Tensor, far: bool) -> str:
    """Which sampler produced ``found`` (N, Q, k) for ``queries`` (N, Q) on the 8/4 grid."""
    k = found.shape[-1]
    expected, _ = block_match(image, queries, patch=8, stride=4, k=k, farthest=far)
    if torch.equal(found, expected):
        return "nonlocal"
    rows, cols = grid_shape(image.shape[-2], image.shape[-1], 8, 4)
    cand = torch.arange(rows * cols)
    dist = (cand // cols - queries[..., None] // cols).float() ** 2 + (
        cand % cols - queries[..., None] % cols
    ).float() ** 2  # (N, Q, P)
    dist = dist.masked_fill(dist == 0, float("inf"))  # the query itself is never a match
    nearest = dist.sort(-1).values[..., :k]
    if torch.equal(torch.gather(dist, 2, found).sort(-1).values, nearest):
        return "neighbour"
    return "random"


TABLE_2 = [
    ("random", "random"),
    ("neighbour", "random"),
    ("neighbour", "neighbour"),
    ("nonlocal", "random"),
    ("random", "nonlocal"),
    ("nonlocal", "nonlocal"),
]


@pytest.mark.parametrize(("positives", "negatives"), TABLE_2)
@pytest.mark.parametrize("location", ["random", "neighbour", "nonlocal"])
def test_table_2_and_table_5_strategies_are_what_the_config_says(
    positives: str, negatives: str, location: str
) -> None:
    """Each row of the paper's Table 2 (layer contrast) and each location-negative strategy is
    a config change, and the samples really come from the strategy the config names."""
    sampler = SamplerConfig(
        patch=8, stride=4, exclude_overlap=False, layer_positives=positives,
        layer_negatives=negatives, location_negatives=location,
    )  # fmt: skip
    obj = NLCLObjective(TINY_MODEL, sampler, TINY_LOSSES)
    o, _ = _batch()
    with torch.no_grad():
        b, r = obj.forward_generators(o)
    layer = obj.sample_layer(b, r, torch.Generator().manual_seed(0))
    assert _strategy_of(b, layer.b_anchors, layer.b_positives, far=False) == positives
    assert _strategy_of(r, layer.r_anchors, layer.r_positives, far=False) == negatives
    queries, location_negatives = obj.sample_location(o, torch.Generator().manual_seed(0))
    assert location_negatives.shape == (2, 16, 12)
    assert _strategy_of(o, queries, location_negatives, far=True) == location


def test_seeded_generator_makes_the_losses_reproducible() -> None:
    obj = _objective()
    o, clean = _batch()
    with torch.no_grad():
        b, r = obj.forward_generators(o)
        first = obj.generator_losses(o, clean, b, r, torch.Generator().manual_seed(5))
        second = obj.generator_losses(o, clean, b, r, torch.Generator().manual_seed(5))
        other = obj.generator_losses(o, clean, b, r, torch.Generator().manual_seed(6))
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["location_contrast"], other["location_contrast"])


def test_generator_losses_under_bf16_autocast_are_finite() -> None:
    obj = _objective()
    o, clean = _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        b, r = obj.forward_generators(o)
        terms = obj.generator_losses(o, clean, b, r, torch.Generator().manual_seed(0))
        d_terms = obj.discriminator_losses(o, clean, b)
    assert all(torch.isfinite(v) for v in [*terms.values(), *d_terms.values()])
    terms["total"].backward()
    assert all(p.grad is None for p in obj.d.parameters())


def test_momentum_keys_come_from_the_key_encoder_and_temperatures_are_used() -> None:
    o, _ = _batch()

    def contrasts(obj: NLCLObjective) -> tuple[float, float]:
        with torch.no_grad():
            b, r = obj.forward_generators(o)
            layer = obj.layer_contrast(b, r, torch.Generator().manual_seed(0))
            location = obj.location_contrast(o, b, torch.Generator().manual_seed(0))
        return float(layer), float(location)

    obj = _objective()
    base = contrasts(obj)
    assert obj.key_d is not None and obj.key_heads is not None
    with torch.no_grad():  # MoCo: positives/negatives are embedded by the key encoder
        for p in obj.key_heads.parameters():
            p.add_(0.5 * torch.randn_like(p))
    assert contrasts(obj)[0] != pytest.approx(base[0])
    assert contrasts(_objective(layer_temperature=0.77))[0] != pytest.approx(base[0])
    assert contrasts(_objective(location_temperature=0.77))[1] != pytest.approx(base[1])
    assert contrasts(_objective(momentum=False)) == pytest.approx(base)  # keys == queries at init


def test_synthetic_supervision_is_weighted_reaches_only_g_b_and_needs_the_crops() -> None:
    """``L_syn = |G_B(render(C)) - C|``: an option, off by default; G_R and D get nothing."""
    obj = _objective(use_synthetic=True, synthetic_weight=3.0)
    o, clean = _batch()
    rendered = (clean + 0.3).clamp(-1, 1)
    b, r = obj.forward_generators(o)
    terms = obj.generator_losses(o, clean, b, r, torch.Generator().manual_seed(0),
                                 synthetic=rendered)  # fmt: skip
    expected = (obj.g_b(rendered) - clean).abs().mean()
    torch.testing.assert_close(terms["synthetic"], expected)
    assert _reached(terms["synthetic"], obj.g_b)
    assert not _reached(terms["synthetic"], obj.g_r) and not _reached(terms["synthetic"], obj.d)
    others = {k: v for k, v in terms.items() if k not in ("synthetic", "total")}
    plain = _objective().generator_losses(o, clean, b, r, torch.Generator().manual_seed(0))
    assert "synthetic" not in plain
    torch.testing.assert_close(terms["total"], plain["total"] + 3.0 * terms["synthetic"])
    assert set(others) == set(plain) - {"total"}
    with pytest.raises(ValueError, match="use_synthetic needs the rendered crops"):
        obj.generator_losses(o, clean, b, r)


def test_relative_synthetic_loss_counts_every_crop_alike() -> None:
    """Each crop's L1 over its rain's L1: 1 for returning the input whatever the amount of rain,
    so a crop of sparse streaks weighs as much as one under a veil."""
    clean = torch.zeros(2, 3, 8, 8)
    rainy = clean.clone()
    rainy[0] += 0.5  # a veil: every pixel wrong by 0.5
    rainy[1, :, :, 0] = 1.0  # one thin streak: an eighth of the pixels wrong by 1
    plain = synthetic_supervision_loss(rainy, clean)  # the identity's score
    assert plain.item() == pytest.approx((0.5 + 1.0 / 8) / 2)
    relative = synthetic_supervision_loss(rainy, clean, rainy, form="relative_l1")
    per_crop = [0.5 / (0.5 + RELATIVE_EPS), 0.125 / (0.125 + RELATIVE_EPS)]
    assert relative.item() == pytest.approx(sum(per_crop) / 2)
    assert synthetic_supervision_loss(clean, clean, rainy, form="relative_l1").item() == 0.0
    with pytest.raises(ValueError, match="needs the rendered crops"):
        synthetic_supervision_loss(rainy, clean, form="relative_l1")
    with pytest.raises(ValueError, match="choose l1 or relative_l1"):
        synthetic_supervision_loss(rainy, clean, rainy, form="l2")
    obj = _objective(use_synthetic=True, synthetic_loss="relative_l1")
    o, target = _batch()
    rendered = (target + 0.3).clamp(-1, 1)
    b, r = obj.forward_generators(o)
    terms = obj.generator_losses(o, target, b, r, torch.Generator().manual_seed(0),
                                 synthetic=rendered)  # fmt: skip
    expected = synthetic_supervision_loss(obj.g_b(rendered), target, rendered, form="relative_l1")
    torch.testing.assert_close(terms["synthetic"], expected)


def test_ssim_term_matches_the_eval_metric_and_guards_texture() -> None:
    """The synthetic term's SSIM is derain eval's SSIM (per channel, valid window), and with
    ``ssim_weight`` a flattened texture costs more than under L1 alone."""
    gen = torch.Generator().manual_seed(0)
    clean = torch.rand(2, 3, 32, 40, generator=gen) * 2 - 1
    noisy = (clean + 0.2 * torch.randn(2, 3, 32, 40, generator=gen)).clamp(-1, 1)
    for n in range(2):
        expected = ssim(
            ((noisy[n].permute(1, 2, 0) + 1) / 2).double().numpy(),
            ((clean[n].permute(1, 2, 0) + 1) / 2).double().numpy(),
            rgb=True,
        )
        assert ssim_map(noisy[n : n + 1], clean[n : n + 1]).mean().item() == pytest.approx(
            expected, abs=1e-5
        )
    assert ssim_map(clean, clean).mean().item() == pytest.approx(1.0, abs=1e-6)
    flat = clean.mean(dim=(2, 3), keepdim=True).expand_as(clean)
    l1 = synthetic_supervision_loss(flat, clean)
    both = synthetic_supervision_loss(flat, clean, ssim_weight=0.5)
    assert both.item() > l1.item() + 0.4  # SSIM of a flat crop against texture is near 0
    assert synthetic_supervision_loss(clean, clean, ssim_weight=0.5).item() == pytest.approx(
        0.0, abs=1e-6
    )
    with pytest.raises(ValueError, match="at least 11 px"):
        ssim_map(clean[..., :8, :8], clean[..., :8, :8])
    with pytest.raises(UsageError, match="synthetic_ssim_weight < 0"):
        LossConfig(synthetic_ssim_weight=-1.0)
