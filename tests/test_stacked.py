"""The stacked evaluation engine trains each network exactly as the one-at-a-time loop."""

import dataclasses
import logging

import pytest
import torch

from benchmark import evaluate as ev
from benchmark import stacked
from benchmark.data import RealData, get_info
from benchmark.evaluate import PROFILES, TensorSource, TrainSettings, evaluate, model_seeds, train_model
from benchmark.models import create_model
from benchmark.progress import NullProgress
from benchmark.seed import make_generator

K = 3


def _info(kind: str):
    """8x8 stand-ins: 'mnist' (digits under MNIST's name: DC's MNIST DC-aug branch, no flips) and
    'cifar' (3 channels: flips, CutMix)."""
    if kind == "mnist":
        return dataclasses.replace(get_info("digits"), name="mnist")
    return dataclasses.replace(get_info("cifar10"), im_size=(16, 16))


def _data(info, n=12, n_test=40):
    g = torch.Generator().manual_seed(123)
    c, (h, w) = info.channels, info.im_size
    src = TensorSource(torch.randn(n, c, h, w, generator=g), torch.arange(n) % info.num_classes)
    test = RealData(info, torch.randint(0, 256, (n_test, c, h, w), generator=g, dtype=torch.uint8),
                    torch.arange(n_test) % info.num_classes, "test")
    return src, test


def _protocol(name, info, arch):
    # few epochs and batch 5 of 12 images (a short last batch): the lr change (halfstep reset at
    # E//2+1, multistep at 2/3 and 5/6 of E) falls inside the 12-15 steps compared
    return PROFILES.get(name).resolve(info, arch).model_copy(update={"epochs": 4, "batch_size": 5})


def _loop(src, p, arch, info, test, seeds, settings=TrainSettings()):
    models, results = [], []
    for k, s in enumerate(seeds):
        results.append(train_model(src, p, arch, info, test, s, k, settings, models_out=models))
    return results, models


def _assert_same(loop_models, stack_models, rtol, atol):
    for a, b in zip(loop_models, stack_models, strict=True):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        for name in sa:
            torch.testing.assert_close(sb[name], sa[name], rtol=rtol, atol=atol, msg=lambda m, n=name: f"{n}: {m}")


# split runs the loop's own kernels: equal to rounding. wide's grouped convolutions sum in another
# order (1e-7 per step, checked at init to 1e-7); a ReLU input within that noise of 0 then flips
# its gate, a one-position change in the next layer's weight gradient (seen once in these runs:
# 4e-4 after 15 steps): that is float noise, not a semantic difference.
TOL = {"split": (1e-5, 1e-6), "wide": (1e-3, 1e-3)}

CASES = [(name, arch, kind) for name in PROFILES.list() for arch in ("ConvNet", "ConvNetBN")
         for kind in (("mnist", "cifar") if name.startswith("dc") or name.startswith("idc") else ("cifar",))]


# The CPU default (split) runs every case by default; the grouped kernel (the CUDA default) runs
# the dsa and idc cases by default and the whole matrix with -m slow (it keeps the suite short).
_WIDE_DEFAULT = {"dsa", "idc"}
KERNEL_CASES = [pytest.param(*c, "split", id=f"{'-'.join(c)}-split") for c in CASES] + [
    pytest.param(*c, "wide", id=f"{'-'.join(c)}-wide",
                 marks=() if c[0] in _WIDE_DEFAULT else pytest.mark.slow) for c in CASES]


@pytest.mark.parametrize("name,arch,kind,kernel", KERNEL_CASES)
def test_stacked_matches_loop_every_protocol(name, arch, kind, kernel):
    info = _info(kind)
    src, test = _data(info)
    p = _protocol(name, info, arch)
    seeds = model_seeds(0, arch, K)
    loop_res, loop_models = _loop(src, p, arch, info, test, seeds)
    models: list = []
    res = stacked.train_stacked(src, p, arch, info, test, seeds, list(range(K)), TrainSettings(stack_kernel=kernel),
                                NullProgress(), models_out=models)
    assert [r.kernel for r in res] == [kernel] * K and {r.engine for r in res} == {"stacked"}
    assert [r.steps for r in res] == [r.steps for r in loop_res] and res[0].steps >= 12
    _assert_same(loop_models, models, *TOL[kernel])
    torch.testing.assert_close([r.train_loss for r in res], [r.train_loss for r in loop_res], rtol=1e-3, atol=1e-4)


