"""The leaderboard as a static site: ``dbench site --out site/``.

A pure function of result rows, like the tables (it builds on :mod:`benchmark.tables` and
imports no method code, model or torch for the pages). The output is one folder that opens
from ``file://`` with no server and no network:

* ``index.html``: the leaderboard (one line per method configuration x dataset x IPC x
  evaluation network x protocol x budget x precision) as an itables/DataTables table with its
  offline bundle inlined (sorting, search, SearchPanes filters for dataset, IPC, protocol,
  budget and kind, CSV export), then the plots that have data (Altair/Vega-Lite specs drawn by
  the Vega bundle in ``assets/``): accuracy vs IPC, accuracy vs distillation iteration, the
  cross-architecture heatmap, continual-learning accuracy per step;
* ``rows/<id>.html``: one page per leaderboard line: per-network accuracies, the resolved
  config, protocol and budget as they ran, provenance and, when the set is in the results
  store and torch imports, the synthetic set's image grid (``img/<synset>.png``);
* ``leaderboard.csv``: the tidy table (the same columns as ``dbench table --format csv``).

Whatever columns :func:`benchmark.tables.leaderboard` returns beyond the ones this module knows
(e.g. scores added later) are shown as extra columns and on the row pages.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import ConfigError, DbenchError
from .tables import TIDY_COLUMNS, leaderboard, method_label, records_to_frame

KINDS = ("distill", "select", "reference", "imported")
# leaderboard columns this module lays out itself; any other column of the frame is shown as is
KNOWN_COLUMNS = set(TIDY_COLUMNS) | {"method_display", "method_preset", "dataset_display", "arch_eval_display",
                                     "arch_distill_display", "label"}
# the raw-row fields that identify one leaderboard line (board name -> row name)
_KEY = {"method_label": "method_label", "method_display": "method_display", "method_preset": "method_preset",
        "dataset": "dataset", "ipc": "ipc", "arch_eval": "arch_eval", "arch_distill": "arch_distill",
        "protocol": "protocol", "budget": "budget", "precision": "precision", "method_kind": "method_kind",
        "params": "params_label", "extractor": "extractor_label"}
_PROVENANCE = ["git_commit", "dbench_version", "torch_version", "python_version", "hardware", "device", "threads",
               "provenance", "grid", "created"]
_MLFLOW_KEYS = ("mlflow_run_id", "run_id")
MAX_PREVIEW_IMAGES = 1000  # image grids of bigger sets show the first images of every class


def _require() -> None:
    missing = []
    for mod in ("jinja2", "itables", "altair", "vl_convert"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        raise DbenchError(f"dbench site needs {', '.join(missing)}: pip install 'dbench[site]' "
                          "(itables, altair, vl-convert-python, jinja2).")


# ------------------------------------------------------------------------------ inputs


@dataclass
class SiteInputs:
    """Rows and curve records to build from, where they came from, and the results store in
    which synthetic sets are looked up for the image grids (None: no images)."""

    rows: list[dict] = field(default_factory=list)
    curves: dict[str, dict] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    store_root: Path | None = None


def collect(rows_files: Iterable[Path] = (), results_dir: Path | None = None,
            read_store: bool | None = None) -> SiteInputs:
    """Rows from exported rows files (``dbench table --out DIR`` writes ``DIR/rows/NAME.jsonl``; a
    folder stands for its ``*.jsonl``) and/or a results store (its grid rows, the continual rows
    under ``continual/*/`` and the curve records). ``read_store`` defaults to: read the store
    when ``results_dir`` is given or no rows file is. The store (given or default) is where the
    image grids come from either way."""
    from .cli import read_rows_file
    from .store import ResultStore

    files: list[Path] = []
    for f in map(Path, rows_files):
        if f.is_dir():
            found = sorted(f.glob("*.jsonl"))
            if not found:
                raise ConfigError(f"--rows {f}: no .jsonl rows files in this folder.")
            files += found
        else:
            files.append(f)
    rows_files = files
    store = ResultStore(results_dir)
    if read_store is None:
        read_store = results_dir is not None or not rows_files
    inp = SiteInputs(store_root=store.root if store.root.is_dir() else None)
    for f in rows_files:
        rows, curves = read_rows_file(Path(f))
        inp.rows += rows
        inp.curves.update(curves)
        inp.sources.append(f"{f} ({len(rows)} rows)")
    if read_store:
        if store.root.exists() and not store.root.is_dir():
            raise ConfigError(f"--results-dir {store.root}: is a file; give the results folder.")
        n = len(inp.rows)
        inp.rows += list(store.iter_rows())
        cont = store.root / "continual"
        if cont.is_dir():
            for d in sorted(p for p in cont.iterdir() if p.is_dir()):
                inp.rows += list(ResultStore(d).iter_rows())
        for h in {r.get("synset_hash") for r in inp.rows[n:] if r.get("method_kind") == "distill"} - {None}:
            c = store.curve(h)
            if c:
                inp.curves.setdefault(h, c)
        inp.sources.append(f"{store.root} ({len(inp.rows) - n} rows)")
    inp.rows = dedupe(inp.rows)
    return inp


def dedupe(rows: list[dict]) -> list[dict]:
    """One row per (task, cell, network): a row read from a rows file and from the store once."""
    seen, out = set(), []
    for r in rows:
        k = (r.get("task", "grid"), r.get("cell_hash"), r.get("model_index"), r.get("step"))
        if k[1] is not None and k in seen:
            continue
        seen.add(k)
        out.append(r)
    return out


def split_rows(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """(leaderboard rows, continual rows); tuning rows (validation accuracies) are neither."""
    board = [r for r in rows if r.get("task", "grid") not in ("continual", "tune") and "test_acc" in r]
    cont = [r for r in rows if r.get("task") == "continual" and "test_acc" in r]
    return board, cont


# ------------------------------------------------------------------------------ frames


def _s(v: Any) -> str:
    """A key value as text: None and NaN are ''."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _num(v: Any, fmt: str = "{:.1f}") -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return ""
    return "" if math.isnan(f) or math.isinf(f) else fmt.format(f)


def line_id(key: Mapping[str, Any]) -> str:
    """A stable id for one leaderboard line (the file name of its page)."""
    text = json.dumps({k: _s(key.get(k)) for k in _KEY}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _is_random(label: Any) -> bool:
    return str(label).split(".")[0] == "random"


def with_delta(board: pd.DataFrame) -> pd.DataFrame:
    """``board`` plus ``id``, and ``random_acc`` / ``delta_random``: the mean of Random under
    the same dataset, IPC, evaluation network, protocol, budget and precision (a set made on
    the same network preferred, then Random without params) and ours minus it. Empty for Random
    itself and where no Random row exists."""
    b = board.copy()
    b["id"] = [line_id({k: getattr(r, k) for k in _KEY}) for r in b.itertuples()]
    rnd = b[[_is_random(v) for v in b.method_label]]
    same = ["dataset", "ipc", "arch_eval", "protocol", "budget", "precision"]
    base, delta = [], []
    for r in b.itertuples():
        cand = rnd
        for k in same:
            cand = cand[cand[k] == getattr(r, k)]
        if _is_random(r.method_label) or cand.empty:
            base.append(float("nan"))
            delta.append(float("nan"))
            continue
        cand = cand.assign(_a=cand.arch_distill != r.arch_distill, _p=cand.params != "").sort_values(["_a", "_p"])
        base.append(float(cand.acc_mean.iloc[0]))
        delta.append(float(r.acc_mean) - base[-1])
    b["random_acc"], b["delta_random"] = base, delta
    # One notion of "vs random" across tables and site: the leaderboard's paired difference
    # (same set seeds and networks, tables.SCORE_COLUMNS) wherever it could pair networks; the
    # difference of the means only where nothing pairs, and then marked as unpaired.
    paired = b["diff_random"].notna() if "diff_random" in b else pd.Series(False, index=b.index)
    paired &= ~pd.Series([_is_random(v) for v in b.method_label], index=b.index)
    if paired.any():
        b.loc[paired, "delta_random"] = b.loc[paired, "diff_random"].astype(float)
    b["delta_random_paired"] = paired & b["delta_random"].notna()
    return b


def extra_columns(board: pd.DataFrame) -> list[str]:
    """Leaderboard columns beyond the ones this module lays out (shown as they are)."""
    return [c for c in board.columns if c not in KNOWN_COLUMNS and c not in ("id", "random_acc", "delta_random",
                                                                                 "delta_random_paired")]


def lines_rows(rows: list[dict], board: pd.DataFrame) -> dict[str, list[dict]]:
    """Leaderboard line id -> the raw rows (one per evaluated network) it was computed from."""
    defaults = {"params_label": "", "extractor_label": "", "precision": "fp32", "method_preset": None}
    out: dict[str, list[dict]] = {i: [] for i in board["id"]}
    for r in rows:
        rr = {**defaults, **{k: v for k, v in r.items() if v is not None or k not in defaults}}
        i = line_id({bk: rr.get(rk) for bk, rk in _KEY.items()})
        if i in out:
            out[i].append(r)
    return out


def continual_points(rows: list[dict]) -> pd.DataFrame:
    """Continual learning: mean/std/n of the test accuracy per (dataset, method configuration,
    steps, step) over orders x networks."""
    if not rows:
        return pd.DataFrame()
    df = records_to_frame(rows)
    for k in ("method_preset", "params_label"):
        if k not in df:
            df[k] = None if k == "method_preset" else ""
    df["label"] = [method_label(d, p, q or "") for d, p, q in zip(df.method_display, df.method_preset, df.params_label)]
    g = df.groupby(["dataset_display", "label", "steps", "step"], sort=True)
    out = g.test_acc.agg(acc_mean="mean", acc_std=lambda s: float(s.std(ddof=0)), n="count").reset_index()
    out["classes_seen"] = g.classes_seen.first().values if "classes_seen" in df else out.step
    return out


def efficiency_points(rows: list[dict], curves: Mapping[str, Mapping]) -> pd.DataFrame:
    """Accuracy vs distillation iteration for every distillation configuration whose set has a
    stored curve (single-network probes, averaged over its sets) plus the final point (the mean
    over all its evaluation networks), on the network the set was made on."""
    if not rows:
        return pd.DataFrame()
    df = records_to_frame(rows)
    if "method_kind" not in df or "synset_hash" not in df:
        return pd.DataFrame()
    df = df[(df.method_kind == "distill") & (df.arch_eval == df.get("arch_distill", df.arch_eval))]
    if df.empty:
        return pd.DataFrame()
    for k in ("method_preset", "params_label", "iterations"):
        if k not in df:
            df[k] = None if k != "params_label" else ""
    df["label"] = [method_label(d, p, q or "") for d, p, q in zip(df.method_display, df.method_preset, df.params_label)]
    df["precision"] = df.get("precision", pd.Series("fp32", index=df.index)).fillna("fp32")
    out = []
    keys = ["dataset_display", "ipc", "arch_eval_display", "protocol", "budget", "precision", "label"]
    for key, cell in df.groupby(keys, sort=True):
        recs = [curves.get(h) or {} for h in sorted(set(cell.synset_hash.dropna()))]
        if not any(r.get("curve") for r in recs):
            continue
        pts: dict[float, list] = {}
        for r in recs:
            for it, acc, wall in r.get("curve", []):
                pts.setdefault(float(it), []).append((float(acc), float(wall)))
        its = [int(r.get("iterations") or 0) for r in recs] + [int(x) for x in cell.iterations.dropna()]
        final = float(max(its)) if its else 0.0
        for it, v in sorted(pts.items()):
            if it < final:
                out.append(dict(zip(keys, key), iteration=it, acc=sum(a for a, _ in v) / len(v),
                                wall_s=sum(w for _, w in v) / len(v), point="probe (1 network)"))
        wall = sum(float(r.get("wall_s") or 0) for r in recs) / max(len(recs), 1)
        out.append(dict(zip(keys, key), iteration=final, acc=float(cell.test_acc.mean()), wall_s=wall,
                        point=f"final (mean of {len(cell)})"))
    return pd.DataFrame(out)


# ------------------------------------------------------------------------------- plots


def _chart_json(chart) -> dict:
    import altair as alt

    with alt.data_transformers.enable("default", max_rows=None):  # never drop data
        return chart.to_dict()


def _legend():
    import altair as alt

    return alt.Legend(orient="bottom", direction="vertical", labelLimit=480, title=None)


def _title(text: str, subtitle: str = ""):
    import altair as alt

    return alt.TitleParams(text=text, subtitle=subtitle or alt.Undefined, anchor="start")


def _setting_suffix(df: pd.DataFrame, cols: list[str]) -> pd.Series:
    """' · protocol/budget/precision' when a frame mixes settings; '' otherwise."""
    if df[cols].drop_duplicates().shape[0] <= 1:
        return pd.Series("", index=df.index)
    return df[cols].astype(str).agg("/".join, axis=1).radd(" · ")


def ipc_charts(board: pd.DataFrame) -> list[dict]:
    """Accuracy vs IPC, one chart per dataset with at least two IPCs (sets evaluated on the
    network they were made on; the whole dataset as a dashed rule)."""
    import altair as alt

    charts = []
    b = board[board.arch_eval == board.arch_distill]
    for ds, g in b.groupby("dataset_display", sort=True):
        pts = g[g.ipc > 0].copy()
        if pts.ipc.nunique() < 2:
            continue
        pts["series"] = pts.label + _setting_suffix(pts, ["protocol", "budget", "precision"])
        pts["lo"], pts["hi"] = pts.acc_mean - pts.acc_std, pts.acc_mean + pts.acc_std
        pts["paper"] = [p or (f"other protocol: {o}" if o else "")
                        for p, o in zip(pts.paper.fillna(""), pts.get("paper_other", pd.Series("", index=pts.index))
                                        .fillna(""))]
        pts = pts[["series", "ipc", "acc_mean", "acc_std", "n", "lo", "hi", "protocol", "budget", "precision", "paper"]]
        tip = [alt.Tooltip("series:N", title="method"), alt.Tooltip("ipc:Q", title="IPC"),
               alt.Tooltip("acc_mean:Q", title="ours", format=".1f"),
               alt.Tooltip("acc_std:Q", title="std", format=".1f"),
               "n:Q", alt.Tooltip("paper:N", title="published")]
        x = alt.X("ipc:Q", title="images per class", scale=alt.Scale(type="log"),
                  axis=alt.Axis(values=sorted(pts.ipc.unique().tolist())))
        y = alt.Y("acc_mean:Q", title="test accuracy (%)", scale=alt.Scale(zero=False))
        base = alt.Chart(pts)
        layers = [base.mark_line(point=True).encode(x=x, y=y, color=alt.Color("series:N", legend=_legend()),
                                                    tooltip=tip),
                  base.mark_errorbar().encode(x=x, y=alt.Y("lo:Q", title="test accuracy (%)"), y2="hi:Q",
                                              color="series:N")]
        ref = g[(g.ipc == 0) & (g.method_kind == "reference")]
        if not ref.empty:
            ref = ref.assign(series=ref.label + _setting_suffix(ref, ["protocol", "budget", "precision"]))
            layers.append(alt.Chart(ref[["series", "acc_mean"]]).mark_rule(strokeDash=[6, 4], color="#888").encode(
                y="acc_mean:Q", tooltip=[alt.Tooltip("series:N", title="reference"),
                                         alt.Tooltip("acc_mean:Q", title="accuracy", format=".1f")]))
        chart = alt.layer(*layers).properties(width="container", height=300, title=_title(f"{ds}: accuracy vs IPC"))
        charts.append({"title": f"{ds}", "spec": _chart_json(chart)})
    return charts


def efficiency_charts(points: pd.DataFrame) -> list[dict]:
    """Accuracy vs distillation iteration, one chart per (dataset, IPC, protocol, budget, precision)."""
    import altair as alt

    charts = []
    if points.empty:
        return charts
    for key, g in points.groupby(["dataset_display", "ipc", "protocol", "budget", "precision"], sort=True):
        g = g.drop(columns=["dataset_display", "protocol", "budget", "precision"])
        tip = [alt.Tooltip("label:N", title="method"), "iteration:Q", alt.Tooltip("acc:Q", format=".1f"),
               alt.Tooltip("wall_s:Q", title="distill wall s", format=".0f"), "point:N"]
        chart = alt.Chart(g).mark_line(point=True).encode(
            x=alt.X("iteration:Q", title="distillation iteration"),
            y=alt.Y("acc:Q", title="test accuracy (%)", scale=alt.Scale(zero=False)),
            color=alt.Color("label:N", legend=_legend()), tooltip=tip,
        ).properties(width="container", height=280,
                     title=_title(f"{key[0]} IPC {key[1]}: accuracy vs iteration", f"{key[2]}, {key[3]}, {key[4]}"))
        charts.append({"title": f"{key[0]} IPC {key[1]}", "spec": _chart_json(chart)})
    return charts


def cross_arch_charts(board: pd.DataFrame) -> list[dict]:
    """Cross-architecture heatmaps: one row per set (method x distillation network) that was
    evaluated on two or more networks, one column per evaluation network."""
    import altair as alt

    charts = []
    keys = ["dataset_display", "ipc", "protocol", "budget", "precision"]
    for key, g in board.groupby(keys, sort=True):
        spread = g.groupby(["label", "arch_distill"]).arch_eval.transform("nunique")
        g = g[spread >= 2]
        if g.empty:
            continue
        several = g.arch_distill.nunique() > 1
        g = g.assign(row=g.label + (" · made on " + g.arch_distill_display if several else ""), acc=g.acc_mean.round(1))
        g = g[["row", "arch_eval_display", "acc", "acc_std", "n", "arch_distill_display"]]
        enc = dict(x=alt.X("arch_eval_display:N", title="evaluated on", axis=alt.Axis(labelAngle=-30)),
                   y=alt.Y("row:N", title=None, axis=alt.Axis(labelLimit=220)))
        heat = alt.Chart(g).mark_rect().encode(
            color=alt.Color("acc:Q", title="accuracy %", scale=alt.Scale(scheme="viridis"),
                            legend=alt.Legend(orient="bottom", direction="horizontal")),
            tooltip=[alt.Tooltip("row:N", title="method"), alt.Tooltip("arch_distill_display:N", title="made on"),
                     alt.Tooltip("arch_eval_display:N", title="evaluated on"), alt.Tooltip("acc:Q", format=".1f"),
                     alt.Tooltip("acc_std:Q", title="std", format=".1f"), "n:Q"],
            **enc)
        text = alt.Chart(g).mark_text(baseline="middle").encode(
            text=alt.Text("acc:Q", format=".1f"),
            color=alt.condition(alt.datum.acc < g.acc.median(), alt.value("white"), alt.value("black")), **enc)
        sub = f"{key[2]}, {key[3]}, {key[4]}" + ("" if several else f"; sets made on {g.arch_distill_display.iloc[0]}")
        chart = (heat + text).properties(width=alt.Step(64), height=alt.Step(30),
                                         title=_title(f"{key[0]} IPC {key[1]}: cross-architecture", sub))
        charts.append({"title": f"{key[0]} IPC {key[1]}", "spec": _chart_json(chart)})
    return charts


def continual_charts(points: pd.DataFrame) -> list[dict]:
    """Continual learning: test accuracy on the classes seen so far, per step."""
    import altair as alt

    charts = []
    if points.empty:
        return charts
    for (ds, steps), g in points.groupby(["dataset_display", "steps"], sort=True):
        g = g.assign(lo=g.acc_mean - g.acc_std, hi=g.acc_mean + g.acc_std)
        x = alt.X("step:O", title="step", axis=alt.Axis(labelAngle=0))
        tip = [alt.Tooltip("label:N", title="method"), "step:O", alt.Tooltip("classes_seen:Q", title="classes seen"),
               alt.Tooltip("acc_mean:Q", title="accuracy", format=".1f"),
               alt.Tooltip("acc_std:Q", title="std", format=".1f"), "n:Q"]
        base = alt.Chart(g)
        chart = alt.layer(
            base.mark_line(point=True).encode(x=x, y=alt.Y("acc_mean:Q", title="test accuracy on seen classes (%)",
                                                          scale=alt.Scale(zero=False)),
                                              color=alt.Color("label:N", legend=_legend()), tooltip=tip),
            base.mark_errorbar().encode(x=x, y=alt.Y("lo:Q", title="test accuracy on seen classes (%)"), y2="hi:Q",
                                        color="label:N"),
        ).properties(width="container", height=280, title=_title(f"{ds}: class-incremental", f"{int(steps)} steps"))
        charts.append({"title": f"{ds}, {int(steps)} steps", "spec": _chart_json(chart)})
    return charts


# ------------------------------------------------------------------------------- tables


def _badge(kind: str, value: Any) -> str:
    v = _s(value)
    if not v:
        return ""
    cls = "".join(c if c.isalnum() else "-" for c in v.lower())
    return f'<span class="badge {kind} {kind}-{cls}">{html.escape(v)}</span>'


def _value(v: Any) -> str:
    """Any leaderboard value as text: whole numbers as integers, others with two decimals (three
    significant digits below 1: scores in [0, 1], p-values)."""
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return ""
        if v.is_integer():
            return str(int(v))
        return f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"
    return _s(v)


def _cell(v: Any) -> str:
    return html.escape(_value(v))


def _published_cell(paper: str, other: str, source: str, protocol: str) -> str:
    """The 'published' cell: the paper's number when it was produced under the line's protocol
    (hover: ± and source); a number for the same cell under another protocol is shown greyed as
    '64.9 (dc)', the protocol it comes from in parentheses; else empty."""
    if paper:
        return f'<span title="{html.escape(paper + " (" + source + ")")}">{html.escape(paper.split(" ")[0])}</span>'
    if other:
        tip = f"published under another protocol ({protocol}), not comparable: {other}, {source}"
        return (f'<span class="other-protocol" title="{html.escape(tip)}">'
                f'{html.escape(other.split(" ")[0])} ({html.escape(protocol)})</span>')
    return ""


def display_frame(board: pd.DataFrame, extras: list[str]) -> tuple[pd.DataFrame, dict[str, int]]:
    """The leaderboard as shown: escaped HTML cells (numbers as text that DataTables sorts as
    numbers); returns the frame and the position of each column."""
    made_on = bool((board.arch_distill != board.arch_eval).any())
    has_extractor = bool((board.extractor.fillna("") != "").any())
    out = []
    for r in board.to_dict("records"):
        half = r["acc_ci95"]
        paper, other = _s(r["paper"]), _s(r.get("paper_other"))
        line = {
            "method": f'<a href="rows/{r["id"]}.html">{html.escape(_s(r["label"]))}</a>',
            "dataset": html.escape(_s(r["dataset_display"])),
            "IPC": "" if int(r["ipc"]) == 0 else str(int(r["ipc"])),
            "ours": (f'<span class="caveat" title="{html.escape(_s(r.get("caveat")))}">† {_num(r["acc_mean"])}</span>'
                     if _s(r.get("caveat")) else _num(r["acc_mean"])),  # the grid's word on the number
            "±": _num(r["acc_std"]), "n": str(int(r["n"])),
            "95% CI": "" if half != half else f"[{r['acc_mean'] - half:.1f}, {r['acc_mean'] + half:.1f}]",
            "published": _published_cell(paper, other, _s(r["paper_source"]), _s(r.get("paper_protocol"))),
            "Δ vs random": _num(r["delta_random"], "{:+.1f}") + ("" if r["delta_random"] != r["delta_random"]
                                                                  or r["delta_random_paired"] else " (unpaired)"),
            "kind": _badge("kind", r["method_kind"]), "protocol": _badge("protocol", r["protocol"]),
            "budget": _badge("budget", r["budget"]), "precision": _badge("precision", r["precision"]),
            "arch": html.escape(_s(r["arch_eval_display"])),
        }
        if made_on:
            line["made on"] = html.escape(_s(r["arch_distill_display"]))
        if has_extractor:
            line["extractor"] = html.escape(_s(r["extractor"]))
        for c in extras:
            line[str(c)] = _cell(r[c])
        out.append(line)
    df = pd.DataFrame(out)
    return df, {c: i for i, c in enumerate(df.columns)}


def _itable(df: pd.DataFrame, table_id: str, **kw) -> str:
    from itables import to_html_datatable

    opts: dict[str, Any] = dict(connected=False, table_id=table_id, showIndex=False, allow_html=True,
                                maxBytes=0, maxRows=0, maxColumns=0,  # never down-sample
                                classes="display compact", style="width:100%;margin:0",
                                display_logo_when_loading=False, text_in_header_can_be_selected=False,
                                scrollX=True)
    opts.update(kw)
    return to_html_datatable(df, **opts)


def leaderboard_table(view: pd.DataFrame, idx: dict[str, int]) -> str:
    filters = [idx[c] for c in ("dataset", "IPC", "protocol", "budget", "kind")]
    return _itable(
        view, "leaderboard",
        layout={"top2": "searchPanes", "topStart": {"buttons": [{"extend": "csvHtml5", "text": "CSV (shown rows)",
                                                                 "title": "dbench_leaderboard"}]},
                "topEnd": "search", "bottomStart": ["info", "pageLength"], "bottomEnd": "paging"},
        searchPanes={"columns": filters, "layout": "columns-5", "initCollapsed": True, "cascadePanes": True,
                     "orderable": False, "viewTotal": True},
        order=[[idx["dataset"], "asc"], [idx["IPC"], "asc"], [idx["ours"], "desc"]],
        pageLength=50, lengthMenu=[25, 50, 100, 500, -1] if len(view) > 25 else [25, 50],
        fixedColumns={"start": 1},
        columnDefs=[{"targets": [idx["ours"]], "className": "ours"},
                    {"targets": filters, "searchPanes": {"show": True}}],
    )


def simple_table(df: pd.DataFrame, table_id: str) -> str:
    view = df.copy()
    for c in view.columns:
        view[c] = [_cell(v) for v in view[c]]
    table = _itable(view, table_id, paging=len(view) > 50, pageLength=50, scrollX=False,
                    layout={"topStart": {"buttons": [{"extend": "csvHtml5", "text": "CSV", "title": table_id}]},
                            "topEnd": "search", "bottomStart": "info", "bottomEnd": "paging"})
    return f'<div class="scroll">{table}</div>'


# ------------------------------------------------------------------------------ images


def export_images(store_root: Path | None, hashes: Iterable[str], out: Path) -> dict[str, str]:
    """Write ``img/<synset>.png`` for every set found in the store; {} when torch (or the
    store, or a set) is missing: the pages then go without images."""
    hashes = sorted({h for h in hashes if h})
    if store_root is None or not hashes:
        return {}
    from .store import ResultStore

    store = ResultStore(store_root)
    found = [h for h in hashes if store.synset_path(h).exists()]
    if not found:
        return {}
    try:
        import dataclasses

        import torch

        from .runner import save_png
        from .synset import SyntheticSet
    except Exception:  # noqa: BLE001 - torch-side code unavailable: a site without images
        return {}
    done = {}
    for h in found:
        try:
            s = SyntheticSet.load(store.synset_path(h))
            if len(s) > MAX_PREVIEW_IMAGES:
                k = max(1, MAX_PREVIEW_IMAGES // max(1, len(s.per_class())))
                keep = torch.zeros(len(s), dtype=torch.bool)
                for c in s.labels.unique():
                    keep[(s.labels == c).nonzero().flatten()[:k]] = True
                s = dataclasses.replace(s, images=s.images[keep], labels=s.labels[keep], indices=None)
            save_png(s, out / "img" / f"{h}.png")
            done[h] = f"img/{h}.png"
        except Exception:  # noqa: BLE001 - one unreadable set must not stop the site
            continue
    return done


# -------------------------------------------------------------------------------- pages


def _distinct(rows: list[dict], key: str) -> list[str]:
    return sorted({_s(r.get(key)) for r in rows} - {""})


def _write(path: Path, text: str) -> None:
    """A site file, readable by everyone (a web server may serve the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _pretty(v: Any) -> str:
    return json.dumps(v, indent=2, sort_keys=True, default=str)


def _display_width(png: Path, target: int = 480) -> int | None:
    """Small grids (a few 8x8 digits) are drawn at a whole multiple of their size, until their
    larger side reaches ``target`` pixels (size read from the PNG header)."""
    try:
        head = png.read_bytes()[:24]
    except OSError:
        return None
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    w, h = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    return w * max(1, min(4, target // max(w, h, 1)))


def row_page(line: pd.Series, rows: list[dict], images: dict[str, str], extras: list[str],
             out_dir: Path | None = None) -> dict[str, Any]:
    """What the page of one leaderboard line shows."""
    rows = sorted(rows, key=lambda r: (_s(r.get("exp")), _s(r.get("synset_hash")), r.get("model_index", 0)))
    nets = [{"set": _s(r.get("exp")), "set_seed": _s(r.get("set_seed")), "synset": _s(r.get("synset_hash")),
             "net": _s(r.get("model_index")), "model_seed": _s(r.get("model_seed")),
             "arch": _s(r.get("arch_eval_display")),
             "acc": _num(r.get("test_acc"), "{:.2f}"), "train_s": _num(r.get("train_time_s"), "{:.1f}"),
             "epochs": _s(r.get("epochs"))} for r in rows]
    configs: dict[str, list[tuple[str, str]]] = {}
    for title, key in (("resolved config (as run)", "resolved_config"),
                       ("method config (as configured)", "method_config"),
                       ("params beyond the preset", "method_params"), ("feature extractor", "extractor"),
                       ("protocol (as it trained)", "protocol_config"), ("budget", "budget_config")):
        vals = list(dict.fromkeys(_pretty(r.get(key)) for r in rows if r.get(key) not in (None, "", {})))
        if vals:
            configs[title] = [(f"variant {i + 1}" if len(vals) > 1 else "", v) for i, v in enumerate(vals)]
    prov = [(k, _distinct(rows, k)) for k in _PROVENANCE]
    prov = [(k, v) for k, v in prov if v]
    mlflow = sorted({_s(r.get(k)) for r in rows for k in _MLFLOW_KEYS} - {""})
    sets = list(dict.fromkeys(_s(r.get("synset_hash")) for r in rows))
    pics = [(h, images[h], _display_width(out_dir / images[h]) if out_dir else None) for h in sets if h in images]
    half = line.acc_ci95
    summary = [("ours", f"{_num(line.acc_mean, '{:.2f}')} ± {_num(line.acc_std, '{:.2f}')} (n={int(line.n)}, "
                        "population std over networks)"),
               ("95% CI", "" if half != half else f"[{line.acc_mean - half:.2f}, {line.acc_mean + half:.2f}] (normal)"),
               ("published", (f"{line.paper} ({line.paper_source})" if _s(line.paper) else
                              f"none under this protocol; other protocol: {line.paper_other} ({line.paper_source})"
                              if _s(getattr(line, "paper_other", "")) else "none matched")),
               ("Random, same setting", _num(line.random_acc, "{:.2f}")),
               ("Δ vs random", "" if line.delta_random != line.delta_random else
                _num(line.delta_random, "{:+.2f}") + (" (paired: same set seeds and networks)"
                                                      if line.delta_random_paired else
                                                      " (unpaired: difference of the means; no networks pair)")),
               ("evaluated on", _s(line.arch_eval_display)), ("made on", _s(line.arch_distill_display)),
               ("params", _s(line.params)), ("extractor", _s(line.extractor)),
               ("cells", ", ".join(_distinct(rows, "cell_key")))]
    summary += [(str(c), _value(line[c])) for c in extras]
    return {"line": line, "summary": [(k, v) for k, v in summary if v], "nets": nets, "configs": configs,
            "provenance": prov, "mlflow": mlflow, "images": pics, "sets": sets}


def _vega_bundle() -> str:
    """Vega, Vega-Lite and Vega-Embed in one classic script (from vl-convert, matched to
    Altair's Vega-Lite version); it sets ``window.vegaEmbed``."""
    import altair as alt
    import vl_convert as vlc

    want = ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])
    return vlc.javascript_bundle(vl_version=want if want in vlc.get_vegalite_versions() else None)


def _env():
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("benchmark", "templates"),
                              autoescape=jinja2.select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)


def build_site(inputs: SiteInputs, out: Path, *, published: pd.DataFrame | None = None,
               images: bool = True, title: str = "dbench leaderboard") -> Path:
    """Write the site into ``out`` (created; files of an earlier build are replaced) and
    return the path of its ``index.html``."""
    _require()
    from itables import options as itables_options
    from itables.javascript import generate_init_offline_itables_html

    from .tables import render

    grid_rows, cont_rows = split_rows(inputs.rows)
    if not grid_rows and not cont_rows:
        raise ConfigError("no result rows to build a site from: give --rows FILE (written by `dbench table --out DIR` "
                          "as DIR/rows/NAME.jsonl) or a --results-dir with finished cells.")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file; give a folder.")
    out.mkdir(parents=True, exist_ok=True)
    board = leaderboard(grid_rows, published) if grid_rows else pd.DataFrame(columns=TIDY_COLUMNS)
    extras: list[str] = []
    lines: dict[str, list[dict]] = {}
    pics: dict[str, str] = {}
    if not board.empty:
        board = with_delta(board)
        extras = extra_columns(board)
        lines = lines_rows(grid_rows, board)
        if images:
            pics = export_images(inputs.store_root, {r.get("synset_hash") for r in grid_rows}, out)
    env = _env()
    built = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    sections = []
    if not board.empty:
        sections.append(("accuracy-vs-ipc", "Accuracy vs IPC",
                         "Mean ± std over networks, sets evaluated on the network they were made on; dashed: the "
                         "whole training set.", ipc_charts(board)))
    sections.append(("efficiency", "Accuracy vs distillation iteration",
                     "Intermediate points are single-network probes during distillation; the last point of each line "
                     "is the final mean over all evaluation networks.",
                     efficiency_charts(efficiency_points(grid_rows, inputs.curves))))
    if not board.empty:
        sections.append(("cross-architecture", "Cross-architecture transfer",
                         "Mean test accuracy of each set (row) trained on each evaluation network (column).",
                         cross_arch_charts(board)))
    cont_table = ""
    if cont_rows:
        sections.append(("continual", "Continual learning",
                         "Class-incremental (GDumb-style): test accuracy on the classes seen so far after each step, "
                         "mean ± std over orders x networks.", continual_charts(continual_points(cont_rows))))
        from .tables import continual_table

        cont_table = simple_table(continual_table(cont_rows, published), "continual-steps")
    sections = [s for s in sections if s[3] or (s[0] == "continual" and cont_table)]
    charts: dict[str, dict] = {}
    plots = []
    for sid, head, note, cs in sections:
        ids = []
        for c in cs:
            cid = f"chart-{len(charts) + 1}"
            charts[cid] = c["spec"]
            ids.append((cid, c["title"]))
        plots.append({"id": sid, "title": head, "note": note, "charts": ids,
                      "table": cont_table if sid == "continual" else ""})

    table_html, counts = "", {}
    if not board.empty:
        view, idx = display_frame(board, extras)
        table_html = leaderboard_table(view, idx)
        counts = {"lines": len(board), "rows": len(grid_rows), "datasets": board.dataset.nunique(),
                  "methods": board.label.nunique()}
        _write(out / "leaderboard.csv", render(board, "csv"))
    assets = out / "assets"
    assets.mkdir(exist_ok=True)
    if charts:
        _write(assets / "vega-embed.js", _vega_bundle())
    _write(assets / "site.css", (Path(__file__).parent / "templates" / "site.css").read_text())
    index = env.get_template("index.html").render(
        title=title, built=built, sources=inputs.sources, counts=counts, table=table_html,
        itables_init=(generate_init_offline_itables_html(itables_options.dt_bundle)
                      if (table_html or cont_table) else ""),
        plots=plots, charts_json=json.dumps(charts, sort_keys=True).replace("<", "\\u003c"), has_charts=bool(charts),
        extras=extras, continual_rows=len(cont_rows), kinds=KINDS, images=len(pics))
    _write(out / "index.html", index)

    page = env.get_template("row.html")
    rows_dir = out / "rows"
    rows_dir.mkdir(exist_ok=True)
    keep = set()
    for _, line in board.iterrows():
        ctx = row_page(line, lines.get(line["id"], []), pics, extras, out)
        _write(rows_dir / f"{line['id']}.html",
                          page.render(title=title, built=built, badge=_badge, max_images=MAX_PREVIEW_IMAGES, **ctx))
        keep.add(f"{line['id']}.html")
    for stale in rows_dir.glob("*.html"):  # lines of an earlier build that are gone
        if stale.name not in keep:
            stale.unlink()
    return out / "index.html"
