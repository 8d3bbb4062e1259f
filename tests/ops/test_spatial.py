"""rescale, zero_pad2d and the global poolings (cconv/ops/spatial.py, vectorised NumPy)
against cconv.oracle in both dtypes and finite differences; bad arguments named."""
import numpy as np
import pytest

from cconv import ops, oracle
from conftest import DTYPES, assert_close, numerical_grad, rel_error

SHAPES = [(1, 1, 1, 1), (2, 5, 7, 3), (3, 4, 4, 8), (1, 9, 2, 5)]
PADDINGS = [0, 2, (1, 3), ((0, 2), (3, 1)), ((1, 0), 2), [[2, 2], [0, 0]]]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale,offset", [(1 / 255, 0.0), (2.5, -1.25), (-3, 7),
                                          ([0.5, -2.0, 3.0], [1.0, 0.0, -0.5])])
def test_rescale(rng, dtype, scale, offset):
    x = (rng.standard_normal((2, 4, 5, 3)) * 100).astype(dtype)
    y = ops.rescale(x, scale, offset)
    assert y.dtype == dtype and y.shape == x.shape
    # the same two roundings (multiply, then add) in x's dtype: the same bits
    np.testing.assert_array_equal(y, oracle.rescale(x, scale, offset))
    g = rng.standard_normal(x.shape).astype(dtype)
    got = ops.rescale_backward(g, scale)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, oracle.rescale_backward(g, scale))


