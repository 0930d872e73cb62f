"""Synthetic-set initialisation from any coreset selector (one implementation for
"baseline" and "init").

``init_synset(kind, real, ipc, ctx)`` returns ``ipc`` images per class, class-major
(``[0]*ipc + [1]*ipc + ...``), normalised like the real data, as float32 on ``ctx.device``:

* ``noise``: N(0, 1) in normalised space (DC lineage), from ``ctx.generator("init/noise")``;
* ``real`` / ``random``: the ``random`` selector (the same set the Random baseline of the
  same seed evaluates);
* ``herding`` / ``kcenter`` / ``kmeans`` / ``forgetting`` / any registered selector key:
  that selector's ``select`` with its ``Config`` built from ``preset`` / ``params`` (e.g.
  ``params={"extractor": {"epochs": 5}}``), so trained extractors are shared with the
  baseline cells through the on-disk cache.

A distillation method exposes this as a config field, e.g.
``init: Literal["real", "random", "noise", "herding", "kcenter", "kmeans", "forgetting"]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .api import CoresetSelector, RunContext, get_method
from .data import RealData
from .errors import ConfigError

INIT_KINDS = ("real", "random", "noise", "herding", "kcenter", "kmeans", "forgetting")


@dataclass(frozen=True)
class InitSet:
    images: torch.Tensor  # [C*ipc, ch, H, W] float32, normalised, on ctx.device
    labels: torch.Tensor  # [C*ipc] int64, class-major, on ctx.device
    indices: torch.Tensor | None  # source indices into the train split (None for noise)
    kind: str

    def __iter__(self):  # ``x, y = init_synset(...)`` works
        return iter((self.images, self.labels))


def init_synset(kind: str, real: RealData, ipc: int, ctx: RunContext, *, preset: str | None = None,
                params: Mapping[str, Any] | None = None) -> InitSet:
    """``ipc`` initial images per class from ``kind`` (see module doc)."""
    C = real.num_classes
    labels = torch.arange(C).repeat_interleave(ipc)
    if kind == "noise":
        g = ctx.generator("init/noise")
        x = torch.randn(C * ipc, real.info.channels, *real.info.im_size, generator=g)
        return InitSet(x.to(ctx.device), labels.to(ctx.device), None, kind)
    key = "random" if kind == "real" else kind
    try:
        cls = get_method(key)
    except Exception:  # noqa: BLE001
        raise ConfigError(f"unknown init {kind!r}; use one of {', '.join(INIT_KINDS)} or a selector key") from None
    if not issubclass(cls, CoresetSelector):
        raise ConfigError(f"init {kind!r}: '{key}' is not a coreset selector")
    from .build import select_indices

    idx = select_indices(cls, cls.resolve_config(preset, params), real, ipc, ctx, f"init '{kind}'")
    # class-major order, keeping the selector's order within each class
    order = torch.argsort(real.labels[idx], stable=True)
    idx = idx[order]
    x, y = real.batch(idx, ctx.device)
    return InitSet(x, y, idx, kind)


__all__ = ["INIT_KINDS", "InitSet", "init_synset"]
