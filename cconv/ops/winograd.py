"""Winograd F(2x2, 5x5) for 5x5 convolutions, and F(5x5, 2x2) for their weight gradient
(kernels: _winograd.pyx). conv.py routes here when `takes_winograd` says so."""
import numpy as np

from cconv._kernels import _winograd
from cconv.ops import _scratch
from cconv.ops._checks import empty

# The kernels' transform G w G^T. G is applied once per call in float64, so its
# fractions cost the float32 path nothing.
WINOGRAD_G = np.array([[1 / 2, 0, 0, 0, 0],
                       [1 / 6, 1 / 6, 1 / 6, 1 / 6, 1 / 6],
                       [1 / 6, -1 / 6, 1 / 6, -1 / 6, 1 / 6],
                       [1 / 30, 2 / 30, 4 / 30, 8 / 30, 16 / 30],
                       [16 / 30, -8 / 30, 4 / 30, -2 / 30, 1 / 30],
                       [0, 0, 0, 0, 1 / 2]])
# With fewer input channels or filters, transforming every patch costs more than the
# products it saves.
WINOGRAD_MIN_CHANNELS = 8
WINOGRAD_MIN_FILTERS = 16
# The weight gradient pads C to a panel, which loses to the direct path below this.
WINOGRAD_GRAD_MIN_CHANNELS = 16
WINOGRAD_BLOCK = 24  # tiles per work unit: V and M of one unit stay in L2
# Images per partial sum of the weight gradient: a thread's work unit, fixed so that
# the sums never depend on the thread count.
WINOGRAD_GRAD_CHUNK = 4


def takes_winograd(kh, kw, c, f):
    """Whether a convolution with C input channels and F filters takes Winograd."""
    return (kh, kw) == (5, 5) and c >= WINOGRAD_MIN_CHANNELS and f >= WINOGRAD_MIN_FILTERS


def grad_takes_winograd(kh, kw, c, f):
    """Whether the weight gradient of such a convolution takes Winograd too."""
    return takes_winograd(kh, kw, c, f) and c >= WINOGRAD_GRAD_MIN_CHANNELS


def _winograd_panels(w):
    """G w G^T for weights (5, 5, C, F) as zero-padded NR-wide panels (36, ceil(F / NR),
    C, NR), as _winograd.conv5_forward reads them."""
    _, _, c, f = w.shape
    nr = _scratch.panel_width(w.dtype)
    panels = -(-f // nr)
    # einsum without optimize: no BLAS, whose threads would fight OpenMP's for the cores
    gw = np.einsum("ak,kbcf->abcf", WINOGRAD_G, w.astype(np.float64))  # (6, 5, C, F)
    u = np.einsum("bl,alcf->abcf", WINOGRAD_G, gw)  # (6, 6, C, F)
    padded = np.zeros((36, c, panels * nr))
    padded[:, :, :f] = u.reshape(36, c, f)
    return np.ascontiguousarray(padded.reshape(36, c, panels, nr).transpose(0, 2, 1, 3),
                                dtype=w.dtype)


def conv_winograd(src, w, b, out, top, left, act, threads):
    """out = act(conv(src, w) + b) for 5x5 weights by Winograd F(2x2, 5x5)."""
    c, f = w.shape[2], w.shape[3]
    if b.shape[0] == 0:
        b = np.zeros(f, dtype=src.dtype)
    work = _scratch.workspace("conv_winograd", (threads, _scratch.winograd_forward_size(
        c, f, WINOGRAD_BLOCK, src.dtype)), src.dtype)
    _winograd.conv5_forward(src, _winograd_panels(w), b, out, work, top, left, act,
                            WINOGRAD_BLOCK, threads)


def winograd_backward_weights(x, grad_out, top, left, threads):
    """grad_w (5, 5, C, F) of a 5x5 convolution by Winograd F(5x5, 2x2): the kernel sums
    (A h A^T) . (B^T d B) over the tiles of fixed chunks of images, numpy adds the chunks
    in order in float64, and G^T .. G maps the sum back."""
    c, f = x.shape[3], grad_out.shape[3]
    nr = _scratch.panel_width(x.dtype)
    cp = -(-c // nr) * nr
    tiles = -(-grad_out.shape[1] // 2) * -(-grad_out.shape[2] // 2)
    chunks = -(-x.shape[0] // WINOGRAD_GRAD_CHUNK)
    partial = empty("conv2d_backward partial sums", (chunks, 36, f, cp), np.float64)
    work = _scratch.workspace("winograd_grad", (threads, _scratch.winograd_grad_size(
        c, f, tiles, x.dtype)), x.dtype)
    _winograd.conv5_backward_weights(x, grad_out, partial, work, top, left,
                                     WINOGRAD_GRAD_CHUNK, threads)
    m = partial.sum(axis=0)[:, :, :c].reshape(6, 6, f, c)
    gw = np.einsum("ik,ijfc->kjfc", WINOGRAD_G, m)  # G^T over the rows (as above, no BLAS)
    gw = np.einsum("kjfc,jl->klcf", gw, WINOGRAD_G)  # ... and the columns
    return gw.astype(x.dtype)
