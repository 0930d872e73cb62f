"""DM: Dataset Condensation with Distribution Matching (Zhao & Bilen, WACV 2023).

Per iteration: a freshly initialised, frozen network (train mode); for every class, 256
random real images and the class's synthetic images get the same DSA transform; the loss
is the squared distance between the class means of the embeddings (linear-kernel MMD),
summed over classes; one SGD step (momentum 0.5) on the images. No inner loop.

Faithfulness notes (VICO-UoE/DatasetCondensation@53f63a6 ``main_DM.py``):

* ``forward='batched'`` (default) embeds all classes' real images together and all synthetic
  images in one forward. For InstanceNorm/GroupNorm ConvNets this equals the reference
  per-class loop (no batch-dependent layer); for BatchNorm nets it *is* the reference BN
  path (mixed-class batch statistics). On the CPU the real side runs in chunks of a few
  images (:func:`real_features`; BN still sees the whole batch's statistics): same math,
  ~1.5-2x faster than both one huge forward and the per-class loop (benchmarks/bench_iter_dm.py).
  ``forward='per_class'`` is the plain per-class loop, the reference kept selectable
  (lower memory; for BN nets it means per-class batch statistics, a named deviation).
  ``forward='compiled'`` is ``batched`` with the real-image forward ``torch.compile``d
  (same math; a one-off compile per process; opt in with ``params: {forward: compiled}``).
* ``aug_scope='class'`` (default) draws one DSA parameter set per class, as the reference
  re-seeds DiffAugment per class; ``'iteration'`` shares one set across all classes.
* ``lr_img=None`` / ``iterations=None`` resolve from the official per-setting values
  (:data:`SETTINGS`); the resolved values are stored in the synthetic set's metadata.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmark.api import DistillMethod, register_method
from benchmark.data import RealData
from benchmark.distill import ImageMatchingConfig, ImageMatchingRun, SiameseAug, activations, freeze
from benchmark.losses import mean_embedding_mmd
from benchmark.models import FeatureNet
from benchmark.runtime import autocast, channels_last, compiled_embed
from benchmark.samplers import ClassRandomSampler, RepresentativeConfig
from benchmark.synset import SyntheticSet

_VICO = "VICO-UoE/DatasetCondensation@53f63a6"

# Official per-setting values. lr_img: README (CIFAR-10: 1 for ipc 1/10/50, 10 for ipc >= 100;
# CIFAR-100: 1 up to ipc 125) and DM paper Sec. 3.1 (lr 1 for 1/10/50 ipc, 10 for 100+).
# Iterations: DM paper Sec. 3.1 (20k on MNIST/CIFAR, 10k on TinyImageNet/ImageNet-1K).
SETTINGS = {
    "iterations": {"tinyimagenet": 10000, "imagenet": 10000, "*": 20000},
    "provenance": f"{_VICO} main_DM.py + README; DM paper (WACV 2023) Sec. 3.1",
}


def official_lr_img(dataset: str, ipc: int) -> float:
    if dataset == "cifar100":
        return 1.0 if ipc <= 125 else 10.0
    return 1.0 if ipc <= 50 else 10.0


def official_iterations(dataset: str) -> int:
    return SETTINGS["iterations"].get(dataset, SETTINGS["iterations"]["*"])


@register_method
class DM(DistillMethod):
    key = "dm"
    display_name = "DM"
    description = "Distribution Matching: per-class mean-embedding MMD under random frozen ConvNets, Siamese DSA"
    version = "1"
    SMOKE_PARAMS = {"batch_real": 16}

    class Config(ImageMatchingConfig):
        # shared fields (ImageMatchingConfig, DM's defaults): iterations None (20000; 10000 for
        # TinyImageNet/ImageNet), lr_img None (1 for ipc <= 50, 10 above: README), momentum_img 0.5,
        # batch_real 256, init real, init_params, dsa, dsa_strategy, aug_scope, eval_every 0
        # (reference: 2000), log_every 10, checkpoint_every
        forward: Literal["batched", "per_class", "compiled"] = "batched"
        sampler: Literal["random", "representative"] = "random"  # representative: DREAM's k-means batches
        representative: RepresentativeConfig = RepresentativeConfig()

    PRESETS = {
        "official": {"provenance": f"{_VICO} main_DM.py defaults + README commands (lr_img 1 for ipc<=50, 10 above; "
                                   "momentum 0.5; batch_real 256; 20000 iterations; init real; DSA per dataset); "
                                   "DM paper Sec. 3.1"},
        "representative": {"sampler": "representative",
                           "provenance": "DREAM ablation: DM with representative (k-means) real batches "
                                         "(DREAM supp. Sec. 3; DREAM+ Sec. 4.4: >40x fewer iterations claimed); "
                                         "no official code: dbench's own combination of DM and DREAM's sampler"},
        "iteration_siamese": {"aug_scope": "iteration",
                              "provenance": "deviation: one DSA draw per iteration shared by all classes (the stated "
                                            "Siamese intent) instead of the reference's per-class seeds"},
    }

    # ------------------------------------------------------------------ resolution
    def resolved(self, ipc: int) -> dict:
        cfg, info = self.cfg, self.ctx.info
        return {
            "iterations": self.ctx.budget.iterations(cfg.iterations or official_iterations(info.name)),
            "lr_img": cfg.lr_img if cfg.lr_img is not None else official_lr_img(info.name, ipc),
            "dsa_strategy": (cfg.dsa_strategy or info.dsa_strategy) if cfg.dsa else "none",
        }

    # ---------------------------------------------------------------------- distill
    def distill(self, real: RealData, ipc: int) -> SyntheticSet:
        ctx, cfg = self.ctx, self.cfg
        r = self.resolved(ipc)
        k = real.num_classes
        run = ImageMatchingRun("dm", self.version, ctx, cfg, real, ipc, r)
        try:
            for it in run.loop.iterations(run.start):
                net = freeze(ctx.new_model(f"dm/net/{it}")).train()
                run.sampler.observe(net, it)
                loss = dm_loss(net, run.sampler, run.aug, run.syn, k, ipc, cfg.batch_real, cfg.forward, ctx.device,
                               ctx.precision, ctx.channels_last)
                run.step(loss, it, {"loss": loss.detach() / k})
        finally:
            run.loop.close()
        return run.result({"resolved": r, "provenance": SETTINGS["provenance"]})


# ------------------------------------------------------------------ fast real-image features
#
# Why the plain batched forward is slow on CPU (torch.profiler, benchmarks/bench_iter_dm.py): a
# ConvNet-3 forward of 2560 MNIST-shaped images materialises 1.3 GB per activation of block 1
# (2560 x 128 x 32 x 32 fp32), and every eager op (conv, norm, ReLU, pool) allocates and walks
# a fresh tensor of that size: fresh multi-MB allocations are page-faulted in, and nothing stays
# in cache between ops. avg_pool2d and group_norm then cost as much as the convolutions. Feeding
# the same images through in chunks of REAL_CHUNK images keeps every intermediate in L2 (and
# reuses the allocator's memory), which makes the no-grad real forward several times faster
# than both one big batch and the reference's 256-image per-class batches. fp32 chunks go
# channels_last (oneDNN's native layout: no reorders; +~15% measured); bf16 chunks stay NCHW
# (channels_last bf16 group_norm is slower on CPU).

REAL_CHUNK = 8
_SAMPLEWISE = (nn.Conv2d, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d, nn.Identity, nn.ReLU, nn.LeakyReLU,
               nn.Sigmoid, nn.SiLU, nn.GELU, nn.AvgPool2d, nn.MaxPool2d, nn.Flatten, nn.Linear)
_ACT = (nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.SiLU, nn.GELU)


def _flat_modules(net: nn.Module) -> list[nn.Module] | None:
    """The feature blocks of a DC-lineage net as one list of leaf modules, or ``None`` when a
    block holds anything the chunked path does not know to be per-sample (or train-mode BN)."""
    blocks = getattr(net, "blocks", None)
    if blocks is None or type(net).pool_out is not FeatureNet.pool_out:
        return None
    mods: list[nn.Module] = []
    for b in blocks:
        mods += list(b.children()) if isinstance(b, nn.Sequential) else [b]
    for m in mods:
        if isinstance(m, nn.Conv2d) and m.padding_mode != "zeros":
            return None
        if not (isinstance(m, (*_SAMPLEWISE, nn.BatchNorm2d)) or type(m).__name__ == "Swish"):
            return None
    return mods


def _conv_nhwc(m: nn.Conv2d, x: torch.Tensor, w_cl: torch.Tensor) -> torch.Tensor:
    """``m(x)`` with a channels_last result. A 1-channel input (MNIST's first conv) leaves oneDNN
    an ambiguous layout and a slow NCHW kernel with 128 outputs from 9 taps; as im2col + one
    matmul it writes NHWC directly (measured ~3x faster, same sums)."""
    if m.in_channels != 1 or m.groups != 1:
        return F.conv2d(x, w_cl, m.bias, m.stride, m.padding, m.dilation, m.groups)
    n, _, h, w = x.shape
    (kh, kw), (ph, pw), (sh, sw), (dh, dw) = m.kernel_size, m.padding, m.stride, m.dilation
    ho, wo = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    cols = F.unfold(x, (kh, kw), (dh, dw), (ph, pw), (sh, sw)).transpose(1, 2).reshape(n * ho * wo, kh * kw)
    wm = m.weight.reshape(m.out_channels, kh * kw).t().to(cols.dtype)
    out = torch.addmm(m.bias.to(cols.dtype), cols, wm) if m.bias is not None else cols @ wm
    return out.view(n, ho, wo, m.out_channels).permute(0, 3, 1, 2)


def _is_instance_norm(m: nn.Module) -> bool:
    return isinstance(m, nn.GroupNorm) and m.num_groups == m.num_channels


def _instance_norm_nhwc(m: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """``m(x)`` for GroupNorm(C, C) (the DC-lineage 'instancenorm') on a channels_last tensor
    with small maps: per image, a BatchNorm over the (H*W, C) rows (biased variance, the same
    normalisation). PyTorch's channels_last group_norm kernel is ~4-10x slower at 16x16 / 8x8."""
    n, c, h, w = x.shape
    v = x.permute(0, 2, 3, 1).reshape(n, h * w, c)
    out = torch.stack([torch.native_batch_norm(v[i], m.weight, m.bias, None, None, True, 0.0, m.eps)[0]
                       for i in range(n)])
    return out.view(n, h, w, c).permute(0, 3, 1, 2)


def _batch_stats_bn(m: nn.BatchNorm2d) -> bool:
    return m.training or m.running_mean is None


@torch.no_grad()
def real_features(net: nn.Module, x: torch.Tensor, device=None, precision: str = "fp32", chunk: int = REAL_CHUNK,
                  on_act=None, cl: bool | None = None) -> torch.Tensor:
    """``net.embed(x)`` without a graph (the frozen net's real-image side), computed in chunks of
    ``chunk`` images on the CPU. Same math as one forward of the whole batch: per-sample layers
    (conv, instance/group norm, activations, pooling) run chunk by chunk; a train-mode BatchNorm
    normalises with the statistics of the **whole** batch (mean and biased variance over every
    image, computed from the full pre-BN tensor), exactly as a single forward does - so BN nets
    keep the mixed-class batch statistics of the reference. (The BN running buffers are not
    updated: the frozen nets that call this are fresh per iteration and never read them.)

    ``on_act(i, a)``, if given, is called per chunk with the output of the i-th activation layer
    (DataDAM's attention maps are reduced chunk by chunk instead of keeping the activations).
    Falls back to one plain forward on GPUs, for tiny batches and for unknown architectures."""
    device = device or x.device
    mods = _flat_modules(net)
    if mods is None or chunk <= 0 or device.type != "cpu" or x.shape[0] <= chunk:
        with autocast(device, precision):  # type: ignore[arg-type]
            if on_act is None:
                return net.embed(x)
            acts, emb = activations(net, x)
        for i, a in enumerate(acts):
            on_act(i, a)
        return emb
    if cl is None:
        cl = precision == "fp32" and x.ndim == 4
    # segments split at batch-statistics BN layers: each segment's output is materialised in full
    segments: list[list[nn.Module]] = [[]]
    for m in mods:
        if isinstance(m, nn.BatchNorm2d) and _batch_stats_bn(m) and segments[-1]:
            segments.append([])
        segments[-1].append(m)
    # channels_last convolutions: the weights are converted once per call (the net is not touched)
    w_cl = {id(m): m.weight.contiguous(memory_format=torch.channels_last)
            for m in mods if cl and isinstance(m, nn.Conv2d)}
    is_act = [isinstance(m, _ACT) or type(m).__name__ == "Swish" for m in mods]
    n_act, pos = 0, 0
    bn = None  # (scale, shift) of the BN that starts the current segment: whole-batch statistics
    with autocast(device, precision):  # type: ignore[arg-type]
        for si, seg in enumerate(segments):
            last = si == len(segments) - 1
            nxt = None if last else segments[si + 1][0]
            stats = []  # per-chunk (count, mean, biased var) of this segment's output, for the next BN
            outs = []
            for xc in x.split(chunk):
                xc = channels_last(xc, cl)
                k = n_act
                for j, m in enumerate(seg):
                    if j == 0 and bn is not None:
                        xc = torch.addcmul(bn[1].to(xc.dtype), xc, bn[0].to(xc.dtype))
                    elif id(m) in w_cl:
                        xc = _conv_nhwc(m, xc, w_cl[id(m)])
                    elif cl and _is_instance_norm(m) and xc.shape[-1] * xc.shape[-2] <= 256:
                        xc = _instance_norm_nhwc(m, xc)
                    else:
                        xc = m(xc)
                    if on_act is not None and is_act[pos + j]:
                        on_act(k, xc)
                        k += 1
                if nxt is not None:  # native_batch_norm's statistics (fast; var_mean is not on CPU)
                    _, mu, invstd = torch.native_batch_norm(xc.float(), None, None, None, None, True, 0.0, nxt.eps)
                    stats.append((xc.shape[0], mu, invstd.pow(-2) - nxt.eps))
                outs.append(torch.flatten(xc, 1) if last else xc)
            n_act += sum(is_act[pos:pos + len(seg)])
            pos += len(seg)
            x = torch.cat(outs)
            if nxt is not None:
                n = torch.tensor([float(c) for c, _, _ in stats], device=x.device).view(-1, 1) / x.shape[0]
                mus = torch.stack([mu for _, mu, _ in stats])
                mean = (n * mus).sum(0)
                var = (n * (torch.stack([v for _, _, v in stats]) + (mus - mean) ** 2)).sum(0)
                scale = torch.rsqrt(var + nxt.eps)
                if nxt.weight is not None:
                    scale = scale * nxt.weight
                shift = -mean * scale + (nxt.bias if nxt.bias is not None else 0.0)
                bn = (scale.view(1, -1, 1, 1), shift.view(1, -1, 1, 1))
    return x


def dm_loss(net, sampler: ClassRandomSampler, aug: SiameseAug, syn: torch.Tensor, k: int, ipc: int, batch_real: int,
            forward: str = "batched", device=None, precision: str = "fp32", cl: bool = False) -> torch.Tensor:
    """The DM objective for one iteration (sum over classes). Draws real images and DSA
    parameters from the sampler/aug generators in class order, so both forward modes
    consume identical random numbers. ``batched``: the real images of all classes through
    :func:`real_features` (chunked, same math as one forward), the synthetic images in one
    forward; ``compiled``: the real forward ``torch.compile``d instead; ``per_class``: the
    plain per-class reference loop."""
    device = device or syn.device
    params = aug.sample(k)
    if forward in ("batched", "compiled"):
        real = sampler.many(batch_real)
        xr = channels_last(SiameseAug.apply(real, params), cl)
        xs = channels_last(SiameseAug.apply(syn, params), cl)
        if forward == "compiled":
            with autocast(device, precision), torch.no_grad():  # type: ignore[arg-type]
                fr = compiled_embed()(net, xr)
        else:
            fr = real_features(net, xr, device, precision)
        with autocast(device, precision):  # type: ignore[arg-type]
            fs = net.embed(xs)
        return mean_embedding_mmd(fr, fs, k)
    loss = torch.zeros((), device=device)
    m = sampler.per_class_count(batch_real)
    for c in range(k):
        real = sampler(c, batch_real)[:m]
        xr = channels_last(SiameseAug.apply(real, [params[c]]), cl)
        xs = channels_last(SiameseAug.apply(syn[c * ipc:(c + 1) * ipc], [params[c]]), cl)
        with autocast(device, precision):  # type: ignore[arg-type]
            with torch.no_grad():
                fr = net.embed(xr)
            fs = net.embed(xs)
        loss = loss + mean_embedding_mmd(fr, fs, 1)
    return loss
