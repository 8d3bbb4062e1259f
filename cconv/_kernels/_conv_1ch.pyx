"""2-D convolution of single-channel images (C == 1), channels-last: x (N, H, W, 1),
kernels (KH, KW, 1, F), out (N, OH, OW, F); also fused with max pooling (pooled out)
and with a following dense layer (logits out). Images with more channels go through
_gemm.

Stride 1. Padding is given as the number of zero rows above and columns left of the
image (0 for 'valid', (K-1)//2 for 'same').

Every array here has been checked by cconv.ops: shapes agree, dtypes match, memory is
C-contiguous. Bounds checks are off.
"""
from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.stdint cimport int32_t

from cconv._kernels._convpool cimport band_of, pool_rows
from cconv._kernels._codes cimport ACT_LINEAR, ACT_RELU, ACT_TANH
from cconv._kernels._simd cimport (activate, activation_of,
                                   vd, vd_add, vd_load, vd_madd, vd_store, vd_zero,
                                   VD_LANES, vf, vf_add, vf_load, vf_madd, vf_store,
                                   vf_tanh, vf_zero, VF_LANES)
from cconv._kernels._simd cimport vd_fma, vf_fma


cdef enum:
    PX = 4  # output pixels per register block of the single-channel path


# The single-channel micro-kernels: PX neighbouring output pixels of one row times two
# SIMD vectors of filters, summed in 2 * PX registers. Each kernel tap loads the block's
# weights once and multiplies them into all PX pixels; the independent sums hide the
# FMA latency. xr points at the first pixel's window corner, w at the block's first
# filter. Sums add the taps in (ky, kx) order, then the bias, like gray_pixels.
cdef inline void gray_block_f32(const float* xr, Py_ssize_t Wp, const float* w,
                                Py_ssize_t F, Py_ssize_t KH, Py_ssize_t KW, const float* b,
                                float* o, int act) noexcept nogil:
    cdef vf a00 = vf_zero(), a01 = vf_zero(), a10 = vf_zero(), a11 = vf_zero()
    cdef vf a20 = vf_zero(), a21 = vf_zero(), a30 = vf_zero(), a31 = vf_zero()
    cdef vf w0, w1
    cdef const float* xt
    cdef const float* wt
    cdef Py_ssize_t ky, kx, p
    for ky in range(KH):
        xt = xr + ky * Wp
        wt = w + ky * KW * F
        for kx in range(KW):
            w0 = vf_load(wt)
            w1 = vf_load(wt + VF_LANES)
            a00 = vf_madd(xt[0], w0, a00)
            a01 = vf_madd(xt[0], w1, a01)
            a10 = vf_madd(xt[1], w0, a10)
            a11 = vf_madd(xt[1], w1, a11)
            a20 = vf_madd(xt[2], w0, a20)
            a21 = vf_madd(xt[2], w1, a21)
            a30 = vf_madd(xt[3], w0, a30)
            a31 = vf_madd(xt[3], w1, a31)
            xt += 1
            wt += F
    if b != NULL:
        w0 = vf_load(b)
        w1 = vf_load(b + VF_LANES)
        a00, a01, a10, a11 = vf_add(a00, w0), vf_add(a01, w1), vf_add(a10, w0), vf_add(a11, w1)
        a20, a21, a30, a31 = vf_add(a20, w0), vf_add(a21, w1), vf_add(a30, w0), vf_add(a31, w1)
    if act == ACT_TANH:
        # Eight independent evaluations side by side keep every FP pipe busy.
        a00, a01, a10, a11 = vf_tanh(a00), vf_tanh(a01), vf_tanh(a10), vf_tanh(a11)
        a20, a21, a30, a31 = vf_tanh(a20), vf_tanh(a21), vf_tanh(a30), vf_tanh(a31)
    vf_store(o, a00)
    vf_store(o + VF_LANES, a01)
    vf_store(o + F, a10)
    vf_store(o + F + VF_LANES, a11)
    vf_store(o + 2 * F, a20)
    vf_store(o + 2 * F + VF_LANES, a21)
    vf_store(o + 3 * F, a30)
    vf_store(o + 3 * F + VF_LANES, a31)
    if act == ACT_RELU:
        for p in range(PX):
            activate(o + p * F, 2 * VF_LANES, act)


