"""Shared helpers for iterative distillation loops (any method that optimises images).

* :class:`DistillLoop` - the bookkeeping around a method's per-iteration step: resume from
  the cell's checkpoint, atomic checkpoint every N iterations (the method supplies its
  full state: images, optimizer, generator states, anything else), per-iteration metrics
  (loss, wall time) through ``ctx.log``, optional intermediate evaluation through
  ``ctx.evaluate``, and a progress bar. It knows nothing about the loss, so gradient-
  matching methods can reuse it.
* :class:`SiameseAug` - DSA with explicit Siamese parameters: one parameter set per class
  (the reference code seeds DiffAugment per class) or one per iteration, applied to
  class-major batches in as few calls as possible (classes that drew the same DSA family
  are augmented together).
* synthetic-set inits (``real``, ``noise``, IDM's quadrant ``aug`` init) and
  :func:`activations` (per-block post-activation maps + the final embedding in one
  forward, for attention matching).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import PositiveInt

from . import augment as A
from .api import ComponentConfig, RunContext
from .data import RealData
from .errors import ArtifactError
from .fields import DsaStrategy, InitParams, init_name
from .samplers import ClassRandomSampler, make_class_sampler
from .synset import SyntheticSet

# --------------------------------------------------------------------------- the loop


class DistillLoop:
    """Iteration bookkeeping for one distillation run.

    Usage::

        loop = DistillLoop(ctx, "dm", total, fingerprint=..., eval_every=..., snapshot=make_set)
        start = loop.resume(restore_fn)          # restore_fn(state) if a checkpoint exists
        for it in loop.iterations(start):
            metrics = step(it)                   # the method's work
            loop.done(it, metrics, state_fn)     # log, progress, checkpoint, eval
        loop.close()

    ``state_fn()`` returns the method's full state as a dict of tensors / plain values
    (``torch.load(weights_only=True)``-safe); the loop adds the iteration counter, the
    accumulated wall time and the fingerprint. Checkpoints are written every
    ``checkpoint_every`` iterations (default ``ctx.checkpoint_every``) and after the last.
    """

    def __init__(self, ctx: RunContext, name: str, total: int, *, fingerprint: str = "", eval_every: int = 0,
                 log_every: int = 1, checkpoint_every: int | None = None,
                 snapshot: Callable[[], Any] | None = None):
        self.ctx, self.name, self.total = ctx, name, int(total)
        self.fingerprint = fingerprint
        self.eval_every, self.log_every = int(eval_every), max(1, int(log_every))
        self.checkpoint_every = int(checkpoint_every or ctx.checkpoint_every or 0)
        self.snapshot = snapshot
        self.wall_s = 0.0
        self.resumed_from = 0
        self._bar = None
        self._t = 0.0

    def resume(self, restore: Callable[[dict[str, Any]], None]) -> int:
        state = self.ctx.load_checkpoint()
        if not state:
            return 0
        if not same_fingerprint(state.get("loop/fingerprint", ""), self.fingerprint):
            raise ArtifactError(f"{self.ctx.checkpoint_path}: checkpoint belongs to a different configuration "
                                f"({state.get('loop/fingerprint')!r} != {self.fingerprint!r}); delete it to restart.")
        restore(state)
        self.ctx.curve[:] = [tuple(p) for p in state.get("loop/curve", [])]
        self.wall_s = float(state.get("loop/wall_s", 0.0))
        self.resumed_from = int(state["loop/iteration"])
        return self.resumed_from

    def iterations(self, start: int) -> Iterator[int]:
        self._bar = self.ctx.progress.task(f"{self.name} distill", self.total)
        if start:
            self._bar.advance(start)
        elif self.eval_every:  # the curve starts at the initial set (iteration 0)
            self._evaluate(0)
        self._t = time.perf_counter()
        return iter(range(start, self.total))

    def _evaluate(self, n: int) -> None:
        if not (self.ctx.evaluate and self.snapshot):
            return
        s = self.snapshot()
        s.meta["wall_s"] = self.wall_s  # distillation time so far (accuracy vs wall time)
        accs = self.ctx.evaluate(s, n)
        self.ctx.log({f"eval/{k}": float(v) for k, v in accs.items()}, n)
        if "test_acc" in accs:
            self.ctx.curve.append((n, float(accs["test_acc"]), float(self.wall_s)))

    def done(self, it: int, metrics: Mapping[str, float], state: Callable[[], dict[str, Any]]) -> None:
        now = time.perf_counter()
        dt = now - self._t
        self.wall_s += dt
        n = it + 1
        if self._bar is not None:
            self._bar.advance()
        if n % self.log_every == 0 or n == self.total:  # metrics may be tensors: synced only here
            values = {k: float(v) for k, v in metrics.items()}
            self.ctx.log({**values, "iter_time_s": dt, "wall_s": self.wall_s}, n)
            if self._bar is not None and "loss" in values:
                self._bar.update(loss=values["loss"])
        if (self.checkpoint_every and n % self.checkpoint_every == 0) or n == self.total:
            self.checkpoint(n, state)
        if self.eval_every and n % self.eval_every == 0 and n < self.total:
            self._evaluate(n)
        self._t = time.perf_counter()  # evaluation / checkpoint time is not iteration time

    def checkpoint(self, n: int, state: Callable[[], dict[str, Any]]) -> None:
        self.ctx.save_checkpoint({**state(), "loop/iteration": n, "loop/wall_s": self.wall_s,
                                  "loop/curve": [list(p) for p in self.ctx.curve],
                                  "loop/fingerprint": self.fingerprint})

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


_CONFIG_JSON = re.compile(r"^(.*?/)(\{.*\})(/ipc\d+/.*)$", re.DOTALL)


def same_fingerprint(a: str, b: str) -> bool:
    """Checkpoint fingerprints ``<key>/<version>/<config JSON>/ipc<n>/<resolved>`` are equal up
    to the key order of the config JSON (a config's field order may change when fields move to
    a shared base class; the values are what matter)."""
    if a == b:
        return True
    ma, mb = _CONFIG_JSON.match(a), _CONFIG_JSON.match(b)
    if not (ma and mb) or ma.group(1) != mb.group(1) or ma.group(3) != mb.group(3):
        return False
    try:
        return json.loads(ma.group(2)) == json.loads(mb.group(2))
    except ValueError:
        return False


# ------------------------------------------------------------ DM-style methods

ImageInit = init_name("real", "noise")  # what initial_images builds itself; or any selector key


class ImageMatchingConfig(ComponentConfig):
    """The fields every DM-style method (DM, IDM, DataDAM) shares, with DM's defaults. A
    method's ``Config`` extends it, re-declares a field only to change its default (the
    field keeps its place), and adds its own fields after these. Values are only checked
    (init, init_params, dsa_strategy), never rewritten, so dumped configs and cell hashes
    are those of the plain types."""

    iterations: PositiveInt | None = None  # None: the method's official per-setting value
    lr_img: float | None = None  # None: the method's official per-setting value
    momentum_img: float = 0.5
    batch_real: PositiveInt = 256
    init: ImageInit = "real"  # real | noise | random | herding | kcenter | kmeans | forgetting (any selector)
    init_params: InitParams = {}  # the init selector's config (e.g. its feature extractor)
    dsa: bool = True
    dsa_strategy: DsaStrategy | None = None  # None: the dataset's default strategy
    aug_scope: Literal["class", "iteration"] = "class"
    eval_every: int = 0  # intermediate evaluation (when the runner provides one)
    log_every: int = 10  # metrics are synced to the host only every log_every iterations
    checkpoint_every: int | None = None  # None: the run context's default


class ImageMatchingRun:
    """Everything DM-style single-level methods share: the synthetic images (plain
    parameterisation) and their SGD optimizer, the class sampler, Siamese DSA, the
    generators, checkpoint state/restore, and the :class:`DistillLoop` (resumed).

    Generator streams are ``<key>/init``, ``<key>/real`` and ``<key>/aug``. A method runs
    ``for it in run.loop.iterations(run.start): ... run.step(loss, it, metrics)`` and
    returns ``run.result(meta)``."""

    def __init__(self, key: str, version: str, ctx: RunContext, cfg, real: RealData, ipc: int, resolved: dict):
        info = real.info
        self.ctx, self.info = ctx, info
        g_init, g_real, g_aug = (ctx.generator(f"{key}/{s}") for s in ("init", "real", "aug"))
        x0, self.labels = initial_images(cfg.init, real, ipc, g_init, ctx, cfg.init_params)
        self.syn = x0.to(ctx.device).requires_grad_(True)
        self.opt = torch.optim.SGD([self.syn], lr=resolved["lr_img"], momentum=cfg.momentum_img)
        self.sampler = make_class_sampler(getattr(cfg, "sampler", "random"), real, g_real, ctx.device,
                                          batch=cfg.batch_real, rep=getattr(cfg, "representative", None),
                                          precision=ctx.precision)
        self.aug = SiameseAug(resolved["dsa_strategy"], info.im_size, g_aug, cfg.aug_scope)
        self.gens = {"real": g_real, "aug": g_aug}
        self.loop = DistillLoop(ctx, key, resolved["iterations"],
                                fingerprint=f"{key}/{version}/{cfg.model_dump_json()}/ipc{ipc}/{resolved}",
                                eval_every=cfg.eval_every, log_every=cfg.log_every,
                                checkpoint_every=cfg.checkpoint_every, snapshot=self.snapshot)
        self.start = self.loop.resume(self.restore)

    def state(self) -> dict[str, Any]:
        return images_state(self.syn, self.opt, self.gens, self.sampler)

    def restore(self, s: dict[str, Any]) -> None:
        restore_images_state(s, self.syn, self.opt, self.gens, self.sampler)

    def snapshot(self) -> SyntheticSet:
        return SyntheticSet(self.syn.detach().cpu().clone(), self.labels.clone(), self.info.name, self.info.mean,
                            self.info.std)

    def step(self, loss: torch.Tensor, it: int, metrics: Mapping[str, Any]) -> None:
        """One image update, then bookkeeping (logging, checkpoint, intermediate eval)."""
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.loop.done(it, metrics, self.state)

    def result(self, meta: dict[str, Any]) -> SyntheticSet:
        meta = {"iterations": self.loop.total, **meta, "wall_s": self.loop.wall_s,
                "resumed_from": self.loop.resumed_from}
        return SyntheticSet(self.syn.detach().cpu(), self.labels, self.info.name, self.info.mean, self.info.std,
                            meta=meta)


def images_state(syn: torch.Tensor, opt: torch.optim.Optimizer, gens: Mapping[str, torch.Generator],
                 sampler=None) -> dict[str, Any]:
    """The checkpoint state every image-optimising method shares: the images, their
    optimizer, the generator states and the real-data sampler's state."""
    return {"images": syn.detach().cpu(), "opt": opt.state_dict(), **generator_states(gens),
            **(sampler.state() if sampler is not None else {})}


