"""Experiment tracking. The only module that imports MLflow.

Default: an embedded local store, ``sqlite:///<results dir>/mlflow.db`` with artifacts under
``<results dir>/mlartifacts``; any tracking URI (``http://host:5000``, ``file:...``) is
accepted through ``--tracking-uri`` / ``MLFLOW_TRACKING_URI``. One experiment per grid,
one run per cell.

A local sqlite store is complete or absent: it is created under a temporary name, under a
file lock, and renamed into place (:func:`ensure_sqlite_store`), so a run killed while
creating it, or two runs started together on a new results directory, leave nothing
half-made; a half-initialised store left by an older version (no runs in it) is moved aside
and re-created with a one-line note. A tracking server is probed once with few retries, so
one that refuses connections fails in seconds. Runs left RUNNING by a killed process are
closed as KILLED by the next run (:meth:`MlflowTracker.close_stale_runs`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .errors import DbenchError

MAX_EXPERIMENT_NAME_LENGTH = 500  # MLflow's limit (mlflow.utils.validation), re-read at run time
MAX_FOLDER_NAME_BYTES = 255  # an experiment's artifact folder is named after it


def default_tracking_uri(results_root: Path) -> str:
    return f"sqlite:///{results_root.resolve() / 'mlflow.db'}"


def _stderr_note(msg: str) -> None:
    print(f"note: {msg}", file=sys.stderr)


def sqlite_path(uri: str) -> Path | None:
    """The local file of a ``sqlite:///`` tracking URI (None for other URIs)."""
    if not uri.startswith("sqlite:///") or "?" in uri or uri == "sqlite:///:memory:":
        return None
    return Path(uri[len("sqlite:///"):])


def _sqlite_state(db: Path) -> tuple[str, str | None, int]:
    """('complete' | 'incomplete' | 'other-version' | 'unreadable', schema revision, runs)."""
    import sqlite3

    from mlflow.store.db import utils as db_utils

    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=60.0)  # waits out other writers
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            rev = None
            if "alembic_version" in tables:
                row = con.execute("SELECT version_num FROM alembic_version").fetchone()
                rev = row[0] if row else None
            runs = con.execute("SELECT count(*) FROM runs").fetchone()[0] if "runs" in tables else 0
        finally:
            con.close()
    except sqlite3.Error as e:
        return f"unreadable ({e})", None, 0
    complete = set(db_utils.Base.metadata.tables) <= tables and rev == db_utils._get_latest_schema_revision()
    if complete:
        return "complete", rev, runs
    return ("other-version" if runs else "incomplete"), rev, runs


def _create_sqlite_store(tmp: Path, artifact_root: Path | None) -> None:
    """Every table, the schema at MLflow's head revision and the default experiment, in ``tmp``."""
    import sqlalchemy
    from mlflow.store.db import utils as db_utils
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    engine = sqlalchemy.create_engine(f"sqlite:///{tmp}")

    @sqlalchemy.event.listens_for(engine, "connect")
    def _unsynced(conn, _record):  # the file is only renamed into place once complete: skip the
        conn.execute("PRAGMA synchronous=OFF")  # per-migration fsyncs (9 s -> 1 s on a slow disk)
        conn.execute("PRAGMA journal_mode=MEMORY")

    try:
        db_utils._initialize_tables(engine)
        db_utils._verify_schema(engine)
    finally:
        engine.dispose()
    uri = f"sqlite:///{tmp}"
    root = (artifact_root or tmp.parent / "mlartifacts").resolve().as_uri()
    try:
        SqlAlchemyStore(uri, root)  # creates the default experiment: not left to racing processes
    finally:
        cached = SqlAlchemyStore._engine_map.pop(uri, None)
        if cached is not None:
            cached.dispose()
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_sqlite_store(db: Path, artifact_root: Path | None = None,
                        note: Callable[[str], None] = _stderr_note, lock_timeout: float = 600.0) -> None:
    """Make sure ``db`` is a complete MLflow sqlite store. Creation happens under a file lock
    beside it, in a temporary file renamed into place when complete; stale temporary files of
    killed creators are removed. A half-initialised store (older dbench, no runs) is moved
    aside (``mlflow.db.incomplete-<time>``) and re-created; a store of another MLflow schema
    that holds runs, or an unreadable file, is a one-line error (never touched)."""
    import logging

    from filelock import FileLock, Timeout

    from .claims import tmp_prefix
    from .store import is_stale_tmp, write_error

    for name in ("alembic", "mlflow", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)
    db = Path(db)
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(db.with_name(f".{db.name}.lock")), timeout=lock_timeout)
        with lock:
            for p in db.parent.glob(f".tmp-*{db.name}*"):
                if is_stale_tmp(p):
                    with contextlib.suppress(FileNotFoundError):
                        p.unlink()
            if db.exists():
                state, rev, runs = _sqlite_state(db)
                if state == "complete":
                    return
                if state == "other-version":
                    raise DbenchError(f"MLflow store {db}: schema {rev} of another MLflow version ({runs} runs); back "
                                      f"it up and run `mlflow db upgrade sqlite:///{db}`, or pass --no-mlflow.")
                if state != "incomplete":
                    raise DbenchError(f"MLflow store {db}: {state}; move it away (a new store is created) or pass "
                                      "--no-mlflow.")
                aside = db.with_name(f"{db.name}.incomplete-{time.strftime('%Y%m%d-%H%M%S')}")
                os.replace(db, aside)
                note(f"MLflow store {db} was half-initialised (schema {rev or 'unset'}, no runs: a run killed while "
                     f"creating it?); moved it to {aside.name} and created a new one.")
            tmp = db.with_name(f"{tmp_prefix()}{db.name}")
            try:
                _create_sqlite_store(tmp, artifact_root)
                os.replace(tmp, db)
            finally:
                for p in (tmp, tmp.with_name(tmp.name + "-journal")):
                    with contextlib.suppress(FileNotFoundError):
                        p.unlink()
    except Timeout:
        raise DbenchError(f"MLflow store {db}: another process has been creating it for over {lock_timeout:.0f} s; "
                          "stop that process or pass --no-mlflow.") from None
    except OSError as e:
        raise write_error(db, e, "create the MLflow store") from None


