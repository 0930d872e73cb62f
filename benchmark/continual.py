"""Continual learning: DM's GDumb-style class-incremental protocol (DM paper Sec. 3.5,
VICO-UoE/DatasetCondensation ``CL_DM.py``).

The classes arrive in ``T`` equal steps, in the order ``np.random.RandomState(s).permutation``
for each order seed ``s`` (the reference calls ``np.random.seed(s)`` then
``np.random.permutation``; same numbers, no global RNG touched). At each step the memory
builder (any registered selector or distillation method) sees **only that step's real
classes** and produces ``ipc`` images per class, appended to the memory; old memory is never
rebuilt. A fresh network with a head over *all* classes is then trained from scratch on the
whole memory (GDumb) under the evaluation protocol (DM's: DSA for every method, 1000 epochs)
and tested on the test images of the classes seen so far. ``num_eval`` networks x orders give
the per-step mean ± std; the last step is the reported number.

Memory pieces are stored like synthetic sets (by content hash), every network's accuracy is
a row written once, so a killed run resumes and a finished one is skipped.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from . import __version__
from .api import RunContext, get_method
from .budgets import resolve_budget
from .build import build_set
from .data import RealData, get_info, load_dataset
from .errors import ConfigError, DbenchError
from .evaluate import get_protocol
from .grid import MethodSpec, protocol_alias, read_yaml_mapping, short_hash, validate_file_model
from .models import arch_identity, canonical_arch
from .plan import eval_plan, tensor_source
from .rows import budget_fields, data_fields, method_fields, protocol_fields, run_fields
from .runtime import select_device
from .seed import derive_seed
from .store import ResultStore
from .synset import SyntheticSet


class ContinualSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    methods: list[MethodSpec]
    dataset: str
    steps: list[int] = Field(default_factory=lambda: [5, 10])
    ipc: int = Field(20, ge=1)
    orders: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4])
    arch: str = "ConvNet"
    protocol: str = "dsa"  # the evaluation protocol (``dbench list protocols``)
    budget: str = "paper"
    budget_overrides: dict[str, Any] = Field(default_factory=dict)
    num_eval: int = Field(3, ge=1)
    seed: int = 0
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"

    @model_validator(mode="before")
    @classmethod
    def _protocol_alias(cls, v):
        return protocol_alias(v)

    @field_validator("methods", mode="before")
    @classmethod
    def _methods(cls, v):
        if not isinstance(v, list) or not v:
            raise ValueError("must be a non-empty list of method names or {name, preset, params} mappings")
        return [{"name": m.partition(".")[0], "preset": m.partition(".")[2] or None} if isinstance(m, str) else m
                for m in v]

    @field_validator("steps", "orders")
    @classmethod
    def _nonempty(cls, v):
        if not v:
            raise ValueError("give at least one value")
        return v


def load_continual(path: str | Path) -> ContinualSpec:
    path = Path(path)
    raw = read_yaml_mapping(path, "continual-learning", "tables/continual/*.yaml", "name, methods, dataset, steps")
    raw.setdefault("name", path.stem)
    spec = validate_file_model(ContinualSpec, raw, path)
    try:
        validate_spec(spec)
    except DbenchError as e:
        raise ConfigError(f"{path}: {e}") from None
    return spec


def validate_spec(spec: ContinualSpec) -> None:
    info = get_info(spec.dataset)
    canonical_arch(spec.arch)
    get_protocol(spec.protocol)
    resolve_budget(spec.budget, spec.budget_overrides)
    for i, m in enumerate(spec.methods):
        cls = get_method(m.name)
        if cls.kind == "reference":
            raise ConfigError(f"methods[{i}]: '{m.name}' is not a memory builder "
                              "(use a selector or a distillation method).")
        cls.resolve_config(m.preset, m.params)
    for t in spec.steps:
        if t < 1 or info.num_classes % t:
            raise ConfigError(f"steps: {t} does not divide the {info.num_classes} classes of {info.name} evenly.")


def class_order(num_classes: int, order_seed: int) -> list[int]:
    """The reference's class order for seed ``s`` (``np.random.seed(s); np.random.permutation``)."""
    return np.random.RandomState(order_seed).permutation(num_classes).tolist()


