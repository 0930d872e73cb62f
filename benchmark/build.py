"""The one path that builds a training set from a method: select or distill, then check the
adapter's output contract. The runner, continual learning, tuning, distillation ``init`` and
the contract test suite all go through here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .api import (
    ComponentConfig,
    CoresetSelector,
    DistillMethod,
    RunContext,
    _Component,
    check_selection,
    check_synset,
    class_balanced_ipc_check,
)
from .budgets import Budget
from .data import DatasetInfo, RealData
from .errors import ConfigError
from .synset import SyntheticSet


def select_indices(cls: type[_Component], cfg: ComponentConfig, real: RealData, ipc: int, ctx: RunContext,
                   who: str | None = None) -> torch.Tensor:
    """A selector's indices into ``real`` (exactly ``ipc`` per class, checked)."""
    if not issubclass(cls, CoresetSelector):
        raise ConfigError(f"'{cls.key}' is not a coreset selector (kind {cls.kind}).")
    class_balanced_ipc_check(real, ipc)
    sel = cls(cfg, ctx).select(real, ipc)
    check_selection(sel, real, ipc, who or f"selector '{cls.key}'")
    return sel.indices.long()


def build_set(cls: type[_Component], cfg: ComponentConfig, real: RealData, ipc: int, ctx: RunContext,
              meta: Mapping[str, Any] | None = None) -> SyntheticSet:
    """``ipc`` images per class from a selector or a distillation method, contract-checked;
    ``meta`` is added to the set's manifest."""
    if issubclass(cls, CoresetSelector):
        s = SyntheticSet.from_indices(real, select_indices(cls, cfg, real, ipc, ctx), dict(meta or {}))
    elif issubclass(cls, DistillMethod):
        class_balanced_ipc_check(real, ipc)
        s = cls(cfg, ctx).distill(real, ipc)
        check_synset(s, real.info, ipc, f"method '{cls.key}'")
        s.meta.update(meta or {})
    else:
        raise ConfigError(f"'{cls.key}' ({cls.kind}) builds no set; use a selector or a distillation method.")
    return s


def resolved_values(cls: type[_Component], cfg: ComponentConfig, info: DatasetInfo, ipc: int, budget: Budget,
                    arch: str, seed: int = 0) -> dict[str, Any]:
    """The adapter's :meth:`~benchmark.api._Component.resolved` values without data or compute
    (a throw-away context on the CPU)."""
    ctx = RunContext(device=torch.device("cpu"), seed=seed, arch=arch, info=info, budget=budget,
                     workdir=Path("/nonexistent"))
    return dict(cls(cfg, ctx).resolved(ipc))


def resolved_config(cls: type[_Component], cfg: ComponentConfig, info: DatasetInfo, ipc: int, budget: Budget,
                    arch: str) -> dict[str, Any]:
    """Every value that runs: the config with its ``None``/derived fields replaced by the
    resolved ones (``provenance`` strings are kept apart, see :func:`resolved_provenance`)."""
    r = resolved_values(cls, cfg, info, ipc, budget, arch)
    r.pop("provenance", None)
    return {**cfg.model_dump(mode="json"), **_jsonable(r)}


def resolved_provenance(cls: type[_Component], cfg: ComponentConfig, preset: str | None, info: DatasetInfo,
                        ipc: int, budget: Budget, arch: str) -> str:
    """The preset's provenance, plus the per-setting source of resolved values if any."""
    parts = [cls.provenance(preset)]
    extra = resolved_values(cls, cfg, info, ipc, budget, arch).get("provenance")
    if extra and extra not in parts[0]:
        parts.append(str(extra))
    return "; ".join(p for p in parts if p)


def _jsonable(d: Mapping[str, Any]) -> dict[str, Any]:
    import json

    return json.loads(json.dumps(dict(d), default=str))


__all__ = ["build_set", "select_indices", "resolved_values", "resolved_config", "resolved_provenance"]
