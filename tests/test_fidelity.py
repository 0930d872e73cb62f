"""Faithfulness to the official code (issue 11): each test fails on the behaviour it replaced.

Facts are from the official repositories (snu-mllab/Efficient-Dataset-Condensation@ceac95a,
lyq312318224/DREAM@595e3c1, VICO-UoE/DatasetCondensation@53f63a6) as summarised in
docs/fidelity.md."""

import math
from pathlib import Path

import pytest
import torch
from torch import nn

import benchmark.samplers as samplers_mod
from benchmark.api import RunContext, get_method
from benchmark.budgets import resolve_budget
from benchmark.data import get_info
from benchmark.evaluate import get_protocol
from benchmark.models import create_model
from benchmark.samplers import (
    RepresentativeConfig,
    RepresentativeSampler,
    make_class_sampler,
)

CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))


def _method(key: str, dataset: str, preset: str = "official", params=None, tmp: Path = Path("/tmp")):
    cls = get_method(key)
    ctx = RunContext(device=torch.device("cpu"), seed=0, arch="ConvNet", info=get_info(dataset),
                     budget=resolve_budget("paper"), workdir=tmp)
    return cls(cls.resolve_config(preset, params), ctx)


# ------------------------------------------------------------ 1. Fashion-MNIST lr_img


@pytest.mark.parametrize("key", ["idc", "dream", "dream_plus"])
def test_fashion_mnist_lr_img_uses_base_size_32_and_l1(key):
    """argument.py tune_lr_img: base 28 only for 'mnist'; Fashion-MNIST (28 px) gets (28/32)^2.
    Old: base 28, i.e. 1e-4 at ipc 10."""
    r = _method(key, "fashion_mnist").resolved(10)
    assert r["lr_img"] == pytest.approx(1e-4 * (28 / 32) ** 2)  # 7.656e-5
    assert r["metric"] == "l1" and r["n_data"] == 500
    assert _method(key, "fashion_mnist").resolved(50)["lr_img"] == pytest.approx(5e-4 * 0.765625)
    # MNIST keeps base 28 (factor 1)
    assert _method(key, "mnist").resolved(10)["lr_img"] == pytest.approx(1e-4)


def test_dream_settings_cite_the_dream_repo():
    assert "lyq312318224/DREAM@595e3c1" in _method("dream", "cifar10").resolved(10)["provenance"]
    assert "Efficient-Dataset-Condensation" in _method("idc", "cifar10").resolved(10)["provenance"]


# ------------------------------------------------------------ 2. ResNet-10 init


def _big_convs(m: nn.Module):
    return [c for c in m.modules() if isinstance(c, nn.Conv2d) and c.weight.numel() >= 20_000]


def test_resnet10bn_convs_are_kaiming_normal_fan_out():
    """IDC models/resnet.py: conv.weight ~ N(0, sqrt(2 / (k*k*out))); BN weight 1, bias 0.
    Old: PyTorch's default U(+-1/sqrt(fan_in)), whose std is 1/sqrt(3 fan_in) (about 0.58x)."""
    m = create_model("ResNet10BN", get_info("cifar10"), torch.Generator().manual_seed(0))
    convs = _big_convs(m)
    assert len(convs) >= 4
    for c in convs:
        want = math.sqrt(2.0 / (c.kernel_size[0] * c.kernel_size[1] * c.out_channels))
        w = c.weight.detach()
        assert float(w.std()) == pytest.approx(want, rel=0.03), c
        assert abs(float(w.mean())) < 0.05 * want
        assert float(w.abs().max()) > 1.0 / math.sqrt(c.weight[0].numel())  # normal tails pass the uniform bound
    for bn in (x for x in m.modules() if isinstance(x, nn.BatchNorm2d)):
        assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
    # the classifier keeps PyTorch's default (IDC leaves nn.Linear alone)
    fc = m.classifier
    assert float(fc.weight.detach().abs().max()) <= 1.0 / math.sqrt(fc.in_features) + 1e-6


