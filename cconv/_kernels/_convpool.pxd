# The max-pooling epilogue of the fused convolution + pooling kernels (_gemm's
# conv_pool_forward, _conv_1ch's conv2d_pool_forward): the convolution writes a band of its
# activated output rows into a small per-thread buffer, and this pools the band into the
# output, so the full-size convolution output never goes to memory. The same rule as
# _pool.max_pool_forward: windows clipped to the image, ties to the first in row-major
# order, argmax as the flat index (y * OW + x) * F + f within the convolution's image.
from cython cimport floating
from libc.stdint cimport int32_t


cdef inline void pool_2x2(const floating* p, Py_ssize_t row, Py_ssize_t F, int32_t base,
                          int32_t below, floating* o, int32_t* a) noexcept nogil:
    """A whole 2x2 window, the usual case, in one pass over the channels: its pixels
    at p, p + F, p + row and p + row + F, flat indices base, base + F, below and
    below + F. The comparisons are pool_rows's, in the same order."""
    cdef Py_ssize_t c
    cdef floating m, v
    cdef int32_t i
    cdef bint t
    if a != NULL:
        for c in range(F):
            m = p[c]
            i = base
            v = p[F + c]
            t = v > m
            m = v if t else m
            i = base + <int32_t>F if t else i
            v = p[row + c]
            t = v > m
            m = v if t else m
            i = below if t else i
            v = p[row + F + c]
            t = v > m
            m = v if t else m
            i = below + <int32_t>F if t else i
            o[c] = m
            a[c] = i + <int32_t>c
    else:
        for c in range(F):
            m = p[c]
            v = p[F + c]
            m = v if v > m else m
            v = p[row + c]
            m = v if v > m else m
            v = p[row + F + c]
            m = v if v > m else m
            o[c] = m


cdef inline void pool_rows(const floating* band, Py_ssize_t r0, Py_ssize_t OH,
                           Py_ssize_t OW, Py_ssize_t F, Py_ssize_t oy0, Py_ssize_t oy1,
                           Py_ssize_t POW, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t pool_top,
                           Py_ssize_t pool_left, floating* out,
                           int32_t* argmax) noexcept nogil:
    """Pooled rows oy0..oy1 of one image into out (POH, POW, F) and, unless NULL, argmax.
    band holds the convolution's rows r0, r0 + 1, ... (OW x F each) that their windows
    cover; OH x OW is the size of the whole convolution output."""
    cdef Py_ssize_t oy, ox, y0, y1, x0, x1, yy, xx, c
    cdef int32_t base
    cdef bint better
    cdef const floating* p
    cdef floating* o
    cdef int32_t* a = NULL
    for oy in range(oy0, oy1):
        y0 = max(oy * ph - pool_top, 0)
        y1 = min(oy * ph - pool_top + ph, OH)
        for ox in range(POW):
            x0 = max(ox * pw - pool_left, 0)
            x1 = min(ox * pw - pool_left + pw, OW)
            o = out + (oy * POW + ox) * F
            p = band + ((y0 - r0) * OW + x0) * F
            if y1 - y0 == 2 and x1 - x0 == 2:
                base = <int32_t>((y0 * OW + x0) * F)
                pool_2x2(p, OW * F, F, base, base + <int32_t>(OW * F), o,
                         argmax + (oy * POW + ox) * F if argmax != NULL else NULL)
                continue
            for c in range(F):
                o[c] = p[c]
            if argmax != NULL:
                a = argmax + (oy * POW + ox) * F
                base = <int32_t>((y0 * OW + x0) * F)
                for c in range(F):
                    a[c] = base + <int32_t>c
            for yy in range(y0, y1):
                for xx in range(x0, x1):
                    if yy == y0 and xx == x0:
                        continue
                    p = band + ((yy - r0) * OW + xx) * F
                    if argmax != NULL:
                        # Branch-free, so that the compiler vectorises over channels.
                        base = <int32_t>((yy * OW + xx) * F)
                        for c in range(F):
                            better = p[c] > o[c]
                            o[c] = p[c] if better else o[c]
                            a[c] = base + <int32_t>c if better else a[c]
                    else:
                        for c in range(F):
                            o[c] = p[c] if p[c] > o[c] else o[c]


ctypedef (Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t) Band


cdef inline Band band_of(Py_ssize_t band, Py_ssize_t band_rows, Py_ssize_t POH, Py_ssize_t OH,
                         Py_ssize_t ph, Py_ssize_t pool_top) noexcept nogil:
    """(oy0, oy1, r0, r1) of band `band` of an image: pooled rows [oy0, oy1), band_rows
    of them (fewer at the end), and the convolution rows [r0, r1) their windows cover.
    Rows in no window ('valid' pooling's leftovers) are in no band and never computed.
    Returned, not written through pointers, so that prange sees the targets assigned
    and makes them private."""
    cdef Py_ssize_t oy0 = band * band_rows
    cdef Py_ssize_t oy1 = min(oy0 + band_rows, POH)
    return oy0, oy1, max(oy0 * ph - pool_top, 0), min(oy1 * ph - pool_top, OH)
