"""The functional face of the compiled kernels.

Each function checks its arguments (types, ranks, shapes, dtypes), makes them
C-contiguous, allocates the output and calls one kernel. The kernels run without bounds
checks, so nothing reaches them unchecked. `cconv.oracle` has the same functions in
plain NumPy.

Layout is channels-last, as in Keras: images (N, H, W, C), conv kernels (KH, KW, C, F).
Supported dtypes are float32 and float64; all float arguments of a call share one dtype.
"""
import numbers

import numpy as np

from cconv._config import get_num_threads
from cconv._kernels import _conv, _dense, _elementwise

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
PADDINGS = ("valid", "same")
# Images per partial sum in the conv weight gradient. Fixed, so that the order of
# floating-point additions, and so the result, never depends on the thread count.
GRAD_CHUNK = 8
DENSE_BLOCK = 512  # features per thread work unit in the dense weight gradient


def _float_array(name, a, ndim=None, dtype=None):
    """`a` as a C-contiguous float32/float64 ndarray, or a clear TypeError/ValueError."""
    if not isinstance(a, np.ndarray):
        if not isinstance(a, (list, tuple, numbers.Number)):
            raise TypeError(f"{name}: expected a numpy array, got {type(a).__name__}")
        a = np.asarray(a)
        if a.dtype.kind in "iub":
            a = a.astype(np.float64 if dtype is None else dtype)
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected dtype float32 or float64, got {a.dtype}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {np.dtype(dtype)} to match the other "
                        f"arguments, got {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-d array, got shape {a.shape}")
    return np.ascontiguousarray(a)


def _padding(padding, kernel_hw):
    """(pad_top, pad_left) for stride 1. 'same' pads like Keras: any odd pixel at the end."""
    if padding not in PADDINGS:
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
    """Per-thread scratch of the single-channel conv path: a zero-padded copy of one image."""
    _, oh, ow, f = out_shape
    kh, kw, c, _ = kernel_shape
    if c != 1:
        return 1
    hp, wp = oh + kh - 1, ow + kw - 1
    return hp * wp


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
    if activation not in FUSED_ACTIVATIONS:
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
        out = np.empty(shape, dtype=x.dtype)
    else:
        out = _check_out(out, shape, x.dtype)
    if out.size:
        threads = get_num_threads()
        work = np.empty((threads, _gray_work_size(out.shape, w.shape)), dtype=x.dtype)
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
    partial_w = np.empty((n_chunks,) + w.shape, dtype=x.dtype)
    partial_b = np.empty((n_chunks, w.shape[3]), dtype=x.dtype)
    if x.shape[0] and x.shape[3] == 1:
        work = np.empty((threads, _gray_work_size(grad_out.shape, w.shape)), dtype=x.dtype)
        _conv.conv2d_backward_params_gray(x, grad_out, partial_w, partial_b, work, GRAD_CHUNK,
                                          pad_top, pad_left, threads)
    elif x.shape[0]:
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
    mask = np.empty(shape, dtype=np.uint8)
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
    out = np.empty((x.shape[0], w.shape[1]), dtype=x.dtype)
    _dense.dense_forward(x, w_t, b, out, get_num_threads())
    return out


def dense_backward(x, w, grad_out, need_grad_x=True):
    """Gradients of dense: (grad_x or None, grad_w, grad_b)."""
    x, w, w_t = _check_dense(x, w)
    grad_out = _float_array("grad_out", grad_out, ndim=2, dtype=x.dtype)
    if grad_out.shape != (x.shape[0], w.shape[1]):
        raise ValueError(f"grad_out: expected shape {(x.shape[0], w.shape[1])} for x "
                         f"{x.shape} and w {w.shape}, got {grad_out.shape}")
    threads = get_num_threads()
    grad_w_t = np.empty_like(w_t)
    _dense.dense_backward_kernel(x, grad_out, grad_w_t, DENSE_BLOCK, threads)
    grad_x = None
    if need_grad_x:
        grad_x = np.empty_like(x)
        _dense.dense_backward_input(grad_out, w_t, grad_x, threads)
    return grad_x, np.ascontiguousarray(grad_w_t.T), grad_out.sum(axis=0)
