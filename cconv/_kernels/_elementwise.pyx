"""Elementwise kernels over flat, C-contiguous arrays: tanh, relu, dropout.

Work is cut into fixed blocks of BLOCK elements. The compiler vectorises the body of a
block and finishes its tail with scalar code, which can round differently; with fixed
blocks every element takes the same path whatever the thread count. Blocks are handed
out dynamically, so that on a busy machine a thread the OS pauses holds up no one.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport ceil
from libc.stdint cimport uint8_t, uint64_t

from cconv._kernels._math cimport tanh_f32_array, tanh_of

cdef Py_ssize_t BLOCK = 4096


cdef inline Py_ssize_t n_blocks(Py_ssize_t n) noexcept nogil:
    return (n + BLOCK - 1) // BLOCK


def tanh_forward(const floating[::1] x, floating[::1] out, int num_threads):
    cdef Py_ssize_t n = x.shape[0], blk, i, end
    with nogil:
        for blk in prange(n_blocks(n), num_threads=num_threads, schedule="dynamic"):
            end = min(n, (blk + 1) * BLOCK)
            if floating is float:
                tanh_f32_array(&x[blk * BLOCK], &out[blk * BLOCK], end - blk * BLOCK)
            else:
                for i in range(blk * BLOCK, end):
                    out[i] = tanh_of(x[i])


def tanh_backward(const floating[::1] y, const floating[::1] grad_out, floating[::1] out,
                  int num_threads):
    """out = grad_out * (1 - y**2), where y = tanh(z) from the forward pass."""
    cdef Py_ssize_t n = y.shape[0], blk, i, end
    with nogil:
        for blk in prange(n_blocks(n), num_threads=num_threads, schedule="dynamic"):
            end = min(n, (blk + 1) * BLOCK)
            for i in range(blk * BLOCK, end):
                out[i] = grad_out[i] * (1 - y[i] * y[i])


def relu_forward(const floating[::1] x, floating[::1] out, int num_threads):
    cdef Py_ssize_t n = x.shape[0], blk, i, end
    with nogil:
        for blk in prange(n_blocks(n), num_threads=num_threads, schedule="dynamic"):
            end = min(n, (blk + 1) * BLOCK)
            for i in range(blk * BLOCK, end):
                out[i] = x[i] if x[i] > 0 else 0


def relu_backward(const floating[::1] y, const floating[::1] grad_out, floating[::1] out,
                  int num_threads):
    """out = grad_out where the forward output y was positive, else 0."""
    cdef Py_ssize_t n = y.shape[0], blk, i, end
    cdef floating g
    with nogil:
        for blk in prange(n_blocks(n), num_threads=num_threads, schedule="dynamic"):
            end = min(n, (blk + 1) * BLOCK)
            for i in range(blk * BLOCK, end):
                g = grad_out[i]  # read unconditionally, as in dropout_apply
                out[i] = g if y[i] > 0 else 0


cdef inline uint64_t mix64(uint64_t z) noexcept nogil:
    # SplitMix64's finaliser: a bijection that scatters consecutive counters.
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EB
    return z ^ (z >> 31)


def dropout_mask(uint64_t seed, double rate, uint8_t[::1] mask, int num_threads):
    """mask[i] = 1 to keep element i, 0 to drop it, with P(drop) = rate.

    Counter-based: element i's draw depends only on (seed, i), so masks are the same for
    any thread count and cconv.oracle.dropout_mask can rebuild them in NumPy. The draw
    is a 53-bit integer k, kept when k / 2**53 >= rate, that is when k >= ceil(rate * 2**53)
    (exact: both sides are integers below 2**53); integer compares vectorise, and the
    conversion to double does not.
    """
    cdef Py_ssize_t n = mask.shape[0], blk, i, end
    cdef uint64_t base = mix64(seed)
    cdef uint64_t threshold = <uint64_t>ceil(rate * 9007199254740992.0)
    with nogil:
        for blk in prange(n_blocks(n), num_threads=num_threads, schedule="dynamic"):
            end = min(n, (blk + 1) * BLOCK)
            for i in range(blk * BLOCK, end):
                mask[i] = (mix64(base + <uint64_t>i * <uint64_t>0x9E3779B97F4A7C15) >> 11) \
                    >= threshold


def dropout_apply(const floating[::1] x, const uint8_t[::1] mask, floating scale,
                  floating[::1] out, int num_threads):
    """out = x * scale where mask is 1, else 0. Serves the forward and the backward pass."""
    cdef Py_ssize_t n = x.shape[0], blk, i, end
    cdef floating v
    with nogil:
        for blk in prange(n_blocks(n), num_threads=num_threads, schedule="dynamic"):
            end = min(n, (blk + 1) * BLOCK)
            for i in range(blk * BLOCK, end):
                # Read x unconditionally: a select vectorises, a conditional load does not.
                v = x[i] * scale
                out[i] = v if mask[i] else 0
