"""conv2d and conv2d_backward (cconv/ops/conv.py) against cconv.oracle and finite
differences, on every route: the single-channel kernels (blocks of 4 pixels x 2 SIMD
vectors of filters, leftover filters, rows narrower than a block, tap groups of 4 and
their leftovers, 'same' padding), and the GEMM kernels of multi-channel convolutions at
shapes that hit every edge of their tiling (rows past a 6-row tile, filters past a
16- (float32) or 8-wide (float64) panel, depth past a 256-deep block, batches of 1 and
of odd sizes); the same bits on 1, 2 and 3 threads; bad input named. Winograd's route
is in test_winograd.py."""
import numpy as np
import pytest

import cconv
from cconv import activations, ops, oracle
from conftest import DTYPES, TOL, check_op, numerical_grad, tol

CONV_CASES = [  # (N, H, W, C, KH, KW, F)
    (1, 5, 5, 1, 3, 3, 1),
    (3, 7, 5, 2, 3, 4, 5),
    (2, 6, 6, 3, 6, 6, 4),      # kernel as large as the image
    (13, 9, 8, 3, 1, 1, 33),    # 1x1 kernels; F > 16 and not a multiple of 16
    (9, 28, 28, 1, 3, 3, 16),   # chapter 10
    (4, 10, 11, 4, 5, 5, 17),
]

GRAY_CASES = [  # (N, H, W, KH, KW, F)
    (2, 5, 3, 3, 3, 20),     # 'valid' rows of one pixel; 16 + 4 filters
    (3, 9, 11, 2, 2, 16),    # exactly one group of four taps; uneven 'same' padding
    (2, 12, 10, 5, 5, 32),   # the second network's first layer: 25 taps = 6 x 4 + 1
    (4, 7, 9, 1, 3, 9),      # three taps: no full group; 8 + 1 filters in float64
    (1, 6, 6, 3, 2, 8),      # a float32 block is 16 filters: all leftovers
    (2, 28, 28, 3, 3, 16),   # chapter 10
    (2, 9, 9, 4, 2, 16),     # eight taps: one AVX-512 group, two AVX2 ones, no leftover
]

GEMM_CASES = [  # (N, H, W, C, KH, KW, F), C > 1
    (1, 14, 14, 32, 5, 5, 64),   # the tutorial's second conv layer, batch 1
    (7, 14, 14, 32, 5, 5, 64),   # ... a batch that no chunk size divides
    (3, 9, 7, 5, 4, 2, 9),       # even kernels, F below one panel
    (2, 6, 11, 3, 1, 1, 17),     # 1x1: 3 rows of the kernel gradient, fewer than a tile
    (5, 8, 8, 2, 3, 3, 8),       # F exactly one float64 panel
    (2, 5, 5, 7, 5, 5, 33),      # kernel as large as the image; F just past two panels
]


def inputs(rng, dtype, case, padding):
    n, h, w, c, kh, kw, f = case
    x = rng.standard_normal((n, h, w, c)).astype(dtype)
    k = rng.standard_normal((kh, kw, c, f)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype)
    g = rng.standard_normal(ops.conv_output_shape(x.shape, k.shape, padding)).astype(dtype)
    return x, k, b, g


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv2d(rng, dtype, case, padding):
    """Against the oracle; then with every activation of the table, which the kernels
    apply in place: the same bits as the elementwise op on the convolution's output (the
    same function on the SIMD layer; tests/ops/test_activations.py holds it to the
    oracle)."""
    n, h, w, c, kh, kw, f = case
    x = rng.standard_normal((n, h, w, c)).astype(dtype)
    k = rng.standard_normal((kh, kw, c, f)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype)
    z = check_op(ops.conv2d, oracle.conv2d, (x, k, b, padding))
    assert_activations_in_place(z, lambda activation: ops.conv2d(x, k, b, padding, activation))


