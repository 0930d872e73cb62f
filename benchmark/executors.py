"""Where the cells of a grid run: one :class:`Executor` interface, four implementations.

* :class:`SerialExecutor` (default): this process, one cell after another, logging to MLflow
  as it goes: exactly ``run_cells``.
* :class:`LocalPoolExecutor`: N worker subprocesses on this machine, a slot pool; with GPUs each
  slot owns one GPU (``CUDA_VISIBLE_DEVICES``), several slots may share one (``jobs_per_gpu``).
* :class:`RayExecutor`: one Ray task per cell on an existing cluster (``address``) or a local
  one it starts; a task whose worker process dies is retried (``max_retries``).
* :class:`SlurmExecutor`: one SLURM job per cell as a job array through submitit, with a
  concurrency limit; returns once submitted (or waits). Job ids are kept in the results
  directory (``executors/jobs/<cell_hash>.json``) for ``dbench status`` / ``cancel`` and for
  resubmitting only what is not done.

Every parallel executor hands its workers a :class:`benchmark.worker.Submission` (cells, results
and data directories, device, driver environment) and runs each cell through
:func:`benchmark.worker.run_one`: rows are written by the worker, atomically, under the cell's
lease, so a worker killed mid-cell loses nothing and a rerun or retry resumes it. Workers
never write to MLflow; :func:`collect` logs finished cells from their rows afterwards (the
driver calls it after the workers end; ``dbench collect`` does it for a SLURM submission).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import ConfigError, DbenchError
from .progress import NullProgress, Progress
from .runner import CellOutcome, RunOptions, mlflow_params, run_cells
from .store import ResultStore, atomic_write_text
from .tracking import NullTracker
from .worker import Submission, outcome_from_dict

EXECUTORS = ("serial", "local", "ray", "slurm")
OnOutcome = Callable[[CellOutcome], None] | None
# driver settings a Ray task inherits (a local pool's workers and SLURM jobs inherit the whole environment)
FORWARDED_ENV = ("DBENCH_DATA_DIR", "DBENCH_NO_DOWNLOAD", "DBENCH_LEASE_TTL", "DBENCH_NUM_THREADS",
                 "DBENCH_WORKER_PID_DIR", "XDG_CACHE_HOME")


class ExecutorError(DbenchError):
    """An executor cannot be used here (a missing package or scheduler, a bad option)."""


def _skipped(store: ResultStore, cell) -> CellOutcome:
    s = store.cell_summary(cell.hash) or {}
    return CellOutcome(cell, "skipped", s.get("test_acc_mean", float("nan")), s.get("test_acc_std", float("nan")),
                       s.get("n", 0))


def _emit(on_outcome: OnOutcome, out: CellOutcome) -> CellOutcome:
    if on_outcome is not None:
        on_outcome(out)
    return out


class Executor:
    """Runs the cells of a grid. ``run`` returns the outcomes in the order of ``cells``, or
    None for an executor that only submitted them (SLURM without ``wait``)."""

    name = "executor"
    #: whether workers are other processes (they then run with tracking off and the driver
    #: logs finished cells to MLflow afterwards)
    remote = True

    def run(self, cells: list, store: ResultStore, *, tracker=None, opts: RunOptions | None = None,
            progress: Progress = NullProgress(), on_outcome: OnOutcome = None) -> list[CellOutcome] | None:
        raise NotImplementedError

    def run_jobs(self, sub: Submission, keys: list[str], progress: Progress = NullProgress(),
                 what: str = "jobs") -> dict[str, dict]:
        """Run the jobs ``keys`` of a saved submission of another kind than cells (``dbench tune``
        workers, ``dbench continual`` jobs) through :func:`benchmark.worker.run_one`, and wait
        for them: key -> outcome dict (``status`` finished or failed, ``error``)."""
        raise NotImplementedError

    def describe(self) -> str:
        return self.name

    def _run_cells(self, cells, store, opts, progress, on_outcome, start) -> list[CellOutcome]:
        """Skip finished cells, submit the rest, and collect outcomes in the order of ``cells``.
        ``start(submission, todo_cells, bar)`` yields (cell hash, outcome dict) as jobs end."""
        outcomes: dict[int, CellOutcome] = {}
        todo = []
        for i, c in enumerate(cells):
            if store.is_finished(c.hash, c.num_eval):
                outcomes[i] = _emit(on_outcome, _skipped(store, c))
            else:
                todo.append(i)
        if todo:
            sub = _submission([cells[i] for i in todo], store, opts)
            bar = progress.task(f"grid cells ({self.describe()})", len(cells))
            bar.advance(len(outcomes))
            index = {cells[i].hash: i for i in todo}
            with contextlib.closing(start(sub, [cells[i] for i in todo], bar)) as done:
                for h, d in done:
                    i = index[h]
                    outcomes[i] = _emit(on_outcome, outcome_from_dict(cells[i], d))
                    bar.advance()
        return [outcomes[i] for i in range(len(cells))]


class SerialExecutor(Executor):
    """This process, cell after cell (the default; unchanged behaviour of ``dbench run``)."""

    name = "serial"
    remote = False

    def run(self, cells, store, *, tracker=None, opts=None, progress=NullProgress(), on_outcome=None):
        return run_cells(cells, store, tracker, opts, progress, on_outcome=on_outcome)

    def run_jobs(self, sub, keys, progress=NullProgress(), what="jobs"):
        from .worker import run_one

        out = {}
        for k in keys:
            out[k] = run_one(sub, k)
        return out


def _failed(error: str) -> dict:
    return {"status": "failed", "acc_mean": float("nan"), "acc_std": float("nan"), "n": 0, "error": error}


def _submission(cells, store: ResultStore, opts: RunOptions | None) -> Submission:
    opts = opts or RunOptions()
    sub = Submission.make(cells, store.root, opts.data.data_dir, opts.device)
    sub.save()
    return sub


# ------------------------------------------------------------------- local pool


def pool_slots(gpus: list[str] | None, jobs_per_gpu: int = 1, jobs: int | None = None) -> list[str | None]:
    """The pool's slots: a GPU id per slot (spread over the GPUs first), or None for CPU slots."""
    if gpus:
        if jobs_per_gpu < 1:
            raise ConfigError(f"--jobs-per-gpu {jobs_per_gpu}: give 1 or more.")
        return [g for _ in range(jobs_per_gpu) for g in gpus]
    n = jobs if jobs is not None else 1
    if n < 1:
        raise ConfigError(f"--jobs {n}: give 1 or more.")
    return [None] * n


