"""tanh, relu, every activation by name and dropout (cconv/ops/elementwise.py) against
cconv.oracle: values, the float32 tanh's accuracy, the dropout hash's independence; the
same bits on 1 and 2 threads; bad input named."""
import numpy as np
import pytest

import cconv
from cconv import activations, ops, oracle
from conftest import DTYPES, check_op, tol


# The activations that ops has a function of their own for (ops.tanh, ops.relu and their
# _backward), besides ops.activation(name, x).
SHORTCUTS = [name for name in activations.ELEMENTWISE if hasattr(ops, name)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1,), (7, 3), (4097,), (3, 5000)])
def test_elementwise(rng, dtype, shape):
    x = rng.standard_normal(shape).astype(dtype) * 3
    g = rng.standard_normal(shape).astype(dtype)
    for name in SHORTCUTS:
        y = check_op(getattr(ops, name), getattr(oracle, name), (x,))
        check_op(getattr(ops, name + "_backward"), getattr(oracle, name + "_backward"), (y, g))


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


@pytest.mark.parametrize("name", [None, *activations.ELEMENTWISE])
def test_activation_by_name(rng, name):
    x = rng.standard_normal((3, 7)).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    y = check_op(ops.activation, oracle.activation, (name, x))
    check_op(ops.activation_backward, oracle.activation_backward, (name, y, g))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rate", [0.0, 0.25, 0.5, 0.9])
def test_dropout(rng, dtype, rate):
    x = rng.standard_normal((33, 257)).astype(dtype)
    y, mask = ops.dropout(x, rate, seed=1234)
    assert np.array_equal(mask, oracle.dropout_mask(x.shape, rate, 1234))
    np.testing.assert_allclose(y, oracle.dropout(x, rate, mask=mask)[0], **tol(dtype))
    assert abs(mask.mean() - (1 - rate)) < 0.02
    g = rng.standard_normal(x.shape).astype(dtype)
    np.testing.assert_allclose(ops.dropout_backward(g, mask, rate),
                               oracle.dropout_backward(g, mask, rate), **tol(dtype))
    given = rng.integers(0, 2, x.shape)
    np.testing.assert_allclose(ops.dropout(x, rate, mask=given)[0],
                               oracle.dropout(x, rate, mask=given)[0], **tol(dtype))


def test_dropout_into_out_and_in_place(rng):
    x = rng.standard_normal((5, 300))
    mask = rng.integers(0, 2, x.shape)
    want = oracle.dropout(x, 0.5, mask=mask)[0]
    out = np.full_like(x, np.nan)
    assert ops.dropout(x, 0.5, mask=mask, out=out)[0] is out
    np.testing.assert_allclose(out, want, rtol=0, atol=0)
    y, _ = ops.dropout(x, 0.5, mask=mask, out=x)
    assert y is x
    np.testing.assert_allclose(x, want, rtol=0, atol=0)
    # a shifted view of x would be read after being written
    with pytest.raises(ValueError, match="out: must not overlap x"):
        ops.dropout(x.reshape(-1)[:-5], 0.5, seed=1, out=x.reshape(-1)[5:])


def test_dropout_masks_look_independent():
    """Neighbouring elements, neighbouring seeds and blocks of the kernel's work split
    must not share draws: correlations stay within a few standard errors of 0."""
    n = 1 << 20
    a = ops.dropout_mask((n,), 0.5, 7).astype(np.float64)
    b = ops.dropout_mask((n,), 0.5, 8).astype(np.float64)
    limit = 5 / np.sqrt(n)
    for lag in (1, 2, 8, 4096):
        assert abs(np.corrcoef(a[:-lag], a[lag:])[0, 1]) < limit, lag
    assert abs(np.corrcoef(a, b)[0, 1]) < limit
    for rate in (0.1, 0.9):
        kept = ops.dropout_mask((n,), rate, 3).mean()
        assert abs(kept - (1 - rate)) < 5 * np.sqrt(rate * (1 - rate) / n)


def test_same_bits_on_one_and_two_threads(rng, threads):
    big = rng.standard_normal(300_001).astype(np.float32)
    results = []
    for n in (1, 2):
        cconv.set_num_threads(n)
        results.append([ops.tanh(big), ops.dropout(big, 0.5, seed=7)[0]])
    for a, b in zip(*results):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("call, match", [
    (lambda: ops.dropout(np.zeros(4), 1.0, seed=1), "rate"),
    (lambda: ops.dropout(np.zeros(4), 0.5, mask=np.array([0, 1, 2, 1])), "mask"),
    (lambda: ops.dropout(np.zeros(4), 0.5, mask=np.ones(3)), "mask"),
    (lambda: ops.tanh(np.array(["a"], dtype=object)), "x: expected dtype"),
    (lambda: ops.tanh_backward(np.zeros(3), np.zeros(4)), "grad_out"),
    (lambda: ops.activation("glu", np.zeros(3)), "activation: expected one of"),
    (lambda: ops.activation_backward("hard_shrink", np.zeros(3), np.zeros(3)),
     "activation: expected one of"),
])
def test_bad_input_is_named(call, match):
    with pytest.raises((TypeError, ValueError), match=match):
        call()
