"""The ``dbench`` command line: a thin Typer shell over the library.

User errors (unknown names, malformed YAML, missing data, bad files) print one line and
exit with code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

app = typer.Typer(
    name="dbench", help="Benchmark harness and leaderboard for dataset distillation.",
    pretty_exceptions_show_locals=False, no_args_is_help=True, add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

# ------------------------------------------------------------ shared option types
GridOpt = Annotated[Path, typer.Option("--grid", "-g", help="Grid YAML (e.g. tables/quickstart.yaml).")]
OptGridOpt = Annotated[
    Optional[Path], typer.Option("--grid", "-g", help="Restrict to this grid's cells (default: whole store).")
]
BudgetOpt = Annotated[
    Optional[str], typer.Option("--budget", "-b", help="Override the grid's budget: paper, cpu or smoke.")
]
OnlyOpt = Annotated[
    Optional[list[str]],
    typer.Option("--only", help="KEY=V1,V2 filter (repeatable): method, dataset, ipc, arch_distill, arch_eval, "
                                "protocol, exp.")
]
DataDirOpt = Annotated[
    Optional[Path], typer.Option("--data-dir", help="Folder with dataset files (or set DBENCH_DATA_DIR).")
]
ResultsOpt = Annotated[
    Optional[Path],
    typer.Option("--results-dir", help="Results store (default results/store, or DBENCH_RESULTS_DIR).")
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:1 ...")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")]
TrackingOpt = Annotated[
    Optional[str], typer.Option("--tracking-uri", help="MLflow tracking URI (default: sqlite in the results dir).")
]
NoMlflowOpt = Annotated[bool, typer.Option("--no-mlflow", help="Do not log to MLflow.")]
EXEC_PANEL = "Executors (where the cells run)"


class Terminated(KeyboardInterrupt):
    """SIGTERM (what batch schedulers send before killing a job), raised in the main thread so
    it unwinds like Ctrl-C: the write in progress is finished or its temporary file removed,
    the cell's MLflow run is marked KILLED and its claim released."""


@contextlib.contextmanager
def _sigterm_as_interrupt():
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a repeated TERM must not cut the clean-up short
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, on_term)
    except (ValueError, OSError):
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _user_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        debug = kwargs.get("debug", False) or os.environ.get("DBENCH_DEBUG") == "1"
        from .errors import DbenchError

        try:
            with _sigterm_as_interrupt():
                return fn(*args, **kwargs)
        except DbenchError as e:
            if debug:
                raise
            err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except Terminated:
            err_console.print("[yellow]terminated[/] (SIGTERM): finished cells and models are saved, the cell in "
                              "progress is marked KILLED in MLflow; rerun the same command to resume.", soft_wrap=True)
            raise typer.Exit(143) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]: finished cells and models are saved; "
                              "rerun the same command to resume.")
            raise typer.Exit(130) from None

    return wrapper


def _note(msg: str) -> None:
    err_console.print(f"[yellow]note:[/] {msg}", highlight=False, soft_wrap=True)


def _check_grid_file(path: Path, what: str = "--grid") -> None:
    from .errors import ConfigError

    if path.is_dir():
        raise ConfigError(f"{what} {path}: is a folder; give a grid YAML file (e.g. tables/quickstart.yaml).")


def _print_frame(df, title: str | None = None) -> None:
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=title, show_lines=False)
    for c in df.columns:
        t.add_column(str(c))
    for row in df.itertuples(index=False):  # cells are data, not rich markup ('DM [official]')
        t.add_row(*[escape(str(v)) for v in row])
    console.print(t)


# ------------------------------------------------------------------------- run


