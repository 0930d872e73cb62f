"""K-means ("Kmeans-emb"): per class, k-means with k = ipc on the extractor features, then
the real example nearest each centroid (distinct examples; ties to the lowest index).

This is what DC-Bench reports as "Kmeans-emb" (its code was never released, issue
justincui03/dc_benchmark#6) and what DREAM uses as ``--init kmean`` (lyq312318224/DREAM,
query_strategies/kmeans_sampling.py at 9032bd0, Euclidean, per class). The clustering is
dbench's seeded torch k-means (:mod:`benchmark.kmeans`), seeded from the cell.
"""

from __future__ import annotations

from typing import Literal

import torch

from benchmark.api import ComponentConfig, CoresetSelector, Selection, class_balanced_ipc_check, register_method
from benchmark.data import RealData
from benchmark.errors import ConfigError
from benchmark.features import ExtractorSpec, extract_features
from benchmark.kmeans import kmeans, nearest_distinct


def kmeans_select(feats: torch.Tensor, k: int, generator: torch.Generator, init: str = "kmeans++",
                  max_iter: int = 100, device: torch.device | str = "cpu") -> torch.Tensor:
    """Positions (into ``feats`` [n, d]) of the examples nearest each of ``k`` centroids."""
    n = feats.shape[0]
    if not 1 <= k <= n:
        raise ConfigError(f"kmeans: cannot pick {k} of {n} examples")
    x = feats.float().to(device)
    res = kmeans(x, k, generator=generator, init=init, max_iter=max_iter)  # type: ignore[arg-type]
    return nearest_distinct(x, res.centers).cpu()


@register_method
class KMeansEmb(CoresetSelector):
    key = "kmeans"
    display_name = "Kmeans-emb"
    description = "per class, the real example nearest each k-means centroid (k = ipc) of extractor features"
    version = "1"
    SMOKE_PARAMS = {"extractor": {"arch": "ConvNetW32", "epochs": 1, "max_steps": 2, "batch_size": 64}}

    class Config(ComponentConfig):
        init: Literal["kmeans++", "random"] = "kmeans++"
        max_iter: int = 100
        extractor: ExtractorSpec = ExtractorSpec()

    PRESETS = {
        "default": {"provenance": "DC-Bench Kmeans-emb / DREAM init=kmean (lyq312318224/DREAM@9032bd0), "
                                  "trained ConvNet-3"},
        "random_net": {"extractor": {"weights": "random"},
                       "provenance": "k-means on an untrained ConvNet-3 embedding (cheap; not a published setting)"},
    }

    def select(self, real: RealData, ipc: int) -> Selection:
        class_balanced_ipc_check(real, ipc)
        feats = extract_features(self.cfg.extractor, real, self.ctx)
        picks = []
        for c, idx in enumerate(real.class_indices):
            g = self.ctx.generator(f"select/kmeans/class{c}")
            picks.append(idx[kmeans_select(feats[idx], ipc, g, self.cfg.init, self.cfg.max_iter, self.ctx.device)])
        return Selection(torch.cat(picks))
