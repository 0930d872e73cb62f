"""Shared pieces of the gradient-matching family (DC, DSA, IDC, DREAM, DREAM+).

* :func:`matched_parameters` - which parameter tensors a method matches (DC: all of them,
  where its per-row cosine gives 1-D tensors zero weight, so they are skipped; IDC/DREAM:
  conv weights only unless ``fc`` / ``bias``).
* :func:`class_gradients` - CE gradient of one class batch w.r.t. those parameters: the real
  side detached (no graph), the synthetic side with ``create_graph=True`` (second-order
  backward through the synthetic images only). Optionally also returns the embedding of
  the same forward (DREAM+'s bidirectional matching reuses it).
* :func:`match_class` - the per-class matching loss (gradient distance, plus DREAM+'s
  feature term when ``bidirectional``).
* :func:`train_steps` / :func:`train_on_tensors` - the network updates between image
  steps: IDC's real-data ``train_epoch`` (``n_data`` samples, per-sample DSA, CutMix) and
  DC's epochs on the current synthetic set (DSA per sample for DSA, none for DC).
* :func:`freeze_bn_stats` - DC's BatchNorm handling (set running stats from a mixed real
  batch, then evaluate BN layers in eval mode). A no-op for InstanceNorm ConvNets.

All forwards run under the context's precision (bf16 autocast on CPU, AMP on CUDA) and
memory format; distances and gradients are reduced in fp32.

Forward modes (the methods' ``forward`` field, :func:`resolve_forward`): ``loop`` is the
reference per-class loop in eager mode. ``compiled`` is the same loop (same classes, same
order, same random draws) with the two costs that dominate an iteration ``torch.compile``d:
the real side of the matching (forward + first-order backward of ``batch_real`` images per
class; only the parameter gradients are taken) and the network updates (forward + backward
of a training batch). The synthetic side stays eager: it needs a double backward
(``create_graph``), which AOTAutograd does not compile. On CPU the compiled graphs fuse
InstanceNorm (GroupNorm(C, C)), ReLU and average pooling with their backwards, the ops that
take about half of the eager time (profile in benchmarks/bench_iter_gm.py). Compiled and eager
agree to float tolerance (kernel fusion reorders sums), not bitwise. ``auto`` (default) is
``compiled`` on CPU/CUDA when the run has at least :data:`COMPILE_MIN_ITERATIONS` iterations
(the one-off compile, ~30-60 s per process, pays back within a few iterations) and ``loop``
otherwise (tests, smoke runs, MPS). If compiling fails (e.g. no C++ compiler), a warning is
logged and the eager path runs.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from . import augment as A
from .losses import feature_distance, grad_distance
from .runtime import autocast, channels_last

log = logging.getLogger(__name__)

GMForward = Literal["auto", "compiled", "loop"]
COMPILE_MIN_ITERATIONS = 50


def resolve_forward(forward: str, iterations: int, device: torch.device | str) -> str:
    """The forward mode that runs: ``auto`` -> ``compiled`` on CPU/CUDA for runs of at least
    :data:`COMPILE_MIN_ITERATIONS` iterations, else ``loop``; explicit modes as given."""
    if forward != "auto":
        return forward
    dev = torch.device(device)
    return "compiled" if dev.type in ("cpu", "cuda") and iterations >= COMPILE_MIN_ITERATIONS else "loop"


def _logits(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return net(x)


def _embed(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return net.embed(x)


def _embed_logits(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    f = net.embed(x)
    return f, net.classifier(f)


class _CompiledOrEager:
    """``torch.compile(fn)`` (by default static shapes: the few batch sizes of a run each get
    their graph), built on first use and shared by every network of one architecture
    (parameters are graph inputs). Falls back to ``fn`` with one warning if compiling fails."""

    def __init__(self, fn: Callable, dynamic: bool | None = False):
        self.fn, self.dynamic, self.compiled, self.failed = fn, dynamic, None, False

    def __call__(self, *args):
        if self.failed:
            return self.fn(*args)
        if self.compiled is None:
            self.compiled = torch.compile(self.fn, dynamic=self.dynamic)
        try:
            return self.compiled(*args)
        except Exception as e:  # noqa: BLE001 - a missing compiler must not stop a run
            self.failed = True
            log.warning("gradient matching: torch.compile failed (%s: %s); running eager", type(e).__name__, e)
            return self.fn(*args)


def _low_precision_input(x: torch.Tensor, precision: str) -> torch.Tensor:
    """The compiled graphs' input: contiguous (DSA's crop returns permuted strides; each new
    stride pattern would be a recompile of the static-shape graph) and, under bf16/fp16
    autocast, already cast (autocast casts it for the first conv anyway: same values). Cast
    inside the graph, inductor hands the first conv's backward a 1-channel input whose strides
    mkldnn reads as channels-last: measured 4.2 s instead of ~0.3 s for MNIST's conv1 weight
    gradient (batch 256, bf16)."""
    if precision == "fp32" or not x.is_floating_point():
        return x.contiguous()
    dtype = torch.bfloat16 if (precision == "bf16" or x.device.type == "cpu") else torch.float16
    return x.to(dtype, memory_format=torch.contiguous_format)


@functools.cache
def compiled_logits() -> _CompiledOrEager:
    """Compiled ``net(x)`` (forward + backward): the network updates' training step."""
    return _CompiledOrEager(_logits)