@app.command()
@_user_errors
def run(
    grid: GridOpt,
    budget: BudgetOpt = None,
    only: OnlyOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the cells and exit.")] = False,
    data_dir: DataDirOpt = None,
    results_dir: ResultsOpt = None,
    tracking_uri: TrackingOpt = None,
    no_mlflow: NoMlflowOpt = False,
    device: DeviceOpt = "auto",
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop at the first failing cell.")] = False,
    executor: Annotated[str, typer.Option("--executor", "-x", help="serial (this process, default), local (a pool of "
                                          "worker processes), ray or slurm (submitit job array).",
                                          rich_help_panel=EXEC_PANEL)] = "serial",
    gpus: Annotated[Optional[str], typer.Option("--gpus", help="local: GPU ids for the pool, e.g. 0,1,2,3 (each job "
                                                "sees only its GPU).", rich_help_panel=EXEC_PANEL)] = None,
    jobs_per_gpu: Annotated[int, typer.Option("--jobs-per-gpu", help="local: concurrent cells per GPU.",
                                              rich_help_panel=EXEC_PANEL)] = 1,
    jobs: Annotated[Optional[int], typer.Option("--jobs", "-j", help="local without --gpus: concurrent CPU workers "
                                                "(default 1).", rich_help_panel=EXEC_PANEL)] = None,
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="ray: cluster address ('auto': the "
                                                       "running cluster); default: start a local Ray.",
                                                       rich_help_panel=EXEC_PANEL)] = None,
    gpus_per_cell: Annotated[float, typer.Option("--gpus-per-cell", help="ray (fractional allowed) / slurm: GPUs per "
                                                 "cell.", rich_help_panel=EXEC_PANEL)] = 0.0,
    cpus_per_cell: Annotated[float, typer.Option("--cpus-per-cell", help="ray / slurm: CPUs per cell.",
                                                 rich_help_panel=EXEC_PANEL)] = 1.0,
    max_retries: Annotated[Optional[int], typer.Option("--max-retries", help="local / ray: restarts of a cell whose "
                                                       "worker died (default 1 local, 3 ray).",
                                                       rich_help_panel=EXEC_PANEL)] = None,
    slurm_partition: Annotated[Optional[str], typer.Option("--slurm-partition", help="slurm: partition.",
                                                           rich_help_panel=EXEC_PANEL)] = None,
    slurm_time: Annotated[str, typer.Option("--slurm-time", help="slurm: time limit per cell (HH:MM:SS).",
                                            rich_help_panel=EXEC_PANEL)] = "04:00:00",
    max_parallel: Annotated[int, typer.Option("--max-parallel", help="slurm: array jobs running at once.",
                                              rich_help_panel=EXEC_PANEL)] = 32,
    wait: Annotated[bool, typer.Option("--wait", help="slurm: follow the jobs until they end (default: return once "
                                       "submitted; see `dbench status`).", rich_help_panel=EXEC_PANEL)] = False,
    debug: DebugOpt = False,
) -> None:
    """Run every cell of a grid (skipping finished ones) and print the leaderboard."""
    from .data import DataSource, check_ipc_fits, load_dataset
    from .grid import expand, load_grid, parse_only
    from .progress import console_progress
    from .runner import RunOptions, run_cells
    from .runtime import select_device
    from .store import ResultStore
    from .tables import leaderboard, pivot
    from .tracking import make_tracker

    _check_grid_file(grid)
    spec = load_grid(grid)
    cells = expand(spec, budget=budget, only=parse_only(only))
    ex = _executor_from(locals(), wait=wait)
    store = ResultStore(results_dir)
    store.check(write=False)
    if dry_run:
        import pandas as pd

        from .cost import estimate, fmt_hours, load_calibration

        cal = load_calibration()
        costs = estimate(cells, cal or {})
        df = pd.DataFrame([{"key": c.key, "hash": c.hash, "synset": c.synset_hash, "models": c.num_eval,
                            "status": "done" if store.is_finished(c.hash, c.num_eval) else "todo",
                            "est GPU": fmt_hours(k.gpu_h), "est CPU (1 core)": fmt_hours(k.cpu_h),
                            **({"caveat": c.caveat} if any(x.caveat for x in cells) else {})}
                           for c, k in zip(cells, costs)])
        _print_frame(df, f"{spec.name}: {len(cells)} cells") if len(df) else console.print("no cells match")
        if len(df):
            cpu = (f"{sum(k.cpu_h for k in costs):.2f} CPU-hours on 1 core (measured: {cal['machine']}, {cal['date']})"
                   if cal else "CPU-hours: no calibration (run `dbench cost --calibrate`)")
            console.print(f"ESTIMATED COST, total: {sum(k.gpu_h for k in costs):.1f} GPU-hours (model: "
                          f"benchmark/cost.py; papers' figures where reported, else estimated); {cpu}. "
                          "Shared sets and extractors are charged to the first cell using them.")
        return
    if not cells:
        console.print("[yellow]no cells match the grid and --only filters[/]")
        return
    dev = select_device(device)  # a device that is not there fails now, not in the first cell
    store.check(write=True)  # a file, /proc, a read-only file system: before any compute
    for c in cells:  # an unreadable cell summary or a stray file in rows/ fails here, not mid-grid
        store.model_indices(c.hash)
        store.cell_summary(c.hash)
    opts = RunOptions(device=device, data=DataSource.from_env(data_dir), fail_fast=fail_fast)
    for ds in sorted({c.dataset for c in cells}):  # fail on missing or bad data before any compute is spent
        train = load_dataset(ds, True, opts.data)
        load_dataset(ds, False, opts.data)
        sizes = [int(ix.numel()) for ix in train.class_indices]
        for ipc in sorted({c.ipc for c in cells if c.dataset == ds and c.method_kind != "reference"}):
            check_ipc_fits(train.info, ipc, sizes)
    if dev.type == "cpu" and any(c.precision == "fp16" for c in cells):
        _note("precision fp16 runs as bf16 on the CPU (fp16 autocast needs CUDA); rows record precision bf16.")
    tracker = make_tracker(tracking_uri, store.root, enabled=not no_mlflow, note=_note)
    tracker.experiment(spec.name)  # a name MLflow refuses fails now
    console.print(f"[bold]{spec.name}[/]: {len(cells)} cells, budget [cyan]{cells[0].budget.name}[/], "
                  f"protocol [cyan]{cells[0].protocol_name}[/], results in {store.root}, MLflow {tracker.uri}")
    if ex.name == "slurm" and not wait:
        from .executors import cell_states

        submitted, left = ex.submit(cells, store, opts)
        counts = _count_states(cell_states(cells, store))
        console.print(f"submitted {len(submitted)} cell(s) as a job array ({ex.describe()}); "
                      f"left alone {len(left)} (done or already queued/running). Now: {counts}.")
        console.print(f"follow with `dbench status --grid {grid}`; log finished cells to MLflow with "
                      f"`dbench collect --grid {grid}` (also done by `dbench run ... --wait`).")
        return
    if ex.name != "serial":
        console.print(f"executor: {ex.describe()} (workers log nothing to MLflow; finished cells are logged here "
                      "after they end)")
    with console_progress(console) as progress:
        def report(o):
            if o.status == "failed":
                progress.log(f"[red]failed[/] {o.cell.key}: {o.error}")
            else:
                progress.log(f"[green]{o.status}[/] {o.cell.key}: {o.acc_mean:.2f} ± {o.acc_std:.2f} (n={o.n})")

        if ex.name == "serial":
            outcomes = run_cells(cells, store, tracker, opts, progress, on_outcome=report)
        else:
            from .executors import run_grid

            outcomes = run_grid(cells, store, ex, tracker=tracker, opts=opts, progress=progress, on_outcome=report)
    rows = list(store.iter_rows({c.hash for c in cells}))
    board = leaderboard(_select_rows(rows, cells))
    _print_frame(pivot(board), f"{spec.name} leaderboard (test accuracy %, mean ± std over n models)")
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        err_console.print(f"[red]{len(failed)} cell(s) failed[/]; details in {store.root / 'failures'}. "
                          "Rerun to retry them.")
        raise typer.Exit(1)


def _count_states(states) -> str:
    from collections import Counter

    n = Counter(s for _, s, _ in states)
    return ", ".join(f"{k} {n[k]}" for k in ("done", "running", "queued", "failed", "todo") if n[k]) or "no cells"


def _grid_cells(grid: Path, budget, only):
    from .grid import expand, load_grid, parse_only

    _check_grid_file(grid)
    spec = load_grid(grid)
    return spec, expand(spec, budget=budget, only=parse_only(only))


@app.command()
@_user_errors
def status(grid: GridOpt, budget: BudgetOpt = None, only: OnlyOpt = None, results_dir: ResultsOpt = None,
           debug: DebugOpt = False) -> None:
    """Per cell: done, running, queued, failed or todo (results store + the SLURM queue)."""
    import pandas as pd

    from .executors import cell_states
    from .store import ResultStore

    spec, cells = _grid_cells(grid, budget, only)
    store = ResultStore(results_dir)
    store.check(write=False)
    states = cell_states(cells, store)
    df = pd.DataFrame([{"key": c.key, "hash": c.hash, "state": s, "job": j} for c, s, j in states])
    _print_frame(df, f"{spec.name}: {_count_states(states)}") if len(df) else console.print("no cells match")


