"""Dummy: the example distillation adapter. Copy this file to start a new method.

It is **not** a published method and no table should report it. It exists so that a new
contributor has a small, complete adapter to copy, and so that the contract suite
(``tests/test_contract.py``) always has one cheap distiller that exercises every part of
the interface. Its objective ("class means"):

1. the synthetic set starts from ``ipc`` images per class, through the shared ``init``
   helper (:func:`benchmark.distill.initial_images`), so every selector can seed it;
2. one randomly initialised ConvNet is drawn from the run context and frozen for the
   whole run;
3. each iteration draws ``batch_real`` real images per class, embeds them with that
   network, and takes one SGD step that pulls every synthetic image's embedding towards
   the mean real embedding of its class (squared L2, averaged over the stored images).

What to keep when you copy it:

* a nested ``Config`` (unknown keys are rejected) and ``PRESETS``, each with a
  ``provenance`` string (repo@commit or paper section for a real method);
* ``resolved()``: every value that runs but is not written in the config (here only the
  iteration count, which the budget may cap);
* randomness only from ``ctx.generator(stream)`` and ``ctx.new_model(stream)``, never
  from the global RNG;
* a :class:`~benchmark.distill.DistillLoop` that saves everything the next iteration
  depends on (images, optimizer, generator states), so that a killed run resumes to the
  same result;
* ``SMOKE_PARAMS``: the parameters that make one run take seconds on ``digits``. The
  contract suite runs every registered adapter with them; it needs no other edit.
"""

from __future__ import annotations

import torch

from benchmark.api import ComponentConfig, DistillMethod, register_method
from benchmark.data import RealData
from benchmark.distill import DistillLoop, freeze, images_state, initial_images, restore_images_state
from benchmark.samplers import ClassRandomSampler
from benchmark.synset import SyntheticSet


@register_method
class Dummy(DistillMethod):
    key = "dummy"
    display_name = "Dummy (example adapter)"
    description = "template adapter to copy, not a real method: pulls images towards their class's mean real embedding"
    version = "1"
    SMOKE_PARAMS = {"batch_real": 16}

    class Config(ComponentConfig):
        iterations: int = 200
        lr_img: float = 0.1
        momentum_img: float = 0.5
        batch_real: int = 64  # real images per class per iteration
        init: str = "real"  # real | noise | any selector key (random, herding, kcenter, kmeans, forgetting)
        init_params: dict = {}  # the init selector's config
        eval_every: int = 0  # intermediate evaluation, when the runner provides one
        log_every: int = 10  # metrics are synced to the host only every log_every iterations
        checkpoint_every: int | None = None  # None: the run context's default

    PRESETS = {
        "default": {"provenance": "dbench example adapter (methods/dummy.py); no paper, no reference code"},
    }

    def resolved(self, ipc: int) -> dict:
        return {"iterations": self.ctx.budget.iterations(self.cfg.iterations)}

    def distill(self, real: RealData, ipc: int) -> SyntheticSet:
        ctx, cfg, info = self.ctx, self.cfg, real.info
        r = self.resolved(ipc)
        k, dev = real.num_classes, ctx.device

        # one named generator per use; streams are what make a run reproducible and resumable
        g_init, g_real = ctx.generator("dummy/init"), ctx.generator("dummy/real")
        x0, labels = initial_images(cfg.init, real, ipc, g_init, ctx, cfg.init_params)
        syn = x0.to(dev).requires_grad_(True)
        opt = torch.optim.SGD([syn], lr=cfg.lr_img, momentum=cfg.momentum_img)
        sampler = ClassRandomSampler(real, g_real, dev)
        net = freeze(ctx.new_model("dummy/net")).eval()
        targets = labels.to(dev)
        gens = {"real": g_real}  # the init generator is spent before the loop: no need to save it

        def state():
            return images_state(syn, opt, gens, sampler)

        def restore(s):
            restore_images_state(s, syn, opt, gens, sampler)

        def snapshot():
            return SyntheticSet(syn.detach().cpu().clone(), labels.clone(), info.name, info.mean, info.std)

        # the fingerprint stops a run from resuming another configuration's checkpoint
        loop = DistillLoop(ctx, self.key, r["iterations"],
                           fingerprint=f"{self.key}/{self.version}/{cfg.model_dump_json()}/ipc{ipc}/{r}",
                           eval_every=cfg.eval_every, log_every=cfg.log_every,
                           checkpoint_every=cfg.checkpoint_every, snapshot=snapshot)
        start = loop.resume(restore)
        try:
            for it in loop.iterations(start):
                with torch.no_grad():
                    fr = net.embed(sampler.many(cfg.batch_real))  # class-major, equal count per class
                    means = fr.reshape(k, -1, fr.shape[-1]).mean(1)
                fs = net.embed(syn)
                loss = (fs - means[targets]).pow(2).sum(1).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loop.done(it, {"loss": loss.detach()}, state)
        finally:
            loop.close()
        meta = {"resolved": r, "iterations": r["iterations"], "wall_s": loop.wall_s, "resumed_from": loop.resumed_from}
        return SyntheticSet(syn.detach().cpu(), labels, info.name, info.mean, info.std, meta=meta)
