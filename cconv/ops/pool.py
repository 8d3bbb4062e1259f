"""Max and average pooling over space, and pooling across kernels (kernels: _pool.pyx).

Max pooling with strides equal to the pool size (Keras's default) takes the kernels of
non-overlapping windows, shared with the fused conv + pool; any other strides, and
average pooling, take the *_window kernels."""
import numpy as np

from cconv._kernels import _config, _pool
from cconv.ops._checks import (INT32_MAX, check_padding, check_shape_tuple, empty,
                               float_array, int_array, output)
from cconv.ops._scratch import threads_for
from cconv.ops._windows import int_pair, out_size, pad_before

KERNEL_POOL_MODES = _config.POOL_MODES


def pool_strides(pool_size, strides):
    """(PH, PW), (SH, SW) checked; strides None means the pool size, as in Keras."""
    ph, pw = int_pair("pool_size", pool_size)
    return (ph, pw), ((ph, pw) if strides is None else int_pair("strides", strides))


def pool_output_shape(input_shape, pool_size, padding="valid", strides=None):
    """(N, OH, OW, C) of max_pool2d and avg_pool2d, as in Keras (see _windows): 'valid'
    keeps whole windows only (floor((H - PH) / SH) + 1), 'same' covers every pixel
    (ceil(H / SH))."""
    n, h, w, c = check_shape_tuple("input_shape", input_shape, 4)
    (ph, pw), (sh, sw) = pool_strides(pool_size, strides)  # checked: a 0 would divide by 0
    return (n, out_size(h, ph, sh, 1, padding), out_size(w, pw, sw, 1, padding), c)


def check_pool(x_shape, pool_size, padding, padding_name="padding", what="input",
               strides=None):
    """((PH, PW), pads) for pooling images of x_shape, pads the padding before the first
    row and column; padding_name and what name the argument and the pooled array in
    errors."""
    (ph, pw), (sh, sw) = pool_strides(pool_size, strides)
    check_padding(padding, padding_name)
    _, h, w, c = x_shape
    if padding == "valid" and (h < ph or w < pw):
        raise ValueError(f"pool_size: a {ph}x{pw} window is larger than the {h}x{w} {what}; "
                         f"'valid' pooling needs H >= {ph} and W >= {pw} "
                         f"(or use {padding_name}='same')")
    if h * w * c > INT32_MAX:
        raise ValueError(f"x: a {what} of {h}x{w}x{c} per image has more than 2**31 - 1 "
                         f"elements; the int32 argmax cannot index it")
    return (ph, pw), (pad_before(h, ph, sh, 1, padding), pad_before(w, pw, sw, 1, padding))


def argmax_buffers(need_argmax, out_argmax, shape, what):
    """(argmax to return or None, the array the kernel writes: an empty one when no
    argmax is wanted); out_argmax, when given, is checked and used."""
    if not need_argmax:
        return None, np.empty((0, 0, 0, 0), dtype=np.int32)
    if out_argmax is None:
        argmax = empty(what, shape, np.int32)
        return argmax, argmax
    if not isinstance(out_argmax, np.ndarray):
        raise TypeError(f"out_argmax: expected a numpy array, got {type(out_argmax).__name__}")
    if out_argmax.shape != shape or out_argmax.dtype != np.int32 \
            or not out_argmax.flags.c_contiguous or not out_argmax.flags.writeable:
        raise ValueError(f"out_argmax: expected a writeable C-contiguous int32 array of "
                         f"shape {shape}, got {out_argmax.dtype} {out_argmax.shape}")
    return out_argmax, out_argmax


def max_pool2d(x, pool_size, padding="valid", need_argmax=True, out=None, out_argmax=None,
               strides=None):
    """Max pooling of x (N, H, W, C) over windows of pool_size (int or (PH, PW)), strides
    (int or (SH, SW)) apart, by default the pool size. Returns (y, argmax): y (N, OH, OW,
    C) and argmax, the same shape, int32, holding for each value the flat index
    (row * W + col) * C + channel of its maximum within its image (TensorFlow's
    max_pool_with_argmax convention); ties go to the first in row-major order. argmax is
    None when need_argmax is False.

    out and out_argmax are arrays to write into, so that callers can reuse memory."""
    x = float_array("x", x, ndim=4)
    (ph, pw), (pad_top, pad_left) = check_pool(x.shape, pool_size, padding, strides=strides)
    _, (sh, sw) = pool_strides(pool_size, strides)
    shape = pool_output_shape(x.shape, (ph, pw), padding, (sh, sw))
    out = output("max_pool2d output", out, shape, x.dtype)
    argmax, arg_view = argmax_buffers(need_argmax, out_argmax, shape, "max_pool2d argmax")
    if out.size:
        threads = threads_for(x.size)
        if (sh, sw) == (ph, pw):
            _pool.max_pool_forward(x, out, arg_view, ph, pw, pad_top, pad_left, threads)
        else:
            _pool.max_pool_window_forward(x, out, arg_view, ph, pw, sh, sw, pad_top,
                                          pad_left, threads)
    return out, argmax


def _pooled_grad(grad_out, x_shape, pool_size, padding, strides, op):
    """grad_out checked against the output of `op` (max_pool2d or avg_pool2d) on x_shape,
    with the pool's sizes, strides and pads."""
    x_shape = check_shape_tuple("x_shape", x_shape, 4)
    grad_out = float_array("grad_out", grad_out, ndim=4)
    (ph, pw), pads = check_pool(x_shape, pool_size, padding, strides=strides)
    _, steps = pool_strides(pool_size, strides)
    expected = pool_output_shape(x_shape, (ph, pw), padding, steps)
    if grad_out.shape != expected:
        raise ValueError(f"grad_out: expected shape {expected} (the {op} output for "
                         f"x of shape {x_shape}), got {grad_out.shape}")
    return grad_out, x_shape, (ph, pw), steps, pads


