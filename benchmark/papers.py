"""Every table of the five seed papers, and how dbench regenerates it (``dbench papers``).

The catalog (``benchmark/papers.yaml``) has one entry per table of DM, IDM, DREAM, DREAM+ and
DataDAM (and the figures / in-text results with published numbers): what it shows, the spec
files that regenerate it, its layout, and an honest status - ``runs here``, ``needs a GPU``,
``needs data not available offline`` or ``not reproducible`` - with the reason.

:func:`render_entry` lays result rows out as the paper does (rows x columns of the entry's
layout keys), our number beside the published one of the same source and table, missing cells
shown as ``—``. Like :mod:`benchmark.tables` it is a pure function of rows and the published CSV:
it imports no method code.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError

CATALOG_PATH = Path(__file__).with_name("papers.yaml")
REPO_ROOT = Path(__file__).resolve().parent.parent
STATUSES = ("runs here", "needs a GPU", "needs data not available offline", "not reproducible")
PAPERS = ("DM", "IDM", "DREAM", "DREAM+", "DataDAM")
MISSING = "—"
BUDGETS = ("paper", "cpu", "smoke")  # a layout cell shows the first budget that has results
NO_COST = "n/a (no benchmark/cost.py)"
# entries whose own numbers come from another command's output, not from grid rows
OTHER_VIEW = {"nas": "\nOurs: `dbench nas` writes this table's numbers (NAS results are not grid rows); only the "
                     "published side is filled here.",
              "continual": "\nOurs: `dbench continual`, then `dbench table --view continual` (per-step rows); only "
                           "the published side is filled here.",
              "none": "\nNo dbench spec regenerates this table (see the reason above)."}

# layout key -> (leaderboard column of ours, published.csv column)
FIELDS = {"method": ("method_display", "method"), "dataset": ("dataset_display", "dataset"), "ipc": ("ipc", "ipc"),
          "arch_distill": ("arch_distill_display", "arch_distill"), "arch_eval": ("arch_eval_display", "arch_eval"),
          "metric": (None, "metric")}
# our architecture display names as the IDC / DREAM / DREAM+ tables print them
_PAPER_ARCH = {"ResNet-10-BN": "ResNet-10", "DenseNet-121 (CIFAR, k=12)": "DenseNet-121"}


class Published(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    source: str
    table: str
    only: dict[str, list[str]] = Field(default_factory=dict)  # published.csv column -> values kept


class Layout(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    rows: list[str]
    columns: list[str]


class Variant(BaseModel):
    """One ablation setting: the layout keys it sets, how to find its published rows (column ->
    value; ``notes`` as a substring) and our rows (``method_label``, ``method``, ``params``: a
    subset of the row's params beyond the preset; without ``params`` the row must have none)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    set: dict[str, str]
    published: dict[str, str] = Field(default_factory=dict)
    ours: dict[str, Any] = Field(default_factory=dict)


class PaperTable(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    paper: Literal[PAPERS]  # type: ignore[valid-type]
    kind: Literal["table", "figure", "text"]
    section: Literal["main", "supplementary", "main (referenced)"]
    what: str
    published: Published | None = None
    spec: Literal["grid", "nas", "continual", "none"]
    files: list[str] = Field(default_factory=list)
    only: list[str] = Field(default_factory=list)
    layout: Layout
    aliases: dict[str, dict[str, str]] = Field(default_factory=dict)
    variants: list[Variant] = Field(default_factory=list)
    status: Literal[STATUSES]  # type: ignore[valid-type]
    reason: str = ""
    check: str | None = None

    @model_validator(mode="after")
    def _consistent(self):
        if (self.spec == "none") != (not self.files):
            raise ValueError("spec 'none' has no files; any other spec names its files")
        if self.status != "runs here" and not self.reason.strip():
            raise ValueError(f"status '{self.status}' needs a reason")
        if self.only and self.spec != "grid":
            raise ValueError("only: applies to grid files")
        return self

    @property
    def number(self) -> str | None:
        """'Table 3' for a numbered table (None for figures and text)."""
        m = re.search(r"\bTable (\d+)\b", self.id)
        return f"Table {m.group(1)}" if m and self.kind == "table" else None


def load_catalog(path: Path | None = None) -> list[PaperTable]:
    p = path or CATALOG_PATH
    try:
        raw = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{p}: cannot read the paper-table catalog ({e}).") from None
    entries = raw.get("tables") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f"{p}: expected a top-level 'tables:' list.")
    out, seen = [], set()
    for i, e in enumerate(entries):
        try:
            t = PaperTable.model_validate(e)
        except ValidationError as err:
            first = err.errors()[0]
            loc = ".".join(str(x) for x in first["loc"])
            raise ConfigError(f"{p}: tables[{i}] ({(e or {}).get('id', '?')}): {loc}: {first['msg']}.") from None
        if t.id.lower() in seen:
            raise ConfigError(f"{p}: tables[{i}]: duplicate id '{t.id}'.")
        seen.add(t.id.lower())
        out.append(t)
    return out


def _norm(s: str) -> str:
    return " ".join(s.lower().replace("supplementary", "supp").split())


def find_table(table_id: str, catalog: list[PaperTable] | None = None) -> PaperTable:
    """The entry with this id (case and spacing ignored); else a one-line error with close matches."""
    cat = load_catalog() if catalog is None else catalog
    by = {_norm(t.id): t for t in cat}
    if _norm(table_id) in by:
        return by[_norm(table_id)]
    q = _norm(table_id)

    def bare(s: str) -> str:  # 'dream supp table 1' ~ 'dream table 1'
        return s.replace(" supp ", " ")

    word = re.compile(rf"\b{re.escape(q)}\b", re.I)
    close = ([k for k in by if bare(k) == bare(q)]  # the supplement's table under the paper's name
             + difflib.get_close_matches(q, list(by), n=4, cutoff=0.6)
             + [k for k, t in by.items() if word.search(t.what)]  # a topic: 'NAS', 'cross-architecture'
             + [k for k in by if k.split(" ")[0] == q.split(" ")[0]])  # same paper
    close = list(dict.fromkeys(close))[:4]
    hint = f" Did you mean: {', '.join(repr(by[k].id) for k in close)}?" if close else ""
    raise ConfigError(f"unknown paper table {table_id!r}.{hint} `dbench papers` lists all {len(cat)}.")


def resolve(path: str) -> Path:
    """A catalog path (from the repository root), or as given when that does not exist."""
    p = REPO_ROOT / path
    return p if p.exists() else Path(path)


# ------------------------------------------------------------------------- cells and cost


def grid_cells(entry: PaperTable, budget: str | None = None) -> list:
    """The cells of the entry's grid files (its ``only`` filters applied), in file order; a cell
    two files share (the same hash) once."""
    from .grid import expand, load_grid, parse_only

    cells: dict[str, Any] = {}
    for f in entry.files:
        for c in expand(load_grid(resolve(f)), budget=budget, only=parse_only(entry.only) or None):
            cells.setdefault(c.hash, c)
    return list(cells.values())


def count_cells(entry: PaperTable, budget: str | None = None) -> tuple[int | None, list]:
    """(number of cells, the grid cells) - continual specs count (method, steps, order) jobs;
    NAS specs and entries without a spec have no count (None)."""
    if entry.spec == "grid":
        cells = grid_cells(entry, budget)
        return len(cells), cells
    if entry.spec == "continual":
        from .continual import continual_jobs, load_continual

        return sum(len(continual_jobs(load_continual(resolve(f)))) for f in entry.files), []
    return None, []


def estimate_cost(cells: list) -> str:
    """Total estimated GPU-hours (and measured-rate CPU-hours where calibrated) of these cells
    from :mod:`benchmark.cost`; the import is guarded so the listing works without it."""
    if not cells:
        return MISSING
    try:
        from .cost import estimate, fmt_hours, load_calibration
    except ImportError:
        return NO_COST
    try:
        cal = load_calibration()
        costs = estimate(cells, cal or {})
    except Exception as e:  # a cost model that cannot price a cell must not break the listing
        return f"n/a ({type(e).__name__}: {e})"[:80]
    gpu = fmt_hours(sum(k.gpu_h for k in costs))
    cpu = [k.cpu_h for k in costs]
    return f"{gpu} GPU" + (f", {fmt_hours(sum(cpu))} CPU" if cal and all(h is not None for h in cpu) else "")


def listing(catalog: list[PaperTable] | None = None, budget: str | None = None) -> pd.DataFrame:
    """One line per entry: id, what, spec files, cells, estimated cost, status, reason."""
    from .errors import DbenchError

    out = []
    for t in load_catalog() if catalog is None else catalog:
        missing = [f for f in t.files if not resolve(f).exists()]
        if missing:
            n, cost = MISSING, f"spec missing: {', '.join(missing)}"
        elif t.spec == "nas":
            n, cost = MISSING, "see `dbench nas --dry-run`"
        else:
            try:
                k, cells = count_cells(t, budget)
                n = MISSING if k is None else str(k)
                cost = "not estimated (continual jobs)" if t.spec == "continual" else estimate_cost(cells)
            except DbenchError as e:
                n, cost = MISSING, f"invalid: {e}"
        out.append({"id": t.id, "what": t.what, "spec": ", ".join(t.files) or "-", "cells": n, "cost": cost,
                    "status": t.status, "reason": t.reason, "check": t.check or ""})
    return pd.DataFrame(out)


# ------------------------------------------------------------------------------ rendering


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and v == "")


