from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never try the network: a missing dataset must fail fast with the clear error.
os.environ.setdefault("DBENCH_NO_DOWNLOAD", "1")

SHARED_DATA = Path(os.environ.get("DBENCH_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real MNIST/CIFAR-10 .npz files (../shared/data); tests that need them skip without."""
    if not (SHARED_DATA / "mnist.npz").exists():
        pytest.skip("real data not available (set DBENCH_DATA_DIR or put ../shared/data beside the repo)")
    return SHARED_DATA


@pytest.fixture
def store_dir(tmp_path) -> Path:
    return tmp_path / "store"


@pytest.fixture(scope="session")
def digits():
    from benchmark.data import load_dataset

    return load_dataset("digits", True), load_dataset("digits", False)


# One torch thread: test tensors are tiny, and two threads per process spin against each
# other (and against any other process) on a 2-core machine, making tests 10-40x slower
# under load. Benchmarks (benchmarks/) set their own thread counts.
def pytest_configure(config):
    import torch

    torch.set_num_threads(1)
