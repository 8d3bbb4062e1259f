"""Pooling kernels, channels-last.

Spatial max pooling with stride equal to the pool size: windows never overlap, so each
input element belongs to at most one window. The forward pass records, for every pooled
value, the flat index (y * W + x) * C + c of its maximum within its image; the backward
pass writes each gradient to that one element and 0 to all others. Work is cut into output rows (one image,
one row of windows), and each row only ever writes its own band of input rows: no two
threads touch the same element, whatever the thread count.

Kernel pooling reduces the last (filter) axis at every position: max, mean or sum.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int32_t
from libc.string cimport memset

from cconv._kernels._codes cimport POOL_MAX, POOL_MEAN
from cconv._kernels._convpool cimport pool_rows

cdef enum:
    ROW_BLOCK = 1024  # positions per work unit in kernel pooling


def max_pool_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                     int32_t[:, :, :, ::1] argmax, int ph, int pw, int pad_top,
                     int pad_left, int num_threads):
    """out[n, oy, ox, c] = max of x over the window; argmax (or an empty array, to skip
    it) gets the winner's flat index in the image. Ties go to the first element in
    row-major order, as in TensorFlow and numpy.argmax. Windows are clipped to the
    image, which is how 'same' padding ignores the pixels it adds. Each row of windows
    is _convpool.pool_rows on the whole image, the rule the fused conv+pool kernels use."""
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t OH = out.shape[1], OW = out.shape[2]
    cdef bint track = argmax.shape[0] > 0
    cdef Py_ssize_t r, n, oy
    with nogil:
        for r in prange(N * OH, num_threads=num_threads, schedule="static"):
            n = r // OH
            oy = r - n * OH
            pool_rows(&x[n, 0, 0, 0], 0, H, W, C, oy, oy + 1, OW, ph, pw, pad_top, pad_left,
                      &out[n, 0, 0, 0], &argmax[n, 0, 0, 0] if track else NULL)


def max_pool_backward(const floating[:, :, :, ::1] grad_out, const int32_t[:, :, :, ::1] argmax,
                      floating[:, :, :, ::1] grad_x, int ph, int pw, int pad_top,
                      int pad_left, int32_t[::1] bad, int num_threads):
    """grad_x = 0 except grad_x[argmax] = grad_out, image by image.

    Row r = (n, oy) owns a band of input rows (the first band reaches up to row 0, the
    last down to row H - 1, covering what 'valid' pooling drops) and writes every
    element of it once: each window pixel gets its window's gradient if argmax names it,
    else 0. An argmax that names no pixel of its window is caught by counting matches
    (each of the row's OW * C values must match exactly once): bad[r] = 1. So a corrupt
    argmax can neither write out of bounds nor race another row."""
    cdef Py_ssize_t N = grad_x.shape[0], H = grad_x.shape[1], W = grad_x.shape[2]
    cdef Py_ssize_t C = grad_x.shape[3], OH = grad_out.shape[1], OW = grad_out.shape[2]
    cdef Py_ssize_t r, n, oy, ox, r0, r1, y0, y1, x0, x1, x_end, c, yy, xx, matches
    cdef int32_t base
    cdef floating* gx
    cdef const floating* g
    cdef const int32_t* a
    with nogil:
        for r in prange(N * OH, num_threads=num_threads, schedule="static"):
            n = r // OH
            oy = r - n * OH
            r0 = 0 if oy == 0 else oy * ph - pad_top
            r1 = H if oy == OH - 1 else (oy + 1) * ph - pad_top
            y0 = max(oy * ph - pad_top, 0)
            y1 = min(oy * ph - pad_top + ph, H)
            x_end = min(OW * pw - pad_left, W)  # columns past it are in no window
            gx = &grad_x[n, 0, 0, 0]
            matches = 0
            for yy in range(r0, r1):
                if yy < y0 or yy >= y1:
                    memset(gx + yy * W * C, 0, W * C * sizeof(floating))
                    continue
                if x_end < W:
                    memset(gx + (yy * W + x_end) * C, 0, (W - x_end) * C * sizeof(floating))
                for ox in range(OW):
                    x0 = max(ox * pw - pad_left, 0)
                    x1 = min(ox * pw - pad_left + pw, W)
                    g = &grad_out[n, oy, ox, 0]
                    a = &argmax[n, oy, ox, 0]
                    for xx in range(x0, x1):
                        base = <int32_t>((yy * W + xx) * C)
                        for c in range(C):
                            gx[base + c] = g[c] if a[c] == base + <int32_t>c else 0
                            matches = matches + (a[c] == base + <int32_t>c)
            bad[r] = matches != OW * C


cdef inline Py_ssize_t first_max(const floating* p, Py_ssize_t F) noexcept nogil:
    cdef Py_ssize_t f, best = 0
    for f in range(1, F):
        if p[f] > p[best]:
            best = f
    return best


def kernel_pool_forward(const floating[:, ::1] x, floating[::1] out, int mode,
                        int num_threads):
    """out[i] = max, mean or sum of x[i, :], each row summed in order f = 0, 1, ..."""
    cdef Py_ssize_t R = x.shape[0], F = x.shape[1]
    cdef Py_ssize_t n_blocks = (R + ROW_BLOCK - 1) // ROW_BLOCK
    cdef Py_ssize_t blk, i, f
    cdef floating s
    cdef const floating* p
    with nogil:
        for blk in prange(n_blocks, num_threads=num_threads, schedule="static"):
            for i in range(blk * ROW_BLOCK, min(R, (blk + 1) * ROW_BLOCK)):
                p = &x[i, 0]
                if mode == POOL_MAX:
                    out[i] = p[first_max(p, F)]
                else:
                    s = 0
                    for f in range(F):
                        s = s + p[f]
                    out[i] = s / F if mode == POOL_MEAN else s


def kernel_pool_backward(const floating[:, ::1] x, const floating[::1] grad_out,
                         floating[:, ::1] grad_x, int mode, int num_threads):
    """max: the gradient goes to the first maximal filter only; mean: grad / F to every
    filter; sum: grad to every filter."""
    cdef Py_ssize_t R = x.shape[0], F = x.shape[1]
    cdef Py_ssize_t n_blocks = (R + ROW_BLOCK - 1) // ROW_BLOCK
    cdef Py_ssize_t blk, i, f
    cdef floating g
    cdef floating* gx
    with nogil:
        for blk in prange(n_blocks, num_threads=num_threads, schedule="static"):
            for i in range(blk * ROW_BLOCK, min(R, (blk + 1) * ROW_BLOCK)):
                gx = &grad_x[i, 0]
                g = grad_out[i]
                if mode == POOL_MAX:
                    for f in range(F):
                        gx[f] = 0
                    gx[first_max(&x[i, 0], F)] = g
                else:
                    if mode == POOL_MEAN:
                        g = g / F
                    for f in range(F):
                        gx[f] = g
