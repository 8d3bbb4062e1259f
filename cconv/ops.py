"""The functional face of the compiled kernels.

Each function checks its arguments (types, ranks, shapes, dtypes), makes them
C-contiguous, allocates the output and calls the kernels (one, or a few in turn for
the fused ops and Winograd). The kernels run without bounds checks, so nothing reaches
them unchecked. `cconv.oracle` has the same functions in
plain NumPy.

Layout is channels-last, as in Keras: images (N, H, W, C), conv kernels (KH, KW, C, F).
Supported dtypes are float32 and float64; all float arguments of a call share one dtype.
"""
import math
import numbers
import os
import threading
from collections import OrderedDict

import numpy as np

from cconv._config import get_num_threads
from cconv._kernels import _config, _conv_1ch, _dense_narrow, _elementwise, _gemm, _optim, _pool, _winograd

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
PADDINGS = ("valid", "same")
# Images per partial sum in the conv weight gradient. Fixed, so that the order of
# floating-point additions, and so the result, never depends on the thread count.
GRAD_CHUNK = 8
DENSE_BLOCK = 512  # features per thread work unit in the dense weight gradient
# Dense layers with at least this many units go through the GEMM kernels; narrower ones
# (a 10-way classifier) through the dot-product kernels of _dense_narrow, built for them.
DENSE_GEMM_MIN_UNITS = 16

_scratch = threading.local()
SCRATCH_ENTRIES = 16


def _workspace(name, shape, dtype):
    """A scratch array reused across calls (fresh memory costs a page fault per 4 KiB),
    one per thread of the caller so that concurrent calls never share one. The contents
    are garbage: the kernels overwrite what they read."""
    cache = getattr(_scratch, "arrays", None)
    if cache is None:
        cache = _scratch.arrays = OrderedDict()
    key = (name, tuple(shape), np.dtype(dtype))
    buf = cache.get(key)
    if buf is None:
        buf = cache[key] = np.empty(shape, dtype=dtype)
        while len(cache) > SCRATCH_ENTRIES:
            cache.popitem(last=False)
    else:
        cache.move_to_end(key)
    return buf


def _panel_width(dtype):
    """Columns per GEMM micro-kernel tile, as the kernels of this CPU level have them."""
    return _gemm.tile_columns(np.dtype(dtype).itemsize)


