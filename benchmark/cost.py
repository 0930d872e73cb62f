"""What a grid costs before it runs: GPU-hours from a documented model, CPU-hours measured here.

The model counts *work units* and multiplies them by seconds per unit.

* A unit is one forward + backward pass of one image through the distillation / evaluation
  network at the reference image size (32x32); other sizes scale by pixel count (MNIST 28x28:
  x0.77, TinyImageNet 64x64: x4). A forward-only pass counts 1/3; a second-order (gradient
  matching) backward through a synthetic image counts 3.
* Distillation: ``units per iteration`` from the method's resolved configuration (classes,
  ``ipc``, real batch, loops, inner loops, ``n_data``, DREAM's k-means refreshes (k-means flops /
  :data:`FLOPS_PER_UNIT`), DREAM+'s per-network warm-up: :func:`distill_units`) x the iterations
  under the budget, once per synthetic set (cells sharing a set pay once).
* Selectors: the feature extractor is trained once per dataset (cached on disk) and the training
  set embedded once per run of consecutive cells on one dataset (memoised in-process); both are
  charged to the first cell needing them.
* Evaluation: per network, passes (after the budget) x (steps x per-step overhead + images
  trained x per-image cost), plus one inference pass over the test set; x the cell's networks.
  The whole-dataset row trains on the whole training split under the budget's full-data epochs.

Seconds per unit:

* GPU (:data:`GPU_REFERENCE`): a seconds-per-iteration figure at a reference setting, from the
  papers where they report one (DM, DSA, IDC, DREAM: see each entry's ``source``), otherwise
  marked "estimated"; divided by the units of that reference setting. Papers' times are on
  their GPUs (GTX 1080 / V100 / unstated) and include their intermediate evaluations, so the
  GPU-hours are an order-of-magnitude planning figure, not a promise.
* CPU: measured on this machine by ``dbench cost --calibrate`` (:func:`calibrate`), which times
  a few distillation iterations of each method, evaluation training at two set sizes and inference
  at small shapes with ``OMP_NUM_THREADS=1`` (process CPU time: one dedicated core) and stores the
  timings in ``results/cost/cpu_calibration.json`` with the machine, torch version and load
  average (results/cost/README.md). Seconds per unit are re-derived from the stored timings and
  settings with the current unit model when loaded.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CALIBRATION_PATH = Path(__file__).resolve().parent.parent / "results" / "cost" / "cpu_calibration.json"
REF_PIXELS = 32 * 32
TEST_IMAGES = 10_000  # test-set size assumed for the one forward pass after training (CIFAR/MNIST: 10k)
FORWARD = 1 / 3  # a forward-only pass, in units
SECOND_ORDER = 3.0  # a synthetic image through a gradient-matching (create_graph) backward, in units

IDC_FAMILY = ("idc", "dream", "dream_plus")
GM_FAMILY = ("dc", "dsa")
DM_FAMILY = ("dm", "datadam", "dummy")


def _get(r: Mapping[str, Any], k: str, default: float) -> float:
    v = r.get(k)
    return float(default if v is None else v)


def pixel_scale(info) -> float:
    h, w = info.im_size
    return h * w / REF_PIXELS


def embed_dim(info, depth: int = 3, width: int = 128) -> int:
    """ConvNet's embedding size (width x (H / 2^depth) x (W / 2^depth))."""
    h, w = info.im_size
    return width * max(1, h >> depth) * max(1, w >> depth)


def clustering_work(r: Mapping[str, Any], classes: int, n_real: int, embed_dim: int = 2048) -> tuple[float, float]:
    """One refresh of DREAM's representative sampler: embed every (pooled) real image of every
    class with the current network (units), then a per-class k-means (n clusters, at most
    max_iter Lloyd steps: an upper bound, it may converge sooner) over the embeddings (flops)."""
    rep = r.get("representative") or {}
    per_class = n_real / max(1, classes)
    if rep.get("pool"):
        per_class = min(per_class, float(rep["pool"]))
    k = float(rep.get("n") or r.get("batch_real") or 128) / max(1.0, float(rep.get("per_cluster") or 1))
    flops = classes * 2 * per_class * k * embed_dim * float(rep.get("max_iter") or 100)
    return classes * per_class * FORWARD, flops