@app.command()
@_user_errors
def cancel(grid: GridOpt, budget: BudgetOpt = None, only: OnlyOpt = None, results_dir: ResultsOpt = None,
           debug: DebugOpt = False) -> None:
    """Cancel the SLURM jobs `dbench run --executor slurm` submitted for this grid's unfinished cells."""
    from .executors import cancel as cancel_jobs
    from .store import ResultStore

    _, cells = _grid_cells(grid, budget, only)
    ids = cancel_jobs(cells, ResultStore(results_dir))
    console.print(f"cancelled {len(ids)} job(s): {' '.join(ids)}" if ids else "nothing to cancel (no queued or "
                  "running jobs recorded for these cells)")


@app.command()
@_user_errors
def collect(grid: GridOpt, budget: BudgetOpt = None, only: OnlyOpt = None, results_dir: ResultsOpt = None,
            tracking_uri: TrackingOpt = None, debug: DebugOpt = False) -> None:
    """Log finished cells that workers ran (rows in the results store) to MLflow, once each."""
    from .executors import collect as collect_cells
    from .store import ResultStore
    from .tracking import make_tracker

    spec, cells = _grid_cells(grid, budget, only)
    store = ResultStore(results_dir)
    store.check(write=False)
    tracker = make_tracker(tracking_uri, store.root, note=_note)
    n = collect_cells(cells, store, tracker)
    done = sum(store.is_finished(c.hash, c.num_eval) for c in cells)
    console.print(f"{spec.name}: logged {n} cell(s) to MLflow ({tracker.uri}); {done}/{len(cells)} cells done")


def _select_rows(rows: list[dict], cells) -> list[dict]:
    from .grid import select_cell_rows

    return select_cell_rows(rows, cells)


@app.command()
@_user_errors
def validate(grid: Annotated[Path, typer.Argument(help="Grid YAML.")], budget: BudgetOpt = None,
             debug: DebugOpt = False) -> None:
    """Check a grid (names, fields, presets) and print its cell count."""
    from .data import check_ipc_fits, get_info
    from .grid import expand, load_grid

    _check_grid_file(grid, "grid")
    cells = expand(load_grid(grid), budget=budget)
    for ds, ipc in sorted({(c.dataset, c.ipc) for c in cells if c.method_kind != "reference"}):
        check_ipc_fits(get_info(ds), ipc)  # the registry's class sizes (a user dataset's: from its train split)
    console.print(f"{grid}: ok, {len(cells)} cells")


@app.command()
@_user_errors
def cost(
    grid: OptGridOpt = None,
    budget: BudgetOpt = None,
    only: OnlyOpt = None,
    calibrate: Annotated[bool, typer.Option("--calibrate", help="Time each method's distillation iterations and "
                                            "evaluation epochs on this CPU (a few minutes; set OMP_NUM_THREADS=1) and "
                                            "write the calibration file.")] = False,
    calibration: Annotated[Optional[Path], typer.Option("--calibration", help="Calibration JSON (default "
                                                        "results/cost/cpu_calibration.json).")] = None,
    method: Annotated[Optional[list[str]], typer.Option("--method", help="--calibrate: only these methods.")] = None,
    debug: DebugOpt = False,
) -> None:
    """Estimated GPU- and CPU-hours of a grid's cells (benchmark/cost.py), or --calibrate the CPU figures."""
    from .cost import CALIBRATION_PATH, estimate, fmt_hours, load_calibration
    from .cost import calibrate as run_calibration
    from .errors import ConfigError

    if calibrate:
        res = run_calibration(calibration or CALIBRATION_PATH, method, log=console.print)
        console.print(f"wrote {calibration or CALIBRATION_PATH} ({res['machine']})")
        if grid is None:
            return
    if grid is None:
        raise ConfigError("give --grid FILE (or --calibrate).")
    spec, cells = _grid_cells(grid, budget, only)
    cal = load_calibration(calibration)
    costs = estimate(cells, cal or {})
    import pandas as pd

    by: dict[tuple, list[float]] = {}
    for c, k in zip(cells, costs):
        v = by.setdefault((c.method_label, c.dataset, c.protocol_name), [0, 0.0, 0.0])
        v[0] += 1
        v[1] += k.gpu_h
        v[2] += k.cpu_h or 0.0
    df = pd.DataFrame([{"method": m, "dataset": d, "protocol": p, "cells": n, "est GPU": fmt_hours(g),
                        "est CPU (1 core)": fmt_hours(h) if cal else "-"} for (m, d, p), (n, g, h) in by.items()])
    _print_frame(df, f"{spec.name}: {len(cells)} cells")
    console.print(f"total: {sum(k.gpu_h for k in costs):.1f} GPU-hours; "
                  + (f"{sum(k.cpu_h for k in costs):.2f} CPU-hours on 1 core ({cal['machine']})" if cal
                     else "no CPU calibration"))


# ----------------------------------------------------------------------- table


VIEWS = ("leaderboard", "efficiency", "cross_arch", "precision", "engine", "paired", "continual")


