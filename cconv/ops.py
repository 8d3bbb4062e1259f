"""The functional face of the compiled kernels.

Each function checks its arguments (types, ranks, shapes, dtypes), makes them
C-contiguous, allocates the output and calls one kernel. The kernels run without bounds
checks, so nothing reaches them unchecked. `cconv.oracle` has the same functions in
plain NumPy.

Layout is channels-last, as in Keras: images (N, H, W, C), conv kernels (KH, KW, C, F).
Supported dtypes are float32 and float64; all float arguments of a call share one dtype.
"""
import math
import numbers
import os

import numpy as np

from cconv._config import get_num_threads
from cconv._kernels import _conv, _dense, _elementwise

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
PADDINGS = ("valid", "same")
# Images per partial sum in the conv weight gradient. Fixed, so that the order of
# floating-point additions, and so the result, never depends on the thread count.
GRAD_CHUNK = 8
DENSE_BLOCK = 512  # features per thread work unit in the dense weight gradient


def _physical_memory():
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): no guard
        return None


# No array larger than the machine's memory is ever attempted: a huge shape fails at once
# with a ValueError instead of a MemoryError or hours of swapping.
MAX_BYTES = _physical_memory()


def check_size(name, shape, dtype):
    """Raise ValueError when an array of `shape` and `dtype` could not fit in memory."""
    nbytes = math.prod(int(s) for s in shape) * np.dtype(dtype).itemsize
    if MAX_BYTES is not None and nbytes > MAX_BYTES:
        raise ValueError(f"{name}: an array of shape {tuple(shape)} and dtype "
                         f"{np.dtype(dtype)} would need {nbytes / 2**30:,.1f} GiB, more than "
                         f"this machine's {MAX_BYTES / 2**30:,.1f} GiB of memory")


def _empty(name, shape, dtype):
    check_size(name, shape, dtype)
    return np.empty(shape, dtype=dtype)


def _float_array(name, a, ndim=None, dtype=None):
    """`a` as a C-contiguous float32/float64 ndarray, or a clear TypeError/ValueError."""
    if not isinstance(a, np.ndarray):
        if not isinstance(a, (list, tuple, numbers.Number)):
            raise TypeError(f"{name}: expected a numpy array, got {type(a).__name__}")
        try:
            a = np.asarray(a)
        except ValueError as exc:  # ragged nested lists
            raise ValueError(f"{name}: expected a rectangular array, got {exc}") from None
        if a.dtype.kind in "iub":
            a = a.astype(np.float64 if dtype is None else dtype)
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected dtype float32 or float64, got {a.dtype}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {np.dtype(dtype)} to match the other "
                        f"arguments, got {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-d array, got shape {a.shape}")
    if a.flags.c_contiguous:
        return a  # (np.ascontiguousarray would turn a 0-d array into shape (1,))
    check_size(name, a.shape, a.dtype)  # a copy follows, and a broadcast view may be huge
    return np.ascontiguousarray(a)


def _padding(padding, kernel_hw):
    """(pad_top, pad_left) for stride 1. 'same' pads like Keras: any odd pixel at the end."""
    if not isinstance(padding, str) or padding not in PADDINGS:
        raise ValueError(f"padding: expected one of {PADDINGS}, got {padding!r}")
    if padding == "valid":
        return 0, 0
    return (kernel_hw[0] - 1) // 2, (kernel_hw[1] - 1) // 2


def conv_output_shape(input_shape, kernel_shape, padding="valid"):
    """(N, OH, OW, F) of conv2d for x of `input_shape` (N, H, W, C), kernels (KH, KW, C, F)."""
    n, h, w, c = input_shape
    kh, kw, kc, f = kernel_shape
    if padding == "same":
        return (n, h, w, f)
    return (n, h - kh + 1, w - kw + 1, f)