def test_protocol_cases_cover_cutmix_dc_aug_and_both_schedules():
    seen = {_protocol(n, _info(kd), a).aug for n, a, kd in CASES}
    assert seen == {"none", "dsa", "idc_dsa", "dc"}
    assert any(_protocol(n, _info(kd), a).cutmix_p > 0 for n, a, kd in CASES)
    assert {_protocol(n, _info(kd), a).schedule for n, a, kd in CASES} == {"halfstep_reset", "multistep"}
    assert _protocol("dc", _info("mnist"), "ConvNet").aug == "dc"  # DC's MNIST DC-aug branch


@pytest.mark.parametrize("arch", ["MLP", "AlexNetBN"])
def test_split_kernel_any_architecture(arch):
    info = _info("mnist")
    src, test = _data(info)
    p = _protocol("dsa", info, arch)
    seeds = model_seeds(1, arch, 2)
    _, loop_models = _loop(src, p, arch, info, test, seeds)
    models: list = []
    stacked.train_stacked(src, p, arch, info, test, seeds, [0, 1], TrainSettings(), NullProgress(),
                          models_out=models)
    _assert_same(loop_models, models, 1e-5, 1e-6)


def test_no_wide_kernel_falls_back_to_split_with_a_logged_reason(caplog):
    info = _info("mnist")
    assert stacked.wide_reason("MLP", info) is not None and stacked.wide_reason("ConvNetLN", info) is None
    with caplog.at_level(logging.WARNING, logger="dbench.evaluate"):
        kern = stacked.choose_kernel("MLP", info, TrainSettings(stack_kernel="wide"))
    assert kern == "split" and "no wide kernel for MLP" in caplog.text
    assert stacked.choose_kernel("ConvNet", info, TrainSettings()) == "split"  # CPU default: measured fastest
    assert stacked.choose_kernel("ConvNet", info, TrainSettings(device=torch.device("cuda"))) == "wide"


@pytest.mark.parametrize("arch", ["ConvNetLN", "ConvNetGN", "ConvNetASwishBN", "ConvNetD2", "ConvNetAL"])
def test_wide_kernel_convnet_variants(arch):
    info = _info("cifar")
    src, test = _data(info)
    p = _protocol("dsa", info, arch)
    seeds = model_seeds(2, arch, 2)
    _, loop_models = _loop(src, p, arch, info, test, seeds)
    models: list = []
    stacked.train_stacked(src, p, arch, info, test, seeds, [0, 1], TrainSettings(stack_kernel="wide"),
                          NullProgress(), models_out=models)
    _assert_same(loop_models, models, *TOL["wide"])


def test_fallback_to_loop_is_logged_and_exact(monkeypatch, caplog):
    info = _info("mnist")
    src, test = _data(info)
    p = _protocol("dsa", info, "ConvNet")
    seeds = model_seeds(0, "ConvNet", 2)
    assert "GradScaler" in stacked.unsupported_reason(
        "ConvNet", TrainSettings(device=torch.device("cuda"), precision="fp16"), 2)
    monkeypatch.setattr(stacked, "unsupported_reason", lambda *a: "a reason")
    with caplog.at_level(logging.WARNING, logger="dbench.evaluate"):
        res = evaluate(src, p, "ConvNet", info, test, seeds)
    assert "engine stacked -> loop for ConvNet: a reason" in caplog.text
    assert [r.engine for r in res] == ["loop", "loop"]
    assert [r.test_acc for r in res] == [r.test_acc for r in _loop(src, p, "ConvNet", info, test, seeds)[0]]


def test_evaluate_resume_trains_only_unfinished_and_reports_each():
    info = _info("cifar")
    src, test = _data(info)
    p = _protocol("dsa", info, "ConvNet")
    seeds = model_seeds(0, "ConvNet", 4)
    seen = []
    res = evaluate(src, p, "ConvNet", info, test, seeds, skip=[1], on_result=lambda r: seen.append(r.index))
    assert seen == [0, 2, 3] and [r.engine for r in res] == ["stacked"] * 3
    loop = evaluate(src, p, "ConvNet", info, test, seeds, TrainSettings(engine="loop"), skip=[1])
    assert [r.engine for r in loop] == ["loop"] * 3
    assert [r.index for r in loop] == [0, 2, 3] and [r.seed for r in loop] == [r.seed for r in res]
    torch.testing.assert_close([r.train_loss for r in res], [r.train_loss for r in loop], rtol=1e-5, atol=1e-6)
    assert [r.test_acc for r in res] == [r.test_acc for r in loop]


