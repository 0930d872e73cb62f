"""The evaluator: named protocol presets and the only code that trains fresh evaluation networks.

Every evaluation network is built from an explicit per-model seed, trained on the
(decoded) synthetic set, and tested once on the full real test set after its final
epoch. No checkpoint or epoch is ever selected on the test set.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from . import augment as A
from .data import DatasetInfo, RealData
from .errors import ConfigError
from .models import canonical_arch, create_model
from .progress import NullProgress, Progress
from .registry import Registry
from .runtime import Precision, autocast, channels_last
from .seed import derive_seed, make_generator


class EvalProtocol(BaseModel):
    """How a (synthetic) training set is scored. Part of every cell's identity."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: str = "1"
    description: str = ""
    provenance: str = ""
    epochs: int = 1000
    batch_size: int = 256
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Literal["halfstep_reset", "multistep", "constant"] = "halfstep_reset"
    milestones: tuple[float, ...] = (2 / 3, 5 / 6)  # fractions of epochs (multistep)
    gamma: float = 0.2  # multistep factor
    aug: Literal["none", "dsa", "idc_dsa", "dc"] = "dsa"
    dsa_strategy: str | None = None  # None: the dataset's default strategy
    cutmix_p: float = 0.0
    rule: Literal["none", "dc", "idc"] = "none"  # dataset/arch-dependent adjustments (see resolve)
    extra_epoch: bool = True  # VICO's loop runs epochs 0..E (E+1 passes); IDC's runs E
    # idc rule: the multi-formation factor assumed when resolve() is not told the set's factor
    # (None: 2, IDC's). The idc_i profile sets 1 (IDC-I: MNIST keeps CutMix).
    idc_factor: int | None = None

    @field_validator("dsa_strategy")
    @classmethod
    def _dsa_strategy(cls, v: str | None, info: ValidationInfo) -> str | None:
        """DSA ops, or DC's evaluation ops (crop, scale, rotate, noise) when ``aug`` is 'dc'."""
        from .fields import check_strategy

        return v if v is None else check_strategy(v, A.DC_OPS if info.data.get("aug") == "dc" else A.FAMILIES)

    def resolve(self, info: DatasetInfo, arch: str, *, factor: int | None = None,
                ipc: int | None = None) -> EvalProtocol:
        """Fill in dataset/arch-dependent fields exactly as the reference code does.

        ``factor`` / ``ipc`` describe the set being scored, for the ``idc`` rule's per-setting
        branches (IDC misc/reproduce.py and test.py): the factor is ``factor``, else
        ``idc_factor``, else 2; without ``ipc`` the ipc-dependent branches (SVHN IDC-I at ipc 1,
        DenseNet's 400 epochs at ipc >= 50) are not applied."""
        upd: dict = {}
        if self.rule == "dc":
            # DC: no augmentation (300 epochs), except MNIST (crop/scale/rotate) and BN
            # ConvNet evaluation (crop/noise), which use DC-aug for 1000 epochs.
            if canonical_arch(arch) == "ConvNetBN":
                upd = {"aug": "dc", "dsa_strategy": "crop_noise", "epochs": 1000}
            elif info.name == "mnist":
                upd = {"aug": "dc", "dsa_strategy": "crop_scale_rotate", "epochs": 1000}
            else:
                upd = {"aug": "none", "epochs": 300}
        elif self.rule == "idc":
            f = factor if factor is not None else (self.idc_factor if self.idc_factor is not None else 2)
            strat = self.dsa_strategy or "color_crop_cutout_flip_scale_rotate"
            cutmix, epochs = self.cutmix_p, self.epochs
            if info.name == "mnist" and f > 1:  # MNIST, factor > 1: no CutMix anywhere, color_crop_scale_rotate
                cutmix, strat = 0.0, "color_crop_scale_rotate"
            elif info.name == "svhn" and f == 1 and ipc == 1:  # SVHN IDC-I ipc 1: no CutMix, cutout kept
                cutmix, strat = 0.0, "color_crop_cutout_scale_rotate"
            ops = A.parse_strategy(strat)
            if cutmix > 0:
                ops = [o for o in ops if o != "cutout"]
            if info.is_digits:
                ops = [o for o in ops if o != "flip"]
            if canonical_arch(arch) == "DenseNet121_cifar_k12" and ipc is not None and ipc >= 50 and f > 1:
                epochs = 400  # test.py: DenseNet trains 400 epochs at ipc >= 50 with factor > 1
            upd = {"dsa_strategy": "_".join(ops), "cutmix_p": cutmix, "epochs": epochs}
        if self.aug in ("dsa", "idc_dsa") and self.dsa_strategy is None and "dsa_strategy" not in upd:
            upd["dsa_strategy"] = info.dsa_strategy
        return self.model_copy(update={**upd, "rule": "none"}) if upd or self.rule != "none" else self


