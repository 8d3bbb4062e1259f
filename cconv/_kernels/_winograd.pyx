"""Stride-1 5x5 convolutions by Winograd's minimal filtering F(2x2, 5x5).

Each 2x2 block of output pixels (a "tile") is computed from the 6x6 input patch under
it as  Y = A^T [ sum_c (G g_cf G^T) . (B^T d_c B) ] A,  36 products per channel pair
where the direct method needs 100. The interpolation points are 0, 1, -1, 2, -1/2 and
infinity: of the sets of five small finite points tried, this one gave the smallest
float32 error (about 2.5x below 0, +-1, +-2). The matrices, with B^T scaled to integers
and A^T's column for -1/2 doubled (G, applied once to the kernels in float64 by
cconv.ops, absorbs both scales), so that the float transforms have integer coefficients:

    B^T = [ 2  3 -4 -3  2  0 ]     A^T = [ 1  1  1  1  2  0 ]
          [ 0  2  5  1 -2  0 ]           [ 0  1 -1  2 -1  1 ]
          [ 0  2  1 -5  2  0 ]
          [ 0 -1 -2  1  2  0 ]
          [ 0 -2  1  2 -1  0 ]
          [ 0  2  3 -4 -3  2 ]

The tiles of all images are numbered in order and cut into blocks of `block` tiles; a
block is one thread's work unit: its patches are transformed into V (block, 36, C), the
36 products are matrix products V_e (block x C) @ U_e (C x F) into M (block, 36, Fp) by
a register-blocked 6 x NR micro-kernel, and M is transformed back, bias and activation
added, into the output. Every output pixel depends only on its own patch, summed in a
fixed order, so the bits never depend on the thread count or the block size.

Every array here has been checked by cconv.ops; bounds checks are off.
"""
from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.string cimport memcpy, memset

from cconv._kernels._simd cimport activate

# 32-byte vectors, as in _gemm: arithmetic on them compiles to AVX2 FMAs.
cdef extern from *:
    """
    #if defined(__GNUC__) && !defined(CCONV_NO_VECTOR_TYPES)
    #define CCONV_WG_VECTOR_TYPES 1
    typedef float cconv_wg_vfloat __attribute__((vector_size(32), aligned(4)));
    typedef double cconv_wg_vdouble __attribute__((vector_size(32), aligned(8)));
    #else
    #define CCONV_WG_VECTOR_TYPES 0
    typedef float cconv_wg_vfloat;
    typedef double cconv_wg_vdouble;
    #endif
    static inline cconv_wg_vfloat cconv_wg_zero_f(void) { cconv_wg_vfloat z = {0}; return z; }
    static inline cconv_wg_vdouble cconv_wg_zero_d(void) { cconv_wg_vdouble z = {0}; return z; }
    """
    const bint CCONV_WG_VECTOR_TYPES
    ctypedef float vfloat "cconv_wg_vfloat"
    ctypedef double vdouble "cconv_wg_vdouble"
    vfloat zero_f "cconv_wg_zero_f"() noexcept nogil
    vdouble zero_d "cconv_wg_zero_d"() noexcept nogil


cdef enum:
    MR = 6      # rows (tiles) per micro-kernel call
    ALPHA = 6   # input patch side
    ELEMS = 36  # products per tile and channel pair


cdef inline Py_ssize_t panel_width(const floating* p) noexcept nogil:
    """NR: two 32-byte vectors."""
    if floating is float:
        return 16
    else:
        return 8


cdef inline void tile_portable(const floating* a0, const floating* a1, const floating* a2,
                               const floating* a3, const floating* a4, const floating* a5,
                               Py_ssize_t K, Py_ssize_t a_step, const floating* b,
                               Py_ssize_t ldb, floating* c, Py_ssize_t c_rs) noexcept nogil:
    """tile_kernel in plain loops, for compilers without vector types."""
    cdef Py_ssize_t nr = panel_width(b)
    cdef const floating* a[6]
    cdef Py_ssize_t r, j, k
    cdef floating s
    a[0] = a0
    a[1] = a1
    a[2] = a2
    a[3] = a3
    a[4] = a4
    a[5] = a5
    for r in range(MR):
        for j in range(nr):
            s = 0
            for k in range(K):
                s = s + a[r][k * a_step] * b[k * ldb + j]
            c[r * c_rs + j] = s