def max_pool2d_backward(grad_out, argmax, x_shape, pool_size, padding="valid", out=None,
                        strides=None):
    """The gradient of max_pool2d wrt x (of shape x_shape): each pooled gradient goes to
    the element argmax names (added up where overlapping windows share it), every other
    element gets 0. argmax must come from max_pool2d with the same pool_size, padding
    and strides: an index outside its window raises. out is an array to write the
    result into."""
    grad_out, x_shape, (ph, pw), (sh, sw), (pad_top, pad_left) = _pooled_grad(
        grad_out, x_shape, pool_size, padding, strides, "max_pool2d")
    argmax = int_array("argmax", argmax, grad_out.shape, "iu",
                       "an integer array from max_pool2d", np.int32, INT32_MAX,
                       "argmax: indices outside [0, 2**31) cannot come from max_pool2d")
    grad_x = output("grad_x", out, x_shape, grad_out.dtype)
    if grad_x.size == 0:
        return grad_x
    if grad_out.size == 0:  # images but no windows: only with empty channel axes
        grad_x[:] = 0
        return grad_x
    threads = threads_for(grad_x.size)
    if (sh, sw) == (ph, pw):
        bad = np.empty(grad_out.shape[0] * grad_out.shape[1], dtype=np.int32)
        _pool.max_pool_backward(grad_out, argmax, grad_x, ph, pw, pad_top, pad_left, bad,
                                threads)
    else:
        bad = np.empty(grad_out.shape[0], dtype=np.int32)
        _pool.max_pool_window_backward(grad_out, argmax, grad_x, ph, pw, sh, sw, pad_top,
                                       pad_left, bad, threads)
    if bad.any():
        raise ValueError(f"argmax: some indices lie outside their {ph}x{pw} pooling window; "
                         f"pass the argmax max_pool2d returned for this x_shape, pool_size, "
                         f"strides and padding")
    return grad_x


def avg_pool2d(x, pool_size, padding="valid", strides=None, out=None):
    """Average pooling of x (N, H, W, C) over windows of pool_size, strides apart (by
    default the pool size), as keras.layers.AveragePooling2D: each window's mean over
    its pixels inside the image, so that 'same' padding never counts the zeros it adds.
    Returns y (N, OH, OW, C); out is an array to write it into."""
    x = float_array("x", x, ndim=4)
    (ph, pw), (pad_top, pad_left) = check_pool(x.shape, pool_size, padding, strides=strides)
    _, (sh, sw) = pool_strides(pool_size, strides)
    out = output("avg_pool2d output", out,
                 pool_output_shape(x.shape, (ph, pw), padding, (sh, sw)), x.dtype)
    if out.size:
        _pool.avg_pool_forward(x, out, ph, pw, sh, sw, pad_top, pad_left, threads_for(x.size))
    return out


def avg_pool2d_backward(grad_out, x_shape, pool_size, padding="valid", strides=None,
                        out=None):
    """The gradient of avg_pool2d wrt x (of shape x_shape): every pixel gets, from each
    window holding it, the window's gradient divided by its pixel count."""
    grad_out, x_shape, (ph, pw), (sh, sw), (pad_top, pad_left) = _pooled_grad(
        grad_out, x_shape, pool_size, padding, strides, "avg_pool2d")
    grad_x = output("grad_x", out, x_shape, grad_out.dtype)
    if grad_x.size == 0:
        return grad_x
    if grad_out.size == 0:
        grad_x[:] = 0
        return grad_x
    _pool.avg_pool_backward(grad_out, grad_x, ph, pw, sh, sw, pad_top, pad_left,
                            threads_for(grad_x.size))
    return grad_x


def check_kernel_pool_mode(mode):
    """The kernels' code for a kernel_pool mode."""
    if not isinstance(mode, str) or mode not in KERNEL_POOL_MODES:
        raise ValueError(f"mode: expected one of {list(KERNEL_POOL_MODES)}, got {mode!r}")
    return KERNEL_POOL_MODES[mode]


def _check_kernel_pool_x(x):
    x = float_array("x", x)
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
    code = check_kernel_pool_mode(mode)
    out = np.empty(x.shape[:-1] + (1,), dtype=x.dtype)
    if out.size:
        _pool.kernel_pool_forward(x.reshape(-1, x.shape[-1]), out.reshape(-1), code,
                                  threads_for(x.size))
    return out


def kernel_pool_backward(x, grad_out, mode="max"):
    """Gradient of kernel_pool wrt x. For "max", only the first maximal kernel at each
    position receives the gradient."""
    x = _check_kernel_pool_x(x)
    code = check_kernel_pool_mode(mode)
    grad_out = float_array("grad_out", grad_out, dtype=x.dtype)
    if grad_out.shape != x.shape[:-1] + (1,):
        raise ValueError(f"grad_out: expected shape {x.shape[:-1] + (1,)} (the kernel_pool "
                         f"output), got {grad_out.shape}")
    grad_x = np.empty_like(x)
    if x.size:
        _pool.kernel_pool_backward(x.reshape(-1, x.shape[-1]), grad_out.reshape(-1),
                                   grad_x.reshape(-1, x.shape[-1]), code,
                                   threads_for(x.size))
    return grad_x
