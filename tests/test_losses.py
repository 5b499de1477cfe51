"""Each loss term on tiny hand-built tensors, and the pieces the terms are built from."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from derain_cli.config import ModelConfig, SamplerConfig
from derain_cli.losses import (
    background_fidelity_loss,
    consistency_loss,
    lowfreq_consistency_loss,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    multi_positive_infonce,
    patch_nce_loss,
    rain_sparsity_loss,
    supcon_loss,
)
from derain_cli.losses.layer_contrast import sample_layer_patches
from derain_cli.losses.location_contrast import encode_generator, generator_channels
from derain_cli.nets.discriminator import PatchDiscriminator
from derain_cli.nets.generator import NLCLGenerator
from derain_cli.nets.heads import HeadSet, ProjectionHead
from derain_cli.sampling import block_match, gather_features, grid_shape


def test_consistency_and_rain_terms_equal_hand_computation() -> None:
    o = torch.tensor([1.0, 0.0, -1.0, 0.5]).view(1, 1, 2, 2)
    b = torch.tensor([0.5, 0.0, -0.5, 0.5]).view(1, 1, 2, 2)
    r = torch.tensor([0.5, 0.5, 0.0, -0.5]).view(1, 1, 2, 2)
    # B + R - O = [0, 0.5, 0.5, -0.5] -> squares 0, .25, .25, .25 -> mean 0.1875
    assert consistency_loss(b, r, o).item() == pytest.approx(0.1875)
    assert rain_sparsity_loss(r).item() == pytest.approx((0.5 + 0.5 + 0 + 0.5) / 4)
    assert background_fidelity_loss(b, o).item() == pytest.approx((0.5 + 0 + 0.5 + 0) / 4)


def test_lowfreq_consistency_compares_block_means() -> None:
    o = torch.zeros(1, 3, 8, 8)
    b = o.clone()
    b[..., :4, :4] = 1.0  # one 4x4 block brighter by 1: its mean moves by 1, the others by 0
    assert lowfreq_consistency_loss(b, o, 4).item() == pytest.approx(1 / 4)
    assert lowfreq_consistency_loss(b, o, 8).item() == pytest.approx(1 / 4)  # 16/64 of the image
    # zero-mean detail inside a block (a thin streak with a dark twin) costs nothing
    detail = o.clone()
    detail[..., 1, :] = 0.5
    detail[..., 2, :] = -0.5
    assert lowfreq_consistency_loss(detail, o, 4).item() == pytest.approx(0.0)
    # blocks larger than the image: the whole image is one block
    assert lowfreq_consistency_loss(b, o, 64).item() == pytest.approx(1 / 4)


def test_lowfreq_chroma_ignores_grey_light_but_not_a_tint() -> None:
    g = torch.Generator().manual_seed(0)
    o = torch.rand(1, 3, 16, 16, generator=g) * 2 - 1
    veiled = o + 0.3  # grey light added everywhere: a brightness change, no colour change
    assert lowfreq_consistency_loss(veiled, o, 8, "chroma").item() == pytest.approx(0, abs=1e-6)
    assert lowfreq_consistency_loss(veiled, o, 8, "rgb").item() == pytest.approx(0.3, abs=1e-5)
    tinted = o.clone()
    tinted[:, 1] += 0.3  # green up by 0.3: channel means move by +0.2 (G) and -0.1 (R, B)
    assert lowfreq_consistency_loss(tinted, o, 8, "chroma").item() == pytest.approx(0.4 / 3)
    with pytest.raises(ValueError, match="lowfreq space"):
        lowfreq_consistency_loss(o, o, 8, "lab")


def test_lsgan_values() -> None:
    real, fake = lsgan_discriminator_loss(torch.ones(2, 1, 3, 3), torch.zeros(2, 1, 3, 3))
    assert real.item() == 0.0 and fake.item() == 0.0
    real, fake = lsgan_discriminator_loss(
        torch.full((1, 1, 2, 2), 0.5), torch.full((1, 1, 2, 2), 2.0)
    )
    assert real.item() == pytest.approx(0.25) and fake.item() == pytest.approx(4.0)
    assert lsgan_generator_loss(torch.tensor([[[[0.0, 2.0]]]])).item() == pytest.approx(1.0)


def test_infonce_with_a_known_positive() -> None:
    tau, m = 0.5, 3
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    anchors = e1.view(1, 1, 2)
    positives = e1.view(1, 1, 1, 2)
    negatives = e2.expand(1, m, 2)
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + m))
    assert multi_positive_infonce(anchors, positives, negatives, tau).item() == pytest.approx(
        expected, rel=1e-6
    )
    # two positives: one aligned, one orthogonal -> the mean of the two log-softmax terms
    positives2 = torch.stack([e1, e2]).view(1, 1, 2, 2)
    second = -math.log(1.0 / (1.0 + m))
    assert multi_positive_infonce(anchors, positives2, negatives, tau).item() == pytest.approx(
        (expected + second) / 2, rel=1e-6
    )


def _supcon_reference(f: torch.Tensor, labels: torch.Tensor, tau: float) -> float:
    losses = []
    m = f.shape[0]
    for i in range(m):
        denom = sum(math.exp(float(f[i] @ f[j]) / tau) for j in range(m) if j != i)
        pos = [j for j in range(m) if j != i and labels[j] == labels[i]]
        if pos:
            losses.append(-sum(float(f[i] @ f[p]) / tau - math.log(denom) for p in pos) / len(pos))
    return sum(losses) / len(losses)


def test_supcon_matches_a_loop_reference() -> None:
    g = torch.Generator().manual_seed(0)
    f = F.normalize(torch.randn(1, 6, 4, generator=g), dim=-1)
    labels = torch.tensor([[1, 1, 1, 0, 0, 0]])
    got = supcon_loss(f, labels, 0.3).item()
    assert got == pytest.approx(_supcon_reference(f[0], labels[0], 0.3), rel=1e-5)


def test_patch_nce_matches_cross_entropy_by_hand() -> None:
    g = torch.Generator().manual_seed(1)
    keys = F.normalize(torch.randn(1, 5, 3, generator=g), dim=-1)
    queries = F.normalize(torch.randn(1, 2, 3, generator=g), dim=-1)
    q_idx = torch.tensor([[1, 3]])
    neg_idx = torch.tensor([[[0, 4], [2, 0]]])
    tau = 0.2
    expected = 0.0
    for qi in range(2):
        pos = float(queries[0, qi] @ keys[0, q_idx[0, qi]]) / tau
        negs = [float(queries[0, qi] @ keys[0, j]) / tau for j in neg_idx[0, qi].tolist()]
        expected += -pos + math.log(math.exp(pos) + sum(math.exp(x) for x in negs))
    got = patch_nce_loss(queries, keys, q_idx, neg_idx, tau).item()
    assert got == pytest.approx(expected / 2, rel=1e-5)


def test_gather_features_takes_the_cell_under_the_patch_centre() -> None:
    h = w = 16
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    fmap = torch.stack([ys, xs]).float()[None]  # channel 0 = row, channel 1 = col
    grid = grid_shape(h, w, 4, 4)  # 4x4 patches, centres at 1.5 + 4i
    idx = torch.tensor([[0, 5, 15]])
    full = gather_features(fmap, idx, grid=grid, patch=4, stride=4, image_size=(h, w))
    assert full[0].tolist() == [[1.0, 1.0], [5.0, 5.0], [13.0, 13.0]]
    half = F.avg_pool2d(fmap, 2)  # an encoder layer at 1/2 resolution
    out = gather_features(half, idx, grid=grid, patch=4, stride=4, image_size=(h, w))
    assert out.shape == (1, 3, 2)
    assert out[0, 2].tolist() == half[0, :, 6, 6].tolist()


def test_discriminator_encoder_and_heads() -> None:
    d = PatchDiscriminator(channels=8, layers=3, norm="instance")
    x = torch.randn(2, 3, 64, 64)
    feats = d.encode(x, [0, 1, 2, 3])
    assert [f.shape[1] for f in feats] == list(d.channels) == [8, 16, 32, 64]
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 7]
    assert d(x).shape == (2, 1, 6, 6)
    with pytest.raises(ValueError, match="layers"):
        d.encode(x, [4])
    # The config's default D is pix2pix's n_layers=3, ndf=64: 2,764,737 parameters
    mc = ModelConfig()
    paper_d = PatchDiscriminator(channels=mc.d_channels, layers=mc.d_layers, norm=mc.d_norm)
    assert sum(p.numel() for p in paper_d.parameters()) == 2_764_737
    heads = HeadSet([8, 16], units=12)
    out = heads[1](torch.randn(5, 16))
    assert out.shape == (5, 12)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(5))
    assert isinstance(heads[0], ProjectionHead) and len(list(heads[0].parameters())) == 4


def test_generator_encoder_layers() -> None:
    g = NLCLGenerator(channels=8, blocks=3)
    x = torch.randn(1, 3, 16, 16)
    feats = encode_generator(g, x, [0, 2])
    torch.testing.assert_close(feats[1], g.gen[2](g.gen[1](g.gen[0](x))))
    assert generator_channels(g, [0, 4, 5]) == [8, 8, 3]
    with pytest.raises(ValueError, match="layers"):
        encode_generator(g, x, [9])


def test_layer_samples_are_block_matches_in_their_own_layer() -> None:
    g = torch.Generator().manual_seed(0)
    b = torch.rand(2, 3, 32, 32, generator=g)
    r = torch.rand(2, 3, 32, 32, generator=g)
    sampler = SamplerConfig(patch=8, stride=4, exclude_overlap=False)
    kwargs = dict(sampler=sampler, queries=3, positives=2, negatives=10)
    s = sample_layer_patches(b, r, **kwargs, generator=torch.Generator().manual_seed(3))
    again = sample_layer_patches(b, r, **kwargs, generator=torch.Generator().manual_seed(3))
    assert torch.equal(s.b_anchors, again.b_anchors) and torch.equal(s.r_set, again.r_set)
    assert s.b_positives.shape == (2, 3, 2) and s.b_set.shape == (2, 9)
    assert s.r_set.shape == (2, 10)  # ceil(10 / 3) = 4 anchors x 3 patches, cut to 10
    ref_b, _ = block_match(b, s.b_anchors, patch=8, stride=4, k=2)
    ref_r, _ = block_match(r, s.r_anchors, patch=8, stride=4, k=2)
    assert torch.equal(s.b_positives, ref_b) and torch.equal(s.r_positives, ref_r)


def test_contrastive_logits_stay_fp32_under_autocast() -> None:
    g = torch.Generator().manual_seed(2)
    a = F.normalize(torch.randn(2, 3, 8, generator=g), dim=-1)
    p = F.normalize(torch.randn(2, 3, 4, 8, generator=g), dim=-1)
    n = F.normalize(torch.randn(2, 20, 8, generator=g), dim=-1)
    keys = F.normalize(torch.randn(2, 10, 8, generator=g), dim=-1)
    q_idx, neg_idx = torch.tensor([[0, 1, 2]] * 2), torch.tensor([[[3, 4, 5]] * 3] * 2)
    labels = torch.tensor([[1, 1, 1, 0, 0, 0, 0, 0, 0, 0]] * 2)
    ref = (
        multi_positive_infonce(a, p, n, 0.07),
        patch_nce_loss(a, keys, q_idx, neg_idx, 0.07),
        supcon_loss(keys, labels, 0.07),
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = (
            multi_positive_infonce(a, p, n, 0.07),
            patch_nce_loss(a, keys, q_idx, neg_idx, 0.07),
            supcon_loss(keys, labels, 0.07),
        )
    for x, y in zip(ref, amp, strict=True):
        assert y.dtype == torch.float32
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-6)
