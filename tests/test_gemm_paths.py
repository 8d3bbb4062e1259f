"""The GEMM kernels (multi-channel conv, wide dense) against cconv.oracle and finite
differences, at shapes that hit every edge of their tiling: rows past a 6-row tile,
filters past a 16- (float32) or 8-wide (float64) panel, depth past a 256-deep block,
batches of 1 and of odd sizes; and the same bits on 1, 2 and 3 threads."""
import numpy as np
import pytest

import cconv
from cconv import ops, oracle
from test_gradcheck import numerical_grad

TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}
DTYPES = [np.float32, np.float64]

CONV_CASES = [  # (N, H, W, C, KH, KW, F)
    (1, 14, 14, 32, 5, 5, 64),   # the tutorial's second conv layer, batch 1
    (7, 14, 14, 32, 5, 5, 64),   # ... a batch that no chunk size divides
    (3, 9, 7, 5, 4, 2, 9),       # even kernels, F below one panel
    (2, 6, 11, 3, 1, 1, 17),     # 1x1: 3 rows of the kernel gradient, fewer than a tile
    (5, 8, 8, 2, 3, 3, 8),       # F exactly one float64 panel
    (2, 5, 5, 7, 5, 5, 33),      # kernel as large as the image; F just past two panels
]

DENSE_CASES = [  # (N, D, U)
    (1, 5, 16),
    (3, 1, 17),
    (50, 700, 130),   # depth past a 256-deep block
    (200, 300, 300),  # rows past a 96-row block, columns past a 256-wide block
    (7, 300, 1100),   # a short batch reads w in place past a 64-deep block; columns past
                      # a 1024-wide block (512 for float64), the last block packed
]


def inputs(rng, dtype, case, padding):
    n, h, w, c, kh, kw, f = case
    x = rng.standard_normal((n, h, w, c)).astype(dtype)
    k = rng.standard_normal((kh, kw, c, f)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype)
    g = rng.standard_normal(ops.conv_output_shape(x.shape, k.shape, padding)).astype(dtype)
    return x, k, b, g


def tol(dtype, terms):
    """Rounding grows with the number of products summed; scale atol by its root."""
    return dict(rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * np.sqrt(terms))


@pytest.fixture
def rng():
    return np.random.default_rng(4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv_multichannel(rng, dtype, case, padding):
    if padding == "valid" and (case[1] < case[4] or case[2] < case[5]):
        pytest.skip("kernel larger than the image")
    x, k, b, g = inputs(rng, dtype, case, padding)
    n, h, w, c, kh, kw, f = case
    want = oracle.relu(oracle.conv2d(x, k, b, padding))
    np.testing.assert_allclose(ops.conv2d(x, k, b, padding, "relu"), want,
                               **tol(dtype, kh * kw * c))
    oh, ow = g.shape[1:3]
    got = ops.conv2d_backward(x, k, g, padding)
    ref = oracle.conv2d_backward(x, k, g, padding)
    for arr, want, terms in zip(got, ref, (kh * kw * f, n * oh * ow, n * oh * ow)):
        assert arr.dtype == dtype
        np.testing.assert_allclose(arr, want, **tol(dtype, terms))


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


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv_multichannel_finite_differences(rng, padding):
    x, k, b, r = inputs(rng, np.float64, (2, 5, 6, 3, 3, 2, 17), padding)
    loss = lambda: float((ops.conv2d(x, k, b, padding) * r).sum())
    grad_x, grad_w, grad_b = ops.conv2d_backward(x, k, r, padding)
    for got, arr in ((grad_x, x), (grad_w, k), (grad_b, b)):
        np.testing.assert_allclose(got, numerical_grad(loss, arr), rtol=1e-6, atol=1e-7)


def test_dense_wide_finite_differences(rng):
    x, w = rng.standard_normal((7, 9)), rng.standard_normal((9, 18))
    b, r = rng.standard_normal(18), rng.standard_normal((7, 18))
    loss = lambda: float((ops.dense(x, w, b) * r).sum())
    grad_x, grad_w, grad_b = ops.dense_backward(x, w, r)
    for got, arr in ((grad_x, x), (grad_w, w), (grad_b, b)):
        np.testing.assert_allclose(got, numerical_grad(loss, arr), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES)
def test_same_bits_on_1_2_3_threads(rng, dtype, threads):
    x, k, b, g = inputs(rng, dtype, (13, 14, 14, 6, 5, 5, 20), "same")
    flat = rng.standard_normal((13, 400)).astype(dtype)
    w = rng.standard_normal((400, 40)).astype(dtype)
    gd = rng.standard_normal((13, 40)).astype(dtype)
    # 150 rows: cut into row groups on 2 and 3 threads.
    tall = rng.standard_normal((150, 300)).astype(dtype)
    w2 = rng.standard_normal((300, 1100)).astype(dtype)
    g2 = rng.standard_normal((150, 1100)).astype(dtype)
    results = []
    for n in (1, 2, 3):
        cconv.set_num_threads(n)
        results.append([ops.conv2d(x, k, b, "same", "relu"),
                        *ops.conv2d_backward(x, k, g, "same"),
                        ops.dense(flat, w), *ops.dense_backward(flat, w, gd),
                        ops.dense(tall, w2), *ops.dense_backward(tall, w2, g2)])
    for other in results[1:]:
        for a, c in zip(results[0], other):
            assert np.array_equal(a, c)


def test_scratch_does_not_grow_with_the_batch(rng, threads):
    """Per-thread frames and packing buffers only: no im2col of the whole batch."""
    cconv.set_num_threads(2)
    for n in (3, 600):
        x, k, b, g = inputs(rng, np.float32, (n, 14, 14, 32, 5, 5, 64), "same")
        ops._scratch.local.arrays = None
        ops.conv2d(x, k, b, "same")
        ops.conv2d_backward(x, k, g, "same")
        ops.dense(x.reshape(n, -1), rng.standard_normal((6272, 32)).astype(np.float32))
        sizes = sorted(a.size for a in ops._scratch.local.arrays.values())
        if n == 3:
            small = sizes
    assert sizes == small
    # The 5x5 convolutions go through Winograd, whose per-thread blocks of transformed
    # tiles and one image's transforms for the kernel gradient take about 0.8M values.
    assert sum(sizes) < x.size // 3


def test_empty_batch(rng):
    x, k, b, g = inputs(rng, np.float32, (2, 6, 6, 3, 3, 3, 5), "same")
    assert ops.conv2d(x[:0], k, b, "same").shape == (0, 6, 6, 5)
    grad_x, grad_w, grad_b = ops.conv2d_backward(x[:0], k, g[:0], "same")
    assert grad_x.shape == (0, 6, 6, 3)
    assert not grad_w.any() and not grad_b.any()
