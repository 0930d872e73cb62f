"""NAS-proxy evaluation (``dbench nas``): how well does a small proxy set rank architectures?

The search space is the DC/DSA/DM 720-ConvNet space (``../shared/spec/baselines_and_tasks.md``
§3; DM paper §3.6, DataDAM supp §2.3): depth 1–4 × width 32/64/128/256 × activation
sigmoid/relu/leakyrelu × normalisation none/batchnorm/layernorm/instancenorm/groupnorm ×
pooling none/max/avg = 720 candidates, enumerated by ``itertools.product`` in that factor
order (:data:`SPACE`). A candidate's stable id is ``D3_W128_relu_instancenorm_avg``; as an
architecture name it is ``nas:D3_W128_relu_instancenorm_avg`` (:mod:`benchmark.models` builds it
as its ``ConvNet``; ``nas:D3_W128_relu_instancenorm_avg`` is the default ConvNet-3).

A run (one spec, ``tables/nas/*.yaml``):

1. **Validation split**: ``validation_per_class`` images of every class are carved from the
   training set with a generator seeded from the spec's seed. Every proxy set is built (selected
   or distilled, through :func:`benchmark.build.build_set`) from the rest, so no validation
   image was ever seen by a proxy; proxies are ranked on this split. The test set is used only
   for the ground truth.
2. **Ground truth**: every architecture trained on the (whole, or a documented per-class
   subsample of the) training set under ``ground_truth.training`` (DM: 100 epochs) and tested on
   the test set. Rows are cached in ``<results>/nas/`` under a hash of (dataset, training subset,
   training config, precision, seed, architecture): every proxy and every spec with the same
   ground-truth setting shares them, an architecture is computed once (one atomic row file per
   network), and a cache computed elsewhere is imported with ``--ground-truth FILE``.
3. **Proxies**: each listed selector / distillation method's set (IPC ``ipc``), plus
   ``early_stopping`` (the training set minus the validation split, trained for as many
   optimizer steps as training on the IPC-``ipc`` proxy takes). Every architecture is trained
   on each proxy under ``proxy_training`` (DM: 200 epochs) and scored on the validation split.
4. **Reported** (:func:`nas_table`): the ground-truth accuracy of the architecture each proxy
   selects (its best validation accuracy), Spearman ρ between proxy validation accuracy and
   ground-truth accuracy over the top-k architectures (``select_by: proxy``: the k the proxy
   ranks highest, as DM; ``gt``: the k best by ground truth) for k in all / 5% / 20% / 5 / 10 /
   20 (ties as average ranks, as ``scipy.stats.spearmanr``), the search time (training time of
   every network on the proxy) and the storage (images).

Training is the harness evaluator (:func:`benchmark.evaluate.evaluate`): explicit per-network
seeds derived from the spec's seed, one network per (proxy, architecture) unless ``num_eval``.
Architectures are the jobs (``Executor.run_jobs``, worker kind ``nas``); proxy sets are built
first by the driver.
"""

from __future__ import annotations

import itertools
import math
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .errors import ConfigError, DbenchError

# ------------------------------------------------------------------------ the space

SPACE_NAME = "convnet720"
FACTORS: dict[str, tuple] = {
    "depth": (1, 2, 3, 4),
    "width": (32, 64, 128, 256),
    "act": ("sigmoid", "relu", "leakyrelu"),
    "norm": ("none", "batchnorm", "layernorm", "instancenorm", "groupnorm"),
    "pool": ("none", "max", "avg"),
}
_ID = re.compile(r"D(\d+)_W(\d+)_([a-z]+)_([a-z]+)_([a-z]+)")


@dataclass(frozen=True)
class Candidate:
    depth: int
    width: int
    act: str
    norm: str
    pool: str

    @property
    def id(self) -> str:
        return f"D{self.depth}_W{self.width}_{self.act}_{self.norm}_{self.pool}"

    @property
    def arch(self) -> str:
        """The architecture name the harness builds (``nas:<id>``)."""
        return f"nas:{self.id}"

    def factors(self) -> dict[str, Any]:
        return {"depth": self.depth, "width": self.width, "act": self.act, "norm": self.norm, "pool": self.pool}


SPACE: tuple[Candidate, ...] = tuple(Candidate(*t) for t in itertools.product(*FACTORS.values()))
SPACE_IDS: tuple[str, ...] = tuple(c.id for c in SPACE)
_BY_ID = {c.id: c for c in SPACE}


def candidate(name: str) -> Candidate:
    """The candidate of an id (``D3_W128_relu_instancenorm_avg``, ``nas:`` prefix allowed)."""
    c = _BY_ID.get(name.removeprefix("nas:"))
    if c is None:
        from .errors import UnknownNameError

        raise UnknownNameError("NAS candidate", name, [], hint="ids look like D3_W128_relu_instancenorm_avg: "
                               "D1-4, W32/64/128/256, sigmoid/relu/leakyrelu, none/batchnorm/layernorm/"
                               "instancenorm/groupnorm, none/max/avg")
    return c


def covering_sample(n: int, seed: int) -> list[Candidate]:
    """``n`` candidates (in space order) covering every level of every factor at least once:
    the first 5 are a Latin-style cover (level i of every factor in candidate i, cycling the
    factors with fewer levels, starting at a seeded offset), the rest a seeded random draw."""
    import random

    if n < max(len(v) for v in FACTORS.values()):
        raise ConfigError(f"space.sample: {n} candidates cannot cover the 5 normalisations; give 5 or more.")
    rng = random.Random(seed)
    offs = {k: rng.randrange(len(v)) for k, v in FACTORS.items()}
    chosen: list[Candidate] = []
    for i in range(max(len(v) for v in FACTORS.values())):
        c = Candidate(*(v[(i + offs[k]) % len(v)] for k, v in FACTORS.items()))
        if c not in chosen:
            chosen.append(c)
    rest = [c for c in SPACE if c not in chosen]
    chosen += rng.sample(rest, n - len(chosen))
    return sorted(chosen, key=SPACE.index)


def conv_flops(c: Candidate, channels: int, im: int = 32) -> tuple[float, float]:
    """(forward multiply-adds, activation elements) of one image through ``c`` (a 28-px image
    is padded to 32 by the first conv, as the ConvNet does): the cost model of ``--dry-run``."""
    h, macs, elems, c_in = im, 0.0, 0.0, channels
    for _ in range(c.depth):
        macs += c_in * c.width * 9 * h * h
        elems += c.width * h * h
        c_in = c.width
        if c.pool != "none":
            h //= 2
    return macs + c.width * h * h * 10, elems


