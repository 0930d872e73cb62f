import pandas as pd

from benchmark.tables import TIDY_COLUMNS, leaderboard, load_published, match_published, render


def _rows():
    base = dict(schema=2, method="random", method_label="random", method_preset=None, dataset="mnist", ipc=1,
                arch_eval="ConvNet", protocol="dsa", budget="cpu", arch_distill="ConvNet", precision="fp32",
                method_kind="select", method_display="Random", dataset_display="MNIST", arch_eval_display="ConvNet-3",
                arch_distill_display="ConvNet-3", params_label="", extractor_label="")
    return [dict(base, test_acc=a) for a in (60.0, 62.0, 64.0)] + [dict(base, ipc=10, test_acc=95.0)]


def test_schema_1_rows_still_render():
    """Rows written before the names were settled (method = label, method_name = key, arch =
    eval arch, preset = protocol) read through the one-release fallback."""
    old = dict(method="random", method_name="random", dataset="mnist", ipc=1, arch="ConvNet", preset="dsa",
               budget="cpu", arch_distill="ConvNet", method_kind="select", method_display="Random",
               dataset_display="MNIST", arch_display="ConvNet-3", test_acc=61.0)
    b = leaderboard([old])
    assert b.iloc[0].protocol == "dsa" and b.iloc[0].arch_eval == "ConvNet"
    # the paper's Random number is DC's protocol: shown marked, never as matching a dsa result
    assert b.iloc[0].paper == "" and b.iloc[0].paper_other == "64.9 ± 3.5 (dc)"


def test_leaderboard_stats_and_published_beside_ours():
    b = leaderboard(_rows())
    r = b[b.ipc == 1].iloc[0]
    assert r.acc_mean == 62.0 and abs(r.acc_std - (8 / 3) ** 0.5) < 1e-9 and r.n == 3
    # published Random was produced under DC's protocol: beside a dsa result it is marked
    assert r.paper == "" and r.paper_other == "64.9 ± 3.5 (dc)" and r.paper_protocol == "dc"
    assert r.paper_source.startswith("DM (WACV 2023)")
    dc = leaderboard([dict(x, protocol="dc") for x in _rows()])
    assert dc[dc.ipc == 1].iloc[0].paper == "64.9 ± 3.5" and dc[dc.ipc == 1].iloc[0].paper_other == ""
    assert list(b.columns[: len(TIDY_COLUMNS)]) == TIDY_COLUMNS


def test_published_match_whole_dataset_and_missing():
    pub = load_published()
    assert match_published(pub, "Whole dataset", "CIFAR-10", 0, "ConvNet-3")[:2] == (84.8, 0.1)
    assert match_published(pub, "Random", "Digits", 1, "ConvNet-3")[0] is None
    # cross-architecture: a number is only shown for a set made on the same architecture
    assert match_published(pub, "DREAM", "CIFAR-10", 10, "ResNet-10", "ConvNet-3")[0] == 66.3
    assert match_published(pub, "DREAM", "CIFAR-10", 10, "ResNet-10", "ResNet-10")[0] == 51.0
    assert match_published(pub, "DREAM", "CIFAR-10", 10, "DenseNet-121 (CIFAR, k=12)", "ConvNet-3")[0] == 65.9
    assert match_published(pub, "DREAM", "CIFAR-10", 10, "ResNet-10-BN", "ConvNet-3")[0] == 66.3
    assert match_published(pub, "DM", "CIFAR-10", 10, "ConvNet-3", "AlexNet")[0] is None
    assert match_published(pub, "Random", "CIFAR-10", 10, "ConvNet-3", "AlexNet")[0] is not None  # no distill arch


def test_render_formats():
    b = leaderboard(_rows())
    md = render(b, "md")
    assert "62.0 ± 1.6 (n=3); other protocol: 64.9 ± 3.5 (dc)" in md
    assert "62.0 ± 1.6 (n=3); paper 64.9 ± 3.5" in render(leaderboard([dict(x, protocol="dc") for x in _rows()]))
    csv = render(b, "csv")
    assert pd.read_csv(__import__("io").StringIO(csv)).shape == (2, len(TIDY_COLUMNS))
    assert "tabular" in render(b, "latex")


def test_empty():
    assert render(leaderboard([]), "md") == "(no results)"


def test_method_variants_stay_on_separate_rows():
    rows = _rows() + [dict(r, method_label="random.other", method_preset="other") for r in _rows()]
    md = render(leaderboard(rows), "md")
    assert "| Random [other]" in md and md.count("| Random ") == 2


