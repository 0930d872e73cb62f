"""Grid YAML -> validated GridSpec -> list of Cells.

Errors name the file and the field path (``tables/x.yaml: methods[1].name: unknown method
'dreem'. Did you mean: dream? ...``) and never show a traceback.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .budgets import Budget, resolve_budget
from .data import get_info
from .errors import ConfigError, DbenchError, deprecated
from .evaluate import EvalProtocol, protocol_with
from .models import arch_identity, canonical_arch, expand_archs
from .only import ONLY_KEYS, _only_values, parse_only, row_matches  # noqa: F401 - re-exported
from .seed import derive_seed


class MethodSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    preset: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    # why this entry's number should not be read as the method's result (e.g. a CPU reduction too
    # coarse to mean anything); carried into every row and shown beside the number in the tables
    caveat: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name}.{self.preset}" if self.preset else self.name


def protocol_alias(v: Any) -> Any:
    """Grids, tune and continual files name the evaluation protocol ``protocol``; the old key
    ``preset`` still works, with a one-line deprecation notice (``preset`` now only means a
    method preset)."""
    if isinstance(v, dict) and "preset" in v:
        v = dict(v)
        old = v.pop("preset")
        if "protocol" in v:
            raise ValueError(f"give the evaluation protocol once: 'protocol: {v['protocol']}' (drop 'preset: {old}')")
        deprecated(f"the key 'preset: {old}' is now 'protocol: {old}' (the evaluation protocol); rename it")
        v["protocol"] = old
    return v


class GridSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    methods: list[MethodSpec]
    datasets: list[str]
    ipc: list[int] = Field(default_factory=lambda: [1, 10, 50])
    arch: str = "ConvNet"
    eval_archs: list[str] | None = None
    protocol: str = "dsa"  # the evaluation protocol (``dbench list protocols``)
    protocol_overrides: dict[str, Any] = Field(default_factory=dict)
    # more protocols every set is also evaluated under (same sets, same network seeds), e.g.
    # [dsa_noaug] for DD-Ranking's augmentation-robust score; the whole-data reference row is
    # trained under ``protocol`` only. Empty: the grid's cells (and hashes) are as before.
    extra_protocols: list[str] = Field(default_factory=list)
    budget: str = "paper"
    budget_overrides: dict[str, Any] = Field(default_factory=dict)
    num_exp: int = 5
    num_eval: int = 20
    seed: int = 0
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    channels_last: bool = False
    compile: bool = False
    # evaluation engine: 'stacked' trains a cell's networks in lockstep (same math and random draws
    # per network as the loop: not part of the cell hash); 'loop' one after another, kept for
    # comparison: a distinct cell identity, so both can sit in one store side by side
    engine: Literal["stacked", "loop"] = "stacked"
    # sub-grids: each a mapping of grid fields laid over this file's (e.g. its own methods,
    # protocol, eval_archs, num_exp/num_eval); the grid's cells are their cells in order. Lets one
    # file score each method under its own paper's protocol (tables/table1.yaml).
    blocks: list[dict[str, Any]] = Field(default_factory=list)
    # caveat a distillation entry automatically when the budget cuts its iterations below this
    # fraction of the paper budget's (the preset's); None: never
    caveat_below: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _protocol_alias(cls, v):
        v = protocol_alias(v)
        if isinstance(v, dict) and v.get("blocks") and "methods" not in v:
            v = {**v, "methods": ["random"]}  # placeholder: a blocked grid's methods are its blocks'
        return v

    @model_validator(mode="after")
    def _blocks(self):
        for i, block in enumerate(self.blocks):
            bad = sorted(set(block) & {"name", "blocks", "include"}) if isinstance(block, dict) else []
            if not isinstance(block, dict) or not block or bad:
                what = f"{', '.join(bad)} cannot be set per block" if bad else "must be a non-empty mapping"
                raise ValueError(f"blocks[{i}]: {what} (a block lays grid fields over the file's)")
            try:
                self.sub_grid(i)
            except ValidationError as e:
                err = e.errors()[0]
                raise ValueError(f"blocks[{i}].{_fmt_loc(err['loc'])}: {err['msg']}") from None
        return self

    def sub_grid(self, i: int) -> GridSpec:
        """Block ``i`` as a grid of its own: this grid's fields with the block's laid over them."""
        base = self.model_dump(exclude={"blocks", "methods"})
        base["methods"] = [m.model_dump(exclude_defaults=True) for m in self.methods]
        return GridSpec.model_validate({**base, **protocol_alias(self.blocks[i])})

    @field_validator("methods", mode="before")
    @classmethod
    def _methods(cls, v):
        if not isinstance(v, list) or not v:
            raise ValueError("must be a non-empty list of method names or {name, preset, params} mappings")
        out = []
        for m in v:
            if isinstance(m, str):
                name, _, preset = m.partition(".")
                out.append({"name": name, "preset": preset or None})
            else:
                out.append(m)
        return out

    @field_validator("ipc")
    @classmethod
    def _ipc(cls, v):
        if any(i < 0 for i in v):
            raise ValueError("ipc values must be >= 0")
        return v

    @field_validator("num_exp", "num_eval")
    @classmethod
    def _pos(cls, v):
        if v < 1:
            raise ValueError("must be >= 1")
        return v


def _canon(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def short_hash(obj: Any) -> str:
    return hashlib.sha256(_canon(obj).encode()).hexdigest()[:12]


class Cell(BaseModel):
    """One (method, dataset, ipc, distill arch, eval arch, protocol, budget, set index)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    grid: str
    method: str
    method_kind: str
    method_version: str
    method_preset: str | None
    method_config: dict[str, Any]
    dataset: str
    ipc: int
    arch_distill: str  # the grid's distillation / proxy network (a method may override it: see rows)
    arch_eval: str
    protocol_name: str  # 'dsa', or 'dsa*' when the grid overrides protocol fields
    protocol: EvalProtocol
    budget: Budget
    exp: int
    seed: int
    num_eval: int
    precision: str
    channels_last: bool = False
    compile: bool = False
    engine: str = "stacked"  # 'stacked' | 'loop' (GridSpec.engine); in the identity only when 'loop'
    caveat: str = ""  # the grid's word on this number (not part of the identity: see MethodSpec.caveat)

    @property
    def method_label(self) -> str:
        return f"{self.method}.{self.method_preset}" if self.method_preset else self.method

    @property
    def key(self) -> str:
        return (f"{self.method_label}/{self.dataset}/ipc{self.ipc}/{self.arch_distill}->{self.arch_eval}/"
                f"{self.protocol_name}/{self.budget.name}/s{self.exp}")

    def synset_identity(self) -> dict[str, Any]:
        return {
            "method": self.method, "method_version": self.method_version, "method_config": self.method_config,
            "dataset": self.dataset, "data": get_info(self.dataset).to_dict(), "ipc": self.ipc,
            "arch": arch_identity(self.arch_distill),
            "seed": self.seed, "precision": self.precision,
            "budget": {k: getattr(self.budget, k) for k in ("distill_iterations", "selector_epochs")
                       if getattr(self.budget, k) is not None},
        }

    @property
    def synset_hash(self) -> str:
        return short_hash(self.synset_identity())

    def identity(self) -> dict[str, Any]:
        # exclude_defaults: a new protocol/budget knob whose default keeps the old behaviour
        # leaves existing hashes (and so finished results) valid.
        return {"synset": self.synset_hash, "protocol": self.protocol.model_dump(exclude_defaults=True),
                "arch_eval": arch_identity(self.arch_eval), "precision": self.precision,
                "budget": self.budget.model_dump(exclude={"description"}, exclude_defaults=True),
                # the stacked engine is the loop's math (existing hashes stay); 'loop' is its own cell
                **({"engine": self.engine} if self.engine != "stacked" else {})}

    @property
    def hash(self) -> str:
        """Config hash: everything that changes the numbers (not num_eval: more models extend a cell)."""
        return short_hash(self.identity())

    def flat_params(self) -> dict[str, str]:
        out: dict[str, str] = {}

        def walk(prefix: str, v: Any):
            if isinstance(v, dict):
                for k, x in v.items():
                    walk(f"{prefix}.{k}" if prefix else str(k), x)
            else:
                out[prefix] = str(v)

        walk("", self.model_dump(mode="json", exclude={"budget", "protocol"}))
        walk("protocol", self.protocol.model_dump(mode="json"))
        walk("budget", self.budget.model_dump(mode="json"))
        return out


