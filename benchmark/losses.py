"""Matching losses: distribution matching (DM, IDM, DataDAM, DREAM+) and gradient matching (DC, DSA, IDC, DREAM).

All functions take *class-major* feature tensors: the first ``n`` rows belong to class
``classes[0]``, the next ``n`` to ``classes[1]``, and so on (``n`` may differ between the
real and the synthetic side). Real features should be passed detached; nothing here
detaches for the caller. Reductions run in fp32 even when the features come out of a
bf16 autocast region.

* :func:`mean_embedding_mmd` - linear-kernel MMD: for every class the squared L2 distance
  between the mean real and the mean synthetic feature, summed over feature dims and
  classes (DM eq. 5/6; VICO-UoE/DatasetCondensation@53f63a6 ``main_DM.py``).
* :func:`attention_map` / :func:`attention_match` - DataDAM's spatial attention
  ``A(f) = sum_c |f|^p`` flattened and L2-normalised per sample, matched with the same
  per-class mean distance (DataDistillation/DataDAM@0f6ea09 ``utils.get_attention``).
* :func:`ce_regulariser` - IDM's class-aware cross-entropy on synthetic logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def class_means(f: torch.Tensor, num_groups: int) -> torch.Tensor:
    """[num_groups * n, ...] class-major -> [num_groups, prod(...)] per-group means (fp32)."""
    if f.shape[0] % num_groups:
        raise ValueError(f"{f.shape[0]} rows cannot be split into {num_groups} equal class groups")
    return f.float().reshape(num_groups, f.shape[0] // num_groups, -1).mean(dim=1)


def mean_embedding_mmd(f_real: torch.Tensor, f_syn: torch.Tensor, num_classes: int = 1) -> torch.Tensor:
    """sum_c || mean_i f_real[c, i] - mean_j f_syn[c, j] ||^2 (class-major inputs)."""
    d = class_means(f_real, num_classes) - class_means(f_syn, num_classes)
    return (d * d).sum()


def attention_map(f: torch.Tensor, power: float = 1.0, normalize: str = "l2") -> torch.Tensor:
    """[N, C, H, W] -> [N, H*W]: sum over channels of |f|^p, flattened, normalised per sample."""
    a = f.float().abs()
    a = (a.pow(power) if power != 1 else a).sum(dim=1).flatten(1)
    if normalize == "l2":
        return F.normalize(a, p=2, dim=1)
    if normalize == "l1":
        return F.normalize(a, p=1, dim=1)
    if normalize == "none":
        return a
    raise ValueError(f"unknown attention normalisation {normalize!r}")


def attention_match(acts_real: Sequence[torch.Tensor], acts_syn: Sequence[torch.Tensor], num_classes: int = 1,
                    power: float = 1.0, normalize: str = "l2") -> torch.Tensor:
    """Sum over layers of the per-class mean-attention distance (unweighted)."""
    if len(acts_real) != len(acts_syn):
        raise ValueError("real and synthetic activations must list the same layers")
    total = torch.zeros((), device=acts_syn[0].device if acts_syn else "cpu")
    for ar, as_ in zip(acts_real, acts_syn):
        total = total + mean_embedding_mmd(attention_map(ar, power, normalize), attention_map(as_, power, normalize),
                                           num_classes)
    return total


def ce_regulariser(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the synthetic logits against their class labels (fp32)."""
    return F.cross_entropy(logits.float(), labels)


