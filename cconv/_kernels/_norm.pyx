"""Batch normalisation kernels over the last axis of a C-contiguous (M, C) array: M rows
(every position of every sample), C channels.

Per-channel sums are taken in double, whatever the dtype, over fixed chunks of `chunk`
rows: each chunk sums its rows in row order into its own row of `partial`, then the
chunks' sums are added in chunk order. The threads only share out the chunks, so the
order of every addition, and so the bits, never depend on the thread count. The inner
loops run along the channels, one independent sum per channel, which the compiler
vectorises without reordering any sum (no fast-math, no contraction), so the bits do not
depend on the vector width either. The elementwise passes compute each element in double
from its own operands and round once.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memset


cdef inline Py_ssize_t n_chunks(Py_ssize_t m, Py_ssize_t chunk) noexcept nogil:
    return (m + chunk - 1) // chunk


cdef inline void add_chunks(const double* partial, Py_ssize_t chunks, Py_ssize_t C,
                            double* out) noexcept nogil:
    """out = the sum of the `chunks` rows of C at partial, added in row order."""
    cdef Py_ssize_t k, c
    for c in range(C):
        out[c] = 0.0
    for k in range(chunks):
        for c in range(C):
            out[c] += partial[k * C + c]


def channel_sums(const floating[:, ::1] x, const double[::1] center, double[:, ::1] partial,
                 double[::1] out, Py_ssize_t chunk, bint squares, int num_threads):
    """out[c] = sum over rows r of d = x[r, c] - center[c], or of d * d when squares.
    partial: scratch of at least ceil(M / chunk) rows of C."""
    cdef Py_ssize_t M = x.shape[0], C = x.shape[1], chunks = n_chunks(M, chunk)
    cdef Py_ssize_t k, r, c, end
    cdef double d
    cdef double* acc
    with nogil:
        for k in prange(chunks, num_threads=num_threads, schedule="static"):
            acc = &partial[k, 0]
            memset(acc, 0, C * sizeof(double))
            end = min(M, (k + 1) * chunk)
            for r in range(k * chunk, end):
                if squares:
                    for c in range(C):
                        d = <double>x[r, c] - center[c]
                        acc[c] += d * d
                else:
                    for c in range(C):
                        acc[c] += <double>x[r, c] - center[c]
        add_chunks(&partial[0, 0], chunks, C, &out[0])


def backward_sums(const floating[:, ::1] x, const floating[:, ::1] grad,
                  const double[::1] mean, const double[::1] inv_std, double[:, ::1] partial,
                  double[::1] sum_grad, double[::1] sum_grad_xhat, Py_ssize_t chunk,
                  int num_threads):
    """sum_grad[c] = sum of grad[:, c]; sum_grad_xhat[c] = sum of grad[:, c] * xhat[:, c],
    xhat = (x - mean) * inv_std. partial: scratch of at least 2 * ceil(M / chunk) rows
    of C (the first half for sum_grad, the second for sum_grad_xhat)."""
    cdef Py_ssize_t M = x.shape[0], C = x.shape[1], chunks = n_chunks(M, chunk)
    cdef Py_ssize_t k, r, c, end
    cdef double g
    cdef double* acc_g
    cdef double* acc_gx
    with nogil:
        for k in prange(chunks, num_threads=num_threads, schedule="static"):
            acc_g = &partial[k, 0]
            acc_gx = &partial[chunks + k, 0]
            memset(acc_g, 0, C * sizeof(double))
            memset(acc_gx, 0, C * sizeof(double))
            end = min(M, (k + 1) * chunk)
            for r in range(k * chunk, end):
                for c in range(C):
                    g = <double>grad[r, c]
                    acc_g[c] += g
                    acc_gx[c] += g * ((<double>x[r, c] - mean[c]) * inv_std[c])
        add_chunks(&partial[0, 0], chunks, C, &sum_grad[0])
        add_chunks(&partial[chunks, 0], chunks, C, &sum_grad_xhat[0])


def normalize(const floating[:, ::1] x, const double[::1] mean, const double[::1] scale,
              const double[::1] offset, floating[:, ::1] out, Py_ssize_t chunk,
              int num_threads):
    """out[r, c] = (x[r, c] - mean[c]) * scale[c] + offset[c], in double, rounded once."""
    cdef Py_ssize_t M = x.shape[0], C = x.shape[1], k, r, c, end
    with nogil:
        for k in prange(n_chunks(M, chunk), num_threads=num_threads, schedule="static"):
            end = min(M, (k + 1) * chunk)
            for r in range(k * chunk, end):
                for c in range(C):
                    out[r, c] = <floating>((<double>x[r, c] - mean[c]) * scale[c] + offset[c])


def backward_input(const floating[:, ::1] x, const floating[:, ::1] grad,
                   const double[::1] mean, const double[::1] inv_std,
                   const double[::1] scale, const double[::1] mean_grad,
                   const double[::1] mean_grad_xhat, floating[:, ::1] out, Py_ssize_t chunk,
                   int num_threads):
    """out = scale * (grad - mean_grad - xhat * mean_grad_xhat), xhat = (x - mean) *
    inv_std, per channel, in double, rounded once: the closed form of the input gradient
    of batch normalisation (scale = gamma * inv_std; mean_grad and mean_grad_xhat are
    the channel sums of backward_sums divided by M)."""
    cdef Py_ssize_t M = x.shape[0], C = x.shape[1], k, r, c, end
    cdef double xhat
    with nogil:
        for k in prange(n_chunks(M, chunk), num_threads=num_threads, schedule="static"):
            end = min(M, (k + 1) * chunk)
            for r in range(k * chunk, end):
                for c in range(C):
                    xhat = (<double>x[r, c] - mean[c]) * inv_std[c]
                    out[r, c] = <floating>(scale[c] * ((<double>grad[r, c] - mean_grad[c])
                                                       - xhat * mean_grad_xhat[c]))
