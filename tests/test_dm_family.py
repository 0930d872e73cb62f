"""DM / IDM / DataDAM: layouts, schedules, gradient flow and smoke runs (CPU, digits).

The contract every distiller keeps (set shape and budget, determinism, resume after an
interruption, presets) is checked for all of them in tests/test_contract.py."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from benchmark.api import RunContext, get_method
from benchmark.budgets import resolve_budget
from benchmark.data import load_dataset
from benchmark.distill import SiameseAug, activations, freeze, init_quadrants
from benchmark.grid import GridSpec
from benchmark.grid import expand as expand_grid
from benchmark.models import create_model
from benchmark.runner import run_cells
from benchmark.samplers import AllClassSampler, ClassRandomSampler
from benchmark.store import ResultStore
from benchmark.synset import Decode
from methods.datadam import datadam_loss
from methods.dm import dm_loss, official_lr_img
from methods.idm import ModelQueue, _Net, expand, idm_image_steps, official_setting, train_queue_net


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _ctx(real, tmp: Path, budget="paper"):
    return RunContext(device=torch.device("cpu"), seed=0, arch="ConvNet", info=real.info,
                      budget=resolve_budget(budget), workdir=tmp)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ IDM parameterisation


def test_partition_and_expand_layout():
    x = torch.zeros(2, 1, 4, 4)
    for n in range(2):  # quadrant values: TL=1, TR=2, BL=3, BR=4 (+10 for the second image)
        x[n, 0, :2, :2], x[n, 0, :2, 2:], x[n, 0, 2:, :2], x[n, 0, 2:, 2:] = (v + 10 * n for v in (1, 2, 3, 4))
    out = expand(x, Decode(factor=2, order="idm"))
    assert out.shape == (8, 1, 4, 4)
    # IDM order: TL, BL, TR, BR blocks across the batch; each patch upsampled (constant stays constant)
    want = [1, 11, 3, 13, 2, 12, 4, 14]
    assert torch.allclose(out.mean(dim=(1, 2, 3)), torch.tensor(want, dtype=torch.float))
    from benchmark.synset import multi_formation

    _, y = multi_formation(x, torch.tensor([0, 1]), Decode(factor=2, order="idm"))
    assert y.tolist() == [0, 1] * 4


def test_quadrant_init_tiles_four_real_images_of_the_class(digits):
    ipc = 2
    x, y = init_quadrants(digits, ipc, _gen(3))
    assert x.shape == (10 * ipc, 1, 8, 8) and y.tolist() == [c for c in range(10) for _ in range(ipc)]
    s = ClassRandomSampler(digits, _gen(3))  # replay the same draws: per class, TL, BL, TR, BR
    for c in range(10):
        for i, j in ((0, 0), (1, 0), (0, 1), (1, 1)):
            small = F.interpolate(s(c, ipc), size=(4, 4), mode="bilinear", align_corners=False)
            assert torch.equal(x[c * ipc:(c + 1) * ipc, :, 4 * i:4 * i + 4, 4 * j:4 * j + 4], small)


def test_queue_push_pop_schedule(digits, tmp_path):
    q = ModelQueue(lambda uid: uid, capacity=3)
    for _ in range(2):
        q.push()
    pushed = []
    for it in range(7):  # push every 2 iterations, including it = 0
        if it % 2 == 0:
            q.push()
            pushed.append(list(q.items))
    assert pushed == [[0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5]]
    # the method follows the same schedule (inspect the checkpointed queue)
    cls = get_method("idm")
    cfg = cls.resolve_config("official", {"iterations": 2, "net_generate_interval": 1, "net_num": 4, "queue_init": 3,
                                          "batch_real": 4, "trained_bs": 8, "model_train_steps": 1})
    ctx = _ctx(digits, tmp_path)
    cls(cfg, ctx).distill(digits, 1)
    state = ctx.load_checkpoint()
    assert state["queue/pushed"] == 5 and state["queue/uids"] == [1, 2, 3, 4]
    assert 0 < sum(m[1] for m in state["queue/meters"]) <= 2 * 2 * 8  # <= 2 nets x 1 step x 8 images per iteration


def test_idm_official_table():
    row, src = official_setting("cifar10", 1)
    assert row == {"ce_weight": 0.5, "batch_real": 5000, "net_generate_interval": 5, "model_train_steps": 10,
                   "eval_interval": 100}
    assert official_setting("cifar100", 10)[0]["model_train_steps"] == 50
    assert "no official command" in official_setting("mnist", 10)[1]
    assert official_lr_img("cifar10", 50) == 1.0 and official_lr_img("cifar10", 100) == 10.0


# ------------------------------------------------------------------- gradient flow


def _only_synthetic_grads(net, syn):
    assert all(p.grad is None for p in net.parameters())
    assert syn.grad is not None and syn.grad.abs().sum() > 0


def test_dm_gradients_reach_only_synthetic_images(digits):
    net = freeze(create_model("ConvNet", digits.info, _gen())).train()
    syn = torch.randn(10 * 2, 1, 8, 8, requires_grad=True)
    aug = SiameseAug(digits.info.dsa_strategy, (8, 8), _gen(1))
    loss = dm_loss(net, ClassRandomSampler(digits, _gen(2)), aug, syn, 10, 2, 16)
    loss.backward()
    _only_synthetic_grads(net, syn)


def test_datadam_gradients_reach_only_synthetic_images(digits):
    net = freeze(create_model("ConvNetBN", digits.info, _gen())).train()
    syn = torch.randn(10, 1, 8, 8, requires_grad=True)
    aug = SiameseAug(digits.info.dsa_strategy, (8, 8), _gen(1))
    l_att, l_emb = datadam_loss(net, ClassRandomSampler(digits, _gen(2)), aug, syn, 10, 8, power=4)
    (100 * (l_att + 0.01 * l_emb)).backward()
    _only_synthetic_grads(net, syn)
    acts, emb = activations(net, torch.randn(3, 1, 8, 8))
    assert len(acts) == 3 and emb.shape == (3, net.feat_dim)


def test_idm_steps_update_only_synthetic_images(digits):
    net = freeze(create_model("ConvNet", digits.info, _gen())).eval()
    before = [p.clone() for p in net.parameters()]
    syn = torch.randn(10, 1, 8, 8, requires_grad=True)
    x0 = syn.detach().clone()
    opt = torch.optim.SGD([syn], lr=0.2, momentum=0.5)
    aug = SiameseAug(digits.info.dsa_strategy, (8, 8), _gen(1))
    l_dm, l_ce = idm_image_steps(net, ClassRandomSampler(digits, _gen(2)), aug, syn, opt, 10, 1, 8,
                                 Decode(2, "idm"), 5.0, torch.device("cpu"))
    assert l_dm > 0 and l_ce > 0 and not torch.equal(syn.detach(), x0)
    assert all(p.grad is None for p in net.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    x, y = AllClassSampler(digits, _gen())(5)
    assert x.shape == (5, 1, 8, 8) and y.shape == (5,)


# --------------------------------------------------------- batched == per-class loop


def test_dm_batched_equals_per_class_loop(digits):
    net = freeze(create_model("ConvNet", digits.info, _gen())).train()
    syn = torch.randn(10 * 2, 1, 8, 8)
    losses = []
    for mode in ("batched", "per_class", "compiled"):
        aug = SiameseAug(digits.info.dsa_strategy, (8, 8), _gen(1))
        losses.append(dm_loss(net, ClassRandomSampler(digits, _gen(2)), aug, syn, 10, 2, 32, forward=mode))
    assert losses[0].item() == pytest.approx(losses[1].item(), rel=1e-4)
    assert losses[2].item() == pytest.approx(losses[0].item(), rel=1e-3)  # torch.compile'd real forward


def test_idm_forward_modes_agree(digits):
    """IDM's batched and compiled paths (real forward; queue-net train step) reproduce the
    per-class reference loop: same image updates, same queue-net weights and meters."""
    syns, nets = [], []
    for mode in ("per_class", "batched", "compiled"):
        net = freeze(create_model("ConvNet", digits.info, _gen())).eval()
        syn = torch.randn(10, 1, 8, 8, generator=_gen(3)).requires_grad_(True)
        opt = torch.optim.SGD([syn], lr=0.2, momentum=0.5)
        aug = SiameseAug(digits.info.dsa_strategy, (8, 8), _gen(1))
        idm_image_steps(net, ClassRandomSampler(digits, _gen(2)), aug, syn, opt, 10, 1, 32, Decode(2, "idm"), 5.0,
                        torch.device("cpu"), forward=mode)
        q = create_model("ConvNet", digits.info, _gen(4))
        entry = _Net(q, torch.optim.SGD(q.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4), 0)
        train_queue_net(entry, AllClassSampler(digits, _gen(5)), 32, 3, torch.device("cpu"),
                        compiled=mode == "compiled")
        assert entry.total == 96 and 0 <= entry.correct <= 96
        syns.append(syn.detach())
        nets.append(torch.cat([p.detach().flatten() for p in q.parameters()]))
    for s, n in zip(syns[1:], nets[1:]):
        assert torch.allclose(s, syns[0], atol=1e-4)
        assert torch.allclose(n, nets[0], atol=1e-4)


def test_siamese_aug_groups_classes_by_family():
    g = _gen(5)
    aug = SiameseAug("color_crop_cutout_flip_scale_rotate", (8, 8), g)
    params = aug.sample(6)
    x = torch.randn(6 * 3, 3, 8, 8)
    from benchmark import augment as A

    ref = torch.cat([A.apply(x[3 * c:3 * c + 3], params[c]) for c in range(6)])
    assert torch.allclose(SiameseAug.apply(x, params), ref, atol=1e-5)


# ----------------------------------------------------------------- end to end + resume


def _smoke(key: str) -> dict:
    return dict(get_method(key).SMOKE_PARAMS)


def test_smoke_budget_end_to_end(tmp_path):
    grid = GridSpec(name="t", methods=[{"name": "dm", "preset": "official", "params": _smoke("dm")},
                                       {"name": "idm", "preset": "official", "params": _smoke("idm")},
                                       {"name": "datadam", "preset": "paper", "params": _smoke("datadam")}],
                    datasets=["digits"], ipc=[1], protocol="dm", budget="smoke", num_exp=1, num_eval=1)
    outs = run_cells(expand_grid(grid), ResultStore(tmp_path))
    assert [o.status for o in outs] == ["finished"] * 3, [o.error for o in outs]
    assert all(0 <= o.acc_mean <= 100 for o in outs)


def test_idm_compiled_forward_resumes_exactly(digits, tmp_path):
    """IDM's ``forward: compiled`` (compiled real forward and queue-net step) resumes to the
    uninterrupted set, as every distiller's default path does in tests/test_contract.py."""
    from test_contract import build, interrupted_then_resumed

    cls = get_method("idm")
    cfg = cls.resolve_config("official", {**cls.SMOKE_PARAMS, "forward": "compiled"})
    full = build(cls, digits, tmp_path / "store" / "work" / "a", cfg=cfg)
    resumed = interrupted_then_resumed(cls, cfg, digits, tmp_path / "store" / "work" / "b")
    assert torch.equal(full.images, resumed.images)