@app.command()
@_user_errors
def table(
    grid: OptGridOpt = None,
    budget: BudgetOpt = None,
    only: OnlyOpt = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="md, latex or csv (tidy).")] = "md",
    out: Annotated[Optional[Path], typer.Option("--out", help="Also write <name>.md/.tex/.csv into this folder, and "
                                                "the rows they were built from to <out>/rows/<name>.jsonl.")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="File stem for --out (default: the grid's name, or "
                                                               "'all'); e.g. for an --only subset of a grid.")] = None,
    view: Annotated[str, typer.Option("--view", help="leaderboard; efficiency: accuracy vs distillation "
                                      "iteration and the iterations each method needs to reach its baseline "
                                      "(IDC for DREAM/DREAM+; the ordinary sampler for `sampler: representative`), "
                                      "with --out also a PNG plot; cross_arch: method x distillation arch rows, "
                                      "one column per evaluation arch and the mean transfer to the others; "
                                      "precision: fp32 vs bf16 paired on the same sets and networks; "
                                      "engine: the stacked engine vs the loop on the same networks (+ train s/net); "
                                      "paired: each method minus random and minus the cell's best, paired on "
                                      "set seed and network (95% CI, paired t p-value, tie when the CI covers 0), "
                                      "with DD-Ranking's LRS/ARS from fractions; continual: the per-step "
                                      "table of `dbench continual` rows (--results-dir "
                                      "<results>/continual/<name>).")] = "leaderboard",
    lrs_w: Annotated[float, typer.Option("--lrs-w", help="DD-Ranking LRS weight w: alpha = w IOR - (1-w) HLR.")] = 0.5,
    ars_gamma: Annotated[float, typer.Option("--ars-gamma", help="DD-Ranking ARS weight of the augmented gap.")] = 0.5,
    rows_file: Annotated[Optional[Path], typer.Option("--rows", help="Build from an exported rows file "
                                                      "(<out>/rows/<name>.jsonl) instead of the results "
                                                      "store.")] = None,
    results_dir: ResultsOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Regenerate a table from saved result rows alone (nothing is rerun, no method code is imported)."""
    from .errors import ConfigError
    from .store import ResultStore, atomic_write_text
    from .tables import (
        efficiency,
        leaderboard,
        plot_efficiency,
        render,
        render_cross_arch,
        render_efficiency,
        render_engine,
        render_paired,
        render_precision,
    )

    if view not in VIEWS:
        raise ConfigError(f"--view {view}: use {', '.join(VIEWS)}.")
    if fmt not in ("md", "latex", "csv"):
        raise ConfigError(f"--format {fmt}: use md, latex or csv.")
    if name is not None and (not name or "/" in name or "\\" in name or name.startswith(".")):
        raise ConfigError(f"--name {name!r}: give a plain file stem such as dream_efficiency_dream_plus.")
    if out is not None and out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file; give a folder.")

    store = ResultStore(results_dir)
    if rows_file is None:
        store.check(write=False)
    curves: dict[str, dict] = {}
    if rows_file is not None:
        rows, curves = read_rows_file(rows_file)
        name = name or rows_file.stem
        if grid is not None or only:
            raise ConfigError("--rows builds from the file alone; drop --grid/--only (filter when exporting).")
    elif grid is not None:
        from .grid import expand, load_grid, parse_only

        _check_grid_file(grid)
        spec = load_grid(grid)
        cells = expand(spec, budget=budget, only=parse_only(only))
        rows = _select_rows(list(store.iter_rows({c.hash for c in cells})), cells)
        name = name or spec.name
    else:
        from .only import parse_only, row_matches

        if store.root.exists() and not store.root.is_dir():
            raise ConfigError(f"--results-dir {store.root}: is a file; give the results folder.")
        filt = parse_only(only)
        rows = [r for r in store.iter_rows() if row_matches(r, filt)]
        name = name or "all"
    if rows_file is None and view == "efficiency":
        curves = {h: store.curve(h) for h in {r["synset_hash"] for r in rows}}
    if view == "efficiency":
        board = efficiency(rows, curves)
        draw, stem = render_efficiency, f"{name}_efficiency"
    elif view == "precision":
        board, draw, stem = rows, render_precision, f"{name}_precision"
    elif view == "engine":  # stacked vs loop evaluation of the same networks
        board, draw, stem = rows, render_engine, f"{name}_engine"
    elif view == "continual":  # rows of `dbench continual` (--results-dir <results>/continual/<name>)
        from .tables import continual_table, render_frame

        board, stem = rows, f"{name}_continual"

        def draw(b, f):
            return render_frame(continual_table(b), f)
    elif view == "paired":
        board, draw, stem = leaderboard(rows, lrs_weight=lrs_w, ars_gamma=ars_gamma), render_paired, f"{name}_paired"
    else:
        board = leaderboard(rows, lrs_weight=lrs_w, ars_gamma=ars_gamma)
        draw, stem = (render_cross_arch, f"{name}_cross_arch") if view == "cross_arch" else (render, name)
    text = draw(board, fmt)
    if out is not None:
        for f, ext in (("md", "md"), ("latex", "tex"), ("csv", "csv")):
            atomic_write_text(out / f"{stem}.{ext}", draw(board, f) + "\n")
        written = [f"{out}/{stem}.md, .tex, .csv"]
        if view == "efficiency":
            plot_efficiency(rows, curves, out / f"{stem}.png")
            written.append(".png")
        if rows_file is None or rows_file.resolve() != (out / "rows" / f"{name}.jsonl").resolve():
            write_rows_file(out / "rows" / f"{name}.jsonl", rows, curves)
            written.append(f"rows/{name}.jsonl")
        err_console.print("wrote " + ", ".join(written))
    if fmt == "csv":
        sys.stdout.write(text)
    else:
        print(text)


@app.command()
@_user_errors
def papers(
    table_id: Annotated[Optional[str], typer.Option("--table", "-t", help="Render this entry, e.g. \"DM Table 3\" "
                                                    "(default: list every table of the five seed papers).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write <id>.md and <id>.csv (tidy) here.")] = None,
    rows_file: Annotated[Optional[Path], typer.Option("--rows", help="Build from an exported rows file "
                                                      "instead of the results store.")] = None,
    budget: BudgetOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="The listing (or the rendered table) as JSON.")] = False,
    results_dir: ResultsOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Every table of the seed papers (DM, IDM, DREAM, DREAM+, DataDAM): spec, cells, cost and
    status; with --table, that table from result rows in the paper's layout, ours beside published."""
    from .errors import ConfigError
    from .papers import find_table, header, listing, render_entry, select_rows
    from .store import ResultStore, atomic_write_text
    from .tables import render_frame

    if table_id is None:
        if out is not None or rows_file is not None:
            raise ConfigError("--out/--rows render one table: add --table ID (`dbench papers` lists the ids).")
        df = listing(budget=budget)
        if as_json:
            print(df.to_json(orient="records", indent=1, force_ascii=False))
        else:  # a compact table, then what each shows and why it has its status
            from rich.markup import escape

            _print_frame(df[["id", "spec", "cells", "cost", "status", "check"]].rename(columns={"check": "runs here"}),
                         f"{len(df)} tables and figures of the seed papers (cost: benchmark/cost.py estimate; "
                         "runs here: a CPU-scale check)")
            for r in df.itertuples():
                console.print(f"[bold]{escape(r.id)}[/]: {escape(r.what)}. [dim]{escape(r.status)}: "
                              f"{escape(r.reason)}[/]", highlight=False)
        return
    entry = find_table(table_id)
    if out is not None and out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file; give a folder.")
    if rows_file is not None:
        rows = read_rows_file(rows_file)[0]
    else:
        store = ResultStore(results_dir)
        store.check(write=False)
        rows = select_rows(entry, store, budget)
    view, tidy = render_entry(entry, rows)
    md = header(entry) + "\n\n" + render_frame(view, "md", empty="(no layout: no published rows and no results)")
    if out is not None:
        stem = entry.id.replace(" ", "_").replace("+", "plus").replace("/", "-").replace(".", "")
        atomic_write_text(out / f"{stem}.md", md + "\n")
        atomic_write_text(out / f"{stem}.csv", render_frame(tidy, "csv"))
        err_console.print(f"wrote {out}/{stem}.md, .csv")
    print(view.to_json(orient="records", force_ascii=False) if as_json else md)