def _fmt_loc(loc) -> str:
    s = ""
    for part in loc:
        s += f"[{part}]" if isinstance(part, int) else (f".{part}" if s else str(part))
    return s


def read_yaml_mapping(path: Path, kind: str, where_to_look: str, fields: str) -> dict:
    """A YAML file's top-level mapping; a missing file, bad syntax or another top level is a
    one-line ConfigError naming the fix. Shared by grid, tune and continual files."""
    if not path.exists():
        raise ConfigError(f"{path}: {kind} file not found. See {where_to_look}.")
    if not path.is_file():
        raise ConfigError(f"{path}: is a folder, not a {kind} file. See {where_to_look}.")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path}: malformed YAML{where}: {getattr(e, 'problem', e)}. Fix the syntax.") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of {kind} fields ({fields}, ...).")
    return raw


def validate_file_model(model: type[BaseModel], raw: dict, path: Path):
    """``model.model_validate(raw)`` with the first error as one line: 'file: field.path: msg.'"""
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        more = f" (+{len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
        msg = f"{_fmt_loc(err['loc'])}: {err['msg']}" if err["loc"] else err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{path}: {msg}{more}.") from None  # loc-less: a whole-grid check naming its own path


def load_grid(path: str | Path) -> GridSpec:
    path = Path(path)
    raw = read_yaml_mapping(path, "grid", "`ls tables/` for the shipped grids", "name, methods, datasets")
    if "search" in raw and "methods" not in raw:
        raise ConfigError(f"{path}: this is a tune file (it has 'search'); run it with `dbench tune {path}`.")
    if "include" in raw:
        inc = path.parent / str(raw.pop("include"))
        if inc.resolve() == path.resolve():
            raise ConfigError(f"{path}: include: the file includes itself.")
        base = read_yaml_mapping(inc, "included grid", f"the 'include:' of {path}", "name, methods, datasets")
        base.pop("include", None)
        raw = {**base, **raw}
    raw.setdefault("name", path.stem)
    grid = validate_file_model(GridSpec, raw, path)
    try:
        expand(grid)  # resolve every name now, before any compute is spent
    except DbenchError as e:
        raise ConfigError(f"{path}: {e}") from None
    return grid