cdef inline void gray_block_f64(const double* xr, Py_ssize_t Wp, const double* w,
                                Py_ssize_t F, Py_ssize_t KH, Py_ssize_t KW, const double* b,
                                double* o) noexcept nogil:
    cdef vd a00 = vd_zero(), a01 = vd_zero(), a10 = vd_zero(), a11 = vd_zero()
    cdef vd a20 = vd_zero(), a21 = vd_zero(), a30 = vd_zero(), a31 = vd_zero()
    cdef vd w0, w1
    cdef const double* xt
    cdef const double* wt
    cdef Py_ssize_t ky, kx, p
    for ky in range(KH):
        xt = xr + ky * Wp
        wt = w + ky * KW * F
        for kx in range(KW):
            w0 = vd_load(wt)
            w1 = vd_load(wt + VD_LANES)
            a00 = vd_madd(xt[0], w0, a00)
            a01 = vd_madd(xt[0], w1, a01)
            a10 = vd_madd(xt[1], w0, a10)
            a11 = vd_madd(xt[1], w1, a11)
            a20 = vd_madd(xt[2], w0, a20)
            a21 = vd_madd(xt[2], w1, a21)
            a30 = vd_madd(xt[3], w0, a30)
            a31 = vd_madd(xt[3], w1, a31)
            xt += 1
            wt += F
    if b != NULL:
        w0 = vd_load(b)
        w1 = vd_load(b + VD_LANES)
        a00, a01, a10, a11 = vd_add(a00, w0), vd_add(a01, w1), vd_add(a10, w0), vd_add(a11, w1)
        a20, a21, a30, a31 = vd_add(a20, w0), vd_add(a21, w1), vd_add(a30, w0), vd_add(a31, w1)
    vd_store(o, a00)
    vd_store(o + VD_LANES, a01)
    vd_store(o + F, a10)
    vd_store(o + F + VD_LANES, a11)
    vd_store(o + 2 * F, a20)
    vd_store(o + 2 * F + VD_LANES, a21)
    vd_store(o + 3 * F, a30)
    vd_store(o + 3 * F + VD_LANES, a31)


cdef inline void gray_pixels(const floating* xr, Py_ssize_t Wp, const floating* w,
                             Py_ssize_t F, Py_ssize_t KH, Py_ssize_t KW, const floating* b,
                             floating* o, Py_ssize_t n_px, Py_ssize_t nf,
                             int act) noexcept nogil:
    """n_px pixels times nf filters one sum at a time: what the blocks leave over."""
    cdef Py_ssize_t ky, kx, p, j
    cdef floating s
    for p in range(n_px):
        for j in range(nf):
            s = 0
            for ky in range(KH):
                for kx in range(KW):
                    s = s + xr[p + ky * Wp + kx] * w[(ky * KW + kx) * F + j]
            if b != NULL:
                s = s + b[j]
            o[p * F + j] = activation_of(s, act)


cdef void forward_image_gray(const floating* x, const floating* w, const floating* b,
                             floating* out, floating* work, Py_ssize_t H, Py_ssize_t W,
                             Py_ssize_t KH, Py_ssize_t KW, Py_ssize_t F,
                             Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t pad_top,
                             Py_ssize_t pad_left, int act) noexcept nogil:
    """One single-channel image, written channels-last directly, row by row: blocks of
    PX pixels times fb filters (gray_block_*), the leftover filters one by one, each
    activated before it is stored. When OW is not a multiple of PX, the row's last block
    overlaps the one before it and writes the same values again. 'same'
    padding reads a zero-padded copy of the image in work (Hp * Wp), so no tap needs a
    bounds test; 'valid' reads x itself."""
    cdef Py_ssize_t Hp = OH + KH - 1, Wp = OW + KW - 1
    cdef Py_ssize_t fb = 2 * VF_LANES if floating is float else 2 * VD_LANES
    # float32 is activated in registers; float64 tanh is libmvec's, which wants long
    # runs, so float64 rows are activated whole, while in cache.
    cdef int act_in = act if floating is float else ACT_LINEAR
    cdef const floating* frame = x
    cdef const floating* xr
    cdef const floating* bf
    cdef floating* orow
    cdef Py_ssize_t i, y, xx, oy, ox, f0
    if pad_top != 0 or pad_left != 0 or Hp != H or Wp != W:
        for i in range(Hp * Wp):
            work[i] = 0
        for y in range(H):
            for xx in range(W):
                work[(y + pad_top) * Wp + xx + pad_left] = x[y * W + xx]
        frame = work
    for oy in range(OH):
        xr = frame + oy * Wp
        orow = out + oy * OW * F
        f0 = 0
        while f0 + fb <= F:
            bf = b + f0 if b != NULL else NULL
            if OW < PX:
                gray_pixels(xr, Wp, w + f0, F, KH, KW, bf, orow + f0, OW, fb, act_in)
            else:
                ox = 0
                while True:
                    ox = min(ox, OW - PX)
                    if floating is float:
                        gray_block_f32(xr + ox, Wp, w + f0, F, KH, KW, bf, orow + ox * F + f0,
                                       act_in)
                    else:
                        gray_block_f64(xr + ox, Wp, w + f0, F, KH, KW, bf, orow + ox * F + f0)
                    if ox == OW - PX:
                        break
                    ox += PX
            f0 += fb
        if f0 < F:
            gray_pixels(xr, Wp, w + f0, F, KH, KW, b + f0 if b != NULL else NULL,
                        orow + f0, OW, F - f0, act_in)
        if act_in != act:
            activate(orow, OW * F, act)


