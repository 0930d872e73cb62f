"""Tables: a pure function of saved result rows (pandas). Published numbers are joined
from ``results/reference/published.csv`` and shown *beside* ours, never instead."""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from .errors import DbenchError

TIDY_COLUMNS = ["method", "dataset", "ipc", "arch", "preset", "budget", "acc_mean", "acc_std", "n",
                "acc_ci95", "paper", "paper_source", "arch_distill", "method_kind", "extractor", "params"]
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


def _budget_from_label(label: str):
    """'cpu' or 'cpu[selector_epochs=3,eval_epochs=500]' -> the resolved Budget (None if unknown)."""
    from .budgets import resolve_budget

    base, _, rest = str(label).partition("[")
    overrides: dict = {}
    for item in filter(None, rest.rstrip("]").split(",")):
        k, _, v = item.partition("=")
        try:
            overrides[k] = int(v)
        except ValueError:
            overrides[k] = None if v == "None" else v
    try:
        return resolve_budget(base, overrides)
    except DbenchError:
        return None


def extractor_label(method_config, budget: str) -> str:
    """Which feature extractor produced a selector's number (the spec, effective epochs under
    the row's budget), '' for methods without one. Selectors used as a distillation ``init``
    report theirs too (``init: herding`` -> 'init herding: ...')."""
    from .features import ExtractorSpec

    cfg = method_config if isinstance(method_config, dict) else {}
    spec, prefix = cfg.get("extractor"), ""
    if spec is None and isinstance(cfg.get("init_params"), dict) and "extractor" in cfg["init_params"]:
        spec, prefix = cfg["init_params"]["extractor"], f"init {cfg.get('init')}: "
    if not isinstance(spec, dict):
        return ""
    try:
        return prefix + ExtractorSpec.model_validate(spec).describe(_budget_from_label(budget))
    except Exception:  # noqa: BLE001 - an old or foreign row: show the raw spec rather than fail the table
        return prefix + str(spec)


# bookkeeping knobs that do not change a synthetic set's content (curve probes, logging,
# checkpoint cadence): not shown as a deviation from the preset
_BOOKKEEPING = {"eval_every", "log_every", "checkpoint_every"}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


@functools.lru_cache(maxsize=None)
def _preset_config(method_name: str, preset: str | None) -> dict | None:
    """The flattened config of ``method_name`` at ``preset`` with no params (once per pair)."""
    from .api import get_method

    try:
        return _flatten(get_method(method_name).resolve_config(preset, {}).model_dump(mode="json"))
    except Exception:  # noqa: BLE001 - a method this checkout no longer has: no reference to diff against
        return None


def _short(v) -> str:
    """A float as written (10.0, 0.5) unless it is long (a tuned 0.45962757368712065 -> 0.459628)."""
    if isinstance(v, float) and len(repr(v)) > 8:
        return f"{v:.6g}"
    return str(v)


def params_label(method_name: str, preset: str | None, method_config) -> str:
    """The grid ``params`` a row ran with beyond its preset ('batch_real=64, iterations=200'),
    so a reduced or swept configuration is never shown as the plain preset and two param
    entries of one method never share a table row. '' when nothing deviates."""
    if not isinstance(method_config, dict) or not method_config:
        return ""
    a = _preset_config(method_name, preset)
    if a is None:
        return ""
    b = _flatten(method_config)
    diff = [f"{k}={_short(b[k])}" for k in sorted(b) if k.split(".")[0] not in _BOOKKEEPING and a.get(k, object()) != b[k]]
    return ", ".join(diff)


