"""Continual learning (DM's GDumb protocol): class orders, per-step memory, resume, table, CLI."""

from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

import benchmark.continual as cl
from benchmark.cli import app
from benchmark.continual import (
    ContinualSpec,
    class_order,
    class_subset,
    continual_table,
    load_continual,
    run_continual,
    seen_test,
    step_classes,
)
from benchmark.data import load_dataset
from benchmark.errors import ConfigError
from benchmark.store import ResultStore
from benchmark.tracking import NullTracker

SPEC = {"name": "t_cl", "methods": ["random", {"name": "dm", "preset": "official", "params": {"batch_real": 16}}],
        "dataset": "digits", "steps": [2], "ipc": 2, "orders": [0], "protocol": "dsa", "budget": "smoke", "num_eval": 1}


def test_class_order_is_the_reference_permutation_without_global_rng():
    state = torch.random.get_rng_state()
    import numpy as np

    np_state = np.random.get_state()[1].copy()
    order = class_order(100, 0)
    assert order[:10] == [26, 86, 2, 55, 75, 93, 16, 73, 54, 95]  # np.random.seed(0); permutation(100)
    # IDC's shipped cifar100_order.pkl: the seed-0 order with each 20-class block sorted
    assert sorted(step_classes(order, 5)[0]) == [2, 7, 8, 13, 16, 22, 24, 26, 30, 33, 53, 54, 55, 73, 75, 78, 86, 92,
                                                 93, 95]
    assert all(len(b) == 10 for b in step_classes(order, 10))
    assert torch.equal(state, torch.random.get_rng_state()) and (np.random.get_state()[1] == np_state).all()


def test_class_subset_relabels_and_seen_test_keeps_labels():
    real = load_dataset("digits")
    sub = class_subset(real, [7, 3])
    assert sub.num_classes == 2 and set(sub.labels.tolist()) == {0, 1}
    assert len(sub) == int((real.labels == 7).sum() + (real.labels == 3).sum())
    assert torch.equal(sub.images[sub.labels == 0][0], real.images[real.class_indices[7][0]])
    test = load_dataset("digits", False)
    seen = seen_test(test, [7, 3])
    assert set(seen.labels.tolist()) == {3, 7} and seen.num_classes == 10


def test_each_step_trains_its_own_feature_extractor():
    """Equal-sized class subsets (every CIFAR-100 step) must not share a cached extractor."""
    from benchmark.features import ExtractorSpec, training_hash

    real = load_dataset("digits")
    spec = ExtractorSpec()
    a, b = class_subset(real, [0, 1]), class_subset(real, [2, 3])
    b = type(b)(b.info, b.images[:len(a)], b.labels[:len(a)], b.split, b.subset)  # same size as a
    assert training_hash(spec, a, 5) != training_hash(spec, b, 5)
    assert training_hash(spec, real, 5) == training_hash(spec, load_dataset("digits"), 5)


def test_run_builds_memory_per_step_resumes_and_tabulates(tmp_path, monkeypatch):
    spec = ContinualSpec.model_validate(SPEC)
    store = ResultStore(tmp_path)
    calls = []
    real_build = cl._build_piece

    def spy(m, real, classes, *a, **k):
        calls.append((m.name, tuple(classes)))
        piece = real_build(m, real, classes, *a, **k)
        assert set(piece.labels.tolist()) == set(classes)  # original class ids in the memory
        return piece

    monkeypatch.setattr(cl, "_build_piece", spy)
    rows = run_continual(spec, store, NullTracker(), device="cpu")
    blocks = step_classes(class_order(10, 0), 2)
    assert calls == [(n, tuple(b)) for n in ("random", "dm") for b in blocks]  # each step sees only its classes
    assert len(rows) == 4 and {(r["method_label"], r["step"]) for r in rows} == {
        (m, t) for m in ("random", "dm.official") for t in (1, 2)}
    assert {r["params_label"] for r in rows} == {"", "batch_real=16"}
    assert {r["resolved_config"].get("lr_img") for r in rows if r["method"] == "dm"} == {1.0}
    assert {r["n_memory"] for r in rows if r["step"] == 2} == {2 * 10}  # memory grows: 5 + 5 classes x ipc 2
    assert {r["classes_seen"] for r in rows if r["step"] == 1} == {5}
    # a rerun builds nothing and trains nothing
    calls.clear()
    monkeypatch.setattr("benchmark.plan.evaluate", lambda *a, **k: pytest.fail("re-evaluated a finished step"))
    again = run_continual(spec, store, NullTracker(), device="cpu")
    assert calls == [] and sorted(r["test_acc"] for r in again) == sorted(r["test_acc"] for r in rows)
    table = continual_table(rows)
    assert list(table.columns[:3]) == ["dataset", "method", "steps"]
    assert {"step 1", "step 2", "final", "paper final"} <= set(table.columns)
    assert set(table.method) == {"Random", "DM [official] (batch_real=16)"}