@contextlib.contextmanager
def _quick_http():
    """MLflow's HTTP retries for one probe: 1 retry, short backoff and timeout (the user's own
    MLFLOW_HTTP_REQUEST_* settings win)."""
    fast = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    set_here = [k for k in fast if k not in os.environ]
    os.environ.update({k: fast[k] for k in set_here})
    try:
        yield
    finally:
        for k in set_here:
            os.environ.pop(k, None)


def _reason(e: BaseException) -> str:
    text = str(e)
    for marker, say in (("Connection refused", "connection refused"), ("Max retries exceeded", "no answer"),
                        ("Name or service not known", "unknown host"), ("timed out", "timed out"),
                        ("Failed to resolve", "unknown host")):
        if marker in text:
            return say
    first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    return first[:160]


class NullTracker:
    """Does nothing; for tests and ``--no-mlflow``."""

    uri = "none"

    def start(self, experiment: str, run_name: str, tags: Mapping[str, str]) -> None:
        pass

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        pass

    def log_artifact(self, path: str | os.PathLike) -> None:
        pass

    def end(self, status: str = "FINISHED") -> None:
        pass

    def experiment(self, name: str) -> str | None:
        """Check (and create) the experiment of a grid before any compute."""
        return None

    def close_stale_runs(self, experiment: str, cell_hash: str | None = None,
                         live: Callable[[str], bool] = lambda cell_hash: False) -> int:
        return 0