def _refreshes_per_iteration(method: str, r: Mapping[str, Any]) -> float:
    if r.get("sampler") != "representative":
        return 0.0
    interval = max(1.0, float((r.get("representative") or {}).get("interval") or 10))
    if method in IDC_FAMILY:  # re-clustered at inner steps 0, interval, 2 interval, ... of every iteration
        return float(math.ceil(_get(r, "inner_loop", 100) / interval))
    if method in GM_FAMILY:
        return float((r.get("loops") or [1, 1])[0]) / interval
    return 1 / interval


def distill_units(method: str, r: Mapping[str, Any], classes: int, ipc: int, n_real: int = 50_000,
                  embed_dim: int = 2048) -> float:
    """Network units of one distillation iteration at 32x32 (``r``: the resolved configuration;
    ``n_real``: training images, for DREAM+'s per-network warm-up epoch and DREAM's embedding of
    the real images; the k-means itself is :func:`kmeans_flops`)."""
    n = _refreshes_per_iteration(method, r)
    return _distill_units(method, r, classes, ipc, n_real) + (
        n * clustering_work(r, classes, n_real, embed_dim)[0] if n else 0.0)


def kmeans_flops(method: str, r: Mapping[str, Any], classes: int, n_real: int = 50_000,
                 embed_dim: int = 2048) -> float:
    """k-means flops of one distillation iteration (DREAM's representative sampler; else 0)."""
    n = _refreshes_per_iteration(method, r)
    return n * clustering_work(r, classes, n_real, embed_dim)[1] if n else 0.0


def _distill_units(method: str, r: Mapping[str, Any], classes: int, ipc: int, n_real: int) -> float:
    if method in DM_FAMILY:  # one forward of the real batch (no graph) + fwd/bwd of the synthetic images
        return classes * (_get(r, "batch_real", 256) * FORWARD + ipc)
    if method == "idm":  # DM on the 2x2-expanded set + the queue's training steps + the CE term
        f = _get(r, "factor", 2)
        # every iteration fetch_net_num queue nets each take model_train_steps steps of trained_bs
        # real images (methods/idm.py step 3); a fresh net is pushed every net_generate_interval
        return (classes * (_get(r, "batch_real", 256) * FORWARD + ipc * f * f)
                + _get(r, "fetch_net_num", 2) * _get(r, "model_train_steps", 10) * _get(r, "trained_bs", 256)
                + classes * ipc * f * f)
    if method in GM_FAMILY:  # outer x (per-class match: real fwd/bwd + 2nd-order synthetic; inner net steps)
        loops = r.get("loops") or [r.get("outer_loop") or 1, r.get("inner_loop") or 1]
        outer, inner = float(loops[0]), float(loops[1])
        n_syn = classes * ipc
        return outer * (classes * (_get(r, "batch_real", 256) + SECOND_ORDER * ipc)
                        + inner * min(_get(r, "batch_train", 256), n_syn))
    if method in IDC_FAMILY:  # inner x (per-class match on decoded images + network update on n_data reals)
        f = _get(r, "factor", 2)
        syn = min(ipc * f * f, _get(r, "batch_syn_max", 128))
        per_inner = (classes * (_get(r, "batch_real", 64) + SECOND_ORDER * syn)
                     + _get(r, "net_epoch", 1) * _get(r, "n_data", 2000))
        if method == "dream_plus":  # + the feature (distribution) term on the same batches, forward only
            per_inner += classes * (_get(r, "batch_real", 128) + syn) * FORWARD
        warmup = _get(r, "warmup_epochs", 0) * n_real / max(1.0, _get(r, "fix_iter", 1))  # every new network
        return _get(r, "inner_loop", 100) * per_inner + warmup
    return 0.0


def decoded_per_class(method: str, r: Mapping[str, Any]) -> int:
    """Training images per stored image under evaluation (IDC/IDM multi-formation: factor^2)."""
    if method in IDC_FAMILY or method == "idm":
        f = int(_get(r, "factor", 2))
        return f * f
    return 1


# ------------------------------------------------------------------ GPU reference figures


@dataclass(frozen=True)
class GpuReference:
    seconds_per_iteration: float  # at the reference setting below, official preset
    dataset: str
    ipc: int
    source: str
    arch: str = "ConvNet"


