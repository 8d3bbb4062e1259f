"""Centred finite differences (CS231n style) hold the oracle's backward functions to
the derivative of its forward ones. The compiled ops are held to the oracle elsewhere."""
import numpy as np
import pytest

from cconv import activations, oracle
from conftest import numerical_grad, rel_error


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("shape", [((2, 5, 6, 2), (3, 3, 2, 3)), ((1, 4, 4, 3), (2, 3, 3, 2))])
def test_conv2d_backward(padding, shape):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape[0])
    w = rng.standard_normal(shape[1])
    b = rng.standard_normal(shape[1][3])
    r = rng.standard_normal(oracle.conv2d(x, w, b, padding).shape)
    loss = lambda: float((oracle.conv2d(x, w, b, padding) * r).sum())
    grad_x, grad_w, grad_b = oracle.conv2d_backward(x, w, r, padding)
    assert rel_error(grad_x, numerical_grad(loss, x)) < 1e-6
    assert rel_error(grad_w, numerical_grad(loss, w)) < 1e-6
    assert rel_error(grad_b, numerical_grad(loss, b)) < 1e-6


def test_dense_backward():
    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal((4, 7)), rng.standard_normal((7, 3)), rng.standard_normal(3)
    r = rng.standard_normal((4, 3))
    loss = lambda: float((oracle.dense(x, w, b) * r).sum())
    grad_x, grad_w, grad_b = oracle.dense_backward(x, w, r)
    for got, arr in ((grad_x, x), (grad_w, w), (grad_b, b)):
        assert rel_error(got, numerical_grad(loss, arr)) < 1e-6


KINKS = (-3.0, -1.0, 0.0, 1.0, 3.0, 6.0)  # where relu, relu6, hard_* and sparse_plus bend


@pytest.mark.parametrize("name", activations.ELEMENTWISE)
def test_activation_backward(name):
    rng = np.random.default_rng(3)
    x = rng.uniform(-4, 6.5, (5, 6))
    for kink in KINKS:  # no derivative at a kink
        x[np.abs(x - kink) < 0.05] += 0.1
    r = rng.standard_normal(x.shape)
    loss = lambda: float((oracle.activation(name, x) * r).sum())
    y = oracle.activation(name, x)
    source = y if activations.row(name).gradient_from == "output" else x
    got = oracle.activation_backward(name, source, r)
    # against the largest: the differences' own error where a derivative is tiny
    numerical = numerical_grad(loss, x)
    np.testing.assert_allclose(got, numerical, rtol=1e-5, atol=1e-7 * np.abs(numerical).max())


def test_dropout_backward():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 7))
    mask = oracle.dropout_mask(x.shape, 0.3, seed=9)
    r = rng.standard_normal(x.shape)
    loss = lambda: float((oracle.dropout(x, 0.3, mask=mask)[0] * r).sum())
    got = oracle.dropout_backward(r, mask, 0.3)
    assert rel_error(got, numerical_grad(loss, x)) < 1e-6