cdef inline void tile_f32(const float* a0, const float* a1, const float* a2,
                          const float* a3, const float* a4, const float* a5,
                          Py_ssize_t K, Py_ssize_t a_step, const float* b, Py_ssize_t ldb,
                          float* c, Py_ssize_t c_rs) noexcept nogil:
    """tile_kernel for float32, the 6 x 16 tile in twelve registers."""
    cdef vfloat z = zero_f()
    cdef vfloat c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z
    cdef vfloat c30 = z, c31 = z, c40 = z, c41 = z, c50 = z, c51 = z
    cdef vfloat b0, b1
    cdef float v
    cdef Py_ssize_t k
    for k in range(K):
        b0 = (<const vfloat*>b)[0]
        b1 = (<const vfloat*>(b + 8))[0]
        v = a0[k * a_step]
        c00 = c00 + v * b0
        c01 = c01 + v * b1
        v = a1[k * a_step]
        c10 = c10 + v * b0
        c11 = c11 + v * b1
        v = a2[k * a_step]
        c20 = c20 + v * b0
        c21 = c21 + v * b1
        v = a3[k * a_step]
        c30 = c30 + v * b0
        c31 = c31 + v * b1
        v = a4[k * a_step]
        c40 = c40 + v * b0
        c41 = c41 + v * b1
        v = a5[k * a_step]
        c50 = c50 + v * b0
        c51 = c51 + v * b1
        b += ldb
    (<vfloat*>c)[0] = c00
    (<vfloat*>(c + 8))[0] = c01
    (<vfloat*>(c + c_rs))[0] = c10
    (<vfloat*>(c + c_rs + 8))[0] = c11
    (<vfloat*>(c + 2 * c_rs))[0] = c20
    (<vfloat*>(c + 2 * c_rs + 8))[0] = c21
    (<vfloat*>(c + 3 * c_rs))[0] = c30
    (<vfloat*>(c + 3 * c_rs + 8))[0] = c31
    (<vfloat*>(c + 4 * c_rs))[0] = c40
    (<vfloat*>(c + 4 * c_rs + 8))[0] = c41
    (<vfloat*>(c + 5 * c_rs))[0] = c50
    (<vfloat*>(c + 5 * c_rs + 8))[0] = c51


cdef inline void tile_f64(const double* a0, const double* a1, const double* a2,
                          const double* a3, const double* a4, const double* a5,
                          Py_ssize_t K, Py_ssize_t a_step, const double* b,
                          Py_ssize_t ldb, double* c, Py_ssize_t c_rs) noexcept nogil:
    """tile_kernel for float64, the 6 x 8 tile in twelve registers."""
    cdef vdouble z = zero_d()
    cdef vdouble c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z
    cdef vdouble c30 = z, c31 = z, c40 = z, c41 = z, c50 = z, c51 = z
    cdef vdouble b0, b1
    cdef double v
    cdef Py_ssize_t k
    for k in range(K):
        b0 = (<const vdouble*>b)[0]
        b1 = (<const vdouble*>(b + 4))[0]
        v = a0[k * a_step]
        c00 = c00 + v * b0
        c01 = c01 + v * b1
        v = a1[k * a_step]
        c10 = c10 + v * b0
        c11 = c11 + v * b1
        v = a2[k * a_step]
        c20 = c20 + v * b0
        c21 = c21 + v * b1
        v = a3[k * a_step]
        c30 = c30 + v * b0
        c31 = c31 + v * b1
        v = a4[k * a_step]
        c40 = c40 + v * b0
        c41 = c41 + v * b1
        v = a5[k * a_step]
        c50 = c50 + v * b0
        c51 = c51 + v * b1
        b += ldb
    (<vdouble*>c)[0] = c00
    (<vdouble*>(c + 4))[0] = c01
    (<vdouble*>(c + c_rs))[0] = c10
    (<vdouble*>(c + c_rs + 4))[0] = c11
    (<vdouble*>(c + 2 * c_rs))[0] = c20
    (<vdouble*>(c + 2 * c_rs + 4))[0] = c21
    (<vdouble*>(c + 3 * c_rs))[0] = c30
    (<vdouble*>(c + 3 * c_rs + 4))[0] = c31
    (<vdouble*>(c + 4 * c_rs))[0] = c40
    (<vdouble*>(c + 4 * c_rs + 4))[0] = c41
    (<vdouble*>(c + 5 * c_rs))[0] = c50
    (<vdouble*>(c + 5 * c_rs + 4))[0] = c51