def assert_activations_in_place(z, conv):
    """conv(activation) is ops.activation(activation, z) to the bit, for every activation
    of the table and None."""
    for activation in [None, *activations.ELEMENTWISE]:
        want = z if activation is None else ops.activation(activation, z)
        np.testing.assert_array_equal(conv(activation), want, err_msg=f"activation={activation}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv2d_backward(rng, dtype, case, padding):
    n, h, w, c, kh, kw, f = case
    x = rng.standard_normal((n, h, w, c)).astype(dtype)
    k = rng.standard_normal((kh, kw, c, f)).astype(dtype)
    g = rng.standard_normal(ops.conv_output_shape(x.shape, k.shape, padding)).astype(dtype)
    for got, want in zip(ops.conv2d_backward(x, k, g, padding),
                         oracle.conv2d_backward(x, k, g, padding)):
        np.testing.assert_allclose(got, want, rtol=TOL[dtype]["rtol"],
                                   atol=TOL[dtype]["atol"] * max(1, n * h * w))
    assert ops.conv2d_backward(x, k, g, padding, need_grad_x=False)[0] is None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", GRAY_CASES)
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_gray_conv_forward(rng, dtype, case, padding):
    n, h, w, kh, kw, f = case
    x = rng.standard_normal((n, h, w, 1)).astype(dtype)
    k = rng.standard_normal((kh, kw, 1, f)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype)
    z = ops.conv2d(x, k, b, padding)
    np.testing.assert_allclose(z, oracle.conv2d(x, k, b, padding), **tol(dtype))
    assert_activations_in_place(z, lambda activation: ops.conv2d(x, k, b, padding, activation))
    np.testing.assert_allclose(ops.conv2d(x, k, None, padding), oracle.conv2d(x, k, None, padding),
                               **tol(dtype))


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
@pytest.mark.parametrize("case", GEMM_CASES)
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


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv_multichannel_finite_differences(rng, padding):
    x, k, b, r = inputs(rng, np.float64, (2, 5, 6, 3, 3, 2, 17), padding)
    loss = lambda: float((ops.conv2d(x, k, b, padding) * r).sum())
    grad_x, grad_w, grad_b = ops.conv2d_backward(x, k, r, padding)
    for got, arr in ((grad_x, x), (grad_w, k), (grad_b, b)):
        np.testing.assert_allclose(got, numerical_grad(loss, arr), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_same_with_the_tutorials_channels(rng, dtype):
    """The second conv of the tutorial (32 -> 64 channels, 5x5, 'same') on 14x14 maps."""
    x = rng.standard_normal((2, 14, 14, 32)).astype(dtype)
    k = rng.standard_normal((5, 5, 32, 64)).astype(dtype) * 0.1
    b = rng.standard_normal(64).astype(dtype)
    scale = np.sqrt(5 * 5 * 32) * 0.1
    tol = dict(rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * scale * 10)
    np.testing.assert_allclose(ops.conv2d(x, k, b, "same", "relu"),
                               oracle.relu(oracle.conv2d(x, k, b, "same")), **tol)
    g = rng.standard_normal((2, 14, 14, 64)).astype(dtype)
    for got, want in zip(ops.conv2d_backward(x, k, g, "same"),
                         oracle.conv2d_backward(x, k, g, "same")):
        np.testing.assert_allclose(got, want, rtol=tol["rtol"],
                                   atol=tol["atol"] * np.sqrt(2 * 14 * 14 * 64))


def test_noncontiguous_and_readonly_inputs(rng):
    x = rng.standard_normal((4, 12, 10, 3))
    k = rng.standard_normal((3, 3, 3, 5))
    view = np.asfortranarray(x)[:, ::-1][:, ::-1]
    view.setflags(write=False)
    assert np.array_equal(ops.conv2d(view, k), ops.conv2d(np.ascontiguousarray(x), k))


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


def test_same_bits_on_one_and_two_threads(rng, threads):
    x = rng.standard_normal((37, 20, 20, 3)).astype(np.float32)
    k = rng.standard_normal((5, 5, 3, 20)).astype(np.float32)
    g = rng.standard_normal((37, 16, 16, 20)).astype(np.float32)
    results = []
    for n in (1, 2):
        cconv.set_num_threads(n)
        results.append([ops.conv2d(x, k, activation="tanh"), *ops.conv2d_backward(x, k, g)])
    for a, b in zip(*results):
        assert np.array_equal(a, b)


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


@pytest.mark.parametrize("call, match", [
    (lambda: ops.conv2d(np.zeros((2, 5, 5)), np.zeros((3, 3, 1, 2))), "x: expected a 4-d"),
    (lambda: ops.conv2d(np.zeros((2, 5, 5, 2)), np.zeros((3, 3, 1, 2))), "channels"),
    (lambda: ops.conv2d(np.zeros((2, 2, 5, 1)), np.zeros((3, 3, 1, 2))), "smaller than"),
    (lambda: ops.conv2d(np.zeros((2, 5, 5, 1), np.float32), np.zeros((3, 3, 1, 2))),
     "w: expected dtype float32"),
    (lambda: ops.conv2d(np.zeros((2, 5, 5, 1), complex), np.zeros((3, 3, 1, 2))),
     "x: expected dtype float32 or float64"),
    (lambda: ops.conv2d(np.zeros((2, 5, 5, 1)), np.zeros((3, 3, 1, 2)), padding="full"),
     "padding"),
    (lambda: ops.conv2d(np.zeros((2, 5, 5, 1)), np.zeros((3, 3, 1, 2)), np.zeros(3)), "b:"),
    (lambda: ops.conv2d_backward(np.zeros((2, 5, 5, 1)), np.zeros((3, 3, 1, 2)),
                                 np.zeros((2, 4, 3, 2))), "grad_out"),
    # an output written over the images it is computed from
    (lambda: (lambda x: ops.conv2d(x, np.ones((1, 1, 1, 1)), out=x))(np.zeros((2, 5, 5, 1))),
     "out: must not overlap x"),
])
def test_bad_input_is_named(call, match):
    with pytest.raises((TypeError, ValueError), match=match):
        call()
