"""Optuna sweeps on a validation split carved from the training set (never the test set).

A tune file names one method (with a preset and fixed params), one dataset / IPC / protocol
/ budget, and a search space over the method's config fields (``protocol.<field>`` keys tune
the evaluation protocol instead)::

    name: tune_dm_digits
    method: {name: dm, preset: official, params: {iterations: 100}}
    dataset: digits
    ipc: 1
    protocol: dm
    budget: cpu
    num_eval: 2
    validation_per_class: 20
    trials: 8
    search:
      lr_img: {low: 0.1, high: 10, log: true}
      batch_real: {choices: [32, 64, 128]}

Every trial is one cell of the normal runner, distilled on the training set minus a fixed,
seeded validation split (``validation_per_class`` images of each class) and scored by the
mean validation accuracy of ``num_eval`` networks; the test split is never loaded. Trials
live in their own results store (``<results>/tune/<study>/``, so no tuning set can be
mistaken for a benchmark one) and an Optuna study in ``<results>/tune/optuna.db`` (or any
``--storage`` URL), named after the spec's content hash: rerunning the same command continues
the study, a finished trial is never rerun, and an interrupted trial is requeued with the
same parameters, so it resumes from its distillation checkpoint and its finished networks.
The winner is written as a grid (``--write-grid``), the only way its test accuracy is
measured.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .data import RealData, load_dataset
from .errors import ConfigError, DbenchError
from .grid import Cell, GridSpec, MethodSpec, expand, protocol_alias, read_yaml_mapping, short_hash, validate_file_model
from .runner import RunOptions, run_cell
from .seed import derive_seed
from .store import ResultStore, atomic_write_text

PROTOCOL_PREFIX = "protocol."


class SearchParam(BaseModel):
    """``{low, high[, log, step]}`` (int when both bounds are ints) or ``{choices: [...]}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _check(self):
        if self.choices is not None:
            if self.low is not None or self.high is not None or not self.choices:
                raise ValueError("give either a non-empty 'choices' list or 'low'/'high', not both")
        elif self.low is None or self.high is None:
            raise ValueError("needs 'low' and 'high' (or 'choices')")
        elif self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        elif self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self

    @property
    def is_int(self) -> bool:
        return all(isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high)) and \
            (self.step is None or isinstance(self.step, int))

    def suggest(self, trial, name: str):
        if self.choices is not None:
            return trial.suggest_categorical(name, self.choices)
        if self.is_int:
            return trial.suggest_int(name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(name, float(self.low), float(self.high), step=self.step, log=self.log)

    def example(self):
        return self.choices[0] if self.choices is not None else self.low


class TuneSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    method: MethodSpec
    dataset: str
    ipc: int = Field(ge=1)
    arch: str = "ConvNet"
    protocol: str = "dsa"  # the evaluation protocol (``dbench list protocols``)
    protocol_overrides: dict[str, Any] = Field(default_factory=dict)
    budget: str = "cpu"
    budget_overrides: dict[str, Any] = Field(default_factory=dict)
    num_eval: int = Field(2, ge=1)
    seed: int = 0
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    channels_last: bool = False
    compile: bool = False
    validation_per_class: int = Field(20, ge=1)
    trials: int = Field(10, ge=1)
    sampler: Literal["tpe", "random"] = "tpe"
    search: dict[str, SearchParam]

    @model_validator(mode="before")
    @classmethod
    def _protocol_alias(cls, v):
        return protocol_alias(v)

    @model_validator(mode="after")
    def _search(self):
        if not self.search:
            raise ValueError("search: give at least one parameter to tune")
        return self

    @property
    def study_name(self) -> str:
        """Name + hash of everything that changes a trial's number (not trials, description)."""
        return f"{self.name}-{short_hash(self.model_dump(mode='json', exclude={'trials', 'description'}))}"

    def grid_for(self, params: dict[str, Any]) -> GridSpec:
        """The one-cell grid of a trial (``params`` as chosen by Optuna)."""
        method_params = {k: v for k, v in params.items() if not k.startswith(PROTOCOL_PREFIX)}
        proto = {k[len(PROTOCOL_PREFIX):]: v for k, v in params.items() if k.startswith(PROTOCOL_PREFIX)}
        return GridSpec(
            name=self.study_name, methods=[MethodSpec(name=self.method.name, preset=self.method.preset,
                                                      params={**self.method.params, **method_params})],
            datasets=[self.dataset], ipc=[self.ipc], arch=self.arch, protocol=self.protocol,
            protocol_overrides={**self.protocol_overrides, **proto}, budget=self.budget,
            budget_overrides=self.budget_overrides, num_exp=1, num_eval=self.num_eval, seed=self.seed,
            precision=self.precision, channels_last=self.channels_last, compile=self.compile)

    def cell_for(self, params: dict[str, Any]) -> Cell:
        cells = expand(self.grid_for(params))
        if len(cells) != 1:
            raise ConfigError(f"tune '{self.name}': expected one cell per trial, got {len(cells)}")
        return cells[0]

    def best_grid_yaml(self, params: dict[str, Any], value: float, study: str) -> str:
        g = self.grid_for(params)
        doc = {"name": f"{self.name}_best", "methods": ["random", g.methods[0].model_dump(exclude_defaults=True)],
               "datasets": g.datasets, "ipc": g.ipc, "arch": g.arch, "protocol": self.protocol,
               **({"protocol_overrides": g.protocol_overrides} if g.protocol_overrides else {}),
               "budget": self.budget, **({"budget_overrides": self.budget_overrides} if self.budget_overrides else {}),
               "num_exp": 1, "num_eval": self.num_eval, "seed": self.seed, "precision": self.precision}
        head = (f"# Written by `dbench tune` (study {study}): the parameters with the best\n"
                f"# validation accuracy, {value:.2f}% on {self.validation_per_class} "
                f"held-out training images per class.\n"
                f"# Run it to measure the test accuracy beside random: dbench run --grid <this file>\n")
        return head + yaml.safe_dump(doc, sort_keys=False)


def load_tune(path: str | Path) -> TuneSpec:
    path = Path(path)
    raw = read_yaml_mapping(path, "tune", "tables/tune/*.yaml for examples", "name, method, dataset, ipc, search")
    if "methods" in raw and "search" not in raw:
        raise ConfigError(f"{path}: this is a grid (it has 'methods'); run it with `dbench run --grid {path}`.")
    raw.setdefault("name", path.stem)
    if isinstance(raw.get("method"), str):
        name, _, preset = raw["method"].partition(".")
        raw["method"] = {"name": name, "preset": preset or None}
    spec = validate_file_model(TuneSpec, raw, path)
    try:  # every name and searched field resolves before any compute is spent
        spec.cell_for({k: p.example() for k, p in spec.search.items()})
    except DbenchError as e:
        raise ConfigError(f"{path}: {e}") from None
    return spec


def validation_split(real: RealData, per_class: int, seed: int) -> tuple[RealData, RealData]:
    """(train minus validation, validation): :func:`benchmark.data.validation_split`, named for tune."""
    from .data import validation_split as split

    return split(real, per_class, seed, tag="tune")[:2]


@dataclass
class TuneResult:
    study: Any
    study_name: str
    store: ResultStore
    best_params: dict[str, Any] | None
    best_value: float | None


def _storage(url: str | None, root: Path):
    import optuna

    url = url or f"sqlite:///{(root / 'optuna.db').resolve()}"
    root.mkdir(parents=True, exist_ok=True)
    # a trial whose process died (no heartbeat for grace_period s) is failed and queued again
    new_cb = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)  # Optuna >= 4.9
    try:
        with warnings.catch_warnings():  # heartbeat + retry are marked experimental in Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = ({"heartbeat_stale_trial_callback": new_cb(max_retry=2)} if new_cb is not None else
                     {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=2)})
            return optuna.storages.RDBStorage(url, heartbeat_interval=60, grace_period=180, **retry)
    except Exception as e:  # noqa: BLE001
        raise DbenchError(f"Optuna storage {url!r} is not usable ({type(e).__name__}: {e}). "
                          "Pass another --storage.") from None