def restore_images_state(s: Mapping[str, Any], syn: torch.Tensor, opt: torch.optim.Optimizer,
                         gens: Mapping[str, torch.Generator], sampler=None) -> None:
    with torch.no_grad():
        syn.copy_(s["images"].to(syn.device))
    opt.load_state_dict(s["opt"])
    restore_generators(gens, s)
    if sampler is not None:
        sampler.restore(s)


def generator_states(gens: Mapping[str, torch.Generator]) -> dict[str, torch.Tensor]:
    return {f"rng/{k}": g.get_state() for k, g in gens.items()}


def restore_generators(gens: Mapping[str, torch.Generator], state: Mapping[str, Any]) -> None:
    for k, g in gens.items():
        g.set_state(state[f"rng/{k}"])


# ---------------------------------------------------------------- Siamese augmentation


class SiameseAug:
    """Explicit-parameter Siamese DSA for class-major batches.

    ``scope='class'`` (the reference behaviour: DiffAugment is re-seeded per class, so each
    class gets its own family and parameters, shared by that class's real and synthetic
    images); ``scope='iteration'`` (one parameter set for every image of the iteration).
    """

    def __init__(self, strategy: str, im_size: Sequence[int], generator: torch.Generator, scope: str = "class"):
        if scope not in ("class", "iteration"):
            raise ValueError(f"unknown Siamese scope {scope!r}")
        self.strategy, self.im_size, self.g, self.scope = strategy, tuple(im_size), generator, scope
        self.enabled = bool(A.parse_strategy(strategy))

    def sample(self, num_classes: int) -> list[A.AugParams]:
        if not self.enabled:
            return [A.AugParams()] * num_classes
        if self.scope == "iteration":
            return [A.sample_dsa(self.strategy, 1, self.im_size, self.g, siamese=True)] * num_classes
        return [A.sample_dsa(self.strategy, 1, self.im_size, self.g, siamese=True) for _ in range(num_classes)]

    @staticmethod
    def apply(x: torch.Tensor, params: Sequence[A.AugParams]) -> torch.Tensor:
        """Augment a class-major batch ([len(params) * n, C, H, W]) with per-class parameters."""
        k = len(params)
        if k == 0 or not any(p.steps for p in params):
            return x
        if all(p is params[0] for p in params):
            return A.apply(x, params[0])
        n = x.shape[0] // k
        groups: dict[tuple[str, ...], list[int]] = {}
        for c, p in enumerate(params):
            groups.setdefault(tuple(op for op, _ in p.steps), []).append(c)
        xk = x.reshape(k, n, *x.shape[1:])
        if len(groups) == 1:
            order, outs = list(range(k)), [A.apply(x, _stack(params, n))]
        else:
            order, outs = [], []
            for cls in groups.values():
                xs = xk[cls].reshape(len(cls) * n, *x.shape[1:])
                outs.append(A.apply(xs, _stack([params[c] for c in cls], n)))
                order += cls
        out = torch.cat(outs) if len(outs) > 1 else outs[0]
        if order == list(range(k)):
            return out
        inv = torch.empty(k, dtype=torch.long)
        inv[torch.tensor(order)] = torch.arange(k)
        return out.reshape(k, n, *x.shape[1:])[inv.to(x.device)].reshape(x.shape)


