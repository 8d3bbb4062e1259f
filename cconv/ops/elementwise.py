"""Elementwise ops: every activation of cconv/activations.py's table by name, with its
backward pass (tanh and relu also by their own names), softmax, and dropout (kernels:
_elementwise.pyx on _activations.pxd)."""
import functools
import numbers

import numpy as np

from cconv._config import get_num_threads
from cconv._kernels import _elementwise
from cconv.ops._checks import (check_activation, check_mask, check_rate, check_seed, empty,
                               flat_pair, float_array, gradient_from, output)


def tanh(x):
    """Elementwise tanh."""
    return activation("tanh", x)


def tanh_backward(y, grad_out):
    """grad_out * (1 - y**2): the gradient through tanh, given its output y."""
    return activation_backward("tanh", y, grad_out)


def relu(x):
    """Elementwise max(x, 0)."""
    return activation("relu", x)


def relu_backward(y, grad_out):
    """grad_out where the relu output y is positive, else 0."""
    return activation_backward("relu", y, grad_out)


def softmax(x):
    """exp(x) / sum(exp(x)) along the last axis, shifted by the row's max (NumPy: a
    row's sum is not elementwise work for the kernels)."""
    x = float_array("x", x)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_backward(y, grad_out):
    """The gradient through softmax along the last axis, given its output y."""
    y, grad_out = flat_pair("y", y, "grad_out", grad_out)
    return y * (grad_out - (grad_out * y).sum(axis=-1, keepdims=True))


def log_softmax(x):
    """log(softmax(x)) along the last axis, without forming softmax."""
    x = float_array("x", x)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def activation(name, x, out=None):
    """The activation `name` of x: None or an elementwise activation of
    cconv/activations.py's table (by its kernel code), or "softmax" (last axis). `out`,
    for the elementwise ones, is an array to write into (x itself for in place)."""
    if name == "softmax":
        return softmax(x)
    code = check_activation(name)
    x = float_array("x", x)
    out = output("activation output", out, x.shape, x.dtype, reads={"x": x}, in_place=x)
    _elementwise.activation_forward(code, x.reshape(-1), out.reshape(-1), get_num_threads())
    return out


def activation_backward(name, s, grad_out):
    """The gradient through the activation `name` given grad_out, the gradient wrt its
    output. s is the activation's output or its input, as gradient_from(name) says
    (softmax: its output)."""
    if name == "softmax":
        return softmax_backward(s, grad_out)
    code = check_activation(name)
    s, grad_out = flat_pair("y" if gradient_from(name) == "output" else "x", s,
                            "grad_out", grad_out)
    out = np.empty_like(s)
    _elementwise.activation_backward(code, s.reshape(-1), grad_out.reshape(-1),
                                     out.reshape(-1), get_num_threads())
    return out


@functools.lru_cache(maxsize=None)
def zero_at_zero(name):
    """Whether the activation maps 0 to 0 (0 and -0, in both dtypes), asked of the
    kernels themselves."""
    if name == "softmax":
        return False
    return all(np.all(activation(name, np.array([0.0, -0.0], dtype)) == 0)
               for dtype in (np.float32, np.float64))


def dropout_mask(shape, rate, seed):
    """The keep-mask (uint8, 1 = keep) that dropout(x, rate, seed) uses for x of `shape`.

    Element i (in C order) is kept when a hash of (seed, i) is >= rate: the same mask for
    any thread count, and cconv.oracle.dropout_mask rebuilds it in NumPy."""
    rate = check_rate(rate)
    check_seed(seed)
    dims = (shape,) if isinstance(shape, numbers.Integral) else shape
    if not isinstance(dims, (tuple, list)) or not all(
            isinstance(d, numbers.Integral) and not isinstance(d, bool) for d in dims):
        raise TypeError(f"shape: expected a tuple of non-negative ints, got {shape!r}")
    if any(d < 0 for d in dims):
        raise ValueError(f"shape: expected a tuple of non-negative ints, got {shape!r}")
    mask = empty("dropout_mask", tuple(int(d) for d in dims), np.uint8)
    nothing = np.empty(0, dtype=np.float32)
    _elementwise.dropout(int(seed), rate, mask.reshape(-1), nothing, np.float32(1), nothing,
                         get_num_threads())
    return mask


def keep_scale(dtype, rate):
    """1 / (1 - rate) in `dtype`: what dropout scales the kept elements by."""
    return dtype.type(1.0 / (1.0 - rate))


def dropout(x, rate, seed=None, mask=None, out=None):
    """Inverted dropout: zero each element with probability `rate`, scale the rest by
    1 / (1 - rate). Returns (y, mask). The mask comes from `seed` (see dropout_mask), or
    is given as `mask` (0/1, the shape of x) to replay a known draw. `out` is an array to
    write y into (x itself for in place), so that a caller can reuse memory."""
    x = float_array("x", x)
    rate = check_rate(rate)
    out = output("dropout output", out, x.shape, x.dtype,
                 reads={"x": x} if mask is None else {"x": x, "mask": mask}, in_place=x)
    scale = keep_scale(x.dtype, rate)
    if mask is None:
        if seed is None:
            raise ValueError("dropout: give either seed or mask, got neither")
        check_seed(seed)
        mask = empty("dropout mask", x.shape, np.uint8)
        _elementwise.dropout(int(seed), rate, mask.reshape(-1), x.reshape(-1), scale,
                             out.reshape(-1), get_num_threads())
    else:
        mask = check_mask(mask, x.shape)
        _elementwise.dropout_apply(x.reshape(-1), mask.reshape(-1), scale, out.reshape(-1),
                                   get_num_threads())
    return out, mask


def dropout_backward(grad_out, mask, rate):
    """The gradient through dropout: grad_out * mask / (1 - rate)."""
    grad_out = float_array("grad_out", grad_out)
    rate = check_rate(rate)
    mask = check_mask(mask, grad_out.shape)
    out = np.empty_like(grad_out)
    _elementwise.dropout_apply(grad_out.reshape(-1), mask.reshape(-1),
                               keep_scale(grad_out.dtype, rate), out.reshape(-1),
                               get_num_threads())
    return out