cdef inline void tile_kernel(const floating* a0, const floating* a1, const floating* a2,
                             const floating* a3, const floating* a4, const floating* a5,
                             Py_ssize_t K, Py_ssize_t a_step, const floating* b,
                             Py_ssize_t ldb, floating* c, Py_ssize_t c_rs) noexcept nogil:
    """Six rows of c (c_rs apart, NR wide) = six rows of A (K long, elements a_step
    apart) @ a K x NR panel (rows ldb apart)."""
    if not CCONV_WG_VECTOR_TYPES:
        tile_portable(a0, a1, a2, a3, a4, a5, K, a_step, b, ldb, c, c_rs)
    elif floating is float:
        tile_f32(a0, a1, a2, a3, a4, a5, K, a_step, b, ldb, c, c_rs)
    else:
        tile_f64(a0, a1, a2, a3, a4, a5, K, a_step, b, ldb, c, c_rs)


ctypedef fused vec:  # a vector of either float type
    vfloat
    vdouble


cdef inline Py_ssize_t lanes(const floating* p) noexcept nogil:
    """Values per vector (1 without vector types)."""
    if floating is float:
        return sizeof(vfloat) // sizeof(float)
    else:
        return sizeof(vdouble) // sizeof(double)


cdef inline void input6(const vec* d, Py_ssize_t ds, vec* v, Py_ssize_t vs) noexcept nogil:
    """v[i] = sum_k B^T[i][k] d[k] for six vectors d[k], ds bytes apart, into v[i], vs
    bytes apart."""
    cdef const char* p = <const char*>d
    cdef char* q = <char*>v
    cdef vec x0 = (<const vec*>p)[0]
    cdef vec x1 = (<const vec*>(p + ds))[0]
    cdef vec x2 = (<const vec*>(p + 2 * ds))[0]
    cdef vec x3 = (<const vec*>(p + 3 * ds))[0]
    cdef vec x4 = (<const vec*>(p + 4 * ds))[0]
    cdef vec x5 = (<const vec*>(p + 5 * ds))[0]
    (<vec*>q)[0] = 2 * (x0 + x4) + 3 * (x1 - x3) - 4 * x2
    (<vec*>(q + vs))[0] = 2 * (x1 - x4) + 5 * x2 + x3
    (<vec*>(q + 2 * vs))[0] = 2 * (x1 + x4) + x2 - 5 * x3
    (<vec*>(q + 3 * vs))[0] = 2 * (x4 - x2) + x3 - x1
    (<vec*>(q + 4 * vs))[0] = 2 * (x3 - x1) + x2 - x4
    (<vec*>(q + 5 * vs))[0] = 2 * (x1 + x5) + 3 * (x2 - x4) - 4 * x3


cdef inline void input_rows(const floating* d, Py_ssize_t ds, floating* v, Py_ssize_t vs,
                            Py_ssize_t C) noexcept nogil:
    """input6 over C channels: d[k] = d + k * ds, v[i] = v + i * vs (elements), whole
    vectors, then the last channels through a zero-padded vector."""
    cdef Py_ssize_t L = lanes(d)
    cdef floating pad_in[6 * 8]
    cdef floating pad_out[6 * 8]
    cdef Py_ssize_t c = 0, k, rest
    while c + L <= C:
        if floating is float:
            input6(<const vfloat*>(d + c), ds * sizeof(float), <vfloat*>(v + c),
                   vs * sizeof(float))
        else:
            input6(<const vdouble*>(d + c), ds * sizeof(double), <vdouble*>(v + c),
                   vs * sizeof(double))
        c += L
    rest = C - c
    if rest == 0:
        return
    for k in range(ALPHA):
        memset(pad_in + k * L, 0, L * sizeof(floating))
        memcpy(pad_in + k * L, d + k * ds + c, rest * sizeof(floating))
    if floating is float:
        input6(<const vfloat*>pad_in, L * sizeof(float), <vfloat*>pad_out, L * sizeof(float))
    else:
        input6(<const vdouble*>pad_in, L * sizeof(double), <vdouble*>pad_out,
               L * sizeof(double))
    for k in range(ALPHA):
        memcpy(v + k * vs + c, pad_out + k * L, rest * sizeof(floating))