@pytest.mark.parametrize("arch", ["ConvNet", "ConvNetBN"])
def test_scoring_in_one_pass_equals_separate_passes(arch, digits):
    _, test = digits
    info = test.info
    nets = [create_model(arch, info, make_generator(s, "init")) for s in (1, 2, 3)]
    if arch == "ConvNetBN":  # non-trivial running statistics
        x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
        for i, n in enumerate(nets):
            n.train()(x + i)
    s = TrainSettings()
    separate = [ev.test_accuracy(n, test, s) for n in nets]
    assert stacked.test_accuracies(nets, test, s) == separate
    wide = stacked.WideConvNet(nets)
    one_img = 100.0 / len(test)  # argmax ties aside
    assert all(abs(a - b) <= one_img for a, b in zip(stacked.test_accuracies_wide(wide, test, s), separate))


def test_cutmix_draw_matches_augment_cutmix():
    x = torch.randn(6, 3, 8, 8)
    for seed in range(5):
        want, perm, r = stacked.A.cutmix(x, torch.Generator().manual_seed(seed))
        perm2, (y1, y2, x1, x2), r2 = stacked.cutmix_draw(6, 8, 8, torch.Generator().manual_seed(seed))
        got = x.clone()
        got[:, :, y1:y2, x1:x2] = x[perm2, :, y1:y2, x1:x2]
        assert torch.equal(perm, perm2) and r == r2 and torch.equal(got, want)


def test_engine_grid_field_flows_to_cells_and_only_loop_changes_the_hash():
    from pathlib import Path

    from benchmark.grid import expand, load_grid

    g = load_grid(Path(__file__).parent / "fixtures" / "tiny.yaml")
    assert g.engine == "stacked"
    default = expand(g, budget="paper")[0]
    loop = expand(g.model_copy(update={"engine": "loop"}), budget="paper")[0]
    assert default.engine == "stacked" and loop.engine == "loop"
    assert default.hash == "9afc374ef886"  # tests/test_grid.py's golden hash: the default engine keeps it
    assert loop.hash != default.hash and loop.synset_hash == default.synset_hash


def test_split_kernel_in_worker_threads_matches_loop():
    """With T > 1 intra-op threads the split kernel runs networks in T single-threaded workers."""
    info = _info("cifar")
    src, test = _data(info)
    p = _protocol("idc", info, "ConvNetBN")  # CutMix, multistep, BatchNorm
    seeds = model_seeds(3, "ConvNetBN", 3)
    loop_res, loop_models = _loop(src, p, "ConvNetBN", info, test, seeds)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert stacked.network_pool(3, torch.device("cpu")) is not None
        models: list = []
        res = stacked.train_stacked(src, p, "ConvNetBN", info, test, seeds, [0, 1, 2], TrainSettings(),
                                    NullProgress(), models_out=models)
    finally:
        torch.set_num_threads(before)
    _assert_same(loop_models, models, *TOL["split"])
    assert [r.test_acc for r in res] == [r.test_acc for r in loop_res]


def test_runner_stacked_cell_rows_name_the_engine_and_resume_trains_only_the_rest(store_dir, monkeypatch):
    from pathlib import Path

    from benchmark.grid import expand, load_grid
    from benchmark.runner import run_cells
    from benchmark.store import ResultStore

    g = load_grid(Path(__file__).parent / "fixtures" / "tiny.yaml")
    g = g.model_copy(update={"methods": g.methods[:1], "ipc": [1], "budget_overrides": {"num_eval": 4}})
    store = ResultStore(store_dir)
    groups = []
    real = stacked.train_stacked
    monkeypatch.setattr(stacked, "train_stacked", lambda *a, **kw: (groups.append(list(a[6])), real(*a, **kw))[1])
    first = expand(g)[0]
    assert first.num_eval == 2 and run_cells([first], store)[0].status == "finished"
    more = expand(g.model_copy(update={"num_eval": 4}))[0]
    assert more.hash == first.hash  # more networks extend the cell
    assert run_cells([more], store)[0].n == 4
    assert groups == [[0, 1], [2, 3]]  # finished networks are not retrained; the rest train together
    rows = list(store.iter_rows({more.hash}))
    assert {r["engine"] for r in rows} == {"stacked"} and {r["engine_kernel"] for r in rows} == {"split"}