def test_resnet10bn_init_is_deterministic_per_generator_and_leaves_global_rng_alone():
    info = get_info("cifar10")
    torch.manual_seed(1)
    state = torch.random.get_rng_state()
    a = create_model("ResNet10BN", info, torch.Generator().manual_seed(5))
    assert torch.equal(torch.random.get_rng_state(), state)  # not even consumed
    torch.manual_seed(2)  # a different global state changes nothing
    b = create_model("ResNet10BN", info, torch.Generator().manual_seed(5))
    c = create_model("ResNet10BN", info, torch.Generator().manual_seed(6))
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)
    assert not torch.equal(_big_convs(a)[0].weight, _big_convs(c)[0].weight)


@pytest.mark.parametrize("name", ["ResNet18BN", "ResNet18", "ConvNet", "DenseNet121_cifar_k12", "VGG11", "AlexNet"])
def test_other_architectures_keep_pytorch_default_init(name):
    """VICO-UoE networks.py and kuangliu's densenet_cifar have no custom init."""
    m = create_model(name, get_info("cifar10"), torch.Generator().manual_seed(0))
    for c in _big_convs(m):
        bound = 1.0 / math.sqrt(c.weight[0].numel())
        w = c.weight.detach()
        assert float(w.abs().max()) <= bound + 1e-6
        assert float(w.std()) == pytest.approx(bound / math.sqrt(3), rel=0.05)


# ------------------------------------------------------------ 3. named choices


def test_idc_protocol_rule_depends_on_the_factor():
    """misc/reproduce.py: MNIST drops CutMix (and uses color_crop_scale_rotate) only for factor > 1.
    Old: MNIST never had CutMix, whatever the factor (and resolve took no factor)."""
    mnist = get_info("mnist")
    f1 = get_protocol("idc").resolve(mnist, "ConvNet", factor=1)
    assert f1.cutmix_p == 0.5 and f1.dsa_strategy == "color_crop_scale_rotate"  # flip and cutout removed
    i = get_protocol("idc_i").resolve(mnist, "ConvNet")
    assert ((i.cutmix_p, i.dsa_strategy, i.epochs, i.batch_size)
            == (f1.cutmix_p, f1.dsa_strategy, f1.epochs, f1.batch_size))
    f2 = get_protocol("idc").resolve(mnist, "ConvNet", factor=2)
    assert f2.cutmix_p == 0.0 and f2.dsa_strategy == "color_crop_scale_rotate"
    assert get_protocol("idc").resolve(mnist, "ConvNet") == f2  # unknown factor: IDC's 2
    # an explicit factor beats the profile's assumption
    assert get_protocol("idc_i").resolve(mnist, "ConvNet", factor=2).cutmix_p == 0.0


def test_idc_protocol_svhn_idc_i_ipc1_drops_cutmix_and_keeps_cutout():
    svhn = get_info("svhn")
    p = get_protocol("idc")
    one = p.resolve(svhn, "ConvNet", factor=1, ipc=1)
    assert one.cutmix_p == 0.0 and one.dsa_strategy == "color_crop_cutout_scale_rotate"
    for kw in ({"factor": 1, "ipc": 10}, {"factor": 2, "ipc": 1}, {}):
        other = p.resolve(svhn, "ConvNet", **kw)
        assert other.cutmix_p == 0.5 and other.dsa_strategy == "color_crop_scale_rotate", kw


def test_idc_protocol_densenet_trains_400_epochs_at_ipc_50_with_factor_2():
    """test.py: DenseNet at 400 epochs when ipc >= 50 and factor > 1 (ResNet-10 and ConvNet keep 1000)."""
    c10, p = get_info("cifar10"), get_protocol("idc")
    assert p.resolve(c10, "DenseNet121_cifar_k12", factor=2, ipc=50).epochs == 400
    assert p.resolve(c10, "densenet_cifar", ipc=100).epochs == 400
    assert p.resolve(c10, "DenseNet121_cifar_k12", factor=2, ipc=10).epochs == 1000
    assert p.resolve(c10, "DenseNet121_cifar_k12", factor=1, ipc=50).epochs == 1000
    assert p.resolve(c10, "ResNet10BN", factor=2, ipc=50).epochs == 1000
    assert p.resolve(c10, "DenseNet121_cifar_k12").epochs == 1000  # ipc unknown: not applied


def test_new_protocol_field_keeps_existing_profile_hashes():
    for name in ("idc", "dsa", "dc", "dm", "idm", "datadam"):
        assert "idc_factor" not in get_protocol(name).model_dump(exclude_defaults=True)


