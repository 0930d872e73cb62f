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
    assert p["method"] == "random" and p["protocol.epochs"] == "1000" and p["budget.name"] == "smoke" and p["cell_hash"] == cell.hash
    m = run.data.metrics
    for k in ("test_acc_mean", "test_acc_std", "distill_time_s", "eval_time_s", "peak_rss_mib", "eval/test_acc"):
        assert k in m
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"eval_runs.csv", "synset.png", f"{cell.synset_hash}.safetensors"} <= arts
