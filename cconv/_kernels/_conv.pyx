"""2-D convolution, channels-last: x (N, H, W, C), kernels (KH, KW, C, F), out (N, OH, OW, F).

Stride 1. Padding is given as the number of zero rows above and columns left of the
image (0 for 'valid', (K-1)//2 for 'same'); positions that fall outside the image are
skipped rather than read, so no padded copy of x is ever made.

Every array here has been checked by cconv.ops: shapes agree, dtypes match, memory is
C-contiguous. Bounds checks are off.
"""
from cython cimport floating
from cython.parallel cimport prange


def conv2d_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                   const floating[::1] b, floating[:, :, :, ::1] out,
                   Py_ssize_t pad_top, Py_ssize_t pad_left, int num_threads):
    """out = conv(x, w) + b; b has length F, or 0 for no bias."""
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t KH = w.shape[0], KW = w.shape[1], F = w.shape[3]
    cdef Py_ssize_t OH = out.shape[1], OW = out.shape[2]
    cdef bint has_bias = b.shape[0] > 0
    cdef Py_ssize_t n, oy, ox, ky, kx, c, f, iy, ix
    cdef floating xv
    cdef floating* o
    cdef const floating* wrow
    with nogil:
        for n in prange(N, num_threads=num_threads, schedule="static"):
            for oy in range(OH):
                for ox in range(OW):
                    o = &out[n, oy, ox, 0]
                    for f in range(F):
                        o[f] = b[f] if has_bias else 0
                    for ky in range(KH):
                        iy = oy + ky - pad_top
                        if iy < 0 or iy >= H:
                            continue
                        for kx in range(KW):
                            ix = ox + kx - pad_left
                            if ix < 0 or ix >= W:
                                continue
                            for c in range(C):
                                xv = x[n, iy, ix, c]
                                wrow = &w[ky, kx, c, 0]
                                for f in range(F):
                                    o[f] += xv * wrow[f]


def conv2d_backward_input(const floating[:, :, :, ::1] grad_out,
                          const floating[:, :, :, ::1] w_t,
                          floating[:, :, :, ::1] grad_x,
                          Py_ssize_t pad_top, Py_ssize_t pad_left, int num_threads):
    """grad_x = d(loss)/d(x). w_t is the kernel array transposed to (KH, KW, F, C) so
    the innermost loop runs over contiguous channels instead of reducing over filters."""
    cdef Py_ssize_t N = grad_x.shape[0], H = grad_x.shape[1], W = grad_x.shape[2]
    cdef Py_ssize_t C = grad_x.shape[3]
    cdef Py_ssize_t KH = w_t.shape[0], KW = w_t.shape[1], F = w_t.shape[2]
    cdef Py_ssize_t OH = grad_out.shape[1], OW = grad_out.shape[2]
    cdef Py_ssize_t n, oy, ox, ky, kx, c, f, iy, ix, i
    cdef floating gv
    cdef floating* gx
    cdef floating* gx_n
    cdef const floating* wrow
    with nogil:
        # Each image's gradient is written only by the thread that owns that image.
        for n in prange(N, num_threads=num_threads, schedule="static"):
            gx_n = &grad_x[n, 0, 0, 0]
            for i in range(H * W * C):
                gx_n[i] = 0
            for oy in range(OH):
                for ox in range(OW):
                    for ky in range(KH):
                        iy = oy + ky - pad_top
                        if iy < 0 or iy >= H:
                            continue
                        for kx in range(KW):
                            ix = ox + kx - pad_left
                            if ix < 0 or ix >= W:
                                continue
                            gx = &grad_x[n, iy, ix, 0]
                            for f in range(F):
                                gv = grad_out[n, oy, ox, f]
                                wrow = &w_t[ky, kx, f, 0]
                                for c in range(C):
                                    gx[c] += gv * wrow[c]


def conv2d_backward_params(const floating[:, :, :, ::1] x,
                           const floating[:, :, :, ::1] grad_out,
                           floating[:, ::1] partial_w, floating[:, ::1] partial_b,
                           floating[:, :, :, ::1] grad_w, floating[::1] grad_b,
                           Py_ssize_t chunk, Py_ssize_t pad_top, Py_ssize_t pad_left,
                           int num_threads):
    """grad_w and grad_b summed over the batch.

    The batch is cut into fixed chunks of `chunk` images, whatever the thread count.
    Each chunk sums into its own row of partial_w / partial_b (shape (n_chunks, ...)),
    then the rows are added in chunk order: the same bits on 1 thread or 64.
    grad_b has length F, or 0 when the layer has no bias; partial_b is always (n_chunks, F).
    """
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t KH = grad_w.shape[0], KW = grad_w.shape[1], F = grad_w.shape[3]
    cdef Py_ssize_t OH = grad_out.shape[1], OW = grad_out.shape[2]
    cdef Py_ssize_t n_chunks = partial_w.shape[0], n_w = partial_w.shape[1]
    cdef bint has_bias = grad_b.shape[0] > 0
    cdef Py_ssize_t k, n, n_end, oy, ox, ky, kx, c, f, iy, ix, i
    cdef floating xv, total
    cdef floating* pw
    cdef floating* pb
    cdef floating* gw = &grad_w[0, 0, 0, 0]
    cdef const floating* g
    with nogil:
        for k in prange(n_chunks, num_threads=num_threads, schedule="static"):
            pw = &partial_w[k, 0]
            pb = &partial_b[k, 0]
            for i in range(n_w):
                pw[i] = 0
            for f in range(partial_b.shape[1]):
                pb[f] = 0
            n_end = min((k + 1) * chunk, N)
            for n in range(k * chunk, n_end):
                for oy in range(OH):
                    for ox in range(OW):
                        g = &grad_out[n, oy, ox, 0]
                        if has_bias:
                            for f in range(F):
                                pb[f] += g[f]
                        for ky in range(KH):
                            iy = oy + ky - pad_top
                            if iy < 0 or iy >= H:
                                continue
                            for kx in range(KW):
                                ix = ox + kx - pad_left
                                if ix < 0 or ix >= W:
                                    continue
                                for c in range(C):
                                    xv = x[n, iy, ix, c]
                                    for f in range(F):
                                        pw[((ky * KW + kx) * C + c) * F + f] += xv * g[f]
        for i in prange(n_w, num_threads=num_threads, schedule="static"):
            total = 0
            for k in range(n_chunks):
                total = total + partial_w[k, i]
            gw[i] = total
        if has_bias:
            for f in range(F):
                total = 0
                for k in range(n_chunks):
                    total = total + partial_b[k, f]
                grad_b[f] = total
