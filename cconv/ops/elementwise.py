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


def _axes(axis, ndim):
    """axis (an int or a tuple/list of ints) as a sorted tuple of non-negative axes of an
    array of ndim dimensions."""
    many = isinstance(axis, (tuple, list))
    items = list(axis) if many else [axis]
    if not items or not all(isinstance(a, numbers.Integral) and not isinstance(a, bool)
                            for a in items):
        raise TypeError(f"axis: expected an int or a non-empty list of ints, got {axis!r}")
    if not all(-ndim <= a < ndim for a in items):
        raise ValueError(f"axis: expected axes in [-{ndim}, {ndim}) for an array of {ndim} "
                         f"dimensions, got {axis!r}")
    axes = tuple(sorted({int(a) % ndim for a in items}))
    if len(axes) != len(items):
        raise ValueError(f"axis: expected distinct axes, got {axis!r}")
    return axes


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along the last axis (or the given axes), shifted by the max
    (NumPy: a sum across elements is not elementwise work for the kernels)."""
    x = float_array("x", x)
    axes = _axes(axis, x.ndim)
    e = np.exp(x - x.max(axis=axes, keepdims=True))
    return e / e.sum(axis=axes, keepdims=True)


def softmax_backward(y, grad_out, axis=-1):
    """The gradient through softmax along the last axis (or the given axes), given its
    output y."""
    y, grad_out = flat_pair("y", y, "grad_out", grad_out)
    axes = _axes(axis, y.ndim)
    return y * (grad_out - (grad_out * y).sum(axis=axes, keepdims=True))


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


def _non_negative(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not (np.isfinite(value) and value >= 0):
        raise ValueError(f"{name}: expected a finite float >= 0, got {value!r}")
    return float(value)


def check_relu_options(negative_slope=0.0, max_value=None, threshold=0.0):
    """Keras's ReLU options checked: (negative_slope, max_value or inf, threshold)."""
    cap = np.inf if max_value is None else _non_negative("max_value", max_value)
    return (_non_negative("negative_slope", negative_slope), cap,
            _non_negative("threshold", threshold))


def relu_general(x, negative_slope=0.0, max_value=None, threshold=0.0):
    """Keras's relu(x, negative_slope, max_value, threshold): min(x, max_value) where
    x > threshold, else negative_slope * (x - threshold)."""
    options = check_relu_options(negative_slope, max_value, threshold)
    x = float_array("x", x)
    out = np.empty_like(x)
    _elementwise.relu_general_forward(x.reshape(-1), out.reshape(-1), *options,
                                      get_num_threads())
    return out


def relu_general_backward(x, grad_out, negative_slope=0.0, max_value=None, threshold=0.0):
    """The gradient through relu_general, given its input x."""
    options = check_relu_options(negative_slope, max_value, threshold)
    x, grad_out = flat_pair("x", x, "grad_out", grad_out)
    out = np.empty_like(x)
    _elementwise.relu_general_backward(x.reshape(-1), grad_out.reshape(-1), out.reshape(-1),
                                       *options, get_num_threads())
    return out


def check_alpha(alpha):
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) \
            or not np.isfinite(alpha):
        raise ValueError(f"alpha: expected a finite float, got {alpha!r}")
    return float(alpha)


def elu(x, alpha=1.0):
    """Keras's elu(x, alpha): x where x > 0, else alpha * (exp(x) - 1)."""
    alpha = check_alpha(alpha)
    x = float_array("x", x)
    out = np.empty_like(x)
    _elementwise.elu_forward(x.reshape(-1), out.reshape(-1), alpha, get_num_threads())
    return out


def elu_backward(x, grad_out, alpha=1.0):
    """The gradient through elu, given its input x."""
    alpha = check_alpha(alpha)
    x, grad_out = flat_pair("x", x, "grad_out", grad_out)
    out = np.empty_like(x)
    _elementwise.elu_backward(x.reshape(-1), grad_out.reshape(-1), out.reshape(-1), alpha,
                              get_num_threads())
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