class MlflowTracker(NullTracker):
    def __init__(self, uri: str, artifact_root: Path | None = None, note: Callable[[str], None] = _stderr_note):
        import logging

        from mlflow.tracking import MlflowClient

        for name in ("alembic", "mlflow", "mlflow.store.db.utils"):  # after import: mlflow sets its own levels
            logging.getLogger(name).setLevel(logging.WARNING)

        self.uri = uri
        self.artifact_root = artifact_root
        db = sqlite_path(uri)
        if db is not None:
            ensure_sqlite_store(db, artifact_root, note=note)
        try:
            self.client = MlflowClient(tracking_uri=uri)
        except Exception as e:  # noqa: BLE001
            raise DbenchError(f"MLflow tracking URI {uri!r} is not usable ({_reason(e)}). "
                              "Pass --tracking-uri or --no-mlflow.") from None
        if uri.startswith(("http://", "https://")):
            try:
                with _quick_http():
                    self.client.search_experiments(max_results=1)
            except Exception as e:  # noqa: BLE001
                raise DbenchError(f"MLflow server {uri} is not reachable ({_reason(e)}); start it, fix "
                                  "--tracking-uri / MLFLOW_TRACKING_URI, or pass --no-mlflow.") from None
        self._run_id: str | None = None
        self._exp_cache: dict[str, str] = {}

    def _check_name(self, name: str) -> None:
        try:
            from mlflow.utils.validation import MAX_EXPERIMENT_NAME_LENGTH as limit
        except ImportError:
            limit = MAX_EXPERIMENT_NAME_LENGTH
        if not name or len(name) > limit:
            raise DbenchError(f"grid name '{name[:40]}...' has {len(name)} characters; MLflow experiment names take "
                              f"1 to {limit}: shorten `name:` in the grid (or pass --no-mlflow).")
        too_long = any(len(part.encode()) > MAX_FOLDER_NAME_BYTES for part in name.split("/"))
        if self.artifact_root is not None and too_long:
            raise DbenchError(f"grid name '{name[:40]}...' is too long for its MLflow artifact folder (at most "
                              f"{MAX_FOLDER_NAME_BYTES} bytes between slashes): shorten `name:` in the grid.")

    def _experiment(self, name: str) -> str:
        if name in self._exp_cache:
            return self._exp_cache[name]
        from mlflow.exceptions import MlflowException

        self._check_name(name)
        try:
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                loc = (self.artifact_root / name).resolve().as_uri() if self.artifact_root else None
                try:
                    eid = self.client.create_experiment(name, artifact_location=loc)
                except MlflowException:  # created meanwhile by a concurrent process
                    exp = self.client.get_experiment_by_name(name)
                    if exp is None:
                        raise
                    eid = exp.experiment_id
            else:
                eid = exp.experiment_id
        except MlflowException as e:
            raise DbenchError(f"MLflow experiment '{name[:60]}' at {self.uri}: {_reason(e)}.") from None
        if exp is not None and exp.lifecycle_stage == "deleted":
            raise DbenchError(f"MLflow experiment '{name}' (id {eid}) is deleted; restore it with `mlflow experiments "
                              f"restore --experiment-id {eid}` (tracking URI {self.uri}) or rename the grid.")
        self._exp_cache[name] = eid
        return eid

    def experiment(self, name: str) -> str:
        return self._experiment(name)

    def close_stale_runs(self, experiment: str, cell_hash: str | None = None,
                         live: Callable[[str], bool] = lambda cell_hash: False) -> int:
        """Mark KILLED the runs of ``experiment`` (of one cell, or all) left RUNNING by a process
        that died (``kill -9``, a lost machine): those whose cell is not ``live`` (held by a
        running process). Returns how many were closed."""
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            return 0
        flt = "attributes.status = 'RUNNING'"
        if cell_hash is not None:
            flt += f" and tags.`dbench.cell_hash` = '{cell_hash}'"
        closed = 0
        for run in self.client.search_runs([exp.experiment_id], filter_string=flt, max_results=5000):
            if run.info.run_id == self._run_id or live(run.data.tags.get("dbench.cell_hash", "")):
                continue
            self.client.set_tag(run.info.run_id, "dbench.closed", "its process ended without closing the run")
            self.client.set_terminated(run.info.run_id, status="KILLED")
            closed += 1
        return closed

    def start(self, experiment: str, run_name: str, tags: Mapping[str, str]) -> None:
        run = self.client.create_run(self._experiment(experiment), run_name=run_name, tags=dict(tags))
        self._run_id = run.info.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 90):
            self.client.log_batch(self._run_id, params=items[i : i + 90])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, step) for k, v in metrics.items()]
        if items:
            self.client.log_batch(self._run_id, metrics=items)

    def log_artifact(self, path: str | os.PathLike) -> None:
        self.client.log_artifact(self._run_id, str(path))

    def end(self, status: str = "FINISHED") -> None:
        """Close the current run. Closing it as FAILED/KILLED never raises (it runs while
        another error or an interrupt is on its way out; the next run closes what is left)."""
        run_id, self._run_id = self._run_id, None
        if not run_id:
            return
        if status == "FINISHED":
            self.client.set_terminated(run_id, status=status)
            return
        with contextlib.suppress(Exception):
            self.client.set_terminated(run_id, status=status)


def make_tracker(uri: str | None, results_root: Path, enabled: bool = True,
                 note: Callable[[str], None] = _stderr_note):
    if not enabled:
        return NullTracker()
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(results_root)
    try:
        results_root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        from .store import write_error

        raise write_error(results_root, e, "create") from None
    return MlflowTracker(uri, results_root / "mlartifacts", note=note)
