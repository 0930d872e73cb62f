"""Seeded, batched k-means in plain torch (CPU or GPU).

Used by the ``kmeans`` coreset selector / initialiser (DC-Bench "Kmeans-emb", DREAM's
``init=kmean``) and meant to be shared by later work (DREAM's representative sampler).

* **Batched**: ``x`` may be ``[N, d]`` (one problem) or ``[B, N, d]`` (B independent
  problems of the same size, e.g. one per class). Ragged problems pass ``valid`` (a
  ``[B, N]`` bool mask); masked points are never chosen as seeds and never move centres.
* **Seeded**: every random draw comes from the ``generator`` argument (a CPU
  ``torch.Generator``); draws are made on the CPU and moved to the data's device, so the
  same seed gives the same initial centres on CPU and GPU. The global RNG is never used.
* **Deterministic**: ties in assignment go to the lowest cluster id, ties in "nearest
  point" to the lowest point index; an empty cluster is re-seeded at the point farthest
  from its current centre (lowest index on ties).
* **Memory-bounded**: point-to-centre distances are computed in chunks of
  ``chunk_size`` points, as ``|x|^2 - 2 x.c + |c|^2`` (one matmul per chunk).

Algorithm: k-means++ seeding (D^2 sampling, one candidate per step) or uniform seeding
(``init="random"``, k distinct points), then Lloyd iterations until the summed squared
centre shift is at most ``tol`` times the mean per-dimension data variance (the
scikit-learn convention) or the assignments stop changing, or ``max_iter`` is reached.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from .errors import ConfigError


@dataclass(frozen=True)
class KMeansResult:
    centers: torch.Tensor  # [k, d] or [B, k, d]
    labels: torch.Tensor  # [N] or [B, N] (int64; -1 for masked points)
    inertia: torch.Tensor  # [] or [B]: sum of squared distances of valid points to their centre
    n_iter: int  # Lloyd iterations run
    converged: bool


def _sq_dists(x: torch.Tensor, x2: torch.Tensor, c: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """[B, N, k] squared distances, computed chunk by chunk over N."""
    B, N, _ = x.shape
    c2 = c.pow(2).sum(-1)  # [B, k]
    ct = c.transpose(1, 2)
    out = torch.empty(B, N, c.shape[1], dtype=x.dtype, device=x.device)
    for s in range(0, N, chunk_size):
        e = min(N, s + chunk_size)
        d = torch.baddbmm(x2[:, s:e, None] + c2[:, None, :], x[:, s:e], ct, alpha=-2.0)
        out[:, s:e] = d.clamp_min_(0.0)
    return out


def _assign(x, x2, c, valid, chunk_size):
    """labels [B, N] and the squared distance to the assigned centre [B, N]."""
    B, N, _ = x.shape
    labels = torch.empty(B, N, dtype=torch.long, device=x.device)
    mind = torch.empty(B, N, dtype=x.dtype, device=x.device)
    c2 = c.pow(2).sum(-1)
    ct = c.transpose(1, 2)
    for s in range(0, N, chunk_size):
        e = min(N, s + chunk_size)
        d = torch.baddbmm(x2[:, s:e, None] + c2[:, None, :], x[:, s:e], ct, alpha=-2.0).clamp_min_(0.0)
        m, a = d.min(dim=2)  # first minimal index on ties
        labels[:, s:e], mind[:, s:e] = a, m
    if valid is not None:
        labels = labels.masked_fill(~valid, -1)
        mind = mind.masked_fill(~valid, 0.0)
    return labels, mind


def _sample_weighted(w: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One index per row of ``w`` [B, N] with probability proportional to w (>= 0).
    Inverse-CDF with a CPU-drawn uniform, so CPU and GPU agree; all-zero rows fall back
    to the first index with the largest weight."""
    B, N = w.shape
    u = torch.rand(B, generator=generator, dtype=torch.float64).to(w.device)
    cum = w.double().cumsum(1)
    total = cum[:, -1]
    idx = torch.searchsorted(cum, (u * total).unsqueeze(1), right=True).squeeze(1).clamp_(max=N - 1)
    # guard against landing on a zero-weight point through rounding at the top end
    bad = (total <= 0) | (w.gather(1, idx[:, None]).squeeze(1) <= 0)
    if bool(bad.any()):
        idx = torch.where(bad, w.argmax(1), idx)
    return idx


def _init_kmeanspp(x, x2, k, valid, generator):
    B, N, d = x.shape
    w = valid.to(x.dtype) if valid is not None else torch.ones(B, N, dtype=x.dtype, device=x.device)
    ar = torch.arange(B, device=x.device)
    first = _sample_weighted(w, generator)
    centers = torch.empty(B, k, d, dtype=x.dtype, device=x.device)
    centers[:, 0] = x[ar, first]
    closest = (x2 - 2.0 * torch.einsum("bnd,bd->bn", x, centers[:, 0])
               + centers[:, 0].pow(2).sum(-1, keepdim=True)).clamp_min_(0.0)
    closest = closest * w
    for j in range(1, k):
        nxt = _sample_weighted(closest, generator)
        cj = x[ar, nxt]
        centers[:, j] = cj
        dj = (x2 - 2.0 * torch.einsum("bnd,bd->bn", x, cj) + cj.pow(2).sum(-1, keepdim=True)).clamp_min_(0.0)
        closest = torch.minimum(closest, dj * w)
    return centers