def test_idc_norm_stats_official_uses_cifar10_constants_for_cifar100():
    """IDC/DREAM data.py: MEANS['cifar100'] = MEANS['cifar'] (CIFAR-10's). Old: no such choice."""
    r = _method("idc", "cifar100", params={"norm_stats": "official"}).resolved(10)
    assert (tuple(r["norm_mean"]), tuple(r["norm_std"])) == CIFAR10_STATS
    own = _method("idc", "cifar100").resolved(10)
    assert tuple(own["norm_mean"]) == get_info("cifar100").mean
    # every other dataset: its own constants either way
    r10 = _method("dream", "svhn", params={"norm_stats": "official"}).resolved(10)
    assert tuple(r10["norm_mean"]) == get_info("svhn").mean


def test_idc_clamp_final_false_evaluates_the_unclamped_set(digits, tmp_path):
    """The official code saves and evaluates synset.data unclamped (clamped only at the start of
    each outer iteration). Old: the set was always clamped to [0, 1]."""
    tr, _ = digits
    base = {"iterations": 1, "inner_loop": 1, "n_data": 16, "batch_real": 8, "lr_img": 50.0}
    cls = get_method("idc")

    def run(extra, sub):
        ctx = RunContext(device=torch.device("cpu"), seed=0, arch="ConvNet", info=tr.info,
                         budget=resolve_budget("paper"), workdir=tmp_path / sub)
        return cls(cls.resolve_config("official", {**base, **extra}), ctx).distill(tr, 1)

    clamped, raw = run({}, "a"), run({"clamp_final": False}, "b")
    assert clamped.space == "pixel" and raw.space == "normalized"
    mean = torch.tensor(tr.info.mean).view(1, -1, 1, 1)
    std = torch.tensor(tr.info.std).view(1, -1, 1, 1)
    px = raw.images * std + mean
    assert float(px.min()) < 0 or float(px.max()) > 1  # a huge lr leaves [0, 1] after the last step
    assert torch.allclose(px.clamp(0, 1), clamped.images, atol=1e-5)  # same trajectory, only the final clamp differs
    x_raw, y_raw = raw.training_tensors()
    x_cl, y_cl = clamped.training_tensors()
    assert x_raw.shape == x_cl.shape and torch.equal(y_raw, y_cl)
    assert not torch.allclose(x_raw, x_cl)


def _sampler(digits, pick):
    tr, _ = digits
    return RepresentativeSampler(tr, RepresentativeConfig(n=4, per_cluster=2), 4, torch.Generator().manual_seed(0),
                                 pick=pick)


def test_representative_topk_picks_nearest_over_the_whole_class(digits):
    """DREAM+ new_strategy.query_match: per centroid, the `subsample` nearest images among all
    images of the class (topk), even from another cluster. Old: only the cluster's members."""
    feats = torch.tensor([[0.0], [0.1], [0.2], [10.0]])  # clusters {0, 1, 2} and {3}
    topk = _sampler(digits, "topk").select_class(feats, 0).tolist()
    assert len(topk) == 4
    pairs = sorted([topk[:2], topk[2:]])  # centroid order is k-means' own
    assert set(pairs[0]) <= {0, 1, 2} and pairs[1] == [3, 2]  # the far centroid's 2nd pick is the nearest A image
    within = _sampler(digits, "distinct").select_class(feats, 0).tolist()
    assert 3 in within and len(within) == 3  # the singleton cluster gives one image


def test_representative_pick_is_an_idc_field_passed_to_the_sampler(digits):
    tr, _ = digits
    s = make_class_sampler("representative", tr, torch.Generator(), "cpu", batch=4,
                           rep=RepresentativeConfig(max_iter=3), pick="topk")
    assert s.pick == "topk"
    cfg = get_method("dream_plus").resolve_config("official", {"representative_pick": "topk"})
    assert cfg.representative_pick == "topk"
    assert get_method("dream").resolve_config("official", None).representative_pick == "distinct"


