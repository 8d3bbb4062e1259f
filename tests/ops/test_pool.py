"""max_pool2d and kernel_pool (cconv/ops/pool.py) against cconv.oracle in both dtypes
and finite differences, with Keras's and TensorFlow's shapes and padding; the same bits
on 1 and 2 threads; bad input named."""
import numpy as np
import pytest

import cconv
from cconv import ops, oracle
from cconv.layers import MaxPooling2D
from conftest import DTYPES, TOL, numerical_grad, rel_error

POOL_CASES = [  # (N, H, W, C), pool_size
    ((1, 1, 1, 1), 1),
    ((2, 7, 5, 3), 2),          # odd sizes: 'valid' drops the last row and column
    ((3, 28, 28, 32), 2),       # the tutorial's first pooling
    ((2, 14, 14, 64), 2),       # and its second
    ((2, 9, 10, 4), (3, 4)),    # rectangular windows, neither dividing the size
    ((1, 5, 5, 2), 5),          # one window as large as the image
    ((4, 6, 11, 17), 3),
    ((2, 4, 4, 3), (4, 1)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES)
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("ties", [False, True])
def test_max_pool2d(rng, dtype, case, padding, ties):
    shape, pool = case
    x = (rng.integers(0, 3, shape) if ties else rng.standard_normal(shape)).astype(dtype)
    y, argmax = ops.max_pool2d(x, pool, padding)
    want_y, want_argmax = oracle.max_pool2d(x, pool, padding)
    assert y.dtype == dtype and argmax.dtype == np.int32
    # No arithmetic: the same values, and ties broken the same way (first in row-major order).
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(argmax, want_argmax)
    y2, none = ops.max_pool2d(x, pool, padding, need_argmax=False)
    assert none is None and np.array_equal(y2, y)
    g = rng.standard_normal(y.shape).astype(dtype)
    got = ops.max_pool2d_backward(g, argmax, x.shape, pool, padding)
    np.testing.assert_array_equal(got, oracle.max_pool2d_backward(g, want_argmax, x.shape,
                                                                  pool, padding))


@pytest.mark.parametrize("h,w,pool,padding,out_hw", [
    (7, 5, 2, "valid", (3, 2)), (7, 5, 2, "same", (4, 3)),
    (28, 28, 2, "valid", (14, 14)), (14, 14, 2, "same", (7, 7)),
    (5, 5, 3, "valid", (1, 1)), (5, 5, 3, "same", (2, 2)), (2, 2, 3, "same", (1, 1)),
])
def test_max_pool2d_output_shape_is_keras(h, w, pool, padding, out_hw):
    """Keras: 'valid' floors (H - P) / S + 1, 'same' takes ceil(H / S)."""
    x = np.zeros((1, h, w, 1))
    assert ops.max_pool2d(x, pool, padding)[0].shape == (1,) + out_hw + (1,)
    assert MaxPooling2D(pool, padding=padding).compute_output_shape((h, w, 1)) == out_hw + (1,)


@pytest.mark.parametrize("padding,want", [
    ("valid", [[6, 8], [16, 18]]),          # column 4 is dropped
    ("same", [[6, 8, 9], [16, 18, 19]]),    # column 4 is a window of its own
])
def test_max_pool2d_known_answer(padding, want):
    x = np.arange(20.0).reshape(1, 4, 5, 1)
    y, argmax = ops.max_pool2d(x, 2, padding)
    np.testing.assert_array_equal(y[0, :, :, 0], want)
    np.testing.assert_array_equal(argmax[0, :, :, 0], want)  # x's values are its indices


def test_max_pool2d_same_padding_is_tensorflows():
    """TensorFlow pads 'same' with the smaller half first: for H = 4 and a window of 3,
    one row above and one below, so the windows are rows 0-1 and 2-3."""
    x = np.arange(16.0).reshape(1, 4, 4, 1)
    y, _ = ops.max_pool2d(x, 3, "same")
    np.testing.assert_array_equal(y[0, :, :, 0], [[5, 7], [13, 15]])


def test_max_pool2d_backward_rejects_a_foreign_argmax(rng):
    x = rng.standard_normal((2, 6, 6, 3))
    y, argmax = ops.max_pool2d(x, 2)
    g = np.ones_like(y)
    for bad in (argmax + 3, argmax[:, ::-1], -argmax - 1, argmax + 6 * 3 * 2):
        with pytest.raises(ValueError, match="argmax: some indices lie outside"):
            ops.max_pool2d_backward(g, np.ascontiguousarray(bad), x.shape, 2)
    # A different pool size reads the same array as other windows.
    with pytest.raises(ValueError, match="argmax"):
        ops.max_pool2d_backward(g[:, :3, :3], np.ascontiguousarray(argmax[:, :3, :3]),
                                (2, 9, 9, 3), 3)


def test_max_pool2d_writes_into_given_buffers(rng):
    x = rng.standard_normal((3, 8, 6, 5)).astype(np.float32)
    out = np.full((3, 4, 3, 5), np.nan, np.float32)
    arg = np.full(out.shape, -1, np.int32)
    y, a = ops.max_pool2d(x, 2, out=out, out_argmax=arg)
    assert y is out and a is arg
    want_y, want_a = oracle.max_pool2d(x, 2)
    assert np.array_equal(out, want_y) and np.array_equal(arg, want_a)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["max", "mean", "sum"])