GPU_REFERENCE: dict[str, GpuReference] = {
    "dsa": GpuReference(15 * 3600 / 1000, "cifar10", 50,
                        "DM paper §3.2 (Fig. 4 discussion): DSA ~15 GPU-hours (GTX 1080) for CIFAR-10 IPC 50, "
                        "1000 iterations (includes its intermediate evaluations)"),
    "dc": GpuReference(0.9 * 15 * 3600 / 1000, "cifar10", 50,
                       "estimated: DSA's figure x0.9 (same loops, no augmentation)"),
    "dm": GpuReference(27 * 3600 / 30_000, "tinyimagenet", 20,
                       "DM paper §3.6: TinyImageNet IPC 1/10/50 together 27 h on one V100 at 10k iterations each "
                       "(ipc 20 ~ their mean; ConvNet-4)", arch="ConvNetD4"),
    "datadam": GpuReference(1.2 * 27 * 3600 / 30_000, "tinyimagenet", 20,
                            "estimated: DM's figure x1.2 (attention hooks on every layer)", arch="ConvNetD4"),
    "idm": GpuReference(2.5 * 27 * 3600 / 30_000, "tinyimagenet", 20,
                        "estimated: DM's figure x2.5 (queue training, CE term, 4x expanded set)", arch="ConvNetD4"),
    "idc": GpuReference(100 * 0.2, "cifar10", 10,
                        "DREAM+ paper Table 6 / DREAM supp Table 2: IDC 0.2 s per inner loop on CIFAR-10, "
                        "100 inner loops per iteration"),
    "dream": GpuReference(100 * 0.2, "cifar10", 10,
                          "DREAM supp §6 / Table 2: 0.3 s per inner loop on CIFAR-10 = IDC's 0.2 s + 0.1 s clustering; "
                          "the 0.2 s here, the clustering through GPU_KMEANS"),
    "dream_plus": GpuReference(100 * 0.22, "cifar10", 10,
                               "estimated: DREAM's 0.2 s matching per inner loop x1.1 (the feature-matching term); "
                               "clustering through GPU_KMEANS"),
}
# k-means on a GPU: DREAM supp §6: ~1 s per clustering (every 10 inner loops) on CIFAR-10, i.e. 10
# classes x 5000 images x 128 centroids x 2048-d x (<= 100 Lloyd steps) x 2 flops
GPU_KMEANS = {"s_per_flop": 1.0 / (10 * 2 * 5000 * 128 * 2048 * 100),
              "source": "DREAM supp §6 / Table 2: ~1 s per clustering on CIFAR-10 (0.1 s per inner loop)"}
# evaluation / whole-data / extractor training on a GPU: estimated (no paper reports it):
# ConvNet-3 fwd+bwd ~20k images/s at 32x32 on a V100-class GPU, ~2 ms per optimizer step.
GPU_EVAL = {"s_per_image": 5e-5, "s_per_step": 2e-3, "s_per_forward_image": 1e-5,
            "source": "estimated: ConvNet-3 ~20k img/s fwd+bwd (100k img/s inference) at 32x32 on a V100-class GPU, "
                      "2 ms per step"}


def _resolved(method: str, preset: str | None, params: Mapping[str, Any] | None, dataset: str, ipc: int,
              budget, arch: str) -> dict[str, Any]:
    from .api import get_method
    from .build import resolved_values
    from .data import get_info

    cls = get_method(method)
    cfg = cls.resolve_config(preset, dict(params or {}))
    return {**cfg.model_dump(mode="json"), **resolved_values(cls, cfg, get_info(dataset), ipc, budget, arch)}


def gpu_seconds_per_unit(method: str) -> float:
    from .budgets import resolve_budget
    from .data import get_info

    ref = GPU_REFERENCE[method]
    info = get_info(ref.dataset)
    r = _resolved(method, "official", None, ref.dataset, ref.ipc, resolve_budget("paper"), ref.arch)
    units = distill_units(method, r, info.num_classes, ref.ipc, sum(info.class_sizes),
                          embed_dim(info, 4 if "D4" in ref.arch else 3)) * pixel_scale(info)
    return ref.seconds_per_iteration / units  # (k-means: GPU_KMEANS, not in this figure)


# ------------------------------------------------------------------ CPU calibration


def load_calibration(path: Path | None = None) -> dict[str, Any] | None:
    p = Path(path or os.environ.get("DBENCH_COST_CALIBRATION") or CALIBRATION_PATH)
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as e:
        from .errors import ConfigError

        raise ConfigError(f"cost calibration {p}: unreadable ({e}); rerun `dbench cost --calibrate`.") from None


