"""numpy's legacy random stream (np.random.RandomState, MT19937), drawn here so that a
script written against np.random can be replayed draw for draw without numpy's cost
per value. Written from the MT19937 definition (Matsumoto and Nishimura, 1998) and
checked against numpy's output in tests/ops/test_random.py.

Every array here has been checked by cconv.ops. Bounds checks are off.
"""
from libc.stdint cimport uint8_t, uint32_t

cdef enum:
    MT_N = 624
    MT_M = 397

cdef uint32_t MATRIX_A = 0x9908b0df
cdef uint32_t UPPER = 0x80000000
cdef uint32_t LOWER = 0x7fffffff
cdef uint32_t TEMPER_B = 0x9d2c5680
cdef uint32_t TEMPER_C = 0xefc60000


cdef inline uint32_t twisted(uint32_t upper_of, uint32_t lower_of, uint32_t far) noexcept nogil:
    cdef uint32_t y = (upper_of & UPPER) | (lower_of & LOWER)
    return far ^ (y >> 1) ^ ((<uint32_t>0 - (y & 1)) & MATRIX_A)


cdef void twist(uint32_t* mt) noexcept nogil:
    """The next 624 words of state from the last 624."""
    cdef Py_ssize_t i
    for i in range(MT_N - MT_M):
        mt[i] = twisted(mt[i], mt[i + 1], mt[i + MT_M])
    for i in range(MT_N - MT_M, MT_N - 1):
        mt[i] = twisted(mt[i], mt[i + 1], mt[i + MT_M - MT_N])
    mt[MT_N - 1] = twisted(mt[MT_N - 1], mt[0], mt[MT_M - 1])


def low_bits(uint32_t[::1] key, Py_ssize_t pos, uint8_t[::1] out):
    """out[i] = the lowest bit of the next 32-bit output of MT19937 at state (key, pos):
    the values RandomState.randint(2) draws, one output each. key (624 words) is advanced
    in place; returns the new pos."""
    cdef Py_ssize_t n = out.shape[0], i = 0, j, take
    cdef uint32_t y
    with nogil:
        while i < n:
            if pos >= MT_N:
                twist(&key[0])
                pos = 0
            take = min(n - i, MT_N - pos)
            for j in range(take):
                # MT19937's tempering, of which only bit 0 is kept
                y = key[pos + j]
                y ^= y >> 11
                y ^= (y << 7) & TEMPER_B
                y ^= (y << 15) & TEMPER_C
                y ^= y >> 18
                out[i + j] = y & 1
            i += take
            pos += take
    return pos