PROFILES: Registry[EvalProtocol] = Registry("protocol")


def register_profile(p: EvalProtocol) -> EvalProtocol:
    PROFILES.add(p.name, p)
    return p


_VICO = "VICO-UoE/DatasetCondensation@53f63a6 utils.py:evaluate_synset"
register_profile(EvalProtocol(
    name="dc", rule="dc", aug="none", epochs=300,
    description="DC: 300 epochs no aug; MNIST or ConvNetBN: DC-aug, 1000 epochs; "
                "half-step lr x0.1 with optimizer reset",
    provenance=_VICO + " + main.py (dc_aug_param, epoch_eval_train)"))
register_profile(EvalProtocol(
    name="dsa", aug="dsa", epochs=1000,
    description="DSA: 1000 epochs, DSA mode 'S' per batch, SGD .01 m.9 wd 5e-4, bs 256, "
                "x0.1 at E//2+1 with optimizer reset",
    provenance=_VICO + " (--dsa True)"))
register_profile(EvalProtocol(
    name="dm", aug="dsa", epochs=1000,
    description="DM: identical to dsa (main_DM.py evaluates with DSA, 1000 epochs)",
    provenance="VICO-UoE/DatasetCondensation@53f63a6 main_DM.py"))
register_profile(EvalProtocol(
    name="idm", aug="dsa", epochs=1000,
    description="IDM: the dsa protocol on the 2x2-expanded set (expansion comes from the set's decode)",
    provenance="uitrbn/IDM@fe23bbc IDM_cifar10.py, command.txt"))
register_profile(EvalProtocol(
    name="datadam", aug="dsa", epochs=1800, batch_size=64,
    description="DataDAM official code: dsa protocol with 1800 epochs and batch 64 (its repo's ConvNet is BN)",
    provenance="DataDistillation/DataDAM@0f6ea09 main_DataDAM.py"))
register_profile(EvalProtocol(
    name="idc", rule="idc", aug="idc_dsa", epochs=1000, batch_size=64, schedule="multistep", extra_epoch=False,
    milestones=(2 / 3, 5 / 6), gamma=0.2, cutmix_p=0.5,
    description="IDC/DREAM: 1000 epochs, bs 64, IDC DSA composition (no cutout, no flip on digits) + CutMix p .5 "
                "(MNIST: no CutMix, color_crop_scale_rotate), MultiStep [2/3,5/6] x0.2",
    provenance="snu-mllab/Efficient-Dataset-Condensation@ceac95a train.py, argument.py (@086273c epoch rule)"))
# The idc profile's description is part of existing cell hashes: left as it was. Its rule is
# factor-dependent (resolve): MNIST drops CutMix only for factor > 1; SVHN IDC-I at ipc 1 drops
# CutMix and keeps cutout; DenseNet trains 400 epochs at ipc >= 50 with factor > 1.
register_profile(EvalProtocol(
    name="idc_i", rule="idc", aug="idc_dsa", epochs=1000, batch_size=64, schedule="multistep", extra_epoch=False,
    milestones=(2 / 3, 5 / 6), gamma=0.2, cutmix_p=0.5, idc_factor=1,
    description="IDC-I (factor 1): the idc protocol for sets without multi-formation (MNIST keeps CutMix; SVHN at "
                "ipc 1: no CutMix, color_crop_cutout_scale_rotate)",
    provenance="snu-mllab/Efficient-Dataset-Condensation@ceac95a misc/reproduce.py, argument.py, train.py"))