@dataclass
class Rates:
    """Seconds per unit for one device kind."""

    kind: str
    distill: dict[str, float]
    s_per_image: float
    s_per_step: float
    s_per_forward: float | None = None  # None: a third of s_per_image
    s_per_kmeans_flop: float = 0.0

    @property
    def forward_rate(self) -> float:
        return self.s_per_image * FORWARD if self.s_per_forward is None else self.s_per_forward

    def distill_rate(self, method: str) -> float:
        if method in self.distill:
            return self.distill[method]
        return self.distill.get("dm", 0.0)  # an unknown distillation method: DM's rate (noted as such)


def gpu_rates() -> Rates:
    return Rates("gpu", {m: gpu_seconds_per_unit(m) for m in GPU_REFERENCE}, GPU_EVAL["s_per_image"],
                 GPU_EVAL["s_per_step"], GPU_EVAL["s_per_forward_image"], GPU_KMEANS["s_per_flop"])


def cpu_rates(calibration: Mapping[str, Any] | None) -> Rates | None:
    if not calibration:
        return None
    ev = calibration["eval"]
    s_flop = float(ev.get("s_per_kmeans_flop") or 0.0)
    distill = {}
    for m, v in calibration["distill"].items():  # units re-derived with today's model where the setting is known
        st = v.get("setting")
        if st and "s_per_iteration" in v and st.get("n_real"):
            units, flops = calibration_units(m, st)
            s_iter = float(v["s_per_iteration"])
            distill[m] = max(0.1 * s_iter, s_iter - flops * s_flop) / units  # the k-means has its own rate
        else:
            distill[m] = float(v["s_per_unit"])
    fwd = ev.get("s_per_forward_image")
    return Rates("cpu", distill, float(ev["s_per_image"]), float(ev["s_per_step"]),
                 None if fwd is None else float(fwd), s_flop)


def calibration_units(method: str, setting: Mapping[str, Any]) -> tuple[float, float]:
    """(units, k-means flops) of one iteration of a calibration setting ({preset, dataset, ipc,
    n_real, params...})."""
    from .api import get_method
    from .budgets import resolve_budget
    from .build import resolved_values
    from .data import get_info

    st = dict(setting)
    preset, dataset, ipc, n_real = st.pop("preset", None), st.pop("dataset"), int(st.pop("ipc")), st.pop("n_real")
    info = get_info(dataset)
    cls = get_method(method)
    cfg = cls.resolve_config(preset, st)
    r = {**cfg.model_dump(mode="json"), **resolved_values(cls, cfg, info, ipc, resolve_budget("paper"), "ConvNet")}
    r.update(st)
    return (distill_units(method, r, info.num_classes, ipc, int(n_real), embed_dim(info)) * pixel_scale(info),
            kmeans_flops(method, r, info.num_classes, int(n_real), embed_dim(info)))


# ------------------------------------------------------------------ per-cell work


@dataclass
class CellWork:
    """The work of one cell in units, split by kind (distill units are method-specific)."""

    distill_units: float = 0.0  # x the method's rate
    distill_method: str = ""
    train_images: float = 0.0  # evaluation / extractor / whole-data training images (x s_per_image)
    train_steps: float = 0.0  # optimizer steps (x s_per_step)
    forward_images: float = 0.0  # inference passes: testing, selector features (x s_per_forward)
    kmeans_flops: float = 0.0  # DREAM's clustering (x s_per_kmeans_flop)

    def seconds(self, rates: Rates) -> float:
        d = self.distill_units * rates.distill_rate(self.distill_method) if self.distill_units else 0.0
        return (d + self.train_images * rates.s_per_image + self.train_steps * rates.s_per_step
                + self.forward_images * rates.forward_rate + self.kmeans_flops * rates.s_per_kmeans_flop)