def test_idc_distill_hands_representative_pick_to_both_samplers(digits, tmp_path, monkeypatch):
    import methods.idc as idc_mod

    seen = []

    class Stop(Exception):
        pass

    real_rs = idc_mod.RepresentativeSampler

    def rs(*a, **k):  # the k-means init sampler
        s = real_rs(*a, **k)
        seen.append(("init", s.pick))
        return s

    def mcs(*a, pick="distinct", **k):  # the matching sampler
        seen.append(("match", pick))
        raise Stop

    monkeypatch.setattr(idc_mod, "RepresentativeSampler", rs)
    monkeypatch.setattr(idc_mod, "make_class_sampler", mcs)
    tr, _ = digits
    cls = get_method("dream")
    ctx = RunContext(device=torch.device("cpu"), seed=0, arch="ConvNet", info=tr.info,
                     budget=resolve_budget("paper"), workdir=tmp_path)
    cfg = cls.resolve_config("official", {"representative_pick": "topk", "batch_real": 8,
                                          "representative": {"max_iter": 3}})
    with pytest.raises(Stop):
        cls(cfg, ctx).distill(tr, 1)
    assert seen == [("init", "topk"), ("match", "topk")]


@pytest.mark.parametrize("key", ["dream", "dream_plus"])
def test_dream_tinyimagenet_preset_is_dreams_reproduce_row(key):
    """DREAM misc/reproduce.py tinyimagenet: batch_real 64, n_data 1000, mse, lr_img 5e-3, and
    tune_lr_img's (64/32)^2. Old: no such preset (the cifar10 row with batch_real 128, n_data 2000)."""
    m = _method(key, "tinyimagenet", preset="tinyimagenet")
    r = m.resolved(10)
    assert m.cfg.batch_real == 64 and r["n_data"] == 1000 and r["metric"] == "mse"
    assert r["lr_img"] == pytest.approx(5e-3 * 4)
    prov = get_method(key).PRESETS["tinyimagenet"]["provenance"]
    assert "ours" in prov and "MEANS['tinyimagenet']" in prov and "ConvNetD4" in prov


# ------------------------------------------------------------ 4. provenance


def test_dream_and_dream_plus_cite_the_commit_that_has_their_code():
    """condense_improve.py (DREAM+) exists from b133b77 on; 595e3c1 is the cited commit.
    Old: both cited 9032bd0, which has no condense_improve.py."""
    for key in ("dream", "dream_plus"):
        for name, p in get_method(key).PRESETS.items():
            assert "9032bd0" not in p["provenance"], (key, name)
    assert ("lyq312318224/DREAM@595e3c1 condense_improve.py"
            in get_method("dream_plus").PRESETS["official"]["provenance"])


def test_samplers_cite_where_query_and_query_match_live():
    doc = samplers_mod.__doc__
    assert "595e3c1" in doc and "new_strategy.py" in doc and "query_match" in doc
    assert "9032bd0" not in RepresentativeConfig.__doc__  # subsample did not exist there


def test_representative_presets_say_there_is_no_official_code():
    for key in ("dc", "dsa"):
        assert "no official code" in get_method(key).PRESETS["representative"]["provenance"]
    assert "no IDC code" in get_method("idc").PRESETS["representative"]["provenance"]
    assert "no official code" in get_method("dream").PRESETS["init_only"]["provenance"]


def test_dc_stores_the_provenance_of_the_preset_that_ran(digits, tmp_path):
    """Old: meta['provenance'] was the official preset's, whatever preset ran."""
    from methods.dc import preset_provenance

    dc = get_method("dc")
    assert preset_provenance(dc, dc.resolve_config("real_init", None)) == dc.PRESETS["real_init"]["provenance"]
    assert preset_provenance(dc, dc.resolve_config("official", None)) == dc.PRESETS["official"]["provenance"]
    changed = preset_provenance(dc, dc.resolve_config("real_init", {"lr_img": 0.5}))
    assert changed.startswith(dc.PRESETS["real_init"]["provenance"]) and "lr_img=0.5" in changed

    tr, _ = digits
    ctx = RunContext(device=torch.device("cpu"), seed=0, arch="ConvNet", info=tr.info,
                     budget=resolve_budget("paper"), workdir=tmp_path)
    s = dc(dc.resolve_config("real_init", {"iterations": 1, "loops": [1, 1], "batch_real": 8}), ctx).distill(tr, 1)
    assert s.meta["provenance"].startswith(dc.PRESETS["real_init"]["provenance"])
    assert "'real_init'" in s.meta["provenance"]