def conv2d_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                   const floating[::1] b, floating[:, :, :, ::1] out, floating[:, ::1] work,
                   Py_ssize_t pad_top, Py_ssize_t pad_left, int act, int num_threads):
    """out = act(conv(x, w) + b) for single-channel x (C == 1; more channels go through
    _gemm); b has length F, or 0 for no bias; act is an Activation. work is per-thread
    scratch, (num_threads, Hp * Wp) with Hp = OH + KH - 1 and Wp = OW + KW - 1: room for
    a zero-padded copy of one image."""
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t KH = w.shape[0], KW = w.shape[1], F = w.shape[3]
    cdef Py_ssize_t OH = out.shape[1], OW = out.shape[2]
    cdef const floating* bp = &b[0] if b.shape[0] > 0 else NULL
    cdef Py_ssize_t n
    with nogil:
        # Dynamic: an image's output does not depend on the thread that computes it, and
        # on a busy machine a thread the OS pauses then holds up no one.
        for n in prange(N, num_threads=num_threads, schedule="dynamic"):
            forward_image_gray(&x[n, 0, 0, 0], &w[0, 0, 0, 0], bp, &out[n, 0, 0, 0],
                               &work[threadid(), 0], H, W, KH, KW, F, OH, OW,
                               pad_top, pad_left, act)


cdef void conv_pool_image_gray(const floating* x, const floating* w, const floating* b,
                               floating* out, int32_t* argmax, floating* work,
                               Py_ssize_t H, Py_ssize_t W, Py_ssize_t KH, Py_ssize_t KW,
                               Py_ssize_t F, Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t pad_top,
                               Py_ssize_t pad_left, int act, Py_ssize_t POH, Py_ssize_t POW,
                               Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t pool_top,
                               Py_ssize_t pool_left, Py_ssize_t band_rows) noexcept nogil:
    """conv2d_pool_forward for one image; work holds the frame and then the band."""
    cdef Py_ssize_t Hp = OH + KH - 1, Wp = OW + KW - 1
    cdef floating* band = work + Hp * Wp
    cdef const floating* frame = x
    cdef Py_ssize_t i, y, xx, bi, oy0, oy1, r0, r1
    if pad_top != 0 or pad_left != 0 or Hp != H or Wp != W:
        for i in range(Hp * Wp):
            work[i] = 0
        for y in range(H):
            for xx in range(W):
                work[(y + pad_top) * Wp + xx + pad_left] = x[y * W + xx]
        frame = work
    for bi in range((POH + band_rows - 1) // band_rows):
        oy0, oy1, r0, r1 = band_of(bi, band_rows, POH, OH, ph, pool_top)
        # The band's rows seen as an already framed image r0 rows down: no copy.
        forward_image_gray(frame + r0 * Wp, w, b, band, work, r1 - r0 + KH - 1, Wp, KH, KW,
                           F, r1 - r0, OW, 0, 0, act)
        pool_rows(band, r0, OH, OW, F, oy0, oy1, POW, ph, pw, pool_top, pool_left, out,
                  argmax)


def conv2d_pool_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                        const floating[::1] b, floating[:, :, :, ::1] out,
                        int32_t[:, :, :, ::1] argmax, floating[:, ::1] work,
                        Py_ssize_t pad_top, Py_ssize_t pad_left, Py_ssize_t OH, Py_ssize_t OW,
                        int act, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t pool_top,
                        Py_ssize_t pool_left, Py_ssize_t band_rows, int num_threads):
    """out = max_pool(act(conv(x, w) + b)) for single-channel x, the convolution's
    output never leaving the cache: forward_image_gray computes band_rows pooled rows'
    worth of it at a time into a per-thread band, which _convpool.pool_rows pools into
    out. Each value is forward_image_gray's, so the result has the bits of
    conv2d_forward followed by max pooling.

    OH x OW is the convolution's output size; out (N, POH, POW, F); argmax the same
    shape, or empty to skip it; (ph, pw) the window and (pool_top, pool_left) the
    pooling's padding. work[thread] holds a zero-padded copy of the image
    ((OH + KH - 1) * (OW + KW - 1)) and then the band (band_rows * ph * OW * F)."""
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t KH = w.shape[0], KW = w.shape[1], F = w.shape[3]
    cdef Py_ssize_t POH = out.shape[1], POW = out.shape[2]
    cdef const floating* bp = &b[0] if b.shape[0] > 0 else NULL
    cdef bint track = argmax.shape[0] > 0
    cdef Py_ssize_t n
    with nogil:
        # Dynamic, as in conv2d_forward: images are independent.
        for n in prange(N, num_threads=num_threads, schedule="dynamic"):
            conv_pool_image_gray(&x[n, 0, 0, 0], &w[0, 0, 0, 0], bp, &out[n, 0, 0, 0],
                                 &argmax[n, 0, 0, 0] if track else NULL,
                                 &work[threadid(), 0], H, W, KH, KW, F, OH, OW, pad_top,
                                 pad_left, act, POH, POW, ph, pw, pool_top, pool_left,
                                 band_rows)


