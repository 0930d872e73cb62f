"""DD-Ranking's scores from fractions, paired statistics against random and the best method,
and the whole-data model / random subsets trained once per cell and shared by every method."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from benchmark.errors import DbenchError
from benchmark.tables import (
    SCORE_COLUMNS,
    TIDY_COLUMNS,
    augmentation_robust_score,
    label_robust_score,
    leaderboard,
    noaug_protocol,
    paired_difference,
    paired_view,
    render,
    render_paired,
)

FIX = Path(__file__).parent / "fixtures"


# ------------------------------------------------------------------------ formulas


def test_lrs_ars_on_hand_computed_values():
    e, f = math.e, math.exp(-1)
    # alpha = 0: (1 - e^-1) / (e - e^-1) = 0.632121 / 2.350402
    assert label_robust_score(0.0, 0.0) == pytest.approx(0.268941, abs=1e-6)
    # the map's ends: alpha = 1 -> 1, alpha = -1 -> 0
    assert label_robust_score(1.0, 0.0, w=1.0) == pytest.approx(1.0)
    assert label_robust_score(0.0, 1.0, w=0.0) == pytest.approx(0.0, abs=1e-12)
    # IOR 0.2, HLR 0.4, w 0.5: alpha = -0.1, e^-0.1 = 0.904837 -> 0.536958 / 2.350402
    assert label_robust_score(0.2, 0.4) == pytest.approx(0.228454, abs=1e-6)
    # w = 0.8: alpha = 0.16 - 0.08 = 0.08, e^0.08 = 1.083287 -> 0.715408 / 2.350402
    assert label_robust_score(0.2, 0.4, w=0.8) == pytest.approx(0.304377, abs=1e-6)
    # ARS: gaps 0.1 (aug) and 0.3 (no aug), gamma 0.5: beta = 0.2, e^0.2 = 1.221403
    assert augmentation_robust_score(0.1, 0.3) == pytest.approx(0.363139, abs=1e-6)
    assert augmentation_robust_score(0.1, 0.3, gamma=1.0) == pytest.approx((math.exp(0.1) - f) / (e - f))
    with pytest.raises(DbenchError, match=r"\[0, 1\]"):
        label_robust_score(0.1, 0.1, w=1.5)
    assert noaug_protocol("dsa") == "dsa_noaug" and noaug_protocol("dsa*") == "dsa_noaug*"


def test_published_accuracies_fraction_vs_percent_fixture():
    """DD-Ranking's formula on the DM paper's CIFAR-10 accuracies: with fractions the scores lie in
    [0, 1] and separate the methods; with percent (what DD-Ranking's code feeds it) they saturate
    at -e^-1/(e - e^-1) and the three IPC-1 methods are indistinguishable."""
    fx = pd.read_csv(FIX / "ddranking_lrs.csv", comment="#")
    assert len(fx) == 9 and set(fx.source) == {"DM (WACV 2023) Table 1"}
    for r in fx.itertuples():
        ior, hlr = r.acc_syn - r.acc_random, r.acc_full - r.acc_syn
        assert label_robust_score(ior / 100, hlr / 100) == pytest.approx(r.lrs_fraction, abs=1e-6)
        assert label_robust_score(ior, hlr) == pytest.approx(r.lrs_percent, abs=1e-6)  # the percent bug
    assert fx.lrs_fraction.between(0, 1).all() and (fx.lrs_percent < 0).all()
    floor = -math.exp(-1) / (math.e - math.exp(-1))
    ipc1 = fx[fx.ipc == 1]
    assert ipc1.lrs_percent.max() - ipc1.lrs_percent.min() < 1e-5
    assert ipc1.lrs_percent.iloc[0] == pytest.approx(floor, abs=1e-5)
    assert ipc1.lrs_fraction.max() - ipc1.lrs_fraction.min() > 0.009

    # the leaderboard column gives the same numbers from rows (one network per method)
    base = dict(schema=2, dataset="cifar10", arch_eval="ConvNet", protocol="dsa", budget="paper", precision="fp32",
                arch_distill="ConvNet", dataset_display="CIFAR-10", arch_eval_display="ConvNet-3",
                arch_distill_display="ConvNet-3", params_label="", extractor_label="", method_preset=None,
                set_seed=0, model_index=0)
    rows = [dict(base, method="full", method_label="full", method_kind="reference", method_display="Whole dataset",
                 ipc=0, test_acc=84.8)]
    for ipc, acc in {1: 14.4, 10: 26.0, 50: 43.4}.items():
        rows.append(dict(base, method="random", method_label="random", method_kind="select", method_display="Random",
                         ipc=ipc, test_acc=acc))
    for r in fx.itertuples():
        rows.append(dict(base, method=r.method.lower(), method_label=r.method.lower(), method_kind="distill",
                         method_display=r.method, ipc=r.ipc, test_acc=r.acc_syn))
    b = leaderboard(rows)
    got = {(r.label, r.ipc): r.lrs for r in b.itertuples()}
    for r in fx.itertuples():
        assert got[(r.method, r.ipc)] == pytest.approx(r.lrs_fraction, abs=1e-6)
    assert math.isnan(b[b.method_kind == "reference"].lrs.iloc[0])


# --------------------------------------------------------------------- paired stats

_BASE = dict(schema=2, dataset="mnist", ipc=1, arch_eval="ConvNet", protocol="dsa", budget="cpu", precision="fp32",
             arch_distill="ConvNet", dataset_display="MNIST", arch_eval_display="ConvNet-3",
             arch_distill_display="ConvNet-3", params_label="", extractor_label="", method_preset=None)


def _row(method, kind, seed, k, acc, **kw):
    return dict(_BASE, method=method, method_label=method, method_kind=kind, method_display=method.upper(),
                set_seed=seed, model_index=k, test_acc=acc, **kw)


def _paired_rows():
    """random, A = random + (2, 4, 6), B = random + (10, 11, 12) on networks (seed, index); the
    whole dataset at 99; and the no-augmentation protocol for random and B."""
    nets = [(0, 0), (0, 1), (1, 0)]
    rnd = [60.0, 64.0, 62.0]
    rows = [_row("full", "reference", 0, 0, 99.0, ipc=0)]
    for (s, k), r, da, db in zip(nets, rnd, (2, 4, 6), (10, 11, 12)):
        rows += [_row("random", "select", s, k, r), _row("a", "distill", s, k, r + da),
                 _row("b", "distill", s, k, r + db)]
        rows += [_row("random", "select", s, k, r - 10, protocol="dsa_noaug"),
                 _row("b", "distill", s, k, r - 10 + db - 5, protocol="dsa_noaug")]
    rows.append(_row("a", "distill", 7, 0, 10.0))  # a network random does not have: never paired
    return rows[::-1]  # order does not matter


def test_paired_difference_hand_computed():
    a = pd.Series([62.0, 68.0, 68.0], index=[(0, 0), (0, 1), (1, 0)])
    b = pd.Series([60.0, 64.0, 62.0], index=[(0, 0), (0, 1), (1, 0)])
    d = paired_difference(a, b)  # differences 2, 4, 6: mean 4, sd 2, n 3
    assert d["n"] == 3 and d["mean"] == pytest.approx(4.0)
    assert d["ci95"] == pytest.approx(4.302653 * 2 / math.sqrt(3), abs=1e-5)  # t(0.975, 2) sd / sqrt(n)
    # t = 4 / (2 / sqrt 3) = 3.4641; with 2 df the two-sided p is 1 - t / sqrt(t^2 + 2)
    t = 4 / (2 / math.sqrt(3))
    assert d["p"] == pytest.approx(1 - t / math.sqrt(t * t + 2), abs=1e-9)
    same = paired_difference(b, b)
    assert same["p"] == 1.0 and same["ci95"] == 0.0
    one = paired_difference(a.iloc[:1], b)
    assert one["n"] == 1 and math.isnan(one["p"])


def test_leaderboard_paired_columns_ties_and_best():
    b = leaderboard(_paired_rows())
    assert list(b.columns[: len(TIDY_COLUMNS)]) == TIDY_COLUMNS and set(SCORE_COLUMNS) <= set(b.columns)
    r = {(x.label, x.protocol): x for x in b.itertuples()}
    a, bb, rnd = r[("A", "dsa")], r[("B", "dsa")], r[("RANDOM", "dsa")]
    # A: +4 on 3 pairs (the unpaired network is left out), p 0.074: a tie within noise
    assert a.n_pairs_random == 3 and a.diff_random == pytest.approx(4.0) and a.vs_random == "tie"
    assert a.p_random == pytest.approx(0.074180, abs=1e-6)
    # B: +11 +- t(2) * 1 / sqrt 3, p well under 0.05: better; and the cell's best
    assert bb.diff_random == pytest.approx(11.0)
    assert bb.diff_random_ci95 == pytest.approx(4.302653 / math.sqrt(3), abs=1e-5)
    assert bb.vs_random == "better" and bb.p_random < 0.01 and bb.vs_best == "best" and a.best == "B"
    # A minus B: (2-10, 4-11, 6-12) = (-8, -7, -6): worse than the best
    assert a.diff_best == pytest.approx(-7.0) and a.vs_best == "worse"
    assert rnd.vs_random == "" and rnd.vs_best == "worse"
    # DD-Ranking from fractions: IOR = (71 - 62) / 100 (A's mean includes its unpaired net: (62+68+68+10)/4 = 52)
    assert a.ior == pytest.approx((52.0 - 62.0) / 100) and a.hlr == pytest.approx((99.0 - 52.0) / 100)
    assert a.lrs == pytest.approx(label_robust_score(-0.10, 0.47))
    # ARS on the augmented line: B gains 11 points with aug, 6 without
    assert bb.ars == pytest.approx(augmentation_robust_score(0.11, 0.06))
    assert math.isnan(a.ars)  # A has no no-augmentation evaluation
    assert math.isnan(r[("B", "dsa_noaug")].ars)  # the score lives on the augmented protocol's line
    lrs8 = leaderboard(_paired_rows(), lrs_weight=0.8, ars_gamma=0.2)
    assert lrs8[lrs8.label == "B"].lrs.iloc[0] == pytest.approx(label_robust_score(0.11, 0.99 - 0.73, w=0.8))


def test_paired_view_and_existing_views_unchanged():
    rows = _paired_rows()
    b = leaderboard(rows)
    v = paired_view(b)
    assert "Whole dataset" not in set(v.method) and {"vs random (pp)", "verdict (best)", "LRS", "ARS"} <= set(v.columns)
    line = v[(v.method == "A") & (v.protocol == "dsa")].iloc[0]
    assert line["vs random (pp)"] == "+4.00 ± 4.97 (n=3)" and line["verdict (random)"] == "tie"
    md = render_paired(b, "md")
    assert "tie" in md and "better" in md and "best" in md
    csv = pd.read_csv(__import__("io").StringIO(render_paired(b, "csv")))
    assert {"lrs", "ars", "diff_random", "p_random", "vs_best"} <= set(csv.columns)
    # the method x IPC pivot and the tidy CSV keep their columns
    assert "lrs" not in render(b, "md")
    assert list(pd.read_csv(__import__("io").StringIO(render(b, "csv"))).columns) == TIDY_COLUMNS


def test_paired_view_cli_from_rows_file_without_torch(tmp_path, torchless_cli):
    f = tmp_path / "rows.jsonl"
    f.write_text("\n".join(json.dumps({"row": r}) for r in _paired_rows()) + "\n")
    r = torchless_cli("table", "--rows", str(f), "--view", "paired")
    assert r.returncode == 0, r.stderr
    assert "verdict (random)" in r.stdout and "tie" in r.stdout
    from benchmark.cli import app

    bad = CliRunner().invoke(app, ["table", "--rows", str(f), "--view", "paired", "--lrs-w", "2"])
    assert bad.exit_code == 2 and "[0, 1]" in bad.output


# ------------------------------------------------------- shared baselines, trained once


def test_whole_data_and_random_subsets_are_trained_once(store_dir, monkeypatch):
    """Several methods beside random and full, with and without augmentation: the whole-data model
    trains once per network, each random subset is drawn once and each of its networks trains once
    per protocol; a second grid with another method reuses them all."""
    import benchmark.evaluate as E
    from baselines.random_subset import RandomSubset
    from benchmark.grid import GridSpec, expand
    from benchmark.runner import run_cells
    from benchmark.store import ResultStore

    store = ResultStore(store_dir)
    n_full = 1343  # digits' train split
    trained: list[tuple[int, str]] = []
    drawn: list[int] = []
    real_train, real_select = E.train_model, RandomSubset.select
    monkeypatch.setattr(E, "train_model", lambda src, proto, *a, **kw: (trained.append((len(src), proto.aug)),
                                                                         real_train(src, proto, *a, **kw))[1])
    import benchmark.stacked as S  # the default engine trains a cell's networks together: count each one

    real_stacked = S.train_stacked
    monkeypatch.setattr(S, "train_stacked", lambda src, proto, arch, info, test, seeds, *a, **kw: (
        trained.extend([(len(src), proto.aug)] * len(seeds)), real_stacked(src, proto, arch, info, test, seeds, *a,
                                                                            **kw))[1])
    monkeypatch.setattr(RandomSubset, "select",
                        lambda self, real, ipc: (drawn.append(ipc), real_select(self, real, ipc))[1])
    smoke = {"extractor": {"arch": "ConvNetW32", "epochs": 1, "max_steps": 2, "batch_size": 64}}

    def grid(methods):
        return GridSpec(name="shared", methods=methods, datasets=["digits"], ipc=[1], budget="smoke",
                        budget_overrides={"num_exp": 2, "num_eval": 2}, num_exp=2, num_eval=2, protocol="dsa",
                        extra_protocols=["dsa_noaug"])

    g1 = grid(["random", {"name": "herding", "params": smoke}, "full"])
    cells = expand(g1)
    assert sum(c.method == "full" for c in cells) == 1  # the reference row: main protocol only
    out = run_cells(cells, store)
    assert {o.status for o in out} == {"finished"}
    full_runs = [t for t in trained if t[0] == n_full]
    assert full_runs == [(n_full, "dsa")] * 2  # 2 networks, once each
    assert drawn == [1, 1]  # one draw per set, shared by both protocols
    small = [t for t in trained if t[0] == 10]
    # random and herding sets (10 images): 2 methods x 2 sets x 2 protocols x 2 nets, half without augmentation
    assert len(small) == 2 * 2 * 2 * 2 and sum(aug == "none" for _, aug in small) == 8
    rnd_rows = [r for r in store.iter_rows() if r["method"] == "random"]
    assert len(rnd_rows) == 2 * 2 * 2 and len({(r["cell_hash"], r["model_index"]) for r in rnd_rows}) == 8

    trained.clear(), drawn.clear()
    assert {o.status for o in run_cells(expand(g1), store)} == {"skipped"} and not trained and not drawn
    # another grid, another method: random and full are finished cells, only the new method trains
    out = run_cells(expand(grid(["random", "full", {"name": "kcenter", "params": smoke}])), store)
    assert not drawn and not [t for t in trained if t[0] == n_full]
    assert {o.cell.method for o in out if o.status == "finished"} == {"kcenter"}
    # every method's scores use the same random / full rows
    b = leaderboard(list(store.iter_rows()))
    methods = b[(b.method_kind == "select") & (b.protocol == "dsa") & (b.ipc == 1)]
    assert set(methods.method_label) == {"random", "herding", "kcenter"}
    assert methods.hlr.notna().all() and methods.ars.notna().all()
    rnd = methods[methods.method_label == "random"].acc_mean.iloc[0]
    for r in methods.itertuples():
        assert r.ior == pytest.approx((r.acc_mean - rnd) / 100)
