"""Adapter interfaces: distillation methods and coreset selectors.

A new method is one module in ``methods/`` (or a selector in ``baselines/``) holding a
class with a nested ``Config``, its ``PRESETS`` and ``@register_method``; nothing else
needs editing. Adapters never import MLflow, Typer or pandas: they get everything
(generators, model factory, augmentation, budget, checkpoint hook, metrics logger,
progress) from the :class:`RunContext`.
"""

from __future__ import annotations

import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn as nn
from pydantic import BaseModel, ConfigDict

from .budgets import Budget
from .data import DatasetInfo, RealData
from .errors import ArtifactError, ConfigError, ContractError
from .models import create_model
from .progress import NullProgress, Progress
from .registry import Registry
from .runtime import Precision
from .seed import derive_seed, make_generator
from .synset import SyntheticSet


class ComponentConfig(BaseModel):
    """Base for each adapter's nested ``Config``: unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Selection:
    indices: torch.Tensor  # LongTensor into the train split
    weights: torch.Tensor | None = None


@dataclass
class RunContext:
    """Everything an adapter may use; built by the runner for one cell."""

    device: torch.device
    seed: int
    arch: str  # distillation / proxy network
    info: DatasetInfo
    budget: Budget
    workdir: Path
    precision: Precision = "fp32"
    channels_last: bool = False
    log: Callable[[Mapping[str, float], int], None] = lambda metrics, step: None
    progress: Progress = field(default_factory=NullProgress)
    checkpoint_every: int = 100
    # optional intermediate evaluation: (synthetic set, iteration) -> accuracy dict
    evaluate: Callable[[SyntheticSet, int], Mapping[str, float]] | None = None
    # accuracy-vs-iteration points (iteration, test_acc, distill wall s) filled by DistillLoop
    # (kept across resumes through its checkpoint); the runner stores and plots them
    curve: list = field(default_factory=list)

    def generator(self, stream: str) -> torch.Generator:
        return make_generator(self.seed, stream)

    def new_model(self, stream: str, arch: str | None = None) -> nn.Module:
        """A freshly initialised network, parameters drawn from the (seed, stream) generator."""
        m = create_model(arch or self.arch, self.info, make_generator(derive_seed(self.seed, "model"), stream))
        m = m.to(self.device)
        return m.to(memory_format=torch.channels_last) if self.channels_last else m

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.workdir / "checkpoint.pt"

    def save_checkpoint(self, state: Mapping[str, Any]) -> None:
        """Atomic write of a dict of tensors / plain values (loadable with weights_only)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        from .claims import tmp_prefix

        fd, tmp = tempfile.mkstemp(dir=self.workdir, prefix=tmp_prefix() + "ckpt-", suffix=".pt")
        os.close(fd)
        try:
            torch.save(dict(state), tmp)
            os.replace(tmp, self.checkpoint_path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def load_checkpoint(self) -> dict[str, Any] | None:
        if not self.checkpoint_path.exists():
            return None
        try:
            return torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001
            raise ArtifactError(
                f"{self.checkpoint_path}: corrupt checkpoint; delete it to restart this cell.") from None


class _Component(ABC):
    key: ClassVar[str]
    version: ClassVar[str] = "1"
    display_name: ClassVar[str]
    description: ClassVar[str] = ""
    kind: ClassVar[Literal["distill", "select", "reference"]]
    Config: ClassVar[type[ComponentConfig]] = ComponentConfig
    PRESETS: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    # params that make one cell take seconds on digits at the ``smoke`` budget; the contract
    # suite (tests/test_contract.py) runs every registered adapter with them
    SMOKE_PARAMS: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, cfg: ComponentConfig, ctx: RunContext):
        self.cfg, self.ctx = cfg, ctx

    def resolved(self, ipc: int) -> dict[str, Any]:
        """Values this run derives from the config, the dataset, the IPC, the budget and the
        distillation arch (e.g. DM's ``lr_img: None`` -> 1.0): the ones that actually run.
        Needs no data, so a row can name them before (or without) any compute."""
        return {}

    # the method an efficiency table compares this one with (DREAM: "idc"); None: itself
    EFFICIENCY_BASELINE: ClassVar[str | None] = None

    @classmethod
    def efficiency_baseline(cls, cfg: ComponentConfig) -> dict[str, Any] | None:
        """The cells an efficiency table compares this configuration with, as
        ``{"method": key, "not": {field: value}}`` (rows of method ``key`` whose resolved
        config differs in each field); ``None`` for configurations that are baselines
        themselves. Default: ``EFFICIENCY_BASELINE`` if set, else a ``sampler:
        representative`` configuration against the same method with its ordinary sampler.
        Copied into every row, so the table needs no registry."""
        rep = getattr(cfg, "sampler", None) == "representative"
        if cls.EFFICIENCY_BASELINE is None and not rep:
            return None
        return {"method": cls.EFFICIENCY_BASELINE or cls.key, "not": {"sampler": "representative"}}

    @classmethod
    def provenance(cls, preset: str | None) -> str:
        """Where the preset's values come from (its ``provenance`` entry), '' for none."""
        return str(cls.PRESETS.get(preset or "", {}).get("provenance", "")) if preset else ""

    @classmethod
    def resolve_config(cls, preset: str | None, params: Mapping[str, Any] | None) -> ComponentConfig:
        base: dict[str, Any] = {}
        if preset:
            if preset not in cls.PRESETS:
                from .errors import UnknownNameError

                raise UnknownNameError(f"{cls.key} preset", preset, cls.PRESETS)
            base = {k: v for k, v in cls.PRESETS[preset].items() if k != "provenance"}
        try:
            return cls.Config(**{**base, **(params or {})})
        except Exception as e:  # noqa: BLE001
            from .fields import describe_error

            errors = getattr(e, "errors", lambda: [])()
            msg = "; ".join(describe_error(cls.Config, err) for err in errors) or str(e)
            raise ConfigError(f"method '{cls.key}' params: {msg}") from None


