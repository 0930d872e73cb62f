"""DC / DSA / IDC / DREAM / DREAM+: distances, decode and init layouts, per-class steps, the
representative sampler and smoke runs (CPU, sklearn digits).

The contract every distiller keeps (set shape and budget, determinism, resume after an
interruption, presets) is checked for all of them in tests/test_contract.py."""

from pathlib import Path

import pytest
import torch
from torch import nn

from benchmark.api import RunContext, get_method
from benchmark.budgets import resolve_budget
from benchmark.data import load_dataset
from benchmark.gradmatch import class_gradients, matched_parameters
from benchmark.grid import GridSpec, expand
from benchmark.losses import feature_distance, grad_distance
from benchmark.models import create_model
from benchmark.runner import run_cells
from benchmark.samplers import (
    ClassCyclicSampler,
    CyclicBatches,
    RepresentativeConfig,
    RepresentativeSampler,
)
from benchmark.store import ResultStore
from benchmark.synset import Decode, multi_formation
from methods.dc import get_loops
from methods.idc import tile_patches


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _ctx(real, tmp: Path, budget="paper"):
    return RunContext(device=torch.device("cpu"), seed=0, arch="ConvNet", info=real.info, budget=resolve_budget(budget),
                      workdir=tmp)


# ---------------------------------------------------------------------- distances


def test_dc_distance_hand_computed_and_1d_parameters_contribute_zero():
    # conv weight [2, 1, 1, 2] -> rows [[1, 0], [0, 1]] vs [[1, 0], [1, 0]]: row 0 cos 1, row 1 cos 0
    gr = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(2, 1, 1, 2)
    gs = torch.tensor([[2.0, 0.0], [1.0, 0.0]]).view(2, 1, 1, 2)
    d = grad_distance([gr], [gs], "ours")
    assert torch.allclose(d, torch.tensor(1.0), atol=1e-5)  # (1 - 1) + (1 - 0)
    # a bias gradient, however different, adds nothing
    d2 = grad_distance([gr, torch.tensor([1.0, -5.0])], [gs, torch.tensor([-3.0, 2.0])], "ours")
    assert torch.allclose(d, d2)
    # linear [out, in] rows as they are: rows (3, 4) vs (4, -3) are orthogonal
    lin = grad_distance([torch.tensor([[3.0, 4.0]])], [torch.tensor([[4.0, -3.0]])], "ours")
    assert torch.allclose(lin, torch.tensor(1.0), atol=1e-5)


def test_mse_l1_and_concatenated_cosine():
    a, b = [torch.tensor([[1.0, 2.0]]), torch.tensor([3.0])], [torch.tensor([[0.0, 0.0]]), torch.tensor([1.0])]
    assert torch.allclose(grad_distance(a, b, "mse"), torch.tensor(1.0 + 4.0 + 4.0))
    assert torch.allclose(grad_distance(a, b, "l1"), torch.tensor(1.0 + 2.0 + 2.0))
    # 'cos' works on the concatenation: (1,2,3) vs (0,0,1) -> 1 - 3/sqrt(14)
    assert torch.allclose(grad_distance(a, b, "cos"), torch.tensor(1 - 3 / 14 ** 0.5), atol=1e-5)
    with pytest.raises(ValueError, match="unknown gradient metric"):
        grad_distance(a, b, "nope")


def test_feature_distance_of_means():
    fr, fs = torch.tensor([[1.0, 0.0], [3.0, 2.0]]), torch.tensor([[0.0, 0.0]])
    assert torch.allclose(feature_distance(fr, fs, "mse"), torch.tensor(4.0 + 1.0))  # means (2, 1) vs (0, 0)
    assert torch.allclose(feature_distance(fr, fs, "l1"), torch.tensor(3.0))