def conv2d_backward_input(const floating[:, :, :, ::1] grad_out,
                          const floating[:, :, :, ::1] w_t,
                          floating[:, :, :, ::1] grad_x,
                          Py_ssize_t pad_top, Py_ssize_t pad_left, int num_threads):
    """grad_x = d(loss)/d(x). w_t is the kernel array transposed to (KH, KW, F, C) so
    the innermost loop runs over contiguous channels instead of reducing over filters."""
    cdef Py_ssize_t N = grad_x.shape[0], H = grad_x.shape[1], W = grad_x.shape[2]
    cdef Py_ssize_t C = grad_x.shape[3]
    cdef Py_ssize_t KH = w_t.shape[0], KW = w_t.shape[1], F = w_t.shape[2]
    cdef Py_ssize_t OH = grad_out.shape[1], OW = grad_out.shape[2]
    cdef Py_ssize_t n, oy, ox, ky, kx, c, f, iy, ix, i
    cdef floating gv
    cdef floating* gx
    cdef floating* gx_n
    cdef const floating* wrow
    with nogil:
        # Each image's gradient is written only by the thread that owns that image.
        for n in prange(N, num_threads=num_threads, schedule="static"):
            gx_n = &grad_x[n, 0, 0, 0]
            for i in range(H * W * C):
                gx_n[i] = 0
            for oy in range(OH):
                for ox in range(OW):
                    for ky in range(KH):
                        iy = oy + ky - pad_top
                        if iy < 0 or iy >= H:
                            continue
                        for kx in range(KW):
                            ix = ox + kx - pad_left
                            if ix < 0 or ix >= W:
                                continue
                            gx = &grad_x[n, iy, ix, 0]
                            for f in range(F):
                                gv = grad_out[n, oy, ox, f]
                                wrow = &w_t[ky, kx, f, 0]
                                for c in range(C):
                                    gx[c] += gv * wrow[c]