def _ipc_text(v: Any) -> str:
    if _missing(v):
        return "all"
    f = float(v)
    return "all" if f == 0 else str(int(f))


def _text(v: Any) -> str:
    return "" if _missing(v) else str(v)


def _fmt(v: Any, s: Any = None) -> str:
    if _missing(v):
        return MISSING
    return f"{float(v):.1f}" if _missing(s) else f"{float(v):.1f} ± {float(s):.1f}"


def _parse_params(label: Any) -> dict[str, str]:
    out = {}
    for part in _text(label).split(", "):
        k, eq, v = part.partition("=")
        if eq:
            out[k.strip()] = v.strip()
    return out


def _alias(entry: PaperTable, key: str, value: str) -> str:
    if value in entry.aliases.get(key, {}):
        return entry.aliases[key][value]
    return _PAPER_ARCH.get(value, value) if key in ("arch_distill", "arch_eval") else value


def _published_match(r: pd.Series, want: dict[str, str]) -> bool:
    for col, v in want.items():
        have = r.get(col)
        if col == "notes":
            if str(v) not in _text(have):
                return False
        elif col == "ipc":
            if _ipc_text(have) != _ipc_text(v):
                return False
        elif _text(have) != str(v):
            return False
    return True


def _ours_match(b: pd.Series, want: dict[str, Any], config: dict[str, Any]) -> bool:
    """Does a configuration of ours (a leaderboard line) belong to this variant? ``params`` are
    looked up in the line's params label, then in its rows' full method config (a param equal to
    the preset's value is not in the label: DREAM's official per_cluster 1)."""
    if not want:
        return False
    for k in ("method_label", "method", "method_display"):
        if k in want and _text(b.get(k)) != str(want[k]):
            return False
    have = _parse_params(b.get("params"))
    need = {str(k): str(v) for k, v in (want.get("params") or {}).items()}
    if not need:
        return not have
    return all(have.get(k, _text(config.get(k))) == v for k, v in need.items())


