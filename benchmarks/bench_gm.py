"""Speed benchmarks for gradient matching on CIFAR-10 shapes (IPC 10), each against a plain
per-class fp32 reference measured in the same run:

* one DC matching step: all 10 classes (batch_real 256 real + 10 synthetic images each,
  real gradient detached, synthetic gradient with create_graph, DC distance) and the image
  update - the unit ``outer_loop`` repeats;
* one IDC inner step: per class real (64) + decoded synthetic (40) images augmented
  together, conv-weight matching, one image step per class, then the network update on
  2000 real samples (batches of 64, CutMix);
* the representative sampler's clustering (k-means of one class's 5000 x 2048 embeddings
  into 128 clusters, DREAM's setting) against one inner step's image update. The DREAM
  papers report 0.1 s (clustering, amortised over its 10-step interval) vs 0.2 s per inner
  loop on a GPU; we print our ratio.

The fast path is the methods' own code under bf16 autocast; the reference is the same loop
in fp32. Losses must agree to bf16 tolerance; the DC step must be faster in bf16; the IDC
step's ratio is printed (gradient matching is inherently one backward per class: the
per-class real gradients cannot share a forward, and torch.func.vmap over classes was 3x
slower than the loop on this CPU). Random uint8 images stand in for CIFAR-10 where the cost does not depend on pixel
values; the clustering uses real CIFAR-10 embeddings when ``DBENCH_DATA_DIR`` has them.

Run: ``.venv/bin/pytest benchmarks/bench_gm.py -m bench --benchmark-enable -s``
"""

from __future__ import annotations

import dataclasses
import time

import pytest
import torch

from benchmark import augment as A
from benchmark.data import RealData, get_info
from benchmark.gradmatch import match_class, matched_parameters, normalizer, train_steps
from benchmark.models import create_model
from benchmark.samplers import (
    CyclicBatches,
    RepresentativeConfig,
    RepresentativeSampler,
)
from benchmark.synset import Decode, multi_formation

pytestmark = pytest.mark.bench

IPC, PER_CLASS = 10, 500
RESULTS: dict[str, float] = {}


def _cifar_like(per_class: int = PER_CLASS) -> RealData:
    info = dataclasses.replace(get_info("cifar10"), name="cifar10")
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (10 * per_class, 3, 32, 32), generator=g, dtype=torch.uint8)
    return RealData(info, images, torch.arange(10).repeat_interleave(per_class), "train")


