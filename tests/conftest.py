import os
from pathlib import Path

import pytest

import cconv


@pytest.fixture(scope="session")
def mnist_dir():
    """The real MNIST folder from CCONV_DATA_DIR. Skips when it is not set, unless
    CCONV_REQUIRE_MNIST=1 (as in CI), which turns a missing folder into a failure."""
    path = os.environ.get("CCONV_DATA_DIR")
    if not path or not Path(path).exists():
        if os.environ.get("CCONV_REQUIRE_MNIST") == "1":
            pytest.fail(f"CCONV_REQUIRE_MNIST=1 but CCONV_DATA_DIR={path!r} is not a folder")
        pytest.skip("real MNIST not available: set CCONV_DATA_DIR to a folder of the IDX files")
    return path


@pytest.fixture
def threads():
    """Lets a test change the thread count; restores it afterwards."""
    before = cconv.get_num_threads()
    yield
    cconv.set_num_threads(before)