cdef void input_tile(const floating* d, Py_ssize_t rs, Py_ssize_t cs, floating* tmp,
                     floating* v, Py_ssize_t ve, Py_ssize_t C) noexcept nogil:
    """v[e] (C values, ve apart) = (B^T d B)[e] for the 6x6 patch d (rows rs apart,
    pixels cs apart); tmp holds 36 C."""
    cdef Py_ssize_t j
    for j in range(ALPHA):  # columns of the patch: tmp[i][j] = (B^T d)[i][j]
        input_rows(d + j * cs, rs, tmp + j * C, ALPHA * C, C)
    for j in range(ALPHA):  # rows of tmp: v[j][i] = (tmp B)[j][i]
        input_rows(tmp + j * ALPHA * C, C, v + j * ALPHA * ve, ve, C)


cdef void input_patch(const floating* img, Py_ssize_t SH, Py_ssize_t SW, Py_ssize_t C,
                      Py_ssize_t y0, Py_ssize_t x0, floating* patch, floating* tmp,
                      floating* v, Py_ssize_t ve) noexcept nogil:
    """input_tile of the 6x6 patch of img (SH, SW, C) at (y0, x0), zeros past its edges.
    patch holds 36 C, for a patch that straddles an edge."""
    cdef Py_ssize_t xs, xe, i, y
    if y0 >= 0 and x0 >= 0 and y0 + ALPHA <= SH and x0 + ALPHA <= SW:
        input_tile(img + (y0 * SW + x0) * C, SW * C, C, tmp, v, ve, C)
        return
    xs = max(x0, 0)
    xe = min(x0 + ALPHA, SW)
    memset(patch, 0, ELEMS * C * sizeof(floating))
    for i in range(ALPHA):  # a row at a time
        y = y0 + i
        if 0 <= y < SH and xs < xe:
            memcpy(patch + (i * ALPHA + xs - x0) * C, img + (y * SW + xs) * C,
                   (xe - xs) * C * sizeof(floating))
    input_tile(patch, ALPHA * C, C, tmp, v, ve, C)


cdef inline void output6(const vec* m, Py_ssize_t ms, const vec* bias, vec* y00, vec* y01,
                         vec* y10, vec* y11) noexcept nogil:
    """y_ij = (A^T m A)[i][j] + bias for one vector of filters of the 36 elements of m,
    ms bytes apart."""
    cdef const char* p = <const char*>m
    cdef vec s[6]
    cdef vec t[6]
    cdef vec x0, x1, x2, x3, x4, x5
    cdef Py_ssize_t b
    for b in range(ALPHA):  # column b of A^T m: s[b] in row 0, t[b] in row 1
        x0 = (<const vec*>(p + b * ms))[0]
        x1 = (<const vec*>(p + (6 + b) * ms))[0]
        x2 = (<const vec*>(p + (12 + b) * ms))[0]
        x3 = (<const vec*>(p + (18 + b) * ms))[0]
        x4 = (<const vec*>(p + (24 + b) * ms))[0]
        x5 = (<const vec*>(p + (30 + b) * ms))[0]
        s[b] = x0 + x1 + x2 + x3 + 2 * x4
        t[b] = x1 - x2 + 2 * x3 - x4 + x5
    y00[0] = bias[0] + s[0] + s[1] + s[2] + s[3] + 2 * s[4]
    y01[0] = bias[0] + s[1] - s[2] + 2 * s[3] - s[4] + s[5]
    y10[0] = bias[0] + t[0] + t[1] + t[2] + t[3] + 2 * t[4]
    y11[0] = bias[0] + t[1] - t[2] + 2 * t[3] - t[4] + t[5]