def _cell_values(cell: Cell) -> dict[str, set[str]]:
    return _only_values(cell.method, cell.method_label, cell.dataset, cell.ipc, cell.arch_distill, cell.arch_eval,
                        cell.protocol_name, cell.exp)


def _matches(cell: Cell, only: dict[str, set[str]]) -> bool:
    vals = _cell_values(cell)
    return all(vals[k] & v for k, v in only.items())


def check_only_matches(cells: list[Cell], only: dict[str, set[str]], grid_name: str) -> None:
    """An ``--only`` value that selects nothing is a typo, not a finished run: one line listing
    the values the grid has."""
    if not only or any(_matches(c, only) for c in cells):
        return
    for k, want in only.items():
        have = sorted(set().union(*(_cell_values(c)[k] for c in cells)) if cells else set())
        if not want & set(have):
            raise ConfigError(f"--only {k}={','.join(sorted(want))} matches no cell of grid '{grid_name}'; "
                              f"its {k} values: {', '.join(have)}.")
    raise ConfigError(f"the --only filters together match no cell of grid '{grid_name}'.")


def iteration_caveat(iterations: int, paper_iterations: int | None, below: float) -> str:
    """The automatic caveat of a distillation entry cut below ``below`` of its paper iterations."""
    if not paper_iterations or iterations >= below * paper_iterations:
        return ""
    return (f"{iterations} of {paper_iterations} distillation iterations "
            f"({100 * iterations / paper_iterations:.2g}%): not the method's result")


IMPORTED_PREFIX = "imported:"


def _imported_entry(i: int, m: MethodSpec) -> MethodSpec:
    """``imported:<name>`` (or ``{name: imported, preset: <name>}``) -> the ``imported`` adapter
    with the import's name as its preset; the set itself is read from the store when the cell
    runs (:func:`benchmark.importer.load_imported`)."""
    if m.name != "imported" and not m.name.startswith(IMPORTED_PREFIX):
        return m
    from .importer import ensure_registered

    ensure_registered()
    if m.name == "imported":
        return m
    name = m.name[len(IMPORTED_PREFIX):]
    if m.preset:
        raise ConfigError(f"methods[{i}]: '{m.name}.{m.preset}': an imported set has no presets; "
                          f"write imported:{name}.")
    return m.model_copy(update={"name": "imported", "preset": name})