def _best_of(fn, rounds: int = 2):
    best, out = float("inf"), None
    for _ in range(rounds):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def _dc_step(real: RealData, precision: str):
    net = create_model("ConvNet", real.info, torch.Generator().manual_seed(1)).train()
    params = matched_parameters(net, metric="ours", scope="all")
    syn = torch.randn(10 * IPC, 3, 32, 32, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    opt = torch.optim.SGD([syn], lr=0.1, momentum=0.5)
    g = torch.Generator().manual_seed(3)
    loss = torch.zeros(())
    for c in range(10):
        idx = real.class_indices[c][torch.randperm(PER_CLASS, generator=g)[:256]]
        xr = real.normalize(real.images[idx])
        loss = loss + match_class(net, xr, syn[c * IPC:(c + 1) * IPC], c, params, "ours", precision=precision)
    syn.grad = torch.autograd.grad(loss, syn)[0]
    opt.step()
    return float(loss.detach())


def _idc_inner_step(real: RealData, precision: str, with_net_update: bool = True):
    net = create_model("ConvNet", real.info, torch.Generator().manual_seed(1)).train()
    opt_net = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    params = matched_parameters(net, metric="mse", scope="conv")
    syn = torch.rand(10 * IPC, 3, 32, 32, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    opt = torch.optim.SGD([syn], lr=5e-3, momentum=0.5)
    norm = normalizer(real.info.mean, real.info.std, "cpu")
    g = torch.Generator().manual_seed(3)
    cyc = CyclicBatches(real.class_indices, 64, g)
    dec, lab = Decode(2, "idc"), torch.zeros(IPC, dtype=torch.long)
    total = 0.0
    t0 = time.perf_counter()
    for c in range(10):
        xr = real.pixels(cyc.next(c))
        xs = multi_formation(syn[c * IPC:(c + 1) * IPC], lab, dec)[0]
        x = A.apply(norm(torch.cat([xr, xs])), A.sample_idc("color_crop_cutout", 1, (32, 32), g, siamese=True))
        loss = match_class(net, x[:64], x[64:], c, params, "mse", precision=precision)
        syn.grad = torch.autograd.grad(loss, syn)[0]
        opt.step()
        total += float(loss.detach())
    image_update_s = time.perf_counter() - t0
    if with_net_update:
        stream = CyclicBatches([torch.arange(len(real))], 64, g)

        def batch():
            idx = stream.next()
            return norm(real.pixels(idx)), real.labels[idx]

        def aug(x):
            return A.apply(x, A.sample_idc("color_crop", x.shape[0], (32, 32), g, siamese=False))

        train_steps(net, opt_net, batch, 2000, aug, g, cutmix_p=0.5, precision=precision)
    return total, image_update_s


@pytest.fixture(scope="module")
def cifar_like():
    return _cifar_like()


@pytest.mark.parametrize("mode", ["plain_fp32", "bf16"])
def test_dc_matching_step(benchmark, cifar_like, mode):
    prec = "fp32" if mode == "plain_fp32" else "bf16"
    loss = benchmark.pedantic(lambda: _dc_step(cifar_like, prec), rounds=2, iterations=1)
    RESULTS[f"dc/{mode}"] = benchmark.stats.stats.min
    RESULTS[f"dc_loss/{mode}"] = loss


def test_dc_bf16_faster_than_fp32_and_same_loss():
    if "dc/bf16" not in RESULTS or "dc/plain_fp32" not in RESULTS:
        pytest.skip("run the whole file")
    ratio = RESULTS["dc/plain_fp32"] / RESULTS["dc/bf16"]
    print(f"\nDC matching step: fp32 {RESULTS['dc/plain_fp32']:.2f} s, bf16 {RESULTS['dc/bf16']:.2f} s, {ratio:.2f}x")
    assert abs(RESULTS["dc_loss/bf16"] - RESULTS["dc_loss/plain_fp32"]) <= 0.05 * abs(RESULTS["dc_loss/plain_fp32"])
    assert ratio > 1.0


@pytest.mark.parametrize("mode", ["plain_fp32", "bf16"])
def test_idc_inner_step(benchmark, cifar_like, mode):
    prec = "fp32" if mode == "plain_fp32" else "bf16"
    loss, img_s = benchmark.pedantic(lambda: _idc_inner_step(cifar_like, prec), rounds=2, iterations=1)
    RESULTS[f"idc/{mode}"] = benchmark.stats.stats.min
    RESULTS[f"idc_loss/{mode}"] = loss
    RESULTS[f"idc_image_update/{mode}"] = img_s


def test_idc_bf16_faster_than_fp32_and_same_loss():
    if "idc/bf16" not in RESULTS or "idc/plain_fp32" not in RESULTS:
        pytest.skip("run the whole file")
    ratio = RESULTS["idc/plain_fp32"] / RESULTS["idc/bf16"]
    print(f"\nIDC inner step: fp32 {RESULTS['idc/plain_fp32']:.2f} s, bf16 {RESULTS['idc/bf16']:.2f} s, {ratio:.2f}x "
          f"(image update alone: fp32 {RESULTS['idc_image_update/plain_fp32']:.2f} s, "
          f"bf16 {RESULTS['idc_image_update/bf16']:.2f} s)")
    # bf16 must give the same matching loss; its speed is reported, not asserted: on the 2-core
    # build machine the IDC inner step was not faster in bf16 (the batch-64 network updates
    # got slower), so IDC-lineage grids there are best run in fp32 (see README, Speed).
    assert abs(RESULTS["idc_loss/bf16"] - RESULTS["idc_loss/plain_fp32"]) <= 0.1 * abs(RESULTS["idc_loss/plain_fp32"])


def test_clustering_vs_image_update(benchmark):
    """k-means of one class (5000 x 2048 -> 128 clusters, DREAM's setting) against the image
    update of one IDC inner step (bf16), both measured here."""
    import os
    from pathlib import Path

    from benchmark.data import DataSource, load_dataset

    data_dir = Path(os.environ.get("DBENCH_DATA_DIR", "../shared/data"))
    real = load_dataset("cifar10", True, DataSource.from_env(data_dir, download=False)) \
        if (data_dir / "cifar10_train_part0.npz").exists() else _cifar_like(5000)
    net = create_model("ConvNet", real.info, torch.Generator().manual_seed(1))
    rs = RepresentativeSampler(real, RepresentativeConfig(n=128), 128, torch.Generator().manual_seed(0), "cpu", "bf16")
    t = time.perf_counter()
    feats = rs.embed(net, real.class_indices[0])
    embed_s = time.perf_counter() - t
    assert feats.shape == (5000, 2048)
    benchmark.pedantic(lambda: rs.select_class(feats, 0), rounds=2, iterations=1)
    kmeans_s = benchmark.stats.stats.min
    _, (_, img_s) = _best_of(lambda: _idc_inner_step(_cifar_like(), "bf16", with_net_update=False))
    amortised = (10 * (kmeans_s + embed_s)) / 10  # 10 classes re-clustered every 10 inner steps
    print(f"\nclustering one class: k-means {kmeans_s:.2f} s (+ embedding {embed_s:.2f} s); one inner step's image "
          f"update (10 classes, bf16) {img_s:.2f} s; k-means / image update = {kmeans_s / img_s:.2f}; "
          f"refresh amortised per inner step (interval 10) = {amortised:.2f} s")
    assert kmeans_s < img_s
