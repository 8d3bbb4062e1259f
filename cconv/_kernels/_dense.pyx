"""Dense layer kernels: x (N, D), kernel stored transposed as w_t (U, D), out (N, U).

Suited to the few-output layers of small classifiers (U of 10 or so), where a BLAS call
is mostly overhead and its thread pool competes with OpenMP for the same cores. Every
output element is one dot product over D in a fixed order, so the bits never depend on
the thread count.
"""
from cython cimport floating
from cython.parallel cimport prange


cdef inline floating dot(const floating* a, const floating* b, Py_ssize_t n) noexcept nogil:
    cdef floating s = 0
    cdef Py_ssize_t i
    for i in range(n):
        s += a[i] * b[i]
    return s


cdef enum:
    ROWS = 4  # samples per work unit: one load of a weight row serves four dot products


cdef void dots_rows(const floating* x, const floating* w, floating* out, Py_ssize_t D,
                    Py_ssize_t U) noexcept nogil:
    """out[r, u] = dot(x[r], w[u]) for ROWS rows; four independent sums hide FMA latency."""
    cdef Py_ssize_t u, d
    cdef floating s0, s1, s2, s3, wv
    cdef const floating* wr
    for u in range(U):
        wr = w + u * D
        s0 = s1 = s2 = s3 = 0
        for d in range(D):
            wv = wr[d]
            s0 += x[d] * wv
            s1 += x[D + d] * wv
            s2 += x[2 * D + d] * wv
            s3 += x[3 * D + d] * wv
        out[u] = s0
        out[U + u] = s1
        out[2 * U + u] = s2
        out[3 * U + u] = s3


def dense_forward(const floating[:, ::1] x, const floating[:, ::1] w_t, const floating[::1] b,
                  floating[:, ::1] out, int num_threads):
    """out = x @ w_t.T + b; b has length U, or 0 for no bias.

    Rows go in groups of ROWS; leftover rows use single dot products, whose sums add in
    the same order, so a row's result does not depend on which group it fell in."""
    cdef Py_ssize_t N = x.shape[0], D = x.shape[1], U = w_t.shape[0]
    cdef Py_ssize_t n_groups = N // ROWS
    cdef bint has_bias = b.shape[0] > 0
    cdef Py_ssize_t g, n, u
    with nogil:
        for g in prange(n_groups, num_threads=num_threads, schedule="static"):
            dots_rows(&x[g * ROWS, 0], &w_t[0, 0], &out[g * ROWS, 0], D, U)
        for n in range(n_groups * ROWS, N):
            for u in range(U):
                out[n, u] = dot(&x[n, 0], &w_t[u, 0], D)
        if has_bias:
            for n in prange(N, num_threads=num_threads, schedule="static"):
                for u in range(U):
                    out[n, u] += b[u]


def dense_backward_input(const floating[:, ::1] grad_out, const floating[:, ::1] w_t,
                         floating[:, ::1] grad_x, int num_threads):
    """grad_x = grad_out @ w_t: a sum of U scaled rows of w_t for each sample."""
    cdef Py_ssize_t N = grad_x.shape[0], D = grad_x.shape[1], U = w_t.shape[0]
    cdef Py_ssize_t n, u, d
    cdef floating g
    cdef floating* gx
    cdef const floating* wrow
    with nogil:
        for n in prange(N, num_threads=num_threads, schedule="static"):
            gx = &grad_x[n, 0]
            for d in range(D):
                gx[d] = 0
            for u in range(U):
                g = grad_out[n, u]
                wrow = &w_t[u, 0]
                for d in range(D):
                    gx[d] += g * wrow[d]


def dense_backward_kernel(const floating[:, ::1] x, const floating[:, ::1] grad_out,
                          floating[:, ::1] grad_w_t, Py_ssize_t block, int num_threads):
    """grad_w_t[u, d] = sum over n of grad_out[n, u] * x[n, d].

    Threads split the D axis into fixed blocks; each element sums the batch in order
    n = 0, 1, ..., so no partial sums are ever combined across threads."""
    cdef Py_ssize_t N = x.shape[0], D = x.shape[1], U = grad_w_t.shape[0]
    cdef Py_ssize_t n_blocks = (D + block - 1) // block
    cdef Py_ssize_t k, n, u, d, d0, d1
    cdef floating g
    cdef floating* gw
    cdef const floating* xrow
    with nogil:
        for k in prange(n_blocks, num_threads=num_threads, schedule="static"):
            d0 = k * block
            d1 = min(D, d0 + block)
            for u in range(U):
                gw = &grad_w_t[u, 0]
                for d in range(d0, d1):
                    gw[d] = 0
            for n in range(N):
                xrow = &x[n, 0]
                for u in range(U):
                    g = grad_out[n, u]
                    gw = &grad_w_t[u, 0]
                    for d in range(d0, d1):
                        gw[d] += g * xrow[d]