def write_rows_file(path: Path, rows: list[dict], curves: dict[str, dict]) -> None:
    """The rows a committed table was built from (one JSON object a line, sorted), plus the
    curve records its efficiency view needs: ``dbench table --rows`` rebuilds it from this."""
    import json

    from .store import atomic_write_text

    lines = [json.dumps({"row": r}, sort_keys=True) for r in
             sorted(rows, key=lambda r: (r.get("cell_hash", ""), r.get("model_index", 0)))]
    lines += [json.dumps({"curve": c, "synset_hash": h}, sort_keys=True) for h, c in sorted(curves.items()) if c]
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_rows_file(path: Path) -> tuple[list[dict], dict[str, dict]]:
    import json

    from .errors import ConfigError
    from .rows import upgrade

    if not path.is_file():
        raise ConfigError(f"--rows {path}: no such file (written by `dbench table --out DIR` as DIR/rows/NAME.jsonl).")
    rows, curves = [], {}
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if "row" in rec:
                rows.append(upgrade(rec["row"]))
            else:
                curves[rec["synset_hash"]] = rec["curve"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ConfigError(f"{path}:{i}: not a dbench rows line; "
                              "regenerate the file with `dbench table --out`.") from None
    return rows, curves


# ------------------------------------------------------------------------ site


@app.command()
@_user_errors
def site(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the site into (index.html, rows/, img/, "
                                      "assets/); it opens from file:// with no server or network.")] = Path("site"),
    rows_files: Annotated[Optional[list[Path]], typer.Option("--rows", help="An exported rows file "
                                                             "(<out>/rows/<name>.jsonl of `dbench table --out`) or a "
                                                             "folder of them; repeatable.")] = None,
    more_rows: Annotated[Optional[list[Path]], typer.Argument(help="More rows files (so that a shell glob after "
                                                              "--rows works).", show_default=False)] = None,
    results_dir: ResultsOpt = None,
    images: Annotated[bool, typer.Option("--images/--no-images", help="Image grids of the synthetic sets found in "
                                         "the results store (needs torch).")] = True,
    title: Annotated[str, typer.Option("--title", help="Page title.")] = "dbench leaderboard",
    debug: DebugOpt = False,
) -> None:
    """The leaderboard as a static site built from result rows alone (store and/or rows files)."""
    from .site import build_site, collect

    inputs = collect([*(rows_files or []), *(more_rows or [])], results_dir)
    index = build_site(inputs, out, images=images, title=title)
    err_console.print(f"wrote {index} ({len(inputs.rows)} rows from " + "; ".join(inputs.sources) + ")")


# ------------------------------------------------------------------------ tune


# executor options of `tune` and `continual` (the same names and meaning as `run`'s)
JOBS_PANEL = "Executors (where the trials / jobs run)"
ExecOpt = Annotated[str, typer.Option("--executor", "-x", help="serial (this process, default), local (worker "
                                      "processes), ray or slurm (a job array, followed until it ends).",
                                      rich_help_panel=JOBS_PANEL)]
GpusOpt = Annotated[Optional[str], typer.Option("--gpus", help="local: GPU ids for the pool, e.g. 0,1,2,3 (each job "
                                                "sees only its GPU).", rich_help_panel=JOBS_PANEL)]
JobsPerGpuOpt = Annotated[int, typer.Option("--jobs-per-gpu", help="local: concurrent jobs per GPU.",
                                            rich_help_panel=JOBS_PANEL)]
JobsOpt = Annotated[Optional[int], typer.Option("--jobs", "-j", help="local without --gpus: concurrent CPU workers "
                                                "(default 1); tune: number of study workers with any executor.",
                                                rich_help_panel=JOBS_PANEL)]
RayAddressOpt = Annotated[Optional[str], typer.Option("--ray-address", help="ray: cluster address ('auto': the "
                                                      "running cluster); default: start a local Ray.",
                                                      rich_help_panel=JOBS_PANEL)]
GpusPerCellOpt = Annotated[float, typer.Option("--gpus-per-cell", help="ray (fractional allowed) / slurm: GPUs per "
                                               "job.", rich_help_panel=JOBS_PANEL)]
CpusPerCellOpt = Annotated[float, typer.Option("--cpus-per-cell", help="ray / slurm: CPUs per job.",
                                               rich_help_panel=JOBS_PANEL)]
MaxRetriesOpt = Annotated[Optional[int], typer.Option("--max-retries", help="local / ray: restarts of a job whose "
                                                      "worker died (default 1 local, 3 ray).",
                                                      rich_help_panel=JOBS_PANEL)]
PartitionOpt = Annotated[Optional[str], typer.Option("--slurm-partition", help="slurm: partition.",
                                                     rich_help_panel=JOBS_PANEL)]
SlurmTimeOpt = Annotated[str, typer.Option("--slurm-time", help="slurm: time limit per job (HH:MM:SS).",
                                           rich_help_panel=JOBS_PANEL)]
MaxParallelOpt = Annotated[int, typer.Option("--max-parallel", help="slurm: array jobs running at once.",
                                             rich_help_panel=JOBS_PANEL)]


EXECUTOR_OPTIONS = ("gpus", "jobs_per_gpu", "jobs", "ray_address", "gpus_per_cell", "cpus_per_cell",
                    "slurm_partition", "slurm_time", "max_parallel")


def _executor_from(options: dict, *, wait: bool = True):
    """The ``--executor`` of a command built from its job options (the command's ``locals()``);
    ``--max-retries`` left out keeps each executor's own default."""
    from .executors import make_executor

    kw = {k: options[k] for k in EXECUTOR_OPTIONS}
    if options.get("max_retries") is not None:
        kw["max_retries"] = options["max_retries"]
    return make_executor(options["executor"], wait=wait, **kw)