cdef inline Py_ssize_t tap_offset(Py_ssize_t t, Py_ssize_t KW, Py_ssize_t Wp) noexcept nogil:
    """Where kernel tap t (row-major over KH x KW) sits relative to a window's corner in a
    frame Wp wide."""
    return (t // KW) * Wp + t % KW


# Weight gradient of the single-channel path. For each group of four kernel taps and two
# SIMD vectors of filters, eight sums stay in registers over every output pixel of an
# image: one load of grad_out serves four taps. Each gradient element still adds its
# terms pixel by pixel in (n, oy, ox) order, as conv2d_backward_params does.
cdef inline void gw_taps_f32(const float* frame, Py_ssize_t Wp, const float* g,
                             Py_ssize_t F, Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t t0,
                             Py_ssize_t KW, float* pw) noexcept nogil:
    """pw[t, 0:2 lanes] (t = 0..3, rows F apart) += sum over pixels of
    frame[pixel + off_t] * g[pixel, 0:2 lanes], where off_t is where kernel tap t0 + t
    sits in the frame."""
    cdef vf a0 = vf_load(pw), a1 = vf_load(pw + VF_LANES)
    cdef vf b0 = vf_load(pw + F), b1 = vf_load(pw + F + VF_LANES)
    cdef vf c0 = vf_load(pw + 2 * F), c1 = vf_load(pw + 2 * F + VF_LANES)
    cdef vf d0 = vf_load(pw + 3 * F), d1 = vf_load(pw + 3 * F + VF_LANES)
    cdef vf g0, g1
    cdef const float* xr
    cdef const float* gp
    cdef Py_ssize_t oy, ox
    cdef Py_ssize_t o0 = tap_offset(t0, KW, Wp), o1 = tap_offset(t0 + 1, KW, Wp)
    cdef Py_ssize_t o2 = tap_offset(t0 + 2, KW, Wp), o3 = tap_offset(t0 + 3, KW, Wp)
    for oy in range(OH):
        xr = frame + oy * Wp
        gp = g + oy * OW * F
        for ox in range(OW):
            g0, g1 = vf_load(gp), vf_load(gp + VF_LANES)
            a0, a1 = vf_madd(xr[o0], g0, a0), vf_madd(xr[o0], g1, a1)
            b0, b1 = vf_madd(xr[o1], g0, b0), vf_madd(xr[o1], g1, b1)
            c0, c1 = vf_madd(xr[o2], g0, c0), vf_madd(xr[o2], g1, c1)
            d0, d1 = vf_madd(xr[o3], g0, d0), vf_madd(xr[o3], g1, d1)
            xr += 1
            gp += F
    vf_store(pw, a0)
    vf_store(pw + VF_LANES, a1)
    vf_store(pw + F, b0)
    vf_store(pw + F + VF_LANES, b1)
    vf_store(pw + 2 * F, c0)
    vf_store(pw + 2 * F + VF_LANES, c1)
    vf_store(pw + 3 * F, d0)
    vf_store(pw + 3 * F + VF_LANES, d1)


cdef inline void gw_taps_f64(const double* frame, Py_ssize_t Wp, const double* g,
                             Py_ssize_t F, Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t t0,
                             Py_ssize_t KW, double* pw) noexcept nogil:
    cdef vd a0 = vd_load(pw), a1 = vd_load(pw + VD_LANES)
    cdef vd b0 = vd_load(pw + F), b1 = vd_load(pw + F + VD_LANES)
    cdef vd c0 = vd_load(pw + 2 * F), c1 = vd_load(pw + 2 * F + VD_LANES)
    cdef vd d0 = vd_load(pw + 3 * F), d1 = vd_load(pw + 3 * F + VD_LANES)
    cdef vd g0, g1
    cdef const double* xr
    cdef const double* gp
    cdef Py_ssize_t oy, ox
    cdef Py_ssize_t o0 = tap_offset(t0, KW, Wp), o1 = tap_offset(t0 + 1, KW, Wp)
    cdef Py_ssize_t o2 = tap_offset(t0 + 2, KW, Wp), o3 = tap_offset(t0 + 3, KW, Wp)
    for oy in range(OH):
        xr = frame + oy * Wp
        gp = g + oy * OW * F
        for ox in range(OW):
            g0, g1 = vd_load(gp), vd_load(gp + VD_LANES)
            a0, a1 = vd_madd(xr[o0], g0, a0), vd_madd(xr[o0], g1, a1)
            b0, b1 = vd_madd(xr[o1], g0, b0), vd_madd(xr[o1], g1, b1)
            c0, c1 = vd_madd(xr[o2], g0, c0), vd_madd(xr[o2], g1, c1)
            d0, d1 = vd_madd(xr[o3], g0, d0), vd_madd(xr[o3], g1, d1)
            xr += 1
            gp += F
    vd_store(pw, a0)
    vd_store(pw + VD_LANES, a1)
    vd_store(pw + F, b0)
    vd_store(pw + F + VD_LANES, b1)
    vd_store(pw + 2 * F, c0)
    vd_store(pw + 2 * F + VD_LANES, c1)
    vd_store(pw + 3 * F, d0)
    vd_store(pw + 3 * F + VD_LANES, d1)


cdef inline void gw_plain(const floating* frame, Py_ssize_t Wp, const floating* g,
                          Py_ssize_t F, Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t off,
                          floating* pw, Py_ssize_t f0, Py_ssize_t f1) noexcept nogil:
    """pw[f] += sum over pixels of frame[pixel + off] * g[pixel, f] for f in [f0, f1):
    one tap, what the register blocks leave over, in the same order."""
    cdef Py_ssize_t oy, ox, f
    cdef floating xv
    cdef const floating* gp
    for oy in range(OH):
        for ox in range(OW):
            xv = frame[oy * Wp + ox + off]
            gp = g + (oy * OW + ox) * F
            for f in range(f0, f1):
                pw[f] += xv * gp[f]


def conv2d_backward_weights(const floating[:, :, :, ::1] x,
                                const floating[:, :, :, ::1] grad_out,
                                floating[:, :, :, :, ::1] partial_w,
                                floating[:, ::1] partial_b, floating[:, ::1] work,
                                Py_ssize_t chunk, Py_ssize_t pad_top, Py_ssize_t pad_left,
                                int num_threads):
    """Per-chunk sums of the kernel and bias gradients. The batch is cut into fixed
    chunks of `chunk` images, whatever the thread count; chunk k sums into partial_w[k]
    (KH, KW, 1, F) and partial_b[k] (F,), and the caller adds the chunks in order, so the
    result has the same bits on any number of threads. 'same' padding reads a
    zero-padded copy of each image from work (num_threads, Hp * Wp); taps that fall in
    the padding add x = 0 terms, which change no sum."""
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t KH = partial_w.shape[1], KW = partial_w.shape[2], F = partial_w.shape[4]
    cdef Py_ssize_t OH = grad_out.shape[1], OW = grad_out.shape[2]
    cdef Py_ssize_t Hp = OH + KH - 1, Wp = OW + KW - 1, T = KH * KW
    cdef Py_ssize_t n_chunks = partial_w.shape[0]
    cdef Py_ssize_t fb = 2 * VF_LANES if floating is float else 2 * VD_LANES
    cdef Py_ssize_t f_main = F - F % fb
    cdef bint padded = pad_top != 0 or pad_left != 0 or Hp != H or Wp != W
    cdef Py_ssize_t k, n, t, i, j, y, xx, f, f0, p
    cdef floating* pw
    cdef floating* pb
    cdef floating* fr
    cdef const floating* frame
    cdef const floating* g
    with nogil:
        # Dynamic, as in conv2d_forward: chunk k's sums do not depend on its thread.
        for k in prange(n_chunks, num_threads=num_threads, schedule="dynamic"):
            pw = &partial_w[k, 0, 0, 0, 0]
            pb = &partial_b[k, 0]
            for i in range(T * F):
                pw[i] = 0
            for f in range(F):
                pb[f] = 0
            for n in range(k * chunk, min((k + 1) * chunk, N)):
                frame = &x[n, 0, 0, 0]
                if padded:
                    fr = &work[threadid(), 0]
                    for i in range(Hp * Wp):
                        fr[i] = 0
                    for y in range(H):
                        for xx in range(W):
                            fr[(y + pad_top) * Wp + xx + pad_left] = x[n, y, xx, 0]
                    frame = fr
                g = &grad_out[n, 0, 0, 0]
                for p in range(OH * OW):
                    for f in range(F):
                        pb[f] += g[p * F + f]
                for t in range(T // 4):
                    for j in range(f_main // fb):
                        f0 = j * fb
                        if floating is float:
                            gw_taps_f32(frame, Wp, g + f0, F, OH, OW, 4 * t, KW,
                                        pw + 4 * t * F + f0)
                        else:
                            gw_taps_f64(frame, Wp, g + f0, F, OH, OW, 4 * t, KW,
                                        pw + 4 * t * F + f0)
                for t in range(T):
                    # Taps past the last group of four, and filters past the last block.
                    gw_plain(frame, Wp, g, F, OH, OW, tap_offset(t, KW, Wp), pw + t * F,
                             0 if t >= T - T % 4 else f_main, F)


# ---- conv2d -> flatten -> dense at inference, without the conv output in memory --------
# Images go in groups. Each output row of an image's activated conv output is computed
# into a small per-thread strip, which stays in L1, and its dot products with the dense
# weights are added to the image's logits at once: the (N, OH, OW, F) output never
# reaches memory. A row's dense weights (units x strip) are read once per group, from
# L1 for all but the first pair of images, so the weights, which fill most of L2,
# cost little memory traffic per image.

cdef enum:
    GROUP = 8    # images per work unit
    UCHUNK = 5   # dense units per pass over two strips: 2 * UCHUNK sums in registers


cdef inline void gray_pair_f32(const float* xr, Py_ssize_t Wp, const float* w,
                               Py_ssize_t F, Py_ssize_t KH, Py_ssize_t KW, const float* b,
                               float* o, int act) noexcept nogil:
    """gray_block_f32 for two pixels: a row's last two, where a block of PX would redo
    pixels already done. Each sum has the same terms in the same order, so the same bits."""
    cdef vf a00 = vf_zero(), a01 = vf_zero(), a10 = vf_zero(), a11 = vf_zero()
    cdef vf w0, w1
    cdef const float* xt
    cdef const float* wt
    cdef Py_ssize_t ky, kx, p
    for ky in range(KH):
        xt = xr + ky * Wp
        wt = w + ky * KW * F
        for kx in range(KW):
            w0 = vf_load(wt)
            w1 = vf_load(wt + VF_LANES)
            a00 = vf_madd(xt[0], w0, a00)
            a01 = vf_madd(xt[0], w1, a01)
            a10 = vf_madd(xt[1], w0, a10)
            a11 = vf_madd(xt[1], w1, a11)
            xt += 1
            wt += F
    if b != NULL:
        w0 = vf_load(b)
        w1 = vf_load(b + VF_LANES)
        a00, a01, a10, a11 = vf_add(a00, w0), vf_add(a01, w1), vf_add(a10, w0), vf_add(a11, w1)
    if act == ACT_TANH:
        a00, a01, a10, a11 = vf_tanh(a00), vf_tanh(a01), vf_tanh(a10), vf_tanh(a11)
    vf_store(o, a00)
    vf_store(o + VF_LANES, a01)
    vf_store(o + F, a10)
    vf_store(o + F + VF_LANES, a11)
    if act == ACT_RELU:
        for p in range(2):
            activate(o + p * F, 2 * VF_LANES, act)


cdef void gray_row(const floating* xr, Py_ssize_t Wp, const floating* w, const floating* b,
                   floating* orow, Py_ssize_t KH, Py_ssize_t KW, Py_ssize_t F,
                   Py_ssize_t OW, int act) noexcept nogil:
    """One activated output row (OW, F) of a single-channel image, with the blocks and
    leftovers of forward_image_gray, so its values have the same bits as conv2d_forward's."""
    cdef Py_ssize_t fb = 2 * VF_LANES if floating is float else 2 * VD_LANES
    cdef int act_in = act if floating is float else ACT_LINEAR
    cdef const floating* bf
    cdef Py_ssize_t ox, k, f0 = 0
    cdef bint pair_tail = floating is float and OW % PX == 2
    while f0 + fb <= F:
        bf = b + f0 if b != NULL else NULL
        if OW < PX:
            gray_pixels(xr, Wp, w + f0, F, KH, KW, bf, orow + f0, OW, fb, act_in)
        elif pair_tail:
            # Whole blocks, then the last two pixels on their own (float32 only).
            if floating is float:
                for k in range(OW // PX):
                    gray_block_f32(xr + k * PX, Wp, w + f0, F, KH, KW, bf,
                                   orow + k * PX * F + f0, act_in)
                gray_pair_f32(xr + OW - 2, Wp, w + f0, F, KH, KW, bf,
                              orow + (OW - 2) * F + f0, act_in)
        else:
            ox = 0
            while True:
                ox = min(ox, OW - PX)
                if floating is float:
                    gray_block_f32(xr + ox, Wp, w + f0, F, KH, KW, bf, orow + ox * F + f0,
                                   act_in)
                else:
                    gray_block_f64(xr + ox, Wp, w + f0, F, KH, KW, bf, orow + ox * F + f0)
                if ox == OW - PX:
                    break
                ox += PX
        f0 += fb
    if f0 < F:
        gray_pixels(xr, Wp, w + f0, F, KH, KW, b + f0 if b != NULL else NULL, orow + f0, OW,
                    F - f0, act_in)
    if act_in != act:
        activate(orow, OW * F, act)


# acc[k * lanes:...] += s[0:L] * wp[k * ws:... + L], lane by lane, for UCHUNK units k and
# the two strips s0 -> acc0, s1 -> acc1. L is a multiple of the lanes. s1 and acc1 may be
# s0 and acc0: both sets of sums then get the same values.
cdef inline void strip_dots_f32(const float* s0, const float* s1, const float* wp,
                                Py_ssize_t ws, Py_ssize_t L, float* acc0,
                                float* acc1) noexcept nogil:
    cdef vf a0 = vf_load(acc0), a1 = vf_load(acc0 + VF_LANES)
    cdef vf a2 = vf_load(acc0 + 2 * VF_LANES), a3 = vf_load(acc0 + 3 * VF_LANES)
    cdef vf a4 = vf_load(acc0 + 4 * VF_LANES)
    cdef vf c0 = vf_load(acc1), c1 = vf_load(acc1 + VF_LANES)
    cdef vf c2 = vf_load(acc1 + 2 * VF_LANES), c3 = vf_load(acc1 + 3 * VF_LANES)
    cdef vf c4 = vf_load(acc1 + 4 * VF_LANES)
    cdef vf x0, x1, wv
    cdef Py_ssize_t j = 0
    while j < L:
        x0, x1 = vf_load(s0 + j), vf_load(s1 + j)
        wv = vf_load(wp + j)
        a0, c0 = vf_fma(x0, wv, a0), vf_fma(x1, wv, c0)
        wv = vf_load(wp + ws + j)
        a1, c1 = vf_fma(x0, wv, a1), vf_fma(x1, wv, c1)
        wv = vf_load(wp + 2 * ws + j)
        a2, c2 = vf_fma(x0, wv, a2), vf_fma(x1, wv, c2)
        wv = vf_load(wp + 3 * ws + j)
        a3, c3 = vf_fma(x0, wv, a3), vf_fma(x1, wv, c3)
        wv = vf_load(wp + 4 * ws + j)
        a4, c4 = vf_fma(x0, wv, a4), vf_fma(x1, wv, c4)
        j += VF_LANES
    vf_store(acc0, a0)
    vf_store(acc0 + VF_LANES, a1)
    vf_store(acc0 + 2 * VF_LANES, a2)
    vf_store(acc0 + 3 * VF_LANES, a3)
    vf_store(acc0 + 4 * VF_LANES, a4)
    vf_store(acc1, c0)
    vf_store(acc1 + VF_LANES, c1)
    vf_store(acc1 + 2 * VF_LANES, c2)
    vf_store(acc1 + 3 * VF_LANES, c3)
    vf_store(acc1 + 4 * VF_LANES, c4)


cdef inline void strip_dots_f64(const double* s0, const double* s1, const double* wp,
                                Py_ssize_t ws, Py_ssize_t L, double* acc0,
                                double* acc1) noexcept nogil:
    cdef vd a0 = vd_load(acc0), a1 = vd_load(acc0 + VD_LANES)
    cdef vd a2 = vd_load(acc0 + 2 * VD_LANES), a3 = vd_load(acc0 + 3 * VD_LANES)
    cdef vd a4 = vd_load(acc0 + 4 * VD_LANES)
    cdef vd c0 = vd_load(acc1), c1 = vd_load(acc1 + VD_LANES)
    cdef vd c2 = vd_load(acc1 + 2 * VD_LANES), c3 = vd_load(acc1 + 3 * VD_LANES)
    cdef vd c4 = vd_load(acc1 + 4 * VD_LANES)
    cdef vd x0, x1, wv
    cdef Py_ssize_t j = 0
    while j < L:
        x0, x1 = vd_load(s0 + j), vd_load(s1 + j)
        wv = vd_load(wp + j)
        a0, c0 = vd_fma(x0, wv, a0), vd_fma(x1, wv, c0)
        wv = vd_load(wp + ws + j)
        a1, c1 = vd_fma(x0, wv, a1), vd_fma(x1, wv, c1)
        wv = vd_load(wp + 2 * ws + j)
        a2, c2 = vd_fma(x0, wv, a2), vd_fma(x1, wv, c2)
        wv = vd_load(wp + 3 * ws + j)
        a3, c3 = vd_fma(x0, wv, a3), vd_fma(x1, wv, c3)
        wv = vd_load(wp + 4 * ws + j)
        a4, c4 = vd_fma(x0, wv, a4), vd_fma(x1, wv, c4)
        j += VD_LANES
    vd_store(acc0, a0)
    vd_store(acc0 + VD_LANES, a1)
    vd_store(acc0 + 2 * VD_LANES, a2)
    vd_store(acc0 + 3 * VD_LANES, a3)
    vd_store(acc0 + 4 * VD_LANES, a4)
    vd_store(acc1, c0)
    vd_store(acc1 + VD_LANES, c1)
    vd_store(acc1 + 2 * VD_LANES, c2)
    vd_store(acc1 + 3 * VD_LANES, c3)
    vd_store(acc1 + 4 * VD_LANES, c4)


cdef void conv_dense_group(const floating* x, Py_ssize_t count, const floating* w,
                           const floating* b, const floating* wp, const floating* db,
                           floating* out, floating* work, Py_ssize_t H, Py_ssize_t W,
                           Py_ssize_t KH, Py_ssize_t KW, Py_ssize_t F, Py_ssize_t OH,
                           Py_ssize_t OW, Py_ssize_t L, Py_ssize_t U, Py_ssize_t UP,
                           Py_ssize_t pad_top, Py_ssize_t pad_left, int act) noexcept nogil:
    """The logits out (count, U) of the count (1..GROUP) images from x. work holds, in
    order: GROUP frames (Hp * Wp), GROUP strips (L) and GROUP sets of UP * lanes sums."""
    cdef Py_ssize_t lanes = VF_LANES if floating is float else VD_LANES
    cdef Py_ssize_t Hp = OH + KH - 1, Wp = OW + KW - 1
    cdef bint padded = pad_top != 0 or pad_left != 0 or Hp != H or Wp != W
    cdef floating* strips = work + GROUP * Hp * Wp
    cdef floating* acc = strips + GROUP * L
    cdef floating* fr
    cdef const floating* frame
    cdef Py_ssize_t i, i1, p, y, xx, oy, u, k
    cdef floating t
    # 'same' padding reads zero-padded copies of the images, so no tap needs a bounds test.
    if padded:
        for i in range(count * Hp * Wp):
            work[i] = 0
        for i in range(count):
            fr = work + i * Hp * Wp
            for y in range(H):
                for xx in range(W):
                    fr[(y + pad_top) * Wp + xx + pad_left] = x[(i * H + y) * W + xx]
    # Strip lanes past a row's OW * F values meet zero weights, but must not be NaN.
    for i in range(count):
        for k in range(OW * F, L):
            strips[i * L + k] = 0
    for i in range(count * UP * lanes):
        acc[i] = 0
    for oy in range(OH):
        for i in range(count):
            if padded:
                frame = work + i * Hp * Wp
            else:
                frame = x + i * H * W
            gray_row(frame + oy * Wp, Wp, w, b, strips + i * L, KH, KW, F, OW, act)
        for k in range(UP // UCHUNK):
            u = k * UCHUNK
            for p in range((count + 1) // 2):
                i1 = min(2 * p + 1, count - 1)
                if floating is float:
                    strip_dots_f32(strips + 2 * p * L, strips + i1 * L,
                                   wp + (u * OH + oy) * L, OH * L, L,
                                   acc + (2 * p * UP + u) * lanes, acc + (i1 * UP + u) * lanes)
                else:
                    strip_dots_f64(strips + 2 * p * L, strips + i1 * L,
                                   wp + (u * OH + oy) * L, OH * L, L,
                                   acc + (2 * p * UP + u) * lanes, acc + (i1 * UP + u) * lanes)
    for i in range(count):
        for u in range(U):
            t = acc[(i * UP + u) * lanes]
            for k in range(1, lanes):
                t = t + acc[(i * UP + u) * lanes + k]
            if db != NULL:
                t = t + db[u]
            out[i * U + u] = t


def conv2d_dense_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                         const floating[::1] b, const floating[:, :, ::1] dense_wp,
                         const floating[::1] dense_b, floating[:, ::1] out,
                         floating[:, ::1] work, Py_ssize_t OW, Py_ssize_t pad_top,
                         Py_ssize_t pad_left, int act, int num_threads):
    """out = flatten(act(conv(x, w) + b)) @ dense_w + dense_b for single-channel x.

    dense_wp is dense_w packed as (UP, OH, L): unit u's weights for output row oy are
    dense_wp[u, oy, :OW * F], zero past them and for units u >= U; UP is a multiple of
    UCHUNK and L of the SIMD lanes. b and dense_b have length F and U, or 0 for none.
    work is per-thread scratch, (num_threads, GROUP * (Hp * Wp + L + UP * lanes)).
    Every logit adds its terms in an order fixed by the shapes alone: the same bits on
    any number of threads, and whatever the image's neighbours in the batch."""
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t KH = w.shape[0], KW = w.shape[1], F = w.shape[3]
    cdef Py_ssize_t UP = dense_wp.shape[0], OH = dense_wp.shape[1], L = dense_wp.shape[2]
    cdef Py_ssize_t U = out.shape[1]
    cdef const floating* bp = &b[0] if b.shape[0] > 0 else NULL
    cdef const floating* dbp = &dense_b[0] if dense_b.shape[0] > 0 else NULL
    cdef Py_ssize_t g, n0
    with nogil:
        # Dynamic, as in conv2d_forward: a group's logits do not depend on its thread.
        for g in prange((N + GROUP - 1) // GROUP, num_threads=num_threads,
                        schedule="dynamic"):
            n0 = g * GROUP
            conv_dense_group(&x[n0, 0, 0, 0], min(GROUP, N - n0), &w[0, 0, 0, 0], bp,
                             &dense_wp[0, 0, 0], dbp, &out[n0, 0], &work[threadid(), 0],
                             H, W, KH, KW, F, OH, OW, L, U, UP, pad_top, pad_left, act)


def fused_group():
    """Images per work unit of conv2d_dense_forward (for sizing its scratch)."""
    return GROUP


def fused_lanes(int itemsize):
    """Vector lanes for float32 (itemsize 4) or float64 (8): conv2d_dense_forward reads each
    output row's dense weights padded to a multiple of it."""
    return 8 if itemsize == 4 else 4


def fused_units():
    """Dense units per pass of conv2d_dense_forward: the packed weights' units are padded
    to a multiple of it."""
    return UCHUNK
