"""The fused ops that cconv.fusion's rules run, each named after its rule's layers:

- conv2d_dense (rule ConvDense): Conv2D -> [Dropout] -> Flatten -> Dense at inference;
- dense_backward_gated (rule ConvDropoutDense): back through Dense, Dropout and the
  conv's activation in training;
- conv2d_maxpool (rule ConvPool): Conv2D -> MaxPooling2D.

Each computes what its ops would one after the other (cconv.oracle has the same
functions written that way)."""
import numpy as np

from cconv._config import get_num_threads
from cconv._kernels import _conv_1ch, _dense_narrow, _gemm
from cconv.ops import _scratch
from cconv.ops._checks import (bias, check_activation, check_mask, check_out, check_rate,
                               empty, float_array, output)
from cconv.ops.conv import check_conv, conv2d, conv_output_shape, conv_panels
from cconv.ops.dense import dense, dense_by_gemm, dense_grad_x_by_gemm, transposed
from cconv.ops.elementwise import (activation_backward, dropout_backward, keep_scale,
                                   zero_at_zero)
from cconv.ops.pool import argmax_buffers, check_pool, max_pool2d, pool_output_shape
from cconv.ops.winograd import conv_winograd, takes_winograd

# Pooled rows whose convolution output one thread keeps at a time: about this many bytes,
# so that the band stays in cache between the convolution writing it and the pooling.
CONV_POOL_BAND_BYTES = 24 * 1024


def dense_backward_gated(grad_out, w, y, mask=None, rate=0.0, activation=None, out=None):
    """The gradient wrt z of dense(dropout(act(z))) given grad_out, the gradient wrt the
    dense output: dense_backward's grad_x, then dropout_backward (when mask is given, with
    `rate`), then the activation's backward given its output y (N, D). For dense layers
    below DENSE_GEMM_MIN_UNITS units one kernel does all three, each row while it is in
    cache, into `out` when given; wider ones go through the GEMM and then the gates one
    by one."""
    grad_out = float_array("grad_out", grad_out, ndim=2)
    w = float_array("w", w, ndim=2, dtype=grad_out.dtype)
    y = float_array("y", y, ndim=2, dtype=grad_out.dtype)
    n, d = y.shape
    if w.shape[1] != grad_out.shape[1] or grad_out.shape[0] != n or w.shape[0] != d:
        raise ValueError(f"grad_out: expected shape ({n}, U) for y of shape {y.shape} and w "
                         f"of shape (D={d}, U), got grad_out {grad_out.shape} and w {w.shape}")
    rate = check_rate(rate)
    act = check_activation(activation, from_output=True)
    mask = np.empty((0, 0), dtype=np.uint8) if mask is None else check_mask(mask, y.shape)
    if out is not None:
        out = check_out(out, y.shape, y.dtype, reads={"grad_out": grad_out, "w": w, "y": y,
                                                      "mask": mask})
    if dense_by_gemm(y, w):  # GEMM, then the gates one by one
        gated = dense_grad_x_by_gemm(grad_out, w)
        if mask.size:
            gated = dropout_backward(gated, mask, rate)
        gated = activation_backward(activation, y, gated)
        if out is None:
            return gated
        out[...] = gated
        return out
    grad_x = empty("dense_backward_gated output", y.shape, y.dtype) if out is None else out
    if d == 0 or w.shape[1] == 0:
        grad_x[...] = 0
    elif n:
        _dense_narrow.dense_backward_input_gated(grad_out, transposed(w), mask,
                                                 keep_scale(y.dtype, rate), y, act, grad_x,
                                                 get_num_threads())
    return grad_x