def _check_conv(x, w, padding):
    x = _float_array("x", x, ndim=4)
    w = _float_array("w", w, ndim=4, dtype=x.dtype)
    kh, kw, kc, f = w.shape
    if min(w.shape) < 1:
        raise ValueError(f"w: every dimension of (KH, KW, C, F) must be >= 1, got {w.shape}")
    if x.shape[3] != kc:
        raise ValueError(f"x: expected {kc} channels (last axis) to match w of shape "
                         f"{w.shape}, got x of shape {x.shape}")
    pads = _padding(padding, (kh, kw))
    if padding == "valid" and (x.shape[1] < kh or x.shape[2] < kw):
        raise ValueError(f"x: images of {x.shape[1]}x{x.shape[2]} are smaller than the "
                         f"{kh}x{kw} kernel; 'valid' padding needs H >= KH and W >= KW")
    return x, w, pads


FUSED_ACTIVATIONS = {None: 0, "linear": 0, "tanh": 1, "relu": 2}  # the kernels' codes


def _gray_work_size(out_shape, kernel_shape):
    """Per-thread scratch of the single-channel conv path: a zero-padded frame of the
    image and the filters' output planes, both as wide as the frame."""
    _, oh, ow, f = out_shape
    kh, kw, c, _ = kernel_shape
    if c != 1:
        return 1
    hp, wp = oh + kh - 1, ow + kw - 1
    return hp * wp + f * oh * wp


def _check_out(out, shape, dtype):
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out: expected a numpy array, got {type(out).__name__}")
    if out.shape != shape or out.dtype != dtype:
        raise ValueError(f"out: expected shape {shape} and dtype {np.dtype(dtype)}, got "
                         f"{out.shape} and {out.dtype}")
    if not (out.flags.c_contiguous and out.flags.writeable):
        raise ValueError("out: expected a writeable, C-contiguous array")
    return out


def conv2d(x, w, b=None, padding="valid", activation=None, out=None):
    """Stride-1 2-D convolution (cross-correlation, as in Keras) of x (N, H, W, C) with
    kernels w (KH, KW, C, F), plus bias b (F,) when given. Returns (N, OH, OW, F).

    activation "tanh" or "relu" is applied inside the kernel, while the output is still
    in cache; the result equals tanh(conv2d(...)) to within rounding. `out` is an array
    to write the result into, so that a caller can reuse memory across batches (fresh
    memory costs a page fault per 4 KiB on first touch)."""
    x, w, (pad_top, pad_left) = _check_conv(x, w, padding)
    if not (activation is None or isinstance(activation, str)) \
            or activation not in FUSED_ACTIVATIONS:
        raise ValueError(f"activation: expected one of {list(FUSED_ACTIVATIONS)}, "
                         f"got {activation!r}")
    if b is None:
        b = np.empty(0, dtype=x.dtype)
    else:
        b = _float_array("b", b, ndim=1, dtype=x.dtype)
        if b.shape[0] != w.shape[3]:
            raise ValueError(f"b: expected shape ({w.shape[3]},) to match w's {w.shape[3]} "
                             f"filters, got {b.shape}")
    shape = conv_output_shape(x.shape, w.shape, padding)
    if out is None:
        out = _empty("conv2d output", shape, x.dtype)
    else:
        out = _check_out(out, shape, x.dtype)
    if out.size:
        threads = get_num_threads()
        work = _empty("conv2d scratch", (threads, _gray_work_size(out.shape, w.shape)),
                      x.dtype)
        _conv.conv2d_forward(x, w, b, out, work, pad_top, pad_left,
                             FUSED_ACTIVATIONS[activation], threads)
    return out


