"""DM, IDM and DataDAM: dbench's default iteration computes the same loss as the plain
reference-style loop of benchmarks/reference_loops.py (written like the official code: per-class
loops, fp32, NCHW) on identical inputs and nets, so benchmarks/bench_iter_dm.py compares the
same math. Small random stand-ins for MNIST (1x28x28) and CIFAR-10 (3x32x32) data."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

from benchmark.data import RealData, get_info
from benchmark.distill import SiameseAug, freeze
from benchmark.models import create_model
from benchmark.samplers import AllClassSampler, ClassRandomSampler
from benchmark.synset import Decode
from methods.datadam import datadam_loss
from methods.dm import dm_loss, real_features
from methods.idm import _Net, idm_image_steps, train_queue_net

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import reference_loops as R  # noqa: E402

CPU = torch.device("cpu")
BATCH = 24  # > REAL_CHUNK and not a multiple of it: chunks straddle classes


def _real(ds: str, per: int = 40) -> RealData:
    info = dataclasses.replace(get_info(ds), name=ds)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (10 * per, info.channels, *info.im_size), generator=g, dtype=torch.uint8)
    return RealData(info, images, torch.arange(10).repeat_interleave(per), "train")


def _gen(s: int) -> torch.Generator:
    return torch.Generator().manual_seed(s)


def _syn(real: RealData, n: int) -> torch.Tensor:
    return torch.randn(n, real.info.channels, *real.info.im_size, generator=_gen(4))


@pytest.mark.parametrize("arch", ["ConvNet", "ConvNetBN", "ConvNetD4"])
@pytest.mark.parametrize("ds", ["mnist", "cifar10"])
def test_real_features_equals_one_forward(ds, arch):
    """Chunked real forward == one forward of the whole batch (BN: whole-batch statistics)."""
    real = _real(ds)
    net = freeze(create_model(arch, real.info, _gen(1))).train()
    x = ClassRandomSampler(real, _gen(3)).many(BATCH)
    with torch.no_grad():
        ref = net.embed(x)
    for chunk in (16, 7):
        assert torch.allclose(real_features(net, x, CPU, chunk=chunk), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("ds,ipc", [("mnist", 1), ("cifar10", 3)])
def test_dm_default_equals_reference_loop(ds, ipc):
    real = _real(ds)
    net = freeze(create_model("ConvNet", real.info, _gen(1))).train()
    syn0 = _syn(real, 10 * ipc)
    out = {}
    for mode in ("batched", "reference"):
        aug = SiameseAug(real.info.dsa_strategy, real.info.im_size, _gen(2))
        sampler = ClassRandomSampler(real, _gen(3))
        syn = syn0.clone().requires_grad_(True)
        opt = torch.optim.SGD([syn], lr=1.0, momentum=0.5)
        if mode == "reference":
            loss = R.dm_reference_iteration(net, sampler, aug, syn, opt, 10, ipc, BATCH)
        else:
            loss = dm_loss(net, sampler, aug, syn, 10, ipc, BATCH, "batched", CPU)
            opt.zero_grad()
            loss.backward()
            opt.step()
        out[mode] = (float(loss.detach()), syn.detach().clone())
    assert out["batched"][0] == pytest.approx(out["reference"][0], rel=1e-4)
    assert torch.allclose(out["batched"][1], out["reference"][1], atol=1e-4)


@pytest.mark.parametrize("ds,ipc", [("mnist", 1), ("cifar10", 2)])
def test_idm_default_equals_reference_loop(ds, ipc):
    real = _real(ds)
    out = {}
    for mode in ("batched", "reference"):
        net = freeze(create_model("ConvNet", real.info, _gen(1))).eval()
        aug = SiameseAug(real.info.dsa_strategy, real.info.im_size, _gen(2))
        sampler = ClassRandomSampler(real, _gen(3))
        syn = _syn(real, 10 * ipc).requires_grad_(True)
        opt = torch.optim.SGD([syn], lr=0.2, momentum=0.5)
        q = create_model("ConvNet", real.info, _gen(5))
        qopt = torch.optim.SGD(q.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        all_sampler = AllClassSampler(real, _gen(6))
        if mode == "reference":
            l_dm, l_ce = R.idm_reference_image_steps(net, sampler, aug, syn, opt, 10, ipc, BATCH, 12.5)
            meter = R.idm_reference_train_net(q, qopt, all_sampler, 32, 2)
        else:
            l_dm, l_ce = idm_image_steps(net, sampler, aug, syn, opt, 10, ipc, BATCH, Decode(2, "idm"), 12.5, CPU)
            entry = _Net(q, qopt, 0)
            train_queue_net(entry, all_sampler, 32, 2, CPU)
            meter = (entry.correct, entry.total)
        out[mode] = (float(l_dm), float(l_ce), syn.detach().clone(), torch.cat([p.detach().flatten()
                                                                               for p in q.parameters()]), meter)
    b, r = out["batched"], out["reference"]
    assert b[0] == pytest.approx(r[0], rel=1e-4) and b[1] == pytest.approx(r[1], rel=1e-4)
    assert torch.allclose(b[2], r[2], atol=1e-4)
    assert torch.allclose(b[3], r[3], atol=1e-5)
    assert b[4] == r[4]


@pytest.mark.parametrize("arch,power", [("ConvNetBN", 1.0), ("ConvNet", 4.0)])
@pytest.mark.parametrize("ds,ipc", [("mnist", 1), ("cifar10", 2)])
def test_datadam_default_equals_reference_loop(ds, ipc, arch, power):
    """Official (ConvNet-BN: mixed-class batch statistics, p 1) and paper (InstanceNorm, p 4)."""
    real = _real(ds)
    net = freeze(create_model(arch, real.info, _gen(1))).train()
    syn0 = _syn(real, 10 * ipc)
    losses, grads = {}, {}
    for mode in ("batched", "loop", "reference"):
        aug = SiameseAug(real.info.dsa_strategy, real.info.im_size, _gen(2))
        sampler = ClassRandomSampler(real, _gen(3))
        syn = syn0.clone().requires_grad_(True)
        if mode == "reference":
            loss = R.datadam_reference_loss(net, sampler, aug, syn, 10, ipc, BATCH, power)
        else:
            l_att, l_emb = datadam_loss(net, sampler, aug, syn, 10, BATCH, power, "l2", CPU, forward=mode)
            loss = 100.0 * (l_att + 0.01 * l_emb)
        loss.backward()
        losses[mode], grads[mode] = float(loss.detach()), syn.grad.clone()
    for mode in ("batched", "loop"):
        assert losses[mode] == pytest.approx(losses["reference"], rel=1e-4)
        err = (grads[mode] - grads["reference"]).abs().max() / grads["reference"].abs().max()
        assert err < 1e-4, (mode, float(err))
