"""Dense layer kernels: x (N, D), kernel stored transposed as w_t (U, D), out (N, U).

Suited to the few-output layers of small classifiers (U of 10 or so), where a BLAS call
is mostly overhead and its thread pool competes with OpenMP for the same cores. Every
output element is one dot product over D in a fixed order, so the bits never depend on
the thread count. Work units are handed out dynamically: no result depends on which
thread computes it, and on a busy machine a thread the OS pauses holds up no one.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport uint8_t

from cconv._kernels._codes cimport ACT_RELU, ACT_TANH
from cconv._kernels._simd cimport (vd, vd_load, vd_madd, vd_store, vd_zero, VD_LANES, vf,
                                   vf_load, vf_madd, vf_store, vf_zero, VF_LANES)


cdef inline floating dot(const floating* a, const floating* b, Py_ssize_t n) noexcept nogil:
    cdef floating s = 0
    cdef Py_ssize_t i
    for i in range(n):
        s += a[i] * b[i]
    return s


cdef enum:
    ROWS = 2   # samples per work unit
    UNITS = 5  # output units per pass: ROWS * UNITS sums, each one SIMD register


cdef inline void dots_2x5(const floating* x, const floating* w, floating* out, Py_ssize_t D,
                          Py_ssize_t U) noexcept nogil:
    """out[r, u] = dot(x[r], w[u]) for two rows and five units in one pass over D: each
    load of x serves five sums and each load of w two, and the ten independent sums hide
    the FMA latency. x and w are read once per pass, w from cache."""
    cdef Py_ssize_t d
    cdef floating a, c
    cdef floating s00 = 0, s01 = 0, s02 = 0, s03 = 0, s04 = 0
    cdef floating s10 = 0, s11 = 0, s12 = 0, s13 = 0, s14 = 0
    cdef const floating* x1 = x + D
    for d in range(D):
        a = x[d]
        c = x1[d]
        s00 += a * w[d]
        s10 += c * w[d]
        s01 += a * w[D + d]
        s11 += c * w[D + d]
        s02 += a * w[2 * D + d]
        s12 += c * w[2 * D + d]
        s03 += a * w[3 * D + d]
        s13 += c * w[3 * D + d]
        s04 += a * w[4 * D + d]
        s14 += c * w[4 * D + d]
    out[0], out[1], out[2], out[3], out[4] = s00, s01, s02, s03, s04
    out[U], out[U + 1], out[U + 2], out[U + 3], out[U + 4] = s10, s11, s12, s13, s14


def dense_forward(const floating[:, ::1] x, const floating[:, ::1] w_t, const floating[::1] b,
                  floating[:, ::1] out, int num_threads):
    """out = x @ w_t.T + b; b has length U, or 0 for no bias.

    Rows go in pairs and units in fives (dots_2x5); a last odd row, and units past the
    last multiple of five, use single dot products. Which path a row takes depends only
    on N and U, never on the thread count."""
    cdef Py_ssize_t N = x.shape[0], D = x.shape[1], U = w_t.shape[0]
    cdef Py_ssize_t n_pairs = N // ROWS, u_main = U - U % UNITS
    cdef bint has_bias = b.shape[0] > 0
    cdef Py_ssize_t g, k, n, u
    with nogil:
        for g in prange(n_pairs, num_threads=num_threads, schedule="dynamic"):
            for k in range(u_main // UNITS):
                dots_2x5(&x[g * ROWS, 0], &w_t[k * UNITS, 0], &out[g * ROWS, k * UNITS], D, U)
            for u in range(u_main, U):
                out[g * ROWS, u] = dot(&x[g * ROWS, 0], &w_t[u, 0], D)
                out[g * ROWS + 1, u] = dot(&x[g * ROWS + 1, 0], &w_t[u, 0], D)
        for n in range(n_pairs * ROWS, N):
            for u in range(U):
                out[n, u] = dot(&x[n, 0], &w_t[u, 0], D)
        if has_bias:
            for n in range(N):
                for u in range(U):
                    out[n, u] += b[u]


# The backward micro-kernels keep their sums in SIMD registers for the whole reduction,
# and add the terms in the same order as a plain loop would (units in order for the input
# gradient, samples in order for the weight gradient): tails that the blocks leave over
# use plain loops and give the same bits.

cdef inline void gx_2x4_f32(const float* g, const float* w, float* gx, Py_ssize_t D,
                            Py_ssize_t U, Py_ssize_t d) noexcept nogil:
    """gx[r, d:d + 4 lanes] = sum over u of g[r, u] * w[u, d:...] for two rows r."""
    cdef vf a0 = vf_zero(), a1 = vf_zero(), a2 = vf_zero(), a3 = vf_zero()
    cdef vf b0 = vf_zero(), b1 = vf_zero(), b2 = vf_zero(), b3 = vf_zero()
    cdef vf w0, w1, w2, w3
    cdef const float* wr
    cdef Py_ssize_t u
    for u in range(U):
        wr = w + u * D + d
        w0, w1 = vf_load(wr), vf_load(wr + VF_LANES)
        w2, w3 = vf_load(wr + 2 * VF_LANES), vf_load(wr + 3 * VF_LANES)
        a0, a1 = vf_madd(g[u], w0, a0), vf_madd(g[u], w1, a1)
        a2, a3 = vf_madd(g[u], w2, a2), vf_madd(g[u], w3, a3)
        b0, b1 = vf_madd(g[U + u], w0, b0), vf_madd(g[U + u], w1, b1)
        b2, b3 = vf_madd(g[U + u], w2, b2), vf_madd(g[U + u], w3, b3)
    vf_store(gx + d, a0)
    vf_store(gx + d + VF_LANES, a1)
    vf_store(gx + d + 2 * VF_LANES, a2)
    vf_store(gx + d + 3 * VF_LANES, a3)
    vf_store(gx + D + d, b0)
    vf_store(gx + D + d + VF_LANES, b1)
    vf_store(gx + D + d + 2 * VF_LANES, b2)
    vf_store(gx + D + d + 3 * VF_LANES, b3)


cdef inline void gx_2x4_f64(const double* g, const double* w, double* gx, Py_ssize_t D,
                            Py_ssize_t U, Py_ssize_t d) noexcept nogil:
    cdef vd a0 = vd_zero(), a1 = vd_zero(), a2 = vd_zero(), a3 = vd_zero()
    cdef vd b0 = vd_zero(), b1 = vd_zero(), b2 = vd_zero(), b3 = vd_zero()
    cdef vd w0, w1, w2, w3
    cdef const double* wr
    cdef Py_ssize_t u
    for u in range(U):
        wr = w + u * D + d
        w0, w1 = vd_load(wr), vd_load(wr + VD_LANES)
        w2, w3 = vd_load(wr + 2 * VD_LANES), vd_load(wr + 3 * VD_LANES)
        a0, a1 = vd_madd(g[u], w0, a0), vd_madd(g[u], w1, a1)
        a2, a3 = vd_madd(g[u], w2, a2), vd_madd(g[u], w3, a3)
        b0, b1 = vd_madd(g[U + u], w0, b0), vd_madd(g[U + u], w1, b1)
        b2, b3 = vd_madd(g[U + u], w2, b2), vd_madd(g[U + u], w3, b3)
    vd_store(gx + d, a0)
    vd_store(gx + d + VD_LANES, a1)
    vd_store(gx + d + 2 * VD_LANES, a2)
    vd_store(gx + d + 3 * VD_LANES, a3)
    vd_store(gx + D + d, b0)
    vd_store(gx + D + d + VD_LANES, b1)
    vd_store(gx + D + d + 2 * VD_LANES, b2)
    vd_store(gx + D + d + 3 * VD_LANES, b3)


cdef inline void gx_rows(const floating* g, const floating* w, floating* gx, Py_ssize_t D,
                         Py_ssize_t U, Py_ssize_t rows, Py_ssize_t d0) noexcept nogil:
    """grad_x for `rows` rows over columns d0..D, one plain loop per unit."""
    cdef Py_ssize_t r, u, d
    for r in range(rows):
        for d in range(d0, D):
            gx[r * D + d] = 0
        for u in range(U):
            for d in range(d0, D):
                gx[r * D + d] += g[r * U + u] * w[u * D + d]


def dense_backward_input(const floating[:, ::1] grad_out, const floating[:, ::1] w_t,
                         floating[:, ::1] grad_x, int num_threads):
    """grad_x = grad_out @ w_t: for each sample, a sum of U scaled rows of w_t. Samples
    go in pairs, columns in blocks of four SIMD vectors (gx_2x4_*); the rest, plain."""
    cdef Py_ssize_t N = grad_x.shape[0], D = grad_x.shape[1], U = w_t.shape[0]
    cdef Py_ssize_t lanes = 4 * (VF_LANES if floating is float else VD_LANES)
    cdef Py_ssize_t d_main = D - D % lanes
    cdef Py_ssize_t pr, j
    with nogil:
        for pr in prange(N // 2, num_threads=num_threads, schedule="dynamic"):
            for j in range(d_main // lanes):
                if floating is float:
                    gx_2x4_f32(&grad_out[2 * pr, 0], &w_t[0, 0], &grad_x[2 * pr, 0], D, U,
                               j * lanes)
                else:
                    gx_2x4_f64(&grad_out[2 * pr, 0], &w_t[0, 0], &grad_x[2 * pr, 0], D, U,
                               j * lanes)
            gx_rows(&grad_out[2 * pr, 0], &w_t[0, 0], &grad_x[2 * pr, 0], D, U, 2, d_main)
        if N % 2:
            gx_rows(&grad_out[N - 1, 0], &w_t[0, 0], &grad_x[N - 1, 0], D, U, 1, 0)


cdef inline void gate(floating* g, const uint8_t* m, const floating* y, floating scale,
                      int act, Py_ssize_t n) noexcept nogil:
    """g[0:n] through dropout (m NULL: none) and the activation whose output is y, in
    the order of dropout_backward then tanh_backward / relu_backward."""
    cdef Py_ssize_t i
    cdef floating v
    if m != NULL:
        for i in range(n):
            v = g[i] * scale
            g[i] = v if m[i] else 0
    if act == ACT_TANH:
        for i in range(n):
            g[i] = g[i] * (1 - y[i] * y[i])
    elif act == ACT_RELU:
        for i in range(n):
            v = g[i]
            g[i] = v if y[i] > 0 else 0


def dense_backward_input_gated(const floating[:, ::1] grad_out, const floating[:, ::1] w_t,
                               const uint8_t[:, ::1] mask, floating scale,
                               const floating[:, ::1] y, int act, floating[:, ::1] grad_x,
                               int num_threads):
    """grad_x = (grad_out @ w_t) * mask * scale * act'(y): dense_backward_input, then the
    gradient through a dropout (mask of shape (N, D), or (0, 0) for none) and through the
    activation act whose output was y, applied to each block of grad_x while it is in
    cache instead of in two more passes over memory. The blocks are dense_backward_input's,
    so the dense part has its bits."""
    cdef Py_ssize_t N = grad_x.shape[0], D = grad_x.shape[1], U = w_t.shape[0]
    cdef Py_ssize_t lanes = 4 * (VF_LANES if floating is float else VD_LANES)
    cdef Py_ssize_t d_main = D - D % lanes
    cdef bint masked = mask.shape[0] > 0
    cdef Py_ssize_t pr, j, r, n0
    with nogil:
        for pr in prange(N // 2, num_threads=num_threads, schedule="dynamic"):
            n0 = 2 * pr
            for j in range(d_main // lanes):
                if floating is float:
                    gx_2x4_f32(&grad_out[n0, 0], &w_t[0, 0], &grad_x[n0, 0], D, U, j * lanes)
                else:
                    gx_2x4_f64(&grad_out[n0, 0], &w_t[0, 0], &grad_x[n0, 0], D, U, j * lanes)
                for r in range(2):
                    gate(&grad_x[n0 + r, j * lanes],
                         &mask[n0 + r, j * lanes] if masked else NULL, &y[n0 + r, j * lanes],
                         scale, act, lanes)
            gx_rows(&grad_out[n0, 0], &w_t[0, 0], &grad_x[n0, 0], D, U, 2, d_main)
            for r in range(2):
                gate(&grad_x[n0 + r, d_main], &mask[n0 + r, d_main] if masked else NULL,
                     &y[n0 + r, d_main], scale, act, D - d_main)
        if N % 2:
            gx_rows(&grad_out[N - 1, 0], &w_t[0, 0], &grad_x[N - 1, 0], D, U, 1, 0)
            gate(&grad_x[N - 1, 0], &mask[N - 1, 0] if masked else NULL, &y[N - 1, 0], scale,
                 act, D)


cdef inline void gw_5x2_f32(const float* x, const float* g, float* gw, Py_ssize_t N,
                            Py_ssize_t D, Py_ssize_t U, Py_ssize_t d) noexcept nogil:
    """gw[i, d:d + 2 lanes] = sum over n, in order, of g[n, i] * x[n, d:...], i < 5."""
    cdef vf a0 = vf_zero(), a1 = vf_zero(), a2 = vf_zero(), a3 = vf_zero(), a4 = vf_zero()
    cdef vf b0 = vf_zero(), b1 = vf_zero(), b2 = vf_zero(), b3 = vf_zero(), b4 = vf_zero()
    cdef vf xa, xb
    cdef const float* gn
    cdef Py_ssize_t n
    for n in range(N):
        xa, xb = vf_load(x + n * D + d), vf_load(x + n * D + d + VF_LANES)
        gn = g + n * U
        a0, b0 = vf_madd(gn[0], xa, a0), vf_madd(gn[0], xb, b0)
        a1, b1 = vf_madd(gn[1], xa, a1), vf_madd(gn[1], xb, b1)
        a2, b2 = vf_madd(gn[2], xa, a2), vf_madd(gn[2], xb, b2)
        a3, b3 = vf_madd(gn[3], xa, a3), vf_madd(gn[3], xb, b3)
        a4, b4 = vf_madd(gn[4], xa, a4), vf_madd(gn[4], xb, b4)
    vf_store(gw + d, a0)
    vf_store(gw + d + VF_LANES, b0)
    vf_store(gw + D + d, a1)
    vf_store(gw + D + d + VF_LANES, b1)
    vf_store(gw + 2 * D + d, a2)
    vf_store(gw + 2 * D + d + VF_LANES, b2)
    vf_store(gw + 3 * D + d, a3)
    vf_store(gw + 3 * D + d + VF_LANES, b3)
    vf_store(gw + 4 * D + d, a4)
    vf_store(gw + 4 * D + d + VF_LANES, b4)


cdef inline void gw_5x2_f64(const double* x, const double* g, double* gw, Py_ssize_t N,
                            Py_ssize_t D, Py_ssize_t U, Py_ssize_t d) noexcept nogil:
    cdef vd a0 = vd_zero(), a1 = vd_zero(), a2 = vd_zero(), a3 = vd_zero(), a4 = vd_zero()
    cdef vd b0 = vd_zero(), b1 = vd_zero(), b2 = vd_zero(), b3 = vd_zero(), b4 = vd_zero()
    cdef vd xa, xb
    cdef const double* gn
    cdef Py_ssize_t n
    for n in range(N):
        xa, xb = vd_load(x + n * D + d), vd_load(x + n * D + d + VD_LANES)
        gn = g + n * U
        a0, b0 = vd_madd(gn[0], xa, a0), vd_madd(gn[0], xb, b0)
        a1, b1 = vd_madd(gn[1], xa, a1), vd_madd(gn[1], xb, b1)
        a2, b2 = vd_madd(gn[2], xa, a2), vd_madd(gn[2], xb, b2)
        a3, b3 = vd_madd(gn[3], xa, a3), vd_madd(gn[3], xb, b3)
        a4, b4 = vd_madd(gn[4], xa, a4), vd_madd(gn[4], xb, b4)
    vd_store(gw + d, a0)
    vd_store(gw + d + VD_LANES, b0)
    vd_store(gw + D + d, a1)
    vd_store(gw + D + d + VD_LANES, b1)
    vd_store(gw + 2 * D + d, a2)
    vd_store(gw + 2 * D + d + VD_LANES, b2)
    vd_store(gw + 3 * D + d, a3)
    vd_store(gw + 3 * D + d + VD_LANES, b3)
    vd_store(gw + 4 * D + d, a4)
    vd_store(gw + 4 * D + d + VD_LANES, b4)


def dense_backward_weights(const floating[:, ::1] x, const floating[:, ::1] grad_out,
                          floating[:, ::1] grad_w_t, Py_ssize_t block, int num_threads):
    """grad_w_t[u, d] = sum over n of grad_out[n, u] * x[n, d].

    Threads split the D axis into fixed blocks; each element sums the batch in order
    n = 0, 1, ..., so no partial sums are ever combined across threads. Inside a block,
    units go in fives and columns in pairs of SIMD vectors (gw_5x2_*)."""
    cdef Py_ssize_t N = x.shape[0], D = x.shape[1], U = grad_w_t.shape[0]
    cdef Py_ssize_t n_blocks = (D + block - 1) // block
    cdef Py_ssize_t lanes = 2 * (VF_LANES if floating is float else VD_LANES)
    cdef Py_ssize_t u_main = U - U % 5
    cdef Py_ssize_t k, n, u, j, d, d0, d1, dv, d_rest
    cdef floating* gw
    with nogil:
        for k in prange(n_blocks, num_threads=num_threads, schedule="dynamic"):
            d0 = k * block
            d1 = min(D, d0 + block)
            dv = d0 + (d1 - d0) // lanes * lanes
            for u in range(u_main // 5):
                for j in range((dv - d0) // lanes):
                    if floating is float:
                        gw_5x2_f32(&x[0, 0], &grad_out[0, 5 * u], &grad_w_t[5 * u, 0], N, D,
                                   U, d0 + j * lanes)
                    else:
                        gw_5x2_f64(&x[0, 0], &grad_out[0, 5 * u], &grad_w_t[5 * u, 0], N, D,
                                   U, d0 + j * lanes)
            # Leftover units and columns: the same sums, one plain loop each.
            for u in range(U):
                gw = &grad_w_t[u, 0]
                d_rest = dv if u < u_main else d0
                for d in range(d_rest, d1):
                    gw[d] = 0
                for n in range(N):
                    for d in range(d_rest, d1):
                        gw[d] += grad_out[n, u] * x[n, d]