def _init_random(x, k, valid, generator):
    B, N, _ = x.shape
    keys = torch.rand(B, N, generator=generator, dtype=torch.float64).to(x.device)
    if valid is not None:
        keys = keys.masked_fill(~valid, 2.0)
    idx = torch.argsort(keys, dim=1, stable=True)[:, :k]
    return torch.gather(x, 1, idx[:, :, None].expand(-1, -1, x.shape[2])).clone()


def kmeans(
    x: torch.Tensor,
    k: int,
    *,
    generator: torch.Generator,
    max_iter: int = 100,
    tol: float = 1e-4,
    init: Literal["kmeans++", "random"] = "kmeans++",
    valid: torch.Tensor | None = None,
    chunk_size: int = 4096,
) -> KMeansResult:
    """Cluster ``x`` ([N, d] or [B, N, d], float) into ``k`` clusters (see module doc)."""
    single = x.ndim == 2
    if single:
        x = x.unsqueeze(0)
        valid = None if valid is None else valid.unsqueeze(0)
    if x.ndim != 3:
        raise ConfigError(f"kmeans: x must be [N, d] or [B, N, d], got {tuple(x.shape)}")
    if init not in ("kmeans++", "random"):
        raise ConfigError(f"kmeans: unknown init {init!r}; use 'kmeans++' or 'random'")
    if not x.is_floating_point():
        x = x.float()
    B, N, d = x.shape
    n_valid = torch.full((B,), N, device=x.device) if valid is None else valid.sum(1)
    if k < 1 or bool((n_valid < k).any()):
        raise ConfigError(f"kmeans: k={k} needs at least k points per problem, smallest has {int(n_valid.min())}")
    x2 = x.pow(2).sum(-1)  # [B, N]
    vmask = valid.to(x.dtype) if valid is not None else None

    centers = _init_kmeanspp(x, x2, k, valid, generator) if init == "kmeans++" else _init_random(x, k, valid, generator)

    # tolerance relative to the data's mean per-dimension variance (per problem)
    if vmask is None:
        var = x.var(dim=1, unbiased=False).mean(-1)
    else:
        cnt = vmask.sum(1, keepdim=True)
        mu = (x * vmask[..., None]).sum(1) / cnt
        var = (((x - mu[:, None]) ** 2) * vmask[..., None]).sum(1).div(cnt).mean(-1)
    thresh = tol * var

    ar = torch.arange(B, device=x.device)
    prev_labels = None
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        labels, mind = _assign(x, x2, centers, valid, chunk_size)
        # centre update: scatter-add into a flattened [B*k] table
        flat = (labels.clamp_min(0) + ar[:, None] * k).reshape(-1)
        w = vmask.reshape(-1) if vmask is not None else torch.ones(B * N, dtype=x.dtype, device=x.device)
        sums = torch.zeros(B * k, d, dtype=x.dtype, device=x.device).index_add_(0, flat, x.reshape(-1, d) * w[:, None])
        counts = torch.zeros(B * k, dtype=x.dtype, device=x.device).index_add_(0, flat, w)
        new = (sums / counts.clamp_min(1.0)[:, None]).view(B, k, d)
        empty = (counts == 0).view(B, k)
        if bool(empty.any()):
            new = torch.where(empty[..., None], centers, new)
            far = mind.clone()
            for b, j in empty.nonzero().tolist():  # rare: re-seed at the farthest point
                p = int(far[b].argmax())
                new[b, j] = x[b, p]
                far[b, p] = -1.0
        shift = (new - centers).pow(2).sum(dim=(1, 2))
        centers = new
        same = prev_labels is not None and torch.equal(labels, prev_labels)
        prev_labels = labels
        if same or bool((shift <= thresh).all()):
            converged = True
            break
    labels, mind = _assign(x, x2, centers, valid, chunk_size)
    inertia = mind.sum(1)
    if single:
        return KMeansResult(centers[0], labels[0], inertia[0], it, converged)
    return KMeansResult(centers, labels, inertia, it, converged)


def nearest_distinct(x: torch.Tensor, centers: torch.Tensor, chunk_size: int = 4096) -> torch.Tensor:
    """For each centre (in order), the index of the nearest point of ``x`` ([N, d]) not
    already taken by an earlier centre. Ties go to the lowest index. Returns [k] int64."""
    if centers.shape[0] > x.shape[0]:
        raise ConfigError(f"nearest_distinct: {centers.shape[0]} centres but only {x.shape[0]} points")
    x = x.to(centers.dtype)
    d = _sq_dists(x[None], x.pow(2).sum(-1)[None], centers[None], chunk_size)[0]  # [N, k]
    taken = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    out = []
    for j in range(centers.shape[0]):
        dj = d[:, j].masked_fill(taken, float("inf"))
        i = int(torch.argmin(dj))
        taken[i] = True
        out.append(i)
    return torch.tensor(out, dtype=torch.long)


__all__ = ["KMeansResult", "kmeans", "nearest_distinct"]
