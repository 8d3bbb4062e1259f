"""Merge ops, the arithmetic of keras.layers.Add, Subtract, Multiply, Average, Maximum and
Concatenate (kernels: _merge.pyx).

The elementwise merges take a list of arrays of one shape and dtype (float32 or float64)
and fold them left to right, as Keras does: add((a, b, c)) is (a + b) + c, average divides
that sum by the count. Their gradients come back as a list, one new array per input
(never one array twice: a caller may add into them in place). Keras's broadcasting of
inputs of different shapes is not done: every input must have the first one's shape.

Only the passes that mix the inputs run in the kernels. The gradients of add, subtract
and average are copies of grad_out, its negation or its quotient by the count, and
concatenate and its gradient move memory without arithmetic: NumPy does each at memory
speed, one exact operation per element, so its bits depend on no thread count or level.
"""
import numbers

import numpy as np

from cconv._config import get_num_threads
from cconv._kernels import _merge
from cconv.ops._checks import empty, flat_pair, float_array


def _listed(xs):
    """xs as a list of C-contiguous float arrays of one dtype, at least one of them."""
    if not isinstance(xs, (list, tuple)):
        raise TypeError(f"xs: expected a list of arrays, got {type(xs).__name__}")
    if not xs:
        raise ValueError("xs: expected at least 1 array, got 0")
    first = float_array("xs[0]", xs[0])
    return [first] + [float_array(f"xs[{i}]", x, dtype=first.dtype)
                      for i, x in enumerate(xs[1:], start=1)]


def _arrays(xs):
    """_listed(xs), all of the first one's shape."""
    arrays = _listed(xs)
    for i, a in enumerate(arrays[1:], start=1):
        if a.shape != arrays[0].shape:
            raise ValueError(f"xs[{i}]: expected shape {arrays[0].shape} to match xs[0], got "
                             f"{a.shape}")
    return arrays


def _flat(arrays):
    return [a.reshape(-1) for a in arrays]


def _fold(kernel, xs):
    arrays = _arrays(xs)
    out = empty("merge output", arrays[0].shape, arrays[0].dtype)
    kernel(_flat(arrays), out.reshape(-1), get_num_threads())
    return out


def add(xs):
    """((xs[0] + xs[1]) + xs[2]) + ..., elementwise."""
    return _fold(_merge.add, xs)


def multiply(xs):
    """((xs[0] * xs[1]) * xs[2]) * ..., elementwise."""
    return _fold(_merge.multiply, xs)


def average(xs):
    """add(xs) / len(xs), a division as Keras's source writes it (and its torch and
    TensorFlow backends compute it). XLA, under Keras on jax, multiplies by the rounded
    1 / len(xs) instead: for a count that is not a power of 2 that can differ in the
    last bit."""
    return _fold(_merge.average, xs)


def maximum(xs):
    """The elementwise maximum of xs; NaN where any input is NaN."""
    return _fold(_merge.maximum, xs)


def subtract(a, b):
    """a - b."""
    a, b = flat_pair("a", a, "b", b)
    out = empty("subtract output", a.shape, a.dtype)
    _merge.subtract(a.reshape(-1), b.reshape(-1), out.reshape(-1), get_num_threads())
    return out


def _count(n):
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n: expected the number of inputs, an int >= 1, got {n!r}")
    return int(n)


def add_backward(grad_out, n):
    """The gradient of add wrt each of its n inputs: n copies of grad_out."""
    grad_out = float_array("grad_out", grad_out)
    return [grad_out.copy() for _ in range(_count(n))]


def subtract_backward(grad_out):
    """The gradients of a - b wrt a and b: [grad_out, -grad_out] (new arrays)."""
    grad_out = float_array("grad_out", grad_out)
    return [grad_out.copy(), np.negative(grad_out)]


def average_backward(grad_out, n):
    """The gradient of average wrt each of its n inputs: grad_out / n, divided as the
    forward pass divides."""
    grad_out = float_array("grad_out", grad_out)
    share = np.divide(grad_out, grad_out.dtype.type(_count(n)))
    return [share] + [share.copy() for _ in range(n - 1)]


