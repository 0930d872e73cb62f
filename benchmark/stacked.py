"""The stacked evaluation engine: the K evaluation networks of one cell (same architecture,
different seeds) trained in lockstep and scored in one pass over the test set.

Semantics are the one-at-a-time loop's (:func:`benchmark.evaluate.train_model`), network by
network: each keeps its own initial weights (``make_generator(seed, "init")``) and its own
training generator (``make_generator(seed, "train")``), which draws the same sequence in the
same order as the loop (per epoch a ``randperm``; per batch the augmentation parameters, then
the CutMix decision ``torch.rand(1)`` and, if taken, the CutMix draws). SGD (momentum, weight
decay) is elementwise, so one optimizer over all K networks' parameters takes the K loop steps;
``halfstep_reset`` re-creates it, ``multistep`` scales its lr. What is shared: the step loop,
one batched application of the (per-sample) DSA/IDC augmentation over the K batches, one
optimizer call, and each test batch read once for all K networks.

Two compute kernels (same math):

* ``split``: every network runs its own forward/backward (its own module: any architecture,
  BatchNorm included, timm too) inside the shared step. Measured fastest on the CPU: at
  ConvNet-3 sizes a step is compute-bound (convolution ~60%, norm/pool/ReLU the rest), and
  oneDNN's per-network convolutions beat both grouped convolutions and ``torch.func.vmap``
  (K=10, MNIST batch 10, fp32, 1 thread: loop 1118 ms, grouped 1267 ms, vmap 1685 ms per
  10 fwd+bwd; CIFAR batch 100: 7198 / 10619 / 15362 ms; bf16 batch 10: 323 / 324 / 896 ms).
  With T > 1 intra-op threads the networks run in min(T, K) worker threads of one intra-op
  thread each (:func:`network_pool`): small convolutions scale poorly across threads,
  independent networks scale well (benchmarks/bench_stacked.py, 2 threads: 1.2-6x the loop).
* ``wide``: the ConvNet family as one grouped network: the K batches stacked on the channel
  axis ``[B, K*C, H, W]``, convolutions with ``groups=K``, instance norm as
  ``GroupNorm(K*C, K*C)``, group norm as ``GroupNorm(K*g, K*C)``, ``BatchNorm2d(K*C)``
  (per-channel, so per-network batch and running statistics), layer norm as
  ``GroupNorm(K, K*C)`` with the elementwise affine, the heads as a block-diagonal einsum. One
  kernel launch per layer for all K networks: the choice on CUDA, where launches dominate.

Architectures the engine cannot run exactly fall back to the loop with a one-line logged reason
(:func:`unsupported_reason`): today fp16 with a GradScaler (its inf-skip would be shared by the
group) and a single network.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import augment as A
from .models import ARCHS, ConvNet, Swish, canonical_arch, create_model
from .runtime import autocast, channels_last
from .seed import make_generator

if TYPE_CHECKING:
    from .data import DatasetInfo, RealData
    from .evaluate import EvalProtocol, ModelResult, TrainSettings
    from .progress import Progress

log = logging.getLogger("dbench.evaluate")

ENGINES = ("stacked", "loop")
KERNELS = ("auto", "split", "wide")


class Unstackable(Exception):
    """A network the wide kernel cannot express."""


# ------------------------------------------------------------------------------ wide kernel


class _WideLayerNorm(nn.Module):
    """K LayerNorm([C, H, W]) as GroupNorm(K, K*C) plus the elementwise affine."""

    def __init__(self, lns: Sequence[nn.LayerNorm]):
        super().__init__()
        self.k, self.eps = len(lns), lns[0].eps
        self.weight = nn.Parameter(torch.cat([m.weight.detach() for m in lns]).clone())
        self.bias = nn.Parameter(torch.cat([m.bias.detach() for m in lns]).clone())

    def forward(self, x):
        return F.group_norm(x, self.k, None, None, self.eps) * self.weight + self.bias


def _cat(ts) -> nn.Parameter:
    return nn.Parameter(torch.cat([t.detach() for t in ts]).clone())


def _widen(ms: Sequence[nn.Module]) -> nn.Module:
    m, k = ms[0], len(ms)
    if isinstance(m, nn.Conv2d):
        if m.groups != 1 or m.padding_mode != "zeros":
            raise Unstackable(f"{type(m).__name__} with groups/padding_mode")
        w = nn.Conv2d(k * m.in_channels, k * m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
                      groups=k, bias=m.bias is not None, device=m.weight.device)
        w.weight = _cat(c.weight for c in ms)
        if m.bias is not None:
            w.bias = _cat(c.bias for c in ms)
        return w
    if isinstance(m, nn.GroupNorm):
        w = nn.GroupNorm(k * m.num_groups, k * m.num_channels, m.eps, m.affine, device=m.weight.device)
        if m.affine:
            w.weight, w.bias = _cat(c.weight for c in ms), _cat(c.bias for c in ms)
        return w
    if isinstance(m, nn.BatchNorm2d):
        if not (m.affine and m.track_running_stats) or m.momentum is None:
            raise Unstackable("BatchNorm2d without affine/running stats/momentum")
        w = nn.BatchNorm2d(k * m.num_features, m.eps, m.momentum, device=m.weight.device)
        w.weight, w.bias = _cat(c.weight for c in ms), _cat(c.bias for c in ms)
        with torch.no_grad():
            w.running_mean.copy_(torch.cat([c.running_mean for c in ms]))
            w.running_var.copy_(torch.cat([c.running_var for c in ms]))
            w.num_batches_tracked.copy_(m.num_batches_tracked)
        return w
    if isinstance(m, nn.LayerNorm):
        if not m.elementwise_affine or m.bias is None:
            raise Unstackable("LayerNorm without affine")
        return _WideLayerNorm(ms)  # type: ignore[arg-type]
    if isinstance(m, (nn.Identity, nn.ReLU, nn.Sigmoid, nn.LeakyReLU, Swish, nn.AvgPool2d, nn.MaxPool2d)):
        return copy.deepcopy(m)  # stateless, elementwise or per channel
    raise Unstackable(f"layer {type(m).__name__}")


def _split(w: torch.Tensor, k: int, K: int) -> torch.Tensor:
    n = w.shape[0] // K
    return w[k * n:(k + 1) * n]


class WideConvNet(nn.Module):
    """K :class:`~benchmark.models.ConvNet` of one shape as one grouped network.

    ``forward(xs)``: ``xs`` [K, B, C, H, W] (network k's own batch) -> logits [K, B, classes].
    ``forward_shared(x)``: one batch [B, C, H, W] for all K (scoring): the first convolution
    runs ungrouped with the K weight sets concatenated, so the input is never repeated."""

    def __init__(self, nets: Sequence[nn.Module]):
        super().__init__()
        if not nets or not all(type(n) is ConvNet for n in nets):
            raise Unstackable("not a ConvNet")
        self.K = len(nets)
        blocks = []
        for bi, block in enumerate(nets[0].blocks):  # type: ignore[union-attr]
            blocks.append(nn.Sequential(*[_widen([n.blocks[bi][li] for n in nets])  # type: ignore[index]
                                          for li in range(len(block))]))
        self.blocks = nn.ModuleList(blocks)
        if not isinstance(blocks[0][0], nn.Conv2d):
            raise Unstackable("first layer is not a convolution")
        self.head_w = nn.Parameter(torch.stack([n.classifier.weight.detach() for n in nets]).clone())  # type: ignore
        self.head_b = nn.Parameter(torch.stack([n.classifier.bias.detach() for n in nets]).clone())  # type: ignore

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        h = h.reshape(h.shape[0], self.K, -1)  # [B, K, C*h*w]: network k's flattened features
        out = torch.einsum("bkf,kof->bko", h, self.head_w.to(h.dtype)) + self.head_b.to(h.dtype)
        return out.transpose(0, 1)  # [K, B, O]

    def forward(self, xs: torch.Tensor, cl: bool = False) -> torch.Tensor:
        K, B = xs.shape[:2]
        h = channels_last(xs.transpose(0, 1).reshape(B, K * xs.shape[2], *xs.shape[3:]), cl)
        for b in self.blocks:
            h = b(h)
        return self._head(h)

    def forward_shared(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.blocks[0][0]
        h = F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation)
        h = self.blocks[0][1:](h)
        for b in self.blocks[1:]:
            h = b(h)
        return self._head(h)

    @torch.no_grad()
    def write_back(self, nets: Sequence[nn.Module]) -> None:
        """Copy network k's slice of every parameter and buffer into ``nets[k]``."""
        K = self.K
        for bi, wblock in enumerate(self.blocks):
            for li, wm in enumerate(wblock):
                for k, n in enumerate(nets):
                    m = n.blocks[bi][li]  # type: ignore[index]
                    for name, t in list(wm.named_parameters(recurse=False)) + list(wm.named_buffers(recurse=False)):
                        dst = getattr(m, name)
                        dst.copy_(t if name == "num_batches_tracked" else _split(t, k, K).view_as(dst))
        for k, n in enumerate(nets):
            n.classifier.weight.copy_(self.head_w[k])  # type: ignore[union-attr]
            n.classifier.bias.copy_(self.head_b[k])  # type: ignore[union-attr]


def wide_reason(arch: str, info: DatasetInfo) -> str | None:
    """Why ``arch`` has no wide kernel (None: it has one)."""
    if arch.startswith("timm:"):
        return "timm network"
    build = ARCHS[canonical_arch(arch)].build
    try:
        with torch.device("meta"):  # shapes only: no storage, no draw from any generator
            WideConvNet([build(info.channels, info.num_classes, tuple(info.im_size)) for _ in range(2)])
    except Unstackable as e:
        return str(e)
    return None


# ---------------------------------------------------------------------------- the engine


def unsupported_reason(arch: str, settings: TrainSettings, n_networks: int) -> str | None:
    """Why the stacked engine does not run these networks (None: it does)."""
    if n_networks < 2:
        return None if n_networks == 1 else "no network to train"
    if settings.precision == "fp16" and settings.device.type == "cuda":
        return "fp16 GradScaler skips a step on inf per network; a shared scaler would skip it for the whole group"
    return None


def choose_kernel(arch: str, info: DatasetInfo, settings: TrainSettings) -> str:
    """``settings.stack_kernel``, or for 'auto': wide on CUDA for the ConvNet family, else split."""
    want = settings.stack_kernel
    if want == "split" or (want == "auto" and settings.device.type != "cuda"):
        return "split"
    reason = wide_reason(arch, info)
    if want == "wide":
        if reason is not None:
            log.warning("stacked engine: no wide kernel for %s (%s): per-network kernels (split) used", arch, reason)
            return "split"
        return "wide"
    return "wide" if reason is None else "split"


def cutmix_draw(n: int, h: int, w: int, g: torch.Generator, beta: float = 1.0):
    """The draws of :func:`benchmark.augment.cutmix`, in its order, without the images:
    (permutation, box (y1, y2, x1, x2), kept-area ratio r)."""
    lam = A._beta(beta, g)
    perm = torch.randperm(n, generator=g)
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = int(torch.randint(h, (1,), generator=g)), int(torch.randint(w, (1,), generator=g))
    y1, y2 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x1, x2 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    return perm, (y1, y2, x1, x2), 1.0 - (y2 - y1) * (x2 - x1) / (h * w)


def _signature(params: A.AugParams) -> tuple:
    return tuple((op, tuple(sorted(p))) for op, p in params.steps)


def apply_grouped(xs: list[torch.Tensor], params: list[A.AugParams | None]) -> list[torch.Tensor]:
    """Apply each network's sampled augmentation; networks whose op sequences agree go through
    one :func:`benchmark.augment.apply` call over their concatenated batches (every op's
    parameters are per sample, so concatenation changes nothing)."""
    out = list(xs)
    groups: dict[tuple, list[int]] = {}
    for k, p in enumerate(params):
        if p is not None and p.steps:
            groups.setdefault(_signature(p), []).append(k)
    for ks in groups.values():
        if len(ks) == 1:
            out[ks[0]] = A.apply(xs[ks[0]], params[ks[0]])  # type: ignore[arg-type]
            continue
        steps = [(op, {key: torch.cat([params[k].steps[i][1][key] for k in ks])  # type: ignore[union-attr]
                       for key in p}) for i, (op, p) in enumerate(params[ks[0]].steps)]  # type: ignore[union-attr]
        y = A.apply(torch.cat([xs[k] for k in ks]), A.AugParams(steps))
        for k, part in zip(ks, y.split([xs[k].shape[0] for k in ks])):
            out[k] = part
    return out


def train_stacked(
    source, protocol: EvalProtocol, arch: str, info: DatasetInfo, test: RealData, seeds: Sequence[int],
    indices: Sequence[int], settings: TrainSettings, progress: Progress, label: str = "eval",
    models_out: list | None = None,
) -> list[ModelResult]:
    """Train the networks ``seeds`` (model indices ``indices``) in lockstep with ``protocol``
    (already resolved) and score them in one pass over ``test``. ``train_time_s`` and
    ``test_time_s`` of each result are the group's times divided by K (they ran together).
    ``models_out``: a list that receives the K trained networks (tests)."""
    kernel = choose_kernel(arch, info, settings)
    pool = network_pool(len(seeds), settings.device) if kernel == "split" and not settings.compile else None
    try:
        return _train_stacked(source, protocol, arch, info, test, seeds, indices, settings, progress, label,
                              models_out, kernel, pool)
    finally:
        if pool is not None:
            pool.shutdown()


def _train_stacked(source, protocol, arch, info, test, seeds, indices, settings, progress, label, models_out,
                   kernel: str, pool: ThreadPoolExecutor | None) -> list[ModelResult]:
    from .evaluate import ModelResult, _make_opt, end_of_epoch, sample_augmentation

    p, dev, K = protocol, settings.device, len(seeds)
    models = [create_model(arch, info, make_generator(s, "init")).to(dev) for s in seeds]
    gens = [make_generator(s, "train") for s in seeds]
    cl = settings.channels_last
    wide: WideConvNet | None = None
    if kernel == "wide":
        wide = WideConvNet(models).to(dev)
        if cl:
            wide = wide.to(memory_format=torch.channels_last)
        params = list(wide.parameters())
        wide_fwd = torch.compile(wide) if settings.compile else wide
        wide.train()
    else:
        if cl:
            models = [m.to(memory_format=torch.channels_last) for m in models]
        fwds = [torch.compile(m) if settings.compile else m for m in models]
        params = [q for m in models for q in m.parameters()]
        for m in models:
            m.train()
    lr = p.lr
    opt = _make_opt(params, p, lr)
    n, E, bs = len(source), p.epochs, p.batch_size
    steps_per_epoch = -(-n // bs)
    n_epochs = E + 1 if p.extra_epoch else E
    total_steps = n_epochs * steps_per_epoch
    if settings.max_steps is not None:
        total_steps = min(total_steps, settings.max_steps)
    milestones = {int(m * E) for m in p.milestones} if p.schedule == "multistep" else set()
    bar = progress.task(f"{label} models {','.join(map(str, indices))} (stacked)", total_steps)
    loss_sum = torch.zeros(K, device=dev)
    loss_n = step = 0
    t0 = time.perf_counter()
    for ep in range(n_epochs):
        perms = [torch.randperm(n, generator=g) for g in gens]
        loss_sum.zero_()
        loss_n = 0
        for s in range(0, n, bs):
            if step >= total_steps:
                break
            xs, ys = zip(*(source.batch(perm[s:s + bs], dev) for perm in perms))
            xs, ys = list(xs), list(ys)
            aug: list[A.AugParams | None] = [None] * K
            mixes: list = [None] * K
            b = ys[0].shape[0]
            for k, g in enumerate(gens):  # each network's draws, in the loop's order
                xs[k], aug[k] = sample_augmentation(xs[k], p, info, g)  # the loop's dispatch and draws
                if p.cutmix_p > 0 and float(torch.rand(1, generator=g)) < p.cutmix_p:
                    mixes[k] = cutmix_draw(b, xs[k].shape[2], xs[k].shape[3], g)
            xs = apply_grouped(xs, aug)
            for k, mix in enumerate(mixes):
                if mix is not None:
                    perm_mix, (y1, y2, x1, x2), _ = mix
                    xk = xs[k].clone()
                    xk[:, :, y1:y2, x1:x2] = xk[perm_mix.to(dev), :, y1:y2, x1:x2]
                    xs[k] = xk
            opt.zero_grad(set_to_none=True)
            if wide is not None:
                X, Y = torch.stack(xs), torch.stack(ys)
                with autocast(dev, settings.precision):
                    out = wide_fwd(X, cl)
                    ce = F.cross_entropy(out.reshape(K * b, -1), Y.reshape(-1), reduction="none").view(K, b).mean(1)
                    if any(m is not None for m in mixes):
                        ar = torch.arange(b)
                        pm = torch.stack([ar if m is None else m[0] for m in mixes]).to(dev)
                        w = torch.tensor([1.0 if m is None else m[2] for m in mixes], device=dev)
                        ce2 = F.cross_entropy(out.reshape(K * b, -1), Y.gather(1, pm).reshape(-1),
                                              reduction="none").view(K, b).mean(1)
                        losses = ce * w + ce2 * (1 - w)
                    else:
                        losses = ce
                losses.sum().backward()
                loss_sum += losses.detach().float()
            else:
                def fwd_bwd(fwd, x, y, mix):  # one network's forward/backward: the loop's exact math
                    with autocast(dev, settings.precision):
                        out = fwd(channels_last(x, cl))
                        if mix is None:
                            loss = F.cross_entropy(out, y)
                        else:
                            loss = (F.cross_entropy(out, y) * mix[2]
                                    + F.cross_entropy(out, y[mix[0].to(dev)]) * (1 - mix[2]))
                    loss.backward()
                    return loss.detach().float()

                loss_sum += torch.stack(list((pool.map if pool else map)(fwd_bwd, fwds, xs, ys, mixes)))
            opt.step()
            loss_n += 1
            step += 1
            bar.advance()
        if step >= total_steps:
            break
        opt, lr = end_of_epoch(opt, params, p, ep, lr, milestones)
    train_time = time.perf_counter() - t0
    bar.close()
    t1 = time.perf_counter()
    if wide is not None:
        accs = test_accuracies_wide(wide, test, settings)
        if models_out is not None:
            wide.write_back(models)
    else:
        accs = test_accuracies(fwds, test, settings, pool=pool)
    test_time = time.perf_counter() - t1
    if models_out is not None:
        models_out.extend(models)
    losses_mean = (loss_sum / max(loss_n, 1)).tolist()
    return [ModelResult(i, s, a, lo, train_time / K, test_time / K, step, engine="stacked",
                        kernel=kernel)
            for i, s, a, lo in zip(indices, seeds, accs, losses_mean)]


def network_pool(K: int, device: torch.device) -> ThreadPoolExecutor | None:
    """On the CPU with T > 1 intra-op threads: min(T, K) worker threads of one intra-op thread
    each, one network's forward/backward per task (small convolutions scale poorly across
    threads; independent networks scale well). Same math per network; None: run in order."""
    n = min(torch.get_num_threads(), K)
    if device.type != "cpu" or n < 2:
        return None
    return ThreadPoolExecutor(n, initializer=torch.set_num_threads, initargs=(1,))


def test_accuracies(models: Sequence[nn.Module], test: RealData, s: TrainSettings, batch_size: int = 1000,
                    pool: ThreadPoolExecutor | None = None) -> list[float]:
    """Accuracy (percent) of each network, each test batch read once for all of them
    (``pool``: the networks of a batch run in its worker threads)."""
    for m in models:
        m.eval()

    @torch.no_grad()  # grad mode and autocast are per thread: set inside the task
    def hits(m, x, y):
        with autocast(s.device, s.precision):
            return (m(x).argmax(1) == y).sum()

    correct = torch.zeros(len(models), dtype=torch.long, device=s.device)
    for x, y in test.iter_batches(batch_size, s.device):
        x = channels_last(x, s.channels_last)
        n = len(models)
        correct += torch.stack(list((pool.map if pool else map)(hits, models, [x] * n, [y] * n)))
    for m in models:
        m.train()
    return [100.0 * c / len(test) for c in correct.tolist()]


@torch.no_grad()
def test_accuracies_wide(wide: WideConvNet, test: RealData, s: TrainSettings, batch_size: int = 1000) -> list[float]:
    """Accuracy of each of the wide network's K members: one stacked forward per test batch
    (batches of ``batch_size / K`` images: a wide activation holds K networks' channels)."""
    wide.eval()
    correct = torch.zeros(wide.K, dtype=torch.long, device=s.device)
    for x, y in test.iter_batches(max(1, batch_size // wide.K), s.device):
        with autocast(s.device, s.precision):
            out = wide.forward_shared(channels_last(x, s.channels_last))
        correct += (out.argmax(-1) == y).sum(1)
    wide.train()
    return [100.0 * c / len(test) for c in correct.tolist()]


__all__ = ["ENGINES", "KERNELS", "WideConvNet", "train_stacked", "test_accuracies", "test_accuracies_wide",
           "unsupported_reason", "choose_kernel", "cutmix_draw", "apply_grouped"]