def step_classes(order: list[int], steps: int) -> list[list[int]]:
    n = len(order) // steps
    return [order[i * n:(i + 1) * n] for i in range(steps)]


def class_subset(real: RealData, classes: list[int]) -> RealData:
    """The real images of ``classes`` only, relabelled 0..len-1 in that order (a memory builder
    sees a k-class dataset); ``classes[label]`` maps back to the original ids."""
    idx = torch.cat([real.class_indices[c] for c in classes])
    relabel = torch.full((real.num_classes,), -1, dtype=torch.long)
    relabel[torch.tensor(classes)] = torch.arange(len(classes))
    names = tuple(real.info.classes[c] for c in classes) if real.info.classes else ()
    info = dataclasses.replace(real.info, num_classes=len(classes), classes=names)
    return RealData(info, real.images[idx], relabel[real.labels[idx]], f"{real.split}[classes]",
                    subset=f"classes={list(classes)}")


def seen_test(test: RealData, classes: list[int]) -> RealData:
    """Test images whose label is among ``classes``, labels kept (the learner's head covers all)."""
    keep = torch.isin(test.labels, torch.tensor(classes))
    return RealData(test.info, test.images[keep], test.labels[keep], "test[seen]")


def _build_piece(m: MethodSpec, real: RealData, classes: list[int], spec: ContinualSpec, seed: int, workdir: Path,
                 device, budget, progress) -> SyntheticSet:
    cls = get_method(m.name)
    cfg = cls.resolve_config(m.preset, m.params)
    sub = class_subset(real, classes)
    ctx = RunContext(device=device, seed=seed, arch=canonical_arch(spec.arch), info=sub.info, budget=budget,
                     workdir=workdir, precision=spec.precision, progress=progress)
    piece = build_set(cls, cfg, sub, spec.ipc, ctx)
    return dataclasses.replace(piece, labels=torch.tensor(classes)[piece.labels], indices=None)


