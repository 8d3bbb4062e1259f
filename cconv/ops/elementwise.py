"""Elementwise ops: the activations tanh and relu with their backward passes, one
dispatch by activation name for layers and fused steps, and dropout (kernels:
_elementwise.pyx)."""
import numbers

import numpy as np

from cconv._config import get_num_threads
from cconv._kernels import _elementwise
from cconv.ops._checks import (check_activation, check_mask, check_rate, check_seed, empty,
                               flat_pair, float_array, output)


def _unary(kernel, x):
    x = float_array("x", x)
    out = np.empty_like(x)
    kernel(x.reshape(-1), out.reshape(-1), get_num_threads())
    return out


def _gate(kernel, y, grad_out):
    y, grad_out = flat_pair("y", y, "grad_out", grad_out)
    out = np.empty_like(y)
    kernel(y.reshape(-1), grad_out.reshape(-1), out.reshape(-1), get_num_threads())
    return out


def tanh(x):
    """Elementwise tanh."""
    return _unary(_elementwise.tanh_forward, x)


def tanh_backward(y, grad_out):
    """grad_out * (1 - y**2): the gradient through tanh, given its output y."""
    return _gate(_elementwise.tanh_backward, y, grad_out)


def relu(x):
    """Elementwise max(x, 0)."""
    return _unary(_elementwise.relu_forward, x)


def relu_backward(y, grad_out):
    """grad_out where the relu output y is positive, else 0."""
    return _gate(_elementwise.relu_backward, y, grad_out)


# The activations by name: (forward, backward given the output). None and "linear" are
# the identity, and are not in the table.
ACTIVATIONS = {"tanh": (tanh, tanh_backward), "relu": (relu, relu_backward)}


def activation(name, z):
    """The activation `name` (None, "linear", "tanh" or "relu") of z."""
    check_activation(name)
    return z if name in (None, "linear") else ACTIVATIONS[name][0](z)


def activation_backward(name, y, grad_out):
    """The gradient through the activation `name`, given its output y."""
    check_activation(name)
    return grad_out if name in (None, "linear") else ACTIVATIONS[name][1](y, grad_out)


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