def test_published_final_step_is_shown_beside_ours():
    rows = [dict(dataset_display="CIFAR-100", dataset="cifar100", method="dm", method_label="dm.official",
                 method_display="DM", method_preset="official", params_label="", steps=5, ipc=20, budget="paper",
                 protocol="dsa", order=0, step=5, test_acc=33.0)]
    table = continual_table(rows)
    assert table["paper final"].iloc[0] == "34.4" and table["final"].iloc[0].startswith("33.0")


@pytest.mark.parametrize("change, match", [
    ({"steps": [3]}, "does not divide"),
    ({"methods": ["full"]}, "not a memory builder"),
    ({"methods": ["dmm"]}, "dmm"),
    ({"orders": []}, "at least one"),
    ({"stepz": [2]}, "stepz"),
])
def test_bad_continual_files_are_one_line(tmp_path, change, match):
    p = tmp_path / "x.yaml"
    p.write_text(yaml.safe_dump({**SPEC, **change}))
    with pytest.raises(ConfigError, match=match) as e:
        load_continual(p)
    assert "\n" not in str(e.value)


def test_cli_continual(tmp_path):
    p = tmp_path / "cl.yaml"
    p.write_text(yaml.safe_dump({**SPEC, "methods": ["random"]}))
    res = CliRunner().invoke(app, ["continual", str(p), "--results-dir", str(tmp_path / "r"), "--no-mlflow",
                                   "--device", "cpu", "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    csv = pd.read_csv(tmp_path / "out" / "t_cl.csv")
    assert len(csv) == 2 and set(csv.step) == {1, 2}
    assert (tmp_path / "r" / "continual" / "t_cl").is_dir()


def test_shipped_continual_files_load():
    root = Path(__file__).parent.parent / "tables" / "continual"
    for p in sorted(root.glob("*.yaml")):
        load_continual(p)


def test_continual_view_from_rows_alone(tmp_path):
    """`dbench table --view continual` rebuilds the per-step table from stored rows."""
    from typer.testing import CliRunner

    from benchmark.cli import app
    from benchmark.store import ResultStore

    store = ResultStore(tmp_path / "cl")
    base = dict(schema=2, task="continual", dataset_display="CIFAR-100", dataset="cifar100", method="dm",
                method_label="dm.official", method_display="DM", method_preset="official", params_label="",
                steps=5, ipc=20, budget="paper", protocol="dsa", exp=0, arch_eval="ConvNet", arch_distill="ConvNet")
    for step, acc in ((1, 60.0), (5, 33.0)):
        store.write_row(f"h{step}", 0, dict(base, cell_hash=f"h{step}", order=0, step=step, model_index=0,
                                            test_acc=acc))
    r = CliRunner().invoke(app, ["table", "--view", "continual", "--results-dir", str(store.root)])
    assert r.exit_code == 0, r.output
    assert "step 5" in r.output and "33.0" in r.output and "34.4" in r.output  # published final beside ours
