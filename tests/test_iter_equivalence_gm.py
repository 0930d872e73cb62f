"""The gradient-matching iteration benchmark (benchmarks/bench_iter_gm.py) compares the same
math: on identical nets and inputs, dbench's step functions (methods.dc.matching_step,
methods.idc.class_steps, benchmark.gradmatch.train_on_tensors / train_steps) give the
reference-style loops' losses, images and network weights (fp32), in the eager loop and in the
compiled mode that ``forward: auto`` resolves to on long runs. Also: the ``forward`` field is
hash-neutral while ``auto`` and resolves by run length."""

import sys
from pathlib import Path

import pytest
import torch

from benchmark import augment as A
from benchmark.api import RunContext, get_method
from benchmark.budgets import resolve_budget
from benchmark.data import RealData, get_info
from benchmark.distill import SiameseAug
from benchmark.gradmatch import (
    COMPILE_MIN_ITERATIONS,
    matched_parameters,
    normalizer,
    resolve_forward,
    train_on_tensors,
    train_steps,
)
from benchmark.models import create_model
from benchmark.samplers import ClassCyclicSampler, ClassRandomSampler, CyclicBatches
from benchmark.synset import Decode
from methods.dc import matching_step
from methods.idc import class_steps

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import reference_loops as R  # noqa: E402

PER_CLASS, BATCH = 12, 8


def _gen(s):
    return torch.Generator().manual_seed(s)


@pytest.fixture(scope="module")
def real():
    info = get_info("mnist")  # 1 x 28 x 28: the MNIST IPC 1 shape (ConvNet pads it to 32)
    images = torch.randint(0, 256, (10 * PER_CLASS, 1, 28, 28), generator=_gen(0), dtype=torch.uint8)
    return RealData(info, images, torch.arange(10).repeat_interleave(PER_CLASS), "train")


def _net(real):
    return create_model("ConvNet", real.info, _gen(1)).train()


def _dc_pair(real, dsa: bool, compiled: bool, ipc: int = 2):
    """(loss, images after the step) of dbench's matching step and of the reference."""
    out = []
    for ref in (True, False):
        net = _net(real)
        syn = torch.randn(10 * ipc, 1, 28, 28, generator=_gen(2)).requires_grad_(True)
        opt = torch.optim.SGD([syn], lr=0.1, momentum=0.5)
        sampler = ClassRandomSampler(real, _gen(3))
        params = SiameseAug(real.info.dsa_strategy if dsa else "none", (28, 28), _gen(4)).sample(10)
        if ref:
            loss = R.dc_reference_matching_step(net, syn, opt, sampler, params, ipc, BATCH)
        else:
            loss = matching_step(net, syn, opt, sampler, params, ipc, BATCH, matched_parameters(net, metric="ours"),
                                 "ours", compiled=compiled)
        out.append((float(loss), syn.detach().clone()))
    return out


@pytest.mark.parametrize("dsa", [False, True], ids=["dc", "dsa"])
def test_dc_dsa_matching_step_equals_the_reference_loop(real, dsa):
    (lr, xr), (ld, xd) = _dc_pair(real, dsa, compiled=False)
    assert ld == pytest.approx(lr, rel=1e-5)
    torch.testing.assert_close(xd, xr, rtol=1e-5, atol=1e-6)


def _idc_pair(real, metric: str, bi: bool, compiled: bool, ipc: int = 1):
    out = []
    for ref in (True, False):
        net = _net(real)
        syn = torch.rand(10 * ipc, 1, 28, 28, generator=_gen(2)).requires_grad_(True)
        opt = torch.optim.SGD([syn], lr=1e-2, momentum=0.5)
        sampler = ClassCyclicSampler(real, BATCH, _gen(3))
        norm = normalizer(real.info.mean, real.info.std, "cpu")
        args = (net, syn, opt, real, sampler, ipc, BATCH)
        if ref:
            loss = R.idc_reference_class_steps(*args, Decode(2, "idc"), norm, "color_crop", _gen(4), metric, bi)
        else:
            params = matched_parameters(net, metric=metric, scope="conv")
            loss = float(class_steps(*args, 128, Decode(2, "idc"), norm, "color_crop", _gen(4), _gen(5), params, metric,
                                     bi, compiled=compiled))
        out.append((loss, syn.detach().clone()))
    return out