@app.command()
@_user_errors
def tune(
    spec_file: Annotated[Path, typer.Argument(help="Tune YAML (e.g. tables/tune/dm_digits.yaml).")],
    trials: Annotated[Optional[int], typer.Option("--trials", "-n", help="Completed trials to reach (default: "
                                                  "the file's `trials`); a rerun continues the study.")] = None,
    write_grid: Annotated[Optional[Path], typer.Option("--write-grid", help="Write the best parameters as a grid "
                                                       "(beside random) whose `dbench run` measures test "
                                                       "accuracy.")] = None,
    storage: Annotated[Optional[str], typer.Option("--storage", help="Optuna storage URL (default: sqlite in "
                                                   "<results>/tune); share one to tune from several machines.")] = None,
    data_dir: DataDirOpt = None,
    results_dir: ResultsOpt = None,
    tracking_uri: TrackingOpt = None,
    no_mlflow: NoMlflowOpt = False,
    device: DeviceOpt = "auto",
    executor: ExecOpt = "serial",
    gpus: GpusOpt = None,
    jobs_per_gpu: JobsPerGpuOpt = 1,
    jobs: JobsOpt = None,
    ray_address: RayAddressOpt = None,
    gpus_per_cell: GpusPerCellOpt = 0.0,
    cpus_per_cell: CpusPerCellOpt = 1.0,
    max_retries: MaxRetriesOpt = None,
    slurm_partition: PartitionOpt = None,
    slurm_time: SlurmTimeOpt = "04:00:00",
    max_parallel: MaxParallelOpt = 32,
    debug: DebugOpt = False,
) -> None:
    """Optuna sweep on a validation split carved from the training set (the test set is never read)."""
    from .data import DataSource
    from .errors import ConfigError
    from .progress import console_progress
    from .runner import RunOptions
    from .store import results_dir as resolve_results
    from .tracking import make_tracker
    from .tune import load_tune, run_tune, trials_frame, write_best_grid

    if trials is not None and trials < 1:
        raise ConfigError(f"--trials {trials}: give a number >= 1.")
    spec = load_tune(spec_file)
    ex = _executor_from(locals())
    root = resolve_results(results_dir)
    tracker = make_tracker(tracking_uri, root, enabled=not no_mlflow)
    opts = RunOptions(device=device, data=DataSource.from_env(data_dir))
    console.print(f"[bold]{spec.name}[/]: study {spec.study_name}, {trials or spec.trials} trials, "
                  f"{spec.method.label} on {spec.dataset} ipc {spec.ipc}, validation {spec.validation_per_class}/class "
                  f"held out of train, budget [cyan]{spec.budget}[/], MLflow {tracker.uri}")
    with console_progress(console) as progress:
        def report(t):
            val = f"{t.value:.2f}" if t.value is not None else t.state.name.lower()
            progress.log(f"trial {t.number}: {t.params} -> val acc {val}")

        if ex.name != "serial":
            where = storage or root / "tune" / "optuna.journal"
            console.print(f"executor: {ex.describe()}; workers share the study ({where}) and log nothing to "
                          "MLflow (done here after)")
        res = run_tune(spec, root, tracker, opts, progress, storage=storage, trials=trials, on_trial=report,
                       executor=ex, workers=jobs)
    _print_frame(trials_frame(res.study), f"{res.study_name}: validation accuracy % (mean over {spec.num_eval} nets)")
    if res.best_params is None:
        err_console.print("[red]no trial completed[/]; see the failures above and rerun to retry.")
        raise typer.Exit(1)
    console.print(f"best: {res.best_params} (val acc {res.best_value:.2f})")
    if write_grid is not None:
        write_best_grid(spec, res, write_grid)
        console.print(f"wrote {write_grid}; measure its test accuracy with: dbench run --grid {write_grid}")


# ------------------------------------------------------------------- continual


@app.command()
@_user_errors
def continual(
    spec_file: Annotated[Path, typer.Argument(help="Continual-learning YAML "
                                                   "(e.g. tables/continual/dm_cifar100.yaml).")],
    budget: BudgetOpt = None,
    method: Annotated[Optional[list[str]], typer.Option("--method", help="Only these methods (repeatable).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Also write <name>.md/.csv into this folder.")] = None,
    data_dir: DataDirOpt = None,
    results_dir: ResultsOpt = None,
    tracking_uri: TrackingOpt = None,
    no_mlflow: NoMlflowOpt = False,
    device: DeviceOpt = "auto",
    executor: ExecOpt = "serial",
    gpus: GpusOpt = None,
    jobs_per_gpu: JobsPerGpuOpt = 1,
    jobs: JobsOpt = None,
    ray_address: RayAddressOpt = None,
    gpus_per_cell: GpusPerCellOpt = 0.0,
    cpus_per_cell: CpusPerCellOpt = 1.0,
    max_retries: MaxRetriesOpt = None,
    slurm_partition: PartitionOpt = None,
    slurm_time: SlurmTimeOpt = "04:00:00",
    max_parallel: MaxParallelOpt = 32,
    debug: DebugOpt = False,
) -> None:
    """Class-incremental learning (DM's GDumb protocol): memory built step by step, a fresh net per step."""
    from .continual import continual_csv, continual_table, load_continual, run_continual
    from .data import DataSource
    from .progress import console_progress
    from .store import ResultStore, atomic_write_text
    from .store import results_dir as resolve_results
    from .tracking import make_tracker

    spec = load_continual(spec_file)
    ex = _executor_from(locals())
    root = resolve_results(results_dir)
    store = ResultStore(root / "continual" / spec.name)
    tracker = make_tracker(tracking_uri, root, enabled=not no_mlflow)
    console.print(f"[bold]{spec.name}[/]: {len(spec.methods)} memory builders x steps {spec.steps} x orders "
                  f"{spec.orders}, {spec.dataset} ipc {spec.ipc}, results in {store.root}, MLflow {tracker.uri}")
    with console_progress(console) as progress:
        if ex.name != "serial":
            console.print(f"executor: {ex.describe()}; one job per method x steps x order (workers log nothing to "
                          "MLflow; done here after)")
        rows = run_continual(spec, store, tracker, device, DataSource.from_env(data_dir), progress, budget,
                             set(method) if method else None, executor=ex)
    table = continual_table(rows)
    _print_frame(table, f"{spec.name}: test accuracy % on the classes seen so far (mean ± std over orders x nets)")
    if out is not None:
        from .tables import render_frame

        atomic_write_text(out / f"{spec.name}.md", render_frame(table, "md") + "\n")
        atomic_write_text(out / f"{spec.name}.csv", continual_csv(rows))
        err_console.print(f"wrote {out}/{spec.name}.md, .csv")


