"""Every number explains itself: rows name every value that produced them, tables are built
from rows alone (no method code, models or torch), and editing a preset later never
relabels an old result."""

import json

import pytest

from benchmark.grid import GridSpec, expand
from benchmark.runner import run_cells
from benchmark.store import ResultStore
from benchmark.tables import leaderboard, render

DM_FAST = {"iterations": 2, "batch_real": 8}


def _grid(**kw):
    base = dict(name="rows_t", methods=["random", {"name": "dm", "preset": "official", "params": DM_FAST},
                                        {"name": "herding", "params": {"extractor": {"epochs": 1, "max_steps": 2}}}],
                datasets=["digits"], ipc=[1], protocol="dm", budget="smoke", num_exp=1, num_eval=1)
    return GridSpec(**{**base, **kw})


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny grid, tracked in a real embedded MLflow store."""
    from benchmark.tracking import make_tracker

    root = tmp_path_factory.mktemp("rows") / "store"
    store = ResultStore(root)
    tracker = make_tracker(None, root)
    out = run_cells(expand(_grid()), store, tracker)
    assert {o.status for o in out} == {"finished"}
    return store, tracker


def _rows(store):
    return sorted(store.iter_rows(), key=lambda r: r["method"])


def test_row_names_every_value(finished):
    store, _ = finished
    rows = {r["method"]: r for r in _rows(store)}
    dm = rows["dm"]
    # the resolved config: DM's lr_img None -> 1.0, iterations capped by the smoke budget
    assert dm["method_config"]["lr_img"] is None and dm["resolved_config"]["lr_img"] == 1.0
    assert dm["resolved_config"]["iterations"] == 2 and dm["iterations"] == 2
    from benchmark.data import get_info

    assert dm["method_config"]["dsa_strategy"] is None
    assert dm["resolved_config"]["dsa_strategy"] == get_info("digits").dsa_strategy
    assert (dm["method_params"] == {"batch_real": 8, "iterations": 2}
            and dm["params_label"] == "batch_real=8, iterations=2")
    assert dm["method"] == "dm" and dm["method_label"] == "dm.official" and dm["method_display"] == "DM"
    assert "main_DM.py" in dm["provenance"]
    # the protocol as it trained (the DSA strategy that ran, never None) and the budget as data
    assert dm["protocol"] == "dm" and dm["protocol_config"]["dsa_strategy"]
    assert dm["protocol_config"]["epochs"] == dm["epochs"] and "rule" in dm["protocol_config"]
    assert dm["budget"] == "smoke" and dm["budget_config"]["eval_max_steps"] == 20
    for k in ("arch_distill", "arch_eval", "arch_eval_display", "dataset_display", "torch_version", "hardware",
              "precision", "dbench_version", "python_version", "git_commit", "schema", "set_seed", "model_seed"):
        assert k in dm, k
    # a selector's extractor is data, with the epochs it trained under the budget
    h = rows["herding"]
    assert h["extractor"]["effective_epochs"] == 1 and h["extractor"]["max_steps"] == 2
    assert h["extractor_label"].startswith("ConvNet trained on the full train split 1 ep")


def test_mlflow_shows_the_resolved_values(finished):
    store, tracker = finished
    dm = next(r for r in store.iter_rows() if r["method"] == "dm")
    runs = tracker.client.search_runs(
        [e.experiment_id for e in tracker.client.search_experiments()],
        filter_string=f"tags.`dbench.cell_hash` = '{dm['cell_hash']}'")
    p = runs[0].data.params
    assert p["method_config.lr_img"] == "None" and p["resolved.lr_img"] == "1.0"
    assert (p["resolved.iterations"] == "2"
            and p["protocol_resolved.dsa_strategy"] == dm["protocol_config"]["dsa_strategy"])
    assert p["row.arch_distill"] == "ConvNet"


def test_editing_a_preset_later_never_relabels_old_rows(finished, monkeypatch):
    store, _ = finished
    before = render(leaderboard(list(store.iter_rows())), "md")
    assert "DM [official] (batch_real=8, iterations=2)" in before
    from benchmark.api import get_method

    dm = get_method("dm")
    monkeypatch.setitem(dm.PRESETS, "official", {**dm.PRESETS["official"], "batch_real": 8, "lr_img": 5.0})
    after = render(leaderboard(list(store.iter_rows())), "md")
    assert after == before


def test_datadam_rows_name_the_network_it_distilled_on(tmp_path):
    """DataDAM's official preset distills on the BatchNorm ConvNet whatever the grid's arch."""
    from benchmark.api import get_method
    from benchmark.budgets import resolve_budget
    from benchmark.data import get_info
    from benchmark.rows import method_fields

    cls = get_method("datadam")
    f = method_fields(cls, "official", cls.resolve_config("official", {}), get_info("mnist"), 1,
                      resolve_budget("smoke"), "ConvNet")
    assert f["arch_distill"] == "ConvNetBN" and f["arch_distill_display"] != "ConvNet-3"
    f = method_fields(cls, "paper", cls.resolve_config("paper", {}), get_info("mnist"), 1,
                      resolve_budget("smoke"), "ConvNet")
    assert f["arch_distill"] == "ConvNet"


def test_table_builds_with_method_code_and_torch_unimportable(finished, tmp_path, torchless_cli):
    store, _ = finished
    expected = render(leaderboard(list(store.iter_rows())), "md")
    out = tmp_path / "tables"
    for args in (["table", "--results-dir", str(store.root), "--out", str(out), "--name", "t"],
                 ["table", "--rows", str(out / "rows" / "t.jsonl")],
                 ["table", "--results-dir", str(store.root), "--view", "efficiency"],
                 ["table", "--results-dir", str(store.root), "--view", "cross_arch"]):
        r = torchless_cli(*args)
        assert r.returncode == 0, r.stderr
        if "--view" not in args:
            assert r.stdout.strip() == expected.strip()
    assert (out / "t.md").read_text().strip() == expected.strip()
    lines = [json.loads(x) for x in (out / "rows" / "t.jsonl").read_text().splitlines()]
    assert len([x for x in lines if "row" in x]) == 3


def test_committed_leaderboards_regenerate_from_their_rows(tmp_path):
    """Every committed table that has its rows file rebuilds byte-identical from it."""
    from pathlib import Path

    from typer.testing import CliRunner

    from benchmark.cli import app

    board = Path(__file__).resolve().parent.parent / "results" / "leaderboards"
    rows_files = sorted((board / "rows").glob("*.jsonl"))
    if not rows_files:
        pytest.skip("no committed rows files")
    for f in rows_files:
        views = [("leaderboard", f.stem)]
        for v in ("efficiency", "cross_arch", "precision", "engine", "paired"):
            if (board / f"{f.stem}_{v}.md").exists():
                views.append((v, f"{f.stem}_{v}"))
        for view, stem in views:
            if not (board / f"{stem}.md").exists():
                continue
            r = CliRunner().invoke(app, ["table", "--rows", str(f), "--view", view, "--out", str(tmp_path)])
            assert r.exit_code == 0, r.output
            for ext in ("md", "csv", "tex"):
                if (board / f"{stem}.{ext}").exists():
                    assert ((tmp_path / f"{stem}.{ext}").read_text()
                            == (board / f"{stem}.{ext}").read_text()), (stem, ext)
