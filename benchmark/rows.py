"""The result-row schema and its one builder.

A row is one evaluated network. It names every value that produced its number, so that a
table is a pure function of rows (``benchmark.tables`` imports no registry, model or torch)
and editing a preset later never relabels an old result:

* the method: registry key ``method``, ``method_label`` (``dm.official``), ``method_display``,
  ``method_kind``, ``method_preset``, ``method_version``, ``method_params`` (the grid's params
  beyond the preset, flattened) and ``params_label`` (the same as text), ``method_config`` (as
  configured), ``resolved_config`` (every value that ran: DM's ``lr_img: None`` is 1.0 here),
  ``provenance``, ``efficiency_baseline`` and the selector ``extractor`` as data (+ its label);
* the data and networks: ``dataset`` (+ display), ``ipc``, ``arch_distill`` (the network the
  set was actually made on: DataDAM's official preset distills on ConvNetBN whatever the grid
  says) and ``arch_eval`` (+ their display names);
* the evaluation: ``protocol`` (name; ``dsa*`` when overridden), ``protocol_version`` and
  ``protocol_config`` (resolved for the dataset and architecture, epochs after the budget: the
  DSA strategy that ran, never ``None``), ``budget`` (name) and ``budget_config``;
* the run: seeds, image counts, ``precision`` as it ran (fp16 on the CPU runs as bf16), versions
  (dbench, torch, python), ``git_commit``, ``hardware``, ``device``, CPU ``threads``.

Continual-learning, tuning and NAS rows come from :func:`method_fields` / :func:`run_fields`
plus their own fields. Rows written before this schema are read through :func:`upgrade`.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from typing import Any

SCHEMA_VERSION = 2

# knobs that do not change a set's content (curve probes, logging, checkpoint cadence): never
# shown as a deviation from the preset
BOOKKEEPING = frozenset({"eval_every", "log_every", "checkpoint_every"})


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def short_value(v: Any) -> str:
    """A float as written (10.0, 0.5) unless it is long (a tuned 0.45962757368712065 -> 0.459628)."""
    if isinstance(v, float) and len(repr(v)) > 8:
        return f"{v:.6g}"
    return str(v)


def params_label(params: Mapping[str, Any]) -> str:
    """``{'batch_real': 64, 'iterations': 200}`` -> 'batch_real=64, iterations=200'."""
    return ", ".join(f"{k}={short_value(params[k])}" for k in sorted(params))


def method_fields(cls, preset: str | None, cfg, info, ipc: int, budget, arch: str) -> dict[str, Any]:
    """Everything about the method of a row (see the module doc); ``cls`` is the registered
    adapter class, ``cfg`` its resolved Config."""
    from .build import resolved_config, resolved_provenance
    from .models import arch_display

    config = cfg.model_dump(mode="json")
    preset_cfg = flatten(cls.resolve_config(preset, {}).model_dump(mode="json"))
    mine = flatten(config)
    params = {k: v for k, v in mine.items()
              if k.split(".")[0] not in BOOKKEEPING and preset_cfg.get(k, object()) != v}
    label = f"{cls.key}.{preset}" if preset else cls.key
    if cls.kind == "reference":
        resolved, arch_distill = dict(config), arch
    else:
        resolved = resolved_config(cls, cfg, info, ipc, budget, arch)
        arch_distill = resolved.get("arch") or arch
    extractor, extractor_label = extractor_fields(config, budget)
    return {
        "method": cls.key, "method_label": label, "method_display": cls.display_name, "method_kind": cls.kind,
        "method_preset": preset, "method_version": cls.version, "method_params": params,
        "params_label": params_label(params), "method_config": config, "resolved_config": resolved,
        "provenance": resolved_provenance(cls, cfg, preset, info, ipc, budget, arch) if cls.kind != "reference" else "",
        "efficiency_baseline": cls.efficiency_baseline(cfg), "iterations": resolved.get("iterations"),
        "extractor": extractor, "extractor_label": extractor_label,
        "arch_distill": arch_distill, "arch_distill_display": arch_display(arch_distill),
    }


def extractor_fields(config: Mapping[str, Any], budget) -> tuple[dict[str, Any] | None, str]:
    """The feature extractor behind a selector's number (or a distillation ``init`` selector's)
    as data, with the epochs it trains under ``budget``, and a one-line label."""
    from .features import ExtractorSpec

    spec, role = config.get("extractor"), "selector"
    if spec is None and isinstance(config.get("init_params"), Mapping) and "extractor" in config["init_params"]:
        spec, role = config["init_params"]["extractor"], f"init {config.get('init')}"
    if not isinstance(spec, Mapping):
        return None, ""
    es = ExtractorSpec.model_validate(dict(spec))
    data = {**es.model_dump(mode="json"), "role": role,
            "effective_epochs": es.effective_epochs(budget) if es.weights == "trained" else 0}
    prefix = "" if role == "selector" else f"{role}: "
    return data, prefix + es.describe(budget)


def protocol_fields(name: str, resolved) -> dict[str, Any]:
    """``resolved``: the EvalProtocol as it trains (dataset/arch rule applied, budget epochs)."""
    return {"protocol": name, "protocol_version": resolved.version,
            "protocol_config": resolved.model_dump(mode="json", exclude={"description", "provenance"})}


def budget_fields(budget) -> dict[str, Any]:
    return {"budget": budget.name, "budget_config": budget.model_dump(mode="json", exclude={"description"})}


def data_fields(info, arch_eval: str) -> dict[str, Any]:
    from .models import arch_display

    return {"dataset": info.name, "dataset_display": info.display_name, "arch_eval": arch_eval,
            "arch_eval_display": arch_display(arch_eval)}


def run_fields(device, precision: str) -> dict[str, Any]:
    import torch

    from . import __version__
    from .runtime import effective_precision, git_commit, hardware

    ran = effective_precision(device, precision)
    return {"schema": SCHEMA_VERSION, "precision": ran,
            **({"precision_requested": precision} if ran != precision else {}),
            "dbench_version": __version__, "torch_version": torch.__version__,
            "python_version": platform.python_version(), "git_commit": git_commit(), "hardware": hardware(),
            "device": str(device), "threads": torch.get_num_threads()}


def cell_base_row(cell, info, resolved_protocol, device, *, n_train: int, n_stored: int) -> dict[str, Any]:
    """The fields shared by every network of one grid cell."""
    from .api import get_method

    cls = get_method(cell.method)
    cfg = cls.Config(**cell.method_config)
    return {
        "task": "grid", "cell_hash": cell.hash, "synset_hash": cell.synset_hash, "cell_key": cell.key,
        "grid": cell.grid,
        **method_fields(cls, cell.method_preset, cfg, info, cell.ipc, cell.budget, cell.arch_distill),
        **data_fields(info, cell.arch_eval), "ipc": cell.ipc,
        **protocol_fields(cell.protocol_name, resolved_protocol), **budget_fields(cell.budget),
        "exp": cell.exp, "set_seed": cell.seed, "epochs": resolved_protocol.epochs, "n_train_images": n_train,
        "n_stored_images": n_stored, "channels_last": cell.channels_last, "compile": cell.compile,
        "engine": getattr(cell, "engine", "stacked"),  # requested; each network's row says how it ran
        **({"caveat": cell.caveat} if getattr(cell, "caveat", "") else {}),  # the grid's word (MethodSpec.caveat)
        **run_fields(device, cell.precision),
    }


# ------------------------------------------------------------------ reading old rows

_RENAMED = {"preset": "protocol"}


def upgrade(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored row in the current schema's names. Rows of schema 1 (before the names were
    settled) named the method label ``method``, the registry key ``method_name`` and the
    evaluation architecture ``arch``; their params label is not recoverable without the
    registry, so it reads as empty. One-release fallback."""
    if row.get("schema", 1) >= SCHEMA_VERSION:
        return dict(row)
    r = dict(row)
    r["method_label"] = r.get("method", "")
    r["method"] = r.pop("method_name", str(r["method_label"]).split(".")[0])
    r["arch_eval"] = r.pop("arch", "")
    r["arch_eval_display"] = r.pop("arch_display", r["arch_eval"])
    r.setdefault("arch_distill", r["arch_eval"])
    r.setdefault("arch_distill_display", r["arch_distill"])
    for old, new in _RENAMED.items():
        if old in r:
            r[new] = r.pop(old)
    r.setdefault("params_label", "")
    r.setdefault("extractor_label", "")
    r.setdefault("resolved_config", r.get("method_config") or {})
    r["schema"] = SCHEMA_VERSION
    return r
