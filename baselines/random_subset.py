"""Random: per class, ``ipc`` indices drawn uniformly without replacement.

Provenance: the DC-style class sampler (VICO-UoE/DatasetCondensation@53f63a6 ``get_images``:
a random permutation of the class's indices, first ``ipc``); DeepCore's ``Uniform`` with
``balance=True`` does the same.
"""

from __future__ import annotations

import torch

from benchmark.api import ComponentConfig, CoresetSelector, Selection, class_balanced_ipc_check, register_method
from benchmark.data import RealData


@register_method
class RandomSubset(CoresetSelector):
    key = "random"
    display_name = "Random"
    description = "class-balanced uniform random subset (the baseline every method must beat)"
    version = "1"

    class Config(ComponentConfig):
        pass

    PRESETS = {"default": {"provenance": "VICO-UoE/DatasetCondensation@53f63a6 main.py get_images"}}

    def select(self, real: RealData, ipc: int) -> Selection:
        class_balanced_ipc_check(real, ipc)
        g = self.ctx.generator("select/random")
        picks = [idx[torch.randperm(idx.numel(), generator=g)[:ipc]] for idx in real.class_indices]
        return Selection(torch.cat(picks))
