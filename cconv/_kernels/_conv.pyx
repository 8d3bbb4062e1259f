"""2-D convolution, channels-last: x (N, H, W, C), kernels (KH, KW, C, F), out (N, OH, OW, F).

Stride 1. Padding is given as the number of zero rows above and columns left of the
image (0 for 'valid', (K-1)//2 for 'same'); positions that fall outside the image are
skipped rather than read, so no padded copy of x is ever made.

Every array here has been checked by cconv.ops: shapes agree, dtypes match, memory is
C-contiguous. Bounds checks are off.
"""
from cython cimport floating
from cython.parallel cimport prange, threadid

from cconv._kernels._math cimport activate


cdef void forward_image_gray(const floating* x, const floating* w, const floating* b,
                             floating* out, floating* work, Py_ssize_t H, Py_ssize_t W,
                             Py_ssize_t KH, Py_ssize_t KW, Py_ssize_t F,
                             Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t pad_top,
                             Py_ssize_t pad_left, int act) noexcept nogil:
    """One single-channel image, by whole planes: the image is copied into a zero-padded
    (Hp, Wp) frame, and each filter's plane of outputs, kept Wp wide, gets one long
    contiguous multiply-add per kernel offset (four per pass); the KW - 1 extra columns of each plane row
    are dropped when the planes are transposed to channels-last. Each output still adds
    its terms in (ky, kx) order, like forward_image. work holds Hp * Wp + F * OH * Wp."""
    cdef Py_ssize_t Hp = OH + KH - 1, Wp = OW + KW - 1
    cdef Py_ssize_t L = (OH - 1) * Wp + OW  # the last plane row needs only OW columns
    cdef floating* frame = work
    cdef floating* planes = work + Hp * Wp
    cdef Py_ssize_t i, y, xx, f, t, oy, ox
    cdef const floating* x0
    cdef const floating* x1
    cdef const floating* x2
    cdef const floating* x3
    cdef floating* p
    cdef floating* o
    cdef floating w0, w1, w2, w3
    for i in range(Hp * Wp):
        frame[i] = 0
    for y in range(H):
        for xx in range(W):
            frame[(y + pad_top) * Wp + xx + pad_left] = x[y * W + xx]
    for f in range(F):
        p = planes + f * OH * Wp
        for i in range(L):
            p[i] = 0
        # Four kernel offsets per pass over the plane: a quarter of the loads and stores.
        t = 0
        while t + 4 <= KH * KW:
            w0, w1 = w[t * F + f], w[(t + 1) * F + f]
            w2, w3 = w[(t + 2) * F + f], w[(t + 3) * F + f]
            x0 = frame + (t // KW) * Wp + t % KW
            x1 = frame + ((t + 1) // KW) * Wp + (t + 1) % KW
            x2 = frame + ((t + 2) // KW) * Wp + (t + 2) % KW
            x3 = frame + ((t + 3) // KW) * Wp + (t + 3) % KW
            for i in range(L):
                p[i] = p[i] + w0 * x0[i] + w1 * x1[i] + w2 * x2[i] + w3 * x3[i]
            t += 4
        while t < KH * KW:
            w0 = w[t * F + f]
            x0 = frame + (t // KW) * Wp + t % KW
            for i in range(L):
                p[i] += w0 * x0[i]
            t += 1
    for oy in range(OH):
        for ox in range(OW):
            o = out + (oy * OW + ox) * F
            for f in range(F):
                o[f] = planes[f * OH * Wp + oy * Wp + ox] + (b[f] if b != NULL else 0)
    activate(out, OH * OW * F, act)


def conv2d_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                   const floating[::1] b, floating[:, :, :, ::1] out, floating[:, ::1] work,
                   Py_ssize_t pad_top, Py_ssize_t pad_left, int act, int num_threads):
    """out = act(conv(x, w) + b) for single-channel x (C == 1; more channels go through
    _gemm); b has length F, or 0 for no bias; act is an Activation. work is per-thread
    scratch, (num_threads, Hp * Wp + F * OH * Wp) with
    Hp = OH + KH - 1 and Wp = OW + KW - 1."""
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t KH = w.shape[0], KW = w.shape[1], F = w.shape[3]
    cdef Py_ssize_t OH = out.shape[1], OW = out.shape[2]
    cdef const floating* bp = &b[0] if b.shape[0] > 0 else NULL
    cdef Py_ssize_t n
    with nogil:
        for n in prange(N, num_threads=num_threads, schedule="static"):
            forward_image_gray(&x[n, 0, 0, 0], &w[0, 0, 0, 0], bp, &out[n, 0, 0, 0],
                               &work[threadid(), 0], H, W, KH, KW, F, OH, OW,
                               pad_top, pad_left, act)


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
                           floating[:, :, :, :, ::1] partial_w, floating[:, ::1] partial_b,
                           Py_ssize_t chunk, Py_ssize_t pad_top, Py_ssize_t pad_left,
                           int num_threads):
    """Per-chunk sums of the kernel and bias gradients.

    The batch is cut into fixed chunks of `chunk` images, whatever the thread count; chunk
    k sums into partial_w[k] (KH, KW, C, F) and partial_b[k] (F,). The caller adds the
    chunks in order, so the result has the same bits on 1 thread or 64.
    """
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t KH = partial_w.shape[1], KW = partial_w.shape[2], F = partial_w.shape[4]
    cdef Py_ssize_t OH = grad_out.shape[1], OW = grad_out.shape[2]
    cdef Py_ssize_t n_chunks = partial_w.shape[0]
    cdef Py_ssize_t k, n, oy, ox, ky, kx, c, f, iy, ix, i
    cdef floating xv
    cdef floating* pw
    cdef floating* pb
    cdef const floating* g
    with nogil:
        for k in prange(n_chunks, num_threads=num_threads, schedule="static"):
            pw = &partial_w[k, 0, 0, 0, 0]
            pb = &partial_b[k, 0]
            for i in range(KH * KW * C * F):
                pw[i] = 0
            for f in range(F):
                pb[f] = 0
            for n in range(k * chunk, min((k + 1) * chunk, N)):
                for oy in range(OH):
                    for ox in range(OW):
                        g = &grad_out[n, oy, ox, 0]
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
