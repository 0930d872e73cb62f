"""Evaluation-network training speed: the fast path vs a plain fp32 NCHW loop, same run.

Run: pytest benchmarks/bench_eval.py -m bench --benchmark-enable
Each benchmark trains one ConvNet-3 for a fixed number of steps on a CIFAR-10-shaped
IPC-10 set (100 images, one batch per step) with the DSA protocol; compare the rows.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from benchmark.data import get_info
from benchmark.evaluate import TensorSource, TrainSettings, get_protocol, train_model
from benchmark.evaluate import test_accuracy as run_test_pass  # not a test: keep pytest from collecting it

pytestmark = pytest.mark.bench
STEPS = 30


class _NoTest:
    """Test set stub so the benchmark times training only."""

    def __len__(self):
        return 1

    def iter_batches(self, bs, device):
        yield torch.zeros(1, 3, 32, 32), torch.zeros(1, dtype=torch.long)


def _source():
    g = torch.Generator().manual_seed(0)
    return TensorSource(torch.randn(100, 3, 32, 32, generator=g), torch.arange(10).repeat_interleave(10))


@pytest.mark.parametrize("variant", ["fp32_nchw_reference", "bf16", "bf16_channels_last", "bf16_compile"])
def test_train_one_eval_model(benchmark, variant):
    info = get_info("cifar10")
    proto = get_protocol("dsa").resolve(info, "ConvNet")
    settings = {
        "fp32_nchw_reference": TrainSettings(precision="fp32", max_steps=STEPS),
        "bf16": TrainSettings(precision="bf16", max_steps=STEPS),
        "bf16_channels_last": TrainSettings(precision="bf16", channels_last=True, max_steps=STEPS),
        "bf16_compile": TrainSettings(precision="bf16", compile=True, max_steps=STEPS),
    }[variant]
    src = _source()
    if settings.compile:  # compile once outside the timed region (it is cached per process)
        train_model(src, proto, "ConvNet", info, _NoTest(), seed=0, settings=settings)
    r = benchmark.pedantic(lambda: train_model(src, proto, "ConvNet", info, _NoTest(), seed=0, settings=settings),
                           rounds=3, iterations=1)
    benchmark.extra_info["ms_per_step"] = 1000 * benchmark.stats.stats.mean / r.steps
    assert r.steps == STEPS


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_test_set_pass(benchmark, precision, shared_data):
    from benchmark.data import DataSource, load_dataset
    from benchmark.models import create_model

    test = load_dataset("cifar10", False, DataSource(shared_data, download=False))
    model = create_model("ConvNet", test.info, torch.Generator().manual_seed(0))
    benchmark.pedantic(lambda: run_test_pass(model, test, TrainSettings(precision=precision)), rounds=2, iterations=1)


def test_peak_rss_of_loaded_cifar10(benchmark, shared_data):
    """Data is held once as uint8: loading CIFAR-10 train+test should add ~180 MB, not GBs."""
    code = (
        "import resource,sys,pathlib;from benchmark.data import load_dataset,DataSource;"
        "b=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss;"
        f"s=DataSource(pathlib.Path('{shared_data}'),download=False);tr=load_dataset('cifar10',True,s);te=load_dataset('cifar10',False,s);"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss-b)/1024, tr.nbytes()/2**20)"
    )
    out = benchmark.pedantic(
        lambda: subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout,
        rounds=1, iterations=1)
    delta_mib, data_mib = map(float, out.split())
    benchmark.extra_info.update(peak_rss_delta_mib=delta_mib, uint8_data_mib=data_mib)
    assert data_mib < 160
