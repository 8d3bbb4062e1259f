"""Shared fixtures and helpers. Test modules import the helpers with
`from conftest import ...` (pytest puts this folder on sys.path)."""
import os
from pathlib import Path

import numpy as np
import pytest

import cconv

DTYPES = [np.float32, np.float64]
# The one tolerance table: rtol and atol for a value that sums few terms (tol() scales
# atol for longer sums), and eps, the relative rounding of one term, with margin.
TOL = {np.float32: dict(rtol=2e-5, atol=2e-5, eps=2e-6),
       np.float64: dict(rtol=1e-12, atol=1e-12, eps=1e-14)}
H = 1e-6  # the step of numerical_grad


def tol(dtype, terms=1):
    """assert_allclose's rtol and atol for `dtype`, atol scaled by sqrt(terms): rounding
    grows with the number of products summed."""
    return dict(rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * np.sqrt(terms))


def assert_close(got, want, dtype, terms=1):
    """Values within tol(dtype, terms): for results of float64 references."""
    np.testing.assert_allclose(got, want, **tol(dtype, terms))


def check_op(op, oracle_op, args, kwargs=None, terms=1):
    """op(*args, **kwargs) against oracle_op(*args, **kwargs), as tinygrad's
    helper_test_op does: each output (or each of a tuple of outputs; None must match None)
    has the oracle's shape and dtype, then its values within tol(dtype, terms). Returns
    op's result."""
    kwargs = kwargs or {}
    got, want = op(*args, **kwargs), oracle_op(*args, **kwargs)
    pairs = zip(got, want) if isinstance(want, tuple) else [(got, want)]
    for g, w in pairs:
        if w is None:
            assert g is None
            continue
        assert g.shape == w.shape, f"shape {g.shape}, oracle's {w.shape}"
        assert g.dtype == w.dtype, f"dtype {g.dtype}, oracle's {w.dtype}"
        np.testing.assert_allclose(g, w, **tol(w.dtype.type, terms))
    return got


def numerical_grad(f, a):
    """d sum(f() * R) / d a, by centred differences; f reads `a`, which is perturbed in place."""
    grad = np.zeros_like(a)
    it = np.nditer(a, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = a[i]
        a[i] = old + H
        plus = f()
        a[i] = old - H
        minus = f()
        a[i] = old
        grad[i] = (plus - minus) / (2 * H)
    return grad


def rel_error(a, b):
    return np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b)))


def keras_adam(w, grads, lr, beta_1, beta_2, epsilon):
    """Keras's Adam written out in float64: bias corrections folded into the step size,
    epsilon added to sqrt(v)."""
    w = w.astype(np.float64).copy()
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g * g
        w = w - lr * np.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t) * m / (np.sqrt(v) + epsilon)
    return w


class FrozenOptimizer(cconv.optimizers.Optimizer):
    """Leaves the weights alone, so that a model's outputs during fit are known in
    advance: what fit reports can then be worked out by hand."""

    def update(self, params, grads):
        pass


@pytest.fixture
def rng():
    return np.random.default_rng(0)


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
