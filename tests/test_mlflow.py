"""MLflow: one run per cell with config params + hash, per-model accuracies, timings and artifacts."""

from pathlib import Path

from benchmark.grid import expand, load_grid
from benchmark.runner import run_cells
from benchmark.store import ResultStore
from benchmark.tracking import MlflowTracker, default_tracking_uri

FIX = Path(__file__).parent / "fixtures"


def test_one_run_per_cell_with_params_metrics_artifacts(tmp_path):
    store = ResultStore(tmp_path / "store")
    uri = default_tracking_uri(store.root)
    assert uri.startswith("sqlite:///")
    store.root.mkdir(parents=True)
    tracker = MlflowTracker(uri, store.root / "mlartifacts")
    cells = expand(load_grid(FIX / "tiny.yaml"), only={"method": {"random"}, "ipc": {"1"}})
    run_cells(cells, store, tracker)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == len(cells) == 1
    run = runs[0]
    cell = cells[0]
    assert run.data.tags["dbench.cell_hash"] == cell.hash and run.info.status == "FINISHED"
    p = run.data.params
    assert (p["method"] == "random" and p["protocol.epochs"] == "1000" and p["budget.name"] == "smoke"
            and p["cell_hash"] == cell.hash)
    m = run.data.metrics
    for k in ("test_acc_mean", "test_acc_std", "distill_time_s", "eval_time_s", "peak_rss_mib", "eval/test_acc"):
        assert k in m
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"eval_runs.csv", "synset.png", f"{cell.synset_hash}.safetensors"} <= arts


def test_sqlite_store_is_created_whole_once_by_concurrent_creators(tmp_path):
    """Creators racing on a new results directory: one builds the store under a temporary
    name and renames it; the others wait on the lock and find it complete."""
    import threading

    from benchmark.tracking import _sqlite_state, ensure_sqlite_store

    db = tmp_path / "store" / "mlflow.db"
    errors = []

    def create():
        try:
            ensure_sqlite_store(db)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=create) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and _sqlite_state(db)[0] == "complete"
    assert sorted(p.name for p in db.parent.iterdir()) == [".mlflow.db.lock", "mlflow.db"]


def test_unusable_sqlite_stores_are_one_line_errors_and_left_alone(tmp_path):
    import sqlite3

    import pytest

    from benchmark.errors import DbenchError
    from benchmark.tracking import ensure_sqlite_store

    junk = tmp_path / "junk" / "mlflow.db"
    junk.parent.mkdir()
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(DbenchError, match="unreadable .*move it away") as e:
        ensure_sqlite_store(junk)
    assert "\n" not in str(e.value) and junk.read_bytes() == b"this is not a database" * 100
    old = tmp_path / "old" / "mlflow.db"  # runs logged by another MLflow version: never moved aside
    ensure_sqlite_store(old)
    with sqlite3.connect(old) as con:
        con.execute("UPDATE alembic_version SET version_num = 'feedbeef0000'")
        con.execute("INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, "
                    "start_time, end_time, source_version, lifecycle_stage, artifact_uri, experiment_id) VALUES "
                    "('r1', 'r', 'LOCAL', '', '', 'u', 'FINISHED', 0, 0, '', 'active', '', 0)")
    with pytest.raises(DbenchError, match="feedbeef0000 of another MLflow version .*mlflow db upgrade"):
        ensure_sqlite_store(old)
    assert sorted(p.name for p in old.parent.iterdir()) == [".mlflow.db.lock", "mlflow.db"]