@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (2, 6, 6, 1), (3, 7, 5, 16),
                                   (2, 33, 40, 4), (2, 3, 4, 5, 6)])
@pytest.mark.parametrize("ties", [False, True])
def test_kernel_pool(rng, dtype, mode, shape, ties):
    x = (rng.integers(0, 3, shape) if ties else rng.standard_normal(shape)).astype(dtype)
    y = ops.kernel_pool(x, mode)
    assert y.shape == shape[:-1] + (1,) and y.dtype == dtype
    tol = dict(rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * shape[-1])
    np.testing.assert_allclose(y, oracle.kernel_pool(x, mode), **tol)
    g = rng.standard_normal(y.shape).astype(dtype)
    np.testing.assert_allclose(ops.kernel_pool_backward(x, g, mode),
                               oracle.kernel_pool_backward(x, g, mode), **tol)


def test_kernel_pool_is_the_chapters_picture():
    """Four kernels' 2x2 maps; pooled elementwise across the kernels."""
    maps = np.array([[[1, 5], [0, 2]], [[3, 1], [4, 2]], [[2, 2], [-1, 8]], [[0, 0], [1, 0]]],
                    dtype=float)
    x = maps.transpose(1, 2, 0)[None]  # (1, 2, 2, 4): the kernels on the last axis
    np.testing.assert_array_equal(ops.kernel_pool(x, "max")[0, :, :, 0], [[3, 5], [4, 8]])
    np.testing.assert_array_equal(ops.kernel_pool(x, "sum")[0, :, :, 0], [[6, 8], [4, 12]])
    np.testing.assert_array_equal(ops.kernel_pool(x, "mean")[0, :, :, 0], [[1.5, 2], [1, 3]])


def distinct(rng, shape):
    """Values at least 1e-3 apart, so no max changes hands within a step of H."""
    return (rng.permutation(int(np.prod(shape))) * 1e-3 - 0.5).reshape(shape)


@pytest.mark.parametrize("module", [oracle, ops])
@pytest.mark.parametrize("shape,pool,padding", [((2, 5, 6, 3), 2, "valid"),
                                                ((2, 5, 6, 3), 2, "same"),
                                                ((1, 7, 4, 2), (3, 2), "same")])
def test_max_pool2d_gradient(module, shape, pool, padding):
    rng = np.random.default_rng(5)
    x = distinct(rng, shape)
    r = rng.standard_normal(module.max_pool2d(x, pool, padding)[0].shape)
    loss = lambda: float((module.max_pool2d(x, pool, padding)[0] * r).sum())
    _, argmax = module.max_pool2d(x, pool, padding)
    got = module.max_pool2d_backward(r, argmax, x.shape, pool, padding)
    assert rel_error(got, numerical_grad(loss, x)) < 1e-6