# ------------------------------------------------------------------ gradient matching
#
# Gradient-matching distances (DC, DSA, IDC, DREAM, DREAM+). ``g_real`` and ``g_syn`` are
# per-parameter gradient lists in the same order (real detached, synthetic with a graph).
#
# * ``ours`` - DC's per-output-row cosine distance (VICO-UoE/DatasetCondensation@53f63a6
#   ``utils.distance_wb``): conv [o, i, h, w] -> [o, i*h*w], 3-D (LayerNorm) [c, h, w] ->
#   [c, h*w], linear as is; per layer sum_rows (1 - <gr, gs> / (|gr| |gs| + 1e-6)); 1-D
#   tensors (biases, norm affine) contribute 0.
# * ``mse`` - sum of squared differences (DC's 'mse' over the concatenated gradients, IDC's
#   per-tensor 'mse' summed over tensors: the same number).
# * ``l1`` / ``l1_mean`` - IDC: summed absolute difference / per-row mean of |.| summed.
# * ``cos`` - DC's 'cos': 1 - cosine of the *concatenated* gradient vectors (1e-6 guard).
# * ``cos_rows`` - IDC's 'cos': per tensor, rows = leading dim, as ``ours`` (1-D tensors
#   are split into one-element rows).
#
# Which tensors enter is the caller's choice (:func:`benchmark.gradmatch.matched_parameters`):
# DC uses every parameter, IDC/DREAM only conv weights.

GRAD_METRICS = ("ours", "mse", "l1", "l1_mean", "cos", "cos_rows")


def _rows(g: torch.Tensor) -> torch.Tensor:
    if g.ndim == 4:
        return g.reshape(g.shape[0], -1)
    if g.ndim == 3:
        return g.reshape(g.shape[0], g.shape[1] * g.shape[2])
    return g


def _row_cosine_distance(gr: torch.Tensor, gs: torch.Tensor) -> torch.Tensor:
    gr, gs = gr.float(), gs.float()
    return torch.sum(1 - torch.sum(gr * gs, dim=-1) / (gr.norm(dim=-1) * gs.norm(dim=-1) + 1e-6))


def grad_distance(g_real: Sequence[torch.Tensor], g_syn: Sequence[torch.Tensor], metric: str = "ours") -> torch.Tensor:
    """Distance between two gradient lists under ``metric`` (see the block comment above)."""
    if len(g_real) != len(g_syn):
        raise ValueError("real and synthetic gradients must list the same parameters")
    if metric not in GRAD_METRICS:
        raise ValueError(f"unknown gradient metric {metric!r}; use one of {', '.join(GRAD_METRICS)}")
    dev = g_syn[0].device if len(g_syn) else "cpu"
    if metric == "cos":
        vr = torch.cat([g.float().reshape(-1) for g in g_real])
        vs = torch.cat([g.float().reshape(-1) for g in g_syn])
        return 1 - torch.sum(vr * vs) / (vr.norm() * vs.norm() + 1e-6)
    total = torch.zeros((), device=dev)
    for gr, gs in zip(g_real, g_syn):
        if metric == "ours":
            if gr.ndim == 1:
                continue
            total = total + _row_cosine_distance(_rows(gr), _rows(gs))
        elif metric == "cos_rows":
            total = total + _row_cosine_distance(gr.reshape(gr.shape[0], -1), gs.reshape(gs.shape[0], -1))
        elif metric == "mse":
            total = total + (gr.float() - gs.float()).pow(2).sum()
        elif metric == "l1":
            total = total + (gr.float() - gs.float()).abs().sum()
        else:  # l1_mean
            total = total + (gr.float() - gs.float()).abs().reshape(gr.shape[0], -1).mean(-1).sum()
    return total


def feature_distance(f_real: torch.Tensor, f_syn: torch.Tensor, metric: str = "mse") -> torch.Tensor:
    """DREAM+'s feature term: IDC's ``dist(mean_i f_real, mean_j f_syn, metric)`` on the
    class-mean embeddings: mse = squared, l1 / l1_mean = absolute difference summed over
    feature dims (IDC's l1_mean of a 1-D vector has one element per row); cos / ours /
    cos_rows = 1 - cosine of the two mean vectors."""
    mr, ms = f_real.float().mean(0), f_syn.float().mean(0)
    d = mr - ms
    if metric == "mse":
        return d.pow(2).sum()
    if metric in ("l1", "l1_mean"):
        return d.abs().sum()
    if metric in ("ours", "cos", "cos_rows"):
        return 1 - torch.sum(mr * ms) / (mr.norm() * ms.norm() + 1e-6)
    raise ValueError(f"unknown feature metric {metric!r}")
