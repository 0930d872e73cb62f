"""IDM: Improved Distribution Matching (Zhao, Li, Qin, Yu, CVPR 2023).

DM plus (1) partition-and-expansion: every stored image is four half-resolution images
(2x2 multi-formation, IDM order TL, BL, TR, BR, bilinear x2), (2) a queue of partially
trained ConvNets used as embedding networks, and (3) a class-aware CE regulariser whose
weight is ``ce_weight`` x the matching net's running training accuracy **in percent**.

Per iteration (uitrbn/IDM@fe23bbc ``IDM_cifar10.py``, ``command.txt``):

1. every ``net_generate_interval`` iterations (including 0) push a fresh net (pop the oldest
   when the queue holds ``net_num``); meters reset every ``eval_interval`` iterations;
2. one net drawn from the queue (restricted to ``[net_begin, net_end)`` above 10 nets), eval
   mode; for each class: Siamese DSA on real and expanded synthetic images, loss = MMD +
   weight x CE, and **one image-optimizer step per class**;
3. ``fetch_net_num`` queue nets take ``model_train_steps`` SGD steps each on random
   all-class real batches (plain CE, no augmentation), updating their accuracy meters.

Speed: the real images of all classes go through the matching net together (the net is
frozen during the per-class image steps, so this is exact), on the CPU in chunks of a few
images (:func:`methods.dm.real_features`: cache-resident intermediates, same math), and the
queue nets' SGD steps run forward/backward in chunks of 16 images accumulating the batch
gradient (exact for nets without BatchNorm); the synthetic forwards stay per class because
each class's step changes the images the next class sees (momentum).
``forward='compiled'`` additionally ``torch.compile``s that real-image forward and the queue
nets' training step (forward + backward; one graph shared by every queue net), the two costs
that dominate an iteration on CPU; same math. ``forward='per_class'`` is the plain reference
loop (real images embedded class by class, queue nets stepped on whole batches), kept
selectable for comparison (benchmarks/bench_iter_dm.py).

``None`` fields resolve from the per-setting table of ``command.txt`` (:data:`SETTINGS`).
Datasets IDM never ran (MNIST, Fashion-MNIST, SVHN, digits) use the CIFAR-10 rows; the
resolved values and their provenance are stored in the synthetic set's metadata.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import PositiveInt

from benchmark.api import DistillMethod, register_method
from benchmark.data import RealData
from benchmark.distill import (
    DistillLoop,
    ImageMatchingConfig,
    SiameseAug,
    freeze,
    generator_states,
    init_quadrants,
    initial_images,
    restore_generators,
)
from benchmark.fields import init_name
from benchmark.losses import ce_regulariser, mean_embedding_mmd
from benchmark.runtime import autocast, channels_last, compiled_embed, compiled_logits_and_ce, logits_and_ce
from benchmark.samplers import AllClassSampler, ClassRandomSampler
from benchmark.synset import Decode, SyntheticSet, multi_formation
from methods.dm import real_features

_REPO = "uitrbn/IDM@fe23bbc"
# (dataset, ipc) -> ce_weight, batch_real, net_generate_interval, model_train_steps, eval_interval[, net_num]
_ROW = ("ce_weight", "batch_real", "net_generate_interval", "model_train_steps", "eval_interval")
SETTINGS: dict[str, dict[int, tuple]] = {
    "cifar10": {1: (0.5, 5000, 5, 10, 100), 10: (0.5, 256, 30, 10, 100), 50: (0.1, 256, 30, 10, 500)},
    "cifar100": {1: (0.5, 5000, 5, 10, 100), 10: (0.1, 256, 30, 50, 100), 50: (0.1, 256, 30, 10, 500)},
    "tinyimagenet": {1: (0.5, 256, 30, 10, 100), 10: (0.5, 256, 30, 10, 500), 50: (0.8, 256, 30, 50, 1000)},
}


IDMInit = init_name("aug", "real", "noise")  # aug: init_quadrants; real / noise: initial_images


def official_setting(dataset: str, ipc: int) -> tuple[dict, str]:
    table = SETTINGS.get(dataset)
    src = f"{_REPO} command.txt ({dataset})"
    if table is None:
        table, src = SETTINGS["cifar10"], f"{_REPO} command.txt (CIFAR-10 rows; no official command for {dataset})"
    key = 1 if ipc <= 1 else (10 if ipc <= 10 else 50)
    if key != ipc:
        src += f" (ipc {ipc} uses the ipc-{key} row)"
    return dict(zip(_ROW, table[key])), src


class _Net:
    """A queue entry: network, its SGD optimizer and running training-accuracy counts."""

    def __init__(self, net, opt, uid: int):
        self.net, self.opt, self.uid = net, opt, uid
        self.correct = 0
        self.total = 0

    def acc_percent(self) -> float:
        return 100.0 * self.correct / self.total if self.total else 0.0


class ModelQueue:
    """IDM's FIFO of partially trained nets (push every interval, pop the oldest at capacity)."""

    def __init__(self, make, capacity: int):
        self.make, self.capacity = make, capacity
        self.items: list[_Net] = []
        self.pushed = 0

    def push(self) -> None:
        if len(self.items) >= self.capacity:
            self.items.pop(0)
        self.items.append(self.make(self.pushed))
        self.pushed += 1

    def reset_meters(self) -> None:
        for e in self.items:
            e.correct = e.total = 0

    def __len__(self) -> int:
        return len(self.items)


