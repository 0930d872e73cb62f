"""Bad input never breaks a results directory and never yields a silently wrong number.

Each case runs as a user runs it (Typer's CliRunner on the real app, or a real ``dbench``
process) and must print one line naming the problem and the fix, exit with code 2, show no
traceback and leave the results store byte for byte as it was. Then the failure modes of
shared results directories: a run killed with ``kill -9`` during MLflow setup, two runs
started together on a new directory, the leftovers of a dead worker (RUNNING run, lease,
temporary files, checkpoint), SIGTERM in the middle of a cell, a full disk. Digits, the
``smoke`` budget and the real MLflow throughout.
"""

from __future__ import annotations

import errno
import hashlib
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from benchmark.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
GRID = {"name": "bad", "methods": ["random"], "datasets": ["digits"], "ipc": [1], "budget": "smoke", "num_eval": 1}


def _grid(folder: Path, file: str = "g.yaml", **fields) -> Path:
    p = folder / file
    p.write_text(yaml.safe_dump({**GRID, **fields}, sort_keys=False))
    return p


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _invoke(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


def _one_line_error(r) -> str:
    """Exit 2, no traceback, exactly one (non-empty) line of output, an 'error:' line."""
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and isinstance(r.exception, SystemExit), r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    return lines[0]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A results directory holding one finished cell, tracked in MLflow (sqlite)."""
    base = tmp_path_factory.mktemp("populated")
    root = base / "store"
    r = _invoke("run", "--grid", _grid(base), "--results-dir", root)
    assert r.exit_code == 0, r.output
    assert (root / "mlflow.db").exists() and len(list((root / "rows").rglob("m0.json"))) == 1
    return root


def _npz(path: Path, x_train=None, y_train=None, x_test=None, y_test=None, **extra) -> Path:
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (20, 8, 8), dtype=np.uint8) if x_train is None else x_train
    y_train = np.arange(20) % 2 if y_train is None else y_train
    x_test = rng.integers(0, 256, (6, 8, 8), dtype=np.uint8) if x_test is None else x_test
    y_test = np.arange(6) % 2 if y_test is None else y_test
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, **extra)
    return path


def _fake_mnist(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    return _npz(folder / "mnist.npz", rng.integers(0, 256, (30, 28, 28), dtype=np.uint8), np.arange(30) % 10,
                rng.integers(0, 256, (10, 28, 28), dtype=np.uint8), np.arange(10))


def _truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _user_grid(t: Path, npz: Path, **fields) -> Path:
    return _grid(t, datasets=[f"npz:{npz}"], **fields)


def _safetensors_bad_manifest(t: Path) -> Path:
    from safetensors.torch import save_file

    p = t / "bad_manifest.safetensors"
    save_file({"images": torch.zeros(10, 1, 8, 8), "labels": torch.arange(10)}, str(p),
              metadata={"dbench": "{not json"})
    return p


def _empty_pt(t: Path) -> Path:
    p = t / "empty.pt"
    torch.save({"images": torch.zeros(0, 1, 8, 8), "labels": torch.zeros(0, dtype=torch.long)}, p)
    return p


# each case: (tmp folder, populated store) -> (argv, env or None, words the one line must hold)
CASES = {
    # data files
    "garbage-mnist-checksummed": lambda t, s: (
        ["run", "--grid", _grid(t, datasets=["mnist"]), "--data-dir", t / "d", "--results-dir", s],
        {"DBENCH_VERIFY_DATA": "1"}, ["mnist.npz", "unreadable", "fresh copy"]),
    "garbage-mnist-unchecked": lambda t, s: (
        ["run", "--grid", _grid(t, datasets=["mnist"]), "--data-dir", t / "d", "--results-dir", s],
        {"DBENCH_VERIFY_DATA": "0"}, ["mnist.npz", "unreadable", "fresh copy"]),
    "truncated-mnist-checksummed": lambda t, s: (
        ["run", "--grid", _grid(t, datasets=["mnist"]), "--data-dir", _truncate(_fake_mnist(t / "d")).parent,
         "--results-dir", s], {"DBENCH_VERIFY_DATA": "1"}, ["mnist.npz", "truncated"]),
    "truncated-mnist-unchecked": lambda t, s: (
        ["run", "--grid", _grid(t, datasets=["mnist"]), "--data-dir", _truncate(_fake_mnist(t / "d")).parent,
         "--results-dir", s], {"DBENCH_VERIFY_DATA": "0"}, ["mnist.npz", "truncated"]),
    "truncated-user-npz": lambda t, s: (
        ["run", "--grid", _user_grid(t, _truncate(_npz(t / "u.npz"))), "--results-dir", s], None,
        ["u.npz", "truncated"]),
    "images-2d": lambda t, s: (
        ["run", "--grid", _user_grid(t, _npz(t / "u.npz", x_train=np.zeros((20, 64), np.uint8))), "--results-dir", s],
        None, ["u.npz", "2-D", "[N, H, W]"]),
    "images-5d": lambda t, s: (
        ["run", "--grid", _user_grid(t, _npz(t / "u.npz", x_train=np.zeros((20, 1, 1, 8, 8), np.uint8))),
         "--results-dir", s], None, ["u.npz", "5-D"]),
    "nan-pixels": lambda t, s: (
        ["validate", _user_grid(t, _npz(t / "u.npz", x_train=np.full((20, 8, 8), np.nan, np.float32)))],
        None, ["u.npz", "NaN"]),
    "float-pixels-out-of-range": lambda t, s: (
        ["validate", _user_grid(t, _npz(t / "u.npz", x_train=np.linspace(-1, 1, 1280).reshape(20, 8, 8)))],
        None, ["u.npz", "neither [0, 1] nor [0, 255]", "pixel_range"]),
    "negative-labels": lambda t, s: (
        ["validate", _user_grid(t, _npz(t / "u.npz", y_train=np.arange(20) % 2 - 1))], None,
        ["u.npz", "negative label"]),
    "string-labels": lambda t, s: (
        ["validate", _user_grid(t, _npz(t / "u.npz", y_train=np.array(["cat", "dog"] * 10)))], None,
        ["u.npz", "'cat'", "integer"]),
    "class-without-training-images": lambda t, s: (
        ["validate", _user_grid(t, _npz(t / "u.npz", y_train=(np.arange(20) % 2) * 2))], None,
        ["u.npz", "class(es) 1 ", "no training images"]),
    "test-label-not-in-training": lambda t, s: (
        ["validate", _user_grid(t, _npz(t / "u.npz", y_test=np.array([0, 1, 2, 0, 1, 5])))], None,
        ["u.npz", "2, 5", "never occur in training"]),
    "no-training-images": lambda t, s: (
        ["validate", _user_grid(t, _npz(t / "u.npz", x_train=np.zeros((0, 8, 8), np.uint8),
                                         y_train=np.zeros(0, np.int64)))], None, ["u.npz", "no images"]),
    "ipc-larger-than-a-user-class": lambda t, s: (
        ["run", "--grid", _user_grid(t, _npz(t / "u.npz", y_train=np.array([0] * 17 + [1] * 3)), ipc=[5]),
         "--results-dir", s], None, ["ipc 5", "class 1", "3 training images", "ipc <= 3"]),
    "ipc-larger-than-a-registered-class": lambda t, s: (
        ["validate", _grid(t, ipc=[1, 131])], None, ["ipc 131", "class 8", "digits", "130 training images"]),
    # grid files and options
    "grid-is-a-folder": lambda t, s: (["run", "--grid", t, "--results-dir", s], None, ["is a folder", "grid YAML"]),
    "budget-override-unknown": lambda t, s: (
        ["validate", _grid(t, budget_overrides={"bogus": 1})], None, ["bogus", "budget fields", "eval_epochs"]),
    "grid-name-too-long": lambda t, s: (
        ["run", "--grid", _grid(t, name="x" * 600), "--results-dir", s], None, ["600 characters", "shorten `name:`"]),
    "only-matches-nothing": lambda t, s: (
        ["run", "--grid", _grid(t), "--only", "ipc=7", "--results-dir", s], None, ["--only ipc=7", "matches no cell"]),
    "no-methods": lambda t, s: (["run", "--grid", _grid(t, methods=[]), "--results-dir", s], None, ["methods"]),
    # results folders
    "results-dir-is-a-file": lambda t, s: (
        ["run", "--grid", _grid(t), "--results-dir", s / "mlflow.db"], None, ["is a file", "--results-dir"]),
    "results-dir-under-a-file": lambda t, s: (
        ["run", "--grid", _grid(t), "--results-dir", s / "mlflow.db" / "sub"], None, ["is a file", "--results-dir"]),
    "results-dir-in-proc": lambda t, s: (
        ["run", "--grid", _grid(t), "--results-dir", "/proc/dbench-results"], None, ["/proc", "virtual"]),
    "table-results-dir-is-a-file": lambda t, s: (["table", "--results-dir", s / "mlflow.db"], None, ["is a file"]),
    "table-grid-results-dir-is-a-file": lambda t, s: (
        ["table", "--grid", _grid(t), "--results-dir", s / "mlflow.db"], None, ["is a file"]),
    "table-out-is-a-file": lambda t, s: (
        ["table", "--results-dir", s, "--out", s / "mlflow.db"], None, ["--out", "is a file"]),
    "table-out-under-a-file": lambda t, s: (
        ["table", "--results-dir", s, "--out", s / "mlflow.db" / "tables"], None, ["cannot write", "is a file"]),
    # devices and tracking
    "device-bogus": lambda t, s: (
        ["run", "--grid", _grid(t), "--device", "bogus", "--results-dir", s], None, ["--device bogus", "cpu"]),
    "device-cuda-without-cuda": lambda t, s: (
        ["run", "--grid", _grid(t), "--device", "cuda", "--results-dir", s], None,
        ["--device cuda", "CUDA is not available", "--device cpu"]),
    # eval / show
    "eval-num-eval-0": lambda t, s: (
        ["eval", next((s / "synsets").glob("*.safetensors")), "--dataset", "digits", "--num-eval", "0"], None,
        ["--num-eval 0", ">= 1"]),
    "eval-num-eval-negative": lambda t, s: (
        ["eval", next((s / "synsets").glob("*.safetensors")), "--dataset", "digits", "--num-eval", "-3"], None,
        ["--num-eval -3", ">= 1"]),
    "eval-manifest-not-json": lambda t, s: (
        ["eval", _safetensors_bad_manifest(t), "--dataset", "digits", "--budget", "smoke"], None,
        ["bad_manifest.safetensors", "manifest is not valid"]),
    "show-manifest-not-json": lambda t, s: (
        ["show", _safetensors_bad_manifest(t), "--out", t / "x.png"], None,
        ["bad_manifest.safetensors", "manifest is not valid"]),
    "eval-empty-set": lambda t, s: (
        ["eval", _empty_pt(t), "--dataset", "digits", "--budget", "smoke"], None, ["empty.pt", "no images"]),
    "show-out-missing-folder": lambda t, s: (
        ["show", next((s / "synsets").glob("*.safetensors")), "--out", t / "nowhere" / "x.png"], None,
        ["does not exist", "--out"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_one_line_exit_2_store_untouched(case, store, tmp_path):
    if case == "device-cuda-without-cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "mnist.npz").write_bytes(b"not an npz archive at all" * 4)
    args, env, words = CASES[case](tmp_path, store)
    before = _snapshot(store)
    line = _one_line_error(_invoke(*args, env=env))
    for w in words:
        assert w in line, line
    assert _snapshot(store) == before


def test_read_only_results_dir_refused_before_any_compute(tmp_path, monkeypatch):
    import benchmark.evaluate as E
    import benchmark.store as S

    ro = tmp_path / "ro"
    ro.mkdir()

    def read_only(*a, **kw):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(S.tempfile, "mkstemp", read_only)
    monkeypatch.setattr(E, "train_model", lambda *a, **kw: pytest.fail("computed before checking the results dir"))
    line = _one_line_error(_invoke("run", "--grid", _grid(tmp_path), "--results-dir", ro))
    assert "read-only file system" in line and str(ro) in line
    assert list(ro.iterdir()) == []


def test_show_into_unwritable_folder(store, tmp_path, monkeypatch):
    out = tmp_path / "locked"
    out.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == out else real_access(p, mode, **kw))
    line = _one_line_error(_invoke("show", next((store / "synsets").glob("*.safetensors")), "--out", out / "x.png"))
    assert "not writable" in line and list(out.iterdir()) == []


def test_tracking_server_refusing_connections_fails_in_seconds(store, tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    before = _snapshot(store)
    t0 = time.monotonic()
    line = _one_line_error(_invoke("run", "--grid", _grid(tmp_path), "--results-dir", store,
                                   "--tracking-uri", f"http://127.0.0.1:{port}"))
    assert time.monotonic() - t0 < 20
    assert f"http://127.0.0.1:{port}" in line and "not reachable (connection refused)" in line
    assert "--no-mlflow" in line
    assert _snapshot(store) == before


def test_corrupt_cell_summary_and_stray_row_files(store, tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    grid = _grid(tmp_path)
    summary = next((copy / "cells").glob("*.json"))
    summary.write_text('{"cell_key": ')
    before = _snapshot(copy)
    line = _one_line_error(_invoke("run", "--grid", grid, "--results-dir", copy, "--no-mlflow"))
    assert str(summary) in line and "delete it" in line
    assert _snapshot(copy) == before
    summary.unlink()
    stray = next((copy / "rows").iterdir()) / "mnotes.json"
    stray.write_text("{}")
    before = _snapshot(copy)
    for args in (["run", "--grid", grid, "--no-mlflow"], ["table"], ["table", "--grid", grid]):
        line = _one_line_error(_invoke(*args, "--results-dir", copy))
        assert str(stray) in line and "not a result row" in line
    assert _snapshot(copy) == before


def test_disk_full_is_one_line_and_leaves_no_partial_file(tmp_path, monkeypatch):
    """ENOSPC on the first row write (simulated): 'disk full at PATH', exit 2, no temporary
    file, no row, no failure record; the fp16 grid also gets its one-line precision note."""
    import benchmark.store as S

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(S, "_write_all", full)
    root = tmp_path / "store"
    r = _invoke("run", "--grid", _grid(tmp_path, precision="fp16"), "--results-dir", root, "--no-mlflow",
                "--device", "cpu")
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    errors = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "disk full at" in errors[0] and "m0.json" in errors[0], r.output
    assert any(ln.startswith("note:") and "fp16 runs as bf16" in ln for ln in r.output.splitlines()), r.output
    assert not list(root.rglob(".tmp-*")) and not list(root.rglob("m*.json")) and not (root / "failures").exists()
    assert not list((root / "claims").glob("*.lease"))


def test_disk_full_while_saving_a_set(tmp_path, monkeypatch):
    import safetensors.torch

    from benchmark.store import DiskFullError
    from benchmark.synset import SyntheticSet

    def full(*a, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    s = SyntheticSet(torch.zeros(2, 1, 8, 8), torch.arange(2), "digits", (0.3,), (0.4,))
    with pytest.raises(DiskFullError, match="disk full at .*x.safetensors"):
        s.save(tmp_path / "synsets" / "x.safetensors")
    assert list((tmp_path / "synsets").iterdir()) == []


def test_corrupt_stored_set_names_the_file_to_delete(store, tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    for d in ("cells", "rows"):
        shutil.rmtree(copy / d)
    synset = next((copy / "synsets").glob("*.safetensors"))
    synset.write_bytes(b"\x00" * 64)
    r = _invoke("run", "--grid", _grid(tmp_path), "--results-dir", copy, "--no-mlflow")
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    import json

    error = json.loads(next((copy / "failures").glob("*.json")).read_text())["error"]
    assert f"delete {synset}" in error and "dbench run" not in error.split("delete")[0]


def test_float_pixels_are_scaled_never_truncated(tmp_path):
    from benchmark.data import DataNote

    x = np.random.default_rng(0).random((20, 8, 8), dtype=np.float32)
    with pytest.warns(DataNote, match=r"f\.npz: float pixels read as range \[0, 1\] \(detected\)"):
        r = _invoke("validate", _user_grid(tmp_path, _npz(tmp_path / "f.npz", x_train=x, x_test=x[:6])))
    assert r.exit_code == 0, r.output


# ---------------------------------------------------------------- processes, kills, races


def _dbench(*args, code: str = "from benchmark.cli import main; main()") -> subprocess.Popen:
    env = {**os.environ, "DBENCH_NO_DOWNLOAD": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait_for(proc: subprocess.Popen, marker: str, timeout: float) -> str:
    seen = ""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while marker not in seen:
        left = deadline - time.monotonic()
        assert left > 0 and proc.poll() is None, f"never saw {marker!r}:\n{seen}"
        if sel.select(timeout=min(left, 1.0)):
            seen += proc.stdout.readline()
    return seen


def _mlflow_runs(root: Path, experiment: str):
    from mlflow.tracking import MlflowClient

    from benchmark.tracking import default_tracking_uri

    client = MlflowClient(tracking_uri=default_tracking_uri(root))
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


# the first run stops inside MLflow's schema creation (after the initial tables, before the
# migrations) and is killed there with SIGKILL
PAUSED_IN_MLFLOW_SETUP = """
import time
import mlflow.store.db.utils as U
def paused(engine):
    print("dbench-test: inside MLflow setup", flush=True)
    time.sleep(600)
U._upgrade_db = paused
from benchmark.cli import main
main()
"""


def test_kill_9_during_mlflow_setup_then_the_next_run_works(tmp_path):
    root, grid = tmp_path / "store", _grid(tmp_path)
    first = _dbench("run", "--grid", grid, "--results-dir", root, code=PAUSED_IN_MLFLOW_SETUP)
    try:
        _wait_for(first, "inside MLflow setup", timeout=180)
    finally:
        first.kill()
        first.wait()
    assert not (root / "mlflow.db").exists()  # nothing half-made where MLflow looks
    assert list(root.glob(".tmp-*mlflow.db"))  # the half-made store, under its temporary name
    second = _dbench("run", "--grid", grid, "--results-dir", root)
    out = second.communicate(timeout=300)[0]
    assert second.returncode == 0, out
    assert not list(root.rglob(".tmp-*")), "the killed run's temporary store was not cleaned up"
    assert [r.info.status for r in _mlflow_runs(root, "bad")] == ["FINISHED"]


def test_two_runs_started_together_on_a_new_results_dir(tmp_path):
    from collections import Counter

    from benchmark.grid import expand, load_grid

    root, grid = tmp_path / "store", _grid(tmp_path, ipc=[1, 2])
    procs = [_dbench("run", "--grid", grid, "--results-dir", root) for _ in range(2)]
    outs = [p.communicate(timeout=400)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n----\n".join(outs)
    cells = expand(load_grid(grid))
    runs = _mlflow_runs(root, "bad")
    assert Counter(r.data.tags["dbench.cell_hash"] for r in runs) == {c.hash: 1 for c in cells}  # computed once
    assert {r.info.status for r in runs} == {"FINISHED"}
    finished = sorted(ln.split()[1].rstrip(":") for o in outs for ln in o.splitlines() if ln.startswith("finished "))
    assert finished == sorted(c.key for c in cells), outs
    for c in cells:
        assert sorted(p.name for p in (root / "rows" / c.hash).iterdir()) == ["m0.json"]
    assert not list((root / "claims").glob("*.lease"))


def test_half_initialised_store_of_an_older_run_is_recovered(tmp_path):
    """What a run killed during setup used to leave: the tables, but the schema version of an
    early migration. MLflow alone fails on it ('already exists' / 'out-of-date'); dbench moves
    it aside with one note and runs."""
    import sqlite3

    from alembic.script import ScriptDirectory
    from mlflow.store.db import utils as U
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from mlflow.tracking import MlflowClient

    from benchmark.tracking import default_tracking_uri, ensure_sqlite_store

    root = tmp_path / "store"
    ensure_sqlite_store(root / "mlflow.db")
    base = ScriptDirectory.from_config(U._get_alembic_config("")).get_bases()[0]
    with sqlite3.connect(root / "mlflow.db") as con:
        con.execute("UPDATE alembic_version SET version_num = ?", (base,))
    uri = default_tracking_uri(root)
    with pytest.raises(Exception):  # noqa: B017 - the bug: MLflow alone cannot open it
        MlflowClient(tracking_uri=uri).search_experiments()
    engine = SqlAlchemyStore._engine_map.pop(uri, None)
    if engine is not None:
        engine.dispose()
    r = _invoke("run", "--grid", _grid(tmp_path), "--results-dir", root)
    assert r.exit_code == 0, r.output
    assert "half-initialised" in r.output and len(list(root.glob("mlflow.db.incomplete-*"))) == 1
    assert [x.info.status for x in _mlflow_runs(root, "bad")] == ["FINISHED"]


def test_dead_workers_leftovers_are_cleaned_and_its_cell_taken_over(tmp_path):
    """A worker died (kill -9) in a cell: its MLflow run is RUNNING, its lease unexpired, a
    temporary file half-written, and an older run left a checkpoint of a set that is saved."""
    import json

    from benchmark.grid import GridSpec, expand
    from benchmark.runner import run_cells
    from benchmark.store import ResultStore
    from benchmark.tracking import MlflowTracker, default_tracking_uri

    root = tmp_path / "store"
    store = ResultStore(root)
    tracker = MlflowTracker(default_tracking_uri(root), root / "mlartifacts")
    (cell,) = expand(GridSpec(name="dead", methods=["random"], datasets=["digits"], ipc=[1], budget="smoke"))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    tracker.start(cell.grid, cell.key, {"dbench.cell_hash": cell.hash})
    tracker._run_id = None  # the process is gone without closing its run
    (root / "claims").mkdir(parents=True)
    (root / "claims" / f"cell-{cell.hash}.lease").write_text(json.dumps(
        {"key": f"cell-{cell.hash}", "owner": f"{host}:{dead.pid}:x", "host": host, "pid": dead.pid, "start": None,
         "acquired": time.time(), "expires": time.time() + 3600}))
    rows = root / "rows" / cell.hash
    rows.mkdir(parents=True)
    (rows / f".tmp-{dead.pid}@{host}~abc").write_text('{"half": ')
    live = rows / f".tmp-{os.getpid()}@{host}~live"  # a write in progress in a live process: kept
    live.write_text("")
    old = root / "cells" / ".tmp-anonymous"
    old.parent.mkdir()
    old.write_text("")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    store.synset_path("0123456789ab").parent.mkdir(parents=True)
    store.synset_path("0123456789ab").write_bytes(b"saved")
    (store.workdir("0123456789ab")).mkdir(parents=True)
    (store.workdir("0123456789ab") / "checkpoint.pt").write_bytes(b"stale")
    (store.workdir("feedfeedfeed")).mkdir(parents=True)  # a distillation still to resume: kept

    (out,) = run_cells([cell], store, tracker)
    assert out.status == "finished"
    statuses = sorted(r.info.status for r in _mlflow_runs(root, "dead"))
    assert statuses == ["FINISHED", "KILLED"]
    assert sorted(p.name for p in root.rglob(".tmp-*")) == [live.name]
    assert not store.workdir("0123456789ab").exists() and store.workdir("feedfeedfeed").exists()
    assert not list((root / "claims").glob("*.lease"))


def test_sigterm_mid_cell_marks_the_run_killed_and_exits_cleanly(tmp_path, monkeypatch):
    import benchmark.evaluate as E

    real = E.train_model

    def terminated(*a, **kw):
        signal.raise_signal(signal.SIGTERM)  # what a scheduler sends
        return real(*a, **kw)

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(E, "train_model", terminated)
    root, grid = tmp_path / "store", _grid(tmp_path)
    r = _invoke("run", "--grid", grid, "--results-dir", root)
    assert r.exit_code == 143 and "Traceback" not in r.output, r.output
    assert "terminated (SIGTERM)" in r.output.replace("\n", " ")
    assert signal.getsignal(signal.SIGTERM) is before
    assert [x.info.status for x in _mlflow_runs(root, "bad")] == ["KILLED"]
    assert not list(root.rglob(".tmp-*")) and not list((root / "claims").glob("*.lease"))
    monkeypatch.setattr(E, "train_model", real)
    r = _invoke("run", "--grid", grid, "--results-dir", root)
    assert r.exit_code == 0, r.output
    assert sorted(x.info.status for x in _mlflow_runs(root, "bad")) == ["FINISHED", "KILLED"]
