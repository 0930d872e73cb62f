"""`dbench run --executor slurm` against a real one-node SLURM on localhost (munged, slurmctld,
slurmd started by the test, state under a temporary folder). Marked `cluster`; skipped where
the SLURM/munge binaries are missing (CI installs slurm-wlm and munge) or not root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import slurm_local  # noqa: E402

pytestmark = [pytest.mark.cluster, pytest.mark.skipif(not slurm_local.available(),
                                                       reason="slurmctld/slurmd/munged not installed (or not root)")]

DBENCH = str(Path(sys.executable).parent / "dbench")
SMALL = """name: exec_small
methods: [random, kcenter]
datasets: [digits]
ipc: [1, 2]
budget: smoke
num_exp: 1
num_eval: 1
"""
KILL = """name: exec_kill
methods: [random]
datasets: [digits]
ipc: [10]
budget: smoke
budget_overrides: {num_eval: 3, eval_epochs: 1000, eval_max_steps: null}
num_exp: 1
num_eval: 3
"""  # 3 networks of 1001 steps: seconds each, so the job is still running when it is cancelled


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    pytest.importorskip("submitit")
    cluster = slurm_local.LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def dbench(*args, env, timeout=240):
    return subprocess.run([DBENCH, *args], capture_output=True, text=True, env={**env, "COLUMNS": "200"},
                          timeout=timeout)


def accs(root: Path) -> dict:
    out = {}
    for p in (root / "rows").rglob("m*.json"):
        r = json.loads(p.read_text())
        out[(r["cell_hash"], r["model_index"])] = r["test_acc"]
    return out


def test_slurm_grid_equals_serial_and_resumes_after_scancel(slurm, tmp_path):
    env = {**slurm.env, "DBENCH_NO_DOWNLOAD": "1", "DBENCH_NUM_THREADS": "1"}
    grid = tmp_path / "small.yaml"
    grid.write_text(SMALL)
    serial = tmp_path / "serial"
    r = dbench("run", "--grid", str(grid), "--results-dir", str(serial), "--device", "cpu", "--no-mlflow", env=env)
    assert r.returncode == 0, r.stderr
    # clear one-line errors first
    r = dbench("run", "--grid", str(grid), "--results-dir", str(tmp_path / "x"), "--executor", "slurm",
               "--slurm-partition", "nope", env=env)
    assert r.returncode == 2 and "--slurm-partition nope: no such partition (sinfo lists: debug)" in r.stderr

    store = tmp_path / "store"
    r = dbench("run", "--grid", str(grid), "--results-dir", str(store), "--device", "cpu", "--executor", "slurm",
               "--slurm-partition", "debug", "--slurm-time", "00:10:00", "--max-parallel", "2", "--wait", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert accs(store) == accs(serial) and len(accs(store)) == 4
    r = dbench("status", "--grid", str(grid), "--results-dir", str(store), env=env)
    assert "done 4" in r.stdout, r.stdout
    # MLflow was written by the driver alone, once per cell
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{store}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("exec_small").experiment_id])
    assert sorted(x.info.status for x in runs) == ["FINISHED"] * 4

    # scancel of a running job, then `dbench run` again: the grid completes, nothing lost or duplicated
    kgrid = tmp_path / "kill.yaml"
    kgrid.write_text(KILL)
    kstore = tmp_path / "kstore"
    r = dbench("run", "--grid", str(kgrid), "--results-dir", str(kstore), "--device", "cpu", "--executor", "slurm",
               "--slurm-partition", "debug", env=env)
    assert r.returncode == 0 and "submitted 1 cell(s)" in r.stdout, r.stdout + r.stderr
    rows = next(iter((kstore / "rows").glob("*")), None) if (kstore / "rows").exists() else None
    end = time.time() + 300  # a loaded machine may take minutes to start the job
    while time.time() < end:
        rows = next(iter((kstore / "rows").glob("*")), None) if (kstore / "rows").exists() else None
        if rows is not None and (rows / "m0.json").exists():
            break
        time.sleep(0.1)
    assert rows is not None and (rows / "m0.json").exists()
    first = (rows / "m0.json").read_text()
    r = dbench("cancel", "--grid", str(kgrid), "--results-dir", str(kstore), env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    if "cancelled 1 job(s)" not in r.stdout:  # a very fast machine finished the cell first
        assert "nothing to cancel" in r.stdout and len(list(rows.glob("m*.json"))) == 3, r.stdout
    time.sleep(2)
    done_before = len(list(rows.glob("m*.json")))
    r = dbench("status", "--grid", str(kgrid), "--results-dir", str(kstore), env=env)
    assert r.returncode == 0
    if done_before < 3:
        assert "done" not in r.stdout.split("exec_kill:")[1].splitlines()[0], r.stdout
    r = dbench("run", "--grid", str(kgrid), "--results-dir", str(kstore), "--device", "cpu", "--executor", "slurm",
               "--slurm-partition", "debug", "--wait", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(p.name for p in rows.glob("m*.json")) == ["m0.json", "m1.json", "m2.json"]
    assert (rows / "m0.json").read_text() == first
    r = dbench("status", "--grid", str(kgrid), "--results-dir", str(kstore), env=env)
    assert "done 1" in r.stdout


def test_no_sbatch_is_one_line(tmp_path):
    env = {**os.environ, "PATH": str(Path(sys.executable).parent), "DBENCH_NO_DOWNLOAD": "1"}
    grid = tmp_path / "small.yaml"
    grid.write_text(SMALL)
    r = dbench("run", "--grid", str(grid), "--results-dir", str(tmp_path / "s"), "--executor", "slurm", env=env)
    assert r.returncode == 2 and "no SLURM on this machine (sbatch not found on PATH)" in r.stderr