def test_matched_parameters_dc_all_weights_idc_conv_only(digits):
    net = create_model("ConvNet", digits.info, torch.Generator().manual_seed(0))
    dc = matched_parameters(net, metric="ours", scope="all")
    idc = matched_parameters(net, metric="mse", scope="conv")
    assert [p.ndim for p in dc] == [4, 4, 4, 2]  # three conv weights + the classifier weight
    assert [p.ndim for p in idc] == [4, 4, 4]
    assert len(matched_parameters(net, metric="mse", scope="all")) == len(list(net.parameters()))
    assert len(matched_parameters(net, metric="mse", scope="conv", fc=True, bias=True)) == len(list(net.parameters()))


def test_synthetic_gradients_reach_only_the_images(digits):
    net = create_model("ConvNet", digits.info, torch.Generator().manual_seed(0))
    params = matched_parameters(net, metric="ours", scope="all")
    xr = torch.randn(8, 1, 8, 8)
    xs = torch.randn(2, 1, 8, 8, requires_grad=True)
    gr, _ = class_gradients(net, xr, 3, params, create_graph=False)
    gs, _ = class_gradients(net, xs, 3, params, create_graph=True)
    assert all(not g.requires_grad for g in gr)
    (gx,) = torch.autograd.grad(grad_distance(gr, gs, "ours"), xs)  # what the methods take
    assert gx.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())  # matching leaves the network untouched


# ---------------------------------------------------------------------- layouts


def test_get_loops_table_and_clear_error():
    assert get_loops(1) == (1, 1) and get_loops(10) == (10, 50) and get_loops(50) == (50, 10)
    from benchmark.errors import ConfigError

    with pytest.raises(ConfigError, match="loops"):
        get_loops(7)


def test_idc_mix_init_tiles_sources_row_major():
    ipc, f = 2, 2
    src = torch.arange(ipc * f * f, dtype=torch.float).view(-1, 1, 1, 1).expand(-1, 1, 4, 4).contiguous()
    out = tile_patches(src, ipc, f)
    assert out.shape == (ipc, 1, 4, 4)
    for i in range(ipc):  # patch k (row-major) of image i comes from source k * ipc + i
        quads = [out[i, 0, :2, :2], out[i, 0, :2, 2:], out[i, 0, 2:, :2], out[i, 0, 2:, 2:]]
        assert [float(q.mean()) for q in quads] == [float(k * ipc + i) for k in range(4)]


def test_idc_decode_shapes_labels_and_order():
    x = torch.zeros(3, 1, 4, 4)
    x[:, :, :2, 2:] = 1.0  # top-right patch
    out, y = multi_formation(x, torch.tensor([0, 1, 2]), Decode(factor=2, order="idc"))
    assert out.shape == (12, 1, 4, 4) and y.tolist() == [0, 1, 2] * 4
    # IDC order: (0,0), (0,1), (1,0), (1,1) blocks across the batch; patch (0,1) is all ones
    assert out[3:6].eq(1).all() and out[:3].eq(0).all() and out[6:].eq(0).all()


def test_idc_set_is_pixel_space_clamped_and_decoded(digits, tmp_path):
    cls = get_method("idc")
    cfg = cls.resolve_config("official", {"iterations": 1, "inner_loop": 1, "n_data": 16, "batch_real": 8,
                                          "lr_img": 50.0})
    s = cls(cfg, _ctx(digits, tmp_path)).distill(digits, 1)
    assert s.space == "pixel" and s.decode.factor == 2 and s.images.shape == (10, 1, 8, 8)
    assert float(s.images.min()) >= 0 and float(s.images.max()) <= 1  # clamped (a huge lr pushes pixels out)
    x, y = s.training_tensors()
    assert x.shape == (40, 1, 8, 8) and torch.bincount(y).tolist() == [4] * 10
    assert s.meta["resolved"]["metric"] == "l1"  # no IDC setting for digits: the MNIST row