@pytest.mark.parametrize("metric,bi", [("l1", False), ("mse", False), ("mse", True)],
                         ids=["idc_mnist_l1", "idc_mse", "dream_plus_bidirectional"])
def test_idc_class_steps_equal_the_reference_loop(real, metric, bi):
    (lr, xr), (ld, xd) = _idc_pair(real, metric, bi, compiled=False)
    assert ld == pytest.approx(lr, rel=1e-5)
    torch.testing.assert_close(xd, xr, rtol=1e-5, atol=1e-6)


def _train_pair(real, kind: str, compiled: bool):
    nets = []
    for ref in (True, False):
        net = _net(real)
        g = _gen(7)
        if kind == "dc":  # DSA inner epochs on a synthetic set
            opt = torch.optim.SGD(net.parameters(), lr=0.01)
            x = torch.randn(20, 1, 28, 28, generator=_gen(8))
            y = torch.arange(10).repeat_interleave(2)
            if ref:
                R.dc_reference_inner_epochs(net, opt, x, y, 2, BATCH, g, real.info.dsa_strategy)
            else:
                def aug(xb):
                    return A.apply(xb, A.sample_dsa(real.info.dsa_strategy, xb.shape[0], (28, 28), g, siamese=False))
                train_on_tensors(net, opt, x, y, 2, BATCH, g, aug, compiled=compiled)
        else:  # IDC network update: DSA color_crop, CutMix p 0.5
            opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
            stream = CyclicBatches([torch.arange(len(real))], BATCH, _gen(9))
            norm = normalizer(real.info.mean, real.info.std, "cpu")

            def batch():
                idx = stream.next()
                return norm(real.pixels(idx)), real.labels[idx]

            def aug(xb):
                return A.apply(xb, A.sample_idc("color_crop", xb.shape[0], (28, 28), g, siamese=False))

            if ref:
                R.idc_reference_train_epoch(net, opt, batch, 4 * BATCH, aug, g, 0.5)
            else:
                train_steps(net, opt, batch, 4 * BATCH, aug, g, cutmix_p=0.5, compiled=compiled)
        nets.append(net)
    return nets


@pytest.mark.parametrize("kind", ["dc", "idc"])
def test_network_updates_equal_the_reference_loop(real, kind):
    a, b = _train_pair(real, kind, compiled=False)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pb, pa, rtol=1e-5, atol=1e-6)


def test_compiled_default_path_equals_the_reference_loop(real):
    """``forward: compiled`` (what ``auto`` runs on long runs): the compiled real side and network
    update agree with the fp32 reference to float tolerance (fusion reorders sums)."""
    (lr, xr), (ld, xd) = _dc_pair(real, True, compiled=True)
    assert ld == pytest.approx(lr, rel=1e-4)
    torch.testing.assert_close(xd, xr, rtol=1e-3, atol=1e-3)
    (lr, _), (ld, _) = _idc_pair(real, "mse", True, compiled=True)
    assert ld == pytest.approx(lr, rel=1e-4)
    a, b = _train_pair(real, "idc", compiled=True)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pb, pa, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("key", ["dc", "dsa", "idc", "dream", "dream_plus"])
def test_forward_field_is_hash_neutral_while_auto_and_resolves_by_run_length(real, key):
    cls = get_method(key)
    cfg = cls.resolve_config("official", {})
    assert "forward" not in cfg.model_dump(mode="json")  # existing cell hashes unchanged
    assert cls.resolve_config("official", {"forward": "loop"}).model_dump(mode="json")["forward"] == "loop"

    def resolved(budget):
        ctx = RunContext(device=torch.device("cpu"), seed=0, arch="ConvNet", info=real.info,
                         budget=resolve_budget(budget), workdir=Path("/nonexistent"))
        return cls(cfg, ctx).resolved(1)["forward"]

    assert resolved("paper") == "compiled" and resolved("smoke") == "loop"
    assert resolve_forward("auto", COMPILE_MIN_ITERATIONS - 1, "cpu") == "loop"
    assert resolve_forward("auto", COMPILE_MIN_ITERATIONS, "mps") == "loop"
    assert resolve_forward("loop", 10**6, "cpu") == "loop"
