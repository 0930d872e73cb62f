"""Experiment tracking. The only module that imports MLflow.

Default: an embedded local store, ``sqlite:///<results dir>/mlflow.db`` with artifacts under
``<results dir>/mlartifacts``; any tracking URI (``http://host:5000``, ``file:...``) is
accepted through ``--tracking-uri`` / ``MLFLOW_TRACKING_URI``. One experiment per grid,
one run per cell.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import DbenchError


def default_tracking_uri(results_root: Path) -> str:
    return f"sqlite:///{results_root.resolve() / 'mlflow.db'}"


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


class MlflowTracker(NullTracker):
    def __init__(self, uri: str, artifact_root: Path | None = None):
        import logging

        from mlflow.tracking import MlflowClient

        for name in ("alembic", "mlflow", "mlflow.store.db.utils"):  # after import: mlflow sets its own levels
            logging.getLogger(name).setLevel(logging.WARNING)

        self.uri = uri
        self.artifact_root = artifact_root
        try:
            self.client = MlflowClient(tracking_uri=uri)
        except Exception as e:  # noqa: BLE001
            raise DbenchError(f"MLflow tracking URI {uri!r} is not usable ({e}). Pass --tracking-uri or --no-mlflow.") from None
        self._run_id: str | None = None
        self._exp_cache: dict[str, str] = {}

    def _experiment(self, name: str) -> str:
        if name in self._exp_cache:
            return self._exp_cache[name]
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            loc = (self.artifact_root / name).resolve().as_uri() if self.artifact_root else None
            eid = self.client.create_experiment(name, artifact_location=loc)
        else:
            eid = exp.experiment_id
        self._exp_cache[name] = eid
        return eid

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
        if self._run_id:
            self.client.set_terminated(self._run_id, status=status)
            self._run_id = None


def make_tracker(uri: str | None, results_root: Path, enabled: bool = True):
    if not enabled:
        return NullTracker()
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(results_root)
    results_root.mkdir(parents=True, exist_ok=True)
    return MlflowTracker(uri, results_root / "mlartifacts")
