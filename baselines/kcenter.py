"""K-Center greedy (Sener & Savarese 2018): per class, farthest-first traversal of the
extractor features; each new centre is the example whose distance to its nearest
already-chosen centre is largest.

Start (``start``):

* ``mean`` (default): the example nearest the class mean, as the DC authors describe
  (VICO-UoE/DatasetCondensation issue #21). Fully deterministic.
* ``random``: a uniformly random first centre drawn from the cell's seeded generator,
  as DeepCore's ``kCenterGreedy`` (PatrickZH/DeepCore@74ec709) does.

Ties go to the lowest dataset index. Note DeepCore's published K-Center uses an
ImageNet-pretrained ResNet-18 embedding; dbench's default extractor is the DC ConvNet-3
(see ``extractor``), and every result records which one was used.
"""

from __future__ import annotations

from typing import Literal

import torch

from benchmark.api import ComponentConfig, CoresetSelector, Selection, class_balanced_ipc_check, register_method
from benchmark.data import RealData
from benchmark.errors import ConfigError
from benchmark.features import ExtractorSpec, extract_features

STARTS = ("mean", "random")


def kcenter_select(feats: torch.Tensor, k: int, start: str = "mean",
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Positions (into ``feats`` [n, d]) of the ``k`` centres, in the order they were added."""
    if start not in STARTS:
        raise ConfigError(f"unknown k-center start {start!r}; use one of {', '.join(STARTS)}")
    n = feats.shape[0]
    if not 1 <= k <= n:
        raise ConfigError(f"kcenter: cannot pick {k} of {n} examples")
    f = feats.double()
    if start == "mean":
        first = int(torch.argmin((f - f.mean(0)).pow(2).sum(1)))
    else:
        if generator is None:
            raise ConfigError("kcenter: start='random' needs a generator")
        first = int(torch.randint(n, (1,), generator=generator))
    picks = [first]
    dmin = (f - f[first]).pow(2).sum(1)
    dmin[first] = -1.0  # chosen points never win again
    for _ in range(k - 1):
        i = int(torch.argmax(dmin))
        picks.append(i)
        dmin = torch.minimum(dmin, (f - f[i]).pow(2).sum(1))
        dmin[torch.tensor(picks)] = -1.0
    return torch.tensor(picks, dtype=torch.long)


@register_method
class KCenter(CoresetSelector):
    key = "kcenter"
    display_name = "K-Center"
    description = "per-class greedy farthest-first (k-center) on extractor features, first centre nearest the mean"
    version = "1"
    SMOKE_PARAMS = {"extractor": {"arch": "ConvNetW32", "epochs": 1, "max_steps": 2, "batch_size": 64}}

    class Config(ComponentConfig):
        start: Literal["mean", "random"] = "mean"
        extractor: ExtractorSpec = ExtractorSpec()

    PRESETS = {
        "default": {"provenance": "DC authors' k-center (VICO-UoE/DatasetCondensation#21): mean-nearest start, "
                                  "trained ConvNet-3"},
        "random_start": {"start": "random",
                         "provenance": "PatrickZH/DeepCore@74ec709 kcentergreedy.py (random first centre)"},
        "random_net": {"extractor": {"weights": "random"},
                       "provenance": "k-center on an untrained ConvNet-3 embedding (cheap; not a published setting)"},
    }

    def select(self, real: RealData, ipc: int) -> Selection:
        class_balanced_ipc_check(real, ipc)
        feats = extract_features(self.cfg.extractor, real, self.ctx)
        g = self.ctx.generator("select/kcenter")
        picks = [idx[kcenter_select(feats[idx], ipc, self.cfg.start, g)] for idx in real.class_indices]
        return Selection(torch.cat(picks))
