"""Tables: a pure function of saved result rows (pandas).

Everything a table shows comes from the rows themselves (see :mod:`benchmark.rows`): labels,
params beyond the preset, the extractor, the efficiency baseline, display names. This module
imports no method registry, model or torch, so editing a preset never relabels an old result
and a table renders where the method code cannot even be imported. Published numbers are joined
from ``results/reference/published.csv`` and shown *beside* ours, never instead, and only when
they were produced under the same protocol, dataset, IPC and architectures (:func:`find_published`);
a number for the same cell under another protocol is shown apart, marked with its protocol.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import DbenchError
from .rows import upgrade

# paper: the published number under the same protocol (and dataset, IPC, architectures);
# paper_other: else one for the same cell under another protocol, marked "64.9 ± 3.5 (dc)";
# paper_source / paper_protocol: where the number shown (in either column) comes from and its protocol
TIDY_COLUMNS = ["method_label", "dataset", "ipc", "arch_eval", "protocol", "budget", "precision", "acc_mean", "acc_std",
                "n", "acc_ci95", "paper", "paper_source", "paper_protocol", "paper_other", "arch_distill",
                "method_kind", "extractor", "params"]

_SOURCE_PRIORITY = ["DM (WACV 2023)", "DREAM+ (arXiv 2310.15052)", "DataDAM (ICCV 2023) supp",
                    "IDM (CVPR 2023) supp", "DREAM (ICCV 2023) supp"]


def published_path() -> Path:
    env = os.environ.get("DBENCH_PUBLISHED_CSV")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "results" / "reference" / "published.csv"


PUBLISHED_COLUMNS = ["source", "table", "method", "dataset", "ipc", "arch_distill", "arch_eval", "metric", "value",
                     "std", "notes", "protocol", "origin", "iterations", "eval_epochs", "protocol_notes"]


def load_published(path: Path | None = None) -> pd.DataFrame:
    """The published numbers, one row each, with the protocol that produced each (see
    ``results/reference/README.md``). A file without a ``protocol`` column (an older copy) reads
    as protocol 'unknown' everywhere, so none of its numbers is shown as matching ours."""
    p = path or published_path()
    if not p.exists():
        return pd.DataFrame(columns=PUBLISHED_COLUMNS)
    pub = pd.read_csv(p, keep_default_na=False, na_values=[""])
    if "protocol" not in pub:
        pub["protocol"] = "unknown"
    pub["protocol"] = pub["protocol"].fillna("unknown").astype(str)
    return pub


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
    df["caveat"] = df["caveat"].fillna("").astype(str) if "caveat" in df else ""  # the grid's word on a number
    if "engine" in df:  # `engine: loop` is its own cell (a non-default setting): labelled like a param, so a store
        loop = _engine_setting(df) == "loop"  # holding both engines never pools the same networks twice
        if loop.any():
            df = df.copy()
            df.loc[loop, "params_label"] = [f"{q}, engine=loop" if q else "engine=loop"
                                            for q in df.loc[loop, "params_label"]]
    return df


def _engine_setting(df: pd.DataFrame) -> pd.Series:
    """The evaluation engine a row's cell asked for (its identity): a network's ``engine`` says how
    it ran (a lone network of a stacked cell runs the loop) and ``engine_requested`` the cell's
    setting when the two differ; rows from before the field count as stacked."""
    ran = df["engine"].fillna("stacked") if "engine" in df else pd.Series("stacked", index=df.index)
    return df["engine_requested"].fillna(ran) if "engine_requested" in df else ran


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


def leaderboard(rows: Iterable[dict] | pd.DataFrame, published: pd.DataFrame | None = None, *,
                lrs_weight: float = 0.5, ars_gamma: float = 0.5) -> pd.DataFrame:
    """One row per (method configuration, dataset, ipc, eval arch, protocol, budget, precision):
    mean, population std (ddof 0, as the literature reports), n models and a 95% normal CI
    half-width; then the DD-Ranking scores and the paired differences of :func:`with_scores`
    (columns :data:`SCORE_COLUMNS`, after the tidy ones)."""
    df = _frame(rows)
    if df.empty:
        return pd.DataFrame(columns=TIDY_COLUMNS)
    df = df.assign(_cfg=df.groupby(_GROUP, dropna=False, sort=True).ngroup())
    grouped = df.groupby(_GROUP, dropna=False, sort=True)
    g = grouped["test_acc"]
    out = g.agg(acc_mean="mean", acc_std=lambda s: float(s.std(ddof=0)), n="count",
                _sstd=lambda s: float(s.std(ddof=1)) if len(s) > 1 else float("nan")).reset_index()
    out["_cfg"] = grouped["_cfg"].first().to_numpy()
    out["caveat"] = grouped["caveat"].agg(_join_caveats).to_numpy()
    out["acc_ci95"] = 1.96 * out.pop("_sstd") / out.n.pow(0.5)
    pub = load_published() if published is None else published
    cols = [published_columns(find_published(pub, r.method_display, r.dataset_display, r.ipc, r.arch_eval_display,
                                             r.arch_distill_display, r.protocol)) for r in out.itertuples()]
    for c in ("paper", "paper_source", "paper_protocol", "paper_other"):
        out[c] = [x[c] for x in cols]
    out["extractor"], out["params"] = out.extractor_label, out.params_label
    out["label"] = _labels(out)
    out = out.sort_values(["dataset", "method_label", "ipc", "arch_eval", "protocol", "budget", "precision",
                           "params"], kind="stable")
    extra = ["method_display", "method_preset", "dataset_display", "arch_eval_display", "arch_distill_display", "label",
             "caveat"]
    board = out[TIDY_COLUMNS + extra + ["_cfg"]].reset_index(drop=True)
    return with_scores(board, df, lrs_weight=lrs_weight, ars_gamma=ars_gamma)


# The names the IDC / DREAM / DREAM+ tables print for our (explicitly named) architectures.
_PUBLISHED_ARCH = {"ResNet-10-BN": "ResNet-10", "DenseNet-121 (CIFAR, k=12)": "DenseNet-121"}


# dbench protocols whose evaluation trains identically (benchmark/evaluate.py: the dm and idm
# profiles are the dsa one under another name; tests/test_published.py checks the profiles): a
# number produced under one is shown as matching a row evaluated under another.
PROTOCOL_ALIASES = {"dm": "dsa", "idm": "dsa"}
# published protocols that never match a row: no evaluation, or one the paper does not state
_NEVER_MATCHES = {"", "unknown", "n/a"}


def protocol_key(protocol: Any) -> str | None:
    """The name under which a row's protocol matches a published number's: the profile name (its
    alias folded: dm -> dsa), or None for a grid-overridden ``dsa*`` and a ``_noaug`` variant,
    which match no published number (no paper evaluated without its augmentation or with the
    grid's overrides)."""
    p = "" if protocol is None or (isinstance(protocol, float) and math.isnan(protocol)) else str(protocol)
    if p in _NEVER_MATCHES or p.endswith("*") or is_noaug(p):
        return None
    return PROTOCOL_ALIASES.get(p, p)


def same_protocol(ours: Any, published: Any) -> bool:
    """Does a published number's protocol equal the protocol our row was evaluated under?"""
    a, b = protocol_key(ours), protocol_key(published)
    return a is not None and a == b


@dataclass(frozen=True)
class PaperNumber:
    """A published number found for one of our cells."""

    value: float
    std: float | None
    source: str  # 'DM (WACV 2023) Table 1'
    protocol: str  # the protocol that produced it (the original paper's, for a reprint)
    same_protocol: bool  # produced under the protocol of the row it is shown beside

    @property
    def text(self) -> str:
        return _fmt(self.value, self.std)

    @property
    def marked(self) -> str:
        """'64.9 ± 3.5 (dc)': the number with the protocol it was produced under."""
        return f"{self.text} ({self.protocol})"


def find_published(pub: pd.DataFrame, method: str, dataset: str, ipc: int, arch: str, arch_distill: str | None,
                   protocol: Any) -> PaperNumber | None:
    """The published number for a row's (method, dataset, ipc, evaluation arch, distillation
    arch, protocol). The architectures must match (a set made on AlexNet is never shown beside a
    ConvNet-made number; a baseline row names no distillation arch and matches any). A number
    under the row's protocol (:func:`same_protocol`) is preferred; without one, a number for the
    same cell under another protocol comes back with ``same_protocol`` False, to be shown marked.
    Among equals: a number with a std, then the source order of ``_SOURCE_PRIORITY``."""
    if pub.empty:
        return None
    arch = _PUBLISHED_ARCH.get(arch, arch)
    m = (pub.metric == "test_acc") & (pub.method == method) & (pub.dataset == dataset) & (pub.arch_eval == arch)
    if arch_distill is not None and "arch_distill" in pub:
        m &= pub.arch_distill.isna() | (pub.arch_distill == _PUBLISHED_ARCH.get(arch_distill, arch_distill))
    m &= pub.ipc.isna() if int(ipc) == 0 else (pub.ipc == float(ipc))
    hits = pub[m & pub.value.notna()]
    if hits.empty:
        return None
    protocols = hits["protocol"].astype(str) if "protocol" in hits else pd.Series("unknown", index=hits.index)
    same = protocols.map(lambda p: same_protocol(protocol, p))
    hits = hits.assign(_other=~same, _protocol=protocols,
                       _p=hits.source.map(lambda s: _SOURCE_PRIORITY.index(s) if s in _SOURCE_PRIORITY else 99),
                       _nostd=hits["std"].isna())
    best = hits.sort_values(["_other", "_nostd", "_p"], kind="stable").iloc[0]
    return PaperNumber(float(best.value), None if pd.isna(best["std"]) else float(best["std"]),
                       f"{best.source} {best.table}", str(best._protocol), not bool(best._other))


def match_published(pub: pd.DataFrame, method: str, dataset: str, ipc: int, arch: str, arch_distill: str | None = None,
                    protocol: Any = None):
    """(value, std, source) of the published number for (method, dataset, ipc, evaluation arch,
    distillation arch) under ``protocol`` (see :func:`find_published`), or (None, None, '') when
    none was produced under that protocol. Without ``protocol`` a lookup of whatever was published
    for the cell, under any protocol: never for showing beside a result."""
    if protocol is None:
        hit = find_published(pub.assign(protocol="any"), method, dataset, ipc, arch, arch_distill, "any") \
            if not pub.empty else None
    else:
        hit = find_published(pub, method, dataset, ipc, arch, arch_distill, protocol)
    if hit is None or not hit.same_protocol:
        return None, None, ""
    return hit.value, hit.std, hit.source


def published_columns(hit: PaperNumber | None) -> dict[str, str]:
    """The leaderboard's paper / paper_source / paper_protocol / paper_other of one line."""
    if hit is None:
        return {"paper": "", "paper_source": "", "paper_protocol": "", "paper_other": ""}
    return {"paper": hit.text if hit.same_protocol else "", "paper_source": hit.source, "paper_protocol": hit.protocol,
            "paper_other": "" if hit.same_protocol else hit.marked}


def paper_note(paper: Any, other: Any) -> str:
    """What a pivot cell adds after our number: '; paper 64.9 ± 3.5' under the same protocol,
    '; other protocol: 64.9 ± 3.5 (dc)' for a number from another protocol, else ''."""
    if isinstance(paper, str) and paper:
        return f"; paper {paper}"
    if isinstance(other, str) and other:
        return f"; other protocol: {other}"
    return ""


def _join_caveats(s) -> str:
    """The distinct caveats of a group, '; '-joined ('' when none)."""
    return "; ".join(dict.fromkeys(str(x) for x in s if isinstance(x, str) and x))


def _ipc_col(i) -> str:
    return "all" if int(i) == 0 else str(int(i))


def _precision_split(b: pd.DataFrame) -> bool:
    return b.precision.nunique() > 1


def _other(b: pd.DataFrame) -> pd.Series:
    """The board's ``paper_other`` (empty for a board made before the column existed)."""
    return b["paper_other"].fillna("") if "paper_other" in b else pd.Series("", index=b.index)


def pivot(board: pd.DataFrame) -> pd.DataFrame:
    """Human view: method x IPC cells 'ours (n); paper p' (or '; other protocol: p (dc)')."""
    if board.empty:
        return board
    b = board.copy()
    b["cell"] = [f"{_fmt(m, s)} (n={n})" + paper_note(p, o)
                 for m, s, n, p, o in zip(b.acc_mean, b.acc_std, b.n, b.paper, _other(b))]
    b["IPC"] = b.ipc.map(_ipc_col)
    index = ["dataset_display", "arch_eval_display", "protocol", "budget"]
    if _precision_split(b):
        index.append("precision")
    index.append("label")
    if (b.extractor != "").any():  # which network the selectors' features came from
        index.append("extractor")
    if "caveat" in b and (b.caveat.fillna("") != "").any():  # a caveated number: marked, its reason beside
        b["cell"] = [f"† {c}" if k else c for c, k in zip(b.cell, b.caveat.fillna(""))]
        b["caveat"] = b.groupby(index, dropna=False, sort=False)["caveat"].transform(_join_caveats)
        index.append("caveat")
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
        cav = ["caveat"] if "caveat" in board and (board.caveat.fillna("") != "").any() else []
        return render_frame(board[TIDY_COLUMNS + cav], "csv")
    return render_frame((view_of or pivot)(board), fmt)


# ---------------------------------------------------------------- cross-architecture


def cross_arch_pivot(board: pd.DataFrame) -> pd.DataFrame:
    """Cross-architecture transfer: one row per (dataset, IPC, method, distillation arch),
    one column per evaluation architecture ('mean ± std (n)'; '; paper x' beside ours where
    published under the same protocol, '; other protocol: x (dc)' where only another's is), and
    ``transfer``: the mean over the evaluation architectures other than the one the set was made
    on."""
    if board.empty:
        return board
    b = board.copy()
    b["IPC"] = b.ipc.map(_ipc_col)
    b["distilled on"] = b.arch_distill_display
    b["cell"] = [f"{_fmt(m, sd)} (n={n})" + paper_note(p, o)
                 for m, sd, n, p, o in zip(b.acc_mean, b.acc_std, b.n, b.paper, _other(b))]
    index = ["dataset_display", "IPC", "protocol", "budget", "label", "distilled on"]
    out = b.pivot_table(index=index, columns="arch_eval_display", values="cell", aggfunc="first", sort=False)
    # distillation architectures first (most rows first), then the other targets by name
    first = list(b.arch_distill_display.value_counts(sort=True).index)
    order = list(dict.fromkeys([c for c in first if c in out.columns] + sorted(out.columns)))
    out = out[order]
    other = b[b.arch_eval != b.arch_distill]
    transfer = other.groupby(index, sort=False).acc_mean.agg(["mean", "count"])
    out = out.join(transfer)
    out["transfer"] = [f"{m:.1f} (over {int(c)})" if c == c and c else ""
                       for m, c in zip(out.pop("mean"), out.pop("count"))]
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
    df = _frame(rows)
    if df.empty:
        return pd.DataFrame()
    return _setting_pairs(df.assign(label=_labels(df)), "precision", "fp32", "bf16",
                          ["dataset_display", "ipc", "arch_eval_display", "protocol", "budget", "label"])


def engine_pairs(rows: Iterable[dict] | pd.DataFrame) -> pd.DataFrame:
    """The stacked evaluation engine versus the one-at-a-time loop on the same sets and network
    seeds (they are the same math, so each pair should agree to float noise): per configuration
    the two means, the paired difference (stacked - loop) with its 95% interval, the largest
    per-network difference, and the training seconds per network of each engine."""
    df = _frame(rows)
    if df.empty or "engine" not in df:
        return pd.DataFrame()
    df = df.assign(engine=_engine_setting(df),
                   params_label=[q.replace(", engine=loop", "").replace("engine=loop", "") for q in df.params_label])
    return _setting_pairs(df.assign(label=_labels(df)), "engine", "loop", "stacked",
                          ["dataset_display", "ipc", "arch_eval_display", "protocol", "budget", "precision", "label"],
                          timing=True)


def _setting_pairs(df: pd.DataFrame, field: str, base: str, other: str, keys: list[str], *,
                   timing: bool = False) -> pd.DataFrame:
    """Rows run two ways (``field`` = ``base`` or ``other``) paired network by network."""
    from scipy import stats

    names = {"dataset_display": "dataset", "arch_eval_display": "arch", "label": "method"}
    out = []
    for k, g in df.groupby(keys, sort=True):
        ga = g[g[field] == base].set_index(["set_seed", "model_index"])
        gb = g[g[field] == other].set_index(["set_seed", "model_index"])
        a, b = ga.test_acc, gb.test_acc
        common = a.index.intersection(b.index)
        if len(common) == 0:
            continue
        d = (b.loc[common] - a.loc[common]).astype(float)
        n = len(d)
        half = float(stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
        noise = float(a.loc[common].std(ddof=0))
        shift = n > 1 and abs(d.mean()) > half and abs(d.mean()) > noise
        line = {names.get(c, c): v for c, v in zip(keys, k)}
        line.update({"n_pairs": n, base: f"{a.loc[common].mean():.2f} ± {noise:.2f}",
                     other: f"{b.loc[common].mean():.2f} ± {float(b.loc[common].std(ddof=0)):.2f}",
                     f"{other} - {base}": f"{d.mean():+.2f}",
                     "95% CI": f"[{d.mean() - half:+.2f}, {d.mean() + half:+.2f}]",
                     "verdict": "shift" if shift else "within noise"})
        if timing:
            line["max |diff|"] = f"{float(d.abs().max()):.2f}"
            for name, gg in ((base, ga), (other, gb)):
                t = gg.loc[common, "train_time_s"] if "train_time_s" in gg else pd.Series(dtype=float)
                line[f"{name} train s/net"] = f"{float(t.mean()):.1f}" if t.notna().any() else ""
        out.append(line)
    return pd.DataFrame(out)


def render_engine(rows, fmt: str = "md") -> str:
    return render_frame(engine_pairs(rows), fmt, "(no loop/stacked pairs)")


def render_precision(rows, fmt: str = "md") -> str:
    return render_frame(precision_pairs(rows), fmt, "(no fp32/bf16 pairs)")


# ------------------------------------------------- DD-Ranking scores, paired statistics
#
# DD-Ranking (Li et al., arXiv 2505.13300; NUS-HPC-AI-Lab/DD-Ranking@b8b0966 README "Label-Robust
# Score", ddranking/metrics/hard_label.py and aug_robust.py) scores a set against random
# selection under the same protocol and against the whole training set:
#   IOR = acc_syn - acc_random        HLR = acc_full - acc_syn
#   alpha = w IOR - (1 - w) HLR       LRS = (e^alpha - e^-1) / (e - e^-1)
#   beta = g (syn - random with augmentation) + (1 - g) (syn - random without)   ARS = same map
# The map sends alpha in [-1, 1] to [0, 1], so the accuracies must be fractions. DD-Ranking's code
# passes percent (its ``accuracy`` multiplies by 100), which drives alpha to about -10 for every
# hard-label method and every LRS to the floor -e^-1/(e - e^-1) = -0.1565. Here every input is a
# fraction, the whole-data model and the random subsets are ordinary grid cells shared by every
# method of the cell (fixed seeds, trained once), and the scores are computed from cell means.

SCORE_COLUMNS = ["ior", "hlr", "lrs", "ars", "n_pairs_random", "diff_random", "diff_random_ci95", "p_random",
                 "vs_random", "best", "n_pairs_best", "diff_best", "diff_best_ci95", "p_best", "vs_best"]
# the cell a score compares within: the same data, IPC, evaluation network, protocol, budget, precision
SCORE_KEY = ["dataset", "ipc", "arch_eval", "protocol", "budget", "precision"]
# a network of one configuration is paired with the network of another trained from the same seeds
PAIR_ON = ["set_seed", "model_index"]
NOAUG_SUFFIX = "_noaug"
ALPHA = 0.05  # a paired difference is a tie (within noise) when its 95% CI covers 0 (p >= ALPHA)


def _unit(x: float) -> float:
    """DD-Ranking's map of a score in [-1, 1] to [0, 1]: (e^x - e^-1) / (e - e^-1)."""
    return (math.exp(x) - math.exp(-1.0)) / (math.e - math.exp(-1.0))


def label_robust_score(ior: float, hlr: float, w: float = 0.5) -> float:
    """LRS from IOR and HLR given as fractions (0.189, not 18.9): alpha = w IOR - (1 - w) HLR."""
    _check_weight("w", w)
    return _unit(w * ior - (1.0 - w) * hlr)


def augmentation_robust_score(gap_aug: float, gap_noaug: float, gamma: float = 0.5) -> float:
    """ARS from the set's gain over random with and without augmentation, as fractions:
    beta = gamma gap_aug + (1 - gamma) gap_noaug."""
    _check_weight("gamma", gamma)
    return _unit(gamma * gap_aug + (1.0 - gamma) * gap_noaug)


def _check_weight(name: str, v: float) -> None:
    if not 0.0 <= float(v) <= 1.0:
        raise DbenchError(f"{name} = {v}: the weight must lie in [0, 1].")


def noaug_protocol(protocol: str) -> str:
    """The no-augmentation variant's name as it appears in rows: 'dsa' -> 'dsa_noaug', and a grid's
    overridden 'dsa*' -> 'dsa_noaug*'."""
    star = protocol.endswith("*")
    base = protocol[:-1] if star else protocol
    return base + NOAUG_SUFFIX + ("*" if star else "")


def is_noaug(protocol: str) -> bool:
    return str(protocol).rstrip("*").endswith(NOAUG_SUFFIX)


def paired_difference(a: pd.Series, b: pd.Series) -> dict:
    """``a - b`` over the networks both have (the series' common index: set seed, network index):
    n pairs, mean difference, 95% t-interval half-width and the two-sided paired t-test p-value
    (``scipy.stats.ttest_rel``). Identical pairs give p = 1; a constant non-zero shift p = 0."""
    from scipy import stats

    common = a.index.intersection(b.index)
    d = (a.loc[common].astype(float) - b.loc[common].astype(float))
    n = len(d)
    out = {"n": n, "mean": float(d.mean()) if n else float("nan"), "ci95": float("nan"), "p": float("nan")}
    if n < 2:
        return out
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        out.update(ci95=0.0, p=1.0 if out["mean"] == 0.0 else 0.0)
        return out
    out["ci95"] = float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n))
    out["p"] = float(stats.ttest_rel(a.loc[common].astype(float), b.loc[common].astype(float)).pvalue)
    return out