@register_method
class IDM(DistillMethod):
    key = "idm"
    display_name = "IDM"
    description = "Improved DM: 2x2 partition-and-expand, queue of trained nets, accuracy-weighted CE regulariser"
    version = "1"
    SMOKE_PARAMS = {"batch_real": 16, "trained_bs": 16, "model_train_steps": 1}

    class Config(ImageMatchingConfig):
        # shared fields (ImageMatchingConfig), IDM defaults where they differ from DM's
        iterations: PositiveInt = 20000
        lr_img: float = 0.2
        batch_real: PositiveInt | None = None  # None: command.txt per setting
        init: IDMInit = "aug"  # aug (quadrants) | real | noise | random | herding | kcenter | kmeans | forgetting
        # IDM's own fields
        ce_weight: float | None = None
        net_generate_interval: int | None = None
        model_train_steps: int | None = None
        eval_interval: int | None = None  # meters reset every eval_interval iterations
        ce_acc_scale: Literal["percent", "fraction"] = "percent"  # 'fraction' = documented variant
        syn_ce: bool = True
        net_num: int = 100
        queue_init: int = 3
        net_begin: int = 0
        net_end: int = 100000
        fetch_net_num: int = 2
        trained_bs: int = 256
        net_lr: float = 0.01
        net_momentum: float = 0.9
        net_weight_decay: float = 5e-4
        factor: int = 2  # partition-and-expand (1 = off)
        forward: Literal["batched", "per_class", "compiled"] = "batched"

    PRESETS = {
        "official": {"provenance": f"{_REPO} command.txt (--aug --syn_ce --net_decay --outer_loop 1 --train_net_num 1 "
                                   "--mismatch_lambda 0 --init real --lr_img 0.2, per-setting ce_weight / batch_real / "
                                   "net_generate_interval / model_train_steps / eval_interval), IDM_cifar10.py; "
                                   "IDM supp. Sec. 1 (lr 0.2)"},
        "fraction": {"ce_acc_scale": "fraction",
                     "provenance": "deviation: CE weight = ce_weight x accuracy as a fraction (not percent)"},
    }

    def resolved(self, ipc: int) -> dict:
        cfg = self.cfg
        row, src = official_setting(self.ctx.info.name, ipc)
        out = {k: (getattr(cfg, k) if getattr(cfg, k) is not None else v) for k, v in row.items()}
        out.update(iterations=self.ctx.budget.iterations(cfg.iterations),
                   dsa_strategy=(cfg.dsa_strategy or self.ctx.info.dsa_strategy) if cfg.dsa else "none",
                   provenance=src)
        return out

    def distill(self, real: RealData, ipc: int) -> SyntheticSet:
        ctx, cfg, info = self.ctx, self.cfg, real.info
        r = self.resolved(ipc)
        k = real.num_classes
        dev = ctx.device
        g = {s: ctx.generator(f"idm/{s}") for s in ("init", "real", "aug", "queue", "train")}
        x0, labels = initial_images(cfg.init, real, ipc, g["init"], ctx, cfg.init_params,
                                    extra={"aug": lambda *a: init_quadrants(*a, factor=cfg.factor)})
        syn = x0.to(dev).requires_grad_(True)
        opt = torch.optim.SGD([syn], lr=cfg.lr_img, momentum=cfg.momentum_img)
        sampler = ClassRandomSampler(real, g["real"], dev)
        all_sampler = AllClassSampler(real, g["train"], dev)
        aug = SiameseAug(r["dsa_strategy"], info.im_size, g["aug"], cfg.aug_scope)
        decode = Decode(factor=cfg.factor, order="idm")
        gens = {s: g[s] for s in ("real", "aug", "queue", "train")}

        def make(uid: int) -> _Net:
            net = ctx.new_model(f"idm/queue/{uid}")
            return _Net(net, torch.optim.SGD(net.parameters(), lr=cfg.net_lr, momentum=cfg.net_momentum,
                                             weight_decay=cfg.net_weight_decay), uid)

        queue = ModelQueue(make, cfg.net_num)
        for _ in range(cfg.queue_init):
            queue.push()

        def state():
            return {"images": syn.detach().cpu(), "opt": opt.state_dict(), **generator_states(gens),
                    "queue/pushed": queue.pushed, "queue/uids": [e.uid for e in queue.items],
                    "queue/nets": [{n: t.detach().cpu() for n, t in e.net.state_dict().items()} for e in queue.items],
                    "queue/opts": [e.opt.state_dict() for e in queue.items],
                    "queue/meters": [[e.correct, e.total] for e in queue.items]}

        def restore(s):
            with torch.no_grad():
                syn.copy_(s["images"].to(dev))
            opt.load_state_dict(s["opt"])
            restore_generators(gens, s)
            queue.items = []
            for uid, sd, osd, (c, t) in zip(s["queue/uids"], s["queue/nets"], s["queue/opts"], s["queue/meters"]):
                e = make(uid)
                e.net.load_state_dict(sd)
                e.opt.load_state_dict(osd)
                e.correct, e.total = int(c), int(t)
                queue.items.append(e)
            queue.pushed = int(s["queue/pushed"])

        def snapshot():
            return SyntheticSet(syn.detach().cpu().clone(), labels.clone(), info.name, info.mean, info.std,
                                decode=decode)

        loop = DistillLoop(ctx, "idm", r["iterations"],
                           fingerprint=f"idm/{self.version}/{cfg.model_dump_json()}/ipc{ipc}/{r}",
                           eval_every=cfg.eval_every, log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every,
                           snapshot=snapshot)
        start = loop.resume(restore)
        acc_scale = 1.0 if cfg.ce_acc_scale == "percent" else 0.01
        try:
            for it in loop.iterations(start):
                if it % r["eval_interval"] == 0:
                    queue.reset_meters()
                if it % r["net_generate_interval"] == 0:
                    queue.push()
                # -- 1/2: match with one queue net, one image step per class
                lo, hi = (cfg.net_begin, min(cfg.net_end, len(queue))) if len(queue) > 10 else (0, len(queue))
                entry = queue.items[lo + int(torch.randint(hi - lo, (1,), generator=g["queue"]))]
                net = entry.net
                net.eval()
                req = [p.requires_grad for p in net.parameters()]
                freeze(net)
                ce_w = r["ce_weight"] * entry.acc_percent() * acc_scale
                l_dm, l_ce = idm_image_steps(net, sampler, aug, syn, opt, k, ipc, r["batch_real"], decode,
                                             ce_w if cfg.syn_ce else 0.0, dev, ctx.precision, ctx.channels_last,
                                             cfg.forward)
                for p, q in zip(net.parameters(), req):
                    p.requires_grad_(q)
                # -- 3: train fetch_net_num queue nets on un-augmented real batches
                pick = torch.randperm(len(queue), generator=g["queue"])[:cfg.fetch_net_num].tolist()
                for j in pick:
                    train_queue_net(queue.items[j], all_sampler, cfg.trained_bs, r["model_train_steps"], dev,
                                    ctx.precision, ctx.channels_last, compiled=cfg.forward == "compiled",
                                    chunked=cfg.forward == "batched")
                loop.done(it, {"loss": (l_dm + ce_w * l_ce) / k, "loss_dm": l_dm / k, "loss_ce": l_ce / k,
                               "ce_weight_eff": ce_w, "queue_len": len(queue)}, state)
        finally:
            loop.close()
        meta = {"resolved": r, "iterations": r["iterations"], "wall_s": loop.wall_s, "resumed_from": loop.resumed_from}
        return SyntheticSet(syn.detach().cpu(), labels, info.name, info.mean, info.std, decode=decode, meta=meta)


