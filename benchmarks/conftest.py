import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("DBENCH_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "mnist.npz").exists():
        pytest.skip("real data not available (set DBENCH_DATA_DIR)")
    return SHARED_DATA