# ------------------------------------------------------------------------- nas


@app.command()
@_user_errors
def nas(
    spec: Annotated[Path, typer.Option("--spec", help="NAS-proxy spec YAML (e.g. tables/nas/cpu_check.yaml).")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the jobs and their estimated cost.")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", help="Also write <name>.md/.csv, <name>_archs.csv and "
                                                "rows/<name>.jsonl into this folder.")] = None,
    ground_truth: Annotated[Optional[Path], typer.Option("--ground-truth", help="Import a ground-truth cache first "
                                                         "(CSV arch,test_acc or NAS rows as JSON lines).")] = None,
    data_dir: DataDirOpt = None,
    results_dir: ResultsOpt = None,
    device: DeviceOpt = "auto",
    executor: ExecOpt = "serial",
    gpus: GpusOpt = None,
    jobs_per_gpu: JobsPerGpuOpt = 1,
    jobs: JobsOpt = None,
    ray_address: RayAddressOpt = None,
    gpus_per_cell: GpusPerCellOpt = 0.0,
    cpus_per_cell: CpusPerCellOpt = 1.0,
    max_retries: MaxRetriesOpt = None,
    slurm_partition: PartitionOpt = None,
    slurm_time: SlurmTimeOpt = "04:00:00",
    max_parallel: MaxParallelOpt = 32,
    debug: DebugOpt = False,
) -> None:
    """NAS proxy (DM Table 5 / DataDAM Table 4): rank ConvNet candidates by proxy sets, one job per architecture."""
    from .nas import nas_command

    ex = None if dry_run else _executor_from(locals())
    nas_command(spec, dry_run_only=dry_run, out=out, ground_truth=ground_truth, data_dir=data_dir,
                results_dir=results_dir, device=device, executor=ex, console=console, err_console=err_console,
                print_frame=_print_frame)


# ------------------------------------------------------------------------ list


@app.command("list")
@_user_errors
def list_(
    kind: Annotated[str, typer.Argument(help="methods, selectors, datasets, archs, protocols or budgets")],
    pattern: Annotated[str, typer.Argument(help="fnmatch pattern")] = "*",
    debug: DebugOpt = False,
) -> None:
    """Show what exists, with one-line descriptions."""
    import fnmatch

    import pandas as pd

    from .errors import UnknownNameError

    rows: list[dict] = []
    if kind in ("methods", "selectors"):
        from .api import METHODS
        from .registry import load_plugins

        load_plugins()
        for k, cls in METHODS.items():
            if kind == "selectors" and cls.kind != "select":
                continue
            presets = ", ".join(p for p in cls.PRESETS if p != "default") or "-"
            rows.append({"name": k, "kind": cls.kind, "presets": presets, "description": cls.description})
    elif kind == "datasets":
        from .data import DATASETS

        for k, e in DATASETS.items():
            i = e.info
            rows.append({"name": k, "classes": i.num_classes, "shape": f"{i.channels}x{i.im_size[0]}x{i.im_size[1]}",
                         "mean": ", ".join(f"{v:.4f}" for v in i.mean), "std": ", ".join(f"{v:.4f}" for v in i.std),
                         "description": i.description})
    elif kind == "archs":
        from .models import ARCHS

        for k, a in ARCHS.items():
            rows.append({"name": k, "display": a.display_name, "description": a.description})
        rows.append({"name": "timm:<name>", "display": "-",
                     "description": "any timm model (pip install 'dbench[timm]')"})
        from .models import EVAL_POOLS

        for k, pool in EVAL_POOLS.items():
            rows.append({"name": f"pool:{k}", "display": "-", "description": "evaluation pool: " + ", ".join(pool)})
    elif kind in ("protocols", "presets"):
        from .evaluate import PROFILES

        if kind == "presets":
            from .errors import deprecated

            deprecated("`dbench list presets` is now `dbench list protocols` (method presets: `dbench list methods`)")
        for k, p in PROFILES.items():
            rows.append({"name": k, "epochs": p.epochs, "batch": p.batch_size, "aug": p.aug,
                         "description": p.description})
    elif kind == "budgets":
        from .budgets import BUDGETS

        for k, b in BUDGETS.items():
            rows.append({"name": k, "description": b.description})
    else:
        raise UnknownNameError("kind", kind, ["methods", "selectors", "datasets", "archs", "protocols", "budgets"])
    rows = [r for r in rows if fnmatch.fnmatch(r["name"], pattern)]
    _print_frame(pd.DataFrame(rows), kind)


# ------------------------------------------------------------------ show / eval


@app.command()
@_user_errors
def show(
    file: Annotated[Path, typer.Argument(help="A synthetic set (.safetensors from dbench, or .pt with --dataset).")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="PNG path (default: next to the file).")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="Needed for .pt files.")] = None,
    debug: DebugOpt = False,
) -> None:
    """Write a PNG grid of a synthetic set (one row per class, denormalised)."""
    from .data import get_info
    from .errors import ConfigError
    from .runner import save_png
    from .store import write_error
    from .synset import SyntheticSet

    target = out or file.with_suffix(".png")
    if target.is_dir():
        raise ConfigError(f"--out {target}: is a folder; give a file name such as {target / 'grid.png'}.")
    if not target.parent.is_dir():
        what = "is a file" if target.parent.exists() else "does not exist"
        raise ConfigError(f"--out {target}: the folder {target.parent} {what}; create it or pick another --out.")
    if not os.access(target.parent, os.W_OK):
        raise ConfigError(f"--out {target}: the folder {target.parent} is not writable; pick another --out.")
    s = SyntheticSet.load(file, get_info(dataset) if dataset else None)
    try:
        path = save_png(s, target)
    except OSError as e:
        raise write_error(target, e) from None
    console.print(f"wrote {path} ({len(s)} images, {s.dataset}, per class {s.per_class()})")


