import pytest
import torch

import benchmark.augment as A

STRAT = "color_crop_cutout_flip_scale_rotate"


def _x(n=6, c=3, s=16, seed=0):
    return torch.randn(n, c, s, s, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", ["color", "crop", "cutout", "flip", "scale", "rotate"])
def test_siamese_params_give_identical_transforms(family):
    """One sampled parameter set applied to a real and a synthetic batch: every image of both
    batches gets the same transform (no RNG replay involved)."""
    x = _x(1)
    real = x.expand(5, -1, -1, -1)
    syn = x.expand(2, -1, -1, -1)
    for seed in range(5):
        p = A.sample_dsa(family, 1, (16, 16), torch.Generator().manual_seed(seed), siamese=True)
        a, b = A.apply(real, p), A.apply(syn, p)
        assert torch.allclose(a, a[:1].expand_as(a)) and torch.allclose(a[:2], b)


def test_seeded_sampling_is_deterministic_and_seed_dependent():
    x = _x()
    outs = [A.apply(x, A.sample_dsa(STRAT, 6, (16, 16), torch.Generator().manual_seed(s), siamese=False))
            for s in (1, 1, 2)]
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], outs[2])


def test_per_sample_mode_differs_across_the_batch():
    x = _x(1).expand(8, -1, -1, -1)
    p = A.sample_dsa("rotate", 8, (16, 16), torch.Generator().manual_seed(0), siamese=False)
    y = A.apply(x, p)
    assert not torch.allclose(y[0], y[1])


@pytest.mark.parametrize("sampler", [A.sample_dsa, A.sample_idc])
def test_gradients_flow_to_input(sampler):
    x = _x().requires_grad_()
    for seed in range(8):
        y = A.apply(x, sampler(STRAT, 6, (16, 16), torch.Generator().manual_seed(seed), siamese=True))
        (y ** 2).sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
        x.grad = None


def test_crop_is_zero_filled_translation():
    x = torch.ones(1, 1, 8, 8)
    p = A.AugParams([("crop", {"tx": torch.tensor([2]), "ty": torch.tensor([0])})])
    y = A.apply(x, p)
    assert y[0, 0, -2:].sum() == 0 and y[0, 0, :-2].sum() == 6 * 8


def test_cutout_square_size_and_zero():
    x = torch.ones(1, 1, 16, 16)
    p = A.AugParams([("cutout", {"ox": torch.tensor([8]), "oy": torch.tensor([8])})])
    y = A.apply(x, p)
    assert (y == 0).sum() == 8 * 8  # side round(0.5 * 16)


def test_flip_and_colour_semantics():
    x = _x(2)
    p = A.AugParams([("flip", {"flip": torch.tensor([True, False])})])
    y = A.apply(x, p)
    assert torch.equal(y[0], x[0].flip(-1)) and torch.equal(y[1], x[1])
    b = A.apply(x, A.AugParams([("brightness", {"v": torch.tensor([1.0])})]))
    assert torch.allclose(b, x + 0.5)
    c = A.apply(x, A.AugParams([("contrast", {"v": torch.tensor([0.5])})]))  # factor u + 0.5 = 1
    assert torch.allclose(c, x, atol=1e-6)


def test_idc_composition_order():
    p = A.sample_idc("color_crop_cutout_flip_scale_rotate", 4, (16, 16), torch.Generator().manual_seed(0), siamese=True)
    ops = [op for op, _ in p.steps]
    assert ops[:4] == ["flip", "brightness", "saturation", "contrast"] and ops[-1] == "cutout"
    assert ops[4] in ("crop", "scale", "rotate") and len(ops) == 6


def test_unknown_op_is_clear():
    with pytest.raises(ValueError, match="unknown DSA op"):
        A.parse_strategy("color_blur")


def test_dc_augment_and_cutmix():
    g = torch.Generator().manual_seed(0)
    x = _x(8)
    y = A.dc_augment(x, "crop_scale_rotate", g)
    assert y.shape == x.shape and not torch.equal(x, y)
    assert torch.equal(A.dc_augment(x, "none", g), x)
    m, perm, r = A.cutmix(x, g)
    assert m.shape == x.shape and 0.0 <= r <= 1.0 and sorted(perm.tolist()) == list(range(8))


def test_kornia_zca_whitens_training_data():
    x = (torch.randn(400, 3, 4, 4, generator=torch.Generator().manual_seed(0))
         * torch.tensor([1.0, 3.0, 0.5]).view(1, 3, 1, 1))
    zca = A.fit_zca(x, eps=1e-3)
    w = zca(x).flatten(1)
    cov = torch.cov(w.T)
    assert torch.allclose(torch.diag(cov), torch.ones(48), atol=0.15)
    assert torch.allclose(zca.inverse_transform(zca(x)), x, atol=1e-3)