def expand(x: torch.Tensor, decode: Decode) -> torch.Tensor:
    """Partition-and-expand of a class's images (labels are implied by the class)."""
    return multi_formation(x, torch.zeros(x.shape[0], dtype=torch.long), decode)[0]


def real_class_means(net, sampler: ClassRandomSampler, params, k: int, batch_real: int, device, precision, cl,
                     compiled: bool = False):
    real = sampler.many(batch_real)
    xr = channels_last(SiameseAug.apply(real, params), cl)
    if compiled:
        with torch.no_grad(), autocast(device, precision):
            fr = compiled_embed()(net, xr)
    else:
        fr = real_features(net, xr, device, precision)
    return fr.float().reshape(k, -1, fr.shape[-1]).mean(1)


def idm_image_steps(net, sampler, aug, syn, opt, k, ipc, batch_real, decode, ce_w, device, precision="fp32",
                    cl=False, forward: str = "batched") -> tuple[float, float]:
    """Per-class MMD + weighted-CE image steps. ``forward='batched'`` embeds all classes' real
    images in one forward (``'compiled'``: a compiled one); ``'per_class'`` embeds them class
    by class (reference loop)."""
    params = aug.sample(k)
    if forward in ("batched", "compiled"):
        means = real_class_means(net, sampler, params, k, batch_real, device, precision, cl, forward == "compiled")
    else:
        m = sampler.per_class_count(batch_real)
        rows = []
        for c in range(k):
            xr = channels_last(SiameseAug.apply(sampler(c, batch_real)[:m], [params[c]]), cl)
            with torch.no_grad(), autocast(device, precision):
                rows.append(net.embed(xr).float().mean(0))
        means = torch.stack(rows)
    tot_dm = tot_ce = 0.0
    for c in range(k):
        xs = expand(syn[c * ipc:(c + 1) * ipc], decode)
        xs = channels_last(SiameseAug.apply(xs, [params[c]]), cl)
        with autocast(device, precision):
            fs = net.embed(xs)
            logits = net.classifier(fs)
        l_dm = mean_embedding_mmd(means[c:c + 1], fs, 1)
        l_ce = ce_regulariser(logits, torch.full((xs.shape[0],), c, device=logits.device, dtype=torch.long))
        loss = l_dm + ce_w * l_ce if ce_w else l_dm
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        tot_dm = tot_dm + l_dm.detach()
        tot_ce = tot_ce + l_ce.detach()
    return tot_dm, tot_ce


