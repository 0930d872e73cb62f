"""Tables: a pure function of saved result rows (pandas).

Everything a table shows comes from the rows themselves (see :mod:`benchmark.rows`): labels,
params beyond the preset, the extractor, the efficiency baseline, display names. This module
imports no method registry, model or torch, so editing a preset never relabels an old result
and a table renders where the method code cannot even be imported. Published numbers are joined
from ``results/reference/published.csv`` and shown *beside* ours, never instead.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from .errors import DbenchError
from .rows import upgrade

TIDY_COLUMNS = ["method_label", "dataset", "ipc", "arch_eval", "protocol", "budget", "precision", "acc_mean", "acc_std",
                "n", "acc_ci95", "paper", "paper_source", "arch_distill", "method_kind", "extractor", "params"]

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
    """Rows (any schema version) as a frame in the current schema's names."""
    return pd.DataFrame([upgrade(r) for r in rows])


def _frame(rows) -> pd.DataFrame:
    df = rows if isinstance(rows, pd.DataFrame) else records_to_frame(rows)
    if df.empty:
        return df
    defaults = {"params_label": "", "extractor_label": "", "precision": "fp32", "efficiency_baseline": None,
                "method_preset": None, "arch_distill_display": df.get("arch_distill", ""),
                "arch_eval_display": df.get("arch_eval", "")}
    for k, v in defaults.items():
        if k not in df:
            df[k] = v
    df["params_label"] = df["params_label"].fillna("")
    df["extractor_label"] = df["extractor_label"].fillna("")
    return df


def method_label(display: str, preset, params: str = "") -> str:
    """The one human label of a method configuration: 'DM [official] (batch_real=64)'. Two
    presets or two param entries of one method never share a label."""
    out = str(display) + (f" [{preset}]" if isinstance(preset, str) and preset else "")
    return out + (f" ({params})" if params else "")


def _labels(df: pd.DataFrame) -> list[str]:
    presets = df.get("method_preset", pd.Series([None] * len(df), index=df.index))
    return [method_label(d, p, q) for d, p, q in zip(df.method_display, presets, df.params_label)]


def _fmt(v: float, s: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.1f}" if s is None or (isinstance(s, float) and math.isnan(s)) else f"{v:.1f} ± {s:.1f}"


_GROUP = ["method_label", "dataset", "ipc", "arch_eval", "protocol", "budget", "precision", "arch_distill",
          "method_kind", "method_display", "method_preset", "dataset_display", "arch_eval_display",
          "arch_distill_display", "extractor_label", "params_label"]


