"""DC (Zhao, Mopuri, Bilen, ICLR 2021) and DSA (Zhao & Bilen, ICML 2021): one bilevel
gradient-matching loop, two registered names (so tables can tell them apart).

Per outer iteration (``iterations``, the paper's K; VICO-UoE/DatasetCondensation@53f63a6
``main.py``):

1. a **fresh** randomly initialised network (train mode) and a plain SGD optimizer for it
   (lr ``lr_net`` 0.01, no momentum, no weight decay);
2. for ``ol`` in ``outer_loop`` (the paper's T; ``get_loops(ipc)``):

   a. BatchNorm nets only: a train-mode forward of ``bn_batch`` real images per class sets
      the running statistics, then BN layers are frozen (eval mode);
   b. for each class: ``batch_real`` real images and the class's synthetic images; DSA
      (Siamese: one explicitly sampled parameter set per class, applied to both); the real
      CE gradient (detached) and the synthetic one (``create_graph``); loss += DC distance;
   c. **one** SGD step (lr_img 0.1, momentum 0.5) on the images, summed over classes;
   d. unless this was the last ``ol``: ``inner_loop`` epochs of the network on the current
      (detached) synthetic set, batch 256, no augmentation (DC) or per-sample DSA (DSA).

The matching distance is DC's per-output-row cosine over every weight tensor (conv and fc;
biases and norm parameters contribute zero), ``metric='ours'``; ``mse`` and ``cos`` are the
README ablations. ``sampler: representative`` swaps the random class batches for DREAM's
k-means representatives (re-clustered every ``representative.interval`` matching steps with
the current network): the DREAM papers' "DC/DSA + representative matching" ablation.

Deviations are named options: ``aug_scope='iteration'`` (one DSA draw for all classes),
``sampler``.

Speed: ``forward`` (:func:`benchmark.gradmatch.resolve_forward`): ``auto`` (default) runs the
real side of the matching and the inner network epochs ``torch.compile``d on runs of 50+
iterations (same loop, same draws; float-tolerance equal), ``loop`` the plain eager
per-class loop (the reference), ``compiled`` always compiled. The field is left out of the
config dump (and so of hashes) while it is ``auto``.

DC's default init is noise (the README's Table 1 commands pass no ``--init``); DSA's
recommended command uses ``--init real``.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from benchmark import augment as A
from benchmark.api import ComponentConfig, DistillMethod, register_method
from benchmark.data import RealData
from benchmark.distill import (
    DistillLoop,
    ImageInit,
    SiameseAug,
    images_state,
    initial_images,
    restore_images_state,
)
from benchmark.errors import ConfigError
from benchmark.fields import DsaStrategy, InitParams
from benchmark.gradmatch import (
    GMForward,
    freeze_bn_stats,
    has_batchnorm,
    match_class,
    matched_parameters,
    resolve_forward,
    train_on_tensors,
)
from benchmark.samplers import RepresentativeConfig, make_class_sampler
from benchmark.synset import SyntheticSet

_VICO = "VICO-UoE/DatasetCondensation@53f63a6"

# get_loops(ipc) -> (outer_loop, inner_loop) (VICO utils.py); ipc > 50: the author's advice
# in VICO-UoE/DatasetCondensation#2 is the better of (50, 10) and (20, 25).
LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}


def preset_provenance(cls, cfg) -> str:
    """The provenance of the preset whose config equals ``cfg`` (the preset that ran; the first
    such, ``official`` before the others), or, when params changed it, the closest preset's
    provenance followed by the fields that differ from it."""
    presets = {name: cls.Config(**{k: v for k, v in p.items() if k != "provenance"})
               for name, p in cls.PRESETS.items()}
    best, best_diff = None, None
    for name, pcfg in presets.items():
        diff = {f: getattr(cfg, f) for f in cls.Config.model_fields if getattr(cfg, f) != getattr(pcfg, f)}
        if not diff:
            return cls.PRESETS[name].get("provenance", "")
        if best_diff is None or len(diff) < len(best_diff):
            best, best_diff = name, diff
    if best is None:
        return ""
    changed = ", ".join(f"{f}={v!r}" for f, v in sorted(best_diff.items()))
    return f"{cls.PRESETS[best].get('provenance', '')}; params changed from preset '{best}': {changed}"


def get_loops(ipc: int) -> tuple[int, int]:
    if ipc in LOOPS:
        return LOOPS[ipc]
    raise ConfigError(f"DC/DSA define (outer_loop, inner_loop) only for ipc {sorted(LOOPS)}; for ipc {ipc} set "
                      "params: {loops: [outer, inner]} (the authors suggest [50, 10] or [20, 25] above 50).")


def matching_step(net, syn: torch.Tensor, opt: torch.optim.Optimizer, sampler, aug_params, ipc: int, batch_real: int,
                  params, metric: str, precision: str = "fp32", cl: bool = False,
                  compiled: bool = False) -> torch.Tensor:
    """One DC/DSA matching step (step 2b-c): for each class (``len(aug_params)`` classes) its
    real batch and synthetic images under the class's Siamese DSA parameters, the summed
    per-class gradient distance, one SGD step on the images. Returns the (detached) loss."""
    loss = torch.zeros((), device=syn.device)
    for c, ap in enumerate(aug_params):
        xr = SiameseAug.apply(sampler(c, batch_real), [ap])
        xs = SiameseAug.apply(syn[c * ipc:(c + 1) * ipc], [ap])
        loss = loss + match_class(net, xr, xs, c, params, metric, precision=precision, cl=cl, compiled=compiled)
    syn.grad = torch.autograd.grad(loss, syn)[0]  # images only: no network .grad
    opt.step()
    return loss.detach()


class GradMatchConfig(ComponentConfig):
    iterations: int = 1000  # outer iterations K (each with a fresh network)
    loops: tuple[int, int] | None = None  # (outer_loop T, inner_loop) ; None: get_loops(ipc)
    lr_img: float = 0.1
    momentum_img: float = 0.5
    lr_net: float = 0.01
    batch_real: int = 256
    batch_train: int = 256
    metric: Literal["ours", "mse", "cos"] = "ours"
    init: ImageInit = "noise"  # noise | real | random | herding | kcenter | kmeans | forgetting (any selector)
    init_params: InitParams = {}
    dsa: bool = False
    dsa_strategy: DsaStrategy | None = None  # None: the dataset's default strategy
    aug_scope: Literal["class", "iteration"] = "class"
    sampler: Literal["random", "representative"] = "random"
    representative: RepresentativeConfig = RepresentativeConfig()
    bn_batch: int = 16
    eval_every: int = 0  # intermediate evaluation; reference: every 500 iterations
    log_every: int = 10
    checkpoint_every: int | None = None
    # auto: compiled real side + inner epochs on long runs (benchmark.gradmatch.resolve_forward); loop: the plain
    # reference loop. Not dumped (no hash change) while auto.
    forward: GMForward = Field("auto", exclude_if=lambda v: v == "auto")


class _GradientMatching(DistillMethod):
    """The DC/DSA loop; subclasses only change defaults and names."""

    Config = GradMatchConfig

    def resolved(self, ipc: int) -> dict:
        cfg, info = self.cfg, self.ctx.info
        outer, inner = cfg.loops if cfg.loops is not None else get_loops(ipc)
        iterations = self.ctx.budget.iterations(cfg.iterations)
        return {"iterations": iterations, "loops": [outer, inner],
                "outer_loop": outer, "inner_loop": inner,
                "dsa_strategy": (cfg.dsa_strategy or info.dsa_strategy) if cfg.dsa else "none",
                "forward": resolve_forward(cfg.forward, iterations, self.ctx.device)}

    def distill(self, real: RealData, ipc: int) -> SyntheticSet:
        ctx, cfg, info = self.ctx, self.cfg, real.info
        r = self.resolved(ipc)
        k, dev, prec, cl = real.num_classes, ctx.device, ctx.precision, ctx.channels_last
        key = self.key
        g = {s: ctx.generator(f"{key}/{s}") for s in ("init", "real", "aug", "train")}
        x0, labels = initial_images(cfg.init, real, ipc, g["init"], ctx, cfg.init_params)
        syn = x0.to(dev).requires_grad_(True)
        labels_dev = labels.to(dev)
        opt = torch.optim.SGD([syn], lr=cfg.lr_img, momentum=cfg.momentum_img)
        sampler = make_class_sampler(cfg.sampler, real, g["real"], dev, batch=cfg.batch_real, rep=cfg.representative,
                                     precision=prec, compiled=r["forward"] == "compiled")
        aug = SiameseAug(r["dsa_strategy"], info.im_size, g["aug"], cfg.aug_scope)
        gens = {s: g[s] for s in ("real", "aug", "train")}
        inner_aug = None
        if cfg.dsa and aug.enabled:
            def inner_aug(x):
                return A.apply(x, A.sample_dsa(r["dsa_strategy"], x.shape[0], info.im_size, g["aug"], siamese=False))

        def state():
            return images_state(syn, opt, gens, sampler)

        def restore(s):
            restore_images_state(s, syn, opt, gens, sampler)

        def snapshot():
            return SyntheticSet(syn.detach().cpu().clone(), labels.clone(), info.name, info.mean, info.std)

        compiled = r["forward"] == "compiled"
        r_fp = {n: v for n, v in r.items() if n != "forward"}  # checkpoints from before the field keep resuming
        loop = DistillLoop(ctx, key, r["iterations"],
                           fingerprint=f"{key}/{self.version}/{cfg.model_dump_json()}/ipc{ipc}/{r_fp}",
                           eval_every=cfg.eval_every, log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every,
                           snapshot=snapshot)
        start = loop.resume(restore)
        T, inner = r["outer_loop"], r["inner_loop"]
        try:
            for it in loop.iterations(start):
                net = ctx.new_model(f"{key}/net/{it}").train()
                opt_net = torch.optim.SGD(net.parameters(), lr=cfg.lr_net)
                params = matched_parameters(net, metric=cfg.metric, scope="all")
                bn = has_batchnorm(net)
                loss_sum = torch.zeros((), device=dev)
                for ol in range(T):
                    sampler.observe(net, it * T + ol)
                    if bn:
                        freeze_bn_stats(net, sampler.many(cfg.bn_batch), prec, cl)
                    loss_sum += matching_step(net, syn, opt, sampler, aug.sample(k), ipc, cfg.batch_real, params,
                                              cfg.metric, prec, cl, compiled)
                    if ol == T - 1:
                        break
                    train_on_tensors(net, opt_net, syn.detach().clone(), labels_dev, inner, cfg.batch_train, g["train"],
                                     inner_aug, prec, cl, compiled)
                metrics = {"loss": loss_sum / (k * T)}
                if cfg.sampler == "representative":
                    metrics["sampler_refresh_s"] = sampler.refresh_s
                loop.done(it, metrics, state)
        finally:
            loop.close()
        meta = {"resolved": r, "iterations": r["iterations"], "wall_s": loop.wall_s, "resumed_from": loop.resumed_from,
                "provenance": preset_provenance(type(self), cfg)}
        return SyntheticSet(syn.detach().cpu(), labels, info.name, info.mean, info.std, meta=meta)


@register_method
class DC(_GradientMatching):
    key = "dc"
    display_name = "DC"
    description = "Dataset Condensation: bilevel per-class gradient matching (per-row cosine), fresh net per iteration"
    version = "1"
    SMOKE_PARAMS = {"loops": (2, 1), "batch_real": 8}  # get_loops has no row for ipc 2

    PRESETS = {
        "official": {"provenance": f"{_VICO} main.py --method DC defaults (Iteration 1000, lr_img 0.1, momentum 0.5, "
                                   "lr_net 0.01, batch_real 256, get_loops, dis_metric ours, init noise)"},
        "real_init": {"init": "real", "provenance": "deviation: real init (DC's default is noise)"},
        "representative": {"sampler": "representative",
                           "provenance": "no official code (neither VICO-UoE nor lyq312318224/DREAM has a DC "
                                         "variant): dbench's DC with DREAM's representative (k-means) real batches, "
                                         "the ablation reported in DREAM supp. Sec. 2 and DREAM+ Table 3"},
    }


@register_method
class DSA(_GradientMatching):
    key = "dsa"
    display_name = "DSA"
    description = "DC + Differentiable Siamese Augmentation (same DSA parameters on real and synthetic batches)"
    version = "1"
    SMOKE_PARAMS = {"loops": (2, 1), "batch_real": 8}

    class Config(GradMatchConfig):
        init: ImageInit = "real"
        dsa: bool = True

    PRESETS = {
        "official": {"provenance": f"{_VICO} main.py --method DSA --init real --dsa_strategy "
                                   "color_crop_cutout_flip_scale_rotate (no flip for MNIST/SVHN); Iteration 1000, "
                                   "lr_img 0.1, momentum 0.5, get_loops"},
        "representative": {"sampler": "representative",
                           "provenance": "no official code (neither VICO-UoE nor lyq312318224/DREAM has a DSA "
                                         "variant): dbench's DSA with DREAM's representative (k-means) real batches, "
                                         "the ablation reported in DREAM supp. Sec. 2 and DREAM+ Table 3"},
    }
