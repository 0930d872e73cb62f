"""IDC: Dataset Condensation via Efficient Synthetic-Data Parameterization (Kim et al., ICML 2022).

IDC = multi-formation (each stored image holds ``factor`` x ``factor`` patches, each decoded
to a full training image) + gradient matching on networks that are *trained on real data
during condensation* + the IDC evaluation protocol (``preset: idc``). IDC-I is ``factor: 1``.

Per outer iteration (``iterations``; snu-mllab/Efficient-Dataset-Condensation@ceac95a
``condense.py``, ``argument.py --reproduce``):

1. every ``fix_iter`` iterations a fresh network and SGD(0.01, momentum 0.9, wd 5e-4);
   optionally warmed up on real data first (``warmup_epochs``: DREAM+);
2. clamp the stored pixels to [0, 1];
3. ``inner_loop`` times: for each class **separately**: the next ``batch_real`` real images
   of the class (endless per-class cycle, or DREAM's representatives), the class's decoded
   synthetic images (at most ``batch_syn_max``, drawn at random), real and synthetic
   **concatenated, normalised and augmented together** (IDC composition, one parameter
   set: Siamese by construction), conv-weight gradient matching (``mse`` for CIFAR/SVHN,
   ``l1`` for (Fashion-)MNIST), **one image step per class**; then the network trains on
   ``n_data`` real samples (batches of ``batch_real``, per-sample DSA without cutout,
   CutMix p 0.5).

The synthetic set lives in pixel space [0, 1] (``space='pixel'``), decoded with
``Decode(factor, 'idc')`` for training and evaluation. ``lr_img=None`` resolves to IDC's
automatic rescaling ``base x (ipc / 10) x (size / base_size)^2`` (the ``--lr_img`` flag is
*not* the rate used: spec pitfall); base_size is 28 for MNIST only (Fashion-MNIST: 32, as
``tune_lr_img``). The resolved values and their provenance are stored in the set's metadata.

Named deviations from the official code (docs/fidelity.md), each a field whose default is
dbench's: ``norm_stats`` (official: CIFAR-100 normalised with CIFAR-10's constants),
``clamp_final`` (official: the final set is evaluated unclamped), ``representative_pick``
(official: argmin / top-k over the whole class, duplicates allowed). Evaluate IDC-I sets with
the ``idc_i`` protocol (the ``idc`` rule depends on the factor).

Speed: ``forward`` (:func:`benchmark.gradmatch.resolve_forward`): ``auto`` (default) runs the
real side of each class's matching, the network updates (and DREAM+'s warm-up) and the
representative sampler's embedding ``torch.compile``d on runs of 50+ iterations (same loop, same
draws; float-tolerance equal), ``loop`` the plain eager per-class loop (the reference),
``compiled`` always compiled. The field is left out of the config dump (no hash change) while
it is ``auto``.

Inits (``init``): with ``factor > 1`` IDC always uses ``mix``: ``ipc x factor^2`` real images
per class, each resized (nearest) to a patch and tiled, patch k of image i from source
image ``k * ipc + i``. The source images are ``first`` (IDC: the first images of the class in
dataset order), ``kmeans_net`` (DREAM: the images nearest the centroids of a k-means over
the embedding of the distillation network), ``noise`` (N(0,1)/4 + 0.5, clamped), or any
coreset selector key (``random``, ``herding``, ``kcenter``, ``kmeans`` (extractor features),
``forgetting``).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from benchmark import augment as A
from benchmark.api import ComponentConfig, DistillMethod, register_method
from benchmark.data import RealData
from benchmark.distill import DistillLoop, images_state, restore_images_state
from benchmark.errors import ConfigError
from benchmark.fields import DsaStrategy, InitParams, init_name
from benchmark.gradmatch import (
    GMForward,
    match_class,
    matched_parameters,
    normalizer,
    resolve_forward,
    train_steps,
)
from benchmark.samplers import (
    CyclicBatches,
    RepresentativeConfig,
    RepresentativeSampler,
    make_class_sampler,
)
from benchmark.synset import Decode, SyntheticSet, multi_formation

from .dc import preset_provenance

_IDC = "snu-mllab/Efficient-Dataset-Condensation@ceac95a"

# misc/reproduce.py set_arguments (non-ImageNet) + argument.py tune_lr_img. base_size is the
# image size lr_img was tuned at: tune_lr_img uses 28 only for dataset == 'mnist' and 32 for
# everything else, so Fashion-MNIST (28 px) gets (28/32)^2 = 0.7656 (spec errata; DREAM's copy
# of both files is identical here).
SETTINGS = {
    "cifar10": {"metric": "mse", "lr_img_base": 5e-3, "n_data": 2000, "base_size": 32},
    "cifar100": {"metric": "mse", "lr_img_base": 5e-3, "n_data": 2000, "base_size": 32},
    "svhn": {"metric": "mse", "lr_img_base": 5e-3, "n_data": 500, "base_size": 32},
    "mnist": {"metric": "l1", "lr_img_base": 1e-4, "n_data": 500, "base_size": 28},
    "fashion_mnist": {"metric": "l1", "lr_img_base": 1e-4, "n_data": 500, "base_size": 32},
}

# data.py MEANS / STDS of the IDC and DREAM code: CIFAR-100 is normalised with the CIFAR-10
# constants (every other dataset with its own, which equal dbench's). ``norm_stats: official``.
OFFICIAL_NORM = {"cifar100": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))}


def official_setting(dataset: str, channels: int, repo: str = _IDC) -> tuple[dict, str]:
    if dataset in SETTINGS:
        return dict(SETTINGS[dataset]), f"{repo} misc/reproduce.py + argument.py --reproduce ({dataset})"
    row = "cifar10" if channels == 3 else "mnist"
    s = dict(SETTINGS[row])
    return s, f"{repo} misc/reproduce.py + argument.py --reproduce ({row} row: no official setting for {dataset})"


IDCInit = init_name("first", "kmeans_net", "noise", "real")  # initial_pixels' own inits; or any selector key


class IDCConfig(ComponentConfig):
    iterations: int = 2000  # outer iterations (niter); each runs inner_loop matching steps
    inner_loop: int = 100
    fix_iter: int = 1  # a fresh network every fix_iter outer iterations
    net_epoch: int = 1
    batch_real: int = 64
    batch_syn_max: int = 128
    factor: int = 2
    match: Literal["grad", "bidirectional"] = "grad"  # bidirectional: DREAM+ gradient + feature matching
    metric: Literal["mse", "l1", "l1_mean", "cos_rows"] | None = None  # None: per dataset
    match_fc: bool = False
    match_bias: bool = False
    lr_img: float | None = None  # None: lr_img_base x (ipc / 10) x (size / base_size)^2
    lr_img_base: float | None = None  # None: per dataset
    momentum_img: float = 0.5
    n_data: int | None = None  # real samples per network update (None: per dataset)
    net_lr: float = 0.01
    net_momentum: float = 0.9
    net_weight_decay: float = 5e-4
    aug_type: DsaStrategy | None = None  # None: color_crop_cutout (MNIST with factor > 1: color_crop)
    mixup_net: Literal["cut", "vanilla"] = "cut"
    mix_p: float | None = None  # None: 0.5 (MNIST with factor > 1: 0, no CutMix anywhere)
    init: IDCInit = "first"  # first | kmeans_net | noise | any selector key (random, herding, kcenter, kmeans, ...)
    init_params: InitParams = {}
    sampler: Literal["cyclic", "representative", "random"] = "cyclic"
    representative: RepresentativeConfig = RepresentativeConfig()
    warmup_epochs: float = 0.0  # real-data epochs for every new network before use (DREAM+: 1)
    warmup_batch: int = 128
    eval_every: int = 0  # intermediate evaluation (DREAM: every 40 iterations)
    log_every: int = 1
    checkpoint_every: int | None = 1  # outer iterations are expensive: checkpoint each one
    # Named deviations from the official code (docs/fidelity.md); the defaults are dbench's.
    # dataset: the dataset's own mean/std; official: the IDC/DREAM data.py table (CIFAR-100 with
    # CIFAR-10's constants) for matching and network updates. Evaluation always uses the dataset's.
    norm_stats: Literal["dataset", "official"] = "dataset"
    # True: the returned set is clamped to [0, 1]; False: the official code's final tensor (clamped
    # only at the start of each outer iteration), stored unclamped in normalised space.
    clamp_final: bool = True
    # representative images per centroid: distinct (dbench, no duplicates; per_cluster > 1 from the
    # centroid's own cluster) or topk (DREAM's query / DREAM+'s query_match: nearest over the class).
    representative_pick: Literal["distinct", "topk"] = "distinct"
    # auto: compiled real side + network updates on long runs (benchmark.gradmatch.resolve_forward); loop: the
    # plain reference loop. Not dumped (no hash change) while auto.
    forward: GMForward = Field("auto", exclude_if=lambda v: v == "auto")


def tile_patches(images: torch.Tensor, ipc: int, factor: int) -> torch.Tensor:
    """IDC ``mix`` init for one class: ``images`` [ipc * factor^2, C, H, W] -> [ipc, C, H, W];
    patch k (row-major) of synthetic image i is source image ``k * ipc + i`` resized (nearest)."""
    _, c, h, w = images.shape
    out = torch.empty(ipc, c, h, w, dtype=images.dtype, device=images.device)
    s, rem = h // factor, h % factor
    k, hl = 0, 0
    for i in range(factor):
        hr = s + 1 if i < rem else s
        wl = 0
        for j in range(factor):
            wr = s + 1 if j < rem else s
            out[:, :, hl:hl + hr, wl:wl + wr] = F.interpolate(images[k * ipc:(k + 1) * ipc], size=(hr, wr))
            wl += wr
            k += 1
        hl += hr
    return out


def class_steps(net, syn: torch.Tensor, opt: torch.optim.Optimizer, real: RealData, sampler, ipc: int, batch_real: int,
                batch_syn_max: int, decode: Decode, norm, aug_type: str, g_aug: torch.Generator, g_syn: torch.Generator,
                params, metric: str, bidirectional: bool = False, precision: str = "fp32", cl: bool = False,
                compiled: bool = False) -> torch.Tensor:
    """The matching half of one IDC inner step (step 3): for each class separately, its real
    batch and decoded synthetic images, normalised and augmented together (one IDC parameter
    set), the matching loss, one image step. Returns the summed (detached) loss."""
    k, dev = real.num_classes, syn.device
    labels = torch.zeros(ipc, dtype=torch.long)  # multi_formation only replicates them
    total = torch.zeros((), device=dev)
    for c in range(k):
        xr = real.pixels(sampler.indices(c, batch_real), dev)
        xs = multi_formation(syn[c * ipc:(c + 1) * ipc], labels, decode)[0]
        if xs.shape[0] > batch_syn_max:
            xs = xs[torch.randperm(xs.shape[0], generator=g_syn)[:batch_syn_max].to(dev)]
        x = A.apply(norm(torch.cat([xr, xs])), A.sample_idc(aug_type, 1, real.info.im_size, g_aug, siamese=True))
        n = xr.shape[0]
        loss = match_class(net, x[:n], x[n:], c, params, metric, bidirectional=bidirectional, precision=precision,
                           cl=cl, compiled=compiled)
        syn.grad = torch.autograd.grad(loss, syn)[0]  # images only: no network .grad
        opt.step()
        total += loss.detach()
    return total


@register_method
class IDC(DistillMethod):
    key = "idc"
    display_name = "IDC"
    description = "multi-formation (2x2) + per-class gradient matching on networks trained on real data"
    # 2: Fashion-MNIST lr_img uses base size 32 (was 28); new fields norm_stats, clamp_final,
    # representative_pick (defaults keep the old behaviour elsewhere)
    version = "2"
    REPO: ClassVar[str] = _IDC  # whose misc/reproduce.py the per-dataset settings are cited from
    SMOKE_PARAMS = {"inner_loop": 2, "n_data": 16, "batch_real": 8}
    Config = IDCConfig

    PRESETS = {
        "official": {"provenance": f"{_IDC} condense.py / argument.py --reproduce: niter 2000, inner_loop 100, "
                                   "batch_real 64, factor 2, mse (CIFAR/SVHN) or l1 ((Fashion-)MNIST), lr_img 5e-3 / "
                                   "1e-4 x ipc/10 x (size/base)^2 (base 28 for MNIST only, 32 else), "
                                   "n_data 2000 / 500, "
                                   "mixup_net cut, mix_p 0.5, init mix. Deviations (defaults; docs/fidelity.md): "
                                   "CIFAR-100 normalised with its own stats (norm_stats: official for CIFAR-10's), "
                                   "final set clamped to [0, 1] (clamp_final: false for the official unclamped one)"},
        "idc_i": {"factor": 1, "provenance": f"{_IDC} README (IDC-I: factor 1); evaluate with protocol idc_i"},
        "representative": {"sampler": "representative", "batch_real": 128,
                           "provenance": "no IDC code: IDC + DREAM's representative matching with IDC's first-k init "
                                         "(the DREAM+ Table 3 'representative matching alone' ablation); the same "
                                         "run as lyq312318224/DREAM@595e3c1 condense.py --match grad --f2_init random "
                                         "(factor 2) / --init random (factor 1)"},
    }

    # ------------------------------------------------------------------ resolution
    def resolved(self, ipc: int) -> dict:
        cfg, info = self.cfg, self.ctx.info
        row, src = official_setting(info.name, info.channels, self.REPO)
        mean, std = info.mean, info.std
        if cfg.norm_stats == "official":
            mean, std = OFFICIAL_NORM.get(info.name, (mean, std))
        mnist_multi = info.name == "mnist" and cfg.factor > 1
        size = info.im_size[0]
        base = cfg.lr_img_base if cfg.lr_img_base is not None else row["lr_img_base"]
        lr = cfg.lr_img if cfg.lr_img is not None else base * (ipc / 10) * (size / row["base_size"]) ** 2
        aug_type = cfg.aug_type or ("color_crop" if mnist_multi else "color_crop_cutout")
        net_ops = [o for o in A.parse_strategy(aug_type) if not (cfg.mixup_net == "cut" and o == "cutout")]
        return {
            "iterations": self.ctx.budget.iterations(cfg.iterations), "inner_loop": cfg.inner_loop,
            "metric": cfg.metric or row["metric"], "lr_img": lr, "n_data": cfg.n_data or row["n_data"],
            "aug_type": aug_type, "net_aug": "_".join(net_ops) or "none",
            "mix_p": cfg.mix_p if cfg.mix_p is not None else (0.0 if mnist_multi else 0.5),
            "norm_mean": list(mean), "norm_std": list(std),
            "forward": resolve_forward(cfg.forward, self.ctx.budget.iterations(cfg.iterations), self.ctx.device),
            "provenance": src,
        }

    # ------------------------------------------------------------------------- init
    def initial_pixels(self, real: RealData, ipc: int, net, g_init: torch.Generator) -> torch.Tensor:
        """[classes * ipc, C, H, W] in [0, 1] (class-major)."""
        cfg, ctx, info = self.cfg, self.ctx, real.info
        f = cfg.factor
        n_src = ipc * f * f
        k = real.num_classes
        if cfg.init == "noise":
            x = torch.randn(k * ipc, info.channels, *info.im_size, generator=g_init) / 4 + 0.5
            return x.clamp(0, 1)
        if cfg.init == "first":
            srcs = [real.pixels(real.class_indices[c][:n_src]) for c in range(k)]
        elif cfg.init == "kmeans_net":
            rs = RepresentativeSampler(real, cfg.representative.model_copy(update={"n": n_src, "per_cluster": 1}),
                                       n_src, g_init, ctx.device, ctx.precision, cfg.representative_pick)
            rs.refresh(net)
            srcs = [real.pixels(rs.indices(c)) for c in range(k)]
        else:  # any coreset selector: its normalised images, back to pixels
            from benchmark.init import init_synset

            s = init_synset(cfg.init, real, n_src, ctx, params=cfg.init_params or None)
            mean = torch.tensor(info.mean, device=s.images.device).view(1, -1, 1, 1)
            std = torch.tensor(info.std, device=s.images.device).view(1, -1, 1, 1)
            px = (s.images * std + mean).clamp(0, 1).cpu()
            srcs = list(px.split(n_src))
        if f == 1:
            return torch.cat(srcs)
        return torch.cat([tile_patches(x, ipc, f) for x in srcs])

    # ---------------------------------------------------------------------- distill
    def distill(self, real: RealData, ipc: int) -> SyntheticSet:
        ctx, cfg, info = self.ctx, self.cfg, real.info
        r = self.resolved(ipc)
        k, dev, prec, cl = real.num_classes, ctx.device, ctx.precision, ctx.channels_last
        compiled = r["forward"] == "compiled"
        key = self.key
        g = {s: ctx.generator(f"{key}/{s}") for s in ("init", "real", "aug", "syn", "train", "net")}
        norm = normalizer(r["norm_mean"], r["norm_std"], dev)
        decode = Decode(factor=cfg.factor, order="idc")
        if not cfg.clamp_final and any(s % cfg.factor for s in info.im_size):
            raise ConfigError(f"clamp_final: false stores the set normalised, which decodes like the official pixel "
                              f"set only when the image size {tuple(info.im_size)} "
                              f"is a multiple of factor {cfg.factor}.")

        def new_net(i: int):
            net = ctx.new_model(f"{key}/net/{i}").train()
            opt = torch.optim.SGD(net.parameters(), lr=cfg.net_lr, momentum=cfg.net_momentum,
                                  weight_decay=cfg.net_weight_decay)
            if cfg.warmup_epochs > 0:  # DREAM+: one full real epoch before the net is used
                warm = CyclicBatches([torch.arange(len(real))], cfg.warmup_batch, g["net"])
                train_steps(net, opt, lambda: self._real_batch(real, warm, dev, norm),
                            int(cfg.warmup_epochs * len(real)),
                            self._net_aug(r, info, g["net"]), g["net"], cutmix_p=r["mix_p"], precision=prec, cl=cl,
                            compiled=compiled)
            return net, opt

        net, opt_net = new_net(0)  # DREAM: the init network is also the first matching network
        syn = self.initial_pixels(real, ipc, net, g["init"]).to(dev).requires_grad_(True)
        labels = torch.arange(k).repeat_interleave(ipc)
        opt = torch.optim.SGD([syn], lr=r["lr_img"], momentum=cfg.momentum_img)
        sampler = make_class_sampler(cfg.sampler, real, g["real"], dev, batch=cfg.batch_real, rep=cfg.representative,
                                     precision=prec, pick=cfg.representative_pick, compiled=compiled)
        net_stream = CyclicBatches([torch.arange(len(real))], cfg.batch_real, g["train"])
        gens = {s: g[s] for s in ("real", "aug", "syn", "train", "net")}
        bi = cfg.match == "bidirectional"

        def state():
            return {**images_state(syn, opt, gens, sampler), **net_stream.state("net_stream"),
                    "net": {n: t.detach().cpu() for n, t in net.state_dict().items()}, "net_opt": opt_net.state_dict()}

        def restore(s):
            restore_images_state(s, syn, opt, gens, sampler)
            net_stream.restore(s, "net_stream")
            net.load_state_dict(s["net"])
            opt_net.load_state_dict(s["net_opt"])

        def snapshot():
            return self._result_set(syn, labels.clone(), decode, info)

        r_fp = {n: v for n, v in r.items() if n != "forward"}  # checkpoints from before the field keep resuming
        loop = DistillLoop(ctx, key, r["iterations"],
                           fingerprint=f"{key}/{self.version}/{cfg.model_dump_json()}/ipc{ipc}/{r_fp}",
                           eval_every=cfg.eval_every, log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every,
                           snapshot=snapshot)
        start = loop.resume(restore)
        net_aug = self._net_aug(r, info, g["train"])
        try:
            for it in loop.iterations(start):
                if it % cfg.fix_iter == 0 and it != 0:
                    net, opt_net = new_net(it)
                params = matched_parameters(net, metric=r["metric"], scope="conv", fc=cfg.match_fc, bias=cfg.match_bias)
                with torch.no_grad():
                    syn.clamp_(0, 1)
                loss_sum = torch.zeros((), device=dev)
                for ot in range(r["inner_loop"]):
                    sampler.observe(net, ot)
                    loss_sum += class_steps(net, syn, opt, real, sampler, ipc, cfg.batch_real, cfg.batch_syn_max,
                                            decode, norm, r["aug_type"], g["aug"], g["syn"], params, r["metric"], bi,
                                            prec, cl, compiled)
                    for _ in range(cfg.net_epoch):
                        train_steps(net, opt_net, lambda: self._real_batch(real, net_stream, dev, norm), r["n_data"],
                                    net_aug, g["train"], cutmix_p=r["mix_p"] if cfg.mixup_net == "cut" else 0.0,
                                    precision=prec, cl=cl, compiled=compiled)
                metrics = {"loss": loss_sum / (k * r["inner_loop"])}
                if cfg.sampler == "representative":
                    metrics["sampler_refresh_s"] = sampler.refresh_s
                loop.done(it, metrics, state)
        finally:
            loop.close()
        meta = {"resolved": r, "iterations": r["iterations"], "wall_s": loop.wall_s, "resumed_from": loop.resumed_from}
        if cfg.sampler == "representative":
            meta["sampler_refresh_s"] = sampler.refresh_s
        meta["provenance"] = preset_provenance(type(self), cfg)
        return self._result_set(syn, labels, decode, info, meta)

    def _result_set(self, syn: torch.Tensor, labels: torch.Tensor, decode: Decode, info, meta: dict | None = None):
        """The set handed to evaluation: pixels clamped to [0, 1] (``clamp_final``, dbench), or the
        official unclamped tensor, stored in normalised space with the dataset's constants (a
        pixel-space set is clamped when decoded). Per-channel normalisation commutes with the
        bilinear decode, so this decodes to the official pixel set's images, normalised."""
        with torch.no_grad():
            x = syn.detach().cpu().clone()
            if self.cfg.clamp_final:
                return SyntheticSet(x.clamp(0, 1), labels, info.name, info.mean, info.std, space="pixel",
                                    decode=decode, meta=meta or {})
            mean = torch.tensor(info.mean).view(1, -1, 1, 1)
            std = torch.tensor(info.std).view(1, -1, 1, 1)
            return SyntheticSet((x - mean) / std, labels, info.name, info.mean, info.std, space="normalized",
                                decode=decode, meta=meta or {})

    @staticmethod
    def _real_batch(real: RealData, stream: CyclicBatches, dev, norm):
        idx = stream.next()
        return norm(real.pixels(idx, dev)), real.labels[idx].to(dev)

    @staticmethod
    def _net_aug(r: dict, info, g: torch.Generator):
        if r["net_aug"] == "none":
            return None
        return lambda x: A.apply(x, A.sample_idc(r["net_aug"], x.shape[0], info.im_size, g, siamese=False))