class DistillMethod(_Component):
    kind = "distill"

    @abstractmethod
    def distill(self, real: RealData, ipc: int) -> SyntheticSet: ...


class CoresetSelector(_Component):
    kind = "select"

    @abstractmethod
    def select(self, real: RealData, ipc: int) -> Selection: ...


class WholeDataset(_Component):
    """The upper-bound row: evaluation networks train on the whole training split."""

    kind = "reference"


METHODS: Registry[type[_Component]] = Registry("method")


def register_method(cls: type[_Component]) -> type[_Component]:
    if not (isinstance(cls, type) and issubclass(cls, _Component)):
        raise TypeError(f"{cls!r} must subclass DistillMethod, CoresetSelector or WholeDataset")
    METHODS.add(cls.key, cls)
    return cls


def get_method(name: str) -> type[_Component]:
    from .registry import load_plugins

    load_plugins()
    return METHODS.get(name)


# ----------------------------------------------------------------------- contracts


def check_selection(sel: Selection, real: RealData, ipc: int, who: str) -> None:
    idx = sel.indices
    if idx.dtype not in (torch.int64, torch.int32) or idx.ndim != 1:
        raise ContractError(who, f"indices must be a 1-D integer tensor, got {idx.dtype} {tuple(idx.shape)}")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= len(real)):
        raise ContractError(who, "indices out of range")
    if torch.unique(idx).numel() != idx.numel():
        raise ContractError(who, "duplicate indices")
    counts = torch.bincount(real.labels[idx], minlength=real.num_classes)
    if not bool((counts == ipc).all()):
        raise ContractError(who, f"expected exactly {ipc} per class, got {counts.tolist()}")
    if sel.weights is not None and (not torch.isfinite(sel.weights).all() or bool((sel.weights < 0).any())):
        raise ContractError(who, "weights must be finite and >= 0")


def check_synset(s: SyntheticSet, info: DatasetInfo, ipc: int, who: str) -> None:
    if len(s) > ipc * info.num_classes:
        raise ContractError(who, f"stores {len(s)} images, budget is ipc x classes = {ipc * info.num_classes}")
    try:
        s.check(info)
    except ArtifactError as e:
        raise ContractError(who, str(e)) from None
    if set(s.labels.tolist()) != set(range(info.num_classes)):
        raise ContractError(who, "labels do not cover every class")


def class_balanced_ipc_check(real: RealData, ipc: int) -> None:
    smallest = min(int(c.numel()) for c in real.class_indices)
    if ipc > smallest:
        raise ConfigError(f"ipc {ipc} is larger than the smallest class of {real.info.name} ({smallest} images).")
