"""The register-blocked kernel paths, held to the oracle at the shapes that reach their
edges: single-channel conv (blocks of 4 pixels x 2 SIMD vectors of filters, leftover
filters, rows narrower than a block, tap groups of 4 and their leftovers, 'same'
padding), the dense kernels (row pairs, unit fives, column tails) and the float32 tanh."""
import numpy as np
import pytest

import cconv
from cconv import ops, oracle

TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}
DTYPES = [np.float32, np.float64]

GRAY_CASES = [  # (N, H, W, KH, KW, F)
    (2, 5, 3, 3, 3, 20),     # 'valid' rows of one pixel; 16 + 4 filters
    (3, 9, 11, 2, 2, 16),    # exactly one group of four taps; uneven 'same' padding
    (2, 12, 10, 5, 5, 32),   # the second network's first layer: 25 taps = 6 x 4 + 1
    (4, 7, 9, 1, 3, 9),      # three taps: no full group; 8 + 1 filters in float64
    (1, 6, 6, 3, 2, 8),      # a float32 block is 16 filters: all leftovers
    (2, 28, 28, 3, 3, 16),   # chapter 10
]


@pytest.fixture
def rng():
    return np.random.default_rng(7)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", GRAY_CASES)
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_gray_conv_forward(rng, dtype, case, padding):
    n, h, w, kh, kw, f = case
    x = rng.standard_normal((n, h, w, 1)).astype(dtype)
    k = rng.standard_normal((kh, kw, 1, f)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype)
    z = oracle.conv2d(x, k, b, padding)
    for activation, want in [(None, z), ("tanh", oracle.tanh(z)), ("relu", oracle.relu(z))]:
        np.testing.assert_allclose(ops.conv2d(x, k, b, padding, activation), want,
                                   **TOL[dtype])
    np.testing.assert_allclose(ops.conv2d(x, k, None, padding), oracle.conv2d(x, k, None, padding),
                               **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", GRAY_CASES)
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_gray_conv_backward(rng, dtype, case, padding):
    n, h, w, kh, kw, f = case
    x = rng.standard_normal((n, h, w, 1)).astype(dtype)
    k = rng.standard_normal((kh, kw, 1, f)).astype(dtype)
    g = rng.standard_normal(ops.conv_output_shape(x.shape, k.shape, padding)).astype(dtype)
    for got, want in zip(ops.conv2d_backward(x, k, g, padding),
                         oracle.conv2d_backward(x, k, g, padding)):
        np.testing.assert_allclose(got, want, rtol=TOL[dtype]["rtol"],
                                   atol=TOL[dtype]["atol"] * n * h * w)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,d,u", [(2, 48, 7), (5, 37, 5), (6, 100, 12), (1, 17, 10)])
def test_dense_block_edges(rng, dtype, n, d, u):
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


def test_float32_tanh_accuracy():
    """Against float64 tanh on a dense grid: the rational fit stays within 4e-7 absolute
    and relative, never leaves [-1, 1], is odd, and saturates (at tanh(8) = 1 - 2.3e-7)."""
    x = np.concatenate([np.linspace(-12, 12, 400_001), np.geomspace(1e-30, 12, 20_001)])
    x = np.concatenate([x, -x]).astype(np.float32)
    want = np.tanh(x.astype(np.float64))
    got = ops.tanh(x)
    assert got.dtype == np.float32
    err = np.abs(got - want)
    assert err.max() < 4e-7
    assert (err / np.maximum(np.abs(want), 1e-30)).max() < 4e-7
    assert np.abs(got).max() <= 1
    assert np.array_equal(ops.tanh(-x), -got)
    assert ops.tanh(np.float32([0.0]))[0] == 0
    big = ops.tanh(np.float32([9.5, 30.0, 1e30, 3e38]))
    assert np.all((big <= 1) & (big > 1 - 3e-7))
    # The fused conv activation uses the same function.
    z = ops.conv2d(x[:4096].reshape(1, 64, 64, 1), np.ones((1, 1, 1, 1), np.float32))
    assert np.array_equal(ops.conv2d(x[:4096].reshape(1, 64, 64, 1),
                                     np.ones((1, 1, 1, 1), np.float32), activation="tanh"),
                          ops.tanh(z))


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_gray_paths_same_bits_on_one_and_two_threads(rng, threads, padding):
    x = rng.standard_normal((37, 13, 12, 1)).astype(np.float32)
    k = rng.standard_normal((5, 5, 1, 20)).astype(np.float32)
    g = rng.standard_normal(ops.conv_output_shape(x.shape, k.shape, padding)).astype(np.float32)
    flat = g.reshape(37, -1)
    w = rng.standard_normal((flat.shape[1], 12)).astype(np.float32)
    results = []
    for n in (1, 2):
        cconv.set_num_threads(n)
        results.append([ops.conv2d(x, k, padding=padding, activation="tanh"),
                        *ops.conv2d_backward(x, k, g, padding), ops.dense(flat, w),
                        *ops.dense_backward(flat, w, flat @ w)])
    for a, b in zip(*results):
        assert np.array_equal(a, b)
