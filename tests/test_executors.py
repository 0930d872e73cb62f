"""Executors: the local pool (fake GPU ids, real CPU workers), Ray (a real local Ray), the
SLURM executor's fast path through submitit's local/debug executors, environment checks and
MLflow logging after the workers (tests/test_slurm.py runs a real one-node SLURM)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from benchmark.executors import (
    LocalPoolExecutor,
    RayExecutor,
    SlurmExecutor,
    cell_states,
    collect,
    make_executor,
    parse_time,
    pool_slots,
    run_grid,
)
from benchmark.grid import GridSpec, expand
from benchmark.runner import RunOptions, run_cells
from benchmark.store import ResultStore
from benchmark.worker import EnvironmentMismatch, Submission, check_environment, run_one

SMALL = GridSpec(name="exec_small", methods=["random", "kcenter"], datasets=["digits"], ipc=[1, 2], budget="smoke",
                 num_exp=1, num_eval=1)
# one cell, 3 networks of a few seconds each: long enough to kill its worker between two rows
# engine loop: the kill tests stop a worker after its first network's row, so networks must be
# written one at a time (the stacked engine writes a cell's networks together; its resume is
# tested in tests/test_stacked.py)
KILL = GridSpec(name="exec_kill", methods=["random"], datasets=["digits"], ipc=[10], budget="smoke",
                budget_overrides={"num_eval": 3, "eval_epochs": 20, "eval_max_steps": 20}, num_exp=1, num_eval=3,
                engine="loop")
OPTS = RunOptions(device="cpu")


def accs(store: ResultStore) -> dict[tuple[str, int], float]:
    return {(r["cell_hash"], r["model_index"]): r["test_acc"] for r in store.iter_rows()}


def row_files(store: ResultStore) -> list[str]:
    return sorted(str(p.relative_to(store.root)) for p in (store.root / "rows").rglob("m*.json"))


@pytest.fixture(scope="module")
def serial_small(tmp_path_factory):
    """The small grid run serially in this process: the reference rows."""
    store = ResultStore(tmp_path_factory.mktemp("serial") / "store")
    outs = run_cells(expand(SMALL), store, opts=OPTS)
    assert [o.status for o in outs] == ["finished"] * 4
    return accs(store)


# ------------------------------------------------------------------ interface


def test_pool_slots_spread_over_gpus():
    assert pool_slots(["0", "1", "2", "3"], 2) == ["0", "1", "2", "3"] * 2
    assert pool_slots(None, jobs=3) == [None] * 3
    assert parse_time("04:00:00") == 240 and parse_time("90") == 90 and parse_time("1-00:30:00") == 1470
    assert parse_time("00:00:30") == 1


def test_unknown_executor_is_one_line():
    from benchmark.errors import ConfigError

    with pytest.raises(ConfigError, match="--executor nope: use serial, local, ray, slurm"):
        make_executor("nope")


def test_missing_packages_name_the_extra(monkeypatch):
    from benchmark.executors import ExecutorError

    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(ExecutorError, match=r"pip install 'dbench\[ray\]'"):
        make_executor("ray")
    with pytest.raises(ExecutorError, match=r"pip install 'dbench\[slurm\]'"):
        make_executor("slurm")


def test_worker_refuses_another_environment(tmp_path):
    cells = expand(SMALL)[:1]
    sub = Submission.make(cells, tmp_path / "store")
    check_environment(sub.env)  # the same process: accepted
    sub.env = {**sub.env, "git_commit": "0123abc", "torch": "1.0"}
    with pytest.raises(EnvironmentMismatch) as e:
        run_one(sub, cells[0].hash)
    msg = str(e.value)
    assert "\n" not in msg and "git_commit '" in msg and "(submitted with '0123abc')" in msg
    assert not (tmp_path / "store" / "rows").exists()  # refused before any work
    # on the command line: one line, exit code 2
    path = sub.save()
    r = subprocess.run([sys.executable, "-m", "benchmark.worker", str(path), cells[0].hash], capture_output=True,
                       text=True)
    assert r.returncode == 2 and r.stderr.startswith("error: worker on ") and r.stderr.count("\n") == 1


# ----------------------------------------------------------------- local pool

RECORD_ENV = r"""
import json, os, sys, time
sub, h, out = sys.argv[1:4]
rec = {"cell": h, "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid(), "t0": time.time()}
time.sleep(0.5)
rec["t1"] = time.time()
os.makedirs(os.path.dirname(out), exist_ok=True)
open(out, "w").write(json.dumps({"status": "finished", "acc_mean": 1.0, "acc_std": 0.0, "n": 1, "error": "",
                                 "cell_hash": h, "env": rec}))
"""


def test_local_pool_gives_each_job_only_its_gpu(tmp_path):
    cells = expand(GridSpec(name="g", methods=["random", "kcenter", "herding"], datasets=["digits"], ipc=[1, 2, 3],
                            budget="smoke", num_exp=1, num_eval=1))
    assert len(cells) == 9
    ex = LocalPoolExecutor(gpus=["0", "1", "2", "3"], jobs_per_gpu=2, poll_s=0.05,
                           command=lambda sub, h, out: [sys.executable, "-c", RECORD_ENV, str(sub), h, str(out)])
    store = ResultStore(tmp_path / "store")
    outs = ex.run(cells, store, opts=OPTS)
    assert [o.status for o in outs] == ["finished"] * 9
    recs = [json.loads(p.read_text())["env"] for p in store.root.glob("executors/*/outcomes/*.json")]
    assert len(recs) == 9
    assert all(r["cuda"] in {"0", "1", "2", "3"} for r in recs)  # one GPU id each, never a list
    assert sorted(g for _, g in ex.assignments[:8]) == ["0", "0", "1", "1", "2", "2", "3", "3"]
    assert {r["cell"]: r["cuda"] for r in recs} == dict(ex.assignments)
    # never more than 2 jobs on one GPU and 8 in all at the same moment
    events = sorted([(r["t0"], 1, r["cuda"]) for r in recs] + [(r["t1"], -1, r["cuda"]) for r in recs])
    per, total = {}, 0
    for _, d, g in events:
        per[g] = per.get(g, 0) + d
        total += d
        assert per[g] <= 2 and total <= 8


def test_local_pool_cpu_workers_match_serial(tmp_path, serial_small):
    store = ResultStore(tmp_path / "store")
    from benchmark.tracking import make_tracker

    tracker = make_tracker(None, store.root)
    seen = []
    outs = run_grid(expand(SMALL), store, LocalPoolExecutor(jobs=2), tracker=tracker, opts=OPTS,
                    on_outcome=lambda o: seen.append(o.status))
    assert [o.status for o in outs] == ["finished"] * 4 and len(seen) == 4
    assert accs(store) == serial_small
    # MLflow: one finished run per cell, logged by the driver from the rows; collecting again adds none
    exp = tracker.client.get_experiment_by_name("exec_small")
    runs = tracker.client.search_runs([exp.experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 4
    assert {r.data.tags["dbench.cell_hash"] for r in runs} == {h for h, _ in serial_small}
    assert all(r.data.metrics["test_acc_mean"] == serial_small[(r.data.tags["dbench.cell_hash"], 0)] for r in runs)
    assert collect(expand(SMALL), store, tracker) == 0
    # a second run: everything is done, no worker is started
    again = LocalPoolExecutor(jobs=2)
    assert [o.status for o in again.run(expand(SMALL), store, opts=OPTS)] == ["skipped"] * 4
    assert again.assignments == []


def test_local_pool_restarts_a_killed_worker(tmp_path):
    store = ResultStore(tmp_path / "store")
    pids = tmp_path / "pids"
    cell = expand(KILL)[0]
    os.environ["DBENCH_WORKER_PID_DIR"] = str(pids)
    try:
        killer = _kill_after_first_row(store, cell, pids)
        outs = LocalPoolExecutor(jobs=1, poll_s=0.05).run([cell], store, opts=OPTS)
    finally:
        del os.environ["DBENCH_WORKER_PID_DIR"]
    killer.join()
    assert killer.killed, "the worker finished before it could be killed"
    assert outs[0].status == "finished" and outs[0].n == 3
    assert row_files(store) == [f"rows/{cell.hash}/m{k}.json" for k in range(3)]


def _kill_after_first_row(store: ResultStore, cell, pids: Path) -> threading.Thread:
    """A thread that SIGKILLs the worker of ``cell`` once its first row exists (the second not)."""

    def watch():
        t.killed = None
        end = time.time() + 600  # a Ray start on a loaded 2-core machine can take minutes
        while time.time() < end:
            rows = store.model_indices(cell.hash)
            pidfile = pids / f"{cell.hash}.pid"
            if rows == {0} and pidfile.exists():
                t.killed = int(pidfile.read_text())
                t.first_row = (store.root / "rows" / cell.hash / "m0.json").read_text()
                os.kill(t.killed, signal.SIGKILL)
                return
            if len(rows) > 1:
                return
            time.sleep(0.02)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


# ------------------------------------------------------------------------- ray


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"DBENCH_NO_DOWNLOAD": "1"}})
    yield ray
    ray.shutdown()


def test_ray_two_workers_match_serial(tmp_path, ray_local, serial_small):
    store = ResultStore(tmp_path / "store")
    outs = RayExecutor(cpus_per_cell=1).run(expand(SMALL), store, opts=OPTS)
    assert [o.status for o in outs] == ["finished"] * 4
    assert accs(store) == serial_small
    assert len(row_files(store)) == 4


def test_ray_retries_a_killed_worker_from_its_rows(tmp_path, ray_local):
    store = ResultStore(tmp_path / "store")
    pids = tmp_path / "pids"
    cell = expand(KILL)[0]
    ex = RayExecutor(cpus_per_cell=1, gpus_per_cell=0, max_retries=2)
    os.environ["DBENCH_WORKER_PID_DIR"] = str(pids)  # copied into the tasks' environment below
    try:
        killer = _kill_after_first_row(store, cell, pids)
        outs = ex.run([cell], store, opts=OPTS)
    finally:
        del os.environ["DBENCH_WORKER_PID_DIR"]
    killer.join()
    assert killer.killed, "the worker finished before it could be killed"
    assert outs[0].status == "finished" and outs[0].n == 3
    assert row_files(store) == [f"rows/{cell.hash}/m{k}.json" for k in range(3)]
    assert (store.root / "rows" / cell.hash / "m0.json").read_text() == killer.first_row  # kept, not redone
    assert int((pids / f"{cell.hash}.pid").read_text()) != killer.killed  # the retry ran in another process


# ---------------------------------------------------------- slurm (no scheduler)


def test_slurm_fast_path_with_submitit_local_executor(tmp_path, serial_small):
    pytest.importorskip("submitit")
    store = ResultStore(tmp_path / "store")
    cells = expand(SMALL)
    ex = SlurmExecutor(cluster="local", max_parallel=2, wait=True, poll_s=0.2, extra={"timeout_min": 10})
    outs = ex.run(cells, store, opts=OPTS)
    assert [o.status for o in outs] == ["finished"] * 4
    assert accs(store) == serial_small
    assert [s for _, s, _ in cell_states(cells, store, {})] == ["done"] * 4
    # resubmitting submits nothing: every cell is done
    assert ex.submit(cells, store, OPTS) == ([], cells)


def test_slurm_fast_path_debug_executor_resubmits_only_what_is_not_done(tmp_path, serial_small):
    pytest.importorskip("submitit")
    store = ResultStore(tmp_path / "store")
    cells = expand(SMALL)
    run_cells(cells[:1], store, opts=OPTS)  # one cell done beforehand
    ex = SlurmExecutor(cluster="debug", wait=False)
    assert ex.run(cells, store, opts=OPTS) is None  # submitted, returns at once
    recs = {p.stem for p in (store.root / "executors" / "jobs").glob("*.json")}
    assert recs == {c.hash for c in cells[1:]}
    # the debug executor runs a job when its result is asked for
    outs = ex.follow(cells, store, submitted=cells[1:])
    assert [o.status for o in outs] == ["finished"] * 4
    assert accs(store) == serial_small


def test_slurm_clear_errors(monkeypatch, tmp_path):
    pytest.importorskip("submitit")
    from benchmark.executors import ExecutorError, check_slurm

    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    with pytest.raises(ExecutorError, match="no SLURM on this machine \\(sbatch not found"):
        check_slurm("debug")
    fake = tmp_path / "sinfo"
    fake.write_text("#!/bin/sh\necho 'debug*'\necho gpu\n")
    fake.chmod(0o755)
    (tmp_path / "sbatch").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "sbatch").chmod(0o755)
    check_slurm("gpu")
    with pytest.raises(ExecutorError, match="--slurm-partition nope: no such partition \\(sinfo lists: debug, gpu\\)"):
        check_slurm("nope")


def test_run_help_groups_executor_options():
    from typer.testing import CliRunner

    from benchmark.cli import app

    r = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert r.exit_code == 0
    assert "Executors (where the cells run)" in r.output
    for opt in ("--executor", "--gpus", "--jobs-per-gpu", "--ray-address", "--gpus-per-cell", "--slurm-partition",
                "--max-parallel", "--wait"):
        assert opt in r.output


# ------------------------------------------------- tune and continual as worker jobs

TUNE = {"name": "exec_tune", "method": {"name": "dm", "preset": "official", "params": {"iterations": 2}},
        "dataset": "digits", "ipc": 1, "protocol": "dm", "budget": "smoke", "num_eval": 1,
        "validation_per_class": 10, "trials": 3, "sampler": "random",
        "search": {"lr_img": {"low": 0.1, "high": 10.0, "log": True}, "batch_real": {"choices": [8, 16]}}}
CONTINUAL = {"name": "exec_cl", "methods": ["random", "herding"], "dataset": "digits", "steps": [2], "ipc": 1,
             "orders": [0], "protocol": "dsa", "budget": "smoke", "num_eval": 1}


def test_tune_with_two_local_workers_runs_each_trial_once(tmp_path):
    import optuna

    from benchmark.progress import NullProgress
    from benchmark.tracking import NullTracker
    from benchmark.tune import TuneSpec, run_tune

    spec = TuneSpec.model_validate(TUNE)
    ex = LocalPoolExecutor(jobs=2, poll_s=0.05)
    res = run_tune(spec, tmp_path, NullTracker(), OPTS, NullProgress(), executor=ex, workers=2)
    assert sorted(k for k, _ in ex.assignments) == ["worker0", "worker1"]  # both workers ran
    assert (tmp_path / "tune" / "optuna.journal").exists() and not (tmp_path / "tune" / "optuna.db").exists()
    trials = res.study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3  # exactly 3, none failed or extra
    assert sorted(t.number for t in trials) == [0, 1, 2]
    hashes = [t.user_attrs["cell_hash"] for t in trials]
    assert len(set(hashes)) == 3 and len({tuple(sorted(t.params.items())) for t in trials}) == 3
    # one cell per trial, each evaluated once: one row per network, the value is the row's accuracy
    rows = list(res.store.iter_rows())
    assert sorted(r["cell_hash"] for r in rows) == sorted(hashes)
    by_hash = {r["cell_hash"]: r for r in rows}
    assert all(t.value == pytest.approx(by_hash[t.user_attrs["cell_hash"]]["val_acc"]) for t in trials)
    assert {r["trial"] for r in rows} == {0, 1, 2}
    assert res.best_value == max(t.value for t in trials)
    # the same command again: nothing is run, no worker started; a serial rerun continues the journal study
    again = LocalPoolExecutor(jobs=2)
    assert len(run_tune(spec, tmp_path, NullTracker(), OPTS, NullProgress(), executor=again).study.trials) == 3
    assert again.assignments == []
    serial = run_tune(spec, tmp_path, NullTracker(), OPTS, NullProgress())
    assert len(serial.study.trials) == 3 and serial.best_value == res.best_value


def test_continual_with_local_workers_matches_serial(tmp_path):
    from benchmark.continual import ContinualSpec, continual_jobs, run_continual
    from benchmark.tracking import NullTracker

    spec = ContinualSpec.model_validate(CONTINUAL)
    serial = run_continual(spec, ResultStore(tmp_path / "serial"), NullTracker(), device="cpu")
    store = ResultStore(tmp_path / "pool")
    ex = LocalPoolExecutor(jobs=2, poll_s=0.05)
    rows = run_continual(spec, store, NullTracker(), device="cpu", executor=ex)
    assert sorted(k for k, _ in ex.assignments) == sorted(k for k, *_ in continual_jobs(spec)) == \
        ["0-random-T2-o0", "1-herding-T2-o0"]
    key = lambda rs: {(r["cell_hash"], r["model_index"]): r["test_acc"] for r in rs}  # noqa: E731
    assert len(rows) == 4 and key(rows) == key(serial)
    assert len(list((store.root / "rows").rglob("m*.json"))) == 4  # every row written once
    assert not list((store.root / "claims").glob("*.lease"))  # job leases released
