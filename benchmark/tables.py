"""Tables: a pure function of saved result rows (pandas). Published numbers are joined
from ``results/reference/published.csv`` and shown *beside* ours, never instead."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from .errors import DbenchError

TIDY_COLUMNS = ["method", "dataset", "ipc", "arch", "preset", "budget", "acc_mean", "acc_std", "n",
                "acc_ci95", "paper", "paper_source", "arch_distill", "method_kind"]
HIGHER_IS_BETTER = {"test_acc": True, "acc_mean": True, "distill_time_s": False, "eval_time_s": False}

_SOURCE_PRIORITY = ["DM (WACV 2023)", "DREAM+ (arXiv 2310.15052)", "DataDAM (ICCV 2023) supp",
                    "IDM (CVPR 2023) supp", "DREAM (ICCV 2023) supp"]


def published_path() -> Path:
    env = os.environ.get("DBENCH_PUBLISHED_CSV")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "results" / "reference" / "published.csv"


def load_published(path: Path | None = None) -> pd.DataFrame:
    p = path or published_path()
    if not p.exists():
        return pd.DataFrame(columns=["source", "table", "method", "dataset", "ipc", "arch_eval", "metric", "value", "std"])
    return pd.read_csv(p, keep_default_na=False, na_values=[""])


def records_to_frame(rows: Iterable[dict]) -> pd.DataFrame:
    df = pd.DataFrame(list(rows))
    if df.empty:
        return df
    return df


def _fmt(v: float, s: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.1f}" if s is None or (isinstance(s, float) and math.isnan(s)) else f"{v:.1f} ± {s:.1f}"


def leaderboard(rows: Iterable[dict] | pd.DataFrame, published: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (method, dataset, ipc, eval arch, preset, budget): mean, population
    std (ddof 0, as the literature reports), n models and a 95% normal CI half-width."""
    df = rows if isinstance(rows, pd.DataFrame) else records_to_frame(rows)
    if df.empty:
        return pd.DataFrame(columns=TIDY_COLUMNS)
    keys = ["method", "dataset", "ipc", "arch", "preset", "budget", "arch_distill", "method_kind",
            "method_display", "dataset_display", "arch_display"]
    g = df.groupby(keys, dropna=False, sort=True)["test_acc"]
    out = g.agg(acc_mean="mean", acc_std=lambda s: float(s.std(ddof=0)), n="count",
                _sstd=lambda s: float(s.std(ddof=1)) if len(s) > 1 else float("nan")).reset_index()
    out["acc_ci95"] = 1.96 * out.pop("_sstd") / out.n.pow(0.5)
    pub = load_published() if published is None else published
    paper, source = [], []
    for r in out.itertuples():
        v, s, src = match_published(pub, r.method_display, r.dataset_display, r.ipc, r.arch_display)
        paper.append(_fmt(v, s))
        source.append(src)
    out["paper"], out["paper_source"] = paper, source
    out = out.sort_values(["dataset", "method", "ipc", "arch", "preset", "budget"], kind="stable")
    return out[TIDY_COLUMNS + ["method_display", "dataset_display", "arch_display"]].reset_index(drop=True)


def match_published(pub: pd.DataFrame, method: str, dataset: str, ipc: int, arch: str):
    if pub.empty:
        return None, None, ""
    m = (pub.metric == "test_acc") & (pub.method == method) & (pub.dataset == dataset) & (pub.arch_eval == arch)
    m &= pub.ipc.isna() if int(ipc) == 0 else (pub.ipc == float(ipc))
    hits = pub[m & pub.value.notna()]
    if hits.empty:
        return None, None, ""
    hits = hits.assign(_p=hits.source.map(lambda s: _SOURCE_PRIORITY.index(s) if s in _SOURCE_PRIORITY else 99),
                       _nostd=hits["std"].isna())
    best = hits.sort_values(["_nostd", "_p"]).iloc[0]
    return float(best.value), (None if pd.isna(best["std"]) else float(best["std"])), f"{best.source} {best.table}"


def pivot(board: pd.DataFrame) -> pd.DataFrame:
    """Human view: method x IPC cells 'ours (n) | paper'."""
    if board.empty:
        return board
    b = board.copy()
    b["ours"] = b.apply(lambda r: f"{_fmt(r.acc_mean, r.acc_std)} (n={r.n})", axis=1)
    b["cell"] = b.apply(lambda r: r.ours + (f"; paper {r.paper}" if r.paper else ""), axis=1)
    b["IPC"] = b.ipc.map(lambda i: "all" if int(i) == 0 else str(int(i)))
    # variants (presets) of one method stay on separate rows: "Herding [deepcore]"
    b["method_display"] = [d if "." not in m else f"{d} [{m.split('.', 1)[1]}]" for d, m in zip(b.method_display, b.method)]
    out = b.pivot_table(index=["dataset_display", "arch", "preset", "budget", "method_display"], columns="IPC",
                        values="cell", aggfunc="first", sort=False)
    cols = sorted(out.columns, key=lambda c: (c == "all", int(c) if c.isdigit() else 0))
    out = out[cols].reset_index().rename(columns={"dataset_display": "dataset", "method_display": "method"})
    return out.fillna("")


def render(board: pd.DataFrame, fmt: str = "md") -> str:
    if fmt == "csv":
        return board[TIDY_COLUMNS].to_csv(index=False, float_format="%.4f")
    view = pivot(board)
    if fmt == "md":
        return view.to_markdown(index=False) if not view.empty else "(no results)"
    if fmt == "latex":
        return view.to_latex(index=False, escape=True) if not view.empty else "% no results"
    raise DbenchError(f"unknown table format {fmt!r}; use md, latex or csv.")
