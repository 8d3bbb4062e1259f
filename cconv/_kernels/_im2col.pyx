"""Patch gathering for the strided and dilated convolutions (cconv.ops.conv routes them
here; stride 1 without dilation keeps the frame-reading kernels of _gemm and _conv_1ch).

im2col copies, for each output pixel of a group of images, its receptive field (KH x KW
taps, DH and DW apart, each tap C contiguous channels) into one row of a patch matrix;
taps in the padding are zeros. The products are then _gemm.gemm's. col2im is its
adjoint: it adds each row of a patch-gradient matrix back onto the pixels the row came
from.

Determinism: col2im gathers by input row (one image, one row of pixels): each row is
written by one thread only, and every pixel adds its contributions in one fixed order
(output row, output column, tap column ascending), whatever the thread count. The adds
go through the SIMD layer lane by lane, so every level gives the same bits.

Every array here has been checked by cconv.ops; bounds checks are off.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memcpy, memset

from cconv._kernels._runs cimport add_run


def im2col(const floating[:, :, :, ::1] x, floating[:, ::1] cols, Py_ssize_t n0,
           Py_ssize_t OH, Py_ssize_t OW, int kh, int kw, int sh, int sw, int dh, int dw,
           int top, int left, int num_threads):
    """cols[(g * OH + oy) * OW + ox, (ky * KW + kx) * C + c] =
    x[n0 + g, oy * SH - top + ky * DH, ox * SW - left + kx * DW, c], 0 outside the image,
    for the images n0, n0 + 1, ... that fill cols's rows. One output row per task."""
    cdef Py_ssize_t H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t rows = cols.shape[0] // OW
    cdef Py_ssize_t r, g, oy, ox, ky, kx, iy, ix
    cdef floating* dst
    cdef const floating* src
    with nogil:
        for r in prange(rows, num_threads=num_threads, schedule="static"):
            g = r // OH
            oy = r - g * OH
            for ox in range(OW):
                dst = &cols[r * OW + ox, 0]
                for ky in range(kh):
                    iy = oy * sh - top + ky * dh
                    if iy < 0 or iy >= H:
                        memset(dst + ky * kw * C, 0, kw * C * sizeof(floating))
                        continue
                    src = &x[n0 + g, iy, 0, 0]
                    for kx in range(kw):
                        ix = ox * sw - left + kx * dw
                        if ix < 0 or ix >= W:
                            memset(dst + (ky * kw + kx) * C, 0, C * sizeof(floating))
                        else:
                            memcpy(dst + (ky * kw + kx) * C, src + ix * C,
                                   C * sizeof(floating))


def col2im(const floating[:, ::1] cols, floating[:, :, :, ::1] grad_x, Py_ssize_t n0,
           Py_ssize_t OH, Py_ssize_t OW, int kh, int kw, int sh, int sw, int dh, int dw,
           int top, int left, int num_threads):
    """grad_x[n0 + g] = the sum, over every row of cols (laid out as im2col's) and tap,
    of that tap's C values at the pixel it was gathered from; taps in the padding are
    dropped. One row of input pixels per task, which it zeroes then fills."""
    cdef Py_ssize_t H = grad_x.shape[1], W = grad_x.shape[2], C = grad_x.shape[3]
    cdef Py_ssize_t images = cols.shape[0] // (OH * OW)
    cdef Py_ssize_t t, g, iy, oy, ky, ox, kx, ix, dy
    cdef floating* dst
    cdef const floating* src
    with nogil:
        for t in prange(images * H, num_threads=num_threads, schedule="static"):
            g = t // H
            iy = t - g * H
            dst = &grad_x[n0 + g, iy, 0, 0]
            memset(dst, 0, W * C * sizeof(floating))
            for oy in range(OH):
                dy = iy + top - oy * sh  # = ky * DH for the tap that reads row iy
                if dy < 0 or dy % dh != 0 or dy // dh >= kh:
                    continue
                ky = dy // dh
                for ox in range(OW):
                    src = &cols[(g * OH + oy) * OW + ox, ky * kw * C]
                    for kx in range(kw):
                        ix = ox * sw - left + kx * dw
                        if 0 <= ix < W:
                            add_run(dst + ix * C, src + kx * C, C)
