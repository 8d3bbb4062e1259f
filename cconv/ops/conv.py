"""conv2d and conv2d_backward, and the routing between their kernels.

Routing, by the shapes alone (so the same shapes always take the same path):
- C == 1: the register-blocked direct kernels of _conv_1ch;
- C > 1, 5x5 or 3x3 weights with C >= WINOGRAD_MIN_CHANNELS and F >=
  WINOGRAD_MIN_FILTERS: Winograd (winograd.py), also for the input gradient (a
  convolution of grad_out) and, for 5x5 weights with C >= WINOGRAD_GRAD_MIN_CHANNELS,
  for the weight gradient;
- other C > 1: the GEMM micro-kernel of _gemm, reading each image from a per-thread
  zero-padded frame;
- strides or dilation above 1, whatever C: _im2col gathers the patches of a group of
  images into a per-thread workspace and _gemm.gemm multiplies them by the weights;
  backward, the weight gradient is patches^T @ grad_out (groups added in order) and
  the input gradient _im2col.col2im of grad_out @ w^T."""
import numpy as np

from cconv._config import get_num_threads
from cconv._kernels import _conv_1ch, _elementwise, _gemm, _im2col
from cconv.ops import _scratch
from cconv.ops._checks import (KERNEL_ACTIVATIONS, bias, check_activation, check_padding,
                               empty, float_array, output)
from cconv.ops._windows import int_pair, out_size, pad_before, span
from cconv.ops.dense import _gemm_call
from cconv.ops.winograd import (conv_winograd, grad_takes_winograd, takes_winograd,
                                winograd_backward_weights)

# Images per partial sum in the single-channel weight gradient. Fixed, so that the order
# of floating-point additions, and so the result, never depends on the thread count.
GRAD_CHUNK = 8
# Patch-matrix elements per group of images on the strided route (at least one image):
# fixed, so the order in which the groups' weight gradients add up depends on the
# shapes alone.
IM2COL_ELEMENTS = 1 << 20


def conv_output_shape(input_shape, weights_shape, padding="valid", strides=1,
                      dilation_rate=1):
    """(N, OH, OW, F) of conv2d for x of `input_shape` (N, H, W, C), weights (KH, KW, C, F),
    as Keras computes it (see _windows)."""
    n, h, w, c = input_shape
    kh, kw, kc, f = weights_shape
    (sh, sw), (dh, dw) = conv_steps(strides, dilation_rate)
    return (n, out_size(h, kh, sh, dh, padding), out_size(w, kw, sw, dw, padding), f)


def conv_steps(strides, dilation_rate):
    """strides and dilation_rate checked, as pairs; Keras refuses both above 1 at once."""
    (sh, sw), (dh, dw) = int_pair("strides", strides), int_pair("dilation_rate", dilation_rate)
    if max(sh, sw) > 1 and max(dh, dw) > 1:
        raise ValueError(f"strides: strides > 1 cannot be combined with dilation_rate > 1 "
                         f"(as in Keras), got strides={(sh, sw)} and "
                         f"dilation_rate={(dh, dw)}")
    return (sh, sw), (dh, dw)


def check_conv(x, w, padding, strides=(1, 1), dilation_rate=(1, 1)):
    """x and w checked for a convolution of the given strides and dilation_rate (pairs,
    from conv_steps), and its (pad_top, pad_left)."""
    x = float_array("x", x, ndim=4)
    w = float_array("w", w, ndim=4, dtype=x.dtype)
    kh, kw, kc, f = w.shape
    if min(w.shape) < 1:
        raise ValueError(f"w: every dimension of (KH, KW, C, F) must be >= 1, got {w.shape}")
    if x.shape[3] != kc:
        raise ValueError(f"x: expected {kc} channels (last axis) to match w of shape "
                         f"{w.shape}, got x of shape {x.shape}")
    check_padding(padding)
    (sh, sw), (dh, dw) = strides, dilation_rate
    h, wd = x.shape[1:3]
    if padding == "valid" and (h < span(kh, dh) or wd < span(kw, dw)):
        raise ValueError(f"x: images of {h}x{wd} are smaller than the {kh}x{kw} weights "
                         f"dilated by {(dh, dw)} ({span(kh, dh)}x{span(kw, dw)}); 'valid' "
                         f"padding needs the images at least that large")
    return x, w, (pad_before(h, kh, sh, dh, padding), pad_before(wd, kw, sw, dw, padding))


def takes_im2col(strides, dilation_rate):
    """Whether a convolution takes the strided route (stride 1, dilation 1 never does)."""
    return strides != (1, 1) or dilation_rate != (1, 1)