def _verdict(r: dict, above: str, below: str) -> str:
    if r["n"] < 2 or math.isnan(r["p"]):
        return "n<2" if r["n"] < 2 else ""
    if r["p"] >= ALPHA:
        return "tie"
    return above if r["mean"] > 0 else below


def _key(values) -> tuple:
    return tuple("" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in values)


def with_scores(board: pd.DataFrame, df: pd.DataFrame, *, lrs_weight: float = 0.5,
                ars_gamma: float = 0.5) -> pd.DataFrame:
    """Add :data:`SCORE_COLUMNS` to a leaderboard ``board`` (one line per configuration, with the
    ``_cfg`` group id of its rows in ``df``):

    * ``ior`` / ``hlr`` (fractions): the configuration's mean minus the mean of the ``random``
      rows of the same :data:`SCORE_KEY`, and the whole-data (``full``, reference) mean of the
      same dataset / eval arch / protocol / budget / precision minus it; ``lrs`` from them with
      weight ``lrs_weight``; ``ars`` (on the augmented protocol's line) from the gains over random
      under the protocol and under its ``_noaug`` variant, weight ``ars_gamma``. Empty (NaN)
      where a baseline is missing.
    * ``diff_random``: the paired difference to random in accuracy points (networks paired on
      :data:`PAIR_ON` within the cell), its 95% t half-width, the paired t-test p-value and
      ``vs_random`` (better / worse / tie: the interval covers 0 / n<2); the same against the
      cell's ``best`` configuration (highest mean, reference rows excluded): ``vs_best`` is best /
      tie / worse (or above, when the networks it shares with the best happen to favour it).
    """
    _check_weight("lrs weight", lrs_weight)
    _check_weight("ars gamma", ars_gamma)
    b = board.copy()
    for c in SCORE_COLUMNS:
        b[c] = "" if c in ("vs_random", "best", "vs_best") else float("nan")
    pairable = all(c in df for c in PAIR_ON)
    accs: dict[int, pd.Series] = {}
    sums: dict[int, tuple[float, int]] = {}
    for cfg, grp in df.groupby("_cfg", sort=False):
        acc = grp.test_acc.astype(float)
        sums[int(cfg)] = (float(acc.sum()), int(acc.count()))
        if pairable:
            accs[int(cfg)] = grp.assign(test_acc=acc).groupby(PAIR_ON, sort=True).test_acc.mean()
    method = b.method_label.astype(str).str.split(".").str[0]
    is_ref = b.method_kind == "reference"
    is_random = (method == "random") & (b.params.fillna("") == "") & ~is_ref

    def pooled(cfgs) -> tuple[float, pd.Series | None]:
        """Mean over every network of these configurations, and their accuracies by network."""
        cfgs = [int(c) for c in cfgs]
        total, count = sum(sums[c][0] for c in cfgs), sum(sums[c][1] for c in cfgs)
        if not count:
            return float("nan"), None
        if not pairable:
            return total / count, None
        if len(cfgs) == 1:
            return total / count, accs[cfgs[0]]
        series = pd.concat([accs[c] for c in cfgs]).groupby(level=[0, 1]).mean()
        return total / count, series

    full_key = ["dataset", "arch_eval", "protocol", "budget", "precision"]
    full_mean = {k: pooled(g._cfg)[0] for k, g in b[is_ref].groupby(full_key, dropna=False, sort=False)}
    full_mean = {_key(k): v for k, v in full_mean.items()}
    random_of: dict[tuple, tuple[float, pd.Series | None]] = {}
    for k, g in b[is_random].groupby(SCORE_KEY, dropna=False, sort=False):
        random_of[_key(k)] = pooled(g._cfg)
    cfg_cols = ["method_label", "dataset", "ipc", "arch_eval", "budget", "precision", "arch_distill", "method_kind",
                "extractor", "params"]  # a configuration, whatever its protocol
    mean_by_cfg = {(_key(r[cfg_cols]), str(r.protocol)): float(r.acc_mean) for _, r in b[~is_ref].iterrows()}

    for k, cell in b[~is_ref].groupby(SCORE_KEY, dropna=False, sort=False):
        key = _key(k)
        rnd_mean, rnd_acc = random_of.get(key, (float("nan"), None))
        full = full_mean.get(_key([k[0], k[2], k[3], k[4], k[5]]), float("nan"))
        best_i = cell.acc_mean.astype(float).idxmax()
        best_label = str(b.at[best_i, "label"]) if "label" in b else str(b.at[best_i, "method_label"])
        for i, r in cell.iterrows():
            ior = (float(r.acc_mean) - rnd_mean) / 100.0
            hlr = (full - float(r.acc_mean)) / 100.0
            b.at[i, "ior"], b.at[i, "hlr"] = ior, hlr
            if not (math.isnan(ior) or math.isnan(hlr)):
                b.at[i, "lrs"] = label_robust_score(ior, hlr, lrs_weight)
            proto = str(r.protocol)
            if not is_noaug(proto) and not math.isnan(ior):
                nk = _key([k[0], k[1], k[2], noaug_protocol(proto), k[4], k[5]])
                syn_n = mean_by_cfg.get((_key(r[cfg_cols]), noaug_protocol(proto)), float("nan"))
                rnd_n = random_of.get(nk, (float("nan"), None))[0]
                gap_n = (syn_n - rnd_n) / 100.0
                if not math.isnan(gap_n):
                    b.at[i, "ars"] = augmentation_robust_score(ior, gap_n, ars_gamma)
            b.at[i, "best"] = best_label
            if not pairable:
                continue
            mine = accs[int(r._cfg)]
            if rnd_acc is not None and not is_random[i]:
                d = paired_difference(mine, rnd_acc)
                b.at[i, "n_pairs_random"], b.at[i, "diff_random"] = d["n"], d["mean"]
                b.at[i, "diff_random_ci95"], b.at[i, "p_random"] = d["ci95"], d["p"]
                b.at[i, "vs_random"] = _verdict(d, "better", "worse") if d["n"] else ""
            if i == best_i:
                b.at[i, "vs_best"] = "best"
                continue
            d = paired_difference(mine, accs[int(b.at[best_i, "_cfg"])])
            b.at[i, "n_pairs_best"], b.at[i, "diff_best"] = d["n"], d["mean"]
            b.at[i, "diff_best_ci95"], b.at[i, "p_best"] = d["ci95"], d["p"]
            b.at[i, "vs_best"] = _verdict(d, "above", "worse") if d["n"] else ""
    return b.drop(columns="_cfg")