@functools.cache
def compiled_embed_logits() -> _CompiledOrEager:
    """Compiled ``(net.embed(x), net.classifier(.))``: the real side of the matching."""
    return _CompiledOrEager(_embed_logits)


@functools.cache
def compiled_embed() -> _CompiledOrEager:
    """Compiled ``net.embed(x)`` (no grad): the representative sampler's embedding of every
    class image (dynamic batch: the last batch of each class differs)."""
    return _CompiledOrEager(_embed, dynamic=None)


def matched_parameters(net: nn.Module, *, metric: str, scope: str = "all", fc: bool = False,
                       bias: bool = False) -> list[nn.Parameter]:
    """``scope='all'`` (DC): every parameter, minus 1-D tensors when the metric ignores them
    (``ours``). ``scope='conv'`` (IDC): tensors with more than 2 dims, plus 2-D (fc) tensors if
    ``fc`` and 1-D tensors if ``bias`` (IDC ``matchloss``)."""
    out = []
    for p in net.parameters():
        if scope == "all":
            if metric == "ours" and p.ndim == 1:
                continue
        elif scope == "conv":
            if (p.ndim == 1 and not bias) or (p.ndim == 2 and not fc):
                continue
        else:
            raise ValueError(f"unknown parameter scope {scope!r}")
        out.append(p)
    return out


def class_gradients(net: nn.Module, x: torch.Tensor, label: int, params: Sequence[nn.Parameter], *,
                    create_graph: bool, precision: str = "fp32", cl: bool = False, features: bool = False,
                    compiled: bool = False) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """d CE(net(x), label) / d params. Detached unless ``create_graph``. With ``features``
    also returns ``net.embed(x)`` of the same forward (with a graph iff ``create_graph``).
    ``compiled`` (first-order only, ``create_graph=False``): the forward and its backward run
    as one compiled graph (``x`` should not require grad)."""
    y = torch.full((x.shape[0],), label, dtype=torch.long, device=x.device)
    with autocast(x.device, precision):  # type: ignore[arg-type]
        if compiled and not create_graph:
            f, out = compiled_embed_logits()(net, channels_last(_low_precision_input(x, precision), cl))
        else:
            f = net.embed(channels_last(x, cl))
            out = net.classifier(f)
    loss = F.cross_entropy(out.float(), y)
    g = torch.autograd.grad(loss, list(params), create_graph=create_graph)
    if not create_graph:
        g = tuple(t.detach() for t in g)
        f = f.detach()
    return list(g), (f if features else None)