def requeue_interrupted(study) -> int:
    """Enqueue once more the parameters of every trial that was interrupted (Ctrl-C, a
    failing cell) and has no completed or queued retry, so a rerun resumes it."""
    import optuna

    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials} | {t.system_attrs.get("failed_trial") for t in trials}
    done = [t.params for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    n = 0
    for t in trials:
        if t.state == optuna.trial.TrialState.FAIL and t.number not in retried and t.params and t.params not in done:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
            n += 1
    return n


JOURNAL = "optuna.journal"


def _journal_storage(root: Path):
    """The study file shared by parallel tune workers: Optuna's journal storage (an append-only
    log guarded by a lock file taken with an atomic symlink, which NFS honours; a lock left by
    a killed process goes stale after 30 s). An sqlite file is not: its locks are unreliable on
    network file systems and several writers on one machine meet "database is locked"."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    root.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str((root / JOURNAL).resolve())))


def _shared_storage(url: str | None, root: Path, name: str):
    """The storage parallel workers share: ``url`` if given, else the journal in ``root``
    (into which a study begun serially in ``optuna.db`` is copied once, trials included)."""
    import optuna

    if url is not None:
        return _storage(url, root)
    st = _journal_storage(root)
    db = root / "optuna.db"
    if name not in optuna.get_all_study_names(st) and db.exists():
        old = _storage(None, root)
        if name in optuna.get_all_study_names(old):
            optuna.copy_study(from_study_name=name, from_storage=old, to_storage=st)
    return st


def _objective(spec: TuneSpec, store: ResultStore, tracker, opts: RunOptions, progress, train, val, name: str,
               lease: bool = False):
    """One trial = one runner cell on (train minus validation, validation). With ``lease`` the
    cell runs under its lease (``cell-<hash>``; waiting while another process holds it), as
    parallel workers need."""
    import time

    def objective(trial):
        params = {k: p.suggest(trial, k) for k, p in spec.search.items()}
        cell = spec.cell_for(params)
        trial.set_user_attr("cell_hash", cell.hash)
        held = None
        while lease and held is None:
            held = store.claims.try_acquire(f"cell-{cell.hash}")
            if held is None:
                time.sleep(1.0)
        try:
            if held is not None:
                held.start()
            if store.is_finished(cell.hash, cell.num_eval):
                s = store.cell_summary(cell.hash) or {}
                return float(s["val_acc_mean"])
            out = run_cell(cell, store, tracker, opts, progress, data=(train, val), split="val",
                           extra={"task": "tune", "study": name, "trial": trial.number, "params_searched": params,
                                  "validation_per_class": spec.validation_per_class})
        finally:
            if held is not None:
                held.release()
        if out.status != "finished" or not math.isfinite(out.acc_mean):
            raise DbenchError(f"trial {trial.number} ({params}) failed: {out.error}")
        return out.acc_mean

    return objective


def tune_worker(spec: TuneSpec, results_root: Path, opts: RunOptions, storage: str | None, target: int,
                worker: str, progress=None) -> dict[str, Any]:
    """One of several processes working on the shared study until it has ``target`` complete
    trials (the body of a ``dbench tune --executor ...`` job; tracking off).

    A trial is asked for, its parameters suggested and its lease (``trial-<study>-<number>``,
    renewed while it runs) taken under one file lock, and only while complete + running
    trials are fewer than ``target``: so the workers never run more trials than asked, and no
    two get the same trial. A running trial without a live lease belonged to a worker that
    died: it is marked failed and its parameters are queued again (it then resumes from its
    rows and checkpoint)."""
    import optuna
    from filelock import FileLock

    from .claims import Claims
    from .progress import NullProgress
    from .tracking import NullTracker

    progress = progress or NullProgress()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    root = results_root / "tune"
    name = spec.study_name
    store = ResultStore(root / name)
    real = load_dataset(spec.dataset, True, opts.data)
    train, val = validation_split(real, spec.validation_per_class, derive_seed(spec.seed, "validation-split"))
    st = _shared_storage(storage, root, name)
    n_before = len(optuna.load_study(study_name=name, storage=st).get_trials(deepcopy=False))
    seed = derive_seed(spec.seed, "tune-sampler", n_before, worker) % 2**32  # each worker samples differently
    with warnings.catch_warnings():  # constant_liar is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = (optuna.samplers.TPESampler(seed=seed, constant_liar=True) if spec.sampler == "tpe"
                   else optuna.samplers.RandomSampler(seed=seed))
    study = optuna.load_study(study_name=name, storage=st, sampler=sampler)
    objective = _objective(spec, store, NullTracker(), opts, progress, train, val, name, lease=True)
    claims = Claims(root / "claims")
    lock = FileLock(str(root / f"{name}.lock"), timeout=600)
    state = optuna.trial.TrialState
    done, failed, errors = 0, 0, []
    while failed < target:
        with lock:
            for t in study.get_trials(deepcopy=False, states=(state.RUNNING,)):
                if claims.holder(f"trial-{name}-{t.number}") is None:  # its worker died
                    study.tell(t.number, state=state.FAIL)
                    study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
            busy = len(study.get_trials(deepcopy=False, states=(state.COMPLETE, state.RUNNING)))
            if busy >= target:
                break
            trial = study.ask()
            for k, p in spec.search.items():  # suggested under the lock: the liar sees every running trial
                p.suggest(trial, k)
            held = claims.try_acquire(f"trial-{name}-{trial.number}")
        with held:
            try:
                value = objective(trial)
            except DbenchError as e:
                study.tell(trial, state=state.FAIL)
                failed += 1
                errors.append(str(e))
                continue
            except BaseException:
                study.tell(trial, state=state.FAIL)
                raise
            study.tell(trial, value)
            done += 1
    return {"status": "failed" if errors and not done else "finished", "n": done, "failed": failed,
            "error": errors[-1] if errors else ""}


def run_tune(spec: TuneSpec, results_root: Path, tracker, opts: RunOptions, progress,
             storage: str | None = None, trials: int | None = None,
             on_trial: Callable[[Any], None] | None = None, executor=None, workers: int | None = None) -> TuneResult:
    """Run (or continue) the study until it has ``trials`` (default: the spec's) complete
    trials. With a parallel ``executor`` (local pool, Ray, SLURM) ``workers`` jobs (default:
    the pool's slots, else one per trial still to run) each run :func:`tune_worker` on the
    shared study (a journal file in ``<results>/tune/``, or ``storage``); trials are then
    logged to ``tracker`` from their rows."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    root = results_root / "tune"
    name = spec.study_name
    store = ResultStore(root / name)
    if executor is not None and executor.remote:
        return _run_tune_parallel(spec, results_root, tracker, opts, progress, storage, trials or spec.trials,
                                  on_trial, executor, workers)
    real = load_dataset(spec.dataset, True, opts.data)  # the test split is never loaded here
    train, val = validation_split(real, spec.validation_per_class, derive_seed(spec.seed, "validation-split"))
    journal = root / JOURNAL
    if storage is None and journal.exists() and name in optuna.get_all_study_names(_journal_storage(root)):
        st = _journal_storage(root)  # a study begun by parallel workers continues where they left it
    else:
        st = _storage(storage, root)
    probe = optuna.load_study(study_name=name, storage=st) if name in optuna.get_all_study_names(st) else None
    n_before = len(probe.get_trials(deepcopy=False)) if probe else 0
    seed = derive_seed(spec.seed, "tune-sampler", n_before) % 2**32  # deterministic given the study's history
    sampler = (optuna.samplers.TPESampler(seed=seed) if spec.sampler == "tpe"
               else optuna.samplers.RandomSampler(seed=seed))
    study = optuna.create_study(study_name=name, storage=st, sampler=sampler, direction="maximize", load_if_exists=True)
    study.set_user_attr("spec", spec.model_dump(mode="json"))
    requeue_interrupted(study)
    target = trials or spec.trials

    objective = _objective(spec, store, tracker, opts, progress, train, val, name)

    def complete() -> int:
        return sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.get_trials(deepcopy=False))

    left = target - complete()
    if left > 0:
        bar = progress.task(f"tune {spec.name}", target)
        bar.advance(target - left)

        def after(st_, t):
            if t.state == optuna.trial.TrialState.COMPLETE:
                bar.advance()
            if on_trial:
                on_trial(t)

        # room for failing trials; MaxTrialsCallback stops at `target` completed ones
        study.optimize(objective, n_trials=2 * left, catch=(DbenchError,),
                       callbacks=[optuna.study.MaxTrialsCallback(target, states=(optuna.trial.TrialState.COMPLETE,)),
                                  after])
    best = None
    if complete():
        best = study.best_trial
    return TuneResult(study, name, store, best.params if best else None, best.value if best else None)


def _run_tune_parallel(spec: TuneSpec, results_root: Path, tracker, opts: RunOptions, progress, storage: str | None,
                       target: int, on_trial, executor, workers: int | None) -> TuneResult:
    """The driver of a parallel sweep: the study made (or continued) in the shared storage,
    worker jobs submitted through ``executor``, then the finished trials logged to MLflow."""
    import optuna

    from .executors import collect
    from .worker import Submission

    root = results_root / "tune"
    name = spec.study_name
    store = ResultStore(root / name)
    load_dataset(spec.dataset, True, opts.data)  # missing data fails here, before any job is submitted
    st = _shared_storage(storage, root, name)
    study = optuna.create_study(study_name=name, storage=st, direction="maximize", load_if_exists=True)
    study.set_user_attr("spec", spec.model_dump(mode="json"))
    requeue_interrupted(study)
    complete = optuna.trial.TrialState.COMPLETE
    seen = {t.number for t in study.get_trials(deepcopy=False)}
    left = target - len(study.get_trials(deepcopy=False, states=(complete,)))
    if left > 0:
        n = workers or len(getattr(executor, "slots", ())) or left
        n = max(1, min(n, left))
        store.clean_stale_tmp()
        sub = Submission.make([], store.root, opts.data.data_dir, opts.device, kind="tune", grid=name,
                              task={"spec": spec.model_dump(mode="json"), "results_root": str(results_root.absolute()),
                                    "storage": storage, "target": target})
        sub.save()
        outs = executor.run_jobs(sub, [f"worker{i}" for i in range(n)], progress, what=f"tune {spec.name} workers")
        for d in (outs or {}).values():
            if d.get("status") == "failed" and d.get("error") and hasattr(progress, "log"):
                progress.log(f"[red]tune worker failed[/]: {d['error']}")
    trials = study.get_trials(deepcopy=False)
    if on_trial:
        for t in trials:
            if t.number not in seen:
                on_trial(t)
    if tracker is not None:
        collect([spec.cell_for(t.params) for t in trials if t.state == complete], store, tracker)
    best = study.best_trial if any(t.state == complete for t in trials) else None
    return TuneResult(study, name, store, best.params if best else None, best.value if best else None)


def trials_frame(study):
    import pandas as pd

    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append({"trial": t.number, "state": t.state.name.lower(),
                     "val_acc": round(t.value, 2) if t.value is not None else None,
                     **{k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in t.params.items()},
                     "retry_of": t.user_attrs.get("retry_of", "")})
    return pd.DataFrame(rows)


def write_best_grid(spec: TuneSpec, result: TuneResult, path: Path) -> Path:
    if result.best_params is None:
        raise DbenchError(f"study {result.study_name} has no completed trial yet; rerun `dbench tune` first.")
    atomic_write_text(path, spec.best_grid_yaml(result.best_params, result.best_value, result.study_name))
    return path