def _row_params(df: pd.DataFrame) -> list[str]:
    """:func:`params_label` of every stored row (rows carry method_name, method_preset, method_config)."""
    cfgs = df.get("method_config", pd.Series([{}] * len(df), index=df.index))
    names = df.get("method_name", df.method.str.split(".").str[0])
    presets = df.get("method_preset", pd.Series([None] * len(df), index=df.index))
    return [params_label(n, p if isinstance(p, str) else None, c) for n, p, c in zip(names, presets, cfgs)]


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
    cfgs = df.get("method_config", pd.Series([{}] * len(df), index=df.index))
    df = df.assign(extractor=[extractor_label(c, b) for c, b in zip(cfgs, df.budget)], params=_row_params(df))
    keys = ["method", "dataset", "ipc", "arch", "preset", "budget", "arch_distill", "method_kind",
            "method_display", "dataset_display", "arch_display", "extractor", "params"]
    g = df.groupby(keys, dropna=False, sort=True)["test_acc"]
    out = g.agg(acc_mean="mean", acc_std=lambda s: float(s.std(ddof=0)), n="count",
                _sstd=lambda s: float(s.std(ddof=1)) if len(s) > 1 else float("nan")).reset_index()
    out["acc_ci95"] = 1.96 * out.pop("_sstd") / out.n.pow(0.5)
    pub = load_published() if published is None else published
    paper, source = [], []
    for r in out.itertuples():
        v, s, src = match_published(pub, r.method_display, r.dataset_display, r.ipc, r.arch_display,
                                    _arch_name(r.arch_distill) if isinstance(r.arch_distill, str) else None)
        paper.append(_fmt(v, s))
        source.append(src)
    out["paper"], out["paper_source"] = paper, source
    out = out.sort_values(["dataset", "method", "ipc", "arch", "preset", "budget"], kind="stable")
    return out[TIDY_COLUMNS + ["method_display", "dataset_display", "arch_display"]].reset_index(drop=True)


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
    if "params" in b:  # grid params beyond the preset: "DM [official] (batch_real=64, iterations=200)"
        b["method_display"] = [d + (f" ({p})" if p else "") for d, p in zip(b.method_display, b.params)]
    index = ["dataset_display", "arch", "preset", "budget", "method_display"]
    if "extractor" in b and (b.extractor != "").any():  # which network the selectors' features came from
        index.append("extractor")
    out = b.pivot_table(index=index, columns="IPC", values="cell", aggfunc="first", sort=False)
    cols = sorted(out.columns, key=lambda c: (c == "all", int(c) if c.isdigit() else 0))
    out = out[cols].reset_index().rename(columns={"dataset_display": "dataset", "method_display": "method"})
    return out.fillna("")


def render(board: pd.DataFrame, fmt: str = "md", view_of=None) -> str:
    """md / latex of ``view_of(board)`` (default: the method x IPC :func:`pivot`); csv is
    always the tidy board (one line per method, dataset, IPC, distillation and eval arch)."""
    if fmt == "csv":
        return board[TIDY_COLUMNS].to_csv(index=False, float_format="%.4f")
    view = (view_of or pivot)(board)
    if fmt == "md":
        return view.to_markdown(index=False) if not view.empty else "(no results)"
    if fmt == "latex":
        return view.to_latex(index=False, escape=True) if not view.empty else "% no results"
    raise DbenchError(f"unknown table format {fmt!r}; use md, latex or csv.")


# ---------------------------------------------------------------- cross-architecture


def _arch_name(a: str) -> str:
    from .models import arch_display

    try:
        return arch_display(a)
    except DbenchError:  # an architecture this checkout no longer has
        return str(a)


