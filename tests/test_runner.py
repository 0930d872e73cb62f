from pathlib import Path

import pytest
import torch

from benchmark.api import CoresetSelector, Selection, register_method, METHODS
from benchmark.grid import GridSpec, expand, load_grid
from benchmark.runner import run_cells
from benchmark.store import ResultStore

FIX = Path(__file__).parent / "fixtures"


def _cells(**kw):
    return expand(load_grid(FIX / "tiny.yaml"), **kw)


def test_run_writes_rows_then_skips_finished(store_dir):
    store = ResultStore(store_dir)
    cells = _cells()
    out = run_cells(cells, store)
    assert [o.status for o in out] == ["finished"] * 3
    rows = list(store.iter_rows())
    assert len(rows) == 3
    r = rows[0]
    for k in ("cell_hash", "budget", "protocol", "protocol_config", "resolved_config", "budget_config", "git_commit", "set_seed", "model_seed", "test_acc", "torch_version", "hardware", "dbench_version"):
        assert k in r
    assert {r["budget"] for r in rows} == {"smoke"}
    synsets = list((store_dir / "synsets").glob("*.safetensors"))
    assert len(synsets) == 2  # random ipc1, ipc2 (full stores none)
    before = {p: p.stat().st_mtime_ns for p in store_dir.rglob("*.json")}
    again = run_cells(cells, store)
    assert [o.status for o in again] == ["skipped"] * 3
    assert before == {p: p.stat().st_mtime_ns for p in store_dir.rglob("*.json")}  # nothing rewritten
    assert not list(store_dir.rglob(".tmp-*"))


def test_killed_cell_resumes_without_retraining_finished_models(store_dir, monkeypatch):
    g = load_grid(FIX / "tiny.yaml")
    cells = expand(g.model_copy(update={"methods": g.methods[:1], "ipc": [1], "budget_overrides": {"num_eval": 3}}))
    cell = cells[0]
    assert cell.num_eval == 2
    store = ResultStore(store_dir)
    import benchmark.evaluate as E

    calls = []
    real_train = E.train_model

    def dying(*a, **kw):
        calls.append(a[6])  # model index
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_train(*a, **kw)

    monkeypatch.setattr(E, "train_model", dying)
    with pytest.raises(KeyboardInterrupt):
        run_cells([cell], store)
    assert store.model_indices(cell.hash) == {0} and not store.is_finished(cell.hash, cell.num_eval)
    monkeypatch.setattr(E, "train_model", real_train)
    trained = []
    monkeypatch.setattr(E, "train_model", lambda *a, **kw: (trained.append(a[6]), real_train(*a, **kw))[1])
    out = run_cells([cell], store)
    assert out[0].status == "finished" and out[0].n == 2 and trained == [1]


class _Broken(CoresetSelector):
    key = "broken_for_test"
    display_name = "Broken"

    def select(self, real, ipc):
        return Selection(torch.zeros(ipc * real.num_classes, dtype=torch.long))  # duplicates


def test_failing_cell_is_recorded_and_grid_continues(store_dir):
    if "broken_for_test" not in METHODS:
        register_method(_Broken)
    g = GridSpec(name="t", methods=["broken_for_test", "random"], datasets=["digits"], ipc=[1], budget="smoke")
    out = run_cells(expand(g), ResultStore(store_dir))
    assert [o.status for o in out] == ["failed", "finished"]
    assert "duplicate indices" in out[0].error
    assert list((store_dir / "failures").glob("*.json"))


def test_contract_ipc_larger_than_class(store_dir):
    g = GridSpec(name="t", methods=["random"], datasets=["digits"], ipc=[500], budget="smoke")
    out = run_cells(expand(g), ResultStore(store_dir))
    assert out[0].status == "failed" and "larger than the smallest class" in out[0].error


def test_checkpoint_roundtrip_is_atomic(tmp_path):
    from benchmark.api import RunContext
    from benchmark.budgets import BUDGETS
    from benchmark.data import get_info

    ctx = RunContext(device=torch.device("cpu"), seed=0, arch="ConvNet", info=get_info("digits"),
                     budget=BUDGETS.get("smoke"), workdir=tmp_path / "w")
    assert ctx.load_checkpoint() is None
    ctx.save_checkpoint({"it": 3, "x": torch.ones(2)})
    st = ctx.load_checkpoint()
    assert st["it"] == 3 and torch.equal(st["x"], torch.ones(2))
    assert [p.name for p in (tmp_path / "w").iterdir()] == ["checkpoint.pt"]
    ctx.checkpoint_path.write_bytes(b"garbage")
    from benchmark.errors import ArtifactError
    with pytest.raises(ArtifactError, match="corrupt checkpoint"):
        ctx.load_checkpoint()