def _without_augmentation(p: EvalProtocol) -> EvalProtocol:
    """``<name>_noaug``: the protocol with augmentation and CutMix off, everything else kept
    (epochs, batch, schedule, the idc rule's epoch branches). DD-Ranking's augmentation-robust
    score compares a set's gain over random with and without augmentation (a grid lists it in
    ``extra_protocols``). DC's rule only switches augmentation on (MNIST, BN ConvNet), so its
    variant is DC's plain no-augmentation setting: 300 epochs everywhere."""
    upd: dict = {"name": f"{p.name}_noaug", "aug": "none", "dsa_strategy": None, "cutmix_p": 0.0,
                 "description": f"{p.name} without augmentation (no DSA / DC-aug, no CutMix): DD-Ranking's ARS pair",
                 "provenance": f"{p.provenance}; augmentation off as DD-Ranking (arXiv 2505.13300) ARS"}
    if p.rule == "dc":
        upd.update(rule="none", epochs=300)
    return p.model_copy(update=upd)


for _name, _p in PROFILES.items():  # every protocol above gets its no-augmentation variant
    register_profile(_without_augmentation(_p))


# --------------------------------------------------------------------------- training


class TensorSource:
    """A small in-memory training set (already normalised)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return self.labels.numel()

    def to(self, device) -> TensorSource:
        return TensorSource(self.images.to(device), self.labels.to(device))

    def batch(self, idx: torch.Tensor, device="cpu"):
        idx = idx.to(self.images.device)
        return self.images[idx].to(device), self.labels[idx].to(device)


@dataclass
class ModelResult:
    index: int
    seed: int
    test_acc: float  # percent, final epoch
    train_loss: float
    train_time_s: float
    test_time_s: float
    steps: int
    engine: str = "loop"  # as it ran: 'stacked' (K networks in lockstep) or 'loop' (one at a time)
    kernel: str = ""  # the stacked engine's compute kernel: 'split' or 'wide' (benchmark.stacked)


@dataclass(frozen=True)
class TrainSettings:
    device: torch.device = torch.device("cpu")
    precision: Precision = "fp32"
    channels_last: bool = False
    compile: bool = False
    max_steps: int | None = None  # hard cap on optimizer steps (smoke budgets)
    # 'stacked': the networks of one evaluate() call train in lockstep (benchmark.stacked; the
    # loop's math per network); 'loop': one after another. 'loop' is a distinct cell identity.
    engine: Literal["stacked", "loop"] = "stacked"
    stack_kernel: Literal["auto", "split", "wide"] = "auto"  # the stacked engine's kernel (same math)


def sample_augmentation(x: torch.Tensor, p: EvalProtocol, info: DatasetInfo,
                        g: torch.Generator) -> tuple[torch.Tensor, A.AugParams | None]:
    """One batch's augmentation draws from ``g``: (x, parameters to apply) for the DSA-style
    augmentations, whose application draws nothing more (the stacked engine applies all its
    networks' parameters in one call); DC's augmentation is applied here, as it draws while it
    goes. The only place a protocol's ``aug`` is dispatched: the loop and the stacked engine
    draw exactly the same numbers in the same order."""
    if p.aug == "dsa":
        return x, A.sample_dsa(p.dsa_strategy or info.dsa_strategy, x.shape[0], info.im_size, g, siamese=False)
    if p.aug == "idc_dsa":
        return x, A.sample_idc(p.dsa_strategy or info.dsa_strategy, x.shape[0], info.im_size, g, siamese=False)
    if p.aug == "dc":
        return A.dc_augment(x, p.dsa_strategy or "none", g), None
    return x, None


def _augment(x: torch.Tensor, p: EvalProtocol, info: DatasetInfo, g: torch.Generator) -> torch.Tensor:
    x, params = sample_augmentation(x, p, info, g)
    return x if params is None else A.apply(x, params)


def end_of_epoch(opt: torch.optim.Optimizer, params, p: EvalProtocol, ep: int, lr: float,
                 milestones: set[int]) -> tuple[torch.optim.Optimizer, float]:
    """The protocol's schedule after epoch ``ep``: ``halfstep_reset`` multiplies the lr by 0.1
    after epoch E//2+1 and creates a new SGD optimizer (momentum reset); ``multistep`` multiplies
    it by gamma once floor(m*E) epochs are done. Returns (optimizer, lr)."""
    if p.schedule == "halfstep_reset" and ep == p.epochs // 2 + 1:
        lr *= 0.1
        return _make_opt(params, p, lr), lr
    if p.schedule == "multistep" and (ep + 1) in milestones:
        for grp in opt.param_groups:
            grp["lr"] *= p.gamma
    return opt, lr


def _make_opt(params, p: EvalProtocol, lr: float) -> torch.optim.Optimizer:
    """The protocol's SGD over ``params`` (a module's parameters or a list of them)."""
    params = params.parameters() if isinstance(params, nn.Module) else params
    return torch.optim.SGD(params, lr=lr, momentum=p.momentum, weight_decay=p.weight_decay)


@torch.no_grad()
def test_accuracy(model: nn.Module, test: RealData, s: TrainSettings, batch_size: int = 1000) -> float:
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=s.device)
    for x, y in test.iter_batches(batch_size, s.device):
        with autocast(s.device, s.precision):
            out = model(channels_last(x, s.channels_last))
        correct += (out.argmax(1) == y).sum()
    model.train()
    return 100.0 * correct.item() / len(test)


def train_model(
    source, protocol: EvalProtocol, arch: str, info: DatasetInfo, test: RealData, seed: int, index: int = 0,
    settings: TrainSettings = TrainSettings(), progress: Progress = NullProgress(), label: str = "eval",
    models_out: list | None = None,
) -> ModelResult:
    """Train one fresh network on ``source`` with ``protocol`` and test it after the last epoch.

    Runs epochs 0..E (E+1 passes, as the VICO loop) or E passes (IDC). ``halfstep_reset``:
    after epoch E//2+1 the lr is multiplied by 0.1 and a new SGD optimizer is created
    (momentum reset). ``multistep``: lr x gamma once floor(m*E) epochs are done.
    ``models_out``: a list that receives the trained network (tests)."""
    p = protocol
    dev = settings.device
    model = create_model(arch, info, make_generator(seed, "init")).to(dev)
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    fwd = torch.compile(model) if settings.compile else model
    g = make_generator(seed, "train")
    lr = p.lr
    opt = _make_opt(model, p, lr)
    n = len(source)
    E = p.epochs
    steps_per_epoch = -(-n // p.batch_size)
    n_epochs = E + 1 if p.extra_epoch else E
    total_steps = n_epochs * steps_per_epoch
    if settings.max_steps is not None:
        total_steps = min(total_steps, settings.max_steps)
    milestones = {int(m * E) for m in p.milestones} if p.schedule == "multistep" else set()
    scaler = torch.amp.GradScaler("cuda") if (settings.precision == "fp16" and dev.type == "cuda") else None
    bar = progress.task(f"{label} model {index}", total_steps)
    loss_sum = torch.zeros((), device=dev)
    loss_n = 0
    step = 0
    t0 = time.perf_counter()
    model.train()
    for ep in range(n_epochs):
        perm = torch.randperm(n, generator=g)
        loss_sum.zero_()
        loss_n = 0
        for s in range(0, n, p.batch_size):
            if step >= total_steps:
                break
            x, y = source.batch(perm[s : s + p.batch_size], dev)
            x = _augment(x, p, info, g)
            mix = None
            if p.cutmix_p > 0 and float(torch.rand(1, generator=g)) < p.cutmix_p:
                x, perm_mix, r = A.cutmix(x, g)
                mix = (perm_mix, r)
            with autocast(dev, settings.precision):
                out = fwd(channels_last(x, settings.channels_last))
                if mix is None:
                    loss = F.cross_entropy(out, y)
                else:
                    loss = F.cross_entropy(out, y) * mix[1] + F.cross_entropy(out, y[mix[0]]) * (1 - mix[1])
            opt.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                opt.step()
            else:  # fp16 AMP on CUDA: scaled loss, unscaled step
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            loss_sum += loss.detach().float()
            loss_n += 1
            step += 1
            bar.advance()
        if step >= total_steps:
            break
        opt, lr = end_of_epoch(opt, model, p, ep, lr, milestones)
    train_time = time.perf_counter() - t0
    bar.close()
    t1 = time.perf_counter()
    acc = test_accuracy(fwd, test, settings)
    if models_out is not None:
        models_out.append(model)
    return ModelResult(index, seed, acc, (loss_sum / max(loss_n, 1)).item(), train_time, time.perf_counter() - t1, step)


def model_seeds(base_seed: int, arch: str, n: int) -> list[int]:
    return [derive_seed(base_seed, "eval-model", canonical_arch(arch), k) for k in range(n)]


def evaluate(
    source, protocol: EvalProtocol, arch: str, info: DatasetInfo, test: RealData, seeds: Sequence[int],
    settings: TrainSettings = TrainSettings(), progress: Progress = NullProgress(), skip: Sequence[int] = (),
    on_result=None,
) -> list[ModelResult]:
    """Train and test one fresh network per seed. ``skip`` lists model indices already done
    (resume); ``on_result`` is called after each model (to persist it at once).

    ``settings.engine`` 'stacked' (default) trains the unfinished networks together in lockstep
    (:mod:`benchmark.stacked`: each network's math and random draws are the loop's) and calls
    ``on_result`` for each once the group finishes; a killed group restarts its unfinished
    networks. Where the stacked engine cannot run exactly it falls back to the loop and logs why."""
    resolved = protocol.resolve(info, arch)
    todo = [(k, seed) for k, seed in enumerate(seeds) if k not in skip]
    out: list[ModelResult] = []
    if settings.engine == "stacked" and len(todo) > 1:
        from . import stacked

        reason = stacked.unsupported_reason(arch, settings, len(todo))
        if reason is None:
            out = stacked.train_stacked(source, resolved, arch, info, test, [s for _, s in todo],
                                        [k for k, _ in todo], settings, progress)
            for r in out:
                if on_result is not None:
                    on_result(r)
            return out
        stacked.log.warning("engine stacked -> loop for %s: %s", arch, reason)
    for k, seed in todo:
        r = train_model(source, resolved, arch, info, test, seed, k, settings, progress)
        out.append(r)
        if on_result is not None:
            on_result(r)
    return out


def get_protocol(name: str) -> EvalProtocol:
    return PROFILES.get(name)


def protocol_with(name: str, overrides: dict | None) -> EvalProtocol:
    base = get_protocol(name)
    if not overrides:
        return base
    try:
        return EvalProtocol.model_validate({**base.model_dump(), **overrides})
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(x) for x in err["loc"]) or "?"
        hint = f" Fields: {', '.join(EvalProtocol.model_fields)}." if err["type"] == "extra_forbidden" else ""
        raise ConfigError(f"protocol overrides for '{name}': {field}: {err['msg']}.{hint}") from None


__all__ = ["EvalProtocol", "PROFILES", "ModelResult", "TensorSource", "TrainSettings", "evaluate", "train_model",
           "test_accuracy", "model_seeds", "get_protocol", "protocol_with", "derive_seed"]
