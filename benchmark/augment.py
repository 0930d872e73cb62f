"""Augmentation: DSA with explicit parameter objects, the IDC composition, DC's
evaluation augmentation, CutMix and ZCA.

DSA randomness is *sampled* into an :class:`AugParams` object and then *applied*.
Siamese augmentation (DSA, DM, IDM, DataDAM) samples once and applies the same object
to the real and the synthetic batch; nothing depends on replaying an RNG. All ops are
differentiable with respect to the input images.

Op semantics follow the reference DiffAugment (``ParamDiffAug`` constants): brightness
1.0, saturation 2.0, contrast 0.5, crop/translate ratio 0.125 (zero fill), cutout ratio
0.5, flip p 0.5, scale 1.2, rotate 15 degrees; affine ops use ``affine_grid`` +
``grid_sample`` with PyTorch's default ``align_corners`` (False), as the reference does.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .registry import Registry


@dataclass(frozen=True)
class DSAConfig:
    prob_flip: float = 0.5
    ratio_scale: float = 1.2
    ratio_rotate: float = 15.0
    ratio_crop_pad: float = 0.125
    ratio_cutout: float = 0.5
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5


FAMILIES = ("color", "crop", "cutout", "flip", "scale", "rotate")


def parse_strategy(strategy: str) -> list[str]:
    fams = [s for s in strategy.split("_") if s and s != "none"]
    bad = [f for f in fams if f not in FAMILIES]
    if bad:
        raise ValueError(f"unknown DSA op(s) {bad} in strategy {strategy!r}; known: {', '.join(FAMILIES)}")
    return fams


DC_OPS = ("crop", "scale", "rotate", "noise")  # the ops of dc_augment (DC's evaluation augmentation)


def strategy_problem(strategy: str, ops: Sequence[str] = FAMILIES) -> str | None:
    """Why ``strategy`` is not a '_'-joined list of ``ops`` (or 'none'), as one sentence that
    names the bad op, a close match and the valid ops; ``None`` when it is valid. Config
    validation uses it, so a typo fails before any compute instead of inside a running cell."""
    bad = [s for s in strategy.split("_") if s and s != "none" and s not in ops]
    if not bad:
        return None
    close = [m[0] for b in bad if (m := difflib.get_close_matches(b, ops, n=1, cutoff=0.5))]
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return (f"unknown augmentation op{'s' if len(bad) > 1 else ''} {', '.join(map(repr, bad))} in {strategy!r}{hint}; "
            f"join ops from {', '.join(ops)} with '_' (e.g. {'_'.join(ops)}), or use 'none'")


@dataclass
class AugParams:
    """A sampled augmentation: an ordered list of (op, parameters). Tensors have a
    leading dim of either the batch size (per-sample) or 1 (shared by the batch)."""

    steps: list[tuple[str, dict[str, torch.Tensor]]] = field(default_factory=list)

    def to(self, device) -> AugParams:
        return AugParams([(op, {k: v.to(device) for k, v in p.items()}) for op, p in self.steps])


def _u(n: int, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g)


def sample_op(op: str, n: int, im_size: tuple[int, int], g: torch.Generator, cfg: DSAConfig) -> dict[str, torch.Tensor]:
    h, w = im_size
    if op == "flip":
        return {"flip": _u(n, g) < cfg.prob_flip}
    if op == "brightness":
        return {"v": _u(n, g)}
    if op in ("saturation", "contrast"):
        return {"v": _u(n, g)}
    if op == "crop":
        sx, sy = int(h * cfg.ratio_crop_pad + 0.5), int(w * cfg.ratio_crop_pad + 0.5)
        return {"tx": torch.randint(-sx, sx + 1, (n,), generator=g),
                "ty": torch.randint(-sy, sy + 1, (n,), generator=g)}
    if op == "cutout":
        ch, cw = int(h * cfg.ratio_cutout + 0.5), int(w * cfg.ratio_cutout + 0.5)
        return {
            "ox": torch.randint(0, h + (1 - ch % 2), (n,), generator=g),
            "oy": torch.randint(0, w + (1 - cw % 2), (n,), generator=g),
        }
    if op == "scale":
        lo = 1.0 / cfg.ratio_scale
        return {"sx": _u(n, g) * (cfg.ratio_scale - lo) + lo, "sy": _u(n, g) * (cfg.ratio_scale - lo) + lo}
    if op == "rotate":
        return {"theta": (_u(n, g) - 0.5) * 2 * cfg.ratio_rotate / 180 * math.pi}
    raise ValueError(op)


_FAMILY_OPS = {"color": ("brightness", "saturation", "contrast")}


def _ops(family: str) -> tuple[str, ...]:
    return _FAMILY_OPS.get(family, (family,))


def sample_dsa(strategy: str, n: int, im_size: tuple[int, int], g: torch.Generator, *, siamese: bool,
               cfg: DSAConfig = DSAConfig()) -> AugParams:
    """Mode 'S': one family drawn uniformly from the strategy, all of its ops applied.
    ``siamese=True`` draws one parameter set for the whole batch (shape-1 tensors)."""
    fams = parse_strategy(strategy)
    if not fams:
        return AugParams()
    fam = fams[int(torch.randint(len(fams), (1,), generator=g))]
    m = 1 if siamese else n
    return AugParams([(op, sample_op(op, m, im_size, g, cfg)) for op in _ops(fam)])


def sample_idc(strategy: str, n: int, im_size: tuple[int, int], g: torch.Generator, *, siamese: bool,
               cfg: DSAConfig = DSAConfig()) -> AugParams:
    """IDC composition: flip, colour and cutout always (if listed), plus one of
    crop/scale/rotate, applied after colour and before cutout."""
    fams = parse_strategy(strategy)
    m = 1 if siamese else n
    steps: list[tuple[str, dict[str, torch.Tensor]]] = []
    for fam in ("flip", "color"):
        if fam in fams:
            steps += [(op, sample_op(op, m, im_size, g, cfg)) for op in _ops(fam)]
    geo = [f for f in fams if f in ("crop", "scale", "rotate")]
    if geo:
        fam = geo[int(torch.randint(len(geo), (1,), generator=g))]
        steps.append((fam, sample_op(fam, m, im_size, g, cfg)))
    if "cutout" in fams:
        steps.append(("cutout", sample_op("cutout", m, im_size, g, cfg)))
    return AugParams(steps)


def _col(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.to(x.device, x.dtype).view(-1, 1, 1, 1)


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    theta = theta.to(x.device, x.dtype).expand(x.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


def apply_op(x: torch.Tensor, op: str, p: dict[str, torch.Tensor], cfg: DSAConfig = DSAConfig()) -> torch.Tensor:
    n, _, h, w = x.shape
    if op == "flip":
        f = p["flip"].to(x.device).view(-1, 1, 1, 1)
        return torch.where(f, x.flip(3), x)
    if op == "brightness":
        return x + (_col(p["v"], x) - 0.5) * cfg.brightness
    if op == "saturation":
        m = x.mean(dim=1, keepdim=True)
        return (x - m) * (_col(p["v"], x) * cfg.saturation) + m
    if op == "contrast":
        m = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - m) * (_col(p["v"], x) + cfg.contrast) + m
    if op == "crop":  # integer translation, vacated pixels are 0 (gather from a 1-px zero pad)
        tx = p["tx"].to(x.device).expand(n).view(n, 1, 1)
        ty = p["ty"].to(x.device).expand(n).view(n, 1, 1)
        gi = torch.arange(h, device=x.device).view(1, h, 1)
        gj = torch.arange(w, device=x.device).view(1, 1, w)
        ii = (gi + tx + 1).clamp(0, h + 1).expand(n, h, w)
        jj = (gj + ty + 1).clamp(0, w + 1).expand(n, h, w)
        xp = F.pad(x, (1, 1, 1, 1))
        b = torch.arange(n, device=x.device).view(n, 1, 1).expand(n, h, w)
        return xp.permute(0, 2, 3, 1)[b, ii, jj].permute(0, 3, 1, 2)
    if op == "cutout":
        ch, cw = int(h * cfg.ratio_cutout + 0.5), int(w * cfg.ratio_cutout + 0.5)
        ox = p["ox"].to(x.device).expand(n).view(n, 1)
        oy = p["oy"].to(x.device).expand(n).view(n, 1)
        ri = (torch.arange(ch, device=x.device).view(1, ch) + ox - ch // 2).clamp(0, h - 1)
        rj = (torch.arange(cw, device=x.device).view(1, cw) + oy - cw // 2).clamp(0, w - 1)
        rows = torch.zeros(n, h, device=x.device, dtype=torch.bool).scatter_(1, ri, True)
        cols = torch.zeros(n, w, device=x.device, dtype=torch.bool).scatter_(1, rj, True)
        mask = ~(rows[:, :, None] & cols[:, None, :])
        return x * mask[:, None].to(x.dtype)
    if op == "scale":
        sx, sy = p["sx"].to(x.device), p["sy"].to(x.device)
        z = torch.zeros_like(sx)
        theta = torch.stack([torch.stack([sx, z, z], -1), torch.stack([z, sy, z], -1)], 1)
        return _affine(x, theta)
    if op == "rotate":
        t = p["theta"].to(x.device)
        z = torch.zeros_like(t)
        theta = torch.stack([torch.stack([t.cos(), (-t).sin(), z], -1), torch.stack([t.sin(), t.cos(), z], -1)], 1)
        return _affine(x, theta)
    raise ValueError(op)


def apply(x: torch.Tensor, params: AugParams, cfg: DSAConfig = DSAConfig()) -> torch.Tensor:
    for op, p in params.steps:
        x = apply_op(x, op, p, cfg)
    return x


# ----------------------------------------------------------- DC evaluation augmentation


@torch.no_grad()
def dc_augment(x: torch.Tensor, strategy: str, g: torch.Generator) -> torch.Tensor:
    """DC's non-differentiable evaluation augmentation: per image one op drawn from the
    strategy ('crop', 'scale', 'rotate', 'noise'); crop 4 px, scale +-0.2, rotate +-45
    degrees, noise std 0.001; vacated pixels take the per-channel batch mean. Re-implemented
    with torch affine sampling (the reference uses scipy on the CPU)."""
    ops = [s for s in strategy.split("_") if s and s != "none"]
    if not ops:
        return x
    n, c, h, w = x.shape
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    choice = torch.randint(len(ops), (n,), generator=g)
    out = x.clone()
    for k, op in enumerate(ops):
        sel = (choice == k).nonzero().flatten()
        if sel.numel() == 0:
            continue
        xs = x[sel] - mean
        m = sel.numel()
        if op == "crop":
            t = torch.randint(-4, 5, (m, 2), generator=g).float()
            theta = torch.zeros(m, 2, 3)
            theta[:, 0, 0] = theta[:, 1, 1] = 1
            theta[:, 0, 2], theta[:, 1, 2] = t[:, 0] * 2 / w, t[:, 1] * 2 / h
            xs = _affine_nearest(xs, theta)
        elif op == "scale":
            s = 1 + (torch.rand(m, 2, generator=g) - 0.5) * 0.4
            theta = torch.zeros(m, 2, 3)
            theta[:, 0, 0], theta[:, 1, 1] = 1 / s[:, 0], 1 / s[:, 1]
            xs = _affine(xs, theta)
        elif op == "rotate":
            a = (torch.rand(m, generator=g) - 0.5) * 90 / 180 * math.pi
            theta = torch.zeros(m, 2, 3)
            theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = a.cos(), -a.sin(), a.sin(), a.cos()
            xs = _affine(xs, theta)
        elif op == "noise":
            xs = xs + 0.001 * torch.randn(xs.shape, generator=g).to(xs.device)
        else:
            raise ValueError(f"unknown DC augmentation op {op!r}")
        out[sel] = xs + mean
    return out


def _affine_nearest(x, theta):
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", align_corners=False)


# ---------------------------------------------------------------------------- CutMix


def cutmix(x: torch.Tensor, g: torch.Generator, beta: float = 1.0):
    """CutMix: returns (mixed x, permutation, kept-area ratio r); the loss is
    CE(y)*r + CE(y[perm])*(1-r)."""
    n, _, h, w = x.shape
    lam = _beta(beta, g)
    perm = torch.randperm(n, generator=g).to(x.device)
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = int(torch.randint(h, (1,), generator=g)), int(torch.randint(w, (1,), generator=g))
    y1, y2 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x1, x2 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    x = x.clone()
    x[:, :, y1:y2, x1:x2] = x[perm, :, y1:y2, x1:x2]
    r = 1.0 - (y2 - y1) * (x2 - x1) / (h * w)
    return x, perm, r


def _beta(a: float, g: torch.Generator) -> float:
    """Beta(a, a) drawn through the explicit generator (numpy generator seeded from it)."""
    import numpy as np

    return float(np.random.default_rng(int(torch.randint(2**62, (1,), generator=g))).beta(a, a))


# ------------------------------------------------------------------------------- ZCA


def fit_zca(images: torch.Tensor, eps: float = 0.1):
    """kornia ZCA whitening (eps 0.1, as MTT/DATM), fitted on the real train images only."""
    from kornia.enhance import ZCAWhitening

    zca = ZCAWhitening(eps=eps, compute_inv=True)
    zca.fit(images.float())
    return zca


# ------------------------------------------------------------------------ registry

AUGMENTS: Registry[str] = Registry("augment")
for _name, _desc in {
    "none": "no augmentation",
    "dsa": "DSA mode 'S' (one family per batch, per-sample parameters when training)",
    "idc_dsa": "IDC composition (flip+colour+cutout always, one of crop/scale/rotate)",
    "dc": "DC's non-differentiable evaluation augmentation (crop/scale/rotate/noise)",
}.items():
    AUGMENTS.add(_name, _desc)