def conv2d_backward(x, w, grad_out, padding="valid", need_grad_x=True):
    """Gradients of conv2d. Returns (grad_x, grad_w, grad_b); grad_x is None when
    need_grad_x is False (a first layer has no use for it)."""
    x, w, (pad_top, pad_left) = _check_conv(x, w, padding)
    grad_out = _float_array("grad_out", grad_out, ndim=4, dtype=x.dtype)
    expected = conv_output_shape(x.shape, w.shape, padding)
    if grad_out.shape != expected:
        raise ValueError(f"grad_out: expected shape {expected} (the conv2d output), "
                         f"got {grad_out.shape}")
    threads = get_num_threads()
    n_chunks = max(1, -(-x.shape[0] // GRAD_CHUNK))
    partial_w = _empty("conv2d_backward partial sums", (n_chunks,) + w.shape, x.dtype)
    partial_b = np.empty((n_chunks, w.shape[3]), dtype=x.dtype)
    if x.shape[0]:
        _conv.conv2d_backward_params(x, grad_out, partial_w, partial_b, GRAD_CHUNK,
                                     pad_top, pad_left, threads)
    else:
        partial_w[:] = 0
        partial_b[:] = 0
    # numpy adds the chunks in index order on one thread: the same bits every time.
    grad_w = partial_w.sum(axis=0)
    grad_b = partial_b.sum(axis=0)
    grad_x = None
    if need_grad_x:
        grad_x = np.empty_like(x)
        if x.size:
            w_t = np.ascontiguousarray(w.transpose(0, 1, 3, 2))
            _conv.conv2d_backward_input(grad_out, w_t, grad_x, pad_top, pad_left, threads)
    return grad_x, grad_w, grad_b


def _flat_pair(name_a, a, name_b, b):
    a = _float_array(name_a, a)
    b = _float_array(name_b, b, dtype=a.dtype)
    if a.shape != b.shape:
        raise ValueError(f"{name_b}: expected shape {a.shape} to match {name_a}, got {b.shape}")
    return a, b


def tanh(x):
    """Elementwise tanh."""
    x = _float_array("x", x)
    out = np.empty_like(x)
    _elementwise.tanh_forward(x.reshape(-1), out.reshape(-1), get_num_threads())
    return out


def tanh_backward(y, grad_out):
    """grad_out * (1 - y**2): the gradient through tanh, given its output y."""
    y, grad_out = _flat_pair("y", y, "grad_out", grad_out)
    out = np.empty_like(y)
    _elementwise.tanh_backward(y.reshape(-1), grad_out.reshape(-1), out.reshape(-1),
                               get_num_threads())
    return out


def relu(x):
    """Elementwise max(x, 0)."""
    x = _float_array("x", x)
    out = np.empty_like(x)
    _elementwise.relu_forward(x.reshape(-1), out.reshape(-1), get_num_threads())
    return out


def relu_backward(y, grad_out):
    """grad_out where the relu output y is positive, else 0."""
    y, grad_out = _flat_pair("y", y, "grad_out", grad_out)
    out = np.empty_like(y)
    _elementwise.relu_backward(y.reshape(-1), grad_out.reshape(-1), out.reshape(-1),
                               get_num_threads())
    return out


def _check_rate(rate):
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        raise TypeError(f"rate: expected a float in [0, 1), got {type(rate).__name__}")
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"rate: expected a float in [0, 1), got {rate}")
    return float(rate)


def _check_mask(mask, shape):
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"mask: expected a numpy array, got {type(mask).__name__}")
    if mask.shape != shape:
        raise ValueError(f"mask: expected shape {shape}, got {mask.shape}")
    if mask.dtype.kind not in "biu":
        raise TypeError(f"mask: expected a bool or integer array of 0s and 1s, got {mask.dtype}")
    if mask.dtype != np.uint8:
        if mask.size and (mask.min() < 0 or mask.max() > 1):
            raise ValueError("mask: expected only 0s and 1s")
        mask = mask.astype(np.uint8)
    elif mask.size and mask.max() > 1:
        raise ValueError("mask: expected only 0s and 1s")
    return np.ascontiguousarray(mask)


def dropout_mask(shape, rate, seed):
    """The keep-mask (uint8, 1 = keep) that dropout(x, rate, seed) uses for x of `shape`.

    Element i (in C order) is kept when a hash of (seed, i) is >= rate: the same mask for
    any thread count, and cconv.oracle.dropout_mask rebuilds it in NumPy."""
    rate = _check_rate(rate)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed: expected an int in [0, 2**64), got {seed}")
    dims = (shape,) if isinstance(shape, numbers.Integral) else shape
    if not isinstance(dims, (tuple, list)) or not all(
            isinstance(d, numbers.Integral) and not isinstance(d, bool) for d in dims):
        raise TypeError(f"shape: expected a tuple of non-negative ints, got {shape!r}")
    if any(d < 0 for d in dims):
        raise ValueError(f"shape: expected a tuple of non-negative ints, got {shape!r}")
    mask = _empty("dropout_mask", tuple(int(d) for d in dims), np.uint8)
    _elementwise.dropout_mask(int(seed), rate, mask.reshape(-1), get_num_threads())
    return mask


