"""Run cells: produce (or reuse) the synthetic set, evaluate, persist, track.

Never loses work: a finished cell (same config hash, all models present) is skipped; a
killed cell resumes (the synthetic set is reused from the store, finished evaluation
networks are not re-trained, a distillation resumes from its last checkpoint); every
write is atomic. A failing cell is recorded and the grid goes on; a results directory that
cannot be written (full disk, read-only) stops the grid with one line.

Several processes may run one grid on one results directory: a cell (and a synthetic set
still to be made) is computed only by the process holding its claim (benchmark.claims), so
a second ``dbench run`` takes the cells nobody holds and then waits for the rest.
"""

from __future__ import annotations

import csv
import io
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .api import RunContext, get_method
from .build import build_set
from .data import DataSource, RealData, RealSubset, get_info, load_dataset
from .errors import DbenchError
from .grid import Cell
from .plan import eval_plan, tensor_source
from .progress import NullProgress, Progress
from .rows import cell_base_row, flatten
from .runtime import peak_cuda_mib, peak_rss_mib, select_device
from .seed import derive_seed
from .store import ResultStore, StoreError
from .synset import SyntheticSet
from .tracking import NullTracker


@dataclass
class RunOptions:
    device: str = "auto"
    data: DataSource = field(default_factory=DataSource.from_env)
    precision: str | None = None  # overrides the grid's precision (part of the cell identity)
    fail_fast: bool = False


@dataclass
class CellOutcome:
    cell: Cell
    status: str  # finished | skipped | failed
    acc_mean: float = float("nan")
    acc_std: float = float("nan")
    n: int = 0
    error: str = ""


def intermediate_evaluator(cell: Cell, test, device: torch.device):
    """Accuracy-vs-iteration probe for methods with ``eval_every``: one network under the
    cell's protocol and budget. For curves only; nothing is ever selected with it."""
    info = test.info

    def probe(s: SyntheticSet, it: int) -> dict[str, float]:
        x, y = s.training_tensors()
        plan = eval_plan(cell.protocol, cell.budget, info, cell.arch_eval, len(y),
                         seed=derive_seed(cell.seed, "curve", it),
                         num_eval=1, device=device, precision=cell.precision, factor=s.decode.factor, ipc=cell.ipc)
        r = plan.run(tensor_source(x, y, device), info, test)
        return {"test_acc": r[0].test_acc}

    return probe