def test_selector_rows_name_their_extractor():
    """The extractor is data in the row (written by the row builder under the row's budget)."""
    from benchmark.budgets import resolve_budget
    from benchmark.rows import extractor_fields

    cpu = resolve_budget("cpu")
    cfg = {"variant": "dc", "extractor": {"arch": "ConvNet", "weights": "trained", "epochs": 10}}
    data, label = extractor_fields(cfg, cpu)
    # the cpu budget caps the 10 proxy epochs at 5: the row says what was actually trained
    assert data["effective_epochs"] == 5 and label.startswith("ConvNet trained on the full train split 5 ep")
    rdata, rlabel = extractor_fields({"extractor": {"weights": "random", "seed": 3}}, cpu)
    assert rlabel == "ConvNet random init (seed 3), embed" and rdata["weights"] == "random"
    assert extractor_fields({"init": "herding", "init_params": {"extractor": {"epochs": 2}}}, cpu)[1].startswith(
        "init herding: ConvNet trained")
    herd = dict(_rows()[0], method="herding", method_label="herding", method_display="Herding", test_acc=85.0,
                extractor=data, extractor_label=label)
    rnd_net = dict(herd, method_label="herding.random_net", method_preset="random_net", extractor=rdata,
                   extractor_label=rlabel)
    b = leaderboard(_rows() + [herd, rnd_net])
    ex = dict(zip(b.method_label, b.extractor))
    assert ex["random"] == "" and ex["herding"] == label and ex["herding.random_net"] == rlabel
    md = render(b, "md")
    assert "| extractor " in md and "random init (seed 3)" in md
    assert "extractor" not in render(leaderboard(_rows()), "md")  # no selector with features: no column


def _dm_rows(cfg_changes, accs, preset="official"):
    from benchmark.api import get_method
    from benchmark.budgets import resolve_budget
    from benchmark.data import get_info
    from benchmark.rows import method_fields

    cls = get_method("dm")
    out = []
    for ch, a in zip(cfg_changes, accs):
        cfg = cls.resolve_config(preset, ch)
        f = method_fields(cls, preset, cfg, get_info("mnist"), 1, resolve_budget("cpu"), "ConvNet")
        out.append(dict(_rows()[0], **f, test_acc=a))
    return out


def test_param_entries_of_one_method_stay_apart_and_are_named():
    """A sweep written as several {name: dm, params: ...} entries is several rows, each saying
    what it changed; a preset run with nothing changed shows no params."""
    rows = _dm_rows([{"eval_every": 50}, {"lr_img": 10.0}, {"lr_img": 10.0, "batch_real": 64}], [80.0, 85.0, 86.0])
    b = leaderboard(rows)
    assert sorted(b.params) == ["", "batch_real=64, lr_img=10.0", "lr_img=10.0"]
    assert sorted(b.acc_mean) == [80.0, 85.0, 86.0]
    md = render(b, "md")
    assert "| DM [official] (lr_img=10.0) " in md and "| DM [official] (batch_real=64, lr_img=10.0) " in md
    assert "| DM [official] " in md.replace("(", "|")


def test_rows_carry_resolved_values():
    r = _dm_rows([{}], [80.0])[0]
    assert r["method_config"]["lr_img"] is None and r["resolved_config"]["lr_img"] == 1.0
    assert r["resolved_config"]["iterations"] == 1000 and r["iterations"] == 1000  # cpu budget caps 20000
    assert r["method_label"] == "dm.official" and "main_DM.py" in r["provenance"]


def test_params_label_shortens_floats_only_in_the_label():
    from benchmark.rows import params_label

    label = params_label({"lr_img": 0.45962757368712065, "batch_real": 64})
    assert "lr_img=0.459628" in label and "batch_real=64" in label


def test_cli_tables_print_brackets_literally(capsys):
    from benchmark.cli import _print_frame, console

    with console.capture() as cap:
        _print_frame(pd.DataFrame([{"method": "DM [official] (batch_real=64)"}]))
    assert "DM [official]" in cap.get()


