"""Herding: per class, greedily add the example that brings the running mean of the
selected features closest (L2) to the class mean.

Variants (``variant``):

* ``dc`` (default): the DC/DM authors' rule (VICO-UoE/DatasetCondensation issue #15):
  at step k the target is ``k * mu - sum(selected)`` and the remaining example nearest
  to it (argmin of the L2 distance) is added; no replacement.
* ``deepcore_argmax``: the same loop with argmax (the example *farthest* from the
  target), as PatrickZH/DeepCore@74ec709 ``herding.py`` does. Kept only to reproduce it.
* ``nearest_mean``: the ``ipc`` examples nearest the class mean (IDM supp. §1 for
  ImageNet subsets); not greedy.

Ties go to the lowest dataset index. Features come from the ``extractor`` spec
(default: ConvNet-3 trained on the whole training split, flattened embedding).
"""

from __future__ import annotations

from typing import Literal

import torch

from benchmark.api import ComponentConfig, CoresetSelector, Selection, class_balanced_ipc_check, register_method
from benchmark.data import RealData
from benchmark.errors import ConfigError
from benchmark.features import ExtractorSpec, extract_features

VARIANTS = ("dc", "nearest_mean", "deepcore_argmax")


def herding_select(feats: torch.Tensor, k: int, variant: str = "dc") -> torch.Tensor:
    """Positions (into ``feats`` [n, d]) of the ``k`` examples herding picks, in pick order."""
    if variant not in VARIANTS:
        raise ConfigError(f"unknown herding variant {variant!r}; use one of {', '.join(VARIANTS)}")
    n = feats.shape[0]
    if not 1 <= k <= n:
        raise ConfigError(f"herding: cannot pick {k} of {n} examples")
    f = feats.double()
    mu = f.mean(0)
    if variant == "nearest_mean":
        d = (f - mu).pow(2).sum(1)
        return torch.argsort(d, stable=True)[:k]
    sq = f.pow(2).sum(1)
    avail = torch.ones(n, dtype=torch.bool)
    total = torch.zeros_like(mu)
    picks = []
    for step in range(1, k + 1):
        t = step * mu - total
        d = sq - 2.0 * (f @ t) + t.dot(t)  # ||t - f_i||^2
        if variant == "dc":
            i = int(torch.argmin(d.masked_fill(~avail, float("inf"))))
        else:
            i = int(torch.argmax(d.masked_fill(~avail, float("-inf"))))
        avail[i] = False
        total += f[i]
        picks.append(i)
    return torch.tensor(picks, dtype=torch.long)


@register_method
class Herding(CoresetSelector):
    key = "herding"
    display_name = "Herding"
    description = "per-class greedy running-mean matching on extractor features (DC/DM argmin rule)"
    version = "1"
    SMOKE_PARAMS = {"extractor": {"arch": "ConvNetW32", "epochs": 1, "max_steps": 2, "batch_size": 64}}

    class Config(ComponentConfig):
        variant: Literal["dc", "nearest_mean", "deepcore_argmax"] = "dc"
        extractor: ExtractorSpec = ExtractorSpec()

    PRESETS = {
        "default": {"provenance": "DC/DM authors' herding (VICO-UoE/DatasetCondensation#15), "
                                  "trained ConvNet-3 embedding"},
        "random_net": {"extractor": {"weights": "random"},
                       "provenance": "herding on an untrained ConvNet-3 embedding (cheap; not a published setting)"},
        "deepcore": {"variant": "deepcore_argmax",
                     "provenance": "PatrickZH/DeepCore@74ec709 herding.py (argmax), on dbench's ConvNet-3 extractor"},
        "nearest_mean": {"variant": "nearest_mean", "provenance": "IDM supp. §1 (nearest to the class mean)"},
    }

    def select(self, real: RealData, ipc: int) -> Selection:
        class_balanced_ipc_check(real, ipc)
        feats = extract_features(self.cfg.extractor, real, self.ctx)
        picks = [idx[herding_select(feats[idx], ipc, self.cfg.variant)] for idx in real.class_indices]
        return Selection(torch.cat(picks))