PAIRED_COLUMNS = ["dataset", "ipc", "arch_eval", "protocol", "budget", "precision", "method_label", "params",
                  "acc_mean", "acc_std", "n"] + SCORE_COLUMNS


def paired_view(board: pd.DataFrame) -> pd.DataFrame:
    """``--view paired``: one line per configuration, its mean, the paired difference to random
    and to the best configuration of its cell (accuracy points, 95% CI half-width, p-value,
    verdict) and the DD-Ranking scores."""
    if board.empty or "vs_random" not in board:
        return pd.DataFrame()
    b = board[board.method_kind != "reference"].copy()

    def num(x, f="{:+.2f}"):
        return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f.format(x)

    def diff(m, h, n):
        if m is None or (isinstance(m, float) and math.isnan(m)):
            return ""
        return num(m) + ("" if isinstance(h, float) and math.isnan(h) else f" ± {h:.2f}") + f" (n={int(n)})"

    view = pd.DataFrame({
        "dataset": b.dataset_display, "ipc": b.ipc.map(_ipc_col), "arch": b.arch_eval_display,
        "protocol": b.protocol, "budget": b.budget,
        **({"precision": b.precision} if _precision_split(b) else {}),
        "method": b.label,
        "acc": [_fmt(m, s) + f" (n={n})" for m, s, n in zip(b.acc_mean, b.acc_std, b.n)],
        "vs random (pp)": [diff(m, h, n) for m, h, n in zip(b.diff_random, b.diff_random_ci95, b.n_pairs_random)],
        "p (random)": [num(p, "{:.3g}") for p in b.p_random],
        "verdict (random)": b.vs_random,
        "vs best (pp)": [diff(m, h, n) for m, h, n in zip(b.diff_best, b.diff_best_ci95, b.n_pairs_best)],
        "p (best)": [num(p, "{:.3g}") for p in b.p_best],
        "verdict (best)": b.vs_best,
        "LRS": [num(x, "{:.3f}") for x in b.lrs], "ARS": [num(x, "{:.3f}") for x in b.ars],
        "IOR": [num(x, "{:+.3f}") for x in b.ior], "HLR": [num(x, "{:.3f}") for x in b.hlr],
    })
    return view.reset_index(drop=True)