def test_idc_lr_img_is_rescaled_by_ipc():
    from benchmark.budgets import resolve_budget as rb
    from benchmark.data import get_info

    cls = get_method("idc")
    ctx = RunContext(device=torch.device("cpu"), seed=0, arch="ConvNet", info=get_info("cifar10"),
                     budget=rb("paper"), workdir=Path("/tmp"))
    m = cls(cls.resolve_config("official", None), ctx)
    assert [m.resolved(i)["lr_img"] for i in (1, 10, 50)] == pytest.approx([5e-4, 5e-3, 2.5e-2])
    assert m.resolved(10)["n_data"] == 2000 and m.resolved(10)["metric"] == "mse"


def test_idc_takes_one_image_step_per_class(digits, tmp_path, monkeypatch):
    steps = []
    orig = torch.optim.SGD.step

    def counting(self, *a, **k):
        if any(p.ndim == 4 and p.shape[0] == 10 for g in self.param_groups for p in g["params"]):
            steps.append(1)  # the synthetic-image optimizer (10 stored images)
        return orig(self, *a, **k)

    monkeypatch.setattr(torch.optim.SGD, "step", counting)
    cls = get_method("idc")
    cfg = cls.resolve_config("official", {"iterations": 1, "inner_loop": 3, "n_data": 8, "batch_real": 8})
    cls(cfg, _ctx(digits, tmp_path)).distill(digits, 1)
    assert len(steps) == 3 * 10  # inner_loop x classes


def test_dc_takes_one_image_step_per_outer_loop(digits, tmp_path, monkeypatch):
    steps = []
    orig = torch.optim.SGD.step

    def counting(self, *a, **k):
        if any(p.ndim == 4 and p.shape[0] == 20 for g in self.param_groups for p in g["params"]):
            steps.append(1)
        return orig(self, *a, **k)

    monkeypatch.setattr(torch.optim.SGD, "step", counting)
    cls = get_method("dc")
    cfg = cls.resolve_config("official", {"iterations": 2, "loops": [3, 1], "batch_real": 8})
    cls(cfg, _ctx(digits, tmp_path)).distill(digits, 2)
    assert len(steps) == 2 * 3  # one step per (iteration, outer_loop), summed over classes


# ---------------------------------------------------------------------- samplers


def test_cyclic_batches_cover_the_pool_before_repeating_and_resume_exactly():
    g = torch.Generator().manual_seed(0)
    cb = CyclicBatches([torch.arange(10, 20)], 3, g)
    first = torch.cat([cb.next() for _ in range(3)])  # drop_last: 9 of 10 per pass, no repeats
    assert first.unique().numel() == 9 and first.min() >= 10
    cb.next()
    st, gs = cb.state("s"), g.get_state()
    want = [cb.next() for _ in range(4)]
    g2 = torch.Generator()
    g2.set_state(gs)
    cb2 = CyclicBatches([torch.arange(10, 20)], 3, g2)
    cb2.restore(st, "s")
    assert all(torch.equal(a, cb2.next()) for a in want)


def test_class_cyclic_first_k_is_dataset_order(digits):
    s = ClassCyclicSampler(digits, 4, torch.Generator().manual_seed(0))
    assert torch.equal(s.first_k(3, 5), digits.class_indices[3][:5])
    b = s.indices(3)
    assert b.numel() == 4 and bool((digits.labels[b] == 3).all())