# ------------------------------------------------------------------------- the spec


class SampleSpace(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    sample: int = Field(ge=5, le=720)
    seed: int = 0


class TrainConfig(BaseModel):
    """How a NAS network trains: an evaluation protocol (``dbench list protocols``), field
    overrides (``epochs``, ``aug`` ...) and an optional hard cap on optimizer steps."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    protocol: str = "dsa"
    overrides: dict[str, Any] = Field(default_factory=dict)
    max_steps: int | None = Field(None, ge=1)

    def protocol_for(self, info, arch: str):
        from .evaluate import protocol_with

        return protocol_with(self.protocol, self.overrides).resolve(info, arch)

    @property
    def label(self) -> str:
        over = ",".join(f"{k}={v}" for k, v in sorted(self.overrides.items()))
        cap = f" max_steps={self.max_steps}" if self.max_steps else ""
        return self.protocol + (f"[{over}]" if over else "") + cap


class GroundTruthSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    training: TrainConfig = Field(default_factory=lambda: TrainConfig(overrides={"epochs": 100}))
    train_per_class: int | None = Field(None, ge=1)  # None: the whole training set
    test_per_class: int | None = Field(None, ge=1)  # None: the whole test set


class ProxySpec(BaseModel):
    """A proxy: a selector / distillation method (with preset and params) or ``early_stopping``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    preset: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.name}.{self.preset}" if self.preset else self.name

    @property
    def is_early_stopping(self) -> bool:
        return self.name == "early_stopping"


TOPK_DEFAULT = ("all", "5%", "20%", 5, 10, 20)


class NasSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    dataset: str
    space: Literal["all"] | list[str] | SampleSpace = "all"
    ipc: int = Field(50, ge=1)
    proxies: list[ProxySpec]
    validation_per_class: int = Field(100, ge=1)
    ground_truth: GroundTruthSpec = Field(default_factory=GroundTruthSpec)
    proxy_training: TrainConfig = Field(default_factory=lambda: TrainConfig(overrides={"epochs": 200}))
    arch: str = "ConvNet"  # the network proxy sets are distilled / selected with
    budget: str = "paper"  # the distillation budget of the proxy sets (``dbench list budgets``)
    budget_overrides: dict[str, Any] = Field(default_factory=dict)
    num_eval: int = Field(1, ge=1)  # networks per (proxy, architecture) and per ground-truth architecture
    seed: int = 0
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    topk: list[str | int] = Field(default_factory=lambda: list(TOPK_DEFAULT))
    select_by: list[Literal["proxy", "gt"]] = Field(default_factory=lambda: ["proxy"])

    @field_validator("proxies", mode="before")
    @classmethod
    def _proxies(cls, v):
        if not isinstance(v, list) or not v:
            raise ValueError("must be a non-empty list of method names (or {name, preset, params}) / early_stopping")
        return [{"name": m.partition(".")[0], "preset": m.partition(".")[2] or None} if isinstance(m, str) else m
                for m in v]

    @field_validator("topk")
    @classmethod
    def _topk(cls, v):
        for k in v:
            topk_size(k, 720)
        return v

    @model_validator(mode="after")
    def _unique(self):
        labels = [p.label for p in self.proxies]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ValueError(f"proxies: {', '.join(dup)} listed twice")
        return self

    def candidates(self) -> list[Candidate]:
        if self.space == "all":
            return list(SPACE)
        if isinstance(self.space, SampleSpace):
            return covering_sample(self.space.sample, self.space.seed)
        out = [candidate(s) for s in self.space]
        return list(dict.fromkeys(out))


def topk_size(k: str | int, n: int) -> int:
    """How many architectures ``k`` means among ``n``: 'all', 'P%' (ceil(P/100·n), at least 2) or an int."""
    if isinstance(k, bool):
        raise ValueError(f"topk {k!r}: give 'all', a percentage such as '5%' or a count")
    if k == "all":
        return n
    if isinstance(k, str) and k.endswith("%"):
        try:
            p = float(k[:-1])
        except ValueError:
            raise ValueError(f"topk {k!r}: not a percentage") from None
        if not 0 < p <= 100:
            raise ValueError(f"topk {k!r}: a percentage in (0, 100]")
        return min(n, max(2, math.ceil(round(p * n / 100, 9))))
    if isinstance(k, int) and k >= 2:
        return min(n, k)
    raise ValueError(f"topk {k!r}: give 'all', a percentage such as '5%' or a count >= 2")


def load_nas(path: str | Path) -> NasSpec:
    from .grid import read_yaml_mapping, validate_file_model

    path = Path(path)
    raw = read_yaml_mapping(path, "NAS", "tables/nas/*.yaml", "name, dataset, space, ipc, proxies")
    raw.setdefault("name", path.stem)
    spec = validate_file_model(NasSpec, raw, path)
    try:
        validate_spec(spec)
    except DbenchError as e:
        raise ConfigError(f"{path}: {e}") from None
    return spec


def validate_spec(spec: NasSpec) -> None:
    from .api import get_method
    from .budgets import resolve_budget
    from .data import get_info
    from .models import canonical_arch

    info = get_info(spec.dataset)
    canonical_arch(spec.arch)
    resolve_budget(spec.budget, spec.budget_overrides)
    for what, tc in (("ground_truth.training", spec.ground_truth.training), ("proxy_training", spec.proxy_training)):
        try:
            tc.protocol_for(info, "ConvNet")
        except DbenchError as e:
            raise ConfigError(f"{what}: {e}") from None
    spec.candidates()
    for i, p in enumerate(spec.proxies):
        if p.is_early_stopping:
            if p.preset or p.params:
                raise ConfigError(f"proxies[{i}]: early_stopping takes no preset or params.")
            continue
        cls = get_method(p.name)
        if cls.kind not in ("select", "distill"):
            raise ConfigError(f"proxies[{i}]: '{p.name}' builds no set (kind {cls.kind}); use a selector, a "
                              "distillation method or early_stopping.")
        cls.resolve_config(p.preset, p.params)
    sizes = info.class_sizes
    if sizes and min(sizes) <= spec.validation_per_class + spec.ipc:
        raise ConfigError(f"validation_per_class {spec.validation_per_class} + ipc {spec.ipc} leaves no images "
                          f"for a class of {info.name} ({min(sizes)} images); lower one.")


# ------------------------------------------------------------------- ranking stats