def render_paired(board: pd.DataFrame, fmt: str = "md") -> str:
    """md / latex of :func:`paired_view`; csv: the tidy numbers (:data:`PAIRED_COLUMNS`)."""
    if fmt == "csv":
        if board.empty or "vs_random" not in board:
            return render_frame(pd.DataFrame(columns=PAIRED_COLUMNS), "csv")
        return render_frame(board[board.method_kind != "reference"][PAIRED_COLUMNS], "csv")
    return render_frame(paired_view(board), fmt, "(no results to compare)")


# ------------------------------------------------------------------------- efficiency

EFFICIENCY_COLUMNS = ["method", "dataset", "ipc", "arch", "protocol", "budget", "acc_mean", "acc_std", "n",
                      "iterations", "distill_s", "baseline", "baseline_acc", "baseline_iterations", "iters_to_baseline",
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
            curve = [(it, sum(a for a, _ in v) / len(v), sum(w for _, w in v) / len(v))
                     for it, v in sorted(pts.items())]
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


# ------------------------------------------------------------------ continual learning


def continual_table(rows: list[dict], published: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per (dataset, method configuration, steps): mean ± std over orders x networks at every
    step, the final step, and the published final-step number beside ours: as is when it was
    produced under the rows' protocol (:func:`same_protocol`), else marked 'other protocol:
    34.4 (dm)'. A pure function of the rows (labels and params come from them)."""
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    pub = load_published() if published is None else published
    df["label"] = [method_label(d, p, q) for d, p, q in zip(df.method_display, df.method_preset, df.params_label)]
    out = []
    for (ds, label, T), g in df.groupby(["dataset_display", "label", "steps"], sort=True):
        row: dict[str, Any] = {"dataset": ds, "method": label, "steps": int(T), "ipc": int(g.ipc.iloc[0]),
                               "budget": g.budget.iloc[0], "protocol": g.protocol.iloc[0], "orders": g.order.nunique()}
        for t, gt in g.groupby("step", sort=True):
            row[f"step {int(t)}"] = f"{gt.test_acc.mean():.1f} ± {gt.test_acc.std(ddof=0):.1f}"
        last = g[g.step == g.step.max()].test_acc
        row["final"] = f"{_fmt(last.mean(), last.std(ddof=0))} (n={len(last)})"
        hit = pub[(pub.metric == "cl_final_acc") & (pub.method == g.method_display.iloc[0]) & (pub.dataset == ds)
                  & (pub.ipc == float(row["ipc"])) & pub.notes.fillna("").str.startswith(f"{int(T)} steps")]
        row["paper final"] = ""
        if not hit.empty:
            proto = str(hit.protocol.iloc[0]) if "protocol" in hit else "unknown"
            v = f"{hit.value.iloc[0]:.1f}"
            row["paper final"] = v if same_protocol(row["protocol"], proto) else f"other protocol: {v} ({proto})"
        out.append(row)
    return pd.DataFrame(out).fillna("")


def continual_csv(rows: list[dict]) -> str:
    """Tidy CSV: one line per (method, steps, order, step, network)."""
    df = pd.DataFrame(rows)
    df["method_label"] = [method_label(d, p, q)
                          for d, p, q in zip(df.method_display, df.method_preset, df.params_label)]
    cols = ["method_label", "dataset", "ipc", "steps", "order", "step", "classes_seen", "n_memory", "model_index",
            "test_acc", "arch_eval", "protocol", "budget", "epochs", "method"]
    return df[cols].sort_values(cols[:9]).to_csv(index=False, float_format="%.4f")