def test_cross_arch_view_columns_per_eval_arch_and_transfer_mean():
    from benchmark.tables import cross_arch_pivot, render_cross_arch

    base = dict(_rows()[0], method="dm", method_label="dm", method_display="DM", method_kind="distill", ipc=10)
    rows = []
    for arch, disp, accs in (("ConvNet", "ConvNet-3", (50.0, 52.0)), ("AlexNet", "AlexNet", (40.0, 42.0)),
                             ("ResNet10BN", "ResNet-10-BN", (30.0, 30.0))):
        rows += [dict(base, arch_eval=arch, arch_eval_display=disp, test_acc=a) for a in accs]
    rows += [dict(base, arch_distill="AlexNet", arch_distill_display="AlexNet", arch_eval="ConvNet",
                  arch_eval_display="ConvNet-3", test_acc=45.0)]
    view = cross_arch_pivot(leaderboard(rows))
    assert list(view.columns[-4:]) == ["ConvNet-3", "AlexNet", "ResNet-10-BN", "transfer"]
    conv = view[view["distilled on"] == "ConvNet-3"].iloc[0]
    assert conv["ConvNet-3"].startswith("51.0 ± 1.0 (n=2)")
    assert conv["transfer"] == "35.5 (over 2)"  # AlexNet 41 and ResNet-10 30; ConvNet itself left out
    alex = view[view["distilled on"] == "AlexNet"].iloc[0]
    assert alex["ConvNet-3"].startswith("45.0") and alex["AlexNet"] == "" and alex["transfer"] == "45.0 (over 1)"
    assert "transfer" in render_cross_arch(leaderboard(rows), "md")
    assert render_cross_arch(leaderboard(rows), "csv").count("\n") == 5  # header + 4 tidy lines


def test_eval_pools_expand_in_grids():
    import pytest

    from benchmark.grid import GridSpec, expand
    from benchmark.models import EVAL_POOLS

    g = GridSpec(name="x", methods=["random"], datasets=["digits"], ipc=[1], eval_archs=["pool:idc", "LeNet"],
                 num_exp=1, num_eval=1)
    assert [c.arch_eval for c in expand(g)] == [*EVAL_POOLS["idc"], "LeNet"]
    with pytest.raises(Exception, match="pool:dc"):
        expand(g.model_copy(update={"eval_archs": ["pool:dcc"]}))


def test_precision_pairs_pair_networks_and_flag_only_real_shifts():
    from benchmark.tables import precision_pairs

    base = _rows()[0]
    rows = []
    for k, (a, b) in enumerate([(60.0, 60.5), (62.0, 62.4), (64.0, 64.6), (61.0, 61.5)]):
        rows += [dict(base, set_seed=1, model_index=k, precision="fp32", test_acc=a),
                 dict(base, set_seed=1, model_index=k, precision="bf16", test_acc=b)]
    t = precision_pairs(rows)
    r = t.iloc[0]
    assert r.n_pairs == 4 and r["bf16 - fp32"] == "+0.50" and r.verdict == "within noise"  # 0.5 < fp32 noise 1.5
    shifted = [dict(x, test_acc=x["test_acc"] + (3.0 if x["precision"] == "bf16" else 0.0)) for x in rows]
    assert precision_pairs(shifted).iloc[0].verdict == "shift"
    # an unpaired network (no bf16 twin) is left out, never compared across seeds
    assert precision_pairs(
        rows + [dict(base, set_seed=2, model_index=0, precision="fp32", test_acc=10.0)]).iloc[0].n_pairs == 4


def test_engine_loop_rows_stay_apart_and_pair_with_stacked():
    """A store holding both engines never pools the same networks twice (loop rows are labelled
    like a param); --view engine pairs them network by network with the training time of each."""
    from benchmark.tables import engine_pairs, render_engine

    base = _rows()[0]
    rows = []
    for k, a in enumerate((60.0, 62.0, 64.0)):
        rows += [dict(base, set_seed=1, model_index=k, engine="loop", test_acc=a, train_time_s=30.0),
                 dict(base, set_seed=1, model_index=k, engine="stacked", test_acc=a, train_time_s=12.0)]
    b = leaderboard(rows)
    assert sorted(b.n) == [3, 3] and sorted(b.params) == ["", "engine=loop"]
    old = [dict(base, set_seed=1, model_index=0, test_acc=60.0)]  # a row from before the engine field
    assert list(leaderboard(old).params) == [""]
    t = engine_pairs(rows)
    r = t.iloc[0]
    assert r.n_pairs == 3 and r["stacked - loop"] == "+0.00" and r["max |diff|"] == "0.00"
    assert r["loop train s/net"] == "30.0" and r["stacked train s/net"] == "12.0" and r.method == "Random"
    bumped = [dict(x, test_acc=x["test_acc"] + (0.01 * x["model_index"] if x["engine"] == "stacked" else 0))
              for x in rows]
    assert engine_pairs(bumped).iloc[0]["max |diff|"] == "0.02"
    assert "no loop/stacked pairs" in render_engine(old)


def test_engine_label_follows_the_cells_setting_not_how_a_lone_network_ran():
    base = dict(_rows()[0], set_seed=1, model_index=0, test_acc=60.0)
    ran_loop = dict(base, engine="loop", engine_requested="stacked")  # num_eval 1 of a stacked cell
    assert list(leaderboard([ran_loop]).params) == [""]
    assert list(leaderboard([dict(base, engine="loop")]).params) == ["engine=loop"]
