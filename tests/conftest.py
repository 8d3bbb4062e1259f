"""Shared fixtures and helpers. Test modules import the helpers with
`from conftest import ...` (pytest puts this folder on sys.path)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cconv

# CCONV_REQUIRE_TEST_DEPS=1 (set by .ci/run): a test that skips is a failure, so that a
# missing test dependency (hypothesis, matplotlib, mlxtend, the installed `cconv` script)
# cannot make tests vanish. Only these skips are allowed, because they depend on the
# machine, not on what is installed: skip reasons (substrings) and why.
ALLOWED_SKIPS = {
    "kernel larger than the image": "test_conv: parameter combinations with no 'valid' output",
    "the level was forced": "test_levels: the caller forced a level (CCONV_CPU_CAPABILITY)",
    "which this CPU or build lacks": "test_levels: the CPU lacks AVX2 or AVX-512",
    "no other level to run here": "test_levels: the CPU runs only the default level",
    "needs Linux /proc": "test_reliability: RSS is read from Linux's /proc",
    "reads ELF symbol names": "test_reliability: Linux shared libraries only",
    "no C compiler on PATH": "test_reliability: nothing to ask whether OpenMP was possible",
    "this compiler cannot build and run OpenMP programs": "test_reliability: no OpenMP here",
    "real CIFAR-10 not available": "test_datasets_cifar10: the real archive (170 MB) is "
                                   "downloaded by hand, not by CI: set CCONV_CIFAR10_DIR",
    "real Fashion-MNIST not available": "test_datasets_fashion_mnist: the real files are "
                                        "fetched by hand: set CCONV_FASHION_MNIST_DIR",
}
REQUIRE_TEST_DEPS = os.environ.get("CCONV_REQUIRE_TEST_DEPS") == "1"


def _unallowed_skip(report):
    """The reason of a skip that CCONV_REQUIRE_TEST_DEPS=1 turns into a failure, or None."""
    if not (REQUIRE_TEST_DEPS and report.skipped) or not isinstance(report.longrepr, tuple):
        return None
    reason = str(report.longrepr[2])
    return None if any(allowed in reason for allowed in ALLOWED_SKIPS) else reason


def _fail_skip(report, reason):
    report.outcome = "failed"
    report.longrepr = (f"skipped ({reason}), but CCONV_REQUIRE_TEST_DEPS=1 allows only the "
                       f"skips listed in tests/conftest.py ALLOWED_SKIPS: install the test "
                       f"dependencies (pip install '.[test]') and the data it names")


def same_cconv_env(**changes):
    """os.environ with changes, for a subprocess that must import the cconv this process
    imported (the installed one in CI, not the unbuilt sources of the checkout). Run
    `python -c` or `-m` from another folder: they put the current one first on sys.path."""
    env = dict(os.environ, **changes)
    package_root = str(Path(cconv.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    return env



def assert_same_bits_at_every_level(tmp_path, script):
    """Runs `script` (Python source) at every built level this CPU runs, each in its own
    process, and asserts that the arrays it saves have the same bits at every level.
    The script writes an .npz to sys.argv[1]; sys.argv[2] and [3] are tests/ops and tests,
    for its imports. Skips when the caller forced a level, or with only one to run."""
    from cconv._kernels import _levels
    if _levels.requested().strip():
        pytest.skip("the level was forced: the levels are compared from an unforced run")
    levels = [name for name in _levels.supported() if name in cconv._kernels.BUILT]
    if len(levels) < 2:
        pytest.skip(f"no other level to run here ({levels})")
    path = tmp_path / "fingerprint.py"
    path.write_text(script)
    here = Path(__file__).resolve().parent
    prints = {}
    for level in levels:
        out = tmp_path / f"{level}.npz"
        subprocess.run([sys.executable, str(path), str(out), str(here / "ops"), str(here)],
                       check=True, cwd=tmp_path, timeout=600,
                       env=same_cconv_env(CCONV_CPU_CAPABILITY=level))
        with np.load(out) as saved:
            prints[level] = dict(saved)
    first, *others = levels
    for level in others:
        assert prints[level].keys() == prints[first].keys()
        for key, a in prints[first].items():
            assert prints[level][key].tobytes() == a.tobytes(), f"{key}: {level} != {first}"

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    reason = _unallowed_skip(report)
    if reason is not None:
        _fail_skip(report, reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """A whole module skipped at import (pytest.importorskip at module level)."""
    report = (yield).get_result()
    reason = _unallowed_skip(report)
    if reason is not None:
        _fail_skip(report, reason)


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
    """Lets a test change the thread count; restores it afterwards (None: the default,
    which adapts to the machine's load)."""
    before = cconv._config._num_threads
    yield
    cconv.set_num_threads(before)
