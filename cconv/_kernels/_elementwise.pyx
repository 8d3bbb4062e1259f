"""Elementwise kernels over flat, C-contiguous arrays: the activations, dropout.

Work is cut into fixed blocks of BLOCK elements, handed out dynamically, so that on a
busy machine a thread the OS pauses holds up no one. Every element's result depends on
that element alone, in the same operations at any vector width: the activations are
_activations.pxd's, on the SIMD layer (a scalar is one lane of the vector form), the
rest is plain IEEE arithmetic that the compiler vectorises without fusing or reordering
it, and the dropout hash is integer arithmetic. So results do not depend on the thread
count, on the vector width, or (except the activations whose fma is two roundings on
the x86-64 default level) on the CPU level.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport ceil
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memset

from cconv._kernels._activations cimport act_backward, act_forward, check_activation_code
from cconv._kernels._codes cimport ACT_ELU
from cconv._kernels._simd cimport keep_scaled

cdef Py_ssize_t BLOCK = 4096


cdef inline Py_ssize_t n_blocks(Py_ssize_t n) noexcept nogil:
    return (n + BLOCK - 1) // BLOCK


def activation_forward(int code, const floating[::1] x, floating[::1] out, int num_threads):
    """out = act(x) for the activation whose code is `code`."""
    cdef Py_ssize_t n = x.shape[0], blk, end
    check_activation_code(code)
    with nogil:
        for blk in prange(n_blocks(n), num_threads=num_threads, schedule="dynamic"):
            end = min(n, (blk + 1) * BLOCK)
            act_forward(code, &x[blk * BLOCK], &out[blk * BLOCK], end - blk * BLOCK)


def activation_backward(int code, const floating[::1] s, const floating[::1] grad_out,
                        floating[::1] out, int num_threads):
    """out = grad_out * act'(.), given s: the activation's input or its output, as its
    row in cconv/activations.py's table says."""
    cdef Py_ssize_t n = s.shape[0], blk, end
    check_activation_code(code)
    with nogil:
        for blk in prange(n_blocks(n), num_threads=num_threads, schedule="dynamic"):
            end = min(n, (blk + 1) * BLOCK)
            act_backward(code, &s[blk * BLOCK], &grad_out[blk * BLOCK], &out[blk * BLOCK],
                         end - blk * BLOCK)


def relu_general_forward(const floating[::1] x, floating[::1] out, floating negative_slope,
                         floating max_value, floating threshold, int num_threads):
    """Keras's relu with its options: min(x, max_value) where x > threshold, else
    negative_slope * (x - threshold) (a plain 0 when negative_slope is 0); max_value inf
    caps nothing."""
    cdef Py_ssize_t n = x.shape[0], blk, i, end
    cdef floating v
    with nogil:
        for blk in prange(n_blocks(n), num_threads=num_threads, schedule="dynamic"):
            end = min(n, (blk + 1) * BLOCK)
            for i in range(blk * BLOCK, end):
                v = x[i]
                if v > threshold:
                    out[i] = v if v < max_value else max_value
                elif negative_slope == 0:
                    out[i] = 0
                else:
                    out[i] = negative_slope * (v - threshold)


def relu_general_backward(const floating[::1] x, const floating[::1] grad_out,
                          floating[::1] out, floating negative_slope, floating max_value,
                          floating threshold, int num_threads):
    """grad_out through relu_general_forward, given its input x: 1 strictly between the
    threshold and max_value, 0 at or above max_value, negative_slope at or below the
    threshold."""
    cdef Py_ssize_t n = x.shape[0], blk, i, end
    cdef floating v
    with nogil:
        for blk in prange(n_blocks(n), num_threads=num_threads, schedule="dynamic"):
            end = min(n, (blk + 1) * BLOCK)
            for i in range(blk * BLOCK, end):
                v = x[i]
                if v > threshold:
                    out[i] = grad_out[i] if v < max_value else 0
                else:
                    out[i] = grad_out[i] * negative_slope


def elu_forward(const floating[::1] x, floating[::1] out, floating alpha, int num_threads):
    """Keras's elu(x, alpha): x above 0, alpha * expm1(x) at or below it; the table's elu
    (alpha 1), scaled, a block at a time while it is in cache."""
    cdef Py_ssize_t n = x.shape[0], blk, i, end
    with nogil:
        for blk in prange(n_blocks(n), num_threads=num_threads, schedule="dynamic"):
            end = min(n, (blk + 1) * BLOCK)
            act_forward(ACT_ELU, &x[blk * BLOCK], &out[blk * BLOCK], end - blk * BLOCK)
            for i in range(blk * BLOCK, end):
                if not x[i] > 0:
                    out[i] = alpha * out[i]