def _backward(kernel, xs, grad_out):
    arrays = _arrays(xs)
    grad_out = float_array("grad_out", grad_out, dtype=arrays[0].dtype)
    if grad_out.shape != arrays[0].shape:
        raise ValueError(f"grad_out: expected shape {arrays[0].shape} to match xs, got "
                         f"{grad_out.shape}")
    grads = [empty(f"gradient {i}", grad_out.shape, grad_out.dtype) for i in range(len(xs))]
    kernel(_flat(arrays), grad_out.reshape(-1), _flat(grads), get_num_threads())
    return grads


def multiply_backward(xs, grad_out):
    """The gradients of multiply(xs) wrt each input: grad_out times the product of the
    others, in reverse mode's order through the left-to-right product (Keras's bits)."""
    return _backward(_merge.multiply_backward, xs, grad_out)


def maximum_backward(xs, grad_out):
    """The gradients of maximum(xs): grad_out to the input holding each maximum, 0 to the
    others. On a tie all of it goes to the FIRST input holding the maximum (Keras on jax
    splits it between them); where an input is NaN, to the first NaN."""
    return _backward(_merge.maximum_backward, xs, grad_out)


# ---- concatenate (Concatenate) ------------------------------------------------------------
def _axis(axis, ndim):
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"axis: expected an int, got {type(axis).__name__} {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis: expected an int in [-{ndim}, {ndim}) for arrays of {ndim} "
                         f"dimensions, got {axis}")
    return int(axis) % ndim


def _others(shape, axis):
    return shape[:axis] + shape[axis + 1:]


def concatenate(xs, axis=-1):
    """xs joined along `axis`: arrays of one dtype and rank, of equal sizes on every
    other axis."""
    arrays = _listed(xs)
    first = arrays[0]
    if first.ndim == 0:
        raise ValueError("xs[0]: expected an array of at least 1 dimension, got a scalar")
    ax = _axis(axis, first.ndim)
    for i, a in enumerate(arrays[1:], start=1):
        if a.ndim != first.ndim or _others(a.shape, ax) != _others(first.shape, ax):
            raise ValueError(f"xs[{i}]: expected shape {first.shape} on every axis but "
                             f"{axis} (to match xs[0]), got {a.shape}")
    shape = list(first.shape)
    shape[ax] = sum(a.shape[ax] for a in arrays)
    out = empty("concatenate output", tuple(shape), first.dtype)
    return np.concatenate(arrays, axis=ax, out=out)


def concatenate_backward(grad_out, x_shapes, axis=-1):
    """The gradients of concatenate wrt its inputs, of shapes x_shapes: grad_out cut along
    `axis` into their sizes (new C-contiguous arrays)."""
    grad_out = float_array("grad_out", grad_out)
    if grad_out.ndim == 0:
        raise ValueError("grad_out: expected an array of at least 1 dimension, got a scalar")
    ax = _axis(axis, grad_out.ndim)
    if not isinstance(x_shapes, (list, tuple)) or not x_shapes or not all(
            isinstance(s, (list, tuple)) for s in x_shapes):
        raise TypeError(f"x_shapes: expected a non-empty list of shapes, got {x_shapes!r}")
    x_shapes = [tuple(s) for s in x_shapes]
    for i, s in enumerate(x_shapes):
        if len(s) != grad_out.ndim or _others(s, ax) != _others(grad_out.shape, ax):
            raise ValueError(f"x_shapes[{i}]: expected shape {grad_out.shape} on every axis "
                             f"but {axis} (to match grad_out), got {s}")
    if sum(s[ax] for s in x_shapes) != grad_out.shape[ax]:
        raise ValueError(f"x_shapes: their sizes along axis {axis} add up to "
                         f"{sum(s[ax] for s in x_shapes)}, grad_out has {grad_out.shape[ax]}")
    cuts = np.cumsum([s[ax] for s in x_shapes])[:-1]
    return [part.copy() for part in np.split(grad_out, cuts, axis=ax)]