def match_class(net: nn.Module, x_real: torch.Tensor, x_syn: torch.Tensor, label: int,
                params: Sequence[nn.Parameter], metric: str, *, bidirectional: bool = False,
                feature_metric: str | None = None, precision: str = "fp32", cl: bool = False,
                g_real: Sequence[torch.Tensor] | None = None, f_real: torch.Tensor | None = None,
                compiled: bool = False) -> torch.Tensor:
    """Matching loss of one class. ``g_real``/``f_real`` may be passed in when the real side
    was computed earlier (it does not depend on the synthetic images). ``compiled``: the real
    side runs compiled (the synthetic side always runs eager)."""
    if g_real is None:
        g_real, f_real = class_gradients(net, x_real.detach(), label, params, create_graph=False, precision=precision,
                                         cl=cl, features=bidirectional, compiled=compiled)
    g_syn, f_syn = class_gradients(net, x_syn, label, params, create_graph=True, precision=precision, cl=cl,
                                   features=bidirectional)
    loss = grad_distance(g_real, g_syn, metric)
    if bidirectional:
        assert f_real is not None and f_syn is not None
        loss = loss + feature_distance(f_real, f_syn, feature_metric or metric)
    return loss


def _step(net: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, g: torch.Generator,
          cutmix_p: float, precision: str, cl: bool, compiled: bool = False) -> torch.Tensor:
    mix = None
    if cutmix_p > 0 and float(torch.rand(1, generator=g)) < cutmix_p:  # CPU generator: no device sync
        x, perm, r = A.cutmix(x, g)
        mix = (perm.to(y.device), r)
    if compiled:
        fwd, x_in = compiled_logits(), _low_precision_input(x, precision)
    else:
        fwd, x_in = _logits, x
    with autocast(x.device, precision):  # type: ignore[arg-type]
        out = fwd(net, channels_last(x_in, cl)).float()
    loss = F.cross_entropy(out, y) if mix is None else (
        F.cross_entropy(out, y) * mix[1] + F.cross_entropy(out, y[mix[0]]) * (1 - mix[1]))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def train_steps(net: nn.Module, opt: torch.optim.Optimizer, next_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]],
                n_data: int, augment: Callable[[torch.Tensor], torch.Tensor] | None, g: torch.Generator, *,
                cutmix_p: float = 0.0, precision: str = "fp32", cl: bool = False, compiled: bool = False) -> int:
    """IDC ``train_epoch``: batches from ``next_batch`` (already normalised), augmented
    without a graph, CutMix with probability ``cutmix_p``, until at least ``n_data`` samples
    were seen. Returns the number of steps."""
    net.train()
    seen = steps = 0
    while seen < n_data:
        x, y = next_batch()
        if augment is not None:
            with torch.no_grad():
                x = augment(x)
        _step(net, opt, x, y, g, cutmix_p, precision, cl, compiled)
        seen += y.numel()
        steps += 1
    return steps


def train_on_tensors(net: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, epochs: int,
                     batch: int, g: torch.Generator, augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
                     precision: str = "fp32", cl: bool = False, compiled: bool = False) -> None:
    """DC's inner ``epoch('train', ...)`` on a (detached) synthetic set: shuffled batches,
    optional per-sample augmentation, plain CE."""
    net.train()
    n = y.numel()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g).to(x.device)
        for s in range(0, n, batch):
            idx = perm[s:s + batch]
            xb = x[idx]
            if augment is not None:
                with torch.no_grad():
                    xb = augment(xb)
            _step(net, opt, xb, y[idx], g, 0.0, precision, cl, compiled)


def has_batchnorm(net: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


@torch.no_grad()
def freeze_bn_stats(net: nn.Module, x_real: torch.Tensor, precision: str = "fp32", cl: bool = False) -> None:
    """DC step 2(a): one train-mode forward of a mixed real batch sets BN running statistics,
    then every BN layer is put in eval mode (frozen statistics) for the matching step."""
    if not has_batchnorm(net):
        return
    net.train()
    with autocast(x_real.device, precision):  # type: ignore[arg-type]
        net(channels_last(x_real, cl))
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def normalizer(mean: Sequence[float], std: Sequence[float], device) -> Callable[[torch.Tensor], torch.Tensor]:
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device).view(1, -1, 1, 1)
    return lambda x: (x - m) / s
