# Runs of contiguous values (a pixel's channels) added element by element on the SIMD
# layer: lane by lane, so every level and vector width gives the same bits. Shared by
# the strided convolutions' col2im (_im2col) and the average pooling (_pool).
from cython cimport floating

from cconv._kernels._simd cimport (VD_LANES, VF_LANES, vd_add, vd_load, vd_store, vf_add,
                                   vf_load, vf_store)


cdef inline void add_run(floating* dst, const floating* src, Py_ssize_t n) noexcept nogil:
    """dst[0:n] += src[0:n]."""
    cdef Py_ssize_t i = 0
    if floating is float:
        while i + VF_LANES <= n:
            vf_store(dst + i, vf_add(vf_load(dst + i), vf_load(src + i)))
            i += VF_LANES
    else:
        while i + VD_LANES <= n:
            vd_store(dst + i, vd_add(vd_load(dst + i), vd_load(src + i)))
            i += VD_LANES
    while i < n:
        dst[i] = dst[i] + src[i]
        i += 1