def _stack(params: Sequence[A.AugParams], n: int) -> A.AugParams:
    """Per-class shared parameters (leading dim 1) -> per-sample parameters (leading dim len*n)."""
    steps = []
    for j, (op, _) in enumerate(params[0].steps):
        steps.append((op, {key: torch.cat([p.steps[j][1][key].expand(1).repeat(n) for p in params])
                           for key in params[0].steps[j][1]}))
    return A.AugParams(steps)


# ---------------------------------------------------------------------------- inits


def init_real(real: RealData, ipc: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``ipc`` random real images per class (class-major), normalised; labels."""
    s = ClassRandomSampler(real, generator)
    x = torch.cat([s(c, ipc) for c in range(real.num_classes)])
    return x, torch.arange(real.num_classes).repeat_interleave(ipc)


def init_noise(real: RealData, ipc: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """N(0, 1) in normalised space (DC lineage)."""
    info = real.info
    x = torch.randn(real.num_classes * ipc, info.channels, *info.im_size, generator=generator)
    return x, torch.arange(real.num_classes).repeat_interleave(ipc)


def initial_images(kind: str, real: RealData, ipc: int, generator: torch.Generator, ctx,
                   params: dict | None = None, extra: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``init`` field of every distribution-matching method, in one place.

    ``real`` and ``noise`` draw from the method's own init generator (the reference
    behaviour); ``random``, ``herding``, ``kcenter``, ``kmeans``, ``forgetting`` (or any
    selector key) take that coreset selector's choice via :func:`benchmark.init.init_synset`,
    with ``params`` as the selector's config (e.g. its feature extractor). ``extra`` maps
    method-specific kinds (IDM's ``aug``) to functions of (real, ipc, generator)."""
    builtin = {"real": init_real, "noise": init_noise, **(extra or {})}
    if kind in builtin:
        return builtin[kind](real, ipc, generator)
    from .init import init_synset

    s = init_synset(kind, real, ipc, ctx, params=params or None)
    return s.images.cpu(), s.labels.cpu()


def init_quadrants(real: RealData, ipc: int, generator: torch.Generator,
                   factor: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """IDM ``aug`` init: every synthetic image is tiled from ``factor**2`` independent random
    real images of its class, each downscaled (bilinear) into one cell; cells are filled
    in the IDM order (TL, BL, TR, BR: column-major), matching ``Decode(order='idm')``."""
    info = real.info
    h, w = info.im_size
    ph, pw = -(-h // factor), -(-w // factor)
    s = ClassRandomSampler(real, generator)
    out = torch.zeros(real.num_classes * ipc, info.channels, ph * factor, pw * factor)
    for c in range(real.num_classes):
        for k, (i, j) in enumerate((i, j) for j in range(factor) for i in range(factor)):
            small = F.interpolate(s(c, ipc), size=(ph, pw), mode="bilinear", align_corners=False)
            out[c * ipc:(c + 1) * ipc, :, i * ph:(i + 1) * ph, j * pw:(j + 1) * pw] = small
    return out[:, :, :h, :w].contiguous(), torch.arange(real.num_classes).repeat_interleave(ipc)


# ----------------------------------------------------------------------- features

_ACTS = (nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.SiLU, nn.GELU)


def activations(model: nn.Module, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """One forward: the output of every activation layer inside the feature blocks (before
    pooling, as DataDAM's ReLU hooks see them) and the flattened final embedding."""
    acts: list[torch.Tensor] = []
    for block in model.blocks:
        mods = list(block.children()) if isinstance(block, nn.Sequential) else [block]
        for m in mods:
            x = m(x)
            if isinstance(m, _ACTS) or type(m).__name__ == "Swish":
                acts.append(x)
    return acts, torch.flatten(model.pool_out(x), 1)


def freeze(model: nn.Module) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(False)
    return model
