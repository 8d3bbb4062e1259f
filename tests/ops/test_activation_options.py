"""The ops behind the ReLU, LeakyReLU, ELU and Softmax layers' options (relu_general,
elu, softmax over chosen axes) against their oracle twins and finite differences, in
both dtypes; the same bits on one thread and two; bad options named."""
import numpy as np
import pytest

import cconv
from cconv import ops, oracle
from conftest import H, check_op, numerical_grad

DTYPES = [np.float32, np.float64]
RELU_OPTIONS = [
    dict(),
    dict(negative_slope=0.1),
    dict(max_value=1.5),
    dict(max_value=6.0),
    dict(threshold=0.4),
    dict(negative_slope=0.25, max_value=1.2, threshold=0.3),
    dict(negative_slope=2.0, max_value=0.0),
    dict(max_value=0.5, threshold=0.8),  # a cap below the threshold: Keras's min still holds
]
ALPHAS = [1.0, 0.5, 2.5, -0.7, 0.0]


def inputs(dtype, shape=(3, 1031), seed=0):
    """Values on both sides of every threshold and cap used here, plus the edges."""
    x = np.random.default_rng(seed).uniform(-3, 3, shape).astype(dtype)
    x.flat[:8] = [0.0, -0.0, 0.3, 0.4, 1.5, 6.0, -30.0, 30.0]
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("options", RELU_OPTIONS)
def test_relu_general_matches_oracle(dtype, options):
    x = inputs(dtype)
    got = check_op(ops.relu_general, oracle.relu_general, [x], options)
    # the oracle's formula, not the kernel's, decides the exact values: compare bits
    np.testing.assert_array_equal(got, oracle.relu_general(x, **options))
    g = np.random.default_rng(1).standard_normal(x.shape).astype(dtype)
    check_op(ops.relu_general_backward, oracle.relu_general_backward, [x, g], options)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha", ALPHAS)
def test_elu_matches_oracle(dtype, alpha):
    x = inputs(dtype)
    check_op(ops.elu, oracle.elu, [x], dict(alpha=alpha))
    g = np.random.default_rng(2).standard_normal(x.shape).astype(dtype)
    check_op(ops.elu_backward, oracle.elu_backward, [x, g], dict(alpha=alpha))


def test_elu_with_alpha_one_is_the_tables_elu():
    x = inputs(np.float32)
    np.testing.assert_array_equal(ops.elu(x, 1.0), ops.activation("elu", x))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, axis", [((4, 5, 6), -1), ((4, 5, 6), 1), ((4, 5, 6), -2),
                                         ((4, 5, 6), [1, 2]), ((3, 4, 5, 2), (1, 3)),
                                         ((3, 4, 5, 2), [-3, -2, -1])])
def test_softmax_over_axes_matches_oracle(dtype, shape, axis):
    x = np.random.default_rng(3).standard_normal(shape).astype(dtype) * 4
    got = check_op(ops.softmax, oracle.softmax, [x], dict(axis=axis))
    axes = tuple(a % x.ndim for a in (axis if isinstance(axis, (list, tuple)) else [axis]))
    np.testing.assert_allclose(got.sum(axis=axes), 1.0, rtol=1e-5)
    g = np.random.default_rng(4).standard_normal(shape).astype(dtype)
    check_op(ops.softmax_backward, oracle.softmax_backward, [got, g], dict(axis=axis))


def _away_from_kinks(x, points, margin=1e-3):
    """x nudged away from the points where a derivative jumps (finite differences
    straddling a kink measure neither side)."""
    for p in points:
        near = np.abs(x - p) < margin
        x[near] = p + 2 * margin
    return x


@pytest.mark.parametrize("options", RELU_OPTIONS)
def test_relu_general_gradient_by_finite_differences(options):
    cap = options.get("max_value")
    kinks = [options.get("threshold", 0.0)] + ([] if cap is None else [cap])
    x = _away_from_kinks(inputs(np.float64, (2, 7), seed=5), kinks)
    r = np.random.default_rng(6).standard_normal(x.shape)
    want = numerical_grad(lambda: (ops.relu_general(x, **options) * r).sum(), x)
    np.testing.assert_allclose(ops.relu_general_backward(x, r, **options), want, atol=1e-6)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_elu_gradient_by_finite_differences(alpha):
    x = _away_from_kinks(inputs(np.float64, (2, 7), seed=7), [0.0])
    r = np.random.default_rng(8).standard_normal(x.shape)
    want = numerical_grad(lambda: (ops.elu(x, alpha) * r).sum(), x)
    np.testing.assert_allclose(ops.elu_backward(x, r, alpha), want, atol=10 * H)


@pytest.mark.parametrize("axis", [1, [1, 2]])
def test_softmax_over_axes_gradient_by_finite_differences(axis):
    x = np.random.default_rng(9).standard_normal((2, 3, 4))
    r = np.random.default_rng(10).standard_normal(x.shape)
    want = numerical_grad(lambda: (ops.softmax(x, axis) * r).sum(), x)
    np.testing.assert_allclose(ops.softmax_backward(ops.softmax(x, axis), r, axis), want,
                               atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_same_bits_on_one_thread_and_two(dtype, threads):
    x = inputs(dtype, (5, 40000))  # many blocks
    g = np.random.default_rng(11).standard_normal(x.shape).astype(dtype)
    options = dict(negative_slope=0.25, max_value=1.2, threshold=0.3)
    runs = []
    for n in (1, 2):
        cconv.set_num_threads(n)
        runs.append([ops.relu_general(x, **options), ops.relu_general_backward(x, g, **options),
                     ops.elu(x, 0.5), ops.elu_backward(x, g, 0.5)])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("call, error, match", [
    (lambda x: ops.relu_general(x, negative_slope=-0.1), ValueError, "negative_slope: expected"),
    (lambda x: ops.relu_general(x, max_value=-1), ValueError, "max_value: expected"),
    (lambda x: ops.relu_general(x, threshold=float("nan")), ValueError, "threshold: expected"),
    (lambda x: ops.relu_general(x, negative_slope="0.1"), ValueError, "negative_slope"),
    (lambda x: ops.relu_general_backward(x, x[:1]), ValueError, "grad_out: expected shape"),
    (lambda x: ops.elu(x, alpha=float("inf")), ValueError, "alpha: expected a finite"),
    (lambda x: ops.elu(x, alpha=None), ValueError, "alpha: expected a finite"),
    (lambda x: ops.elu_backward(x, x.astype(np.float64)), TypeError, "grad_out"),
    (lambda x: ops.softmax(x, axis=3), ValueError, "axis: expected axes in"),
    (lambda x: ops.softmax(x, axis=[1, -1]), ValueError, "axis: expected distinct axes"),
    (lambda x: ops.softmax(x, axis=1.0), TypeError, "axis: expected an int"),
    (lambda x: ops.softmax(x, axis=[]), TypeError, "axis: expected an int"),
])
def test_bad_options_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call(np.zeros((2, 3), np.float32))