def test_selector_init_for_distillation(digits):
    """`init: herding` (any selector) seeds a method with exactly that selector's choice."""
    import torch

    from benchmark.api import RunContext, get_method
    from benchmark.budgets import BUDGETS
    from benchmark.distill import initial_images
    from benchmark.init import init_synset

    tr = digits[0] if isinstance(digits, tuple) else digits
    ctx = RunContext(device=torch.device("cpu"), seed=0, arch="ConvNet", info=tr.info, budget=BUDGETS.get("smoke"),
                     workdir=__import__("pathlib").Path("/tmp/dbench-test-init"))
    params = {"extractor": {"weights": "random"}}
    x, y = initial_images("herding", tr, 2, torch.Generator().manual_seed(0), ctx, params)
    ref = init_synset("herding", tr, 2, ctx, params=params)
    assert torch.equal(x, ref.images) and y.tolist() == [c for c in range(10) for _ in range(2)]
    cfg = get_method("dm").resolve_config("official", {"init": "kcenter", "init_params": params})
    assert cfg.init == "kcenter"


def test_intermediate_evaluation_curve(tmp_path):
    """`eval_every` gives an accuracy-vs-iteration curve (metrics + PNG), from the runner."""
    from benchmark.grid import GridSpec, expand
    from benchmark.runner import run_cells
    from benchmark.store import ResultStore
    from benchmark.synset import SyntheticSet

    g = GridSpec(name="curve", datasets=["digits"], ipc=[1], budget="smoke", budget_overrides={"distill_iterations": 4},
                 methods=[{"name": "dm", "preset": "official", "params": {"eval_every": 2, "batch_real": 8}}])
    store = ResultStore(tmp_path)
    cell = expand(g)[0]
    assert run_cells([cell], store)[0].status == "finished"
    s = SyntheticSet.load(store.synset_path(cell.synset_hash))
    assert "curve" not in s.meta  # curves live in the results store, not in the set's manifest
    curve = store.curve(cell.synset_hash)["curve"]
    # the initial set, then every 2 iterations, not at the final one; (iteration, acc, distill wall s)
    assert [p[0] for p in curve] == [0, 2]
    assert curve[0][2] == 0.0 and curve[1][2] > 0 and store.curve(cell.synset_hash)["iterations"] == 4