def leaderboard(rows: Iterable[dict] | pd.DataFrame, published: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (method configuration, dataset, ipc, eval arch, protocol, budget, precision):
    mean, population std (ddof 0, as the literature reports), n models and a 95% normal CI
    half-width."""
    df = _frame(rows)
    if df.empty:
        return pd.DataFrame(columns=TIDY_COLUMNS)
    g = df.groupby(_GROUP, dropna=False, sort=True)["test_acc"]
    out = g.agg(acc_mean="mean", acc_std=lambda s: float(s.std(ddof=0)), n="count",
                _sstd=lambda s: float(s.std(ddof=1)) if len(s) > 1 else float("nan")).reset_index()
    out["acc_ci95"] = 1.96 * out.pop("_sstd") / out.n.pow(0.5)
    pub = load_published() if published is None else published
    paper, source = [], []
    for r in out.itertuples():
        v, s, src = match_published(pub, r.method_display, r.dataset_display, r.ipc, r.arch_eval_display,
                                    r.arch_distill_display)
        paper.append(_fmt(v, s))
        source.append(src)
    out["paper"], out["paper_source"] = paper, source
    out["extractor"], out["params"] = out.extractor_label, out.params_label
    out["label"] = _labels(out)
    out = out.sort_values(["dataset", "method_label", "ipc", "arch_eval", "protocol", "budget", "precision",
                           "params"], kind="stable")
    extra = ["method_display", "method_preset", "dataset_display", "arch_eval_display", "arch_distill_display", "label"]
    return out[TIDY_COLUMNS + extra].reset_index(drop=True)


# The names the IDC / DREAM / DREAM+ tables print for our (explicitly named) architectures.
_PUBLISHED_ARCH = {"ResNet-10-BN": "ResNet-10", "DenseNet-121 (CIFAR, k=12)": "DenseNet-121"}


def match_published(pub: pd.DataFrame, method: str, dataset: str, ipc: int, arch: str, arch_distill: str | None = None):
    """The published number for (method, dataset, ipc, evaluation arch); with ``arch_distill``
    only a number for a set made on that architecture (or one with none named, as for the
    baselines), so a set made on AlexNet is never shown beside a ConvNet-made paper number."""
    if pub.empty:
        return None, None, ""
    arch = _PUBLISHED_ARCH.get(arch, arch)
    m = (pub.metric == "test_acc") & (pub.method == method) & (pub.dataset == dataset) & (pub.arch_eval == arch)
    if arch_distill is not None and "arch_distill" in pub:
        m &= pub.arch_distill.isna() | (pub.arch_distill == _PUBLISHED_ARCH.get(arch_distill, arch_distill))
    m &= pub.ipc.isna() if int(ipc) == 0 else (pub.ipc == float(ipc))
    hits = pub[m & pub.value.notna()]
    if hits.empty:
        return None, None, ""
    hits = hits.assign(_p=hits.source.map(lambda s: _SOURCE_PRIORITY.index(s) if s in _SOURCE_PRIORITY else 99),
                       _nostd=hits["std"].isna())
    best = hits.sort_values(["_nostd", "_p"]).iloc[0]
    return float(best.value), (None if pd.isna(best["std"]) else float(best["std"])), f"{best.source} {best.table}"


def _ipc_col(i) -> str:
    return "all" if int(i) == 0 else str(int(i))


def _precision_split(b: pd.DataFrame) -> bool:
    return b.precision.nunique() > 1


def pivot(board: pd.DataFrame) -> pd.DataFrame:
    """Human view: method x IPC cells 'ours (n) | paper'."""
    if board.empty:
        return board
    b = board.copy()
    b["cell"] = [f"{_fmt(m, s)} (n={n})" + (f"; paper {p}" if p else "")
                 for m, s, n, p in zip(b.acc_mean, b.acc_std, b.n, b.paper)]
    b["IPC"] = b.ipc.map(_ipc_col)
    index = ["dataset_display", "arch_eval_display", "protocol", "budget"]
    if _precision_split(b):
        index.append("precision")
    index.append("label")
    if (b.extractor != "").any():  # which network the selectors' features came from
        index.append("extractor")
    out = b.pivot_table(index=index, columns="IPC", values="cell", aggfunc="first", sort=False)
    cols = sorted(out.columns, key=lambda c: (c == "all", int(c) if c.isdigit() else 0))
    out = out[cols].reset_index().rename(columns={"dataset_display": "dataset", "arch_eval_display": "arch",
                                                  "label": "method"})
    return out.fillna("")


def render_frame(view: pd.DataFrame, fmt: str = "md", empty: str = "(no results)") -> str:
    """The one renderer: a finished view as Markdown, LaTeX or CSV."""
    if fmt == "csv":
        return view.to_csv(index=False, float_format="%.4f")
    if fmt == "md":
        return view.to_markdown(index=False) if not view.empty else empty
    if fmt == "latex":
        return view.to_latex(index=False, escape=True) if not view.empty else "% " + empty.strip("()")
    raise DbenchError(f"unknown table format {fmt!r}; use md, latex or csv.")


def render(board: pd.DataFrame, fmt: str = "md", view_of=None) -> str:
    """md / latex of ``view_of(board)`` (default: the method x IPC :func:`pivot`); csv is the
    tidy board (one line per configuration)."""
    if fmt == "csv":
        return render_frame(board[TIDY_COLUMNS], "csv")
    return render_frame((view_of or pivot)(board), fmt)


# ---------------------------------------------------------------- cross-architecture


def cross_arch_pivot(board: pd.DataFrame) -> pd.DataFrame:
    """Cross-architecture transfer: one row per (dataset, IPC, method, distillation arch),
    one column per evaluation architecture ('mean ± std (n)'; '; paper x' beside ours where
    published), and ``transfer``: the mean over the evaluation architectures other than the
    one the set was made on."""
    if board.empty:
        return board
    b = board.copy()
    b["IPC"] = b.ipc.map(_ipc_col)
    b["distilled on"] = b.arch_distill_display
    b["cell"] = [f"{_fmt(m, sd)} (n={n})" + (f"; paper {p}" if p else "")
                 for m, sd, n, p in zip(b.acc_mean, b.acc_std, b.n, b.paper)]
    index = ["dataset_display", "IPC", "protocol", "budget", "label", "distilled on"]
    out = b.pivot_table(index=index, columns="arch_eval_display", values="cell", aggfunc="first", sort=False)
    # distillation architectures first (most rows first), then the other targets by name
    first = list(b.arch_distill_display.value_counts(sort=True).index)
    order = list(dict.fromkeys([c for c in first if c in out.columns] + sorted(out.columns)))
    out = out[order]
    other = b[b.arch_eval != b.arch_distill]
    transfer = other.groupby(index, sort=False).acc_mean.agg(["mean", "count"])
    out = out.join(transfer)
    out["transfer"] = [f"{m:.1f} (over {int(c)})" if c == c and c else "" for m, c in zip(out.pop("mean"), out.pop("count"))]
    out = out.reset_index().rename(columns={"dataset_display": "dataset", "label": "method"})
    return out.fillna("")


def render_cross_arch(board: pd.DataFrame, fmt: str = "md") -> str:
    return render(board, fmt, cross_arch_pivot)


# ------------------------------------------------------------------ precision pairs


def precision_pairs(rows: Iterable[dict] | pd.DataFrame) -> pd.DataFrame:
    """fp32 versus bf16 on the same cells: networks paired by (method configuration, dataset,
    ipc, archs, protocol, budget, set seed, network index); per configuration the two means,
    the mean paired difference (bf16 - fp32) with a 95% t interval, and the noise (the std
    over networks of fp32). A difference whose interval excludes 0 and exceeds the noise is
    marked as a shift."""
    from scipy import stats

    df = _frame(rows)
    if df.empty:
        return pd.DataFrame()
    df = df.assign(label=_labels(df))
    keys = ["dataset_display", "ipc", "arch_eval_display", "protocol", "budget", "label"]
    out = []
    for k, g in df.groupby(keys, sort=True):
        a = g[g.precision == "fp32"].set_index(["set_seed", "model_index"]).test_acc
        b = g[g.precision == "bf16"].set_index(["set_seed", "model_index"]).test_acc
        common = a.index.intersection(b.index)
        if len(common) == 0:
            continue
        d = (b.loc[common] - a.loc[common]).astype(float)
        n = len(d)
        half = float(stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
        noise = float(a.loc[common].std(ddof=0))
        shift = n > 1 and abs(d.mean()) > half and abs(d.mean()) > noise
        out.append({"dataset": k[0], "ipc": k[1], "arch": k[2], "protocol": k[3], "budget": k[4], "method": k[5],
                    "n_pairs": n, "fp32": f"{a.loc[common].mean():.2f} ± {noise:.2f}",
                    "bf16": f"{b.loc[common].mean():.2f} ± {float(b.loc[common].std(ddof=0)):.2f}",
                    "bf16 - fp32": f"{d.mean():+.2f}", "95% CI": f"[{d.mean() - half:+.2f}, {d.mean() + half:+.2f}]",
                    "verdict": "shift" if shift else "within noise"})
    return pd.DataFrame(out)


def render_precision(rows, fmt: str = "md") -> str:
    return render_frame(precision_pairs(rows), fmt, "(no fp32/bf16 pairs)")


# ------------------------------------------------------------------------- efficiency

EFFICIENCY_COLUMNS = ["method", "dataset", "ipc", "arch", "protocol", "budget", "acc_mean", "acc_std", "n", "iterations",
                      "distill_s", "baseline", "baseline_acc", "baseline_iterations", "iters_to_baseline",
                      "speedup", "wall_s_to_baseline", "curve_points"]


def _is_baseline_of(want: dict | None, method: str, config: dict) -> bool:
    """Does a configuration (registry key + resolved config) match a row's declared
    ``efficiency_baseline`` (``{"method": key, "not": {field: value}}``)?"""
    if not isinstance(want, dict) or want.get("method") != method:
        return False
    return all(config.get(k) != v for k, v in (want.get("not") or {}).items())


def _iters_to(curve: list[tuple[float, float, float]], target: float) -> tuple[float, float]:
    for it, acc, wall in sorted(curve):
        if acc >= target:
            return it, wall
    return float("nan"), float("nan")


def efficiency(rows: Iterable[dict] | pd.DataFrame, curves: dict[str, dict]) -> pd.DataFrame:
    """Accuracy-vs-iteration efficiency (DREAM / DREAM+ claims): per method configuration, its
    final accuracy (mean over all evaluation networks), and the first iteration at which its
    curve reaches its baseline's final accuracy. ``curves`` maps a synset hash to the store's
    curve record ``{"curve": [(iteration, acc, distill_wall_s), ...], "iterations": N,
    "wall_s": s}``; curve points are single-network probes (``eval_every``), the last point is
    the final mean. The baseline is the row's own ``efficiency_baseline``."""
    df = _frame(rows)
    if df.empty:
        return pd.DataFrame(columns=EFFICIENCY_COLUMNS)
    df = df[df.method_kind == "distill"]
    df = df.assign(label=_labels(df))
    out = []
    for key, grp in df.groupby(["dataset", "ipc", "arch_eval", "protocol", "budget"], sort=True):
        labels: dict[str, dict] = {}
        for label, cell in grp.groupby("label", sort=True):
            first = cell.iloc[0]
            accs = cell.test_acc.astype(float)
            recs = [curves.get(h, {}) for h in sorted(set(cell.synset_hash))]
            iters = max(int(r.get("iterations") or first.get("iterations") or 0) for r in recs) if recs else 0
            pts: dict[float, list] = {}
            for r in recs:  # several sets: average their probes per iteration
                for it, acc, wall in r.get("curve", []):
                    pts.setdefault(float(it), []).append((float(acc), float(wall)))
            curve = [(it, sum(a for a, _ in v) / len(v), sum(w for _, w in v) / len(v)) for it, v in sorted(pts.items())]
            wall = sum(float(r.get("wall_s") or 0) for r in recs) / max(len(recs), 1)
            curve.append((float(iters), float(accs.mean()), wall))
            labels[label] = {"method": first.method, "config": first.resolved_config or {},
                             "baseline": first.efficiency_baseline, "acc": float(accs.mean()),
                             "std": float(accs.std(ddof=0)), "n": len(accs), "iters": iters, "wall": wall,
                             "curve": curve, "n_probes": len(curve) - 1}
        for label, info in labels.items():
            base = next((lb for lb, o in labels.items()
                         if lb != label and _is_baseline_of(info["baseline"], o["method"], o["config"])), None)
            row = {"method": label, "dataset": key[0], "ipc": key[1], "arch": key[2], "protocol": key[3],
                   "budget": key[4], "acc_mean": info["acc"], "acc_std": info["std"], "n": info["n"],
                   "iterations": info["iters"], "distill_s": info["wall"], "baseline": base or "",
                   "baseline_acc": float("nan"), "baseline_iterations": float("nan"),
                   "iters_to_baseline": float("nan"), "speedup": float("nan"), "wall_s_to_baseline": float("nan"),
                   "curve_points": info["n_probes"] + 1}
            if base:
                b = labels[base]
                it, w = _iters_to(info["curve"], b["acc"])
                row.update(baseline_acc=b["acc"], baseline_iterations=b["iters"], iters_to_baseline=it,
                           wall_s_to_baseline=w,
                           speedup=float("nan") if math.isnan(it) else (b["iters"] / it if it > 0 else math.inf))
            out.append(row)
    return pd.DataFrame(out, columns=EFFICIENCY_COLUMNS)


def render_efficiency(eff: pd.DataFrame, fmt: str = "md") -> str:
    if fmt == "csv":
        return render_frame(eff, "csv")
    v = eff.copy()
    v["acc"] = [_fmt(a, s) + f" (n={n})" for a, s, n in zip(v.acc_mean, v.acc_std, v.n)]

    def num(x, f="{:.0f}"):
        return "" if math.isnan(x) else f.format(x)

    v["reaches baseline at"] = [("never (" + str(int(i)) + " run)" if b and math.isnan(t) else num(t))
                                for b, t, i in zip(v.baseline, v.iters_to_baseline, v.iterations)]
    v["speedup"] = ["init already" if math.isinf(s) else num(s, "{:.1f}x") for s in v.speedup]
    v["baseline_acc"] = [num(a, "{:.1f}") for a in v.baseline_acc]
    v["distill_s"] = [num(a) for a in v.distill_s]
    v["wall_s_to_baseline"] = [num(a) for a in v.wall_s_to_baseline]
    cols = ["dataset", "ipc", "protocol", "budget", "method", "acc", "iterations", "distill_s", "baseline",
            "baseline_acc", "reaches baseline at", "speedup", "wall_s_to_baseline", "curve_points"]
    return render_frame(v[cols], fmt, "(no distillation results)")


def plot_efficiency(rows: Iterable[dict] | pd.DataFrame, curves: dict[str, dict], path: Path) -> Path:
    """Accuracy vs distillation iteration (top) and vs distillation wall time (bottom), one
    column per (dataset, ipc, protocol, budget)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = _frame(rows)
    df = df[df.method_kind == "distill"]
    df = df.assign(label=_labels(df))
    groups = list(df.groupby(["dataset", "ipc", "protocol", "budget"], sort=True))
    n = max(len(groups), 1)
    fig, axes = plt.subplots(2, n, figsize=(5.5 * n, 7.0), squeeze=False)
    for col, (key, grp) in enumerate(groups):
        for label, cell in grp.groupby("label", sort=True):
            r = curves.get(sorted(set(cell.synset_hash))[0], {})
            pts = sorted((float(i), float(a), float(w)) for i, a, w in r.get("curve", []))
            iters = r.get("iterations") or cell.iloc[0].get("iterations") or 0
            pts.append((float(iters), float(cell.test_acc.mean()), float(r.get("wall_s") or 0)))
            for row, x in ((0, 0), (1, 2)):
                axes[row][col].plot([p[x] for p in pts], [p[1] for p in pts], marker="o", label=label)
        for row, xlabel in ((0, "distillation iteration"), (1, "distillation wall time (s)")):
            ax = axes[row][col]
            ax.set_title(f"{key[0]} IPC {key[1]} ({key[2]}, {key[3]})", fontsize=9)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("test accuracy (%)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
