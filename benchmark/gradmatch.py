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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import augment as A
from .losses import feature_distance, grad_distance
from .runtime import autocast, channels_last


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
                    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """d CE(net(x), label) / d params. Detached unless ``create_graph``. With ``features``
    also returns ``net.embed(x)`` of the same forward (with a graph iff ``create_graph``)."""
    y = torch.full((x.shape[0],), label, dtype=torch.long, device=x.device)
    with autocast(x.device, precision):  # type: ignore[arg-type]
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
                g_real: Sequence[torch.Tensor] | None = None, f_real: torch.Tensor | None = None) -> torch.Tensor:
    """Matching loss of one class. ``g_real``/``f_real`` may be passed in when the real side
    was computed earlier (it does not depend on the synthetic images)."""
    if g_real is None:
        g_real, f_real = class_gradients(net, x_real, label, params, create_graph=False, precision=precision, cl=cl,
                                         features=bidirectional)
    g_syn, f_syn = class_gradients(net, x_syn, label, params, create_graph=True, precision=precision, cl=cl,
                                   features=bidirectional)
    loss = grad_distance(g_real, g_syn, metric)
    if bidirectional:
        assert f_real is not None and f_syn is not None
        loss = loss + feature_distance(f_real, f_syn, feature_metric or metric)
    return loss


def _step(net: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, g: torch.Generator,
          cutmix_p: float, precision: str, cl: bool) -> torch.Tensor:
    mix = None
    if cutmix_p > 0 and float(torch.rand(1, generator=g)) < cutmix_p:
        x, perm, r = A.cutmix(x, g)
        mix = (perm.to(y.device), r)
    with autocast(x.device, precision):  # type: ignore[arg-type]
        out = net(channels_last(x, cl)).float()
    loss = F.cross_entropy(out, y) if mix is None else (
        F.cross_entropy(out, y) * mix[1] + F.cross_entropy(out, y[mix[0]]) * (1 - mix[1]))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def train_steps(net: nn.Module, opt: torch.optim.Optimizer, next_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]],
                n_data: int, augment: Callable[[torch.Tensor], torch.Tensor] | None, g: torch.Generator, *,
                cutmix_p: float = 0.0, precision: str = "fp32", cl: bool = False) -> int:
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
        _step(net, opt, x, y, g, cutmix_p, precision, cl)
        seen += y.numel()
        steps += 1
    return steps


def train_on_tensors(net: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, epochs: int,
                     batch: int, g: torch.Generator, augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
                     precision: str = "fp32", cl: bool = False) -> None:
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
            _step(net, opt, xb, y[idx], g, 0.0, precision, cl)


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
