from pathlib import Path

import pytest
import torch

from benchmark.api import METHODS, CoresetSelector, Selection, register_method
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
    for k in ("cell_hash", "budget", "protocol", "protocol_config", "resolved_config", "budget_config", "git_commit",
              "set_seed", "model_seed", "test_acc", "torch_version", "hardware", "dbench_version"):
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
    # engine loop: one network at a time, killed after the first (tests/test_stacked.py: the stacked engine)
    cells = expand(g.model_copy(update={"methods": g.methods[:1], "ipc": [1], "budget_overrides": {"num_eval": 3},
                                        "engine": "loop"}))
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


# ------------------------------------------------------------------- claims (leases)


def test_claims_one_holder_release_expiry_and_takeover(tmp_path):
    import time

    from benchmark.claims import Claims

    a, b = Claims(tmp_path / "claims", ttl=1.0), Claims(tmp_path / "claims", ttl=1.0)
    lease = a.try_acquire("cell-x")
    assert lease is not None and b.try_acquire("cell-x") is None
    assert b.holder("cell-x").owner == a.owner
    lease.release()
    assert a.holder("cell-x") is None
    held = b.try_acquire("cell-x")  # never renewed: expires after the ttl
    assert held is not None and a.try_acquire("cell-x") is None
    time.sleep(1.1)
    taken = a.try_acquire("cell-x")
    assert taken is not None and not b.renew("cell-x")  # b lost it; renewing says so
    held.release()  # releasing a lease someone else holds now leaves theirs alone
    assert a.holder("cell-x").owner == a.owner
    with a.try_acquire("cell-y") as renewed:  # renewed in the background while held
        time.sleep(1.6)
        assert b.try_acquire("cell-y") is None and not renewed.lost
    assert b.try_acquire("cell-y") is not None


def test_claims_of_a_dead_process_are_taken_over_at_once(tmp_path):
    import json
    import socket
    import subprocess
    import sys
    import time

    from benchmark.claims import Claims

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    c = Claims(tmp_path)
    c.path("k").write_text(json.dumps({"key": "k", "owner": "gone", "host": socket.gethostname(), "pid": dead.pid,
                                       "start": None, "acquired": time.time(), "expires": time.time() + 3600}))
    assert c.holder("k") is None and c.try_acquire("k") is not None
    # another host's lease cannot be checked: it holds until it expires
    c.path("j").write_text(json.dumps({"key": "j", "owner": "far", "host": "elsewhere.invalid", "pid": 1,
                                       "start": None, "acquired": time.time(), "expires": time.time() + 3600}))
    assert c.try_acquire("j") is None
    c.path("u").write_text("{half a lease")  # unreadable: held until ttl after its last change
    assert c.try_acquire("u") is None


def test_run_cells_leaves_a_held_cell_to_its_holder_and_waits(store_dir):
    import threading
    import time

    from benchmark.claims import Claims

    store = ResultStore(store_dir)
    cells = _cells(only={"method": {"random"}})
    other = Claims(store_dir / "claims")  # another live worker holds the first cell
    lease = other.try_acquire(f"cell-{cells[0].hash}").start()
    done = []
    t = threading.Thread(target=lambda: done.extend(run_cells(cells, store, poll_s=0.1)))
    t.start()
    deadline = time.monotonic() + 120
    while not store.is_finished(cells[1].hash, cells[1].num_eval) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)
    assert store.model_indices(cells[0].hash) == set() and t.is_alive()  # not computed, waited for
    lease.release()
    t.join(timeout=120)
    assert [o.status for o in done] == ["finished", "finished"]


def test_rows_are_never_written_twice(store_dir):
    store = ResultStore(store_dir)
    assert store.write_row("abc", 0, {"v": 1}) is True
    assert store.write_row("abc", 0, {"v": 2}) is False
    p = store_dir / "rows" / "abc" / "m0.json"
    assert p.read_text() == '{"v": 1}' and not list(p.parent.glob(".tmp-*"))
    from benchmark.store import atomic_write_text

    assert atomic_write_text(p, '{"v": 3}', replace=False) is False and p.read_text() == '{"v": 1}'


def test_stale_checkpoints_are_removed_once_their_set_is_saved(store_dir):
    g = load_grid(FIX / "tiny.yaml")
    (cell,) = expand(g.model_copy(update={"methods": g.methods[:1], "ipc": [1]}), only={"exp": {"0"}})
    store = ResultStore(store_dir)
    work = store.workdir(cell.synset_hash)
    work.mkdir(parents=True)
    (work / "checkpoint.pt").write_bytes(b"old")
    (out,) = run_cells([cell], store)
    assert out.status == "finished" and store.synset_path(cell.synset_hash).exists() and not work.exists()