def average_ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing their average rank (``scipy.stats.rankdata(method='average')``)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for t in range(i, j + 1):
            ranks[order[t]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's ρ (Pearson correlation of average ranks); NaN if either side is constant."""
    if len(a) != len(b):
        raise ValueError("spearman: sequences of different lengths")
    if len(a) < 2:
        return float("nan")
    ra, rb = average_ranks(a), average_ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = sum((x - ma) ** 2 for x in ra)
    vb = sum((y - mb) ** 2 for y in rb)
    if va == 0 or vb == 0:
        return float("nan")
    return cov / math.sqrt(va * vb)


def top_indices(values: Sequence[float], k: int) -> list[int]:
    """The ``k`` highest, ties broken by position (space order)."""
    return sorted(range(len(values)), key=lambda i: (-values[i], i))[:k]


def spearman_topk(proxy: Sequence[float], gt: Sequence[float], k: str | int,
                  select_by: Literal["proxy", "gt"] = "proxy") -> tuple[float, int]:
    """(ρ, k used): Spearman between ``proxy`` and ``gt`` over the top-``k`` architectures
    by ``select_by`` (DM: k = 5%, select_by = proxy)."""
    n = len(proxy)
    kk = topk_size(k, n)
    idx = top_indices(proxy if select_by == "proxy" else gt, kk)
    return spearman([proxy[i] for i in idx], [gt[i] for i in idx]), kk


# ------------------------------------------------------------------- data & hashes


def split_validation(real, per_class: int, seed: int):
    """(train minus validation, validation, train indices, validation indices): the shared
    :func:`benchmark.data.validation_split`, its parts named for NAS."""
    from .data import validation_split

    return validation_split(real, per_class, seed, tag="nas")


def per_class_subset(real, per_class: int | None, seed: int, split: str):
    """The first ``per_class`` images of each class after a seeded shuffle (all if None)."""
    import torch

    from .data import RealData

    if per_class is None:
        return real
    g = torch.Generator().manual_seed(seed)
    keep = torch.cat([idx[torch.randperm(idx.numel(), generator=g)[:per_class]] for idx in real.class_indices])
    keep = keep.sort().values
    return RealData(real.info, real.images[keep], real.labels[keep], split, subset=f"{per_class}/class")


def _short_hash(obj) -> str:
    from .grid import short_hash

    return short_hash(obj)


def split_identity(spec: NasSpec) -> dict[str, Any]:
    return {"dataset": spec.dataset, "validation_per_class": spec.validation_per_class,
            "split_seed": derive(spec.seed, "nas-validation-split")}


def derive(*parts) -> int:
    from .seed import derive_seed

    return derive_seed(*parts)


def gt_identity(spec: NasSpec) -> dict[str, Any]:
    """What the ground truth of one architecture depends on (architecture excluded): shared by
    every proxy and every spec with the same setting."""
    from .data import get_info

    g = spec.ground_truth
    return {"task": "nas-ground-truth", "data": get_info(spec.dataset).to_dict(),
            "train_per_class": g.train_per_class, "test_per_class": g.test_per_class,
            "training": g.training.model_dump(mode="json"), "precision": spec.precision, "seed": spec.seed}


def gt_key(spec: NasSpec) -> str:
    return _short_hash(gt_identity(spec))


def gt_cell_hash(spec: NasSpec, cand: Candidate) -> str:
    return _short_hash({"gt": gt_key(spec), "arch": cand.id})


def proxy_set_identity(spec: NasSpec, p: ProxySpec) -> dict[str, Any]:
    from .api import get_method
    from .budgets import resolve_budget
    from .data import get_info
    from .models import arch_identity, canonical_arch

    cls = get_method(p.name)
    cfg = cls.resolve_config(p.preset, p.params)
    b = resolve_budget(spec.budget, spec.budget_overrides)
    return {"task": "nas-proxy-set", "method": p.name, "method_version": cls.version,
            "method_config": cfg.model_dump(mode="json"), "data": get_info(spec.dataset).to_dict(),
            "split": split_identity(spec), "ipc": spec.ipc, "arch": arch_identity(canonical_arch(spec.arch)),
            "seed": derive(spec.seed, "nas-proxy-set", p.label), "precision": spec.precision,
            "budget": {k: getattr(b, k) for k in ("distill_iterations", "selector_epochs")
                       if getattr(b, k) is not None}}


def proxy_set_hash(spec: NasSpec, p: ProxySpec) -> str | None:
    return None if p.is_early_stopping else _short_hash(proxy_set_identity(spec, p))


def proxy_cell_hash(spec: NasSpec, p: ProxySpec, cand: Candidate) -> str:
    src: Any = proxy_set_hash(spec, p) or {"early_stopping": split_identity(spec), "ipc": spec.ipc}
    return _short_hash({"task": "nas-proxy", "set": src, "training": spec.proxy_training.model_dump(mode="json"),
                        "arch": cand.id, "precision": spec.precision, "seed": spec.seed})


# ----------------------------------------------------------------------- training


def steps_for(protocol, n: int, max_steps: int | None) -> int:
    """Optimizer steps :func:`benchmark.evaluate.train_model` takes on ``n`` images."""
    spe = -(-n // protocol.batch_size)
    total = (protocol.epochs + 1 if protocol.extra_epoch else protocol.epochs) * spe
    return total if max_steps is None else min(total, max_steps)


def early_stopping_protocol(proxy_protocol, n_proxy: int, n_real: int, max_steps: int | None):
    """The proxy's protocol on ``n_real`` images, stopped after as many steps as on ``n_proxy``:
    (protocol with the fewest epochs that reach those steps, the step cap)."""
    steps = steps_for(proxy_protocol, n_proxy, max_steps)
    spe = -(-n_real // proxy_protocol.batch_size)
    passes = -(-steps // spe)
    epochs = max(1, passes - 1 if proxy_protocol.extra_epoch else passes)
    return proxy_protocol.model_copy(update={"epochs": epochs}), steps


@dataclass
class NasContext:
    """Data and sets of one run, shared by its architecture jobs."""

    spec: NasSpec
    info: Any
    device: Any
    gt_train: Any
    gt_test: Any
    train: Any  # training set minus validation
    val: Any
    sets: dict[str, Any]  # proxy label -> SyntheticSet (not early stopping)
    set_times: dict[str, float]


def load_context(spec: NasSpec, store, device: str = "auto", data=None, progress=None, build: bool = True,
                 tracker=None) -> NasContext:
    """Data splits and proxy sets (built here and stored by hash if missing and ``build``)."""
    from .data import get_info, load_dataset
    from .progress import NullProgress
    from .runtime import select_device
    from .synset import SyntheticSet

    progress = progress or NullProgress()
    info = get_info(spec.dataset)
    dev = select_device(device)
    real = load_dataset(spec.dataset, True, data)
    test = load_dataset(spec.dataset, False, data)
    train, val, _, _ = split_validation(real, spec.validation_per_class, split_identity(spec)["split_seed"])
    g = spec.ground_truth
    gt_train = per_class_subset(real, g.train_per_class, derive(spec.seed, "nas-gt-train"), "train")
    gt_test = per_class_subset(test, g.test_per_class, derive(spec.seed, "nas-gt-test"), "test")
    sets, times = {}, {}
    for p in spec.proxies:
        if p.is_early_stopping:
            continue
        h = proxy_set_hash(spec, p)
        path = store.synset_path(h)
        if not path.exists():
            if not build:
                raise DbenchError(f"proxy set {p.label} ({h}) is not in {store.root}; the driver builds it first.")
            t0 = time.perf_counter()
            s = build_proxy_set(spec, p, train, store, dev, progress)
            s.meta["build_time_s"] = time.perf_counter() - t0
            s.save(path)
        sets[p.label] = SyntheticSet.load(path, info)
        times[p.label] = float(sets[p.label].meta.get("build_time_s", float("nan")))
    return NasContext(spec, info, dev, gt_train, gt_test, train, val, sets, times)


def build_proxy_set(spec: NasSpec, p: ProxySpec, train, store, device, progress):
    """The proxy's set from the training set minus the validation split (build_set: contract-checked)."""
    from .api import RunContext, get_method
    from .budgets import resolve_budget
    from .build import build_set
    from .models import canonical_arch
    from .progress import NullProgress

    cls = get_method(p.name)
    cfg = cls.resolve_config(p.preset, p.params)
    h = proxy_set_hash(spec, p)
    ident = proxy_set_identity(spec, p)
    ctx = RunContext(device=device, seed=ident["seed"], arch=canonical_arch(spec.arch), info=train.info,
                     budget=resolve_budget(spec.budget, spec.budget_overrides), workdir=store.workdir(h),
                     precision=spec.precision, progress=progress or NullProgress())
    return build_set(cls, cfg, train, spec.ipc, ctx, {"method": p.name, "method_preset": p.preset, "ipc": spec.ipc,
                                                        "nas": spec.name, "synset_hash": h,
                                                        "validation_held_out": spec.validation_per_class})


def _settings(ctx: NasContext, max_steps: int | None):
    from .evaluate import TrainSettings

    return TrainSettings(device=ctx.device, precision=ctx.spec.precision, max_steps=max_steps)  # type: ignore[arg-type]


def _common_fields(ctx: NasContext, cand: Candidate) -> dict[str, Any]:
    from .rows import data_fields, run_fields

    spec = ctx.spec
    return {"task": "nas", "space": SPACE_NAME, "nas_id": cand.id, **cand.factors(),
            **data_fields(ctx.info, cand.arch), **run_fields(ctx.device, spec.precision)}


def run_ground_truth(ctx: NasContext, cand: Candidate, store, progress=None) -> None:
    """Train the architecture's ground-truth networks not in the cache yet (one row each)."""
    from .data import RealSubset
    from .evaluate import evaluate, model_seeds
    from .rows import protocol_fields

    spec = ctx.spec
    ch = gt_cell_hash(spec, cand)
    done = store.model_indices(ch)
    if set(range(spec.num_eval)) <= done:
        return
    tc = spec.ground_truth.training
    p = tc.protocol_for(ctx.info, cand.arch)
    base = {**_common_fields(ctx, cand), "role": "ground_truth", "gt_key": gt_key(spec), "cell_hash": ch,
            "proxy": "whole_dataset", "method": "whole_dataset", "split": "test",
            **protocol_fields(tc.protocol, p), "training": tc.model_dump(mode="json"),
            "n_train_images": len(ctx.gt_train), "n_stored_images": len(ctx.gt_train),
            "n_test_images": len(ctx.gt_test), "train_per_class": spec.ground_truth.train_per_class,
            "epochs": p.epochs}

    def persist(r):
        store.write_row(ch, r.index, {**base, "model_index": r.index, "model_seed": r.seed, "test_acc": r.test_acc,
                                      "train_loss": r.train_loss, "train_time_s": r.train_time_s, "steps": r.steps,
                                      "created": _now()})

    seeds = model_seeds(derive(spec.seed, "nas-gt"), cand.arch, spec.num_eval)
    evaluate(RealSubset(ctx.gt_train), p, cand.arch, ctx.info, ctx.gt_test, seeds, _settings(ctx, tc.max_steps),
             **_progress(progress), skip=done, on_result=persist)


def run_proxy(ctx: NasContext, p: ProxySpec, cand: Candidate, store, progress=None) -> None:
    """Train the architecture on proxy ``p`` and score it on the validation split."""
    from .api import get_method
    from .budgets import resolve_budget
    from .data import RealSubset
    from .evaluate import evaluate, model_seeds
    from .plan import tensor_source
    from .rows import budget_fields, method_fields, protocol_fields

    spec = ctx.spec
    ch = proxy_cell_hash(spec, p, cand)
    done = store.model_indices(ch)
    if set(range(spec.num_eval)) <= done:
        return
    tc = spec.proxy_training
    proto = tc.protocol_for(ctx.info, cand.arch)
    # early stopping takes the steps of the largest proxy's training set: a decoded set (IDC/IDM
    # multi-formation) trains on factor^2 x the stored images, not ipc x classes
    n_proxy = max([len(st.training_tensors()[1]) for st in ctx.sets.values()] or [spec.ipc * ctx.info.num_classes])
    if p.is_early_stopping:
        proto, max_steps = early_stopping_protocol(proto, n_proxy, len(ctx.train), tc.max_steps)
        source = RealSubset(ctx.train)
        n_train = n_stored = len(ctx.train)
        method = {"method": "early_stopping", "method_label": "early_stopping", "method_display": "Early-stopping",
                  "method_kind": "reference"}
        sh, set_time = None, 0.0
    else:
        s = ctx.sets[p.label]
        x, y = s.training_tensors()
        source = tensor_source(x, y, ctx.device)
        n_train, n_stored, max_steps = len(y), len(s), tc.max_steps
        cls = get_method(p.name)
        cfg = cls.resolve_config(p.preset, p.params)
        b = resolve_budget(spec.budget, spec.budget_overrides)
        method = {**method_fields(cls, p.preset, cfg, ctx.info, spec.ipc, b, spec.arch), **budget_fields(b)}
        sh, set_time = proxy_set_hash(spec, p), ctx.set_times.get(p.label, float("nan"))
    base = {**_common_fields(ctx, cand), **method, "role": "proxy", "proxy": p.label, "cell_hash": ch,
            "synset_hash": sh, "set_build_time_s": set_time, "ipc": spec.ipc, "split": "val",
            "validation_per_class": spec.validation_per_class, **protocol_fields(tc.protocol, proto),
            "training": tc.model_dump(mode="json"), "n_train_images": n_train, "n_stored_images": n_stored,
            "epochs": proto.epochs, "gt_key": gt_key(spec)}

    def persist(r):
        store.write_row(ch, r.index, {**base, "model_index": r.index, "model_seed": r.seed, "val_acc": r.test_acc,
                                      "train_loss": r.train_loss, "train_time_s": r.train_time_s, "steps": r.steps,
                                      "created": _now()})

    seeds = model_seeds(derive(spec.seed, "nas-proxy", p.label), cand.arch, spec.num_eval)
    evaluate(source, proto, cand.arch, ctx.info, ctx.val, seeds, _settings(ctx, max_steps), **_progress(progress),
             skip=done, on_result=persist)


def _progress(progress) -> dict:
    return {} if progress is None else {"progress": progress}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def arch_done(spec: NasSpec, cand: Candidate, store) -> bool:
    need = set(range(spec.num_eval))
    return need <= store.model_indices(gt_cell_hash(spec, cand)) and all(
        need <= store.model_indices(proxy_cell_hash(spec, p, cand)) for p in spec.proxies)


def run_arch(ctx: NasContext, cand: Candidate, store, progress=None) -> None:
    """One job: the architecture's ground truth (unless cached) and every proxy. Each piece runs
    under the lease of its cell (``nas-<cell hash>``): a process that finds it held waits, then
    skips what the holder finished (so concurrent runs, or two specs sharing a ground truth,
    never train one network twice)."""
    _leased(store, gt_cell_hash(ctx.spec, cand), lambda: run_ground_truth(ctx, cand, store, progress))
    for p in ctx.spec.proxies:
        _leased(store, proxy_cell_hash(ctx.spec, p, cand), lambda p=p: run_proxy(ctx, p, cand, store, progress))


def _leased(store, cell_hash: str, fn) -> None:
    while (lease := store.claims.try_acquire(f"nas-{cell_hash}")) is None:
        time.sleep(1.0)
    lease.start()
    try:
        fn()
    finally:
        lease.release()


def nas_store(results_root: Path):
    from .store import ResultStore

    return ResultStore(Path(results_root) / "nas")


def run_nas(spec: NasSpec, results_root: Path, device: str = "auto", data=None, progress=None, executor=None,
            only_archs: set[str] | None = None) -> list[dict]:
    """Build the proxy sets, then run (or resume) every architecture job; returns this spec's rows."""
    from .progress import NullProgress

    progress = progress or NullProgress()
    store = nas_store(results_root)
    store.clean_stale_tmp()
    cands = [c for c in spec.candidates() if only_archs is None or c.id in only_archs]
    ctx = load_context(spec, store, device, data, progress)
    todo = [c for c in cands if not arch_done(spec, c, store)]
    if todo and executor is not None and executor.remote:
        from .worker import Submission

        sub = Submission.make([], store.root, getattr(data, "data_dir", None), device, kind="nas", grid=spec.name,
                              task={"spec": spec.model_dump(mode="json"), "results_root": str(Path(results_root))})
        sub.save()
        outs = executor.run_jobs(sub, [c.id for c in todo], progress, what=f"nas {spec.name} architectures") or {}
        failed = {k: d for k, d in outs.items() if d.get("status") != "finished"}
        if failed:
            k, d = next(iter(failed.items()))
            raise DbenchError(f"{len(failed)} of {len(todo)} NAS architecture job(s) failed; {k}: "
                              f"{d.get('error') or '?'} (logs in {sub.folder}); rerun to resume them.")
    elif todo:
        bar = progress.task(f"nas {spec.name}", len(cands))
        bar.advance(len(cands) - len(todo))
        for c in todo:
            bar.update(step=c.id)
            run_arch(ctx, c, store, progress)
            bar.advance()
    return spec_rows(spec, store, cands)


def nas_job(sub, key: str) -> dict[str, Any]:
    """A worker's share of a ``nas`` submission: architecture ``key`` (sets already built)."""
    from .data import DataSource

    spec = NasSpec.model_validate(sub.task["spec"])
    store = nas_store(Path(sub.task["results_root"]))
    ctx = load_context(spec, store, sub.device, DataSource.from_env(sub.data_dir), build=False)
    run_arch(ctx, candidate(key), store)
    return {"key": key, "status": "finished", "n": 1 + len(spec.proxies), "error": ""}


def spec_rows(spec: NasSpec, store, cands: Iterable[Candidate] | None = None) -> list[dict]:
    """This spec's rows (ground truth and proxies), models beyond ``num_eval`` left out."""
    cands = list(cands if cands is not None else spec.candidates())
    hashes = {gt_cell_hash(spec, c) for c in cands}
    hashes |= {proxy_cell_hash(spec, p, c) for p in spec.proxies for c in cands}
    rows = [r for r in store.iter_rows(hashes) if r["model_index"] < spec.num_eval]
    for r in rows:
        r["nas_spec"] = spec.name
    return rows


def import_ground_truth(spec: NasSpec, results_root: Path, path: Path) -> int:
    """Load a ground-truth cache computed elsewhere: a CSV (columns ``arch`` or ``nas_id``,
    ``test_acc``; optional ``model_index``, ``train_time_s``) or the JSON lines / rows of a
    dbench NAS store. Rows go into this spec's ground-truth cells (existing ones are kept);
    returns the number written."""
    import csv
    import json

    store = nas_store(results_root)
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--ground-truth {p}: no such file.")
    try:
        if p.suffix == ".csv":
            with p.open(newline="") as f:
                recs = list(csv.DictReader(f))
        else:
            text = p.read_text()
            recs = json.loads(text) if text.lstrip().startswith("[") else [json.loads(x) for x in text.splitlines()
                                                                             if x.strip()]
    except (OSError, ValueError) as e:
        raise ConfigError(f"--ground-truth {p}: unreadable ({e}).") from None
    n = 0
    for i, r in enumerate(recs):
        if r.get("role") == "proxy":  # a rows file of a whole run: only its ground truth is imported
            continue
        name = r.get("nas_id") or r.get("arch")
        if not name or r.get("test_acc") in (None, ""):
            raise ConfigError(f"--ground-truth {p}: record {i + 1} lacks 'arch'/'nas_id' or 'test_acc'.")
        try:
            acc = float(r["test_acc"])
        except ValueError:
            raise ConfigError(f"--ground-truth {p}: record {i + 1}: test_acc {r['test_acc']!r} is not a number.") \
                from None
        ours = {"gt_key": gt_key(spec), "dataset": spec.dataset}
        for field, want in ours.items():  # a record that names its setting must name this spec's
            if r.get(field) not in (None, "") and str(r[field]) != str(want):
                raise ConfigError(f"--ground-truth {p}: record {i + 1} has {field} {r[field]!r}, this spec's is "
                                  f"{want!r} (another dataset or training config); nothing imported past it.")
        c = candidate(str(name))
        try:
            k = int(r.get("model_index") or 0)
        except (TypeError, ValueError):
            raise ConfigError(f"--ground-truth {p}: record {i + 1}: model_index {r.get('model_index')!r} is not an "
                              "integer.") from None
        row = {"task": "nas", "space": SPACE_NAME, "nas_id": c.id, **c.factors(), "arch_eval": c.arch,
               "dataset": spec.dataset, "role": "ground_truth", "proxy": "whole_dataset", "method": "whole_dataset",
               "gt_key": gt_key(spec), "cell_hash": gt_cell_hash(spec, c), "split": "test", "model_index": k,
               "test_acc": acc, "train_time_s": float(r.get("train_time_s") or "nan"),
               "imported_from": str(p), "schema": 2, "created": _now()}
        n += bool(store.write_row(row["cell_hash"], k, row))
    return n


# ------------------------------------------------------------------------- dry run


def dry_run(spec: NasSpec, results_root: Path | None = None) -> tuple[list[dict], dict[str, float]]:
    """The jobs (one per architecture; proxy sets first) with an estimated cost each:
    image passes x a FLOP model. CPU seconds per FLOP and per activation element were measured
    on this machine (one thread, 20 candidates timed under load: it overestimates the CPU time the
    MNIST check took by about 2.5x); GPU time is calibrated so that DM's reported whole-dataset
    search (720 ConvNets x 100 epochs x 50k CIFAR-10 images) takes its 3580.2 min (DM Table 5,
    their GPU)."""
    from .data import get_info
    from .evaluate import protocol_with

    info = get_info(spec.dataset)
    n_train = sum(info.class_sizes) if info.class_sizes else 5000 * info.num_classes
    n_gt = (spec.ground_truth.train_per_class * info.num_classes if spec.ground_truth.train_per_class else n_train)
    n_val_train = n_train - spec.validation_per_class * info.num_classes
    gp = protocol_with(spec.ground_truth.training.protocol, spec.ground_truth.training.overrides)
    pp = protocol_with(spec.proxy_training.protocol, spec.proxy_training.overrides)
    n_proxy = spec.ipc * info.num_classes
    gt_steps = steps_for(gp, n_gt, spec.ground_truth.training.max_steps)
    px_steps = steps_for(pp, n_proxy, spec.proxy_training.max_steps)
    gt_imgs = gt_steps * min(gp.batch_size, n_gt)
    px_imgs = px_steps * min(pp.batch_size, n_proxy)
    es_imgs = px_steps * min(pp.batch_size, n_val_train)
    n_set = sum(not p.is_early_stopping for p in spec.proxies)
    n_es = sum(p.is_early_stopping for p in spec.proxies)
    store = nas_store(results_root) if results_root is not None else None
    jobs = []
    for c in spec.candidates():
        macs, elems = conv_flops(c, info.channels, info.im_size[0] + (4 if info.channels == 1 else 0))
        per_img_cpu = 3 * (2 * macs * CPU_S_PER_FLOP + elems * CPU_S_PER_ELEM)
        per_img_gpu = 3 * 2 * macs * gpu_s_per_flop()
        gt_done = store is not None and set(range(spec.num_eval)) <= store.model_indices(gt_cell_hash(spec, c))
        imgs = spec.num_eval * ((0 if gt_done else gt_imgs) + n_set * px_imgs + n_es * es_imgs)
        jobs.append({"job": c.id, "ground_truth": "cached" if gt_done else f"{gt_steps} steps",
                     "proxy_nets": spec.num_eval * len(spec.proxies), "image_passes": imgs,
                     "cpu_h": imgs * per_img_cpu / 3600, "gpu_h": imgs * per_img_gpu / 3600})
    tot = {"jobs": len(jobs), "cpu_h": sum(j["cpu_h"] for j in jobs), "gpu_h": sum(j["gpu_h"] for j in jobs),
           "gt_steps": gt_steps, "proxy_steps": px_steps, "proxy_sets": n_set}
    return jobs, tot


# one-thread CPU cost model: least squares over 20 candidates timed on this machine (MNIST, batch 64,
# forward + backward + SGD step, under the load of a shared machine; fits each within ~1.7x)
CPU_S_PER_FLOP = 8.86e-12
CPU_S_PER_ELEM = 1.88e-8
DM_WHOLE_MIN = 3580.2  # DM Table 5: whole-dataset search time, 720 ConvNets x 100 epochs on CIFAR-10


def gpu_s_per_flop() -> float:
    tot = sum(conv_flops(c, 3)[0] for c in SPACE) * 2 * 3 * 100 * 50000
    return DM_WHOLE_MIN * 60 / tot


# --------------------------------------------------------------------------- tables

PROXY_PUBLISHED_NAME = {"random": "Random", "dsa": "DSA", "dm": "DM", "datadam": "DataDAM", "cafe": "CAFE",
                        "early_stopping": "Early-stopping", "whole_dataset": "Whole dataset"}
PUBLISHED_NAS = Path(__file__).resolve().parent.parent / "results" / "reference" / "published_nas.csv"


def read_published_nas(path: Path | None = None) -> list[dict]:
    import csv

    p = path or PUBLISHED_NAS
    if not p.exists():
        return []
    with p.open(newline="") as f:
        return list(csv.DictReader(f))


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if x == x]
    return sum(xs) / len(xs) if xs else float("nan")


def nas_summary(rows: list[dict], topk: Sequence[str | int] = TOPK_DEFAULT, select_by: Sequence[str] = ("proxy",),
                order: Sequence[str] = ()) -> tuple[list[dict], dict[str, Any]]:
    """Per proxy (in ``order``, then the rest with early stopping last, then the whole-dataset
    row): the selected architecture, its ground-truth accuracy, ρ@k, search time, storage.
    Architectures are those with a ground truth and a result on every proxy. Pure function of rows."""
    gt: dict[str, list[float]] = {}
    gt_time: dict[str, float] = {}
    prox: dict[str, dict[str, list[float]]] = {}
    meta: dict[str, dict] = {}
    for r in rows:
        if r.get("role") == "ground_truth":
            gt.setdefault(r["nas_id"], []).append(float(r["test_acc"]))
            gt_time[r["nas_id"]] = gt_time.get(r["nas_id"], 0.0) + float(r.get("train_time_s") or 0.0)
        elif r.get("role") == "proxy":
            prox.setdefault(r["proxy"], {}).setdefault(r["nas_id"], []).append(float(r["val_acc"]))
            m = meta.setdefault(r["proxy"], {"time": 0.0, "storage": r.get("n_stored_images"),
                                             "set_time": r.get("set_build_time_s"), "rows": r})
            m["time"] += float(r.get("train_time_s") or 0.0)
    archs = [a for a in SPACE_IDS if a in gt and all(a in d for d in prox.values())]
    g = [_mean(gt[a]) for a in archs]
    out = []
    info: dict[str, Any] = {"n_archs": len(archs), "k": {}}
    names = [n for n in order if n in prox] + sorted((n for n in prox if n not in order),
                                                     key=lambda n: (n == "early_stopping", n))
    for name in names + ["whole_dataset"]:
        if name == "whole_dataset":
            if not gt or not archs:
                continue
            v = g
            storage = next((r.get("n_train_images") for r in rows if r.get("role") == "ground_truth"), None)
            t, st = sum(gt_time.get(a, 0.0) for a in archs), 0.0
        else:
            v = [_mean(prox[name][a]) for a in archs]
            m = meta[name]
            storage, t, st = m["storage"], m["time"], m["set_time"]
        rec: dict[str, Any] = {"proxy": name, "storage": storage}
        if archs:
            best = top_indices(v, 1)[0]
            rec.update({"selected": archs[best], "performance": g[best], "best_gt": max(g)})
            for sb in select_by:
                for k in topk:
                    rho, kk = spearman_topk(v, g, k, sb)  # type: ignore[arg-type]
                    rec[f"rho@{k}|{sb}"] = rho
                    info["k"][str(k)] = kk
        rec["search_time_min"] = t / 60
        rec["set_time_min"] = (float(st) / 60) if st not in (None, "") else float("nan")
        out.append(rec)
    return out, info


def setting_of(rows: list[dict]) -> dict[str, Any]:
    """The setting of our rows in the published CSV's terms (dataset, ipc, number of architectures,
    ground-truth and proxy epochs)."""
    gt = next((r for r in rows if r.get("role") == "ground_truth" and "epochs" in r), {})
    px = next((r for r in rows if r.get("role") == "proxy" and r.get("method") != "early_stopping"), {})
    n = len({r["nas_id"] for r in rows if r.get("role") == "ground_truth"})
    return {"dataset": (rows[0].get("dataset") if rows else None), "ipc": px.get("ipc"), "n_archs": n,
            "gt_epochs": gt.get("epochs"), "proxy_epochs": px.get("epochs"),
            "gt_whole": gt.get("train_per_class") is None if gt else None}


def published_match(pub: dict, ours: dict) -> str:
    """'' when the published row's setting is ours, else the reason it is another setting."""
    diff = []
    if str(ours.get("dataset")) != pub.get("dataset"):
        diff.append(f"dataset {ours.get('dataset')} vs {pub.get('dataset')}")
    if str(ours.get("ipc")) != pub.get("ipc"):
        diff.append(f"ipc {ours.get('ipc')} vs {pub.get('ipc')}")
    if str(ours.get("n_archs")) != pub.get("n_archs"):
        diff.append(f"{ours.get('n_archs')} vs {pub.get('n_archs')} architectures")
    for k, what in (("gt_epochs", "ground-truth epochs"), ("proxy_epochs", "proxy epochs")):
        if pub.get(k) and str(ours.get(k)) != pub.get(k):
            diff.append(f"{what} {ours.get(k)} vs {pub.get(k)}")
    if ours.get("gt_whole") is False:
        diff.append("ground truth on a training subsample")
    return "; ".join(diff)


def nas_table(rows: list[dict], topk: Sequence[str | int] = TOPK_DEFAULT, select_by: Sequence[str] = ("proxy",),
              published: list[dict] | None = None, order: Sequence[str] = ()):
    """The NAS table (a DataFrame) and its notes: ours per proxy, with DM Table 5 / DataDAM
    Table 4 beside it. A published number is shown as is only where its setting is ours
    (dataset, IPC, number of architectures, epochs); otherwise in brackets, marked as another
    setting (the reason is in the notes)."""
    import pandas as pd

    recs, info = nas_summary(rows, topk, select_by, order)
    published = read_published_nas() if published is None else published
    ours = setting_of(rows)
    best = next((r.get("best_gt") for r in recs if "best_gt" in r), None)
    notes = [f"{info['n_archs']} architectures ranked; performance = ground-truth test accuracy of the architecture "
             "with the proxy's best validation accuracy" + (f" (best in the space: {best:.1f})" if best else "")
             + "; ρ@k = Spearman (average ranks for ties) between proxy validation accuracy and ground-truth "
             "accuracy over the top-k architectures by the proxy (`select_by: proxy`, DM's choice; `by gt`: the top-k "
             "by ground truth); k: " + ", ".join(f"{k}={v}" for k, v in info["k"].items()) + ".",
             "whole_dataset = the ground truth itself (it selects on the test set: an oracle, as in the papers); "
             "search time = training time of every network on the proxy; set time = building the proxy set.",
             "DM ρ: over the top 5% selected by the proxy (compare ρ@5%); DataDAM ρ: over the top 20% by validation "
             "accuracy (compare ρ@20%)."]
    other: dict[str, str] = {}
    out = []
    for rec in recs:
        row: dict[str, Any] = {"proxy": rec["proxy"], "storage (imgs)": rec["storage"],
                               "selected": rec.get("selected", ""),
                               "performance (%)": _f(rec.get("performance"))}
        for k, v in rec.items():
            if k.startswith("rho@"):
                kk, sb = k[4:].split("|")
                row[f"ρ@{kk}" + ("" if sb == "proxy" else f" by {sb}")] = _f(v, 2)
        row["search time (min)"] = _f(rec["search_time_min"], 2)
        row["set time (min)"] = _f(rec["set_time_min"], 2)
        name = PROXY_PUBLISHED_NAME.get(rec["proxy"].split(".")[0])
        for src, metric_rho in (("DM", "spearman_top5%"), ("DataDAM", "spearman_top20%")):
            pubs = {p["metric"]: p for p in published if p.get("proxy") == name and p.get("source", "").startswith(src)}
            for metric, col in (("performance", f"{src} perf"), (metric_rho, f"{src} ρ")):
                p = pubs.get(metric)
                if p is None:
                    row[col] = ""
                    continue
                why = published_match(p, ours)
                if why:
                    other[f"{p['source']} {p['table']}"] = why
                row[col] = p["value"] if not why else f"({p['value']})"
        out.append(row)
    for src, why in other.items():
        notes.append(f"(value) = {src}, another setting: {why}.")
    return pd.DataFrame(out), notes


def _f(v, nd: int = 1) -> str:
    if v is None or v == "" or (isinstance(v, float) and v != v):
        return ""
    return f"{float(v):.{nd}f}"


def nas_csv(rows: list[dict]) -> str:
    """Per-architecture results: id, factors, ground truth and every proxy's validation accuracy."""
    import csv
    import io

    by: dict[str, dict[str, Any]] = {}
    proxies: list[str] = []
    for r in rows:
        d = by.setdefault(r["nas_id"], {"nas_id": r["nas_id"], **{k: r.get(k) for k in FACTORS}})
        if r.get("role") == "ground_truth":
            d.setdefault("_gt", []).append(float(r["test_acc"]))
        else:
            d.setdefault(f"_{r['proxy']}", []).append(float(r["val_acc"]))
            if r["proxy"] not in proxies:
                proxies.append(r["proxy"])
    buf = io.StringIO()
    cols = ["nas_id", *FACTORS, "gt_test_acc", *[f"{p}_val_acc" for p in proxies]]
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for a in SPACE_IDS:
        if a not in by:
            continue
        d = by[a]
        w.writerow({**d, "gt_test_acc": _f(_mean(d.get("_gt", [])), 2),
                    **{f"{p}_val_acc": _f(_mean(d.get(f"_{p}", [])), 2) for p in proxies}})
    return buf.getvalue()


__all__ = ["SPACE", "SPACE_IDS", "FACTORS", "Candidate", "candidate", "covering_sample", "NasSpec", "load_nas",
           "spearman", "spearman_topk", "average_ranks", "topk_size", "split_validation", "run_nas", "nas_table",
           "nas_summary", "nas_csv", "dry_run", "import_ground_truth"]


# ---------------------------------------------------------------------- command line


def nas_command(spec_file: Path, *, dry_run_only: bool, out: Path | None, ground_truth: Path | None, data_dir,
                results_dir, device: str, executor, console, err_console, print_frame) -> None:
    """``dbench nas`` (the CLI keeps only its options)."""
    from .data import DataSource
    from .progress import console_progress
    from .store import atomic_write_text
    from .store import results_dir as resolve_results
    from .tables import render_frame

    spec = load_nas(spec_file)
    root = resolve_results(results_dir)
    cands = spec.candidates()
    if dry_run_only:
        import pandas as pd

        jobs, tot = dry_run(spec, root)
        sets = [p.label for p in spec.proxies if not p.is_early_stopping]
        console.print(f"[bold]{spec.name}[/]: {len(cands)} architectures x {len(spec.proxies)} proxies "
                      f"({', '.join(p.label for p in spec.proxies)}) on {spec.dataset}, ipc {spec.ipc}; proxy sets "
                      f"built first: {', '.join(sets) or 'none'} (budget {spec.budget}); ground truth "
                      f"{tot['gt_steps']} steps, proxy training {tot['proxy_steps']} steps per network")
        df = pd.DataFrame([{**j, "cpu_h": f"{j['cpu_h']:.3f}", "gpu_h": f"{j['gpu_h']:.4f}"} for j in jobs])
        print_frame(df.head(40), f"{spec.name}: jobs (one per architecture){' - first 40' if len(df) > 40 else ''}")
        console.print(f"total: {tot['jobs']} jobs, estimated {tot['cpu_h']:.2f} CPU-hours (one thread, this machine's "
                      f"cost model) or {tot['gpu_h']:.2f} GPU-hours (DM's reported GPU time scaled by FLOPs), proxy "
                      "set building not included (see `dbench cost` for distillation)")
        return
    if ground_truth is not None:
        n = import_ground_truth(spec, root, ground_truth)
        err_console.print(f"imported {n} ground-truth row(s) from {ground_truth} (key {gt_key(spec)})")
    console.print(f"[bold]{spec.name}[/]: {len(cands)} architectures x proxies "
                  f"{', '.join(p.label for p in spec.proxies)}, {spec.dataset} ipc {spec.ipc}, validation "
                  f"{spec.validation_per_class}/class held out of train; results in {nas_store(root).root}"
                  + (f"; executor {executor.describe()}" if executor is not None and executor.name != "serial" else ""))
    with console_progress(console) as progress:
        rows = run_nas(spec, root, device, DataSource.from_env(data_dir), progress, executor)
    table, notes = nas_table(rows, spec.topk, spec.select_by, order=[p.label for p in spec.proxies])
    short = [c for c in table.columns if c in ("proxy", "storage (imgs)", "performance (%)", "ρ@all", "ρ@5%", "ρ@20%",
                                                "ρ@10", "search time (min)", "DM ρ", "DataDAM ρ")]
    print_frame(table[short], f"{spec.name}: NAS proxies ({spec.dataset}, ipc {spec.ipc}; every column in --out)")
    for n in notes:
        console.print(n, highlight=False, soft_wrap=True)
    if out is not None:
        md = f"# {spec.name}\n\n{spec.description.strip()}\n\n{render_frame(table, 'md')}\n\n" + \
             "\n".join(f"- {n}" for n in notes) + "\n"
        atomic_write_text(out / f"{spec.name}.md", md)
        atomic_write_text(out / f"{spec.name}.csv", render_frame(table, "csv"))
        atomic_write_text(out / f"{spec.name}_archs.csv", nas_csv(rows))
        import json

        atomic_write_text(out / "rows" / f"{spec.name}.jsonl",
                          "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows))
        err_console.print(f"wrote {out}/{spec.name}.md, .csv, _archs.csv and rows/{spec.name}.jsonl")