def conv_panels(w):
    """Weights (KH, KW, C, F) as the GEMM path reads them: zero-padded panels of NR
    filters, (ceil(F / NR), KH*KW*C, NR)."""
    kh, kw, c, f = w.shape
    nr = _scratch.panel_width(w.dtype)
    panels = -(-f // nr)
    padded = np.zeros((kh * kw * c, panels * nr), dtype=w.dtype)
    padded[:, :f] = w.reshape(kh * kw * c, f)
    return np.ascontiguousarray(padded.reshape(-1, panels, nr).transpose(1, 0, 2))


def _conv_multichannel(src, w, b, out, top, left, act, threads):
    """out = act(conv(src, w) + b) by Winograd or the GEMM kernels, src framed at
    (top, left)."""
    kh, kw, c, f = w.shape
    if takes_winograd(kh, kw, c, f):
        conv_winograd(src, w, b, out, top, left, act, threads)
        return
    frame = _scratch.frame_size(out.shape[1], out.shape[2], kh, kw, c)
    frames = _scratch.workspace("conv_frames", (threads, frame), src.dtype)
    _gemm.conv_forward(src, conv_panels(w), b, out, frames, kh, kw, top, left, act,
                       threads)


def conv_1ch_frames(out_shape, w, dtype, threads):
    """The per-thread frames of the single-channel kernels."""
    _, oh, ow, _ = out_shape
    kh, kw = w.shape[:2]
    return _scratch.workspace("conv_1ch_frames",
                              (threads, _scratch.frame_size(oh, ow, kh, kw, 1)), dtype)


def conv2d(x, w, b=None, padding="valid", activation=None, out=None, strides=1,
           dilation_rate=1):
    """2-D convolution (cross-correlation, as in Keras) of x (N, H, W, C) with weights
    w (KH, KW, C, F), plus bias b (F,) when given. Returns (N, OH, OW, F). strides and
    dilation_rate are ints or (rows, columns) pairs, as Keras's (not both above 1).

    activation (None or an elementwise activation's name) is applied inside the kernel,
    while the output is still in cache; the result equals activation(name, conv2d(...))
    bit for bit. `out` is an array
    to write the result into, so that a caller can reuse memory across batches."""
    steps = conv_steps(strides, dilation_rate)
    x, w, (pad_top, pad_left) = check_conv(x, w, padding, *steps)
    act = check_activation(activation)
    b = bias("b", b, w.shape[3], x.dtype, f"w's {w.shape[3]} filters")
    out = output("conv2d output", out, conv_output_shape(x.shape, w.shape, padding, *steps),
                 x.dtype, reads={"x": x, "w": w, "b": b})
    if out.size:
        threads = get_num_threads()
        if takes_im2col(*steps):
            _conv_im2col(x, w, b, out, (pad_top, pad_left), steps, act, threads)
        elif x.shape[3] > 1:
            _conv_multichannel(x, w, b, out, pad_top, pad_left, act, threads)
        else:
            _conv_1ch.conv2d_forward(x, w, b, out, conv_1ch_frames(out.shape, w, x.dtype,
                                                                   threads),
                                     pad_top, pad_left, act, threads)
    return out


def conv2d_backward(x, w, grad_out, padding="valid", need_grad_x=True, strides=1,
                    dilation_rate=1):
    """Gradients of conv2d. Returns (grad_x, grad_w, grad_b); grad_x is None when
    need_grad_x is False (a first layer has no use for it)."""
    steps = conv_steps(strides, dilation_rate)
    x, w, (pad_top, pad_left) = check_conv(x, w, padding, *steps)
    grad_out = float_array("grad_out", grad_out, ndim=4, dtype=x.dtype)
    expected = conv_output_shape(x.shape, w.shape, padding, *steps)
    if grad_out.shape != expected:
        raise ValueError(f"grad_out: expected shape {expected} (the conv2d output), "
                         f"got {grad_out.shape}")
    threads = get_num_threads()
    if takes_im2col(*steps):
        return _backward_im2col(x, w, grad_out, (pad_top, pad_left), steps, need_grad_x,
                                threads)
    if x.shape[3] > 1:
        return _backward_multichannel(x, w, grad_out, pad_top, pad_left, need_grad_x,
                                      threads)
    return _backward_1ch(x, w, grad_out, pad_top, pad_left, need_grad_x, threads)


class _Patches:
    """The strided route's geometry, and its groups of images: each group's patch
    matrix (images * OH * OW, KH * KW * C) is gathered into this thread's workspace."""

    def __init__(self, x_shape, w_shape, out_shape, pads, steps, dtype):
        n, _, _, c = x_shape
        self.kh, self.kw, _, self.f = w_shape
        _, self.oh, self.ow, _ = out_shape
        self.k = self.kh * self.kw * c
        self.group = max(1, IM2COL_ELEMENTS // max(1, self.oh * self.ow * self.k))
        self.n = n
        (sh, sw), (dh, dw) = steps
        self.args = (self.oh, self.ow, self.kh, self.kw, sh, sw, dh, dw) + tuple(pads)
        self.rows = min(self.group, n) * self.oh * self.ow
        self.dtype = dtype

    def groups(self):
        """(first image, images, rows of the patch matrix) for each group, in order."""
        for n0 in range(0, self.n, self.group):
            images = min(self.group, self.n - n0)
            yield n0, images, images * self.oh * self.ow

    def buffer(self, name, rows):
        return _scratch.workspace(name, (self.rows, self.k), self.dtype)[:rows]

    def gather(self, x, n0, rows, threads):
        cols = self.buffer("im2col", rows)
        _im2col.im2col(x, cols, n0, *self.args, threads)
        return cols


def _conv_im2col(x, w, b, out, pads, steps, act, threads):
    """out = act(patches @ w + b), group by group, then the activation in place."""
    p = _Patches(x.shape, w.shape, out.shape, pads, steps, x.dtype)
    w_mat = w.reshape(p.k, p.f)
    flat_out = out.reshape(-1, p.f)
    for n0, images, rows in p.groups():
        cols = p.gather(x, n0, rows, threads)
        start = n0 * p.oh * p.ow
        _gemm_call(rows, p.f, p.k, cols, p.k, 1, w_mat, p.f, flat_out[start:start + rows],
                   p.f, 1, b)
    if act != KERNEL_ACTIVATIONS["linear"]:
        _elementwise.activation_forward(act, out.reshape(-1), out.reshape(-1), threads)


def _backward_im2col(x, w, grad_out, pads, steps, need_grad_x, threads):
    """conv2d_backward on the strided route. grad_w = patches^T @ grad_out, each
    group's product (one sum over its rows in order) added to the previous groups' in
    order; grad_x = col2im(grad_out @ w^T), group by group."""
    p = _Patches(x.shape, w.shape, grad_out.shape, pads, steps, x.dtype)
    w_mat = w.reshape(p.k, p.f)
    flat_grad = grad_out.reshape(-1, p.f)
    grad_b = flat_grad.sum(axis=0, dtype=np.float64).astype(x.dtype)  # as the GEMM route
    grad_w = np.zeros((p.k, p.f), dtype=x.dtype)
    part = np.empty_like(grad_w)
    grad_x = np.empty_like(x) if need_grad_x else None
    if grad_out.size == 0:  # no images, or no pixels: nothing flows back
        if need_grad_x:
            grad_x[:] = 0
        return grad_x, grad_w.reshape(w.shape), grad_b
    no_bias = np.empty(0, dtype=x.dtype)
    for n0, images, rows in p.groups():
        cols = p.gather(x, n0, rows, threads)
        start = n0 * p.oh * p.ow
        g = flat_grad[start:start + rows]
        _gemm_call(p.k, p.f, rows, cols, 1, p.k, g, p.f, part, p.f, 1, no_bias)
        grad_w += part
        if need_grad_x:
            d_cols = p.buffer("col2im", rows)
            _gemm_call(rows, p.k, p.f, g, p.f, 1, w_mat, 1, d_cols, p.k, 1, no_bias,
                       b_cs=p.f)
            _im2col.col2im(d_cols, grad_x, n0, *p.args, threads)
    return grad_x, grad_w.reshape(w.shape), grad_b


def _backward_1ch(x, w, grad_out, pad_top, pad_left, need_grad_x, threads):
    """conv2d_backward for C == 1: partial weight gradients over fixed chunks of
    GRAD_CHUNK images, added in order."""
    n_chunks = max(1, -(-x.shape[0] // GRAD_CHUNK))
    partial_w = empty("conv2d_backward partial sums", (n_chunks,) + w.shape, x.dtype)
    partial_b = np.empty((n_chunks, w.shape[3]), dtype=x.dtype)
    if x.shape[0]:
        _conv_1ch.conv2d_backward_weights(x, grad_out, partial_w, partial_b,
                                          conv_1ch_frames(grad_out.shape, w, x.dtype, threads),
                                          GRAD_CHUNK, pad_top, pad_left, threads)
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


def _backward_multichannel(x, w, grad_out, pad_top, pad_left, need_grad_x, threads):
    """conv2d_backward for C > 1. The weight gradient is split into tiles among the
    threads, each summing over the whole batch in image order; the input gradient is the
    convolution of grad_out, framed by the weights' far side, with the weights flipped
    and their channel axes swapped."""
    kh, kw, c, f = w.shape
    n, oh, ow, _ = grad_out.shape
    grad_w = np.empty_like(w)
    # In float64 whatever the dtype: numpy adds row after row, so a long float32 sum
    # would lose digits; the order, and so the bits, are fixed.
    grad_b = grad_out.reshape(-1, f).sum(axis=0, dtype=np.float64).astype(x.dtype)
    if n == 0:
        grad_w[:] = 0
    elif grad_takes_winograd(kh, kw, c, f):
        grad_w[:] = winograd_backward_weights(x, grad_out, pad_top, pad_left, threads)
    else:
        per_thread = _scratch.conv_grad_weights_size(oh, ow, kh, kw, c, f, x.dtype)
        work = _scratch.workspace("conv_grad_w", (threads, per_thread), x.dtype)
        _gemm.conv_backward_weights(x, grad_out, grad_w, work, pad_top, pad_left, threads)
    grad_x = None
    if need_grad_x:
        grad_x = np.empty_like(x)
        if x.size:
            w_flipped = np.ascontiguousarray(w[::-1, ::-1].transpose(0, 1, 3, 2))
            _conv_multichannel(grad_out, w_flipped, np.empty(0, dtype=x.dtype), grad_x,
                               kh - 1 - pad_top, kw - 1 - pad_left,
                               KERNEL_ACTIVATIONS["linear"], threads)
    return grad_x, grad_w, grad_b