def parse_gpus(text: str | None) -> list[str] | None:
    if text is None:
        return None
    ids = [g.strip() for g in text.split(",") if g.strip()]
    if not ids:
        raise ConfigError(f"--gpus {text!r}: give GPU ids such as 0,1,2,3.")
    return ids


class LocalPoolExecutor(Executor):
    """Keeps ``len(slots)`` cells running on this machine as ``python -m benchmark.worker``
    subprocesses. A slot with a GPU id runs its job with ``CUDA_VISIBLE_DEVICES`` set to that
    id only; CPU slots get ``DBENCH_NUM_THREADS`` = cores / slots (unless set). A worker killed
    by a signal is started again (``max_retries`` times); it resumes from its rows."""

    name = "local"

    def __init__(self, gpus: list[str] | None = None, jobs_per_gpu: int = 1, jobs: int | None = None,
                 max_retries: int = 1, command: Callable[[Path, str, Path], list[str]] | None = None,
                 poll_s: float = 0.2):
        self.slots = pool_slots(gpus, jobs_per_gpu, jobs)
        self.max_retries = max_retries
        self.command = command or (lambda sub, h, out: [sys.executable, "-m", "benchmark.worker", str(sub), h,
                                                        "--outcome", str(out)])
        self.poll_s = poll_s
        self.assignments: list[tuple[str, str | None]] = []  # (cell hash, gpu) as started, for inspection

    def describe(self) -> str:
        gpus = [s for s in self.slots if s is not None]
        on = f" on GPU(s) {','.join(dict.fromkeys(gpus))}" if gpus else ""
        return f"local pool, {len(self.slots)} slot(s){on}"

    def _env(self, slot: str | None) -> dict[str, str]:
        env = dict(os.environ)
        if slot is not None:
            env["CUDA_VISIBLE_DEVICES"] = slot
        elif "DBENCH_NUM_THREADS" not in env:
            env["DBENCH_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // len(self.slots)))
        return env

    def run(self, cells, store, *, tracker=None, opts=None, progress=NullProgress(), on_outcome=None):
        return self._run_cells(cells, store, opts, progress, on_outcome,
                               lambda sub, todo, bar: self._jobs(sub, [c.hash for c in todo], bar,
                                                                 {c.hash: c.key for c in todo}))

    def run_jobs(self, sub, keys, progress=NullProgress(), what="jobs"):
        bar = progress.task(f"{what} ({self.describe()})", len(keys))
        out = {}
        with contextlib.closing(self._jobs(sub, keys, bar)) as done:
            for k, d in done:
                out[k] = d
                bar.advance()
        return out

    def _jobs(self, sub: Submission, keys: list[str], bar, labels: dict[str, str] | None = None):
        """Keep the slots busy with ``python -m benchmark.worker`` jobs for ``keys``; yields
        (key, outcome dict) as each ends (a failed one named with its log's last line)."""
        sub_path = sub.folder / "submission.json"
        logs = sub.folder / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        free = list(range(len(self.slots)))
        running: dict[int, tuple[subprocess.Popen, str, Any, int]] = {}  # slot -> (proc, key, log, try)
        queue = [(k, 0) for k in keys]
        try:
            while queue or running:
                while queue and free:
                    slot = free.pop(0)
                    k, attempt = queue.pop(0)
                    out_file = sub.folder / "outcomes" / f"{k}.json"
                    log = open(logs / f"{k}.log", "ab")
                    proc = subprocess.Popen(self.command(sub_path, k, out_file), env=self._env(self.slots[slot]),
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
                    self.assignments.append((k, self.slots[slot]))
                    running[slot] = (proc, k, log, attempt)
                    bar.update(cell=(labels or {}).get(k, k))
                time.sleep(self.poll_s)
                for slot, (proc, k, log, attempt) in list(running.items()):
                    rc = proc.poll()
                    if rc is None:
                        continue
                    log.close()
                    del running[slot]
                    free.append(slot)
                    out_file = sub.folder / "outcomes" / f"{k}.json"
                    if rc < 0 and attempt < self.max_retries:  # killed by a signal: resume from its rows
                        queue.insert(0, (k, attempt + 1))
                        continue
                    if out_file.exists():
                        yield k, json.loads(out_file.read_text())
                    else:
                        yield k, _failed(_last_line(logs / f"{k}.log", rc))
        finally:
            for proc, _, log, _ in running.values():  # Ctrl-C of the driver: stop the workers (rows are kept)
                proc.terminate()
            for proc, _, log, _ in running.values():
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                log.close()


def _last_line(log: Path, rc: int) -> str:
    try:
        lines = [x for x in log.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        lines = []
    tail = lines[-1].removeprefix("error: ") if lines else ""
    return f"worker exited with code {rc}" + (f": {tail}" if tail else "") + f" (log {log})"


# --------------------------------------------------------------------------- ray


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ExecutorError("--executor ray needs Ray: pip install 'dbench[ray]' "
                            "(or pip install 'ray[default]').") from None
    return ray


class RayExecutor(Executor):
    """One Ray task per cell, ``num_cpus`` / ``num_gpus`` (fractional allowed) per task,
    retried when its worker process dies. Connects to ``address`` (``auto``: the running
    cluster) or starts a local Ray for the duration of the run (``init_kwargs``, e.g.
    ``num_cpus``)."""

    name = "ray"

    def __init__(self, address: str | None = None, cpus_per_cell: float = 1.0, gpus_per_cell: float = 0.0,
                 max_retries: int = 3, init_kwargs: dict | None = None):
        if cpus_per_cell <= 0 or gpus_per_cell < 0:
            raise ConfigError("--cpus-per-cell must be > 0 and --gpus-per-cell >= 0.")
        self.address, self.cpus, self.gpus = address, cpus_per_cell, gpus_per_cell
        self.max_retries = max_retries
        self.init_kwargs = init_kwargs or {}

    def describe(self) -> str:
        return f"ray ({self.address or 'local'}), {self.cpus:g} CPU / {self.gpus:g} GPU per cell"

    def run(self, cells, store, *, tracker=None, opts=None, progress=NullProgress(), on_outcome=None):
        _import_ray()
        return self._run_cells(cells, store, opts, progress, on_outcome,
                               lambda sub, todo, bar: self._jobs(sub, [c.hash for c in todo]))

    def run_jobs(self, sub, keys, progress=NullProgress(), what="jobs"):
        bar = progress.task(f"{what} ({self.describe()})", len(keys))
        out = {}
        with contextlib.closing(self._jobs(sub, keys)) as done:
            for k, d in done:
                out[k] = d
                bar.advance()
        return out

    def _jobs(self, sub: Submission, keys: list[str]):
        """One Ray task per key; yields (key, outcome dict) as each ends (an error as a failed one)."""
        ray = _import_ray()
        from .worker import ray_task

        started = not ray.is_initialized()
        if started:
            try:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False, **self.init_kwargs)
            except (ConnectionError, RuntimeError, ValueError) as e:
                where = self.address or "a local cluster"
                why = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise ExecutorError(f"--executor ray: cannot start or reach Ray at {where}: {why}") from None
        task = ray.remote(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=self.max_retries)(ray_task)
        env = {k: v for k, v in os.environ.items() if k in FORWARDED_ENV}
        env.setdefault("DBENCH_NUM_THREADS", str(max(1, int(self.cpus))))
        refs = {task.options(runtime_env={"env_vars": env}).remote(sub.__dict__, k): k for k in keys}
        try:
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1)
                for ref in done:
                    k = refs.pop(ref)
                    try:
                        d = ray.get(ref)
                    except Exception as e:  # noqa: BLE001 - a task error or a worker that died past its retries
                        cause = getattr(e, "cause", None) or e
                        msg = str(cause).strip().splitlines()
                        d = _failed(str(cause) if isinstance(cause, DbenchError) else
                                    f"{type(cause).__name__}: {msg[-1] if msg else ''}")
                    yield k, d
        finally:
            for ref in refs:
                ray.cancel(ref, force=True)
            if started:
                ray.shutdown()


# ------------------------------------------------------------------------- slurm


def _import_submitit():
    try:
        import submitit
    except ImportError:
        raise ExecutorError("--executor slurm needs submitit: pip install 'dbench[slurm]' "
                            "(or pip install submitit).") from None
    return submitit


def jobs_dir(store: ResultStore) -> Path:
    return store.root / "executors" / "jobs"


def job_records(store: ResultStore) -> dict[str, dict]:
    """The last submitted job of each cell (cell hash -> record)."""
    out = {}
    d = jobs_dir(store)
    if d.is_dir():
        for p in sorted(d.glob("*.json")):
            try:
                out[p.stem] = json.loads(p.read_text())
            except (OSError, ValueError):
                continue
    return out


def slurm_queue() -> dict[str, str]:
    """Job id (array tasks as ``123_4``) -> SLURM state of every job in the queue; {} without squeue."""
    exe = shutil.which("squeue")
    if exe is None:
        return {}
    try:
        r = subprocess.run([exe, "-h", "-r", "-o", "%i %T"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return {}
    out = {}
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[0]] = parts[1]
    return out


QUEUED_STATES = {"PENDING", "CONFIGURING", "REQUEUED", "RESIZING", "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED"}


def cell_states(cells, store: ResultStore, queue: dict[str, str] | None = None) -> list[tuple[Any, str, str]]:
    """(cell, state, job id) for each cell: done, running, queued, failed or todo, from the
    results store (rows, summaries, failures, leases) and the scheduler's queue."""
    recs = job_records(store)
    queue = slurm_queue() if queue is None else queue
    out = []
    for c in cells:
        rec = recs.get(c.hash) or {}
        jid = str(rec.get("job_id", ""))
        q = queue.get(jid)
        if store.is_finished(c.hash, c.num_eval):
            state = "done"
        elif store.claims.holder(f"cell-{c.hash}") is not None or q == "RUNNING":
            state = "running"
        elif q in QUEUED_STATES or (q is not None and q != "RUNNING" and q not in ("COMPLETING",)):
            state = "queued"
        elif (store.root / "failures" / f"{c.hash}.json").exists() or jid:
            state = "failed"  # a recorded failure, or a job that left the queue without finishing the cell
        else:
            state = "todo"
        out.append((c, state, jid))
    return out


def check_slurm(partition: str | None) -> None:
    """One-line errors before anything is submitted: no SLURM here, an unknown partition."""
    if shutil.which("sbatch") is None:
        raise ExecutorError("--executor slurm: no SLURM on this machine (sbatch not found on PATH); run from a "
                            "login node, or use --executor local / ray.")
    if partition is not None and shutil.which("sinfo") is not None:
        try:
            r = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return
        if r.returncode != 0:
            why = ((r.stderr or r.stdout).strip().splitlines() or ["?"])[-1]
            raise ExecutorError(f"--executor slurm: sinfo failed ({why}); is slurmctld reachable?")
        names = [p.rstrip("*") for p in r.stdout.split()]
        if partition not in names:
            raise ExecutorError(f"--slurm-partition {partition}: no such partition (sinfo lists: "
                                f"{', '.join(names) or 'none'}).")


def parse_time(text: str) -> int:
    """SLURM time (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS``) -> minutes, at least 1."""
    try:
        days, rest = (text.split("-", 1) if "-" in text else ("0", text))
        parts = [int(p) for p in rest.split(":")]
        if "-" in text:
            parts = (parts + [0, 0])[:3]
            secs = int(days) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]
        elif len(parts) == 1:
            secs = parts[0] * 60
        elif len(parts) == 2:
            secs = parts[0] * 60 + parts[1]
        elif len(parts) == 3:
            secs = parts[0] * 3600 + parts[1] * 60 + parts[2]
        else:
            raise ValueError
        if secs < 0 or min(parts) < 0:
            raise ValueError
    except ValueError:
        raise ConfigError(f"--slurm-time {text!r}: give HH:MM:SS, D-HH:MM:SS or minutes.") from None
    return max(1, -(-secs // 60))


class SlurmExecutor(Executor):
    """One SLURM job per cell, submitted as one job array (``slurm_array_parallelism`` =
    ``max_parallel`` jobs at a time) through submitit. Cells already done, or whose job is
    still queued or running, are not submitted again. ``cluster`` is submitit's: ``slurm``,
    or ``local`` / ``debug`` (tests, no scheduler)."""

    name = "slurm"

    def __init__(self, partition: str | None = None, time_limit: str = "04:00:00", gpus_per_cell: float = 0,
                 cpus_per_cell: int = 1, max_parallel: int = 32, wait: bool = False, cluster: str = "slurm",
                 extra: dict | None = None, poll_s: float = 5.0):
        if gpus_per_cell != int(gpus_per_cell):
            raise ConfigError("--gpus-per-cell: SLURM allocates whole GPUs; give an integer.")
        self.partition, self.timeout_min = partition, parse_time(time_limit)
        self.gpus, self.cpus = int(gpus_per_cell), max(1, int(cpus_per_cell))
        self.max_parallel, self.wait, self.cluster = max(1, max_parallel), wait, cluster
        self.extra = extra or {}
        self.poll_s = poll_s
        self.jobs: list = []  # the submitit jobs of the last run

    def describe(self) -> str:
        return f"slurm ({self.partition or 'default partition'}, {self.gpus} GPU / {self.cpus} CPU per cell, " \
               f"{self.max_parallel} at a time)"

    def _executor(self, folder: Path):
        submitit = _import_submitit()
        if self.cluster == "slurm":
            check_slurm(self.partition)
        ex = submitit.AutoExecutor(folder=str(folder), cluster=self.cluster)
        params: dict[str, Any] = {"timeout_min": self.timeout_min, "cpus_per_task": self.cpus,
                                  "name": "dbench", "slurm_array_parallelism": self.max_parallel}
        if self.gpus:
            params["gpus_per_node"] = self.gpus
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.cluster == "slurm" and "DBENCH_NUM_THREADS" not in os.environ:
            params["slurm_setup"] = [f"export DBENCH_NUM_THREADS={self.cpus}"]
        params.update(self.extra)
        ex.update_parameters(**params)
        return ex

    def submit(self, cells, store: ResultStore, opts: RunOptions | None = None) -> tuple[list, list]:
        """Submit the cells that need it; (submitted cells, cells left alone: done or in the queue)."""
        states = {c.hash: s for c, s, _ in cell_states(cells, store, slurm_queue() if self.cluster == "slurm" else {})}
        todo = [c for c in cells if states[c.hash] in ("todo", "failed")]
        if self.cluster != "slurm":  # no scheduler to ask: a cell held by a live worker is not resubmitted
            todo = [c for c in todo if store.claims.holder(f"cell-{c.hash}") is None]
        left = [c for c in cells if c not in todo]
        self.jobs = []
        if not todo:
            return [], left
        sub = _submission(todo, store, opts)
        ex = self._executor(sub.folder / "submitit")
        from .worker import submitit_task

        with ex.batch():
            for c in todo:
                self.jobs.append(ex.submit(submitit_task, str(sub.folder / "submission.json"), c.hash))
        if not self.jobs or not all(getattr(j, "job_id", None) for j in self.jobs):
            raise ExecutorError("--executor slurm: nothing was submitted (the scheduler returned no job ids).")
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for c, j in zip(todo, self.jobs):
            atomic_write_text(jobs_dir(store) / f"{c.hash}.json", json.dumps(
                {"job_id": str(j.job_id), "cluster": self.cluster, "submission": sub.id, "grid": c.grid,
                 "cell_key": c.key, "folder": str(sub.folder / "submitit"), "submitted": now}, sort_keys=True))
        return todo, left

    def run(self, cells, store, *, tracker=None, opts=None, progress=NullProgress(), on_outcome=None):
        submitted, _ = self.submit(cells, store, opts)
        if not self.wait:
            return None
        return self.follow(cells, store, progress, on_outcome, submitted)

    def run_jobs(self, sub, keys, progress=NullProgress(), what="jobs"):
        """Submit ``keys`` as one job array and follow it until every job has ended (``dbench
        tune`` / ``continual`` print their table from the results, so they always wait)."""
        from .worker import submitit_task

        ex = self._executor(sub.folder / "submitit")
        with ex.batch():
            jobs = {k: ex.submit(submitit_task, str(sub.folder / "submission.json"), k) for k in keys}
        if not jobs or not all(getattr(j, "job_id", None) for j in jobs.values()):
            raise ExecutorError("--executor slurm: nothing was submitted (the scheduler returned no job ids).")
        atomic_write_text(sub.folder / "jobs.json", json.dumps({k: str(j.job_id) for k, j in jobs.items()}, indent=1))
        bar = progress.task(f"{what} ({self.describe()})", len(keys))
        out: dict[str, dict] = {}
        while len(out) < len(jobs):
            for k, j in jobs.items():
                if k in out or (self.cluster != "debug" and not j.done()):
                    continue
                try:
                    out[k] = j.result()  # the debug executor runs the job here
                except Exception as e:  # noqa: BLE001 - the job failed, was cancelled or timed out
                    why = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
                    out[k] = _failed(f"job {j.job_id}: {why}")
                bar.advance()
            if len(out) < len(jobs):
                time.sleep(self.poll_s)
        return out

    def follow(self, cells, store, progress=NullProgress(), on_outcome=None, submitted=()):
        """Wait until every cell is done or its job has left the queue; outcomes in order."""
        jobs = {c.hash: j for c, j in zip(submitted, self.jobs)}
        bar = progress.task(f"grid cells ({self.describe()})", len(cells))
        outcomes: dict[int, CellOutcome] = {}
        while len(outcomes) < len(cells):
            queue = slurm_queue() if self.cluster == "slurm" else {}
            for i, (c, state, jid) in enumerate(cell_states(cells, store, queue)):
                if i in outcomes:
                    continue
                job = jobs.get(c.hash)
                if self.cluster != "slurm" and job is not None:
                    if not job.done() and self.cluster != "debug":
                        continue
                    try:
                        d = job.result()  # the debug executor runs the job here
                        out = outcome_from_dict(c, d)
                    except Exception as e:  # noqa: BLE001
                        why = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
                        out = CellOutcome(c, "failed", error=why)
                elif state == "done":
                    out = _skipped(store, c)
                    out.status = "finished"
                elif state == "failed" or (state == "todo" and self.cluster == "slurm"):
                    err = ""
                    f = store.root / "failures" / f"{c.hash}.json"
                    if f.exists():
                        err = json.loads(f.read_text()).get("error", "")
                    out = CellOutcome(c, "failed", error=err or f"job {jid} left the queue without finishing the cell")
                else:
                    continue
                outcomes[i] = _emit(on_outcome, out)
                bar.advance()
            if len(outcomes) < len(cells):
                time.sleep(self.poll_s)
        return [outcomes[i] for i in range(len(cells))]


def cancel(cells, store: ResultStore) -> list[str]:
    """``scancel`` the recorded jobs of the unfinished ``cells``; the job ids cancelled."""
    recs = job_records(store)
    ids = sorted({str(recs[c.hash]["job_id"]) for c in cells if c.hash in recs
                  and recs[c.hash].get("cluster", "slurm") == "slurm" and not store.is_finished(c.hash, c.num_eval)})
    if not ids:
        return []
    exe = shutil.which("scancel")
    if exe is None:
        raise ExecutorError("dbench cancel: scancel not found on PATH (no SLURM on this machine).")
    r = subprocess.run([exe, *ids], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise ExecutorError(f"scancel failed: {(r.stderr or r.stdout).strip()}")
    return ids


# ----------------------------------------------------------------- MLflow, after


def _logged_cells(tracker, experiment: str) -> set[str]:
    client = getattr(tracker, "client", None)
    if client is None:
        return set()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return set()
    runs = client.search_runs([exp.experiment_id], filter_string="attributes.status = 'FINISHED'", max_results=50000)
    return {r.data.tags.get("dbench.cell_hash", "") for r in runs}


def collect(cells, store: ResultStore, tracker) -> int:
    """Log every finished cell that has no finished MLflow run yet, from its rows (params,
    per-network accuracies, summary metrics, artifacts): the one writer of the tracking store
    for cells run by workers. Returns how many were logged."""
    from . import __version__
    from .runner import _log_artifacts
    from .synset import SyntheticSet

    if tracker is None or type(tracker) is NullTracker:
        return 0
    logged = 0
    by_grid: dict[str, set[str]] = {}
    for c in cells:
        if not store.is_finished(c.hash, c.num_eval):
            continue
        if c.grid not in by_grid:
            tracker.experiment(c.grid)
            by_grid[c.grid] = _logged_cells(tracker, c.grid)
        if c.hash in by_grid[c.grid]:
            continue
        rows = sorted((r for r in store.iter_rows({c.hash}) if r["model_index"] < c.num_eval),
                      key=lambda r: r["model_index"])
        acc = f"{rows[0].get('split', 'test')}_acc"
        summary = store.cell_summary(c.hash) or {}
        tracker.start(c.grid, c.key, {
            "dbench.cell_key": c.key, "dbench.cell_hash": c.hash, "dbench.synset_hash": c.synset_hash,
            "dbench.version": __version__, "dbench.kind": c.method_kind, "dbench.budget": c.budget.name,
            "dbench.collected": "from rows written by workers"})
        try:
            tracker.log_params(mlflow_params(c, rows[0]))
            for r in rows:
                tracker.log_metrics({f"eval/{acc}": r[acc], "eval/train_time_s": r.get("train_time_s", 0.0)},
                                    step=r["model_index"])
            tracker.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))
                                 and not isinstance(v, bool)} | {"n_models": len(rows)})
            synset = None
            p = store.synset_path(c.synset_hash)
            if c.method_kind != "reference" and p.exists():
                from .data import get_info

                synset = SyntheticSet.load(p, get_info(c.dataset))
            curve = store.root / "artifacts" / c.hash / "accuracy_vs_iteration.png"
            if curve.exists():
                tracker.log_artifact(curve)
            _log_artifacts(tracker, store, c, synset, rows, acc)
        except BaseException:
            tracker.end("FAILED")
            raise
        tracker.end("FINISHED")
        by_grid[c.grid].add(c.hash)
        logged += 1
    return logged


