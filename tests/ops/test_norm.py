"""batch_norm, batch_norm_inference and batch_norm_backward (cconv/ops/norm.py, kernels
_norm) against cconv.oracle in both dtypes, finite differences, accuracy on data far
from zero, the same bits on one and two threads and at every CPU level; bad arguments
named."""

import numpy as np
import pytest

import cconv
from cconv import ops, oracle
from conftest import DTYPES, assert_same_bits_at_every_level, numerical_grad, rel_error, tol

# (N, ..., C): images, dense rows, a single row, rows longer than one chunk
SHAPES = [(4, 5, 6, 3), (7, 10), (1, 1, 1, 2), (3, 40, 50, 8), (2, 3, 700)]


def _affine(rng, c, dtype):
    return (rng.uniform(0.5, 2, c).astype(dtype), rng.standard_normal(c).astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("affine", [True, False])
def test_against_oracle(rng, dtype, shape, affine):
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    c = shape[-1]
    gamma, beta = _affine(rng, c, dtype) if affine else (None, None)
    y, mean, var = ops.batch_norm(x, gamma, beta, 1e-3)
    want_y, want_mean, want_var = oracle.batch_norm(x, gamma, beta, 1e-3)
    assert y.dtype == dtype and y.shape == shape and mean.dtype == var.dtype == np.float64
    # float64 sums over M rows: within a few float64 roundings; y rounded once to dtype
    np.testing.assert_allclose(mean, want_mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(var, want_var, rtol=1e-12)
    np.testing.assert_allclose(y, want_y, **tol(dtype))
    g = rng.standard_normal(shape).astype(dtype)
    for batch in (True, False):
        got = ops.batch_norm_backward(x, g, mean, var, gamma, 1e-3, batch_statistics=batch)
        want = oracle.batch_norm_backward(x, g, want_mean, want_var, gamma, 1e-3,
                                          batch_statistics=batch)
        rows = int(np.prod(shape[:-1]))
        for a, b in zip(got, want):
            assert a.dtype == dtype and a.shape == b.shape
            np.testing.assert_allclose(a, b, **tol(dtype, rows))
    y = ops.batch_norm_inference(x, mean, var, gamma, beta, 1e-3)
    np.testing.assert_allclose(y, oracle.batch_norm_inference(x, mean, var, gamma, beta, 1e-3),
                               **tol(dtype))
    grad_x, _, _ = ops.batch_norm_backward(x, g, mean, var, gamma, need_grad_x=False)
    assert grad_x is None


def test_known_answer():
    x = np.array([[1.0, 10.0], [3.0, 10.0], [5.0, 10.0]])
    y, mean, var = ops.batch_norm(x, epsilon=1e-3)
    np.testing.assert_array_equal(mean, [3.0, 10.0])
    np.testing.assert_array_equal(var, [8 / 3, 0.0])  # biased: divided by M = 3, not 2
    np.testing.assert_allclose(y[:, 0], np.array([-2, 0, 2]) / np.sqrt(8 / 3 + 1e-3))
    np.testing.assert_array_equal(y[:, 1], 0.0)
    y = ops.batch_norm_inference(x, [1.0, 0.0], [3.999, 0.999], [2.0, 1.0], [0.5, 0.0], 1e-3)
    np.testing.assert_allclose(y, [[0.5, 10.0], [2.5, 10.0], [4.5, 10.0]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_statistics_accurate_far_from_zero(rng, dtype):
    """Data with a large mean and a small spread, where one pass of float32 sums (or
    E[x^2] - E[x]^2) loses the variance: two passes in float64 keep it."""
    x = (1000.0 + rng.standard_normal((64, 30, 30, 2)) * 0.01).astype(dtype)
    _, mean, var = ops.batch_norm(x)
    exact = x.astype(np.float64).reshape(-1, 2)
    want_var = np.array([np.var(exact[:, i] - exact[:, i].mean()) for i in range(2)])
    np.testing.assert_allclose(var, want_var, rtol=1e-9)
    np.testing.assert_allclose(mean, exact.mean(axis=0), rtol=1e-12)


@pytest.mark.parametrize("shape", [(3, 4, 4, 2), (5, 3)])
@pytest.mark.parametrize("batch", [True, False])
def test_gradients_by_finite_differences(rng, shape, batch):
    x = rng.standard_normal(shape) * 2 + 1
    gamma, beta = _affine(rng, shape[-1], np.float64)
    mean, var = rng.standard_normal(shape[-1]), rng.uniform(0.5, 2, shape[-1])
    r = rng.standard_normal(shape)

    def loss():
        if batch:
            return float((ops.batch_norm(x, gamma, beta)[0] * r).sum())
        return float((ops.batch_norm_inference(x, mean, var, gamma, beta) * r).sum())

    if batch:
        _, mean, var = ops.batch_norm(x, gamma, beta)
    grad_x, grad_gamma, grad_beta = ops.batch_norm_backward(x, r, mean, var, gamma,
                                                            batch_statistics=batch)
    assert rel_error(grad_x, numerical_grad(loss, x)) < 1e-6
    assert rel_error(grad_gamma, numerical_grad(loss, gamma)) < 1e-6
    assert rel_error(grad_beta, numerical_grad(loss, beta)) < 1e-6


def _outputs(x):
    c = x.shape[-1]
    gamma, beta = np.linspace(0.5, 2, c, dtype=x.dtype), np.linspace(-1, 1, c, dtype=x.dtype)
    y, mean, var = ops.batch_norm(x, gamma, beta)
    g = np.cos(x)
    return [y, mean, var, *ops.batch_norm_backward(x, g, mean, var, gamma),
            ops.batch_norm_inference(x, mean, var, gamma, beta)]


def test_same_bits_on_one_and_two_threads(rng, threads):
    results = []
    for n in (1, 2):
        cconv.set_num_threads(n)
        results.append(_outputs(rng.standard_normal((37, 20, 22, 5)).astype(np.float32))
                       + _outputs(rng.standard_normal((300, 130))))
        rng = np.random.default_rng(0)
    for a, b in zip(*results):
        assert np.array_equal(a, b)


_LEVEL_SCRIPT = """
import sys
import numpy as np
sys.path[:0] = [sys.argv[2], sys.argv[3]]  # tests/ops, tests (conftest)
from test_norm import _outputs
rng = np.random.default_rng(0)
arrays = _outputs(rng.standard_normal((9, 20, 22, 5)).astype(np.float32))
arrays += _outputs(rng.standard_normal((300, 130)))
np.savez(sys.argv[1], *arrays)
"""


def test_same_bits_at_every_level(tmp_path):
    """No FMA and no reordering in _norm: the default level too gives the same bits."""
    assert_same_bits_at_every_level(tmp_path, _LEVEL_SCRIPT)


@pytest.mark.parametrize("call, error, match", [
    (lambda: ops.batch_norm(np.zeros((0, 3))), ValueError, "x: expected a non-empty"),
    (lambda: ops.batch_norm(np.zeros((2, 3), np.int8).astype(object)), TypeError, "x:"),
    (lambda: ops.batch_norm(np.zeros((2, 3)), gamma=np.ones(2)), ValueError,
     r"gamma: expected shape \(3,\)"),
    (lambda: ops.batch_norm(np.zeros((2, 3)), beta=[0, np.nan, 0]), ValueError,
     "beta: contains NaN"),
    (lambda: ops.batch_norm(np.zeros((2, 3)), epsilon=0), ValueError, "epsilon"),
    (lambda: ops.batch_norm_inference(np.zeros((2, 3)), np.zeros(3), -np.ones(3)), ValueError,
     "var: expected variances >= 0"),
    (lambda: ops.batch_norm_backward(np.zeros((2, 3)), np.zeros((3, 2)), np.zeros(3),
                                     np.ones(3)), ValueError, "grad_out: expected shape"),
    (lambda: ops.batch_norm_backward(np.zeros((2, 3)), np.zeros((2, 3), np.float32),
                                     np.zeros(3), np.ones(3)), TypeError, "grad_out"),
])
def test_bad_arguments_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call()
