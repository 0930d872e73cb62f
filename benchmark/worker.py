"""One grid cell in a worker process (a local pool slot, a Ray task, a SLURM array job).

The driver (``dbench run --executor ...``) writes a *submission*: the cells as JSON, the
results directory, data directory, device, and the environment it was made in (git commit,
dbench and torch versions). A worker reads it, refuses with one line if its own environment
differs (another checkout, another torch would give other numbers under the same cell hash),
and runs its cell through :func:`benchmark.runner.run_cells` on the shared results directory:
rows are written by the worker, atomically, under the cell's lease; a killed worker's rows
are kept and a retry resumes from them. Workers never write to MLflow (tracking is off): the
driver, or ``dbench collect``, logs finished cells from their rows afterwards, so one process
only ever writes to the tracking store.

Command line (what the local pool and SLURM jobs run)::

    python -m benchmark.worker SUBMISSION.json CELL_HASH [--outcome FILE]

``dbench tune`` and ``dbench continual`` use the same submission with another ``kind``: the
key is then a tune worker's name (it runs trials of the shared study until it has enough) or
a continual job's name (one method x steps x order), in place of a cell hash.

``DBENCH_NUM_THREADS`` sets torch's thread count in the worker; ``DBENCH_WORKER_PID_DIR``, when
set, receives ``<cell_hash>.pid`` with the worker's pid as it starts (monitoring and tests).
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import DbenchError


class EnvironmentMismatch(DbenchError):
    """A worker runs another dbench checkout or torch than the submission was made with."""


def environment() -> dict[str, str]:
    """What must match between the driver and its workers."""
    import torch

    from . import __version__
    from .runtime import git_commit

    return {"git_commit": git_commit(), "dbench": __version__, "torch": torch.__version__}


def check_environment(expected: dict[str, str], actual: dict[str, str] | None = None) -> None:
    actual = actual if actual is not None else environment()
    diff = [f"{k} {actual.get(k)!r} (submitted with {v!r})" for k, v in sorted(expected.items()) if actual.get(k) != v]
    if diff:
        raise EnvironmentMismatch(f"worker on {os.uname().nodename} refuses the cell: {'; '.join(diff)}; run workers "
                                  "from the same checkout and environment as the driver, or resubmit.")


@dataclass
class Submission:
    """Everything a worker needs, as plain JSON (written once per ``dbench run``)."""

    grid: str
    cells: list[dict[str, Any]]
    results_dir: str
    data_dir: str | None = None
    device: str = "auto"
    env: dict[str, str] = field(default_factory=dict)
    #: what a job is: one grid cell (``cells``, the key is a cell hash), one worker of a shared
    #: Optuna study (``tune``, the key names the worker) or one (method, steps, order) job of
    #: a continual-learning spec (``continual``, the key names the job); ``task`` holds the rest
    kind: str = "cells"
    task: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}")
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @classmethod
    def make(cls, cells, results_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None,
             device: str = "auto", *, kind: str = "cells", task: dict[str, Any] | None = None,
             grid: str | None = None) -> Submission:
        return cls(grid=grid if grid is not None else (cells[0].grid if cells else ""),
                   cells=[c.model_dump(mode="json") for c in cells], results_dir=str(Path(results_dir).absolute()),
                   data_dir=str(Path(data_dir).absolute()) if data_dir else None, device=device, env=environment(),
                   kind=kind, task=dict(task or {}))

    @property
    def folder(self) -> Path:
        return Path(self.results_dir) / "executors" / self.id

    def save(self, path: Path | None = None) -> Path:
        from .store import atomic_write_text

        path = path or self.folder / "submission.json"
        atomic_write_text(path, json.dumps(asdict(self), sort_keys=True, indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Submission:
        try:
            return cls(**json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError) as e:
            raise DbenchError(f"{path}: not a readable dbench submission ({e}).") from None

    def cell(self, cell_hash: str):
        from .grid import Cell

        for d in self.cells:
            c = Cell.model_validate(d)
            if c.hash == cell_hash:
                return c
        raise DbenchError(f"cell {cell_hash} is not part of submission {self.id} (grid {self.grid}).")


def outcome_dict(out) -> dict[str, Any]:
    return {"cell_hash": out.cell.hash, "status": out.status, "acc_mean": out.acc_mean, "acc_std": out.acc_std,
            "n": out.n, "error": out.error}


def outcome_from_dict(cell, d: dict[str, Any]):
    from .runner import CellOutcome

    return CellOutcome(cell, d["status"], d.get("acc_mean", float("nan")), d.get("acc_std", float("nan")),
                       d.get("n", 0), d.get("error", ""))


def run_one(submission: Submission | dict, cell_hash: str) -> dict[str, Any]:
    """Run one job of a submission here (tracking off): a cell, or for ``tune`` / ``continual``
    submissions the job named ``cell_hash``; its outcome as a dict. Raises
    :class:`EnvironmentMismatch` before any work if this environment is not the driver's."""
    sub = submission if isinstance(submission, Submission) else Submission(**submission)
    check_environment(sub.env)
    pid_dir = os.environ.get("DBENCH_WORKER_PID_DIR")
    if pid_dir:
        Path(pid_dir).mkdir(parents=True, exist_ok=True)
        (Path(pid_dir) / f"{cell_hash}.pid").write_text(str(os.getpid()))
    threads = os.environ.get("DBENCH_NUM_THREADS")
    if threads:
        import torch

        torch.set_num_threads(max(1, int(threads)))
    from .data import DataSource
    from .runner import RunOptions, run_cells
    from .store import ResultStore
    from .tracking import NullTracker

    if sub.kind == "tune":
        from .tune import TuneSpec, tune_worker

        opts = RunOptions(device=sub.device, data=DataSource.from_env(sub.data_dir))
        spec = TuneSpec.model_validate(sub.task["spec"])
        return {"key": cell_hash, **tune_worker(spec, Path(sub.task["results_root"]), opts, sub.task.get("storage"),
                                                int(sub.task["target"]), cell_hash)}
    if sub.kind == "continual":
        from .continual import ContinualSpec, run_continual

        spec = ContinualSpec.model_validate(sub.task["spec"])
        rows = run_continual(spec, ResultStore(sub.results_dir), NullTracker(), sub.device,
                             DataSource.from_env(sub.data_dir), budget=sub.task.get("budget"), only_jobs={cell_hash})
        return {"key": cell_hash, "status": "finished", "n": len(rows), "error": "",
                "cell_hashes": sorted({r["cell_hash"] for r in rows})}
    if sub.kind == "nas":  # one architecture of `dbench nas` (its proxy sets are built by the driver)
        from .nas import nas_job

        return nas_job(sub, cell_hash)
    if sub.kind != "cells":
        raise DbenchError(f"submission {sub.id}: unknown job kind {sub.kind!r} (a newer dbench wrote it?).")
    cell = sub.cell(cell_hash)
    store = ResultStore(sub.results_dir)
    opts = RunOptions(device=sub.device, data=DataSource.from_env(sub.data_dir))
    [out] = run_cells([cell], store, NullTracker(), opts)
    return outcome_dict(out)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m benchmark.worker", description="Run one cell of a dbench submission.")
    p.add_argument("submission")
    p.add_argument("cell_hash", help="the cell's hash (or the job's key in a tune / continual submission)")
    p.add_argument("--outcome", help="write the outcome JSON here")
    a = p.parse_args(argv)
    try:
        out = run_one(Submission.load(a.submission), a.cell_hash)
    except DbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rows written so far are kept; the cell resumes when run again.", file=sys.stderr)
        return 130
    if a.outcome:
        from .store import atomic_write_text

        atomic_write_text(Path(a.outcome), json.dumps(out))
    print(json.dumps(out))
    return 0 if out["status"] != "failed" else 1


def ray_task(submission: dict, cell_hash: str) -> dict[str, Any]:
    """The Ray task body (``benchmark.executors.RayExecutor`` wraps it with ``ray.remote``)."""
    return run_one(submission, cell_hash)


def submitit_task(submission_path: str, cell_hash: str) -> dict[str, Any]:
    """The body of one SLURM array job (pickled by submitit by reference to this module)."""
    return run_one(Submission.load(submission_path), cell_hash)


if __name__ == "__main__":
    sys.exit(main())