@pytest.mark.parametrize("module", [oracle, ops])
@pytest.mark.parametrize("mode", ["max", "mean", "sum"])
def test_kernel_pool_gradient(module, mode):
    rng = np.random.default_rng(6)
    x = distinct(rng, (2, 3, 4, 5))
    r = rng.standard_normal((2, 3, 4, 1))
    loss = lambda: float((module.kernel_pool(x, mode) * r).sum())
    got = module.kernel_pool_backward(x, r, mode)
    assert rel_error(got, numerical_grad(loss, x)) < 1e-6


def test_same_bits_on_one_and_two_threads(rng, threads):
    x = rng.standard_normal((37, 20, 22, 33)).astype(np.float32)
    results = []
    for n in (1, 2):
        cconv.set_num_threads(n)
        y, a = ops.max_pool2d(x, 3, "same")
        results.append([y, a, ops.max_pool2d_backward(y, a, x.shape, 3, "same"),
                        ops.kernel_pool(x, "mean"), ops.kernel_pool_backward(x, x[..., :1], "max")])
    for a, b in zip(*results):
        assert np.array_equal(a, b)

X4 = np.zeros((2, 6, 6, 3))


@pytest.mark.parametrize("call, error, match", [
    (lambda: ops.max_pool2d(np.zeros((6, 6, 3)), 2), ValueError, "x: expected a 4-d"),
    (lambda: ops.max_pool2d(X4, 7), ValueError, "pool_size: a 7x7 window is larger"),
    (lambda: ops.max_pool2d(X4, (2, 7)), ValueError, "pool_size: a 2x7 window"),
    (lambda: ops.max_pool2d(X4, 0), ValueError, "pool_size: expected positive"),
    (lambda: ops.max_pool2d(X4, 2.0), TypeError, "pool_size: expected positive ints"),
    (lambda: ops.max_pool2d(X4, (2, 2, 2)), ValueError, "pool_size: expected an int or a pair"),
    (lambda: ops.max_pool2d(X4, 2, "full"), ValueError, "padding"),
    (lambda: ops.max_pool2d(X4.astype(int), 2), TypeError, "x: expected dtype"),
    (lambda: ops.max_pool2d(X4, 2, out=np.zeros((2, 3, 3, 3), np.float32)), ValueError, "out:"),
    (lambda: ops.max_pool2d(X4, 2, out_argmax=np.zeros((2, 3, 3, 3))), ValueError,
     "out_argmax"),
    (lambda: ops.max_pool2d_backward(np.zeros((2, 3, 3, 3)), np.zeros((2, 3, 3, 3), np.int32),
                                     (2, 6, 6), 2), ValueError, "x_shape"),
    (lambda: ops.max_pool2d_backward(np.zeros((2, 2, 3, 3)), np.zeros((2, 3, 3, 3), np.int32),
                                     X4.shape, 2), ValueError, r"grad_out: expected shape \(2, 3"),
    (lambda: ops.max_pool2d_backward(np.zeros((2, 3, 3, 3)), np.zeros((2, 3, 3, 3)),
                                     X4.shape, 2), TypeError, "argmax: expected an integer"),
    (lambda: ops.max_pool2d_backward(np.zeros((2, 3, 3, 3)), np.zeros((2, 3, 3), np.int32),
                                     X4.shape, 2), ValueError, "argmax: expected shape"),
    (lambda: ops.max_pool2d_backward(np.zeros((2, 3, 3, 3)), [0], X4.shape, 2), TypeError,
     "argmax: expected a numpy array"),
    (lambda: ops.kernel_pool(X4, "median"), ValueError, "mode: expected one of"),
    (lambda: ops.kernel_pool(np.zeros(4)), ValueError, "x: expected an array of shape"),
    (lambda: ops.kernel_pool(np.zeros((3, 0))), ValueError, "at least one kernel"),
    (lambda: ops.kernel_pool_backward(X4, np.zeros((2, 6, 6, 3))), ValueError,
     r"grad_out: expected shape \(2, 6, 6, 1\)"),
    (lambda: ops.kernel_pool_backward(X4, np.zeros((2, 6, 6, 1), np.float32)), TypeError,
     "grad_out: expected dtype float64"),
])
def test_bad_pool_input_is_named(call, error, match):
    with pytest.raises(error, match=match):
        call()
