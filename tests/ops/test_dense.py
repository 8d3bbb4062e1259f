"""dense and dense_backward (cconv/ops/dense.py) against cconv.oracle and finite
differences: the narrow kernels of _dense_narrow (row pairs, unit fives, column tails)
and the GEMM route of layers of 16 or more units (rows past a 96-row block, columns
past a 256-wide block, depth past a 256-deep block); the same bits on 1 and 2 threads;
bad input named."""
import numpy as np
import pytest

import cconv
from cconv import ops, oracle
from conftest import DTYPES, TOL, numerical_grad, tol

DENSE_CASES = [  # (N, D, U)
    (1, 5, 16),
    (3, 1, 17),
    (50, 700, 130),   # depth past a 256-deep block
    (200, 300, 300),  # rows past a 96-row block, columns past a 256-wide block
    (7, 300, 1100),   # a short batch reads w in place past a 64-deep block; columns past
                      # a 1024-wide block (512 for float64), the last block packed
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,d,u", [(1, 5, 1), (3, 1001, 10), (37, 10816, 10), (8, 64, 33),
                                   (2, 48, 7), (5, 37, 5), (6, 100, 12), (1, 17, 10)])
def test_dense(rng, dtype, n, d, u):
    x = rng.standard_normal((n, d)).astype(dtype)
    w = rng.standard_normal((d, u)).astype(dtype)
    b = rng.standard_normal(u).astype(dtype)
    g = rng.standard_normal((n, u)).astype(dtype)
    tol = dict(rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * np.sqrt(d))
    np.testing.assert_allclose(ops.dense(x, w, b), oracle.dense(x, w, b), **tol)
    for got, want in zip(ops.dense_backward(x, w, g), oracle.dense_backward(x, w, g)):
        np.testing.assert_allclose(got, want, rtol=tol["rtol"], atol=tol["atol"] * np.sqrt(n))


def test_dense_row_does_not_depend_on_its_neighbours(rng):
    """A row's logits are the same bits whether it falls in a row pair or is left over."""
    x = rng.standard_normal((5, 301)).astype(np.float32)
    w = rng.standard_normal((301, 10)).astype(np.float32)
    whole = ops.dense(x, w)
    for i in range(5):
        assert np.array_equal(ops.dense(x[i:i + 1], w), whole[i:i + 1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,d,u", DENSE_CASES)
def test_dense_wide(rng, dtype, n, d, u):
    x = rng.standard_normal((n, d)).astype(dtype)
    w = rng.standard_normal((d, u)).astype(dtype)
    b = rng.standard_normal(u).astype(dtype)
    g = rng.standard_normal((n, u)).astype(dtype)
    np.testing.assert_allclose(ops.dense(x, w, b), oracle.dense(x, w, b), **tol(dtype, d))
    got = ops.dense_backward(x, w, g)
    for arr, want, terms in zip(got, oracle.dense_backward(x, w, g), (u, n, n)):
        assert arr.dtype == dtype and arr.shape == want.shape
        np.testing.assert_allclose(arr, want, **tol(dtype, terms))
    assert ops.dense_backward(x, w, g, need_grad_x=False)[0] is None


def test_dense_wide_finite_differences(rng):
    x, w = rng.standard_normal((7, 9)), rng.standard_normal((9, 18))
    b, r = rng.standard_normal(18), rng.standard_normal((7, 18))
    loss = lambda: float((ops.dense(x, w, b) * r).sum())
    grad_x, grad_w, grad_b = ops.dense_backward(x, w, r)
    for got, arr in ((grad_x, x), (grad_w, w), (grad_b, b)):
        np.testing.assert_allclose(got, numerical_grad(loss, arr), rtol=1e-6, atol=1e-7)


def test_same_bits_on_one_and_two_threads(rng, threads):
    x = rng.standard_normal((37, 1200)).astype(np.float32)
    w = rng.standard_normal((1200, 10)).astype(np.float32)
    results = []
    for n in (1, 2):
        cconv.set_num_threads(n)
        results.append([ops.dense(x, w), *ops.dense_backward(x, w, x @ w)])
    for a, b in zip(*results):
        assert np.array_equal(a, b)


def test_bad_input_is_named():
    with pytest.raises((TypeError, ValueError), match="features"):
        ops.dense(np.zeros((2, 3)), np.zeros((4, 2)))