def published_rows(entry: PaperTable, pub: pd.DataFrame | None = None) -> pd.DataFrame:
    """The published.csv rows of the entry's source and table (in the file's order)."""
    if entry.published is None:
        return pd.DataFrame()
    if pub is None:
        from .tables import load_published

        pub = load_published()
    if pub.empty:
        return pub
    m = (pub.source == entry.published.source) & (pub.table == entry.published.table)
    for col, vals in entry.published.only.items():
        m &= pub[col].map(_text).isin([str(v) for v in vals])
    keep = pub[m]
    if "metric" not in entry.layout.rows + entry.layout.columns and (keep.get("metric") == "test_acc").any():
        keep = keep[keep.metric == "test_acc"]  # the layout has no metric key: accuracies only
    return keep


def _keys(entry: PaperTable, values: dict[str, str], variant: Variant | None) -> dict[str, str]:
    k = dict(values)
    if variant is not None:
        k.update(variant.set)
    return k


def _pub_keys(entry: PaperTable, r: pd.Series) -> dict[str, str] | None:
    vals = {key: (_ipc_text(r.get(col)) if key == "ipc" else entry.aliases.get(key, {}).get(_text(r.get(col)),
                                                                                           _text(r.get(col))))
            for key, (_, col) in FIELDS.items()}
    variant = None
    if entry.variants:
        variant = next((v for v in entry.variants if v.published and _published_match(r, v.published)), None)
        if variant is None:
            return None
    return _keys(entry, vals, variant)


