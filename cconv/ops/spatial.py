"""Ops with no compiled kernel: Rescaling's affine map, zero padding and global pooling,
channels-last (N, H, W, C).

These are memory-bound (each element is read and written once, with at most one
multiply-add), so they are vectorised NumPy here rather than Cython kernels: a slice
copy, a broadcast multiply-add, a reduction over two axes. There is no Python loop over
pixels. NumPy runs them on one thread, so their bits never depend on the thread count.
Every argument is checked first, as for the kernels' ops (_checks.py)."""
import numbers

import numpy as np

from cconv.ops._checks import check_shape_tuple, empty, float_array, int_array, output


# ---- rescale (Rescaling) -----------------------------------------------------------------
def check_factor(name, value):
    """A Rescaling factor: a real number, or a sequence of them (one per channel of the last
    axis). Returned as a float or a tuple of floats."""
    if isinstance(value, (tuple, list, np.ndarray)):
        values = list(np.asarray(value, dtype=object).reshape(-1)) \
            if isinstance(value, np.ndarray) else list(value)
        if np.ndim(value) != 1 or not values:
            raise ValueError(f"{name}: expected a number or a flat sequence of numbers (one "
                             f"per channel), got {value!r}")
        return tuple(check_factor(name, v) for v in values)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number or a sequence of numbers, got "
                        f"{type(value).__name__} {value!r}")
    if not np.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return float(value)


def _factor_array(name, value, x):
    """value (checked) in x's dtype, broadcasting along x's last axis."""
    value = check_factor(name, value)
    arr = np.asarray(value, dtype=x.dtype)
    if arr.ndim == 1 and (x.ndim == 0 or x.shape[-1] != arr.shape[0]):
        raise ValueError(f"{name}: {arr.shape[0]} values (one per channel) do not match the "
                         f"last axis of x, of shape {x.shape}")
    return arr


def rescale(x, scale, offset=0.0):
    """x * scale + offset, in x's dtype, as keras.layers.Rescaling: scale and offset cast to
    that dtype first, then one rounded multiply and one rounded add (never fused). Each is
    a number or one per channel of the last axis."""
    x = float_array("x", x)
    s, o = _factor_array("scale", scale, x), _factor_array("offset", offset, x)
    out = empty("rescale output", np.broadcast_shapes(x.shape, s.shape, o.shape), x.dtype)
    np.multiply(x, s, out=out)
    out += o
    return out


def rescale_backward(grad_out, scale):
    """grad_out * scale: the gradient of rescale wrt x (offset adds nothing)."""
    grad_out = float_array("grad_out", grad_out)
    return np.multiply(grad_out, _factor_array("scale", scale, grad_out))


# ---- zero_pad2d (ZeroPadding2D) ----------------------------------------------------------
def _pad_amount(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected non-negative ints, got {type(value).__name__} "
                        f"{value!r}")
    if value < 0:
        raise ValueError(f"{name}: expected non-negative ints, got {value!r}")
    return int(value)


def pad_widths(padding):
    """((top, bottom), (left, right)) from Keras's three forms of ZeroPadding2D's padding: an
    int (all four sides), a pair (symmetric height, symmetric width), or a pair of pairs
    ((top, bottom), (left, right)); each entry of the pair may itself be an int or a pair,
    as Keras allows. Every amount is a non-negative int."""
    if isinstance(padding, (tuple, list)):
        if len(padding) != 2:
            raise ValueError(f"padding: expected an int, a pair of ints or a pair of pairs "
                             f"((top, bottom), (left, right)), got {padding!r}")
        sides = []
        for axis, entry in zip(("height", "width"), padding):
            if isinstance(entry, (tuple, list)):
                if len(entry) != 2:
                    raise ValueError(f"padding: the {axis} entry should be an int or a pair "
                                     f"of ints, got {entry!r}")
                sides.append(tuple(_pad_amount("padding", v) for v in entry))
            else:
                v = _pad_amount("padding", entry)
                sides.append((v, v))
        return tuple(sides)
    v = _pad_amount("padding", padding)
    return ((v, v), (v, v))