def cross_arch_pivot(board: pd.DataFrame) -> pd.DataFrame:
    """Cross-architecture transfer: one row per (dataset, IPC, method, distillation arch),
    one column per evaluation architecture ('mean ± std (n)'; '; paper x' beside ours where
    published), and ``transfer``: the mean over the evaluation architectures other than the
    one the set was made on."""
    if board.empty:
        return board
    b = board.copy()
    b["method_display"] = [d if "." not in m else f"{d} [{m.split('.', 1)[1]}]" for d, m in zip(b.method_display, b.method)]
    b["method_display"] = [d + (f" ({p})" if p else "") for d, p in zip(b.method_display, b.get("params", [""] * len(b)))]
    b["IPC"] = b.ipc.map(lambda i: "all" if int(i) == 0 else str(int(i)))
    b["distilled on"] = b.arch_distill.map(_arch_name)
    b["cell"] = [f"{_fmt(m, sd)} (n={n})" + (f"; paper {p}" if p else "")
                 for m, sd, n, p in zip(b.acc_mean, b.acc_std, b.n, b.paper)]
    index = ["dataset_display", "IPC", "preset", "budget", "method_display", "distilled on"]
    out = b.pivot_table(index=index, columns="arch_display", values="cell", aggfunc="first", sort=False)
    # distillation architectures first (most rows first), then the other targets by name
    first = [_arch_name(a) for a in b.arch_distill.value_counts(sort=True).index]
    order = list(dict.fromkeys([c for c in first if c in out.columns] + sorted(out.columns)))
    out = out[order]
    other = b[b.arch != b.arch_distill]
    transfer = other.groupby(index, sort=False).acc_mean.agg(["mean", "count"])
    out = out.join(transfer)
    out["transfer"] = [f"{m:.1f} (over {int(c)})" if c == c and c else "" for m, c in zip(out.pop("mean"), out.pop("count"))]
    out = out.reset_index().rename(columns={"dataset_display": "dataset", "method_display": "method"})
    return out.fillna("")


def render_cross_arch(board: pd.DataFrame, fmt: str = "md") -> str:
    return render(board, fmt, cross_arch_pivot)


# ------------------------------------------------------------------------- efficiency

EFFICIENCY_COLUMNS = ["method", "dataset", "ipc", "arch", "preset", "budget", "acc_mean", "acc_std", "n", "iterations",
                      "distill_s", "baseline", "baseline_acc", "baseline_iterations", "iters_to_baseline",
                      "speedup", "wall_s_to_baseline", "curve_points"]
_IDC_LINEAGE = ("idc", "dream", "dream_plus")


def baseline_label(method_name: str, config: dict, labels: dict[str, dict]) -> str | None:
    """The cell an efficiency row is compared with: IDC for DREAM / DREAM+ (and IDC with the
    representative sampler); for any other method with ``sampler: representative`` the same
    method with its ordinary sampler; ``None`` for the baselines themselves."""
    rep = config.get("sampler") == "representative"
    if method_name in ("dream", "dream_plus") or (method_name == "idc" and rep):
        want = ("idc", False)
    elif rep:
        want = (method_name, False)
    else:
        return None
    for label, info in labels.items():
        if info["method_name"] == want[0] and (info["config"].get("sampler") == "representative") == want[1]:
            return label
    return None


def _with_params_in_label(df: pd.DataFrame) -> pd.DataFrame:
    """Efficiency rows and curves are keyed by method label; two param entries of one method
    (a sweep) must stay apart, so the label carries the params beyond the preset."""
    if df.empty:
        return df
    return df.assign(method=[m + (f" ({p})" if p else "") for m, p in zip(df.method, _row_params(df))])


def _meta_iterations(meta: dict) -> int:
    """Distillation iterations a synthetic set ran (its metadata's ``iterations``, else the
    resolved config's: sets written before DM / IDM / DataDAM recorded the top-level key)."""
    it = meta.get("iterations")
    if it is None:
        it = (meta.get("resolved") or {}).get("iterations")
    return int(it or 0)


def _iters_to(curve: list[tuple[float, float, float]], target: float) -> tuple[float, float]:
    for it, acc, wall in sorted(curve):
        if acc >= target:
            return it, wall
    return float("nan"), float("nan")