def _ours_keys(entry: PaperTable, b: pd.Series, configs: dict[tuple, dict] | None = None) -> dict[str, str] | None:
    vals = {}
    for key, (col, _) in FIELDS.items():
        if col is None:
            vals[key] = "test_acc"
        elif key == "ipc":
            vals[key] = _ipc_text(b.get(col))
        else:
            vals[key] = _alias(entry, key, _text(b.get(col)))
    variant = None
    if entry.variants:
        config = (configs or {}).get((_text(b.get("method_label")), _text(b.get("params"))), {})
        variant = next((v for v in entry.variants if _ours_match(b, v.ours, config)), None)
        if variant is None:
            return None
    return _keys(entry, vals, variant)


def _col_label(keys: list[str], values: tuple) -> str:
    """'CIFAR-10 10'; a number under a key of the entry's own (an ablation's N, p) is 'N=32'."""
    parts = [f"{k}={v}" if k not in FIELDS and v.replace(".", "", 1).isdigit() else v
             for k, v in zip(keys, values) if v]
    return " ".join(parts) or "value"


def _configs(rows) -> dict[tuple, dict]:
    """(method_label, params label) -> the flattened method config its rows were made with."""
    from .rows import flatten

    recs = rows.to_dict("records") if isinstance(rows, pd.DataFrame) else rows
    out: dict[tuple, dict] = {}
    for r in recs:
        cfg = r.get("method_config")
        if isinstance(cfg, dict):
            out.setdefault((_text(r.get("method_label")), _text(r.get("params_label"))), flatten(cfg))
    return out


def _same_protocol(ours: Any, paper: Any) -> bool:
    try:
        from .tables import same_protocol
    except ImportError:  # an older tables module: compare names
        return _text(ours).rstrip("*") == _text(paper)
    return same_protocol(ours, paper)


def _pick(cands: list[pd.Series]) -> pd.Series:
    """One configuration per layout cell: the paper budget first, the preset as is (no params)
    before a reduced one, then the most networks."""
    def rank(b):
        budget = _text(b.get("budget"))
        return (BUDGETS.index(budget) if budget in BUDGETS else len(BUDGETS), _text(b.get("params")) != "",
                -int(b.get("n") or 0))
    return sorted(cands, key=rank)[0]