def _net_training(n: int, epochs: int, batch_size: int, max_steps: int | None, px: float) -> tuple[float, float]:
    """(images, steps) of training one network on n images for ``epochs`` passes, at 32x32 units."""
    steps_per_epoch = max(1, -(-n // batch_size))
    steps = epochs * steps_per_epoch
    if max_steps is not None:
        steps = min(steps, max_steps)
    images = steps * min(n, batch_size)
    return images * px, float(steps)


def cell_work(cell, seen: set | None = None) -> CellWork:
    """Work of ``cell``; ``seen`` (shared across a grid's cells) makes a set / an extractor paid once."""
    from .api import get_method
    from .data import get_info

    seen = set() if seen is None else seen
    info = get_info(cell.dataset)
    px = pixel_scale(info)
    n_full = sum(info.class_sizes) or 50_000
    w = CellWork(distill_method=cell.method)
    cls = get_method(cell.method)
    r: dict[str, Any] = {}
    if cell.method_kind != "reference":  # the configuration as it runs (preset + params + derived values)
        r = {**cell.method_config,
             **{k: v for k, v in _resolved_values(cls, cell).items() if v is not None}}
    # ---- the set (once per synthetic set)
    if cell.method_kind == "distill" and cell.synset_hash not in seen:
        seen.add(cell.synset_hash)
        its = float(r.get("iterations") or 0)
        depth = 4 if "D4" in str(r.get("arch") or cell.arch_distill) else 3
        w.distill_units = its * distill_units(cell.method, r, info.num_classes, cell.ipc, n_full,
                                              embed_dim(info, depth)) * px
        w.kmeans_flops = its * kmeans_flops(cell.method, r, info.num_classes, n_full, embed_dim(info, depth))
        if r.get("init") == "kmeans_net":  # DREAM's init: one clustering with ipc x factor^2 centroids per class
            rep = {**(r.get("representative") or {}), "n": cell.ipc * decoded_per_class(cell.method, r),
                   "per_cluster": 1}
            emb, flops = clustering_work({**r, "representative": rep}, info.num_classes, n_full, embed_dim(info, depth))
            w.forward_images += emb / FORWARD * px
            w.kmeans_flops += flops
    elif cell.method_kind == "select":
        ext = r.get("extractor")
        ext_id = json.dumps(ext, sort_keys=True)
        if isinstance(ext, Mapping) and ext.get("weights", "trained") == "trained":
            key = ("extractor", cell.dataset, ext_id, cell.budget.name)
            if key not in seen:  # trained once per dataset and cached on disk
                seen.add(key)
                ep = cell.budget.cap("selector_epochs", int(ext.get("epochs") or 10))
                i, s = _net_training(n_full, ep, int(ext.get("batch_size") or 256), ext.get("max_steps"), px)
                w.train_images += i
                w.train_steps += s
        fkey = ("features", cell.dataset, ext_id, cell.budget.name)
        if isinstance(ext, Mapping) and cell.method != "forgetting":
            # features of every real image, memoised in-process for the LAST (extractor, dataset) only
            last = [k for k in seen if isinstance(k, tuple) and k and k[0] == "features"]
            if fkey not in last:
                seen.difference_update(last)
                seen.add(fkey)
                w.forward_images += n_full * px
    # ---- evaluation: num_eval networks
    p = cell.protocol.resolve(info, cell.arch_eval, factor=int(_get(r, "factor", 1)) if cell.method in (
        *IDC_FAMILY, "idm") else None, ipc=cell.ipc if cell.method_kind != "reference" else None)
    if cell.method_kind == "reference":
        n = n_full
        epochs = cell.budget.full_epochs_for(n, p.batch_size)
        max_steps = cell.budget.full_max_steps
    else:
        n = info.num_classes * cell.ipc * decoded_per_class(cell.method, r)
        epochs = cell.budget.eval_epochs_for(p.epochs, n, p.batch_size)
        max_steps = cell.budget.eval_max_steps
    passes = epochs + 1 if p.extra_epoch else epochs
    i, s = _net_training(n, passes, p.batch_size, max_steps, px)
    w.train_images += cell.num_eval * i
    w.train_steps += cell.num_eval * s
    w.forward_images += cell.num_eval * TEST_IMAGES * px  # each network is tested once, after training
    return w


def _resolved_values(cls, cell) -> dict[str, Any]:
    from .build import resolved_values
    from .data import get_info

    cfg = cls.Config(**cell.method_config)
    return dict(resolved_values(cls, cfg, get_info(cell.dataset), cell.ipc, cell.budget, cell.arch_distill))


@dataclass
class CellCost:
    key: str
    gpu_h: float
    cpu_h: float | None


def estimate(cells: Iterable, calibration: Mapping[str, Any] | None = None) -> list[CellCost]:
    """GPU- and CPU-hours per cell (CPU: None without a calibration file)."""
    cal = load_calibration() if calibration is None else calibration
    gpu, cpu = gpu_rates(), cpu_rates(cal)
    seen: set = set()
    out = []
    for c in cells:
        w = cell_work(c, seen)
        out.append(CellCost(c.key, w.seconds(gpu) / 3600, w.seconds(cpu) / 3600 if cpu else None))
    return out


def fmt_hours(h: float | None) -> str:
    if h is None:
        return "-"
    if h < 1 / 60:
        return f"{h * 3600:.0f}s"
    if h < 1:
        return f"{h * 60:.1f}m"
    return f"{h:.1f}h"


# ------------------------------------------------------------------ calibration run

# small settings timed per method: (preset, params); units are computed from the same resolved
# values, so the measured seconds per unit transfer to other shapes through distill_units
CALIBRATION_SETTINGS: dict[str, tuple[str | None, dict[str, Any]]] = {
    "dc": ("official", {"batch_real": 64}),
    "dsa": ("official", {"batch_real": 64}),
    "dm": ("official", {"batch_real": 64}),
    "idm": ("official", {"batch_real": 64, "model_train_steps": 2, "trained_bs": 64}),
    "datadam": ("official", {"batch_real": 64}),
    "idc": ("official", {"inner_loop": 4, "batch_real": 32, "n_data": 128}),
    "dream": ("official", {"inner_loop": 4, "batch_real": 32, "n_data": 128}),
    "dream_plus": ("official", {"inner_loop": 4, "batch_real": 32, "n_data": 128, "warmup_epochs": 0.0}),
}


def _fake_real(dataset: str, per_class: int):
    import torch

    from .data import RealData, get_info

    info = get_info(dataset)
    g = torch.Generator().manual_seed(0)
    n = per_class * info.num_classes
    x = torch.randint(0, 256, (n, info.channels, *info.im_size), generator=g, dtype=torch.uint8)
    y = torch.arange(info.num_classes).repeat_interleave(per_class)
    return RealData(info, x, y, "train")


def _clock() -> tuple[float, float]:
    return time.process_time(), time.perf_counter()


def _time_distill(method: str, preset, params, real, ipc: int, iterations: tuple[int, int],
                  workdir: Path) -> tuple[float, float]:
    """(CPU, wall) seconds per iteration: the difference of two runs (setup and init cancel)."""
    import torch

    from .api import RunContext, get_method
    from .budgets import resolve_budget
    from .build import build_set

    cls = get_method(method)
    times, walls = [], []
    for k in iterations:
        cfg = cls.resolve_config(preset, {**params, "iterations": k})
        ctx = RunContext(device=torch.device("cpu"), seed=0, arch="ConvNet", info=real.info,
                         budget=resolve_budget("paper"), workdir=workdir / f"{method}_{k}")
        t, tw = _clock()
        build_set(cls, cfg, real, ipc, ctx)
        times.append(time.process_time() - t)
        walls.append(time.perf_counter() - tw)
    d = iterations[1] - iterations[0]
    return max(1e-6, (times[1] - times[0]) / d), max(1e-6, (walls[1] - walls[0]) / d)


def _time_eval(real, n_images: int, epochs: int) -> tuple[float, float]:
    import torch

    from .evaluate import TensorSource, TrainSettings, get_protocol, train_model

    info = real.info
    x = torch.randn(n_images, info.channels, *info.im_size)
    y = torch.arange(n_images) % info.num_classes
    p = get_protocol("dsa").resolve(info, "ConvNet").model_copy(update={"epochs": epochs, "extra_epoch": False})
    t, tw = _clock()
    train_model(TensorSource(x, y), p, "ConvNet", info, real, seed=0, settings=TrainSettings())
    return time.process_time() - t, time.perf_counter() - tw


def _time_kmeans() -> tuple[float, float, float]:
    """(CPU s, wall s, flops) of benchmark.kmeans at a DREAM-like shape (batched per class)."""
    import torch

    from .kmeans import kmeans

    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 2000, 2048, generator=g)
    k, iters = 32, 20
    t, tw = _clock()
    kmeans(x, k, generator=g, max_iter=iters, tol=0.0, init="random")
    return time.process_time() - t, time.perf_counter() - tw, 10 * 2 * 2000 * k * 2048 * iters


def _time_forward(real, n_images: int) -> tuple[float, float]:
    """(CPU, wall) seconds of embedding ``n_images`` with ConvNet-3 the way selectors and tests do."""
    import torch

    from .features import compute_features
    from .models import create_model
    from .seed import make_generator

    model = create_model("ConvNet", real.info, make_generator(0, "init"))
    sub = type(real)(real.info, real.images[:n_images], real.labels[:n_images], real.split)
    t, tw = _clock()
    with torch.no_grad():
        compute_features(model, sub)
    return time.process_time() - t, time.perf_counter() - tw


def calibrate(out: Path | None = None, methods: Iterable[str] | None = None, log=print) -> dict[str, Any]:
    """Time each method's distillation iterations and evaluation epochs on this CPU at CIFAR-10
    shape (32x32x3, 10 classes, IPC 1 and the small settings of :data:`CALIBRATION_SETTINGS`) and
    write seconds per unit to ``out``. Takes a few minutes on one thread."""
    import tempfile

    import torch

    from .data import RealData
    from .runtime import hardware

    real = _fake_real("cifar10", 200)
    test = RealData(real.info, real.images[:200], real.labels[:200], "test")
    ipc = 1
    res: dict[str, Any] = {
        "machine": f"{platform.node()} / {hardware()}", "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "load_avg_before": list(os.getloadavg()),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "shape": "cifar10-shaped random uint8 data (10 classes x 200, 3x32x32), ipc 1, fp32, ConvNet-3",
        "note": "seconds per unit: one fwd+bwd of one 32x32 image (see benchmark/cost.py), from the process's CPU "
                "time (one thread), i.e. what one dedicated core takes; wall_* figures are the wall clock on this "
                "shared machine at the load average recorded",
        "eval": {}, "distill": {},
    }
    # evaluation: per image and per step, from two set sizes
    (t_small, w_small), (t_big, w_big) = _time_eval(test, 10, 40), _time_eval(test, 256, 8)  # 40x10, 8x256 images
    s_img = max(1e-7, (t_big / 8 - t_small / 40) / (256 - 10))
    s_step = max(0.0, t_small / 40 - 10 * s_img)
    t_fwd, w_fwd = _time_forward(real, 1000)
    t_km, w_km, km_flops = _time_kmeans()
    res["eval"] = {"s_per_image": s_img, "s_per_step": s_step, "s_per_forward_image": t_fwd / 1000,
                   "s_per_kmeans_flop": t_km / km_flops,
                   "timed_kmeans": {"cpu_s": t_km, "wall_s": w_km, "flops": km_flops,
                                    "shape": "10 x [2000, 2048] features, k 32, 20 Lloyd steps"},
                   "timed_forward_1000img": {"cpu_s": t_fwd, "wall_s": w_fwd},
                   "timed_cpu_s": {"10img_x40steps": t_small, "256img_x8steps": t_big},
                   "timed_wall_s": {"10img_x40steps": w_small, "256img_x8steps": w_big}}
    log(f"eval: {s_img * 1e3:.3f} ms per image, {s_step * 1e3:.2f} ms per step, "
        f"{t_fwd:.3f} ms per image forward (inference)")
    with tempfile.TemporaryDirectory() as d:
        for m in methods or CALIBRATION_SETTINGS:
            preset, params = CALIBRATION_SETTINGS[m]
            setting = {"preset": preset, **params, "dataset": "cifar10", "ipc": ipc, "n_real": len(real)}
            units, _ = calibration_units(m, setting)
            s_iter, w_iter = _time_distill(m, preset, params, real, ipc, (1, 3), Path(d))
            res["distill"][m] = {"s_per_unit": s_iter / units, "s_per_iteration": s_iter,
                                 "wall_s_per_iteration": w_iter, "units_per_iteration": units, "setting": setting}
            log(f"{m}: {s_iter:.3f} s per iteration ({units:.0f} units) -> {s_iter / units * 1e3:.3f} ms per unit")
    res["load_avg_after"] = list(os.getloadavg())
    path = Path(out or CALIBRATION_PATH)
    if methods and path.exists():  # a partial re-calibration keeps the other methods' figures
        old = load_calibration(path) or {}
        res["distill"] = {**old.get("distill", {}), **res["distill"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    from .store import atomic_write_text

    atomic_write_text(path, json.dumps(res, indent=1) + "\n")
    return res


__all__ = ["CALIBRATION_PATH", "GPU_REFERENCE", "GPU_EVAL", "GPU_KMEANS", "CellCost", "CellWork", "Rates",
           "calibrate", "cell_work", "clustering_work", "distill_units", "kmeans_flops", "estimate", "fmt_hours",
           "gpu_rates", "cpu_rates", "load_calibration"]