def _conv_panels(w):
    """Kernels (KH, KW, C, F) as the GEMM path reads them: zero-padded panels of NR
    filters, (ceil(F / NR), KH*KW*C, NR)."""
    kh, kw, c, f = w.shape
    nr = _panel_width(w.dtype)
    panels = -(-f // nr)
    padded = np.zeros((kh * kw * c, panels * nr), dtype=w.dtype)
    padded[:, :f] = w.reshape(kh * kw * c, f)
    return np.ascontiguousarray(padded.reshape(-1, panels, nr).transpose(1, 0, 2))


# Winograd F(2x2, 5x5) (see _winograd.pyx): the kernels' transform G w G^T. G is
# applied once per call in float64, so its fractions cost the float32 path nothing.
WINOGRAD_G = np.array([[1 / 2, 0, 0, 0, 0],
                       [1 / 6, 1 / 6, 1 / 6, 1 / 6, 1 / 6],
                       [1 / 6, -1 / 6, 1 / 6, -1 / 6, 1 / 6],
                       [1 / 30, 2 / 30, 4 / 30, 8 / 30, 16 / 30],
                       [16 / 30, -8 / 30, 4 / 30, -2 / 30, 1 / 30],
                       [0, 0, 0, 0, 1 / 2]])
# 5x5 convolutions with at least this many input channels and filters take the Winograd
# path: with fewer, transforming every patch costs more than the products it saves
# (measured on one thread, 50 images of 14x14: 1.35x faster at C = 8, F = 64 in float32,
# 0.84x at C = 8, F = 8).
WINOGRAD_MIN_CHANNELS = 8
WINOGRAD_MIN_FILTERS = 16
# The kernel gradient pads C to a panel: float32 C = 8 runs 1.2x slower than direct,
# C = 16 1.3x faster (F = 16).
WINOGRAD_GRAD_MIN_CHANNELS = 16
WINOGRAD_BLOCK = 24  # tiles per work unit: V and M of one unit stay in L2
# Images per partial sum of the kernel gradient: a thread's work unit, fixed so that
# the sums never depend on the thread count.
WINOGRAD_GRAD_CHUNK = 4


def _winograd_panels(w):
    """G w G^T for kernels (5, 5, C, F) as zero-padded NR-wide panels (36, ceil(F / NR),
    C, NR), as _winograd.conv5_forward reads them."""
    _, _, c, f = w.shape
    nr = _panel_width(w.dtype)
    panels = -(-f // nr)
    # einsum without optimize: no BLAS, whose threads would fight OpenMP's for the cores
    gw = np.einsum("ak,kbcf->abcf", WINOGRAD_G, w.astype(np.float64))  # (6, 5, C, F)
    u = np.einsum("bl,alcf->abcf", WINOGRAD_G, gw)  # (6, 6, C, F)
    padded = np.zeros((36, c, panels * nr))
    padded[:, :, :f] = u.reshape(36, c, f)
    return np.ascontiguousarray(padded.reshape(36, c, panels, nr).transpose(0, 2, 1, 3),
                                dtype=w.dtype)


def _conv_winograd(src, w, b, out, top, left, act, threads):
    """out = act(conv(src, w) + b) for 5x5 kernels by Winograd F(2x2, 5x5)."""
    c, f = w.shape[2], w.shape[3]
    if b.shape[0] == 0:
        b = np.zeros(f, dtype=src.dtype)
    work = _workspace("conv_winograd", (threads, _winograd.work_size(
        c, f, WINOGRAD_BLOCK, src.dtype.itemsize)), src.dtype)
    _winograd.conv5_forward(src, _winograd_panels(w), b, out, work, top, left, act,
                            WINOGRAD_BLOCK, threads)


def _winograd_kernel_grad(x, grad_out, top, left, threads):
    """grad_w (5, 5, C, F) of a 5x5 convolution by Winograd F(5x5, 2x2): the kernel sums
    (A h A^T) . (B^T d B) over the tiles of fixed chunks of images, numpy adds the chunks
    in order in float64, and G^T .. G maps the sum back."""
    c, f = x.shape[3], grad_out.shape[3]
    nr = _panel_width(x.dtype)
    cp = -(-c // nr) * nr
    tiles = -(-grad_out.shape[1] // 2) * -(-grad_out.shape[2] // 2)
    chunks = -(-x.shape[0] // WINOGRAD_GRAD_CHUNK)
    partial = _empty("conv2d_backward partial sums", (chunks, 36, f, cp), np.float64)
    work = _workspace("winograd_grad", (threads, _winograd.grad_work_size(
        c, f, tiles, x.dtype.itemsize)), x.dtype)
    _winograd.conv5_backward_weights(x, grad_out, partial, work, top, left,
                                    WINOGRAD_GRAD_CHUNK, threads)
    m = partial.sum(axis=0)[:, :, :c].reshape(6, 6, f, c)
    gw = np.einsum("ik,ijfc->kjfc", WINOGRAD_G, m)  # G^T over the rows (as above, no BLAS)
    gw = np.einsum("kjfc,jl->klcf", gw, WINOGRAD_G)  # ... and the columns
    return gw.astype(x.dtype)


def _winograd_wins(kh, kw, c, f):
    """Whether a convolution with C input channels and F filters takes Winograd."""
    return (kh, kw) == (5, 5) and c >= WINOGRAD_MIN_CHANNELS and f >= WINOGRAD_MIN_FILTERS


def _conv_gemm(src, w, b, out, kh, kw, top, left, act, threads):
    """out = act(conv(src, w) + b) by the GEMM kernels, src framed at (top, left)."""
    if _winograd_wins(kh, kw, src.shape[3], w.shape[3]):
        _conv_winograd(src, w, b, out, top, left, act, threads)
        return
    frame = (out.shape[1] + kh - 1) * (out.shape[2] + kw - 1) * src.shape[3]
    frames = _workspace("conv_frames", (threads, frame), src.dtype)
    _gemm.conv_forward(src, _conv_panels(w), b, out, frames, kh, kw, top, left, act,
                       threads)


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


FUSED_ACTIVATIONS = {None: _config.ACTIVATION_CODES["linear"], **_config.ACTIVATION_CODES}


def _gray_work_size(out_shape, kernel_shape):
    """Per-thread scratch of the single-channel conv path: a zero-padded copy of one image."""
    _, oh, ow, _ = out_shape
    kh, kw, _, _ = kernel_shape
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


def _check_activation(activation):
    """The kernels' code for a fused activation name."""
    if not (activation is None or isinstance(activation, str)) \
            or activation not in FUSED_ACTIVATIONS:
        raise ValueError(f"activation: expected one of {list(FUSED_ACTIVATIONS)}, "
                         f"got {activation!r}")
    return FUSED_ACTIVATIONS[activation]


def _bias(name, b, n, dtype, what):
    """b checked as (n,), or an empty array for no bias."""
    if b is None:
        return np.empty(0, dtype=dtype)
    b = _float_array(name, b, ndim=1, dtype=dtype)
    if b.shape[0] != n:
        raise ValueError(f"{name}: expected shape ({n},) to match {what}, got {b.shape}")
    return b


def conv2d(x, w, b=None, padding="valid", activation=None, out=None):
    """Stride-1 2-D convolution (cross-correlation, as in Keras) of x (N, H, W, C) with
    kernels w (KH, KW, C, F), plus bias b (F,) when given. Returns (N, OH, OW, F).

    activation "tanh" or "relu" is applied inside the kernel, while the output is still
    in cache; the result equals tanh(conv2d(...)) to within rounding. `out` is an array
    to write the result into, so that a caller can reuse memory across batches (fresh
    memory costs a page fault per 4 KiB on first touch)."""
    x, w, (pad_top, pad_left) = _check_conv(x, w, padding)
    _check_activation(activation)
    b = _bias("b", b, w.shape[3], x.dtype, f"w's {w.shape[3]} filters")
    shape = conv_output_shape(x.shape, w.shape, padding)
    if out is None:
        out = _empty("conv2d output", shape, x.dtype)
    else:
        out = _check_out(out, shape, x.dtype)
    if out.size:
        threads = get_num_threads()
        if x.shape[3] > 1:
            _conv_gemm(x, w, b, out, w.shape[0], w.shape[1], pad_top, pad_left,
                       FUSED_ACTIVATIONS[activation], threads)
        else:
            work = _empty("conv2d scratch", (threads, _gray_work_size(out.shape, w.shape)),
                          x.dtype)
            _conv_1ch.conv2d_forward(x, w, b, out, work, pad_top, pad_left,
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
    if x.shape[3] > 1:
        return _conv_backward_gemm(x, w, grad_out, pad_top, pad_left, need_grad_x, threads)
    n_chunks = max(1, -(-x.shape[0] // GRAD_CHUNK))
    partial_w = _empty("conv2d_backward partial sums", (n_chunks,) + w.shape, x.dtype)
    partial_b = np.empty((n_chunks, w.shape[3]), dtype=x.dtype)
    if x.shape[0]:
        work = np.empty((threads, _gray_work_size(grad_out.shape, w.shape)), dtype=x.dtype)
        _conv_1ch.conv2d_backward_weights(x, grad_out, partial_w, partial_b, work, GRAD_CHUNK,
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
            _conv_1ch.conv2d_backward_input(grad_out, w_t, grad_x, pad_top, pad_left, threads)
    return grad_x, grad_w, grad_b


def _conv_backward_gemm(x, w, grad_out, pad_top, pad_left, need_grad_x, threads):
    """conv2d_backward for C > 1. The kernel gradient is split into tiles among the
    threads, each summing over the whole batch in image order; the input gradient is the
    convolution of grad_out, framed by the kernel's far side, with the kernels flipped
    and their channel axes swapped."""
    kh, kw, c, f = w.shape
    n, oh, ow, _ = grad_out.shape
    grad_w = np.empty_like(w)
    # In float64 whatever the dtype: numpy adds row after row, so a long float32 sum
    # would lose digits; the order, and so the bits, are fixed.
    grad_b = grad_out.reshape(-1, f).sum(axis=0, dtype=np.float64).astype(x.dtype)
    if n == 0:
        grad_w[:] = 0
    elif _winograd_wins(kh, kw, c, f) and c >= WINOGRAD_GRAD_MIN_CHANNELS:
        grad_w[:] = _winograd_kernel_grad(x, grad_out, pad_top, pad_left, threads)
    else:
        per_worker = ((oh + kh - 1) * (ow + kw - 1) * c
                      + -(-f // _panel_width(x.dtype)) * _panel_width(x.dtype) * oh * ow)
        work = _workspace("conv_grad_w", (threads, per_worker), x.dtype)
        _gemm.conv_backward_weights(x, grad_out, grad_w, work, pad_top, pad_left, threads)
    grad_x = None
    if need_grad_x:
        grad_x = np.empty_like(x)
        if x.size:
            w_flipped = np.ascontiguousarray(w[::-1, ::-1].transpose(0, 1, 3, 2))
            _conv_gemm(grad_out, w_flipped, np.empty(0, dtype=x.dtype), grad_x, kh, kw,
                       kh - 1 - pad_top, kw - 1 - pad_left, 0, threads)
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


def _check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed: expected an int in [0, 2**64), got {seed}")


def dropout_mask(shape, rate, seed):
    """The keep-mask (uint8, 1 = keep) that dropout(x, rate, seed) uses for x of `shape`.

    Element i (in C order) is kept when a hash of (seed, i) is >= rate: the same mask for
    any thread count, and cconv.oracle.dropout_mask rebuilds it in NumPy."""
    rate = _check_rate(rate)
    _check_seed(seed)
    dims = (shape,) if isinstance(shape, numbers.Integral) else shape
    if not isinstance(dims, (tuple, list)) or not all(
            isinstance(d, numbers.Integral) and not isinstance(d, bool) for d in dims):
        raise TypeError(f"shape: expected a tuple of non-negative ints, got {shape!r}")
    if any(d < 0 for d in dims):
        raise ValueError(f"shape: expected a tuple of non-negative ints, got {shape!r}")
    mask = _empty("dropout_mask", tuple(int(d) for d in dims), np.uint8)
    nothing = np.empty(0, dtype=np.float32)
    _elementwise.dropout(int(seed), rate, mask.reshape(-1), nothing, np.float32(1), nothing,
                         get_num_threads())
    return mask


def dropout(x, rate, seed=None, mask=None):
    """Inverted dropout: zero each element with probability `rate`, scale the rest by
    1 / (1 - rate). Returns (y, mask). The mask comes from `seed` (see dropout_mask), or
    is given as `mask` (0/1, the shape of x) to replay a known draw."""
    x = _float_array("x", x)
    rate = _check_rate(rate)
    out = np.empty_like(x)
    scale = x.dtype.type(1.0 / (1.0 - rate))
    if mask is None:
        if seed is None:
            raise ValueError("dropout: give either seed or mask, got neither")
        _check_seed(seed)
        mask = _empty("dropout mask", x.shape, np.uint8)
        _elementwise.dropout(int(seed), rate, mask.reshape(-1), x.reshape(-1), scale,
                             out.reshape(-1), get_num_threads())
    else:
        mask = _check_mask(mask, x.shape)
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
    return x, w


def _transposed(w):
    """The _dense kernels read the weights one output unit at a time: (U, D) rows."""
    return np.ascontiguousarray(w.T)


def _dense_by_gemm(x, w):
    return w.shape[1] >= DENSE_GEMM_MIN_UNITS and x.size > 0 and w.size > 0


def _gemm_call(m, n, k, a, a_rs, a_cs, b, ldb, c, c_rs, c_cs, bias, b_cs=1):
    """c = a @ b (+ bias) through _gemm.gemm, with flat views and this thread's packing
    buffer. b's rows are ldb apart and its columns b_cs."""
    threads = get_num_threads()
    work = _workspace("gemm_pack", (threads, _gemm.pack_size()), a.dtype)
    _gemm.gemm(m, n, k, a.reshape(-1), a_rs, a_cs, b.reshape(-1), ldb, b_cs, c.reshape(-1),
               c_rs, c_cs, bias, work, threads)


def dense(x, w, b=None):
    """x (N, D) @ w (D, U) + b (U,)."""
    x, w = _check_dense(x, w)
    if b is None:
        b = np.empty(0, dtype=x.dtype)
    else:
        b = _float_array("b", b, ndim=1, dtype=x.dtype)
        if b.shape != (w.shape[1],):
            raise ValueError(f"b: expected shape ({w.shape[1]},), got {b.shape}")
    out = _empty("dense output", (x.shape[0], w.shape[1]), x.dtype)
    if _dense_by_gemm(x, w):
        n, d = x.shape
        u = w.shape[1]
        _gemm_call(n, u, d, x, d, 1, w, u, out, u, 1, b)
    elif x.shape[1] == 0:  # no features: the kernel would address x[n, 0], which is not there
        out[...] = b if b.size else 0
    elif out.size:  # an empty (2**40, 0) output must not cost 2**40 empty iterations
        _dense_narrow.dense_forward(x, _transposed(w), b, out, get_num_threads())
    return out


def _dense_grad_x_by_gemm(grad_out, w):
    """grad_out @ w.T, w.T packed straight from w's rows: the batch is the short side, as
    in the forward pass (as the columns of grad_x.T it would fill four 16-wide panels
    with 50)."""
    n, (d, u) = grad_out.shape[0], w.shape
    grad_x = np.empty((n, d), dtype=w.dtype)
    _gemm_call(n, d, u, grad_out, u, 1, w, 1, grad_x, d, 1, np.empty(0, dtype=w.dtype),
               b_cs=u)
    return grad_x


def dense_backward(x, w, grad_out, need_grad_x=True):
    """Gradients of dense: (grad_x or None, grad_w, grad_b)."""
    x, w = _check_dense(x, w)
    grad_out = _float_array("grad_out", grad_out, ndim=2, dtype=x.dtype)
    if grad_out.shape != (x.shape[0], w.shape[1]):
        raise ValueError(f"grad_out: expected shape {(x.shape[0], w.shape[1])} for x "
                         f"{x.shape} and w {w.shape}, got {grad_out.shape}")
    check_size("grad_b", (w.shape[1],), x.dtype)
    if _dense_by_gemm(x, w):
        n, d = x.shape
        u = w.shape[1]
        none = np.empty(0, dtype=x.dtype)
        grad_w = np.empty_like(w)
        # grad_w = x.T @ grad_out: each element sums the batch in order.
        _gemm_call(d, u, n, x, 1, d, grad_out, u, grad_w, u, 1, none)
        grad_x = _dense_grad_x_by_gemm(grad_out, w) if need_grad_x else None
        return grad_x, grad_w, grad_out.sum(axis=0)
    w_t = _transposed(w)
    threads = get_num_threads()
    grad_w_t = np.zeros_like(w_t) if x.shape[0] == 0 else np.empty_like(w_t)
    if x.shape[0] and grad_w_t.size:  # empty work must not loop over huge dimensions
        _dense_narrow.dense_backward_weights(x, grad_out, grad_w_t, DENSE_BLOCK, threads)
    grad_x = None
    if need_grad_x:
        grad_x = np.empty_like(x)
        if grad_x.size:
            _dense_narrow.dense_backward_input(grad_out, w_t, grad_x, threads)
    return grad_x, np.ascontiguousarray(grad_w_t.T), grad_out.sum(axis=0)


# ---- fused runs of layers (see cconv.fusion) -----------------------------------------
def dense_backward_gated(grad_out, w, y, mask=None, rate=0.0, activation=None):
    """The gradient wrt z of dense(dropout(act(z))) given grad_out, the gradient wrt the
    dense output: dense_backward's grad_x, then dropout_backward (when mask is given, with
    `rate`), then the activation's backward given its output y (N, D). For dense layers
    below DENSE_GEMM_MIN_UNITS units one kernel does all three, each block while it is in
    cache; wider ones go through the GEMM and then the gates one by one."""
    grad_out = _float_array("grad_out", grad_out, ndim=2)
    w = _float_array("w", w, ndim=2, dtype=grad_out.dtype)
    y = _float_array("y", y, ndim=2, dtype=grad_out.dtype)
    n, d = y.shape
    if w.shape[1] != grad_out.shape[1] or grad_out.shape[0] != n or w.shape[0] != d:
        raise ValueError(f"grad_out: expected shape ({n}, U) for y of shape {y.shape} and w "
                         f"of shape (D={d}, U), got grad_out {grad_out.shape} and w {w.shape}")
    rate = _check_rate(rate)
    act = _check_activation(activation)
    if mask is None:
        mask = np.empty((0, 0), dtype=np.uint8)
    else:
        mask = _check_mask(mask, y.shape)
    if _dense_by_gemm(y, w):  # GEMM, then the gates one by one
        grad_x = _dense_grad_x_by_gemm(grad_out, w)
        if mask.size:
            grad_x = dropout_backward(grad_x, mask, rate)
        if act == FUSED_ACTIVATIONS["tanh"]:
            grad_x = tanh_backward(y, grad_x)
        elif act == FUSED_ACTIVATIONS["relu"]:
            grad_x = relu_backward(y, grad_x)
        return grad_x
    grad_x = _empty("dense_backward_gated output", y.shape, y.dtype)
    if d == 0 or w.shape[1] == 0:
        grad_x[...] = 0
    elif n:
        scale = y.dtype.type(1.0 / (1.0 - rate))
        _dense_narrow.dense_backward_input_gated(grad_out, _transposed(w), mask, scale, y, act,
                                          grad_x, get_num_threads())
    return grad_x


def _packed_dense(dense_w, oh, row, units):
    """dense_w (OH * row, U) as the conv2d_dense kernel streams it: (UP, OH, L), unit by
    unit, each output row's weights padded to L (a multiple of the SIMD width) and the
    units to UP (a multiple of the kernel's units per pass), with zeros."""
    lanes = _conv_1ch.fused_lanes(dense_w.dtype.itemsize)
    length = -(-row // lanes) * lanes
    per_pass = _conv_1ch.fused_units()
    padded_units = -(-units // per_pass) * per_pass
    wp = _workspace("conv2d_dense weights", (padded_units, oh, length), dense_w.dtype)
    wp[:units, :, :row] = dense_w.T.reshape(units, oh, row)
    wp[:units, :, row:] = 0
    wp[units:] = 0
    return wp


def conv2d_dense(x, w, b, dense_w, dense_b, padding="valid", activation=None):
    """dense(flatten(act(conv2d(x, w, b, padding))), dense_w, dense_b): (N, U) logits of a
    conv layer followed by a dense one, for x (N, H, W, C), kernels w (KH, KW, C, F) and
    dense_w (OH * OW * F, U); b and dense_b may be None. For single-channel images
    (C == 1) the conv output is never stored: each image's rows are computed into cache
    and added to its logits at once, which saves writing the (N, OH, OW, F) output to
    memory and reading it back. Other images go layer by layer.
    activation is the conv's: None, "linear", "tanh" or "relu"."""
    x, w, (pad_top, pad_left) = _check_conv(x, w, padding)
    act = _check_activation(activation)
    b = _bias("b", b, w.shape[3], x.dtype, f"w's {w.shape[3]} filters")
    dense_w = _float_array("dense_w", dense_w, ndim=2, dtype=x.dtype)
    n, oh, ow, f = conv_output_shape(x.shape, w.shape, padding)
    if dense_w.shape[0] != oh * ow * f:
        raise ValueError(f"dense_w: expected {oh * ow * f} rows, one per value of the conv "
                         f"output ({oh}, {ow}, {f}), got shape {dense_w.shape}")
    units = dense_w.shape[1]
    dense_b = _bias("dense_b", dense_b, units, x.dtype, f"dense_w's {units} units")
    if x.shape[3] > 1:
        h = conv2d(x, w, b if b.size else None, padding, activation)
        return dense(h.reshape(n, -1), dense_w, dense_b if dense_b.size else None)
    out = _empty("conv2d_dense output", (n, units), x.dtype)
    if oh * ow == 0 or units == 0:  # no conv output: the logits are the dense bias
        out[...] = dense_b if dense_b.size else 0
    elif n:
        threads = get_num_threads()
        wp = _packed_dense(dense_w, oh, ow * f, units)
        frame = (oh + w.shape[0] - 1) * (ow + w.shape[1] - 1)
        lanes = _conv_1ch.fused_lanes(x.dtype.itemsize)
        per_image = frame + wp.shape[2] + wp.shape[0] * lanes
        work = _workspace("conv2d_dense scratch",
                          (threads, _conv_1ch.fused_group() * per_image), x.dtype)
        _conv_1ch.conv2d_dense_forward(x, w, b, wp, dense_b, out, work, ow, pad_top, pad_left,
                                   act, threads)
    return out


# ---- pooling -------------------------------------------------------------------------
_SMALL = 32768  # elements below which one thread beats waking and joining the others


def _threads_for(size):
    """Threads for a cheap, memory-bound kernel over `size` elements. Results never depend
    on it: the kernels' work units are fixed."""
    return 1 if size < _SMALL else get_num_threads()


KERNEL_POOL_MODES = _config.POOL_MODES
_INT32_MAX = 2**31 - 1  # max_pool2d's argmax holds flat indices within one image


def _pool_size(pool_size):
    if isinstance(pool_size, (tuple, list)) and len(pool_size) == 2:
        values = tuple(pool_size)
    elif isinstance(pool_size, (tuple, list)):
        raise ValueError(f"pool_size: expected an int or a pair of ints, got {pool_size!r}")
    else:
        values = (pool_size, pool_size)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"pool_size: expected positive ints, got {pool_size!r}")
        if not 1 <= v <= _INT32_MAX:  # the kernels take C ints
            raise ValueError(f"pool_size: expected positive ints below 2**31, got "
                             f"{pool_size!r}")
    return int(values[0]), int(values[1])


def pool_output_shape(input_shape, pool_size, padding="valid"):
    """(N, OH, OW, C) of max_pool2d with stride = pool size, as in Keras: 'valid' keeps
    whole windows only (floor(H / PH)), 'same' covers every pixel (ceil(H / PH))."""
    n, h, w, c = _check_shape_tuple("input_shape", input_shape, 4)
    ph, pw = _pool_size(pool_size)  # unchecked, a zero size would divide by zero
    if not isinstance(padding, str) or padding not in PADDINGS:
        raise ValueError(f"padding: expected one of {PADDINGS}, got {padding!r}")
    if padding == "same":
        return (n, -(-h // ph), -(-w // pw), c)
    return (n, h // ph, w // pw, c)


def _pool_pads(input_shape, pool_size, padding):
    """(pad_top, pad_left): TensorFlow's 'same' puts the smaller half of the padding first;
    'valid' has none (windows start at the top left, leftover rows and columns at the
    bottom right are dropped)."""
    if padding != "same":
        return 0, 0
    _, oh, ow, _ = pool_output_shape(input_shape, pool_size, padding)
    return (oh * pool_size[0] - input_shape[1]) // 2, (ow * pool_size[1] - input_shape[2]) // 2


def _check_pool(x_shape, pool_size, padding, padding_name="padding", what="input"):
    """((PH, PW), pads) for pooling images of x_shape; padding_name and what name the
    argument and the pooled array in errors."""
    ph, pw = _pool_size(pool_size)
    if not isinstance(padding, str) or padding not in PADDINGS:
        raise ValueError(f"{padding_name}: expected one of {PADDINGS}, got {padding!r}")
    _, h, w, c = x_shape
    if padding == "valid" and (h < ph or w < pw):
        raise ValueError(f"pool_size: a {ph}x{pw} window is larger than the {h}x{w} {what}; "
                         f"'valid' pooling needs H >= {ph} and W >= {pw} "
                         f"(or use {padding_name}='same')")
    if h * w * c > _INT32_MAX:
        raise ValueError(f"x: a {what} of {h}x{w}x{c} per image has more than 2**31 - 1 "
                         f"elements; the int32 argmax cannot index it")
    return (ph, pw), _pool_pads(x_shape, (ph, pw), padding)


def _argmax_buffers(need_argmax, out_argmax, shape, what):
    """(argmax to return or None, the array the kernel writes: an empty one when no
    argmax is wanted); out_argmax, when given, is checked and used."""
    if not need_argmax:
        return None, np.empty((0, 0, 0, 0), dtype=np.int32)
    if out_argmax is None:
        argmax = _empty(what, shape, np.int32)
        return argmax, argmax
    if not isinstance(out_argmax, np.ndarray):
        raise TypeError(f"out_argmax: expected a numpy array, got {type(out_argmax).__name__}")
    if out_argmax.shape != shape or out_argmax.dtype != np.int32 \
            or not out_argmax.flags.c_contiguous or not out_argmax.flags.writeable:
        raise ValueError(f"out_argmax: expected a writeable C-contiguous int32 array of "
                         f"shape {shape}, got {out_argmax.dtype} {out_argmax.shape}")
    return out_argmax, out_argmax


def max_pool2d(x, pool_size, padding="valid", need_argmax=True, out=None, out_argmax=None):
    """Max pooling of x (N, H, W, C) over windows of pool_size (int or (PH, PW)) with
    stride equal to the window. Returns (y, argmax): y (N, OH, OW, C) and argmax, the same
    shape, int32, holding for each value the flat index (row * W + col) * C + channel of
    its maximum within its image (TensorFlow's max_pool_with_argmax convention); ties go
    to the first in row-major order. argmax is None when need_argmax is False.

    out and out_argmax are arrays to write into, so that callers can reuse memory."""
    x = _float_array("x", x, ndim=4)
    (ph, pw), (pad_top, pad_left) = _check_pool(x.shape, pool_size, padding)
    shape = pool_output_shape(x.shape, (ph, pw), padding)
    out = np.empty(shape, dtype=x.dtype) if out is None else _check_out(out, shape, x.dtype)
    argmax, arg_view = _argmax_buffers(need_argmax, out_argmax, shape, "max_pool2d argmax")
    if out.size:
        _pool.max_pool_forward(x, out, arg_view, ph, pw, pad_top, pad_left,
                               _threads_for(x.size))
    return out, argmax


def _check_shape_tuple(name, shape, ndim):
    if not isinstance(shape, (tuple, list)) or len(shape) != ndim or not all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 0
            for s in shape):
        raise ValueError(f"{name}: expected a tuple of {ndim} non-negative ints, got {shape!r}")
    return tuple(int(s) for s in shape)


def max_pool2d_backward(grad_out, argmax, x_shape, pool_size, padding="valid", out=None):
    """The gradient of max_pool2d wrt x (of shape x_shape): each pooled gradient goes to
    the element argmax names, every other element gets 0. argmax must come from
    max_pool2d with the same pool_size and padding: an index outside its window raises.
    out is an array to write the result into."""
    x_shape = _check_shape_tuple("x_shape", x_shape, 4)
    grad_out = _float_array("grad_out", grad_out, ndim=4)
    (ph, pw), (pad_top, pad_left) = _check_pool(x_shape, pool_size, padding)
    expected = pool_output_shape(x_shape, (ph, pw), padding)
    if grad_out.shape != expected:
        raise ValueError(f"grad_out: expected shape {expected} (the max_pool2d output for "
                         f"x of shape {x_shape}), got {grad_out.shape}")
    if not isinstance(argmax, np.ndarray):
        raise TypeError(f"argmax: expected a numpy array, got {type(argmax).__name__}")
    if argmax.shape != expected:
        raise ValueError(f"argmax: expected shape {expected}, got {argmax.shape}")
    if argmax.dtype.kind not in "iu":
        raise TypeError(f"argmax: expected an integer array from max_pool2d, got {argmax.dtype}")
    if argmax.dtype != np.int32:
        if argmax.size and (argmax.min() < 0 or argmax.max() > _INT32_MAX):
            raise ValueError("argmax: indices outside [0, 2**31) cannot come from max_pool2d")
        argmax = argmax.astype(np.int32)
    argmax = np.ascontiguousarray(argmax)
    if out is None:
        grad_x = _empty("grad_x", x_shape, grad_out.dtype)
    else:
        grad_x = _check_out(out, x_shape, grad_out.dtype)
    if grad_x.size == 0:
        return grad_x
    if grad_out.size == 0:  # images but no windows: only with empty channel axes
        grad_x[:] = 0
        return grad_x
    bad = np.empty(expected[0] * expected[1], dtype=np.int32)
    _pool.max_pool_backward(grad_out, argmax, grad_x, ph, pw, pad_top, pad_left, bad,
                            _threads_for(grad_x.size))
    if bad.any():
        raise ValueError(f"argmax: some indices lie outside their {ph}x{pw} pooling window; "
                         f"pass the argmax max_pool2d returned for this x_shape, pool_size "
                         f"and padding")
    return grad_x


# ---- convolution + max pooling --------------------------------------------------------
# Pooled rows whose convolution output one thread keeps at a time: about this many bytes,
# so that the band stays in cache between the convolution writing it and the pooling.
CONV_POOL_BAND_BYTES = 24 * 1024


def conv2d_maxpool(x, w, b=None, padding="valid", activation=None, pool_size=2,
                   pool_padding="valid", need_argmax=False, out=None, out_argmax=None):
    """max_pool2d(act(conv2d(x, w, b, padding)), pool_size, pool_padding) in one pass:
    each thread computes a few rows of the convolution at a time and pools them while
    they are in cache, so the full-size convolution output is never stored (except for
    convolutions that take Winograd, see _winograd_wins, which are pooled after). Returns
    (pooled, argmax): pooled (N, POH, POW, F) and argmax, int32 of the same shape, in
    max_pool2d's encoding over the convolution's output (N, OH, OW, F), so that
    max_pool2d_backward takes it; None unless need_argmax.

    The convolution's values are conv2d's, bit for bit, and the pooling is max_pool2d's
    (ties to the first in row-major order, after the activation). out and out_argmax are
    arrays to write into, as for max_pool2d."""
    x, w, (pad_top, pad_left) = _check_conv(x, w, padding)
    act = _check_activation(activation)
    b = _bias("b", b, w.shape[3], x.dtype, f"w's {w.shape[3]} filters")
    conv_shape = conv_output_shape(x.shape, w.shape, padding)
    (ph, pw), (pool_top, pool_left) = _check_pool(conv_shape, pool_size, pool_padding,
                                                  "pool_padding", "convolution output")
    _, oh, ow, f = conv_shape
    shape = pool_output_shape(conv_shape, (ph, pw), pool_padding)
    out = _empty("conv2d_maxpool output", shape, x.dtype) if out is None \
        else _check_out(out, shape, x.dtype)
    argmax, arg_view = _argmax_buffers(need_argmax, out_argmax, shape,
                                       "conv2d_maxpool argmax")
    if out.size == 0:
        return out, argmax
    threads = get_num_threads()
    kh, kw, c, _ = w.shape
    if _winograd_wins(kh, kw, c, f):
        # Winograd halves this convolution's arithmetic, far more than the fused pooling
        # saves in memory traffic: convolve whole, then pool.
        conv_out = _workspace("conv_pool winograd", conv_shape, x.dtype)
        _conv_winograd(x, w, b, conv_out, pad_top, pad_left, act, threads)
        return max_pool2d(conv_out, (ph, pw), pool_padding, need_argmax, out, argmax)
    row_bytes = ph * ow * f * x.dtype.itemsize  # the convolution rows of one pooled row
    band_rows = max(1, min(shape[1], CONV_POOL_BAND_BYTES // row_bytes))
    frame = (oh + kh - 1) * (ow + kw - 1) * c
    work = _workspace("conv_pool", (threads, frame + band_rows * ph * ow * f), x.dtype)
    args = (out, arg_view, work)
    if c > 1:
        _gemm.conv_pool_forward(x, _conv_panels(w), b, *args, kh, kw, pad_top, pad_left, oh,
                                ow, act, ph, pw, pool_top, pool_left, band_rows, threads)
    else:
        _conv_1ch.conv2d_pool_forward(x, w, b, *args, pad_top, pad_left, oh, ow, act, ph, pw,
                                  pool_top, pool_left, band_rows, threads)
    return out, argmax


def _kernel_pool_mode(mode):
    if not isinstance(mode, str) or mode not in KERNEL_POOL_MODES:
        raise ValueError(f"mode: expected one of {list(KERNEL_POOL_MODES)}, got {mode!r}")
    return KERNEL_POOL_MODES[mode]


def _check_kernel_pool_x(x):
    x = _float_array("x", x)
    if x.ndim < 2:
        raise ValueError(f"x: expected an array of shape (N, ..., F) with the kernels on the "
                         f"last axis, got shape {x.shape}")
    if x.shape[-1] < 1:
        raise ValueError(f"x: expected at least one kernel (last axis), got shape {x.shape}")
    return x


def kernel_pool(x, mode="max"):
    """Pool across kernels: at every position, the max, mean or sum of the F kernels'
    outputs. x (N, ..., F) -> (N, ..., 1)."""
    x = _check_kernel_pool_x(x)
    code = _kernel_pool_mode(mode)
    out = np.empty(x.shape[:-1] + (1,), dtype=x.dtype)
    if out.size:
        _pool.kernel_pool_forward(x.reshape(-1, x.shape[-1]), out.reshape(-1), code,
                                  _threads_for(x.size))
    return out


def kernel_pool_backward(x, grad_out, mode="max"):
    """Gradient of kernel_pool wrt x. For "max", only the first maximal kernel at each
    position receives the gradient."""
    x = _check_kernel_pool_x(x)
    code = _kernel_pool_mode(mode)
    grad_out = _float_array("grad_out", grad_out, dtype=x.dtype)
    if grad_out.shape != x.shape[:-1] + (1,):
        raise ValueError(f"grad_out: expected shape {x.shape[:-1] + (1,)} (the kernel_pool "
                         f"output), got {grad_out.shape}")
    grad_x = np.empty_like(x)
    if x.size:
        _pool.kernel_pool_backward(x.reshape(-1, x.shape[-1]), grad_out.reshape(-1),
                                   grad_x.reshape(-1, x.shape[-1]), code,
                                   _threads_for(x.size))
    return grad_x


# ---- optimizers ----------------------------------------------------------------------
def _state_array(name, a, like=None):
    """An array the update writes into: it must be used as is, never copied."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(a).__name__}")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected dtype float32 or float64, got {a.dtype}")
    if like is not None and (a.shape != like.shape or a.dtype != like.dtype):
        raise ValueError(f"{name}: expected shape {like.shape} and dtype {like.dtype} to match "
                         f"param, got {a.shape} and {a.dtype}")
    if not (a.flags.c_contiguous and a.flags.writeable):
        raise ValueError(f"{name}: expected a writeable, C-contiguous array (it is updated "
                         f"in place)")
    return a


def _hyper(name, value, low, high, low_open=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a float, got {type(value).__name__}")
    value = float(value)
    ok = (low < value if low_open else low <= value) and value < high
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name}: expected a float in {bracket}{low}, {high}), got {value}")
    return value


def adam_update(param, grad, m, v, step, learning_rate=0.001, beta_1=0.9, beta_2=0.999,
                epsilon=1e-7):
    """One Adam step as Keras takes it, in place on param, m and v (step t counts from 1):
        alpha = learning_rate * sqrt(1 - beta_2**t) / (1 - beta_1**t)
        m += (grad - m) * (1 - beta_1);  v += (grad**2 - v) * (1 - beta_2)
        param -= alpha * m / (sqrt(v) + epsilon)"""
    param = _state_array("param", param)
    m = _state_array("m", m, param)
    v = _state_array("v", v, param)
    grad = _float_array("grad", grad, dtype=param.dtype)
    if grad.shape != param.shape:
        raise ValueError(f"grad: expected shape {param.shape} to match param, got {grad.shape}")
    arrays = {"param": param, "m": m, "v": v, "grad": grad}
    names = list(arrays)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if np.may_share_memory(arrays[a], arrays[b]):
                raise ValueError(f"{b}: must not share memory with {a}")
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 1:
        raise ValueError(f"step: expected an int >= 1 (the update's number), got {step!r}")
    lr = _hyper("learning_rate", learning_rate, 0.0, np.inf, low_open=True)
    b1 = _hyper("beta_1", beta_1, 0.0, 1.0)
    b2 = _hyper("beta_2", beta_2, 0.0, 1.0)
    eps = _hyper("epsilon", epsilon, 0.0, np.inf, low_open=True)
    alpha = lr * np.sqrt(1.0 - b2 ** int(step)) / (1.0 - b1 ** int(step))
    if param.size:
        _optim.adam_update(param.reshape(-1), grad.reshape(-1), m.reshape(-1), v.reshape(-1),
                           alpha, 1.0 - b1, 1.0 - b2, eps, _threads_for(param.size))