def save_curve_png(curve: list, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    its, accs = zip(*[(p[0], p[1]) for p in sorted(curve)])
    ax.plot(its, accs, marker="o")
    ax.set_xlabel("distillation iteration")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def produce_synset(cell: Cell, real, store: ResultStore, device: torch.device, tracker, progress: Progress,
                   test=None) -> tuple[SyntheticSet, float]:
    """Load the cell's synthetic set from the store, or make it (selection or distillation)
    through :func:`benchmark.build.build_set`; a distillation's accuracy curve (with its
    iteration count and wall time) goes to the store's ``curves/``, not into the set."""
    path = store.synset_path(cell.synset_hash)
    info = real.info
    if path.exists():
        return SyntheticSet.load(path, info), 0.0
    if cell.method_kind == "imported":  # a published set from `dbench import`: read from the store, never built
        from .importer import load_imported

        synset = load_imported(store, cell)
        synset.save(path)
        return synset, 0.0
    cls = get_method(cell.method)
    cfg = cls.Config(**cell.method_config)
    ctx = RunContext(
        device=device, seed=cell.seed, arch=cell.arch_distill, info=info, budget=cell.budget,
        workdir=store.workdir(cell.synset_hash), precision=cell.precision, channels_last=cell.channels_last,
        log=lambda metrics, step: tracker.log_metrics({f"distill/{k}": v for k, v in metrics.items()}, step),
        progress=progress,
        evaluate=intermediate_evaluator(cell, test, device) if test is not None else None,
    )
    t0 = time.perf_counter()
    meta = {"method": cell.method, "method_preset": cell.method_preset, "ipc": cell.ipc, "arch": cell.arch_distill,
            "synset_hash": cell.synset_hash, "seed": cell.seed, "budget": cell.budget.name}
    synset = build_set(cls, cfg, real, cell.ipc, ctx, meta)
    elapsed = time.perf_counter() - t0
    curve = [list(p) for p in ctx.curve]
    synset.meta.pop("curve", None)
    if cls.kind == "distill":
        store.write_curve(cell.synset_hash, {"curve": curve, "iterations": synset.meta.get("iterations"),
                                             "wall_s": synset.meta.get("wall_s", elapsed), "distill_time_s": elapsed})
    if curve:
        tracker.log_artifact(save_curve_png(curve, store.root / "artifacts" / cell.hash / "accuracy_vs_iteration.png",
                                            cell.key))
    synset.save(path)
    return synset, elapsed


def save_png(synset: SyntheticSet, path: Path, min_px: int = 32) -> Path:
    """One row per class, denormalised to [0,1]; tiny images are upscaled (nearest)."""
    import torch.nn.functional as F
    from torchvision.utils import save_image

    x = synset.images.detach().float().cpu()
    if synset.space == "normalized":
        x = x * torch.tensor(synset.std).view(1, -1, 1, 1) + torch.tensor(synset.mean).view(1, -1, 1, 1)
    x = x.clamp(0, 1)
    order = torch.argsort(synset.labels, stable=True)
    x = x[order]
    per_class = max(synset.per_class()) if len(synset) else 1
    if x.shape[-1] < min_px:
        s = math.ceil(min_px / x.shape[-1])
        x = F.interpolate(x, scale_factor=s, mode="nearest")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(x, str(path), nrow=per_class, padding=2, pad_value=1.0)
    return path


def run_cell(cell: Cell, store: ResultStore, tracker, opts: RunOptions, progress: Progress,
             data: tuple[RealData, RealData] | None = None, split: str = "test",
             extra: dict | None = None) -> CellOutcome:
    """Run one cell. ``data=(train, eval)`` replaces the dataset's train/test splits (tuning
    passes a train part and a validation split carved from the training set; ``split='val'``
    then names every accuracy ``val_acc`` so no number of it can pass for a test accuracy).
    ``extra`` fields are added to every row (a tune trial's study and number)."""
    device = select_device(opts.device)
    info = get_info(cell.dataset)
    if data is None:
        real = load_dataset(cell.dataset, True, opts.data)
        test = load_dataset(cell.dataset, False, opts.data)
    else:
        real, test = data
    acc = f"{split}_acc"
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    tracker.start(cell.grid, cell.key, {
        "dbench.cell_key": cell.key, "dbench.cell_hash": cell.hash, "dbench.synset_hash": cell.synset_hash,
        "dbench.version": __version__, "dbench.kind": cell.method_kind, "dbench.budget": cell.budget.name,
    })
    try:
        synset = None
        distill_time = 0.0
        if cell.method_kind == "reference":
            source = RealSubset(real)
            n_train = n_stored = len(real)
        else:
            synset, distill_time = produce_synset(cell, real, store, device, tracker, progress, test)
            x, y = synset.training_tensors()
            source = tensor_source(x, y, device)
            n_train, n_stored = len(y), len(synset)
        plan = eval_plan(cell.protocol, cell.budget, info, cell.arch_eval, n_train, seed=cell.seed,
                         num_eval=cell.num_eval, device=device, precision=cell.precision,
                         channels_last=cell.channels_last, compile=cell.compile, engine=cell.engine,
                         whole_dataset=cell.method_kind == "reference",
                         factor=synset.decode.factor if synset is not None else None,
                         ipc=cell.ipc if synset is not None else None)
        base_row = {**cell_base_row(cell, info, plan.protocol, device, n_train=n_train, n_stored=n_stored),
                    "split": split, **(extra or {})}
        tracker.log_params(mlflow_params(cell, base_row))
        done = store.model_indices(cell.hash)

        def persist(r):
            row = {**base_row, "model_index": r.index, "model_seed": r.seed, acc: r.test_acc,
                   "train_loss": r.train_loss, "train_time_s": r.train_time_s, "test_time_s": r.test_time_s,
                   "steps": r.steps, "engine": r.engine, **({"engine_kernel": r.kernel} if r.kernel else {}),
                   **({"engine_requested": cell.engine} if r.engine != cell.engine else {}),
                   "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            store.write_row(cell.hash, r.index, row)
            tracker.log_metrics({f"eval/{acc}": r.test_acc, "eval/train_time_s": r.train_time_s}, step=r.index)

        t0 = time.perf_counter()
        plan.run(source, info, test, progress, skip=done, on_result=persist)
        eval_time = time.perf_counter() - t0
        rows = [r for r in store.iter_rows({cell.hash}) if r["model_index"] < cell.num_eval]
        accs = torch.tensor([r[acc] for r in rows], dtype=torch.float64)
        mean, std = float(accs.mean()), float(accs.std(unbiased=False))
        summary = {"cell_key": cell.key, "cell": cell.model_dump(mode="json"), f"{acc}_mean": mean, f"{acc}_std": std,
                   "n": len(rows), "distill_time_s": distill_time, "eval_time_s": eval_time,
                   "peak_rss_mib": peak_rss_mib(), "peak_cuda_mib": peak_cuda_mib(device)}
        tracker.log_metrics({f"{acc}_mean": mean, f"{acc}_std": std, "n_models": len(rows),
                             "distill_time_s": distill_time, "eval_time_s": eval_time,
                             "peak_rss_mib": summary["peak_rss_mib"], "peak_cuda_mib": summary["peak_cuda_mib"],
                             "n_images_stored": n_stored, "n_train_images": n_train})
        _log_artifacts(tracker, store, cell, synset, rows, acc)
        store.finish_cell(cell.hash, summary)
        tracker.end("FINISHED")
        return CellOutcome(cell, "finished", mean, std, len(rows))
    except BaseException as e:
        tracker.end("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        if isinstance(e, (KeyboardInterrupt, SystemExit, StoreError)):  # a store that cannot be written stops the grid
            raise
        store.record_failure(cell.hash, {"cell_key": cell.key, "error": f"{type(e).__name__}: {e}",
                                         "traceback": traceback.format_exc()})
        if opts.fail_fast:
            raise
        msg = str(e) if isinstance(e, DbenchError) else f"{type(e).__name__}: {e}"
        return CellOutcome(cell, "failed", error=msg)


def mlflow_params(cell: Cell, row: dict[str, Any]) -> dict[str, str]:
    """The cell's flat config plus what the row resolved (``resolved.lr_img``,
    ``protocol_resolved.dsa_strategy``, ``arch_distill`` as run, versions)."""
    out = {**cell.flat_params(), "cell_hash": cell.hash, "synset_hash": cell.synset_hash}
    for prefix, d in (("resolved", row["resolved_config"]), ("protocol_resolved", row["protocol_config"]),
                      ("extractor", row.get("extractor") or {})):
        out.update({f"{prefix}.{k}": str(v) for k, v in flatten(d).items()})
    for k in ("arch_distill", "params_label", "precision", "torch_version", "hardware", "git_commit", "provenance"):
        out[f"row.{k}"] = str(row.get(k, ""))
    return out


def _log_artifacts(tracker, store: ResultStore, cell: Cell, synset: SyntheticSet | None, rows: list[dict],
                   acc: str = "test_acc") -> None:
    if isinstance(tracker, NullTracker) and type(tracker) is NullTracker:
        return
    art = store.root / "artifacts" / cell.hash
    art.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    cols = ["model_index", "model_seed", acc, "train_loss", "train_time_s", "test_time_s", "steps"]
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    w.writerows(sorted(rows, key=lambda r: r["model_index"]))
    (art / "eval_runs.csv").write_text(buf.getvalue())
    tracker.log_artifact(art / "eval_runs.csv")
    if synset is not None:
        tracker.log_artifact(store.synset_path(cell.synset_hash))
        tracker.log_artifact(save_png(synset, art / "synset.png"))


def _skipped(store: ResultStore, cell: Cell) -> CellOutcome:
    s = store.cell_summary(cell.hash) or {}
    return CellOutcome(cell, "skipped", s.get("test_acc_mean", float("nan")), s.get("test_acc_std", float("nan")),
                       s.get("n", 0))


def _log(progress: Progress, msg: str) -> None:
    log = getattr(progress, "log", None)
    if log is not None:
        log(msg)


def _claimed_run(cell: Cell, store: ResultStore, tracker, opts: RunOptions, progress: Progress,
                 bar) -> CellOutcome | None:
    """Run ``cell`` under its claim; None if another live process holds it (or is still
    making its synthetic set). A finished cell is skipped, checked again once claimed."""
    if store.is_finished(cell.hash, cell.num_eval):
        return _skipped(store, cell)
    claims = store.claims
    lease = claims.try_acquire(f"cell-{cell.hash}")
    if lease is None:
        return None
    with lease:
        if store.is_finished(cell.hash, cell.num_eval):  # finished by another process meanwhile
            return _skipped(store, cell)
        set_lease = None
        if cell.method_kind != "reference" and not store.synset_path(cell.synset_hash).exists():
            # cells that differ only in the evaluation network share one set: make it once
            set_lease = claims.try_acquire(f"set-{cell.synset_hash}")
            if set_lease is None:
                return None
            set_lease.start()
        try:
            tracker.close_stale_runs(cell.grid, cell.hash)  # we hold the cell: a RUNNING run of it is dead
            bar.update(cell=cell.key)
            out = run_cell(cell, store, tracker, opts, progress)
        finally:
            if set_lease is not None:
                set_lease.release()
        store.remove_finished_work(cell.synset_hash)
        if lease.lost:
            _log(progress, f"[yellow]note[/]: {cell.key}: this process stalled past its claim and another took "
                           "the cell over; rows already written by either are kept once, never duplicated.")
        return out


def run_cells(cells: list[Cell], store: ResultStore, tracker=None, opts: RunOptions | None = None,
              progress: Progress = NullProgress(), on_outcome: Callable[[CellOutcome], None] | None = None,
              poll_s: float = 2.0) -> list[CellOutcome]:
    """Run every unfinished cell; outcomes in the order of ``cells`` (``on_outcome`` is called
    as each one ends). Each cell is computed by one process only: cells another live process
    holds are left to it and waited for (reported ``skipped`` once it finishes them; taken
    over if it dies). Temporary files of interrupted writes, checkpoints of saved sets and
    MLflow runs left RUNNING by dead processes are cleaned up first."""
    opts = opts or RunOptions()
    tracker = tracker or NullTracker()
    store.clean_stale_tmp()
    store.remove_finished_work()
    claims = store.claims
    for grid in sorted({c.grid for c in cells}):
        tracker.close_stale_runs(grid, live=lambda h: claims.holder(f"cell-{h}") is not None)
    outcomes: dict[int, CellOutcome] = {}
    bar = progress.task("grid cells", len(cells))
    pending = list(range(len(cells)))
    told = False
    while pending:
        held = []
        for i in pending:
            out = _claimed_run(cells[i], store, tracker, opts, progress, bar)
            if out is None:
                held.append(i)
                continue
            outcomes[i] = out
            if on_outcome:
                on_outcome(out)
            bar.advance()
        if held and len(held) == len(pending):
            if not told:
                holders = {h.describe() for i in held if (h := claims.holder(f"cell-{cells[i].hash}")) is not None}
                who = f" ({', '.join(sorted(holders))})" if holders else ""
                _log(progress, f"waiting for {len(held)} cell(s) other processes are running{who}; "
                               "they are not recomputed here.")
                told = True
            time.sleep(poll_s)
        pending = held
    return [outcomes[i] for i in range(len(cells))]
