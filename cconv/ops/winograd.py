"""Winograd F(2x2, 5x5) for 5x5 convolutions, F(4x4, 3x3) for 3x3 ones, and F(5x5, 2x2)
for the 5x5 weight gradient (kernels: _winograd.pyx). conv.py routes here when
`takes_winograd` says so."""
import numpy as np

from cconv._kernels import _winograd
from cconv.ops import _scratch
from cconv.ops._checks import empty

# The kernels' transforms G w G^T, per kernel side. G is applied once per call in
# float64, so its fractions cost the float32 path nothing. Each is the one that makes
# A^T [(G g G^T) . (B^T d B)] A the correlation for _winograd's B^T and A^T (a test solves
# for it).
WINOGRAD_G5 = np.array([[1 / 2, 0, 0, 0, 0],
                        [1 / 6, 1 / 6, 1 / 6, 1 / 6, 1 / 6],
                        [1 / 6, -1 / 6, 1 / 6, -1 / 6, 1 / 6],
                        [1 / 30, 2 / 30, 4 / 30, 8 / 30, 16 / 30],
                        [16 / 30, -8 / 30, 4 / 30, -2 / 30, 1 / 30],
                        [0, 0, 0, 0, 1 / 2]])
WINOGRAD_G3 = np.array([[1 / 2, 0, 0],
                        [1 / 6, 1 / 6, 1 / 6],
                        [1 / 6, -1 / 6, 1 / 6],
                        [1 / 30, 2 / 30, 4 / 30],
                        [4 / 30, -2 / 30, 1 / 30],
                        [0, 0, 1 / 2]])
WINOGRAD_G = {5: WINOGRAD_G5, 3: WINOGRAD_G3}
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
    return kh == kw and kh in WINOGRAD_G and c >= WINOGRAD_MIN_CHANNELS \
        and f >= WINOGRAD_MIN_FILTERS


def grad_takes_winograd(kh, kw, c, f):
    """Whether the weight gradient of such a convolution takes Winograd too (5x5 only)."""
    return (kh, kw) == (5, 5) and takes_winograd(kh, kw, c, f) \
        and c >= WINOGRAD_GRAD_MIN_CHANNELS


def _winograd_panels(w):
    """G w G^T for weights (K, K, C, F) as zero-padded NR-wide panels (36, ceil(F / NR),
    C, NR), as _winograd.conv_forward reads them."""
    k, _, c, f = w.shape
    g = WINOGRAD_G[k]
    nr = _scratch.panel_width(w.dtype)
    panels = -(-f // nr)
    # einsum without optimize: no BLAS, whose threads would fight OpenMP's for the cores
    gw = np.einsum("ak,kbcf->abcf", g, w.astype(np.float64))  # (6, K, C, F)
    u = np.einsum("bl,alcf->abcf", g, gw)  # (6, 6, C, F)
    padded = np.zeros((36, c, panels * nr))
    padded[:, :, :f] = u.reshape(36, c, f)
    return np.ascontiguousarray(padded.reshape(36, c, panels, nr).transpose(0, 2, 1, 3),
                                dtype=w.dtype)


def conv_winograd(src, w, b, out, top, left, act, threads):
    """out = act(conv(src, w) + b) for 5x5 or 3x3 weights by Winograd F(2x2, 5x5) or
    F(4x4, 3x3)."""
    c, f = w.shape[2], w.shape[3]
    if b.shape[0] == 0:
        b = np.zeros(f, dtype=src.dtype)
    work = _scratch.workspace("conv_winograd", (threads, _scratch.winograd_forward_size(
        c, f, WINOGRAD_BLOCK, src.dtype)), src.dtype)
    _winograd.conv_forward(src, _winograd_panels(w), b, out, work, top, left, act,
                           WINOGRAD_BLOCK, w.shape[0], threads)


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
    gw = np.einsum("ik,ijfc->kjfc", WINOGRAD_G5, m)  # G^T over the rows (as above, no BLAS)
    gw = np.einsum("kjfc,jl->klcf", gw, WINOGRAD_G5)  # ... and the columns
    return gw.astype(x.dtype)
