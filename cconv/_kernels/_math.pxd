# Scalar math shared by the kernel modules. Inline, so that loops calling it vectorise
# (with -ffast-math, glibc's libmvec supplies SIMD tanh).
from cython cimport floating
from libc.math cimport tanh, tanhf

cdef enum Activation:
    ACT_LINEAR = 0
    ACT_TANH = 1
    ACT_RELU = 2


cdef inline floating tanh_of(floating v) noexcept nogil:
    if floating is float:
        return tanhf(v)
    else:
        return tanh(v)


cdef inline void activate(floating* a, Py_ssize_t n, int act) noexcept nogil:
    """Apply an activation in place to a[0:n]."""
    cdef Py_ssize_t i
    if act == ACT_TANH:
        for i in range(n):
            a[i] = tanh_of(a[i])
    elif act == ACT_RELU:
        for i in range(n):
            a[i] = a[i] if a[i] > 0 else 0