def efficiency(rows: Iterable[dict] | pd.DataFrame, curves: dict[str, dict]) -> pd.DataFrame:
    """Accuracy-vs-iteration efficiency (DREAM / DREAM+ claims): per method cell, its final
    accuracy (mean over all evaluation networks), and the first iteration at which its curve
    reaches its baseline's final accuracy. ``curves`` maps a synset hash to
    ``{"curve": [(iteration, acc, distill_wall_s), ...], "iterations": N, "wall_s": s}``;
    curve points are single-network probes (the ``eval_every`` evaluations), the last point
    is the final mean. Baselines: see :func:`baseline_label`."""
    df = rows if isinstance(rows, pd.DataFrame) else records_to_frame(rows)
    if df.empty:
        return pd.DataFrame(columns=EFFICIENCY_COLUMNS)
    df = _with_params_in_label(df[df.method_kind == "distill"])
    out = []
    for key, grp in df.groupby(["dataset", "ipc", "arch", "preset", "budget"], sort=True):
        labels: dict[str, dict] = {}
        for label, cell in grp.groupby("method", sort=True):
            first = cell.iloc[0]
            accs = cell.test_acc.astype(float)
            meta = [curves.get(h, {}) for h in sorted(set(cell.synset_hash))]
            iters = max(_meta_iterations(m) for m in meta) if meta else 0
            pts: dict[float, list] = {}
            for m in meta:  # several sets: average their probes per iteration
                for it, acc, wall in m.get("curve", []):
                    pts.setdefault(float(it), []).append((float(acc), float(wall)))
            curve = [(it, sum(a for a, _ in v) / len(v), sum(w for _, w in v) / len(v)) for it, v in sorted(pts.items())]
            wall = sum(float(m.get("wall_s") or 0) for m in meta) / max(len(meta), 1)
            curve.append((float(iters), float(accs.mean()), wall))
            labels[label] = {"method_name": first.method_name, "config": first.method_config or {},
                             "acc": float(accs.mean()), "std": float(accs.std(ddof=0)), "n": len(accs),
                             "iters": iters, "wall": wall, "curve": curve, "n_probes": len(curve) - 1}
        for label, info in labels.items():
            base = baseline_label(info["method_name"], info["config"], labels)
            row = {"method": label, "dataset": key[0], "ipc": key[1], "arch": key[2], "preset": key[3], "budget": key[4],
                   "acc_mean": info["acc"], "acc_std": info["std"], "n": info["n"], "iterations": info["iters"],
                   "distill_s": info["wall"], "baseline": base or "", "baseline_acc": float("nan"),
                   "baseline_iterations": float("nan"), "iters_to_baseline": float("nan"), "speedup": float("nan"),
                   "wall_s_to_baseline": float("nan"), "curve_points": info["n_probes"] + 1}
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
        return eff.to_csv(index=False, float_format="%.4f")
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
    cols = ["dataset", "ipc", "preset", "budget", "method", "acc", "iterations", "distill_s", "baseline", "baseline_acc",
            "reaches baseline at", "speedup", "wall_s_to_baseline", "curve_points"]
    view = v[cols]
    if fmt == "md":
        return view.to_markdown(index=False) if not view.empty else "(no distillation results)"
    if fmt == "latex":
        return view.to_latex(index=False, escape=True)
    raise DbenchError(f"unknown table format {fmt!r}; use md, latex or csv.")


def plot_efficiency(rows: Iterable[dict] | pd.DataFrame, curves: dict[str, dict], path: Path) -> Path:
    """Accuracy vs distillation iteration (top) and vs distillation wall time (bottom), one
    column per (dataset, ipc, preset, budget)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = rows if isinstance(rows, pd.DataFrame) else records_to_frame(rows)
    df = _with_params_in_label(df[df.method_kind == "distill"])
    groups = list(df.groupby(["dataset", "ipc", "preset", "budget"], sort=True))
    n = max(len(groups), 1)
    fig, axes = plt.subplots(2, n, figsize=(5.5 * n, 7.0), squeeze=False)
    for col, (key, grp) in enumerate(groups):
        for label, cell in grp.groupby("method", sort=True):
            m = curves.get(sorted(set(cell.synset_hash))[0], {})
            pts = sorted((float(i), float(a), float(w)) for i, a, w in m.get("curve", []))
            pts.append((float(_meta_iterations(m)), float(cell.test_acc.mean()), float(m.get("wall_s") or 0)))
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