def test_rescale_known_answer():
    x = np.array([[0.0, 255.0, 51.0]], np.float32)
    np.testing.assert_allclose(ops.rescale(x, 1 / 255), [[0, 1, 0.2]], rtol=1e-6)
    np.testing.assert_allclose(ops.rescale(x, 1 / 127.5, -1), [[-1, 1, -0.6]], rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("padding", PADDINGS)
def test_zero_pad2d(rng, dtype, shape, padding):
    x = rng.standard_normal(shape).astype(dtype)
    y = ops.zero_pad2d(x, padding)
    want = oracle.zero_pad2d(x, padding)
    assert y.dtype == dtype and y.shape == want.shape
    np.testing.assert_array_equal(y, want)
    g = rng.standard_normal(y.shape).astype(dtype)
    got = ops.zero_pad2d_backward(g, x.shape, padding)
    assert got.dtype == dtype and got.flags.c_contiguous
    np.testing.assert_array_equal(got, oracle.zero_pad2d_backward(g, x.shape, padding))


def test_zero_pad2d_known_answer_and_out():
    x = np.arange(1, 5, dtype=np.float64).reshape(1, 2, 2, 1)
    want = [[0, 0, 0, 0], [0, 0, 1, 2], [0, 0, 3, 4], [0, 0, 0, 0], [0, 0, 0, 0]]
    out = np.full((1, 5, 4, 1), 9.0)
    y = ops.zero_pad2d(x, ((1, 2), (2, 0)), out=out)
    assert y is out
    np.testing.assert_array_equal(y[0, :, :, 0], want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ties", [False, True])
def test_global_pools(rng, dtype, shape, ties):
    x = (rng.integers(0, 3, shape) if ties else rng.standard_normal(shape)).astype(dtype)
    h, w = shape[1:3]
    y = ops.global_avg_pool2d(x)
    assert y.dtype == dtype and y.shape == (shape[0], shape[3])
    assert_close(y, oracle.global_avg_pool2d(x), dtype, terms=h * w)
    g = rng.standard_normal(y.shape).astype(dtype)
    got = ops.global_avg_pool2d_backward(g, x.shape)
    assert got.dtype == dtype and got.shape == shape
    assert_close(got, oracle.global_avg_pool2d_backward(g, x.shape), dtype)
    y, argmax = ops.global_max_pool2d(x)
    want_y, want_argmax = oracle.global_max_pool2d(x)
    assert y.dtype == dtype and y.shape == (shape[0], shape[3])
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(argmax, want_argmax)  # ties: the first, row-major
    y2, none = ops.global_max_pool2d(x, need_argmax=False)
    assert none is None and np.array_equal(y2, y)
    got = ops.global_max_pool2d_backward(g, argmax, x.shape)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, oracle.global_max_pool2d_backward(g, want_argmax,
                                                                         x.shape))


def test_global_max_pool2d_tie_goes_to_the_first_pixel_in_row_major_order():
    x = np.zeros((1, 3, 3, 2))
    x[0, 1, 2, 0] = x[0, 2, 0, 0] = 5  # row 1 comes first
    x[0, 0, 1, 1] = x[0, 0, 2, 1] = 5  # column 1 comes first
    for module in (ops, oracle):
        y, argmax = module.global_max_pool2d(x)
        np.testing.assert_array_equal(argmax, [[1 * 3 + 2, 1]])
        grad = module.global_max_pool2d_backward(np.array([[1.0, 2.0]]), argmax, x.shape)
        assert grad[0, 1, 2, 0] == 1 and grad[0, 0, 1, 1] == 2 and grad.sum() == 3


def distinct(rng, shape):
    return (rng.permutation(int(np.prod(shape))) * 1e-3 - 0.5).reshape(shape)


@pytest.mark.parametrize("module", [oracle, ops])
def test_gradients_are_finite_differences(module):
    rng = np.random.default_rng(7)
    x = distinct(rng, (2, 4, 3, 3))
    cases = [
        (lambda: module.rescale(x, 2.5, -1.0), lambda r: module.rescale_backward(r, 2.5)),
        (lambda: module.rescale(x, [0.5, -2.0, 3.0], 1.0),
         lambda r: module.rescale_backward(r, [0.5, -2.0, 3.0])),
        (lambda: module.zero_pad2d(x, ((1, 2), (0, 3))),
         lambda r: module.zero_pad2d_backward(r, x.shape, ((1, 2), (0, 3)))),
        (lambda: module.global_avg_pool2d(x),
         lambda r: module.global_avg_pool2d_backward(r, x.shape)),
        (lambda: module.global_max_pool2d(x)[0],
         lambda r: module.global_max_pool2d_backward(r, module.global_max_pool2d(x)[1],
                                                      x.shape)),
    ]
    for forward, backward in cases:
        r = rng.standard_normal(forward().shape)
        got = backward(r)
        want = numerical_grad(lambda: float((forward() * r).sum()), x)
        assert rel_error(got, want) < 1e-6


X4 = np.zeros((2, 3, 4, 5))


@pytest.mark.parametrize("call, error, match", [
    (lambda: ops.rescale(X4, "big"), TypeError, "scale: expected a number"),
    (lambda: ops.rescale(X4, True), TypeError, "scale: expected a number"),
    (lambda: ops.rescale(X4, 1.0, float("nan")), ValueError, "offset: expected a finite"),
    (lambda: ops.rescale(X4, [1.0, 2.0]), ValueError, "scale: 2 values .* do not match"),
    (lambda: ops.rescale(X4, [[1.0]]), ValueError, "scale: expected a number or a flat"),
    (lambda: ops.rescale(X4.astype(int).astype(object), 1.0), TypeError, "x: expected dtype"),
    (lambda: ops.rescale_backward(X4, [1.0] * 4), ValueError, "scale: 4 values"),
    (lambda: ops.zero_pad2d(X4, -1), ValueError, "padding: expected non-negative ints, got -1"),
    (lambda: ops.zero_pad2d(X4, ((1, -2), (0, 0))), ValueError, "padding: expected non-neg"),
    (lambda: ops.zero_pad2d(X4, 1.5), TypeError, "padding: expected non-negative ints"),
    (lambda: ops.zero_pad2d(X4, (1, 2, 3)), ValueError, "padding: expected an int, a pair"),
    (lambda: ops.zero_pad2d(X4, ((1, 2, 3), 1)), ValueError, "the height entry"),
    (lambda: ops.zero_pad2d(X4[0], 1), ValueError, "x: expected a 4-d"),
    (lambda: ops.zero_pad2d(X4, 1, out=np.zeros((2, 5, 6, 5), np.float32)), ValueError, "out:"),
    (lambda: ops.zero_pad2d_backward(np.zeros((2, 5, 6, 5)), (2, 3, 4), 1), ValueError,
     "x_shape"),
    (lambda: ops.zero_pad2d_backward(np.zeros((2, 5, 5, 5)), X4.shape, 1), ValueError,
     r"grad_out: expected shape \(2, 5, 6, 5\)"),
    (lambda: ops.global_avg_pool2d(X4[0]), ValueError, "x: expected a 4-d"),
    (lambda: ops.global_max_pool2d(np.zeros((2, 0, 3, 1))), ValueError, "at least 1x1"),
    (lambda: ops.global_avg_pool2d_backward(np.zeros((2, 4)), X4.shape), ValueError,
     r"grad_out: expected shape \(2, 5\)"),
    (lambda: ops.global_max_pool2d_backward(np.zeros((2, 5)), np.zeros((2, 5)), X4.shape),
     TypeError, "argmax: expected an integer"),
    (lambda: ops.global_max_pool2d_backward(np.zeros((2, 5)), np.full((2, 5), 12), X4.shape),
     ValueError, r"argmax: expected pixel indices in \[0, 12\)"),
    (lambda: ops.global_max_pool2d_backward(np.zeros((2, 5)), np.full((2, 5), -1), X4.shape),
     ValueError, "argmax: expected pixel indices"),
    (lambda: ops.global_max_pool2d_backward(np.zeros((2, 5)), np.zeros((5, 2), int), X4.shape),
     ValueError, "argmax: expected shape"),
])
def test_bad_input_is_named(call, error, match):
    with pytest.raises(error, match=match):
        call()
