"""Real-data samplers for distillation loops.

* :class:`ClassRandomSampler` - DC-style ``get_images(c, n)``: a fresh random permutation
  of class ``c`` per call, first ``n`` (the whole class if ``n`` is larger). ``many``
  draws several classes in class order and returns them concatenated (class-major), with
  exactly the draws a per-class loop would make, so batched and looped paths agree.
* :class:`AllClassSampler` - IDM's ``get_images(None, n)``: a random permutation of the
  whole train split, first ``n`` (images and labels), used to train IDM's queue nets.

* :class:`CyclicBatches` - IDC's endless ``BatchSampler(SubsetRandomSampler, drop_last)``:
  epoch-wise permutations of an index pool, one batch per call (per class for matching,
  over all classes for network updates).
* :class:`RepresentativeSampler` - DREAM's representative matching: per class, k-means on
  the current network's embeddings of every image of the class, and the image(s) nearest
  each centroid; refreshed every ``interval`` matching steps, cached in between. It is a
  drop-in for :class:`ClassRandomSampler` (same ``indices`` / ``__call__`` / ``many``),
  so any method can match on representative batches (``sampler: representative``).

Every sampler has ``observe(net, step)``, called once per matching step with the network
about to be matched (a no-op except for the representative sampler), and
``state()`` / ``restore()`` for checkpoints (generator states are saved by the method).

Provenance: VICO-UoE/DatasetCondensation@53f63a6 ``main_DM.py`` (get_images);
uitrbn/IDM@fe23bbc ``IDM_cifar10.py`` (all-class variant); snu-mllab/Efficient-Dataset-
Condensation@ceac95a ``data.py`` (ClassBatchSampler, ClassDataLoader); lyq312318224/DREAM@595e3c1
``new_strategy.py`` (``query``: the image nearest each centroid; ``query_match``: ``subsample``
nearest per centroid, DREAM+) and ``condense.py`` / ``condense_improve.py`` (re-clustering every
``interval`` steps). DREAM's first release (@9032bd0) had the same ``query`` in
``query_strategies/kmeans_sampling.py``; ``subsample`` / ``query_match`` exist only from the
DREAM+ commit b133b77 on. Every draw goes through an explicit ``torch.Generator``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict

from .data import RealData


class ClassRandomSampler:
    def __init__(self, real: RealData, generator: torch.Generator, device: torch.device | str = "cpu"):
        self.real, self.g, self.device = real, generator, device

    def indices(self, c: int, n: int) -> torch.Tensor:
        idx = self.real.class_indices[c]
        return idx[torch.randperm(idx.numel(), generator=self.g)[:n]]

    def __call__(self, c: int, n: int) -> torch.Tensor:
        return self.real.normalize(self.real.images[self.indices(c, n)], self.device)

    def observe(self, net, step: int) -> None:  # random batches do not depend on the network
        return None

    def state(self) -> dict[str, Any]:
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        return None

    def per_class_count(self, n: int, classes: Sequence[int] | None = None) -> int:
        """Images per class ``many`` returns (``n`` capped by the smallest class drawn)."""
        classes = range(self.real.num_classes) if classes is None else classes
        return min(n, *(int(self.real.class_indices[c].numel()) for c in classes))

    def many(self, n: int, classes: Sequence[int] | None = None) -> torch.Tensor:
        """Class-major concatenation of ``n`` images per class (equal count per class)."""
        classes = list(range(self.real.num_classes)) if classes is None else list(classes)
        m = self.per_class_count(n, classes)
        idx = torch.cat([self.indices(c, n)[:m] for c in classes])
        return self.real.normalize(self.real.images[idx], self.device)


class AllClassSampler:
    def __init__(self, real: RealData, generator: torch.Generator, device: torch.device | str = "cpu"):
        self.real, self.g, self.device = real, generator, device

    def __call__(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randperm(len(self.real), generator=self.g)[:n]
        return self.real.batch(idx, self.device)


class CyclicBatches:
    """Endless epoch-wise batches without replacement from each of several index pools
    (IDC's ``ClassBatchSampler``: a fresh permutation per pass, ``drop_last``)."""

    def __init__(self, pools: Sequence[torch.Tensor], batch: int, generator: torch.Generator):
        self.pools, self.batch, self.g = list(pools), int(batch), generator
        self.perm: list[torch.Tensor | None] = [None] * len(self.pools)
        self.pos = [0] * len(self.pools)

    def next(self, k: int = 0) -> torch.Tensor:
        pool = self.pools[k]
        b = min(self.batch, pool.numel())
        if self.perm[k] is None or self.pos[k] + b > pool.numel():
            self.perm[k] = torch.randperm(pool.numel(), generator=self.g)
            self.pos[k] = 0
        out = pool[self.perm[k][self.pos[k]:self.pos[k] + b]]  # type: ignore[index]
        self.pos[k] += b
        return out

    def state(self, prefix: str) -> dict[str, Any]:
        return {f"{prefix}/pos": list(self.pos),
                f"{prefix}/perm": [p if p is not None else torch.empty(0, dtype=torch.long) for p in self.perm]}

    def restore(self, state: dict[str, Any], prefix: str) -> None:
        self.pos = [int(v) for v in state[f"{prefix}/pos"]]
        self.perm = [p if p.numel() else None for p in state[f"{prefix}/perm"]]


class ClassCyclicSampler:
    """IDC-style class sampler: ``indices(c, n)`` is the next ``batch`` of class ``c`` from
    its endless per-class cycle (``n`` is ignored: the batch size is fixed at
    construction, as in IDC); ``first_k(c, k)`` is the deterministic init draw."""

    def __init__(self, real: RealData, batch: int, generator: torch.Generator, device: torch.device | str = "cpu"):
        self.real, self.device = real, device
        self.cycle = CyclicBatches(real.class_indices, batch, generator)

    def indices(self, c: int, n: int | None = None) -> torch.Tensor:
        return self.cycle.next(c)

    def first_k(self, c: int, k: int) -> torch.Tensor:
        return self.real.class_indices[c][:k]

    def observe(self, net, step: int) -> None:
        return None

    def state(self) -> dict[str, Any]:
        return self.cycle.state("sampler")

    def restore(self, state: dict[str, Any]) -> None:
        self.cycle.restore(state, "sampler")


class RepresentativeConfig(BaseModel):
    """DREAM's representative matching. Defaults are DREAM's (lyq312318224/DREAM@595e3c1
    ``argument.py``: batch_real 128 clusters, subsample 1, interval 10, fast_pytorch_kmeans
    with random init and at most 100 iterations, on raw [0, 1] images)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int | None = None  # images per class per matching step (None: the method's real batch size)
    per_cluster: int = 1  # DREAM+ ``subsample``: n / per_cluster clusters, per_cluster nearest members each
    interval: int = 10  # re-cluster every `interval` matching steps (with the current network)
    features: Literal["raw", "normalized"] = "raw"  # raw: DREAM embeds unnormalised [0, 1] images (faithful)
    kmeans_init: Literal["random", "kmeans++"] = "random"
    max_iter: int = 100
    embed_batch: int = 1000
    pool: int | None = None  # cluster a fresh random subset of at most `pool` images per class (None: all, DREAM)


class RepresentativeSampler:
    """Per class, the real images nearest the centroids of a k-means over the current
    network's embeddings (``net.embed``, eval mode, no augmentation) of *every* image of the
    class. ``observe(net, step)`` re-clusters when ``step % interval == 0`` (or when nothing
    is cached); between refreshes the cached batch is returned. ``refresh_s`` accumulates
    the clustering wall time (embedding + k-means) for cost reports."""

    PICKS = ("distinct", "topk")

    def __init__(self, real: RealData, cfg: RepresentativeConfig, n_default: int, generator: torch.Generator,
                 device: torch.device | str = "cpu", precision: str = "fp32", pick: str = "distinct",
                 compiled: bool = False):
        """``pick``: how each centroid's image(s) are chosen. ``distinct`` (dbench): the nearest
        image not taken by an earlier centroid (``per_cluster`` 1), or the ``per_cluster``
        nearest members of the centroid's own cluster; never a duplicate. ``topk`` (the official
        ``new_strategy.py``: ``query`` argmin, ``query_match`` topk): the ``per_cluster``
        nearest images among *all* images of the class, duplicates across centroids allowed.
        Not part of :class:`RepresentativeConfig` so that configs embedding it keep their hashes;
        methods pass it from their own config (IDC/DREAM: ``representative_pick``). ``compiled``:
        embed with the ``torch.compile``d forward (:func:`benchmark.gradmatch.compiled_embed`; the
        gradient-matching methods' ``forward: compiled``)."""
        if pick not in self.PICKS:
            from .errors import ConfigError

            raise ConfigError(f"representative sampler: unknown pick {pick!r}; use one of {', '.join(self.PICKS)}")
        self.real, self.cfg, self.g, self.device, self.precision = real, cfg, generator, device, precision
        self.pick, self.compiled = pick, compiled
        self.n = int(cfg.n or n_default)
        if self.n < cfg.per_cluster or self.n % cfg.per_cluster:
            from .errors import ConfigError

            raise ConfigError(f"representative sampler: n={self.n} must be a multiple of per_cluster={cfg.per_cluster}")
        self.k = self.n // cfg.per_cluster
        self.cache: list[torch.Tensor] | None = None
        self.refresh_s = 0.0
        self.refreshes = 0

    # ---------------------------------------------------------------- selection
    def candidates(self, c: int) -> torch.Tensor:
        """The images of class ``c`` that are clustered (all of them unless ``pool`` is set)."""
        idx = self.real.class_indices[c]
        if self.cfg.pool is not None and idx.numel() > self.cfg.pool:
            idx = idx[torch.randperm(idx.numel(), generator=self.g)[:self.cfg.pool]]
        return idx

    @torch.no_grad()
    def embed(self, net, idx: torch.Tensor) -> torch.Tensor:
        from .gradmatch import compiled_embed
        from .runtime import autocast

        out = []
        dev = torch.device(self.device)
        embed = compiled_embed() if self.compiled else (lambda n, x: n.embed(x))
        for s in range(0, idx.numel(), self.cfg.embed_batch):
            b = idx[s:s + self.cfg.embed_batch]
            x = (self.real.pixels(b, dev) if self.cfg.features == "raw"
                 else self.real.normalize(self.real.images[b], dev))
            with autocast(dev, self.precision):  # type: ignore[arg-type]
                if self.compiled and self.precision != "fp32":  # cast outside the graph (see gradmatch)
                    x = x.to(torch.bfloat16 if (self.precision == "bf16" or dev.type == "cpu") else torch.float16)
                out.append(embed(net, x).float())
        return torch.cat(out)

    def select_class(self, feats: torch.Tensor, c: int) -> torch.Tensor:
        """Positions of the representatives within class ``c`` (cluster order)."""
        from .kmeans import kmeans, nearest_distinct

        n_c = feats.shape[0]
        k = min(self.k, n_c)
        res = kmeans(feats, k, generator=self.g, init=self.cfg.kmeans_init, max_iter=self.cfg.max_iter)
        if self.pick == "topk":  # official: per centroid, the per_cluster nearest over the whole class
            m = min(self.cfg.per_cluster, n_c)
            d = torch.cdist(feats, res.centers)  # [n_c, k]
            return torch.argsort(d.T, dim=1, stable=True)[:, :m].reshape(-1).cpu()
        if self.cfg.per_cluster == 1:
            return nearest_distinct(feats, res.centers).cpu()
        d = torch.cdist(feats, res.centers)  # [n_c, k]
        picks = []
        for j in range(k):
            members = (res.labels == j).nonzero().flatten()
            order = torch.argsort(d[members, j], stable=True)[:self.cfg.per_cluster]
            picks.append(members[order])
        return torch.cat(picks).cpu()

    def refresh(self, net) -> None:
        t0 = time.perf_counter()
        was_training = net.training
        net.eval()
        try:
            cache = []
            for c in range(self.real.num_classes):
                idx = self.candidates(c)
                cache.append(idx[self.select_class(self.embed(net, idx), c)])
            self.cache = cache
        finally:
            net.train(was_training)
        self.refresh_s += time.perf_counter() - t0
        self.refreshes += 1

    def observe(self, net, step: int) -> None:
        if self.cache is None or step % self.cfg.interval == 0:
            self.refresh(net)

    # ------------------------------------------------- the ClassRandomSampler surface
    def indices(self, c: int, n: int | None = None) -> torch.Tensor:
        if self.cache is None:
            raise RuntimeError("RepresentativeSampler.observe(net, step) must run before the first draw")
        return self.cache[c]

    def __call__(self, c: int, n: int | None = None) -> torch.Tensor:
        return self.real.normalize(self.real.images[self.indices(c)], self.device)

    def per_class_count(self, n: int, classes: Sequence[int] | None = None) -> int:
        classes = range(self.real.num_classes) if classes is None else classes
        return min(int(self.indices(c).numel()) for c in classes)

    def many(self, n: int, classes: Sequence[int] | None = None) -> torch.Tensor:
        classes = list(range(self.real.num_classes)) if classes is None else list(classes)
        m = self.per_class_count(n, classes)
        idx = torch.cat([self.indices(c)[:m] for c in classes])
        return self.real.normalize(self.real.images[idx], self.device)

    def state(self) -> dict[str, Any]:
        if self.cache is None:
            return {}
        return {"rep/cache": list(self.cache), "rep/refresh_s": self.refresh_s, "rep/refreshes": self.refreshes}

    def restore(self, state: dict[str, Any]) -> None:
        if "rep/cache" in state:
            self.cache = list(state["rep/cache"])
            self.refresh_s = float(state["rep/refresh_s"])
            self.refreshes = int(state["rep/refreshes"])


def make_class_sampler(kind: str, real: RealData, generator: torch.Generator, device, *, batch: int,
                       rep: RepresentativeConfig | None = None, precision: str = "fp32", pick: str = "distinct",
                       compiled: bool = False):
    """``random`` (DC-style, fresh permutation per draw), ``cyclic`` (IDC-style) or
    ``representative`` (DREAM); one switch point for every method's ``sampler`` field."""
    makers = {
        "random": lambda: ClassRandomSampler(real, generator, device),
        "cyclic": lambda: ClassCyclicSampler(real, batch, generator, device),
        "representative": lambda: RepresentativeSampler(real, rep or RepresentativeConfig(), batch, generator, device,
                                                        precision, pick, compiled),
    }
    if kind not in makers:
        from .errors import ConfigError

        raise ConfigError(f"unknown sampler {kind!r}; use one of {', '.join(makers)}")
    return makers[kind]()