def run_continual(spec: ContinualSpec, store: ResultStore, tracker, device: str = "auto", data=None, progress=None,
                  budget: str | None = None, only_methods: set[str] | None = None, executor=None,
                  only_jobs: set[str] | None = None) -> list[dict]:
    """Run (or resume) every (method, steps, order, step); returns the stored rows.

    Each (method, steps, order) is one job, named ``<method index>-<method>-T<steps>-o<order>``
    and run under its lease (``continual-<job>`` in the store's claims; a job another live
    process holds is waited for, then skipped as done). ``only_jobs`` runs just those jobs (a
    worker's share). With a parallel ``executor`` every job is a worker job on this store; the
    rows are then logged to ``tracker`` here."""
    from .progress import NullProgress

    if executor is not None and executor.remote:
        return _run_continual_parallel(spec, store, tracker, device, data, progress or NullProgress(), budget,
                                       only_methods, executor)
    progress = progress or NullProgress()
    info = get_info(spec.dataset)
    b = resolve_budget(budget or spec.budget, spec.budget_overrides)
    dev = select_device(device)
    real = load_dataset(spec.dataset, True, data)
    test = load_dataset(spec.dataset, False, data)
    arch = canonical_arch(spec.arch)
    proto = get_protocol(spec.protocol)
    num_eval = b.cap("num_eval", spec.num_eval)
    jobs = [(m, T, s) for key, m, T, s in continual_jobs(spec, only_methods) if only_jobs is None or key in only_jobs]
    keys = {(id(m), T, s): key for key, m, T, s in continual_jobs(spec, only_methods)}
    bar = progress.task(f"continual {spec.name}", sum(T for _, T, _ in jobs))
    hashes: set[str] = set()
    for m, T, s in jobs:
        cls = get_method(m.name)
        cfg = cls.resolve_config(m.preset, m.params)
        blocks = step_classes(class_order(info.num_classes, s), T)
        # the memory builder sees a k-class view of each step: its resolved config is the one
        # for that many classes
        step_info = dataclasses.replace(info, num_classes=info.num_classes // T)
        method = method_fields(cls, m.preset, cfg, step_info, spec.ipc, b, arch)
        pieces: list[SyntheticSet] = []
        piece_hashes: list[str] = []
        lease = _hold(store, f"continual-{keys[id(m), T, s]}")
        tracker.start(f"continual/{spec.name}", f"{m.label}/{spec.dataset}/T{T}/order{s}",
                      {"dbench.task": "continual", "dbench.version": __version__})
        try:
            tracker.log_params({"method": m.label, "dataset": spec.dataset, "steps": T, "order": s, "ipc": spec.ipc,
                                "protocol": spec.protocol, "budget": b.name, "arch": arch,
                                **{f"resolved.{k}": str(v) for k, v in method["resolved_config"].items()}})
            for t, classes in enumerate(blocks):
                seed = derive_seed(spec.seed, "continual-memory", s, T, t)
                pid = {"task": "continual", "method": m.name, "version": cls.version,
                       "config": cfg.model_dump(mode="json"), "data": info.to_dict(), "classes": classes,
                       "ipc": spec.ipc, "arch": arch_identity(arch), "seed": seed, "precision": spec.precision,
                       "budget": {k: getattr(b, k) for k in ("distill_iterations", "selector_epochs")
                                  if getattr(b, k) is not None}}
                ph = short_hash(pid)
                path = store.synset_path(ph)
                if path.exists():
                    piece = SyntheticSet.load(path, info)
                else:
                    bar.update(step=f"{m.label} T{T} order {s} step {t + 1}: memory")
                    piece = _build_piece(m, real, classes, spec, seed, store.workdir(ph), dev, b, progress)
                    piece.save(path)
                pieces.append(piece)
                piece_hashes.append(ph)
                seen = [c for blk in blocks[:t + 1] for c in blk]
                xs, ys = zip(*(p.training_tensors() for p in pieces))
                x, y = torch.cat(xs), torch.cat(ys)
                plan = eval_plan(proto, b, info, arch, len(y), seed=derive_seed(spec.seed, "continual-eval", s, T, t),
                                 num_eval=num_eval, device=dev, precision=spec.precision,
                                 factor=pieces[0].decode.factor, ipc=spec.ipc)
                ch = short_hash({"pieces": piece_hashes, "protocol": plan.protocol.model_dump(exclude_defaults=True),
                                 "arch": arch_identity(arch), "precision": spec.precision, "eval_seed": spec.seed})
                hashes.add(ch)
                base = {"task": "continual", "name": spec.name, "cell_hash": ch, "synset_hash": ph, **method,
                        **data_fields(info, arch), "ipc": spec.ipc, **protocol_fields(spec.protocol, plan.protocol),
                        **budget_fields(b), "steps": T, "order": s, "step": t + 1, "exp": s, "set_seed": seed,
                        "classes": classes, "classes_seen": len(seen), "n_memory": len(y), "n_train_images": len(y),
                        "epochs": plan.protocol.epochs, **run_fields(dev, spec.precision)}

                def persist(r, ch=ch, base=base, t=t):
                    store.write_row(ch, r.index, {**base, "model_index": r.index, "model_seed": r.seed,
                                                  "test_acc": r.test_acc, "train_time_s": r.train_time_s,
                                                  "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})
                    tracker.log_metrics({f"step{t + 1}/test_acc": r.test_acc}, step=r.index)

                done = store.model_indices(ch)
                if len(done & set(range(num_eval))) < num_eval:
                    bar.update(step=f"{m.label} T{T} order {s} step {t + 1}: {len(seen)} classes")
                    t0 = time.perf_counter()
                    plan.run(tensor_source(x, y, dev), info, seen_test(test, seen), progress, skip=done,
                             on_result=persist)
                    tracker.log_metrics({f"step{t + 1}/eval_time_s": time.perf_counter() - t0})
                bar.advance()
            tracker.end("FINISHED")
        except BaseException:
            tracker.end("FAILED")
            raise
        finally:
            lease.release()
    return [r for r in store.iter_rows(hashes) if r["model_index"] < num_eval]


def continual_jobs(spec: ContinualSpec, only_methods: set[str] | None = None) -> list[tuple[str, MethodSpec, int, int]]:
    """(job key, method, steps, order) of every job of ``spec``, in run order."""
    return [(f"{i}-{m.name}-T{T}-o{s}", m, T, s) for i, m in enumerate(spec.methods)
            if not only_methods or {m.name, m.label} & only_methods for T in spec.steps for s in spec.orders]


def _hold(store: ResultStore, key: str):
    """The lease of ``key``, renewed in the background; waits while another live process holds it."""
    while (lease := store.claims.try_acquire(key)) is None:
        time.sleep(1.0)
    return lease.start()


def _run_continual_parallel(spec: ContinualSpec, store: ResultStore, tracker, device, data, progress, budget,
                            only_methods, executor) -> list[dict]:
    """Every job of ``spec`` as a worker job (tracking off) on ``store``; then the rows, logged
    to ``tracker`` one run per job as a serial run would (params and per-step accuracies)."""
    from .worker import Submission

    load_dataset(spec.dataset, True, data)  # missing data fails here, before any job is submitted
    load_dataset(spec.dataset, False, data)
    jobs = continual_jobs(spec, only_methods)
    if not jobs:
        return []
    store.clean_stale_tmp()
    sub = Submission.make([], store.root, getattr(data, "data_dir", None), device, kind="continual", grid=spec.name,
                          task={"spec": spec.model_dump(mode="json"), "budget": budget})
    sub.save()
    outs = executor.run_jobs(sub, [k for k, *_ in jobs], progress, what=f"continual {spec.name} jobs") or {}
    failed = {k: d for k, d in outs.items() if d.get("status") != "finished"}
    if failed:
        k, d = next(iter(failed.items()))
        raise DbenchError(f"{len(failed)} of {len(jobs)} continual job(s) failed; {k}: {d.get('error') or '?'} "
                          f"(logs in {sub.folder}); rerun to resume them.")
    hashes = {h for d in outs.values() for h in d.get("cell_hashes", ())}
    rows = sorted(store.iter_rows(hashes), key=lambda r: (r["cell_hash"], r["model_index"]))
    num_eval = resolve_budget(budget or spec.budget, spec.budget_overrides).cap("num_eval", spec.num_eval)
    rows = [r for r in rows if r["model_index"] < num_eval]
    for key, m, T, s in jobs:
        own = set(outs[key].get("cell_hashes", ()))
        mine = [r for r in rows if r["cell_hash"] in own]
        if not mine:
            continue
        tracker.start(f"continual/{spec.name}", f"{m.label}/{spec.dataset}/T{T}/order{s}",
                      {"dbench.task": "continual", "dbench.version": __version__,
                       "dbench.collected": "from rows written by workers"})
        tracker.log_params({"method": m.label, "dataset": spec.dataset, "steps": T, "order": s, "ipc": spec.ipc,
                            "protocol": spec.protocol, "budget": mine[0].get("budget", ""), "arch": spec.arch})
        for r in mine:
            tracker.log_metrics({f"step{r['step']}/test_acc": r["test_acc"]}, step=r["model_index"])
        tracker.end("FINISHED")
    return rows


# the continual views are pure functions of rows: they live with the other tables
from .tables import continual_csv, continual_table  # noqa: E402,F401
