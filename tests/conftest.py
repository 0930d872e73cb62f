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


# Tables, the site and the paired views are pure functions of stored rows: these tests run the
# CLI in a subprocess where torch, the method code and MLflow cannot be imported at all.
TORCHLESS_BLOCKED = ("torch", "torchvision", "methods", "baselines", "benchmark.models", "benchmark.api",
                     "benchmark.registry", "benchmark.evaluate", "benchmark.grid", "benchmark.runner",
                     "benchmark.continual", "mlflow")

_TORCHLESS = """
import importlib.abc, sys
BLOCKED = {blocked!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError(f"blocked for this test: {{name}}")
        return None
sys.meta_path.insert(0, Block())
from benchmark.cli import app
app(sys.argv[1:], standalone_mode=True)
"""


@pytest.fixture
def torchless_cli():
    """``torchless_cli(*args)``: run ``dbench args`` with torch and method code unimportable."""
    import subprocess
    import sys

    def run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
        code = _TORCHLESS.format(blocked=TORCHLESS_BLOCKED)
        return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout)

    return run