def dropout(x, rate, seed=None, mask=None):
    """Inverted dropout: zero each element with probability `rate`, scale the rest by
    1 / (1 - rate). Returns (y, mask). The mask comes from `seed` (see dropout_mask), or
    is given as `mask` (0/1, the shape of x) to replay a known draw."""
    x = _float_array("x", x)
    rate = _check_rate(rate)
    if mask is None:
        if seed is None:
            raise ValueError("dropout: give either seed or mask, got neither")
        mask = dropout_mask(x.shape, rate, seed)
    else:
        mask = _check_mask(mask, x.shape)
    out = np.empty_like(x)
    scale = x.dtype.type(1.0 / (1.0 - rate))
    _elementwise.dropout_apply(x.reshape(-1), mask.reshape(-1), scale, out.reshape(-1),
                               get_num_threads())
    return out, mask


def dropout_backward(grad_out, mask, rate):
    """The gradient through dropout: grad_out * mask / (1 - rate)."""
    grad_out = _float_array("grad_out", grad_out)
    rate = _check_rate(rate)
    mask = _check_mask(mask, grad_out.shape)
    out = np.empty_like(grad_out)
    scale = grad_out.dtype.type(1.0 / (1.0 - rate))
    _elementwise.dropout_apply(grad_out.reshape(-1), mask.reshape(-1), scale,
                               out.reshape(-1), get_num_threads())
    return out


def _check_dense(x, w):
    x = _float_array("x", x, ndim=2)
    w = _float_array("w", w, ndim=2, dtype=x.dtype)
    if x.shape[1] != w.shape[0]:
        raise ValueError(f"x: expected {w.shape[0]} features to match w of shape {w.shape}, "
                         f"got x of shape {x.shape}")
    # The kernels read the weights one output unit at a time: (U, D) rows.
    return x, w, np.ascontiguousarray(w.T)


def dense(x, w, b=None):
    """x (N, D) @ w (D, U) + b (U,)."""
    x, w, w_t = _check_dense(x, w)
    if b is None:
        b = np.empty(0, dtype=x.dtype)
    else:
        b = _float_array("b", b, ndim=1, dtype=x.dtype)
        if b.shape != (w.shape[1],):
            raise ValueError(f"b: expected shape ({w.shape[1]},), got {b.shape}")
    out = _empty("dense output", (x.shape[0], w.shape[1]), x.dtype)
    if x.shape[1] == 0:  # no features: the kernel would address x[n, 0], which is not there
        out[...] = b if b.size else 0
    elif out.size:  # an empty (2**40, 0) output must not cost 2**40 empty iterations
        _dense.dense_forward(x, w_t, b, out, get_num_threads())
    return out


def dense_backward(x, w, grad_out, need_grad_x=True):
    """Gradients of dense: (grad_x or None, grad_w, grad_b)."""
    x, w, w_t = _check_dense(x, w)
    grad_out = _float_array("grad_out", grad_out, ndim=2, dtype=x.dtype)
    if grad_out.shape != (x.shape[0], w.shape[1]):
        raise ValueError(f"grad_out: expected shape {(x.shape[0], w.shape[1])} for x "
                         f"{x.shape} and w {w.shape}, got {grad_out.shape}")
    check_size("grad_b", (w.shape[1],), x.dtype)
    threads = get_num_threads()
    grad_w_t = np.zeros_like(w_t) if x.shape[0] == 0 else np.empty_like(w_t)
    if x.shape[0] and grad_w_t.size:  # empty work must not loop over huge dimensions
        _dense.dense_backward_kernel(x, grad_out, grad_w_t, DENSE_BLOCK, threads)
    grad_x = None
    if need_grad_x:
        grad_x = np.empty_like(x)
        if grad_x.size:
            _dense.dense_backward_input(grad_out, w_t, grad_x, threads)
    return grad_x, np.ascontiguousarray(grad_w_t.T), grad_out.sum(axis=0)