cdef void output_tile(const floating* m, Py_ssize_t Fp, const floating* bias,
                      floating* y00, floating* y01, floating* y10, floating* y11,
                      Py_ssize_t F) noexcept nogil:
    """y_ij[0:F] = (A^T m A)[i][j] + bias for m (36, Fp): whole vectors, then the last
    filters through padded vectors (m has Fp >= F columns, a whole number of vectors)."""
    cdef Py_ssize_t L = lanes(m)
    cdef floating pad_bias[8]
    cdef floating pad_y[4 * 8]
    cdef Py_ssize_t ms = Fp * sizeof(floating)
    cdef Py_ssize_t f = 0, rest
    while f + L <= F:
        if floating is float:
            output6(<const vfloat*>(m + f), ms, <const vfloat*>(bias + f),
                    <vfloat*>(y00 + f), <vfloat*>(y01 + f), <vfloat*>(y10 + f),
                    <vfloat*>(y11 + f))
        else:
            output6(<const vdouble*>(m + f), ms, <const vdouble*>(bias + f),
                    <vdouble*>(y00 + f), <vdouble*>(y01 + f), <vdouble*>(y10 + f),
                    <vdouble*>(y11 + f))
        f += L
    rest = F - f
    if rest == 0:
        return
    memset(pad_bias, 0, L * sizeof(floating))
    memcpy(pad_bias, bias + f, rest * sizeof(floating))
    if floating is float:
        output6(<const vfloat*>(m + f), ms, <const vfloat*>pad_bias, <vfloat*>pad_y,
                <vfloat*>(pad_y + L), <vfloat*>(pad_y + 2 * L), <vfloat*>(pad_y + 3 * L))
    else:
        output6(<const vdouble*>(m + f), ms, <const vdouble*>pad_bias, <vdouble*>pad_y,
                <vdouble*>(pad_y + L), <vdouble*>(pad_y + 2 * L), <vdouble*>(pad_y + 3 * L))
    memcpy(y00 + f, pad_y, rest * sizeof(floating))
    memcpy(y01 + f, pad_y + L, rest * sizeof(floating))
    memcpy(y10 + f, pad_y + 2 * L, rest * sizeof(floating))
    memcpy(y11 + f, pad_y + 3 * L, rest * sizeof(floating))


