"""k-means speed: one CIFAR-10-sized class (5000 x 2048 features) into 128 clusters.

Run: ``.venv/bin/pytest benchmarks/bench_kmeans.py -m bench --benchmark-enable``
(the default test run skips ``bench``). Target: a few seconds on a 2-core CPU.

The features are synthetic but shaped like ConvNet-3 embeddings (non-negative, clustered,
2048-d), so the run needs no data; ``DBENCH_BENCH_REAL=1`` with ``DBENCH_DATA_DIR`` set uses
the embedding of CIFAR-10 class 0 by an untrained ConvNet-3 instead.
"""

from __future__ import annotations

import os

import pytest
import torch

from benchmark.kmeans import kmeans
from benchmark.seed import make_generator

pytestmark = pytest.mark.bench


def _features() -> torch.Tensor:
    if os.environ.get("DBENCH_BENCH_REAL") == "1":
        from benchmark.data import load_dataset
        from benchmark.features import compute_features
        from benchmark.models import create_model

        real = load_dataset("cifar10")
        model = create_model("ConvNet", real.info, make_generator(0, "bench-model"))
        return compute_features(model, _Sub(real, real.class_indices[0]))
    g = make_generator(0, "bench-features")
    centers = torch.randn(300, 2048, generator=g)
    assign = torch.randint(300, (5000,), generator=g)
    return (centers[assign] + 0.7 * torch.randn(5000, 2048, generator=g)).relu_()


class _Sub:
    """Just enough of RealData for compute_features: one class."""

    def __init__(self, real, idx):
        self.real, self.idx = real, idx

    def __len__(self):
        return self.idx.numel()

    def batch(self, i, device="cpu"):
        return self.real.batch(self.idx[i], device)


@pytest.fixture(scope="module")
def feats() -> torch.Tensor:
    return _features()


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_kmeans_5000x2048_k128(benchmark, feats, device):
    x = feats.to(device)

    def run():
        r = kmeans(x, 128, generator=make_generator(0, "bench"))
        if device == "cuda":
            torch.cuda.synchronize()
        return r

    r = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update({"n_iter": r.n_iter, "converged": r.converged})
    assert r.centers.shape == (128, 2048)