@app.command("eval")
@_user_errors
def eval_(
    file: Annotated[Path, typer.Argument(help="A synthetic set (.safetensors or .pt).")],
    dataset: Annotated[str, typer.Option("--dataset", help="Dataset the set was distilled from.")],
    arch: Annotated[str, typer.Option("--arch", help="Evaluation architecture.")] = "ConvNet",
    protocol: Annotated[str, typer.Option("--protocol", help="Evaluation protocol (`dbench list protocols`).")] = "dsa",
    preset: Annotated[Optional[str], typer.Option("--preset", hidden=True, help="Old name of --protocol.")] = None,
    budget: Annotated[str, typer.Option("--budget", "-b", help="paper, cpu or smoke.")] = "paper",
    num_eval: Annotated[int, typer.Option("--num-eval", help="Networks to train.")] = 5,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    precision: Annotated[str, typer.Option("--precision", help="fp32, bf16 or fp16.")] = "fp32",
    engine: Annotated[str, typer.Option("--engine", help="stacked: the networks train together in lockstep (same "
                                                         "math per network); loop: one after another.")] = "stacked",
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    debug: DebugOpt = False,
) -> None:
    """Evaluate an existing synthetic set under a named protocol."""
    import statistics

    from .budgets import resolve_budget
    from .data import DataSource, get_info, load_dataset
    from .errors import ConfigError, deprecated
    from .evaluate import get_protocol
    from .plan import eval_plan, tensor_source
    from .progress import console_progress
    from .runtime import effective_precision, select_device
    from .synset import SyntheticSet

    if preset is not None:
        deprecated("--preset is now --protocol (the evaluation protocol)")
        protocol = preset
    if precision not in ("fp32", "bf16", "fp16"):
        raise ConfigError(f"--precision {precision}: use fp32, bf16 or fp16.")
    if num_eval < 1:
        raise ConfigError(f"--num-eval {num_eval}: give a number >= 1.")
    if engine not in ("stacked", "loop"):
        raise ConfigError(f"--engine {engine}: use stacked or loop.")
    dev = select_device(device)
    info = get_info(dataset)
    proto = get_protocol(protocol)
    b = resolve_budget(budget)
    s = SyntheticSet.load(file, info)
    if s.dataset and s.dataset != info.name:
        raise ConfigError(f"{file} was made from '{s.dataset}', not '{info.name}'; pass --dataset {s.dataset}.")
    x, y = s.training_tensors()
    if effective_precision(dev, precision) != precision:
        _note(f"precision {precision} runs as {effective_precision(dev, precision)} on the {dev.type.upper()} "
              "(fp16 autocast needs CUDA).")
    plan = eval_plan(proto, b, info, arch, len(y), seed=seed, num_eval=b.cap("num_eval", num_eval), device=dev,
                     precision=precision, engine=engine)
    test = load_dataset(info.name, False, DataSource.from_env(data_dir))
    with console_progress(console) as progress:
        res = plan.run(tensor_source(x, y, dev), info, test, progress)
    accs = [r.test_acc for r in res]
    std = statistics.pstdev(accs) if len(accs) > 1 else 0.0
    console.print(f"{file.name}: {len(x)} training images, {plan.arch}, protocol {protocol} "
                  f"({plan.protocol.epochs} epochs, {plan.protocol.aug} {plan.protocol.dsa_strategy or ''}), "
                  f"budget {b.name}, {effective_precision(dev, precision)}: "
                  f"[bold]{statistics.mean(accs):.2f} ± {std:.2f}[/] (n={len(accs)}; per model: "
                  + ", ".join(f"{a:.2f}" for a in accs) + ")")


# ---------------------------------------------------------------------- import


@app.command("import")
@_user_errors
def import_(
    file: Annotated[Path, typer.Argument(help="The published set: res_*.pt (VICO), images_best.pt (MTT), data.pt "
                                             "(IDC/DREAM), an images/labels .pt, or a dbench .safetensors.")],
    method: Annotated[str, typer.Option("--method", help="Name of the import; grids list it as imported:<name>.")],
    dataset: Annotated[str, typer.Option("--dataset", help="Dataset the set was distilled from.")],
    ipc: Annotated[int, typer.Option("--ipc", help="Stored images per class.")],
    fmt: Annotated[str, typer.Option("--format", help="auto, dbench, vico, mtt, idc or pair.")] = "auto",
    labels: Annotated[Optional[Path], typer.Option("--labels", help="Labels file for an images-only file "
                                                   "(default: labels_<x>.pt beside images_<x>.pt).")] = None,
    space: Annotated[Optional[str], typer.Option("--space", help="normalized (dataset mean/std; default) or pixel "
                                                 "([0,1]; default for idc).")] = None,
    factor: Annotated[Optional[int], typer.Option("--factor", help="Multi-formation factor (IDC/DREAM: 2).")] = None,
    decode_order: Annotated[str, typer.Option("--decode-order", help="Patch order of the factor: idc or idm.")] = "idc",
    exp: Annotated[int, typer.Option("--exp", help="Experiment of a VICO res_*.pt (0 = first).")] = 0,
    paper: Annotated[str, typer.Option("--paper", help="The paper / table the set reproduces (in the manifest).")] = "",
    source_url: Annotated[str, typer.Option("--source-url", help="Where the file was downloaded from.")] = "",
    results_dir: ResultsOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Check a published distilled set and store it (with a manifest) for grids: methods: [imported:NAME]."""
    from .importer import import_set
    from .store import results_dir as resolve_results

    res = import_set(file, name=method, dataset=dataset, ipc=ipc, store_root=resolve_results(results_dir), fmt=fmt,
                     labels_file=labels, space=space, factor=factor, decode_order=decode_order, exp=exp,
                     paper=paper, source_url=source_url)
    m = res.manifest
    what = "already imported (same images)" if res.already else "imported"
    console.print(f"{what}: {method} {m['dataset']} ipc {m['ipc']} ({m['input_format']}, {m['space']}, "
                  f"factor {m['decode']['factor']}, {m['n_stored']} images, sha256 {m['images_sha256'][:12]}) "
                  f"-> {res.path}; evaluate it with methods: [imported:{method}]", markup=False, highlight=False,
                  soft_wrap=True)


def _one_line_warnings() -> None:
    """Deprecation notices as one 'note:' line each (not Python's file:line warning format)."""
    import warnings

    from .errors import DbenchNote

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, DbenchNote):
            err_console.print(f"[yellow]note:[/] {message}", highlight=False, soft_wrap=True)
        else:
            _default(message, category, filename, lineno, file, line)

    _default = warnings.showwarning
    warnings.showwarning = show


def main() -> None:
    _one_line_warnings()
    app()


if __name__ == "__main__":
    main()