def zero_pad2d(x, padding, out=None):
    """x (N, H, W, C) with zero rows and columns around each image: (N, top + H + bottom,
    left + W + right, C); padding as pad_widths takes it. out is an array to write into."""
    x = float_array("x", x, ndim=4)
    (top, bottom), (left, right) = pad_widths(padding)
    n, h, w, c = x.shape
    out = output("zero_pad2d output", out, (n, top + h + bottom, left + w + right, c),
                 x.dtype, reads={"x": x})
    out.fill(0)
    out[:, top:top + h, left:left + w] = x
    return out


def zero_pad2d_backward(grad_out, x_shape, padding):
    """The gradient of zero_pad2d wrt x, of x_shape: grad_out without the padded border."""
    x_shape = check_shape_tuple("x_shape", x_shape, 4)
    (top, bottom), (left, right) = pad_widths(padding)
    n, h, w, c = x_shape
    grad_out = float_array("grad_out", grad_out, ndim=4)
    expected = (n, top + h + bottom, left + w + right, c)
    if grad_out.shape != expected:
        raise ValueError(f"grad_out: expected shape {expected} (the zero_pad2d output for x of "
                         f"shape {x_shape}), got {grad_out.shape}")
    return np.ascontiguousarray(grad_out[:, top:top + h, left:left + w])


# ---- global pooling (GlobalAveragePooling2D, GlobalMaxPooling2D) -------------------------
def _images(name, x):
    x = float_array(name, x, ndim=4)
    if x.shape[1] * x.shape[2] == 0:
        raise ValueError(f"{name}: expected images of at least 1x1 pixel to pool, got shape "
                         f"{x.shape}")
    return x


def _pooled_grad(grad_out, x_shape, what):
    x_shape = check_shape_tuple("x_shape", x_shape, 4)
    if x_shape[1] * x_shape[2] == 0:
        raise ValueError(f"x_shape: expected images of at least 1x1 pixel, got {x_shape}")
    grad_out = float_array("grad_out", grad_out, ndim=2)
    if grad_out.shape != (x_shape[0], x_shape[3]):
        raise ValueError(f"grad_out: expected shape {(x_shape[0], x_shape[3])} (the {what} "
                         f"output for x of shape {x_shape}), got {grad_out.shape}")
    return grad_out, x_shape


def global_avg_pool2d(x):
    """The mean of each channel over each image: x (N, H, W, C) -> (N, C)."""
    x = _images("x", x)
    return x.mean(axis=(1, 2))


def global_avg_pool2d_backward(grad_out, x_shape):
    """The gradient of global_avg_pool2d wrt x (of x_shape): grad_out / (H * W) at every
    pixel of its image and channel."""
    grad_out, (n, h, w, c) = _pooled_grad(grad_out, x_shape, "global_avg_pool2d")
    grad_x = empty("grad_x", (n, h, w, c), grad_out.dtype)
    grad_x[:] = (grad_out / grad_out.dtype.type(h * w))[:, None, None, :]
    return grad_x


def global_max_pool2d(x, need_argmax=True):
    """The max of each channel over each image: x (N, H, W, C) -> (y (N, C), argmax). argmax
    (N, C), int64, is the flat pixel index row * W + col of each max within its image; a
    tie goes to the first in row-major order, as max_pool2d's do. argmax is None when
    need_argmax is False."""
    x = _images("x", x)
    n, h, w, c = x.shape
    flat = x.reshape(n, h * w, c)
    argmax = flat.argmax(axis=1)  # the first maximum
    y = np.take_along_axis(flat, argmax[:, None, :], axis=1)[:, 0, :]
    return np.ascontiguousarray(y), (argmax.astype(np.int64) if need_argmax else None)


def global_max_pool2d_backward(grad_out, argmax, x_shape):
    """The gradient of global_max_pool2d wrt x (of x_shape): each channel's gradient goes to
    the pixel argmax names, every other pixel gets 0."""
    grad_out, (n, h, w, c) = _pooled_grad(grad_out, x_shape, "global_max_pool2d")
    argmax = int_array("argmax", argmax, (n, c), "iu", "an integer array from "
                       "global_max_pool2d", np.int64, h * w - 1,
                       f"argmax: expected pixel indices in [0, {h * w}) (H * W)", always=True)
    grad_x = np.zeros((n, h * w, c), dtype=grad_out.dtype)
    np.put_along_axis(grad_x, argmax[:, None, :], grad_out[:, None, :], axis=1)
    return grad_x.reshape(n, h, w, c)