TRAIN_CHUNK = 16


def _samplewise(net) -> bool:
    """No layer of ``net`` mixes samples in train mode (no BatchNorm): chunked steps are exact."""
    return not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())


def train_queue_net(entry: _Net, all_sampler: AllClassSampler, bs: int, steps: int, device, precision="fp32", cl=False,
                    compiled: bool = False, chunked: bool = True):
    """``steps`` SGD steps of plain CE on random all-class real batches; the accuracy meter is
    synced to the host once per call, not per step."""
    net = entry.net
    net.train()
    step = compiled_logits_and_ce() if compiled else logits_and_ce
    correct = torch.zeros((), dtype=torch.long, device=device)
    total = 0
    # CPU, eager, no batch-dependent layer: forward/backward in chunks, accumulating the gradient
    # of the batch-mean CE (the same gradient; the chunks' activations stay in cache, ~1.2x)
    chunked = chunked and not compiled and torch.device(device).type == "cpu" and _samplewise(net)
    for _ in range(steps):
        x, y = all_sampler(bs)
        entry.opt.zero_grad(set_to_none=True)
        if chunked and x.shape[0] > TRAIN_CHUNK:
            outs = []
            for xc, yc in zip(x.split(TRAIN_CHUNK), y.split(TRAIN_CHUNK)):
                with autocast(device, precision):
                    lc = net(channels_last(xc, cl))
                (torch.nn.functional.cross_entropy(lc.float(), yc, reduction="sum") / x.shape[0]).backward()
                outs.append(lc.detach())
            logits = torch.cat(outs)
        else:
            with autocast(device, precision):
                logits, loss = step(net, channels_last(x, cl), y)
            loss.backward()
        entry.opt.step()
        correct += (logits.detach().argmax(1) == y).sum()
        total += y.numel()
    entry.correct += int(correct)
    entry.total += total
