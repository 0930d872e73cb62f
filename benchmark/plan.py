"""One evaluation plan: protocol resolved for the dataset and architecture -> budget applied ->
train settings -> per-network seeds. The runner, the accuracy-vs-iteration probe, continual
learning, tuning (through the runner) and ``dbench eval`` all build their evaluation here, so
"what trained the networks behind a number" is decided in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .budgets import Budget
from .data import DatasetInfo, RealData
from .evaluate import EvalProtocol, ModelResult, TensorSource, TrainSettings, evaluate, model_seeds
from .models import canonical_arch
from .progress import NullProgress, Progress


@dataclass(frozen=True)
class EvalPlan:
    protocol: EvalProtocol  # resolved for dataset and arch, epochs after the budget
    arch: str
    settings: TrainSettings
    seeds: tuple[int, ...]

    def run(self, source, info: DatasetInfo, test: RealData, progress: Progress = NullProgress(),
            skip: Sequence[int] = (), on_result: Callable[[ModelResult], None] | None = None) -> list[ModelResult]:
        return evaluate(source, self.protocol, self.arch, info, test, list(self.seeds), self.settings, progress,
                        skip=skip, on_result=on_result)


def eval_plan(protocol: EvalProtocol, budget: Budget, info: DatasetInfo, arch: str, n_train: int, *,
              seed: int, num_eval: int, device: torch.device, precision: str = "fp32", channels_last: bool = False,
              compile: bool = False, whole_dataset: bool = False, factor: int | None = None,
              ipc: int | None = None, engine: str = "stacked") -> EvalPlan:
    """``whole_dataset``: the upper-bound row (the budget's full-data epochs and step cap
    instead of the protocol's synthetic-set schedule). ``factor`` / ``ipc`` describe the set
    (IDC's evaluation rule depends on its multi-formation factor and IPC). ``engine``: 'stacked'
    (the networks train in lockstep, :mod:`benchmark.stacked`) or 'loop' (one after another)."""
    arch = canonical_arch(arch)
    p = protocol.resolve(info, arch, factor=factor, ipc=ipc)
    if whole_dataset:
        p = p.model_copy(update={"epochs": budget.full_epochs_for(n_train, p.batch_size)})
        max_steps = budget.full_max_steps
    else:
        p = p.model_copy(update={"epochs": budget.eval_epochs_for(p.epochs, n_train, p.batch_size)})
        max_steps = budget.eval_max_steps
    settings = TrainSettings(device=device, precision=precision, channels_last=channels_last,  # type: ignore[arg-type]
                             compile=compile, max_steps=max_steps, engine=engine)  # type: ignore[arg-type]
    return EvalPlan(p, arch, settings, tuple(model_seeds(seed, arch, num_eval)))


def tensor_source(images: torch.Tensor, labels: torch.Tensor, device: torch.device) -> TensorSource:
    return TensorSource(images, labels).to(device)


__all__ = ["EvalPlan", "eval_plan", "tensor_source"]
