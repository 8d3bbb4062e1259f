"""Scratch memory: per-thread workspaces the kernels write into, reused across calls
because fresh memory costs a page fault per 4 KiB on first touch, and their sizes.

Every size below is the one the kernel named in its docstring reads; widths and block
sizes come from the kernels themselves (`_gemm.tile_columns`, `_conv_1ch.fused_lanes`,
`_winograd.work_size`, ...), never from constants copied here."""
import threading
from collections import OrderedDict

import numpy as np

from cconv._config import get_num_threads
from cconv._kernels import _conv_1ch, _gemm, _winograd
from cconv.ops._checks import check_size

local = threading.local()  # local.arrays: this thread's workspaces, least recent first
SCRATCH_ENTRIES = 16
_SMALL = 32768  # elements below which one thread beats waking and joining the others


def workspace(name, shape, dtype):
    """A scratch array reused across calls, one per thread of the caller so that
    concurrent calls never share one. The contents are garbage: the kernels overwrite
    what they read."""
    cache = getattr(local, "arrays", None)
    if cache is None:
        cache = local.arrays = OrderedDict()
    key = (name, tuple(shape), np.dtype(dtype))
    buf = cache.get(key)
    if buf is None:
        check_size(name, shape, dtype)
        buf = cache[key] = np.empty(shape, dtype=dtype)
        while len(cache) > SCRATCH_ENTRIES:
            cache.popitem(last=False)
    else:
        cache.move_to_end(key)
    return buf


def reused(store, key, shape, dtype, name=None):
    """An array kept on `store` (a threading.local of a layer or fused step), reallocated
    only when shape or dtype change. Unlike a workspace its contents outlive the call:
    a layer's output lives until the model's next forward pass."""
    buf = getattr(store, key, None)
    if buf is None or buf.shape != shape or buf.dtype != dtype:
        check_size(name or key, shape, dtype)
        buf = np.empty(shape, dtype=dtype)
        setattr(store, key, buf)
    return buf


def threads_for(size):
    """Threads for a cheap, memory-bound kernel over `size` elements. Results never depend
    on it: the kernels' work units are fixed."""
    return 1 if size < _SMALL else get_num_threads()


def panel_width(dtype):
    """Columns per GEMM micro-kernel tile, as the kernels of this CPU level have them."""
    return _gemm.tile_columns(np.dtype(dtype).itemsize)


def frame_size(oh, ow, kh, kw, c):
    """One zero-padded image, as the conv kernels frame it: the (OH + KH - 1) x
    (OW + KW - 1) x C window that the output needs (_gemm.conv_forward,
    _conv_1ch.conv2d_forward, their pooling and dense twins)."""
    return (oh + kh - 1) * (ow + kw - 1) * c


def conv_grad_weights_size(oh, ow, kh, kw, c, f, dtype):
    """Per thread, for _gemm.conv_backward_weights: one frame, and grad_out of one image
    with F padded to whole panels."""
    nr = panel_width(dtype)
    return frame_size(oh, ow, kh, kw, c) + -(-f // nr) * nr * oh * ow


def winograd_forward_size(c, f, block, dtype):
    """Per thread, for _winograd.conv_forward."""
    return _winograd.work_size(c, f, block, np.dtype(dtype).itemsize)


def winograd_grad_size(c, f, tiles, dtype):
    """Per thread, for _winograd.conv5_backward_weights."""
    return _winograd.grad_work_size(c, f, tiles, np.dtype(dtype).itemsize)


def conv_pool_size(oh, ow, kh, kw, c, f, band_rows, ph):
    """Per thread, for the fused conv + max pool kernels: one frame and one band of
    convolution rows (band_rows pooled rows of PH convolution rows each)."""
    return frame_size(oh, ow, kh, kw, c) + band_rows * ph * ow * f


def conv_dense_size(oh, ow, kh, kw, row_length, padded_units, dtype):
    """Per thread, for _conv_1ch.conv2d_dense_forward: for each image of its group, a
    frame, one output row padded to the SIMD width, and a vector of partial logits per
    unit."""
    lanes = _conv_1ch.fused_lanes(np.dtype(dtype).itemsize)
    per_image = frame_size(oh, ow, kh, kw, 1) + row_length + padded_units * lanes
    return _conv_1ch.fused_group() * per_image