def expand(grid: GridSpec, *, budget: str | None = None, only: dict[str, set[str]] | None = None) -> list[Cell]:
    from .api import get_method
    from .build import resolved_values

    if grid.blocks:  # each block's cells, in order; one key twice is a mistake in the file
        cells, seen = [], {}
        for i in range(len(grid.blocks)):
            for c in expand(grid.sub_grid(i), budget=budget):
                if c.key in seen:
                    raise ConfigError(f"blocks[{i}]: cell {c.key} is also in blocks[{seen[c.key]}].")
                seen[c.key] = i
                cells.append(c)
        if only:
            check_only_matches(cells, only, grid.name)
            cells = [c for c in cells if _matches(c, only)]
        return cells
    b = resolve_budget(budget or grid.budget, grid.budget_overrides)
    protocols = [(name, protocol_with(name, grid.protocol_overrides),
                  name if not grid.protocol_overrides else f"{name}*")
                 for name in dict.fromkeys([grid.protocol, *grid.extra_protocols])]
    arch = canonical_arch(grid.arch)
    eval_archs = expand_archs(grid.eval_archs or [grid.arch])
    cells: list[Cell] = []
    for i, m in enumerate(grid.methods):
        m = _imported_entry(i, m)  # `imported:<name>`: a set brought in by `dbench import`
        try:
            cls = get_method(m.name)
            cfg = cls.resolve_config(m.preset, m.params)
        except DbenchError as e:
            raise ConfigError(f"methods[{i}]: {e}") from None
        is_ref = cls.kind == "reference"
        for ds in grid.datasets:
            info = get_info(ds)
            ipcs = [0] if is_ref else grid.ipc
            # one imported file is one set; the reference row is one model per protocol
            n_exp = 1 if is_ref or cls.kind == "imported" else b.cap("num_exp", grid.num_exp)
            for ipc in ipcs:
                if not is_ref and ipc < 1:
                    raise ConfigError(f"ipc: {ipc} is not valid for method '{m.name}' (use ipc >= 1).")
                caveat = m.caveat or ""
                try:  # what the method derives from dataset / ipc / budget must resolve before any compute
                    if not is_ref:
                        its = resolved_values(cls, cfg, info, ipc, b, arch).get("iterations")
                        if grid.caveat_below is not None and its and not caveat:  # vs the preset at 'paper'
                            caveat = iteration_caveat(its, resolved_values(cls, cls.resolve_config(m.preset, {}), info,
                                                      ipc, resolve_budget("paper"), arch).get("iterations"),
                                                      grid.caveat_below)
                except DbenchError as e:
                    raise ConfigError(f"methods[{i}] ({m.label}) on {ds} ipc {ipc}: {e}") from None
                for exp in range(n_exp):
                    for _, proto, protocol_label in protocols[:1] if is_ref else protocols:
                        for ae in eval_archs:
                            cells.append(Cell(
                                grid=grid.name, method=m.name, method_kind=cls.kind, method_version=cls.version,
                                method_preset=m.preset, method_config=cfg.model_dump(mode="json"), dataset=ds,
                                ipc=ipc, arch_distill=arch, arch_eval=ae, protocol_name=protocol_label,
                                protocol=proto, budget=b, exp=exp,
                                seed=derive_seed(grid.seed, "set", exp), num_eval=b.cap("num_eval", grid.num_eval),
                                precision=grid.precision, channels_last=grid.channels_last, compile=grid.compile,
                                engine=grid.engine, caveat=caveat,
                            ))
    if only:
        check_only_matches(cells, only, grid.name)
        cells = [c for c in cells if _matches(c, only)]
    return cells


def select_cell_rows(rows, cells) -> list[dict]:
    """Rows of exactly these cells, limited to each cell's num_eval networks, with the grid's
    current caveat laid over the one stored with the row (the grid's word wins)."""
    n = {c.hash: c.num_eval for c in cells}
    cav = {c.hash: c.caveat for c in cells}
    return [{**r, "caveat": cav[r["cell_hash"]]} if cav[r["cell_hash"]] or r.get("caveat") else r
            for r in rows if r["cell_hash"] in n and r["model_index"] < n[r["cell_hash"]]]