cdef void conv_block(const floating* src, const floating* upack, const floating* bias,
                     floating* out, floating* work, Py_ssize_t SH, Py_ssize_t SW,
                     Py_ssize_t C, Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t F,
                     Py_ssize_t top, Py_ssize_t left, int act, Py_ssize_t g0,
                     Py_ssize_t nt, Py_ssize_t block) noexcept nogil:
    """Tiles g0 .. g0 + nt (numbered over all images, row-major within one) of out.
    work holds V (block, 36, C), M (block, 36, Fp), a patch and its half transform
    (36 C each) and an F-long sink for the pixels of edge tiles past the image."""
    cdef Py_ssize_t nr = panel_width(src)
    cdef Py_ssize_t panels = (F + nr - 1) // nr
    cdef Py_ssize_t Fp = panels * nr
    cdef Py_ssize_t TH = (OH + 1) // 2, TW = (OW + 1) // 2
    cdef floating* V = work
    cdef floating* M = V + block * ELEMS * C
    cdef floating* patch = M + block * ELEMS * Fp
    cdef floating* tmp = patch + ELEMS * C
    cdef floating* sink = tmp + ELEMS * C
    cdef Py_ssize_t t, g, n, ty, tx, i, j, y, x, e, jb, ib, r
    cdef const floating* a[6]
    cdef floating* yp[4]
    for t in range(nt):
        g = g0 + t
        n = g // (TH * TW)
        ty = (g // TW) % TH
        tx = g % TW
        input_patch(src + n * SH * SW * C, SH, SW, C, 2 * ty - top, 2 * tx - left, patch,
                    tmp, V + t * ELEMS * C, C)
    for e in range(ELEMS):
        for jb in range(panels):
            for ib in range((nt + MR - 1) // MR):
                # Rows past the block repeat its last tile; M has room for them.
                for r in range(MR):
                    a[r] = V + (min(ib * MR + r, nt - 1) * ELEMS + e) * C
                tile_kernel(a[0], a[1], a[2], a[3], a[4], a[5], C, 1,
                            upack + (e * panels + jb) * C * nr, nr,
                            M + (ib * MR * ELEMS + e) * Fp + jb * nr, ELEMS * Fp)
    for t in range(nt):
        g = g0 + t
        n = g // (TH * TW)
        ty = (g // TW) % TH
        tx = g % TW
        for i in range(2):
            for j in range(2):
                y = 2 * ty + i
                x = 2 * tx + j
                yp[2 * i + j] = (out + ((n * OH + y) * OW + x) * F
                                 if y < OH and x < OW else sink)
        output_tile(M + t * ELEMS * Fp, Fp, bias, yp[0], yp[1], yp[2], yp[3], F)
        if act != 0:
            for i in range(4):
                if yp[i] != sink:
                    activate(yp[i], F, act)


def work_size(Py_ssize_t C, Py_ssize_t F, Py_ssize_t block, int itemsize):
    """Elements of one thread's workspace for conv5_forward."""
    cdef Py_ssize_t nr = 16 if itemsize == 4 else 8
    cdef Py_ssize_t Fp = (F + nr - 1) // nr * nr
    return block * ELEMS * (C + Fp) + 2 * ELEMS * C + F


def conv5_forward(const floating[:, :, :, ::1] src, const floating[:, :, :, ::1] upack,
                  const floating[::1] bias, floating[:, :, :, ::1] out,
                  floating[:, ::1] work, Py_ssize_t top, Py_ssize_t left, int act,
                  Py_ssize_t block, int num_threads):
    """out (N, OH, OW, F) = act(conv(src, w) + bias) for 5x5 kernels w, stride 1.

    src (N, SH, SW, C) is read as if framed with `top` zero rows above and `left` zero
    columns to its left (and zeros past its far edges); upack is G w G^T as zero-padded
    NR-wide panels, (36, ceil(F / NR), C, NR); bias is (F,); work is (num_threads,
    work_size(C, F, block)); block, the tiles per work unit, a multiple of 6. Also
    serves the input gradient (src = grad_out, w the flipped, transposed kernels)."""
    cdef Py_ssize_t N = src.shape[0], SH = src.shape[1], SW = src.shape[2]
    cdef Py_ssize_t C = src.shape[3]
    cdef Py_ssize_t OH = out.shape[1], OW = out.shape[2], F = out.shape[3]
    cdef Py_ssize_t tiles = N * ((OH + 1) // 2) * ((OW + 1) // 2)
    cdef Py_ssize_t blocks = (tiles + block - 1) // block
    cdef Py_ssize_t k
    with nogil:
        # Dynamic: tiles are independent, so any assignment to threads gives the same bits.
        for k in prange(blocks, num_threads=num_threads, schedule="dynamic"):
            conv_block(&src[0, 0, 0, 0], &upack[0, 0, 0, 0], &bias[0], &out[0, 0, 0, 0],
                       &work[threadid(), 0], SH, SW, C, OH, OW, F, top, left, act,
                       k * block, min(block, tiles - k * block), block)


# ---------------------------------------------------------------- kernel gradient
#
# grad_w = sum over tiles of the correlation of each 6x6 input patch d with the 2x2
# grad_out tile h under it: F(5x5, 2x2), the transpose of the forward algorithm,
#     grad_w[:, :, c, f] = G^T [ sum_tiles (B^T d_c B) . (A h_f A^T) ] G,
# with A (6 x 2) the transpose of A^T above. The sums, 36 matrix products over the tiles
# (F x tiles) @ (tiles x C), are what this module computes; cconv.ops applies G^T .. G.
# Each image's tiles are summed in float32 (a micro-kernel tile), and the images added
# in order in float64: summed in float32 over a whole batch, the transformed products,
# several times larger than the result they cancel down to, lose too many digits.


cdef inline void grad6(const vec* h00, const vec* h01, const vec* h10, const vec* h11,
                       vec* out, Py_ssize_t hs) noexcept nogil:
    """out[6a + b] (hs bytes apart) = (A h A^T)[a][b] for one vector of filters of the
    2x2 tile h; A's rows are (1, 0), (1, 1), (1, -1), (1, 2), (2, -1), (0, 1)."""
    cdef char* q = <char*>out
    cdef vec r0[6]
    cdef vec r1[6]
    cdef vec u, v
    cdef Py_ssize_t b
    u = h00[0]  # r_i = A (h_i0, h_i1), the rows of h A^T
    v = h01[0]
    r0[0] = u
    r0[1] = u + v
    r0[2] = u - v
    r0[3] = u + 2 * v
    r0[4] = 2 * u - v
    r0[5] = v
    u = h10[0]
    v = h11[0]
    r1[0] = u
    r1[1] = u + v
    r1[2] = u - v
    r1[3] = u + 2 * v
    r1[4] = 2 * u - v
    r1[5] = v
    for b in range(ALPHA):
        u = r0[b]
        v = r1[b]
        (<vec*>(q + b * hs))[0] = u
        (<vec*>(q + (6 + b) * hs))[0] = u + v
        (<vec*>(q + (12 + b) * hs))[0] = u - v
        (<vec*>(q + (18 + b) * hs))[0] = u + 2 * v
        (<vec*>(q + (24 + b) * hs))[0] = 2 * u - v
        (<vec*>(q + (30 + b) * hs))[0] = v


cdef void grad_tile(const floating* h00, const floating* h01, const floating* h10,
                    const floating* h11, floating* out, Py_ssize_t oe,
                    Py_ssize_t F) noexcept nogil:
    """out[e] (F values, oe apart) = (A h A^T)[e] for the 2x2 tile of F-long pixels h:
    whole vectors, then the last filters through padded vectors."""
    cdef Py_ssize_t L = lanes(out)
    cdef floating pad_h[4 * 8]
    cdef floating pad_out[ELEMS * 8]
    cdef Py_ssize_t f = 0, rest, e
    while f + L <= F:
        if floating is float:
            grad6(<const vfloat*>(h00 + f), <const vfloat*>(h01 + f),
                  <const vfloat*>(h10 + f), <const vfloat*>(h11 + f), <vfloat*>(out + f),
                  oe * sizeof(float))
        else:
            grad6(<const vdouble*>(h00 + f), <const vdouble*>(h01 + f),
                  <const vdouble*>(h10 + f), <const vdouble*>(h11 + f),
                  <vdouble*>(out + f), oe * sizeof(double))
        f += L
    rest = F - f
    if rest == 0:
        return
    memset(pad_h, 0, 4 * L * sizeof(floating))
    memcpy(pad_h, h00 + f, rest * sizeof(floating))
    memcpy(pad_h + L, h01 + f, rest * sizeof(floating))
    memcpy(pad_h + 2 * L, h10 + f, rest * sizeof(floating))
    memcpy(pad_h + 3 * L, h11 + f, rest * sizeof(floating))
    if floating is float:
        grad6(<const vfloat*>pad_h, <const vfloat*>(pad_h + L), <const vfloat*>(pad_h + 2 * L),
              <const vfloat*>(pad_h + 3 * L), <vfloat*>pad_out, L * sizeof(float))
    else:
        grad6(<const vdouble*>pad_h, <const vdouble*>(pad_h + L),
              <const vdouble*>(pad_h + 2 * L), <const vdouble*>(pad_h + 3 * L),
              <vdouble*>pad_out, L * sizeof(double))
    for e in range(ELEMS):
        memcpy(out + e * oe + f, pad_out + e * L, rest * sizeof(floating))


cdef void grad_image(const floating* img, const floating* gout, floating* V, floating* Hm,
                     Py_ssize_t T, floating* work, Py_ssize_t SH, Py_ssize_t SW,
                     Py_ssize_t C, Py_ssize_t Cp, Py_ssize_t OH, Py_ssize_t OW,
                     Py_ssize_t F, Py_ssize_t top, Py_ssize_t left) noexcept nogil:
    """For every tile t of one image: V[e, t] (Cp values, zeros past C) = B^T d B and
    Hm[e, t] (F values) = A h A^T, the rows for one e T tiles apart, so that each of
    the 36 products reads its rows one after another. work holds 72 C + F."""
    cdef Py_ssize_t TH = (OH + 1) // 2, TW = (OW + 1) // 2
    cdef floating* patch = work
    cdef floating* tmp = patch + ELEMS * C
    cdef floating* zeros = tmp + ELEMS * C
    cdef const floating* hp[4]
    cdef Py_ssize_t ty, tx, t, e, i, j, y, x
    memset(zeros, 0, F * sizeof(floating))
    for ty in range(TH):
        for tx in range(TW):
            t = ty * TW + tx
            input_patch(img, SH, SW, C, 2 * ty - top, 2 * tx - left, patch, tmp,
                        V + t * Cp, T * Cp)
            if Cp > C:
                for e in range(ELEMS):
                    memset(V + (e * T + t) * Cp + C, 0, (Cp - C) * sizeof(floating))
            for i in range(2):
                for j in range(2):
                    y = 2 * ty + i
                    x = 2 * tx + j
                    hp[2 * i + j] = gout + (y * OW + x) * F if y < OH and x < OW else zeros
            grad_tile(hp[0], hp[1], hp[2], hp[3], Hm + t * F, T * F, F)


cdef void grad_sum(const floating* V, const floating* Hm, double* acc, Py_ssize_t tiles,
                   Py_ssize_t Cp, Py_ssize_t F, Py_ssize_t e, Py_ssize_t jb) noexcept nogil:
    """acc[e, :, panel jb] (F x NR, rows Cp apart) += Hm_e^T @ V_e over one image's tiles,
    summed in float32 per image; V_e and Hm_e start at e * tiles rows."""
    cdef floating t[6 * 16]
    cdef const floating* a[6]
    cdef Py_ssize_t nr = panel_width(V)
    cdef Py_ssize_t ib, f0, mr, r, j
    cdef double* row
    for ib in range((F + MR - 1) // MR):
        f0 = ib * MR
        mr = min(MR, F - f0)
        # Rows past F repeat the last filter; they are never added.
        for r in range(MR):
            a[r] = Hm + e * tiles * F + f0 + min(r, mr - 1)
        tile_kernel(a[0], a[1], a[2], a[3], a[4], a[5], tiles, F,
                    V + e * tiles * Cp + jb * nr, Cp, t, nr)
        for r in range(mr):
            row = acc + (e * F + f0 + r) * Cp + jb * nr
            for j in range(nr):
                row[j] += t[r * nr + j]


def grad_work_size(Py_ssize_t C, Py_ssize_t F, Py_ssize_t tiles, int itemsize):
    """Elements of one thread's workspace for conv5_backward_weights."""
    cdef Py_ssize_t nr = 16 if itemsize == 4 else 8
    cdef Py_ssize_t Cp = (C + nr - 1) // nr * nr
    return tiles * ELEMS * (Cp + F) + 2 * ELEMS * C + F


def conv5_backward_weights(const floating[:, :, :, ::1] x,
                          const floating[:, :, :, ::1] grad_out, double[:, :, :, ::1] partial,
                          floating[:, ::1] work, Py_ssize_t top, Py_ssize_t left,
                          Py_ssize_t chunk, int num_threads):
    """partial[k] (36, F, Cp) = the Winograd-domain kernel gradient of images
    k * chunk .. (k + 1) * chunk, the sum over their tiles of (A h A^T) . (B^T d B), for
    5x5 kernels, stride 1; x framed as in conv5_forward. Cp is C rounded up to NR.

    A chunk is one work unit: image by image, in order, its tiles are transformed into
    work[thread] (V (36, tiles, Cp), then Hm (36, tiles, F), then grad_image's
    scratch) and the 36 products added to partial[k]. The caller sums the chunks in
    order, so no sum depends on the thread count."""
    cdef Py_ssize_t N = x.shape[0], SH = x.shape[1], SW = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t OH = grad_out.shape[1], OW = grad_out.shape[2], F = grad_out.shape[3]
    cdef Py_ssize_t Cp = partial.shape[3]
    cdef Py_ssize_t tiles = ((OH + 1) // 2) * ((OW + 1) // 2)
    cdef Py_ssize_t panels = Cp // panel_width(&x[0, 0, 0, 0])
    cdef Py_ssize_t k, n, task
    cdef floating* V
    cdef floating* Hm
    with nogil:
        # Dynamic: each chunk has its own partial sum, whichever thread computes it.
        for k in prange(partial.shape[0], num_threads=num_threads, schedule="dynamic"):
            V = &work[threadid(), 0]
            Hm = V + tiles * ELEMS * Cp
            memset(&partial[k, 0, 0, 0], 0, ELEMS * F * Cp * sizeof(double))
            for n in range(k * chunk, min(N, (k + 1) * chunk)):
                grad_image(&x[n, 0, 0, 0], &grad_out[n, 0, 0, 0], V, Hm, tiles,
                           Hm + tiles * ELEMS * F, SH, SW, C, Cp, OH, OW, F, top, left)
                for task in range(ELEMS * panels):
                    grad_sum(V, Hm, &partial[k, 0, 0, 0], tiles, Cp, F, task // panels,
                             task % panels)