def _packed_dense(dense_w, oh, row, units):
    """dense_w (OH * row, U) as the conv2d_dense kernel streams it: (UP, OH, L), unit by
    unit, each output row's weights padded to L (a multiple of the SIMD width) and the
    units to UP (a multiple of the kernel's units per pass), with zeros."""
    lanes = _conv_1ch.fused_lanes(dense_w.dtype.itemsize)
    length = -(-row // lanes) * lanes
    per_pass = _conv_1ch.fused_units()
    padded_units = -(-units // per_pass) * per_pass
    wp = _scratch.workspace("conv2d_dense weights", (padded_units, oh, length), dense_w.dtype)
    wp[:units, :, :row] = dense_w.T.reshape(units, oh, row)
    wp[:units, :, row:] = 0
    wp[units:] = 0
    return wp


def conv2d_dense(x, w, b, dense_w, dense_b, padding="valid", activation=None):
    """dense(flatten(act(conv2d(x, w, b, padding))), dense_w, dense_b): (N, U) logits of a
    conv layer followed by a dense one, for x (N, H, W, C), weights w (KH, KW, C, F) and
    dense_w (OH * OW * F, U); b and dense_b may be None. For single-channel images
    (C == 1) the conv output is never stored: each image's rows are computed into cache
    and added to its logits at once, which saves writing the (N, OH, OW, F) output to
    memory and reading it back. Other images go layer by layer.
    activation is the conv's: None or an elementwise activation's name."""
    x, w, (pad_top, pad_left) = check_conv(x, w, padding)
    act = check_activation(activation)
    b = bias("b", b, w.shape[3], x.dtype, f"w's {w.shape[3]} filters")
    dense_w = float_array("dense_w", dense_w, ndim=2, dtype=x.dtype)
    n, oh, ow, f = conv_output_shape(x.shape, w.shape, padding)
    if dense_w.shape[0] != oh * ow * f:
        raise ValueError(f"dense_w: expected {oh * ow * f} rows, one per value of the conv "
                         f"output ({oh}, {ow}, {f}), got shape {dense_w.shape}")
    units = dense_w.shape[1]
    dense_b = bias("dense_b", dense_b, units, x.dtype, f"dense_w's {units} units")
    if x.shape[3] > 1:
        h = conv2d(x, w, b if b.size else None, padding, activation)
        return dense(h.reshape(n, -1), dense_w, dense_b if dense_b.size else None)
    out = empty("conv2d_dense output", (n, units), x.dtype)
    if oh * ow == 0 or units == 0:  # no conv output: the logits are the dense bias
        out[...] = dense_b if dense_b.size else 0
    elif n:
        threads = get_num_threads()
        wp = _packed_dense(dense_w, oh, ow * f, units)
        per_thread = _scratch.conv_dense_size(oh, ow, w.shape[0], w.shape[1], wp.shape[2],
                                              wp.shape[0], x.dtype)
        work = _scratch.workspace("conv2d_dense scratch", (threads, per_thread), x.dtype)
        # Without a conv bias, a window of zeros adds nothing to the logits, unless a
        # weight is inf or NaN (0 * inf is NaN): then every term is computed.
        # The activation must keep 0 at 0 too (sigmoid's 0.5 would add to the logits).
        skip_blank = not b.size and zero_at_zero(activation) and np.isfinite(w).all() \
            and np.isfinite(dense_w).all()
        _conv_1ch.conv2d_dense_forward(x, w, b, wp, dense_b, out, work, ow, pad_top,
                                       pad_left, act, skip_blank, threads)
    return out


def conv2d_maxpool(x, w, b=None, padding="valid", activation=None, pool_size=2,
                   pool_padding="valid", need_argmax=False, out=None, out_argmax=None):
    """max_pool2d(act(conv2d(x, w, b, padding)), pool_size, pool_padding) in one pass:
    each thread computes a few rows of the convolution at a time and pools them while
    they are in cache, so the full-size convolution output is never stored (except for
    convolutions that take Winograd, see winograd.takes_winograd, which are pooled
    after). Returns (pooled, argmax): pooled (N, POH, POW, F) and argmax, int32 of the
    same shape, in max_pool2d's encoding over the convolution's output (N, OH, OW, F), so
    that max_pool2d_backward takes it; None unless need_argmax.

    The convolution's values are conv2d's, bit for bit, and the pooling is max_pool2d's
    (ties to the first in row-major order, after the activation). out and out_argmax are
    arrays to write into, as for max_pool2d."""
    x, w, (pad_top, pad_left) = check_conv(x, w, padding)
    act = check_activation(activation)
    b = bias("b", b, w.shape[3], x.dtype, f"w's {w.shape[3]} filters")
    conv_shape = conv_output_shape(x.shape, w.shape, padding)
    (ph, pw), (pool_top, pool_left) = check_pool(conv_shape, pool_size, pool_padding,
                                                 "pool_padding", "convolution output")
    _, oh, ow, f = conv_shape
    shape = pool_output_shape(conv_shape, (ph, pw), pool_padding)
    out = output("conv2d_maxpool output", out, shape, x.dtype)
    argmax, arg_view = argmax_buffers(need_argmax, out_argmax, shape, "conv2d_maxpool argmax")
    if out.size == 0:
        return out, argmax
    threads = get_num_threads()
    kh, kw, c, _ = w.shape
    if takes_winograd(kh, kw, c, f):
        # Winograd saves far more arithmetic than the fused pooling saves memory
        # traffic: convolve whole, then pool.
        conv_out = _scratch.workspace("conv_pool winograd", conv_shape, x.dtype)
        conv_winograd(x, w, b, conv_out, pad_top, pad_left, act, threads)
        return max_pool2d(conv_out, (ph, pw), pool_padding, need_argmax, out, argmax)
    row_bytes = ph * ow * f * x.dtype.itemsize  # the convolution rows of one pooled row
    band_rows = max(1, min(shape[1], CONV_POOL_BAND_BYTES // row_bytes))
    work = _scratch.workspace("conv_pool", (threads, _scratch.conv_pool_size(
        oh, ow, kh, kw, c, f, band_rows, ph)), x.dtype)
    args = (out, arg_view, work)
    if c > 1:
        _gemm.conv_pool_forward(x, conv_panels(w), b, *args, kh, kw, pad_top, pad_left, oh,
                                ow, act, ph, pw, pool_top, pool_left, band_rows, threads)
    else:
        _conv_1ch.conv2d_pool_forward(x, w, b, *args, pad_top, pad_left, oh, ow, act, ph,
                                      pw, pool_top, pool_left, band_rows, threads)
    return out, argmax