# ------------------------------------------------------------------------ driver


def make_executor(name: str, **kw) -> Executor:
    """The executor ``name`` (``serial``, ``local``, ``ray``, ``slurm``) from CLI-style options."""
    if name == "serial":
        return SerialExecutor()
    if name == "local":
        return LocalPoolExecutor(gpus=parse_gpus(kw.get("gpus")), jobs_per_gpu=kw.get("jobs_per_gpu") or 1,
                                 jobs=kw.get("jobs"), max_retries=kw.get("max_retries", 1))
    if name == "ray":
        _import_ray()
        return RayExecutor(address=kw.get("ray_address"), cpus_per_cell=kw.get("cpus_per_cell") or 1.0,
                           gpus_per_cell=kw.get("gpus_per_cell") or 0.0, max_retries=kw.get("max_retries", 3))
    if name == "slurm":
        _import_submitit()
        return SlurmExecutor(partition=kw.get("slurm_partition"), time_limit=kw.get("slurm_time") or "04:00:00",
                             gpus_per_cell=kw.get("gpus_per_cell") or 0, cpus_per_cell=kw.get("cpus_per_cell") or 1,
                             max_parallel=kw.get("max_parallel") or 32, wait=kw.get("wait", False))
    raise ConfigError(f"--executor {name}: use {', '.join(EXECUTORS)}.")


def run_grid(cells, store: ResultStore, executor: Executor | None = None, *, tracker=None,
             opts: RunOptions | None = None, progress: Progress = NullProgress(),
             on_outcome: OnOutcome = None) -> list[CellOutcome] | None:
    """Run ``cells`` with ``executor`` (serial by default). With a parallel executor the workers
    run with tracking off and, once they are done, finished cells are logged to ``tracker``
    from their rows here (the only MLflow writer)."""
    executor = executor or SerialExecutor()
    if not executor.remote:
        return executor.run(cells, store, tracker=tracker, opts=opts, progress=progress, on_outcome=on_outcome)
    store.clean_stale_tmp()
    outs = executor.run(cells, store, tracker=None, opts=opts, progress=progress, on_outcome=on_outcome)
    if outs is not None and tracker is not None:
        collect(cells, store, tracker)
    return outs


__all__ = ["Executor", "SerialExecutor", "LocalPoolExecutor", "RayExecutor", "SlurmExecutor", "ExecutorError",
           "make_executor", "run_grid", "collect", "cancel", "cell_states", "job_records", "pool_slots", "EXECUTORS"]
