"""Pooling kernels, channels-last.

Spatial max pooling with stride equal to the pool size: windows never overlap, so each
input element belongs to at most one window. The forward pass records, for every pooled
value, the flat index (y * W + x) * C + c of its maximum within its image; the backward
pass writes each gradient to that one element and 0 to all others. Work is cut into output rows (one image,
one row of windows), and each row only ever writes its own band of input rows: no two
threads touch the same element, whatever the thread count.

Any other strides, and average pooling (the *_window kernels): windows SH x SW apart
may overlap or leave gaps. The forward passes work by output row as above; a backward
pass owns whole rows of input pixels (average) or whole images (max), zeroes them and
adds every window's share in one fixed order (output row, then column), so that the
bits never depend on the thread count. Average pooling divides each window's sum by
the number of its pixels inside the image, as Keras does under 'same' padding.

Kernel pooling reduces the last (filter) axis at every position: max, mean or sum.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int32_t
from libc.string cimport memset

from cconv._kernels._codes cimport POOL_MAX, POOL_MEAN
from cconv._kernels._convpool cimport pool_rows
from cconv._kernels._runs cimport add_run

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


# Window o (p wide, s apart, the first at -pad) clipped to [0, size) is [start, stop).
# (Values, not pointers into the caller: prange makes a variable private to each thread
# only where the loop body assigns it.)
cdef inline Py_ssize_t start(Py_ssize_t o, Py_ssize_t s, Py_ssize_t pad) noexcept nogil:
    return max(o * s - pad, 0)


cdef inline Py_ssize_t stop(Py_ssize_t o, Py_ssize_t p, Py_ssize_t s, Py_ssize_t pad,
                            Py_ssize_t size) noexcept nogil:
    return min(o * s - pad + p, size)


def max_pool_window_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                            int32_t[:, :, :, ::1] argmax, int ph, int pw, int sh, int sw,
                            int pad_top, int pad_left, int num_threads):
    """max_pool_forward's rule (clipped windows, ties to the first in row-major order,
    argmax or an empty array) for windows SH x SW apart."""
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t OH = out.shape[1], OW = out.shape[2]
    cdef bint track = argmax.shape[0] > 0
    cdef Py_ssize_t r, n, oy, ox, y0, y1, x0, x1, yy, xx, c
    cdef const floating* p
    cdef floating* o
    cdef int32_t* a
    cdef int32_t base
    cdef bint better
    with nogil:
        for r in prange(N * OH, num_threads=num_threads, schedule="static"):
            n = r // OH
            oy = r - n * OH
            y0 = start(oy, sh, pad_top)
            y1 = stop(oy, ph, sh, pad_top, H)
            for ox in range(OW):
                x0 = start(ox, sw, pad_left)
                x1 = stop(ox, pw, sw, pad_left, W)
                o = &out[n, oy, ox, 0]
                a = &argmax[n, oy, ox, 0] if track else NULL
                for yy in range(y0, y1):
                    for xx in range(x0, x1):
                        p = &x[n, yy, xx, 0]
                        base = <int32_t>((yy * W + xx) * C)
                        for c in range(C):
                            better = (yy == y0 and xx == x0) or p[c] > o[c]
                            o[c] = p[c] if better else o[c]
                            if track:
                                a[c] = base + <int32_t>c if better else a[c]


def max_pool_window_backward(const floating[:, :, :, ::1] grad_out,
                             const int32_t[:, :, :, ::1] argmax, floating[:, :, :, ::1] grad_x,
                             int ph, int pw, int sh, int sw, int pad_top, int pad_left,
                             int32_t[::1] bad, int num_threads):
    """grad_x = 0, then grad_x[argmax] += grad_out window by window in order, one image
    per task. An argmax that names no pixel of its window (or the wrong channel) is
    skipped and flagged: bad[n] = 1."""
    cdef Py_ssize_t N = grad_x.shape[0], H = grad_x.shape[1], W = grad_x.shape[2]
    cdef Py_ssize_t C = grad_x.shape[3], OH = grad_out.shape[1], OW = grad_out.shape[2]
    cdef Py_ssize_t n, oy, ox, y0, y1, x0, x1, c, i, yy, xx
    cdef floating* gx
    cdef const floating* g
    cdef const int32_t* a
    with nogil:
        for n in prange(N, num_threads=num_threads, schedule="static"):
            gx = &grad_x[n, 0, 0, 0]
            memset(gx, 0, H * W * C * sizeof(floating))
            bad[n] = 0
            for oy in range(OH):
                y0 = start(oy, sh, pad_top)
                y1 = stop(oy, ph, sh, pad_top, H)
                for ox in range(OW):
                    x0 = start(ox, sw, pad_left)
                    x1 = stop(ox, pw, sw, pad_left, W)
                    g = &grad_out[n, oy, ox, 0]
                    a = &argmax[n, oy, ox, 0]
                    for c in range(C):
                        i = a[c]
                        yy = i // (W * C)
                        xx = (i // C) % W
                        if i < 0 or i % C != c or yy < y0 or yy >= y1 or xx < x0 or xx >= x1:
                            bad[n] = 1
                        else:
                            gx[i] = gx[i] + g[c]


def avg_pool_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out, int ph,
                     int pw, int sh, int sw, int pad_top, int pad_left, int num_threads):
    """out[n, oy, ox, c] = the sum of x over the window clipped to the image, pixels in
    row-major order, divided by their count."""
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t OH = out.shape[1], OW = out.shape[2]
    cdef Py_ssize_t r, n, oy, ox, y0, y1, x0, x1, yy, xx, c
    cdef floating count
    cdef floating* o
    with nogil:
        for r in prange(N * OH, num_threads=num_threads, schedule="static"):
            n = r // OH
            oy = r - n * OH
            y0 = start(oy, sh, pad_top)
            y1 = stop(oy, ph, sh, pad_top, H)
            for ox in range(OW):
                x0 = start(ox, sw, pad_left)
                x1 = stop(ox, pw, sw, pad_left, W)
                o = &out[n, oy, ox, 0]
                memset(o, 0, C * sizeof(floating))
                for yy in range(y0, y1):
                    for xx in range(x0, x1):
                        add_run(o, &x[n, yy, xx, 0], C)
                count = (y1 - y0) * (x1 - x0)
                for c in range(C):
                    o[c] = o[c] / count


def avg_pool_backward(const floating[:, :, :, ::1] grad_out, floating[:, :, :, ::1] grad_x,
                      int ph, int pw, int sh, int sw, int pad_top, int pad_left,
                      int num_threads):
    """grad_x[n, y, x] = the sum, over the windows holding (y, x) in order, of their
    grad_out divided by their pixel count. One row of input pixels per task."""
    cdef Py_ssize_t N = grad_x.shape[0], H = grad_x.shape[1], W = grad_x.shape[2]
    cdef Py_ssize_t C = grad_x.shape[3], OH = grad_out.shape[1], OW = grad_out.shape[2]
    cdef Py_ssize_t t, n, iy, oy, ox, y0, y1, x0, x1, xx, c
    cdef floating count
    cdef floating* gx
    cdef const floating* g
    with nogil:
        for t in prange(N * H, num_threads=num_threads, schedule="static"):
            n = t // H
            iy = t - n * H
            gx = &grad_x[n, iy, 0, 0]
            memset(gx, 0, W * C * sizeof(floating))
            for oy in range(OH):
                y0 = start(oy, sh, pad_top)
                y1 = stop(oy, ph, sh, pad_top, H)
                if iy < y0 or iy >= y1:
                    continue
                for ox in range(OW):
                    x0 = start(ox, sw, pad_left)
                    x1 = stop(ox, pw, sw, pad_left, W)
                    count = (y1 - y0) * (x1 - x0)
                    g = &grad_out[n, oy, ox, 0]
                    for xx in range(x0, x1):
                        for c in range(C):
                            gx[xx * C + c] = gx[xx * C + c] + g[c] / count


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
