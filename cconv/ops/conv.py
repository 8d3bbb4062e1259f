"""conv2d and conv2d_backward, and the routing between their kernels.

Routing, by the shapes alone (so the same shapes always take the same path):
- C == 1: the register-blocked direct kernels of _conv_1ch;
- C > 1, 5x5 weights with C >= WINOGRAD_MIN_CHANNELS and F >= WINOGRAD_MIN_FILTERS:
  Winograd (winograd.py), also for the input gradient (a convolution of grad_out) and,
  when C >= WINOGRAD_GRAD_MIN_CHANNELS, for the weight gradient;
- other C > 1: the GEMM micro-kernel of _gemm, reading each image from a per-thread
  zero-padded frame."""
import numpy as np

from cconv._config import get_num_threads
from cconv._kernels import _conv_1ch, _gemm
from cconv.ops import _scratch
from cconv.ops._checks import (KERNEL_ACTIVATIONS, bias, check_activation, check_padding,
                               empty, float_array, output)
from cconv.ops.winograd import (conv_winograd, grad_takes_winograd, takes_winograd,
                                winograd_backward_weights)

# Images per partial sum in the single-channel weight gradient. Fixed, so that the order
# of floating-point additions, and so the result, never depends on the thread count.
GRAD_CHUNK = 8


def conv_output_shape(input_shape, weights_shape, padding="valid"):
    """(N, OH, OW, F) of conv2d for x of `input_shape` (N, H, W, C), weights (KH, KW, C, F)."""
    n, h, w, c = input_shape
    kh, kw, kc, f = weights_shape
    if padding == "same":
        return (n, h, w, f)
    return (n, h - kh + 1, w - kw + 1, f)


def _pads(padding, kh, kw):
    """(pad_top, pad_left) for stride 1. 'same' pads like Keras: any odd pixel at the end."""
    if check_padding(padding) == "valid":
        return 0, 0
    return (kh - 1) // 2, (kw - 1) // 2


def check_conv(x, w, padding):
    """x and w checked for a convolution, and its (pad_top, pad_left)."""
    x = float_array("x", x, ndim=4)
    w = float_array("w", w, ndim=4, dtype=x.dtype)
    kh, kw, kc, f = w.shape
    if min(w.shape) < 1:
        raise ValueError(f"w: every dimension of (KH, KW, C, F) must be >= 1, got {w.shape}")
    if x.shape[3] != kc:
        raise ValueError(f"x: expected {kc} channels (last axis) to match w of shape "
                         f"{w.shape}, got x of shape {x.shape}")
    pads = _pads(padding, kh, kw)
    if padding == "valid" and (x.shape[1] < kh or x.shape[2] < kw):
        raise ValueError(f"x: images of {x.shape[1]}x{x.shape[2]} are smaller than the "
                         f"{kh}x{kw} weights; 'valid' padding needs H >= KH and W >= KW")
    return x, w, pads


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


def conv2d(x, w, b=None, padding="valid", activation=None, out=None):
    """Stride-1 2-D convolution (cross-correlation, as in Keras) of x (N, H, W, C) with
    weights w (KH, KW, C, F), plus bias b (F,) when given. Returns (N, OH, OW, F).

    activation (None or an elementwise activation's name) is applied inside the kernel,
    while the output is still in cache; the result equals activation(name, conv2d(...))
    bit for bit. `out` is an array
    to write the result into, so that a caller can reuse memory across batches."""
    x, w, (pad_top, pad_left) = check_conv(x, w, padding)
    act = check_activation(activation)
    b = bias("b", b, w.shape[3], x.dtype, f"w's {w.shape[3]} filters")
    out = output("conv2d output", out, conv_output_shape(x.shape, w.shape, padding), x.dtype,
                 reads={"x": x, "w": w, "b": b})
    if out.size:
        threads = get_num_threads()
        if x.shape[3] > 1:
            _conv_multichannel(x, w, b, out, pad_top, pad_left, act, threads)
        else:
            _conv_1ch.conv2d_forward(x, w, b, out, conv_1ch_frames(out.shape, w, x.dtype,
                                                                   threads),
                                     pad_top, pad_left, act, threads)
    return out


def conv2d_backward(x, w, grad_out, padding="valid", need_grad_x=True):
    """Gradients of conv2d. Returns (grad_x, grad_w, grad_b); grad_x is None when
    need_grad_x is False (a first layer has no use for it)."""
    x, w, (pad_top, pad_left) = check_conv(x, w, padding)
    grad_out = float_array("grad_out", grad_out, ndim=4, dtype=x.dtype)
    expected = conv_output_shape(x.shape, w.shape, padding)
    if grad_out.shape != expected:
        raise ValueError(f"grad_out: expected shape {expected} (the conv2d output), "
                         f"got {grad_out.shape}")
    threads = get_num_threads()
    if x.shape[3] > 1:
        return _backward_multichannel(x, w, grad_out, pad_top, pad_left, need_grad_x,
                                      threads)
    return _backward_1ch(x, w, grad_out, pad_top, pad_left, need_grad_x, threads)


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
