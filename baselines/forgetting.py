"""Forgetting (Toneva et al., ICLR 2019): train on the whole training split, record per
presentation whether each example was classified correctly, count forgetting events
(correct at one presentation, wrong at the next), and keep the **most-forgotten**
examples of each class (the DM paper's use as a distillation baseline).

* ``never_learned="max"`` (default, the reference mtoneva/example_forgetting@d51c1aa):
  an example never classified correctly in a run gets the number of its presentations
  in that run. ``"zero"``: it gets 0, as DeepCore (PatrickZH/DeepCore@74ec709) does.
* ``statistic="events"`` (default) counts correct->wrong transitions;
  ``"incorrect_epochs"`` counts presentations with a wrong prediction (IDM supp. §1).
* ``runs``: independent trainings (extractor seeds ``seed, seed+1, ...``); counts are summed.
* Ranking: count descending, then first-learned presentation descending (never learned
  ranks as latest), then dataset index ascending: deterministic, no random tie-break.

The training run is the extractor training of :mod:`benchmark.features` (correctness is
recorded on the augmented training batch, as the reference does with augmentation), so
forgetting and the feature-based selectors share one cached run per dataset.
"""

from __future__ import annotations

from typing import Literal

import torch

from benchmark.api import ComponentConfig, CoresetSelector, Selection, class_balanced_ipc_check, register_method
from benchmark.data import RealData
from benchmark.errors import ConfigError
from benchmark.features import ExtractorSpec, extractor_dir, train_extractor


def forgetting_stats(correct: torch.Tensor, never_learned: str = "max",
                     statistic: str = "events") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example count and first-learned presentation from one run's record.

    ``correct``: [presentations, N] with 1 (correct), 0 (wrong) or -1 (not presented).
    Returns (count [N] int64, first_learned [N] int64, = number of presentations if never).
    """
    if never_learned not in ("max", "zero"):
        raise ConfigError(f"unknown never_learned {never_learned!r}; use 'max' or 'zero'")
    if statistic not in ("events", "incorrect_epochs"):
        raise ConfigError(f"unknown forgetting statistic {statistic!r}; use 'events' or 'incorrect_epochs'")
    c = correct.to(torch.int8)
    T, N = c.shape
    presented = (c >= 0).sum(0).long()
    last = torch.full((N,), -1, dtype=torch.int8)
    events = torch.zeros(N, dtype=torch.long)
    first = torch.full((N,), T, dtype=torch.long)
    for t in range(T):
        cur = c[t]
        events += ((last == 1) & (cur == 0)).long()
        learned_now = (cur == 1) & (first == T)
        first[learned_now] = t
        last = torch.where(cur >= 0, cur, last)
    learned = (c == 1).any(0)
    count = events if statistic == "events" else (c == 0).sum(0).long()
    if statistic == "events":
        count = torch.where(learned, count, presented if never_learned == "max" else torch.zeros_like(count))
    elif never_learned == "zero":
        count = torch.where(learned, count, torch.zeros_like(count))
    return count, first


def rank_most_forgotten(count: torch.Tensor, first_learned: torch.Tensor, k: int) -> torch.Tensor:
    """Positions of the ``k`` highest counts; ties: later first-learned first, then lower position."""
    n = count.numel()
    pos = torch.arange(n)
    # lexicographic sort via stable sorts, least significant key first
    order = pos
    order = order[torch.argsort(-first_learned[order], stable=True)]
    order = order[torch.argsort(-count[order], stable=True)]
    return order[:k]


@register_method
class Forgetting(CoresetSelector):
    key = "forgetting"
    display_name = "Forgetting"
    description = "per class, the most-forgotten examples (Toneva forgetting events while training on the full set)"
    version = "1"
    SMOKE_PARAMS = {"extractor": {"arch": "ConvNetW32", "epochs": 1, "max_steps": 2, "batch_size": 64}}

    class Config(ComponentConfig):
        never_learned: Literal["max", "zero"] = "max"
        statistic: Literal["events", "incorrect_epochs"] = "events"
        runs: int = 1
        extractor: ExtractorSpec = ExtractorSpec()

    PRESETS = {
        "default": {"provenance": "mtoneva/example_forgetting@d51c1aa definition; "
                                  "most-forgotten kept (DM paper §3.2)"},
        "deepcore": {"never_learned": "zero",
                     "provenance": "PatrickZH/DeepCore@74ec709 forgetting.py (never-learned = 0)"},
        "idm": {"statistic": "incorrect_epochs", "extractor": {"epochs": 5},
                "provenance": "IDM supp. §1: epochs with a wrong prediction, 5 training epochs"},
    }

    def select(self, real: RealData, ipc: int) -> Selection:
        class_balanced_ipc_check(real, ipc)
        spec = self.cfg.extractor
        if spec.weights != "trained":
            raise ConfigError("forgetting needs a trained run: extractor.weights must be 'trained'")
        if self.cfg.runs < 1:
            raise ConfigError("forgetting: runs must be >= 1")
        count = torch.zeros(len(real), dtype=torch.long)
        first = torch.zeros(len(real), dtype=torch.long)
        for r in range(self.cfg.runs):
            run = train_extractor(spec.model_copy(update={"seed": spec.seed + r}), real, device=self.ctx.device,
                                  budget=self.ctx.budget, cache_dir=extractor_dir(self.ctx), progress=self.ctx.progress)
            c, f = forgetting_stats(run.correct, self.cfg.never_learned, self.cfg.statistic)
            count += c
            first += f
        picks = [idx[rank_most_forgotten(count[idx], first[idx], ipc)] for idx in real.class_indices]
        return Selection(torch.cat(picks))