def elu_backward(const floating[::1] x, const floating[::1] grad_out, floating[::1] out,
                 floating alpha, int num_threads):
    """grad_out through elu_forward given its input x: grad_out above 0, alpha times the
    table's elu gradient (grad_out * exp(x)) at or below it."""
    cdef Py_ssize_t n = x.shape[0], blk, i, end
    with nogil:
        for blk in prange(n_blocks(n), num_threads=num_threads, schedule="dynamic"):
            end = min(n, (blk + 1) * BLOCK)
            act_backward(ACT_ELU, &x[blk * BLOCK], &grad_out[blk * BLOCK], &out[blk * BLOCK],
                         end - blk * BLOCK)
            for i in range(blk * BLOCK, end):
                if not x[i] > 0:
                    out[i] = alpha * out[i]


cdef inline uint64_t mix64(uint64_t z) noexcept nogil:
    # SplitMix64's finaliser: a bijection that scatters consecutive counters.
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EB
    return z ^ (z >> 31)


cdef inline uint32_t mix32(uint32_t z) noexcept nogil:
    # A 32-bit bijective finaliser (xor-shift-multiply): its multiplies are 32-bit, which
    # AVX2 does eight at a time, where mix64's 64-bit multiplies have no vector form.
    z = (z ^ (z >> 16)) * <uint32_t>0x7FEB352D
    z = (z ^ (z >> 15)) * <uint32_t>0x846CA68B
    return z ^ (z >> 16)


cdef void draw_block(uint8_t* mask, uint32_t n, uint32_t lo, uint32_t k0, uint32_t k1,
                     uint32_t thr32) noexcept nogil:
    """mask[j] = keep-bit of the element whose low 32 bits are lo + j: a plain loop with
    a 32-bit counter, which gcc vectorises eight lanes wide."""
    cdef uint32_t j
    for j in range(n):
        mask[j] = (mix32((lo + <uint32_t>j) * <uint32_t>0x9E3779B9 + k0) ^ k1) >= thr32


def dropout(uint64_t seed, double rate, uint8_t[::1] mask, const floating[::1] x,
            floating scale, floating[::1] out, int num_threads):
    """mask[i] = 1 to keep element i, 0 to drop it, with P(drop) = rate; then, unless x is
    empty, out = x * scale where kept, else 0, each block while its mask is in cache.

    Counter-based: element i's draw depends only on (seed, i), so masks are the same for
    any thread count and cconv.oracle.dropout_mask can rebuild them in NumPy. A 64-bit
    key, mix64 of the seed and of i's high 32 bits, is split in two halves k0 and k1; the
    draw is the 32-bit d = mix32(lo * 0x9E3779B9 + k0) ^ k1, lo being i's low 32 bits.
    Element i is kept when d / 2**32 >= rate, that is when d >= ceil(rate * 2**32).
    """
    cdef Py_ssize_t n = mask.shape[0], blk, start, length
    cdef bint apply = x.shape[0] > 0
    cdef uint64_t base = mix64(seed)
    cdef uint64_t threshold = <uint64_t>ceil(rate * 4294967296.0)
    cdef uint64_t key
    with nogil:
        for blk in prange(n_blocks(n), num_threads=num_threads, schedule="dynamic"):
            start = blk * BLOCK
            length = min(n, start + BLOCK) - start
            if threshold > <uint64_t>0xFFFFFFFF:  # rate so near 1 that no draw reaches it
                memset(&mask[start], 0, length)
            else:
                # BLOCK divides 2**32: i's high half is the same across a block.
                key = mix64(base + (<uint64_t>start >> 32) * <uint64_t>0xD1B54A32D192ED03)
                draw_block(&mask[start], <uint32_t>length, <uint32_t>start, <uint32_t>key,
                           <uint32_t>(key >> 32), <uint32_t>threshold)
            if apply:
                keep_scaled(&x[start], &mask[start], scale, &out[start], length)


def dropout_apply(const floating[::1] x, const uint8_t[::1] mask, floating scale,
                  floating[::1] out, int num_threads):
    """out = x * scale where mask is 1, else 0: dropout with a given mask, and its
    backward pass."""
    cdef Py_ssize_t n = x.shape[0], blk, start
    with nogil:
        for blk in prange(n_blocks(n), num_threads=num_threads, schedule="dynamic"):
            start = blk * BLOCK
            keep_scaled(&x[start], &mask[start], scale, &out[start], min(n, start + BLOCK) - start)