class _Embed(nn.Module):
    """A fixed 'network' whose embedding is the mean pixel (1-D features)."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def embed(self, x):
        self.calls += 1
        return x.mean(dim=(1, 2, 3)).unsqueeze(1)


def test_representative_sampler_returns_cluster_nearest_and_refreshes_on_schedule(digits):
    cfg = RepresentativeConfig(n=4, interval=3, max_iter=50, embed_batch=10_000)
    rs = RepresentativeSampler(digits, cfg, 999, torch.Generator().manual_seed(0))
    net = _Embed()
    refreshed = []
    for step in range(7):
        before = rs.refreshes
        rs.observe(net, step)
        refreshed.append(rs.refreshes > before)
    assert refreshed == [True, False, False, True, False, False, True]
    for c in range(10):
        idx = rs.indices(c)
        assert idx.numel() == 4 and idx.unique().numel() == 4 and bool((digits.labels[idx] == c).all())
    # each pick is the class image nearest its centroid: re-derive with the same generator state
    from benchmark.kmeans import kmeans

    g = torch.Generator().manual_seed(1)
    rs2 = RepresentativeSampler(digits, cfg, 999, g)
    feats = rs2.embed(net, digits.class_indices[0])
    state = g.get_state()
    pos = rs2.select_class(feats, 0)
    g.set_state(state)
    res = kmeans(feats, 4, generator=g, init="random", max_iter=50)
    d = torch.cdist(feats, res.centers)
    assert torch.equal(pos, d.argmin(0)) or all(d[pos[j], j] <= d[:, j].min() + 1e-6 for j in range(4))


def test_representative_sampler_per_cluster_and_pool(digits):
    cfg = RepresentativeConfig(n=6, per_cluster=2, pool=50, max_iter=20)
    rs = RepresentativeSampler(digits, cfg, 999, torch.Generator().manual_seed(0))
    assert rs.k == 3
    rs.observe(_Embed(), 0)
    for c in range(10):
        assert rs.indices(c).unique().numel() <= 6 and bool((digits.labels[rs.indices(c)] == c).all())
    from benchmark.errors import ConfigError

    with pytest.raises(ConfigError, match="multiple of per_cluster"):
        RepresentativeSampler(digits, RepresentativeConfig(n=5, per_cluster=2), 5, torch.Generator())


# ---------------------------------------------------------------------- end to end


def _smoke(key: str) -> dict:
    return dict(get_method(key).SMOKE_PARAMS)


@pytest.mark.parametrize("key", ["dc", "dsa", "idc", "dream", "dream_plus"])
def test_smoke_run_end_to_end(key, tmp_path):
    g = GridSpec(name="gm", datasets=["digits"], ipc=[1], budget="smoke",
                 protocol="dsa" if key in ("dc", "dsa") else "idc",
                 methods=[{"name": key, "preset": "official", "params": _smoke(key)}])
    out = run_cells(expand(g), ResultStore(tmp_path))
    assert out[0].status == "finished", out[0].error
    assert 0 <= out[0].acc_mean <= 100


def test_representative_sampler_plugs_into_dc(digits, tmp_path):
    """`sampler: representative` changes the real batches DC matches (and so the set)."""
    cls = get_method("dc")
    base = {"iterations": 2, "batch_real": 8, "init": "real"}
    a = cls(cls.resolve_config("official", base), _ctx(digits, tmp_path / "a")).distill(digits, 1)
    b = cls(cls.resolve_config("official", {**base, "sampler": "representative",
                                            "representative": {"max_iter": 5, "interval": 1}}),
            _ctx(digits, tmp_path / "b")).distill(digits, 1)
    assert not torch.equal(a.images, b.images)
    assert torch.isfinite(b.images).all()


# ---------------------------------------------------------------------- efficiency view


_DISPLAY = {"idc": "IDC", "dream": "DREAM", "dream_plus": "DREAM+", "random": "Random", "dm": "DM"}


def _row(method, name, sampler, acc, synset, kind="distill", iterations=20):
    """A stored row as the row builder writes it (efficiency reads only rows and curves)."""
    from benchmark.api import get_method

    preset = method.partition(".")[2] or None
    cls = get_method(name)
    base = cls.efficiency_baseline(cls.resolve_config(preset, {"sampler": sampler} if sampler else {}))
    return {"schema": 2, "method": name, "method_label": method, "method_preset": preset,
            "method_display": _DISPLAY[name], "params_label": "", "resolved_config": {"sampler": sampler},
            "efficiency_baseline": base, "iterations": iterations, "method_kind": kind, "dataset": "mnist",
            "ipc": 1, "arch_eval": "ConvNet", "protocol": "idc", "budget": "cpu", "test_acc": acc,
            "synset_hash": synset}


def test_efficiency_iterations_to_reach_the_baseline():
    from benchmark.tables import efficiency, render_efficiency

    rows = [_row("idc.official", "idc", "cyclic", a, "h_idc") for a in (80.0, 82.0)]  # IDC final: 81
    rows += [_row("dream.official", "dream", "representative", a, "h_dream") for a in (85.0, 86.0)]
    rows += [_row("dream_plus.official", "dream_plus", "representative", 70.0, "h_plus")]
    rows += [_row("random", "random", None, 50.0, "h_r", kind="select")]
    curves = {"h_idc": {"curve": [(0, 40.0, 0.0), (10, 70.0, 5.0)], "iterations": 20, "wall_s": 10.0},
              "h_dream": {"curve": [(0, 60.0, 0.0), (4, 79.0, 3.0), (8, 81.5, 6.0)], "iterations": 20, "wall_s": 15.0},
              "h_plus": {"curve": [(0, 60.0, 0.0)], "iterations": 20, "wall_s": 15.0}}
    eff = efficiency(rows, curves).set_index("method")
    assert "Random" not in eff.index  # selections have no distillation curve
    assert eff.loc["DREAM [official]", "baseline"] == "IDC [official]"
    assert eff.loc["DREAM [official]", "baseline_acc"] == pytest.approx(81.0)
    assert eff.loc["DREAM [official]", "iters_to_baseline"] == 8  # first probe >= 81
    assert eff.loc["DREAM [official]", "speedup"] == pytest.approx(20 / 8)
    assert eff.loc["DREAM [official]", "wall_s_to_baseline"] == pytest.approx(6.0)
    assert eff.loc["IDC [official]", "baseline"] == ""  # the baseline itself
    plus = eff.loc["DREAM+ [official]"]
    assert plus.iters_to_baseline != plus.iters_to_baseline  # never reached (NaN)
    curves["h_plus"]["curve"] = [(0, 90.0, 0.0)]  # the initial set already beats IDC's final
    plus = efficiency(rows, curves).set_index("method").loc["DREAM+ [official]"]
    assert plus.iters_to_baseline == 0 and plus.speedup == float("inf")
    assert "init already" in render_efficiency(efficiency(rows, curves), "md")
    md = render_efficiency(eff.reset_index(), "md")
    assert "never (20 run)" in md and "2.5x" in md


def test_efficiency_view_from_the_cli(tmp_path, monkeypatch):
    import yaml
    from typer.testing import CliRunner

    from benchmark.cli import app

    grid = {"name": "eff", "datasets": ["digits"], "ipc": [1], "budget": "smoke", "protocol": "idc",
            "budget_overrides": {"distill_iterations": 2},
            "methods": [{"name": "idc", "preset": "official", "params": {**_smoke("idc"), "eval_every": 1}},
                        {"name": "dream", "preset": "official", "params": {**_smoke("dream"), "eval_every": 1}}]}
    gpath = tmp_path / "eff.yaml"
    gpath.write_text(yaml.safe_dump(grid))
    runner = CliRunner()
    res = runner.invoke(app, ["run", "--grid", str(gpath), "--results-dir", str(tmp_path / "store"), "--no-mlflow"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "boards"
    res = runner.invoke(app, ["table", "--grid", str(gpath), "--results-dir", str(tmp_path / "store"), "--view",
                              "efficiency", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "DREAM [official]" in res.output and "IDC [official]" in res.output
    assert (out / "eff_efficiency.png").stat().st_size > 0 and (out / "eff_efficiency.csv").exists()
    import pandas as pd

    eff = pd.read_csv(out / "eff_efficiency.csv")
    # labels carry the grid params beyond the preset: "DREAM [official] (inner_loop=2, ...)"
    assert all(" (" in m for m in eff.method)
    eff = eff.assign(method=eff.method.str.split(" (", regex=False).str[0],
                     baseline=eff.baseline.fillna("").str.split(" (", regex=False).str[0]).set_index("method")
    assert eff.loc["DREAM [official]", "baseline"] == "IDC [official]"
    assert eff.loc["DREAM [official]", "curve_points"] == 3  # iteration 0, 1 and the final 2
    bad = runner.invoke(app, ["table", "--view", "nope", "--results-dir", str(tmp_path / "store")])
    assert bad.exit_code == 2 and "--view" in bad.output


def test_representative_sampler_plugs_into_dm(digits, tmp_path):
    cls = get_method("dm")
    base = {"iterations": 2, "batch_real": 8}
    a = cls(cls.resolve_config("official", base), _ctx(digits, tmp_path / "a")).distill(digits, 1)
    b = cls(cls.resolve_config("representative", {**base, "representative": {"max_iter": 5, "interval": 1}}),
            _ctx(digits, tmp_path / "b")).distill(digits, 1)
    assert not torch.equal(a.images, b.images) and torch.isfinite(b.images).all()
    # the set records how many iterations ran, so its efficiency row is not read as 'init already'
    assert a.meta["iterations"] == b.meta["iterations"] == 2


def test_efficiency_reads_iterations_from_rows_when_the_curve_record_lacks_them():
    from benchmark.tables import efficiency

    rows = [_row("dm.official", "dm", "random", 89.0, "h_dm", iterations=200),
            _row("dm.representative", "dm", "representative", 90.0, "h_rep", iterations=200)]
    curves = {"h_dm": {"curve": [(0, 40.0, 0.0), (100, 85.0, 5.0)], "wall_s": 10.0},
              "h_rep": {"curve": [(0, 45.0, 0.0), (100, 89.5, 6.0)], "wall_s": 12.0}}
    rep = efficiency(rows, curves).set_index("method").loc["DM [representative]"]
    assert rep.baseline == "DM [official]"
    assert rep.iterations == 200 and rep.iters_to_baseline == 100 and rep.speedup == pytest.approx(2.0)


def test_bidirectional_matching_is_gradient_plus_feature_distance(digits):
    """DREAM+: one forward per side serves both terms; equal weights, no lambda."""
    from benchmark.gradmatch import match_class

    net = create_model("ConvNet", digits.info, torch.Generator().manual_seed(0))
    params = matched_parameters(net, metric="mse", scope="conv")
    xr, xs = torch.randn(6, 1, 8, 8), torch.randn(3, 1, 8, 8)
    both = match_class(net, xr, xs, 2, params, "mse", bidirectional=True)
    grad_only = match_class(net, xr, xs, 2, params, "mse")
    with torch.no_grad():
        feat = feature_distance(net.embed(xr), net.embed(xs), "mse")
    assert torch.allclose(both, grad_only + feat, rtol=1e-5)


def test_dream_plus_warms_every_new_network_for_one_real_epoch(digits, tmp_path, monkeypatch):
    import benchmark.gradmatch as gm
    import methods.idc as idc_mod

    seen = []
    orig = gm.train_steps

    def spy(net, opt, next_batch, n_data, *a, **k):
        seen.append(n_data)
        return orig(net, opt, next_batch, n_data, *a, **k)

    monkeypatch.setattr(idc_mod, "train_steps", spy)
    cls = get_method("dream_plus")
    cfg = cls.resolve_config("official", {**cls.SMOKE_PARAMS, "warmup_epochs": 1.0, "iterations": 2,
                                          "inner_loop": 1, "n_data": 16})
    cls(cfg, _ctx(digits, tmp_path)).distill(digits, 1)
    full = len(digits)
    # net 0 (init + iteration 0) and net 1 are each warmed on one full epoch; each inner step then
    # trains on n_data = 16 real samples
    assert seen == [full, 16, full, 16]
