"""Optimizer updates, elementwise over flat C-contiguous arrays.

One pass reads the gradient once and updates both moments and the parameter while they
are in registers; numpy would make six passes over memory with temporaries. The
arithmetic is deliberately unfused (the build passes -ffp-contract=off; no fma is
written), with IEEE division and square root, each element on its own: every level, the
x86-64 default included, and every vector width give the same bits (an fma would differ
on the default level, and the step is bound by memory, not arithmetic).
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt, sqrtf

cdef Py_ssize_t BLOCK = 4096


cdef inline floating root(floating v) noexcept nogil:
    if floating is float:
        return sqrtf(v)
    else:
        return sqrt(v)


def adam_update(floating[::1] param, const floating[::1] grad, floating[::1] m,
                floating[::1] v, floating alpha, floating one_minus_beta_1,
                floating one_minus_beta_2, floating epsilon, int num_threads):
    """Keras's Adam step, in place:
        m += (g - m) * (1 - beta_1);  v += (g*g - v) * (1 - beta_2)
        param -= alpha * m / (sqrt(v) + epsilon)
    with alpha = lr * sqrt(1 - beta_2**t) / (1 - beta_1**t) computed by the caller."""
    cdef Py_ssize_t n = param.shape[0], n_blocks = (n + BLOCK - 1) // BLOCK
    cdef Py_ssize_t blk, i
    cdef floating g, mi, vi
    with nogil:
        for blk in prange(n_blocks, num_threads=num_threads, schedule="static"):
            for i in range(blk * BLOCK, min(n, (blk + 1) * BLOCK)):
                g = grad[i]
                mi = m[i] + (g - m[i]) * one_minus_beta_1
                vi = v[i] + (g * g - v[i]) * one_minus_beta_2
                m[i] = mi
                v[i] = vi
                param[i] = param[i] - alpha * mi / (root(vi) + epsilon)
