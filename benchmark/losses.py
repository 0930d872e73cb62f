"""Matching losses shared by the distribution-matching family (DM, IDM, DataDAM, DREAM+).

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