def render_entry(entry: PaperTable, rows: Iterable[dict] | pd.DataFrame, published: pd.DataFrame | None = None,
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the paper-layout view, the tidy frame) of an entry from result rows.

    View: one line per row key, one column per column key (in the paper's order, then any of
    ours the paper lacks); each cell 'ours / paper'. Ours: 'mean ± std (n=..)', with the budget
    when it is not ``paper``; paper: 'value ± std', marked '(other protocol: X)' when it was
    produced under another protocol than ours. A side without a number shows '—'. Tidy: one
    line per layout cell with both sides' numbers, configuration and protocols."""
    from .tables import leaderboard

    pub = published_rows(entry, published)
    rows = rows if isinstance(rows, pd.DataFrame) else list(rows)
    board = leaderboard(rows, published=pd.DataFrame()) if len(rows) else pd.DataFrame()
    rk, ck = entry.layout.rows, entry.layout.columns
    cells: dict[tuple, dict] = {}
    row_order: list[tuple] = []
    col_order: list[tuple] = []

    def slot(keys: dict[str, str]) -> dict:
        r, c = tuple(keys.get(k, "") for k in rk), tuple(keys.get(k, "") for k in ck)
        if r not in row_order:
            row_order.append(r)
        if c not in col_order:
            col_order.append(c)
        return cells.setdefault((r, c), {"pub": [], "ours": []})

    for v in entry.variants:  # a variant naming every layout key is a cell of the table, results or not
        if all(k in v.set for k in rk + ck):
            slot(v.set)
    for _, r in pub.iterrows():
        keys = _pub_keys(entry, r)
        if keys is not None:
            slot(keys)["pub"].append(r)
    configs = _configs(rows) if entry.variants else {}
    for _, b in board.iterrows():
        keys = _ours_keys(entry, b, configs)
        if keys is not None:
            slot(keys)["ours"].append(b)

    view, tidy = [], []
    for r in row_order:
        line = dict(zip(rk, r))
        for c in col_order:
            cell = cells.get((r, c), {"pub": [], "ours": []})
            o = _pick(cell["ours"]) if cell["ours"] else None
            p = next((x for x in cell["pub"] if not _missing(x.get("value"))), cell["pub"][0] if cell["pub"] else None)
            ours_txt, paper_txt = MISSING, MISSING
            if o is not None:
                extra = [f"n={int(o.n)}"] + ([str(o.budget)] if _text(o.get("budget")) != "paper" else [])
                ours_txt = f"{_fmt(o.acc_mean, o.acc_std)} ({', '.join(extra)})"
                if _text(o.get("caveat")):  # the grid's word on the number (e.g. a cpu-scale distillation)
                    ours_txt = f"† {ours_txt}"
                if len(cell["ours"]) > 1:
                    ours_txt += f" +{len(cell['ours']) - 1} more config"
            other = False
            if p is not None:
                paper_txt = (_fmt(p.get("value"), p.get("std")) if _text(p.get("metric")) in ("", "test_acc")
                             or _missing(p.get("value")) else f"{float(p.get('value')):g}")
                if o is not None and paper_txt != MISSING and "protocol" in p and not _same_protocol(o.protocol,
                                                                                                    p.get("protocol")):
                    other = True
                    paper_txt += f" (other protocol: {_text(p.get('protocol')) or 'unknown'})"
            line[_col_label(ck, c)] = f"{ours_txt} / {paper_txt}"
            if o is None and p is None:
                continue
            tidy.append({**dict(zip(rk, r)), **dict(zip(ck, c)),
                         "ours_mean": None if o is None else float(o.acc_mean),
                         "ours_std": None if o is None else float(o.acc_std),
                         "ours_n": None if o is None else int(o.n),
                         "ours_config": "" if o is None else str(o.label),
                         "ours_protocol": "" if o is None else str(o.protocol),
                         "ours_budget": "" if o is None else str(o.budget),
                         "ours_caveat": "" if o is None else _text(o.get("caveat")),
                         "paper_value": None if p is None or _missing(p.get("value")) else float(p.get("value")),
                         "paper_std": None if p is None or _missing(p.get("std")) else float(p.get("std")),
                         "paper_protocol": "" if p is None else _text(p.get("protocol")),
                         "paper_other_protocol": other,
                         "paper_source": "" if entry.published is None else
                         f"{entry.published.source} {entry.published.table}"})
        view.append(line)
    return pd.DataFrame(view), pd.DataFrame(tidy)


def header(entry: PaperTable) -> str:
    src = (f"{entry.published.source} {entry.published.table}" if entry.published else
           "no published numbers in results/reference/published.csv")
    return (f"{entry.id}: {entry.what}.\nStatus: {entry.status}" + (f" ({entry.reason})" if entry.reason else "")
            + f"\nEach cell: ours (n networks; budget when not paper) / published ({src}); {MISSING} = missing; "
            "† = the grid marks our number (e.g. a cpu-scale distillation; reason in the csv's ours_caveat)."
            + (OTHER_VIEW[entry.spec] if entry.spec in OTHER_VIEW else ""))


def select_rows(entry: PaperTable, store, budget: str | None = None) -> list[dict]:
    """The store's rows of the entry's grid cells (each cell's first num_eval networks), under
    every budget (or the one given); entries without a grid spec have none here."""
    if entry.spec != "grid":
        return []
    from .grid import select_cell_rows

    cells = [c for b in ([budget] if budget else BUDGETS) for c in grid_cells(entry, b)]
    return select_cell_rows(store.iter_rows({c.hash for c in cells}), cells)
