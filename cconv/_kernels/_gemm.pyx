"""Matrix products for the heavy layers: dense layers and multi-channel convolutions.

All of them run _tile's register-blocked micro-kernel: a tile of MR rows by NR columns
(two vectors of the CPU level: at AVX-512 12 x 32 float32, at AVX2 6 x 16), MR rows of
A read through their own pointers and the matching rows of B one after another. A row
of A is walked in "runs": `nruns` stretches of `runlen` elements `a_step` apart, the
stretches `run_stride` apart. That is how a convolution is a product without an im2col
copy: with the image copied into a zero-padded frame (channels-last), the receptive
field of one output pixel is KH runs of KW * C contiguous values, and a kernel-gradient
row (one tap and channel) is OH runs of OW values C apart.

Determinism: every output element is one chain of FMAs in a fixed order (k ascending,
blocks of k in order, images in order); how tiles are shared among threads, and the
tile shape of the CPU level, never change it.

Every array here has been checked by cconv.ops; bounds checks are off.
"""
from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.stdint cimport int32_t
from libc.string cimport memcpy, memset

from cconv._kernels._convpool cimport band_of, pool_rows
from cconv._kernels._activations cimport activate, check_activation_code
from cconv._kernels._simd cimport VD_LANES, VF_LANES
from cconv._kernels._tile cimport TILE_MR, TILE_NR, panel_width, tile


cdef enum:
    MR = TILE_MR   # rows per tile
    KC = 8192 // TILE_NR  # depth of a dense block: a packed B panel (KC x NR, 32 KiB) stays in L1
    MC = 96        # rows of A per pass over a packed B block: their KC slice stays in L2
    NC_PANELS = 16  # NR-wide column panels per dense task
    KC_ROWS = 64   # depth of a block when a short A reads a row-major B in place ...
    NC_WIDE = 1024 // TILE_NR  # ... and its most panels: whole rows of a 1024-wide B
    # Packed B: a dense block; a short A's, (KC_ROWS + 1) * NC_WIDE * NR, is smaller.
    BPACK = (KC + 1) * NC_PANELS * TILE_NR


cdef inline void tile_to(const floating** a, Py_ssize_t nruns, Py_ssize_t runlen,
                         Py_ssize_t run_stride, Py_ssize_t a_step, const floating* b,
                         Py_ssize_t ldb, floating* c, Py_ssize_t c_rs, Py_ssize_t c_cs,
                         const floating* init, Py_ssize_t mr, Py_ssize_t nv) noexcept nogil:
    """C's mr x nv tile at c (rows c_rs, columns c_cs apart) = init[0:nv] per row + A.B,
    or += A.B when init is NULL (see _tile.tile). Straight between C and the registers
    when the tile's rows are whole and contiguous, else through a buffer."""
    cdef floating t[TILE_MR * TILE_NR]
    cdef floating row[TILE_NR]
    cdef Py_ssize_t nr = panel_width(c)
    cdef Py_ssize_t j
    if nv == nr and c_cs == 1:
        tile(a, nruns, runlen, run_stride, a_step, b, ldb, c, c_rs, init, mr)
        return
    if init != NULL:  # a whole row, zero past nv
        for j in range(nr):
            row[j] = init[j] if j < nv else 0
        init = row
    else:
        load_tile(t, c, c_rs, c_cs, mr, nv)
    tile(a, nruns, runlen, run_stride, a_step, b, ldb, t, nr, init, mr)
    store_tile(t, c, c_rs, c_cs, mr, nv)


cdef inline void load_tile(floating* t, const floating* c, Py_ssize_t rs, Py_ssize_t cs,
                           Py_ssize_t mr, Py_ssize_t nv) noexcept nogil:
    """t (mr rows, NR wide) = the mr x nv tile of C at c, zeros past nv."""
    cdef Py_ssize_t nr = panel_width(t)
    cdef Py_ssize_t r, j
    for r in range(mr):
        for j in range(nr):
            t[r * nr + j] = c[r * rs + j * cs] if j < nv else 0


cdef inline void store_tile(const floating* t, floating* c, Py_ssize_t rs, Py_ssize_t cs,
                            Py_ssize_t mr, Py_ssize_t nv) noexcept nogil:
    cdef Py_ssize_t nr = panel_width(t)
    cdef Py_ssize_t r, j
    for r in range(mr):
        for j in range(nv):
            c[r * rs + j * cs] = t[r * nr + j]


# ---------------------------------------------------------------- dense products

cdef inline void pack_panel(const floating* B, Py_ssize_t ldb, Py_ssize_t K, Py_ssize_t nv,
                            floating* dst) noexcept nogil:
    """dst (K, NR) = B[0:K, 0:nv], zero-padded. Read in place, rows of a wide B lie a
    multiple of 4 KiB apart and fight over the same few cache sets."""
    cdef Py_ssize_t nr = panel_width(B)
    cdef Py_ssize_t k, j
    for k in range(K):
        for j in range(nr):
            dst[k * nr + j] = B[k * ldb + j] if j < nv else 0


# An 8 x 8 float transpose in AVX registers, d[k * ds + j] = s[j * ss + k], for packing the
# columns of a transposed B; other builds pack them an element at a time.
cdef extern from *:
    """
    #include <stddef.h>
    #if defined(__AVX__)
    #include <immintrin.h>
    #define CCONV_AVX 1
    static inline void cconv_transpose8(const float* s, ptrdiff_t ss, float* d, ptrdiff_t ds) {
        __m256 r0 = _mm256_loadu_ps(s), r1 = _mm256_loadu_ps(s + ss);
        __m256 r2 = _mm256_loadu_ps(s + 2 * ss), r3 = _mm256_loadu_ps(s + 3 * ss);
        __m256 r4 = _mm256_loadu_ps(s + 4 * ss), r5 = _mm256_loadu_ps(s + 5 * ss);
        __m256 r6 = _mm256_loadu_ps(s + 6 * ss), r7 = _mm256_loadu_ps(s + 7 * ss);
        __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
        __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
        __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
        __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
        __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
        __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
        __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
        __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
        _mm256_storeu_ps(d, _mm256_permute2f128_ps(u0, u4, 0x20));
        _mm256_storeu_ps(d + ds, _mm256_permute2f128_ps(u1, u5, 0x20));
        _mm256_storeu_ps(d + 2 * ds, _mm256_permute2f128_ps(u2, u6, 0x20));
        _mm256_storeu_ps(d + 3 * ds, _mm256_permute2f128_ps(u3, u7, 0x20));
        _mm256_storeu_ps(d + 4 * ds, _mm256_permute2f128_ps(u0, u4, 0x31));
        _mm256_storeu_ps(d + 5 * ds, _mm256_permute2f128_ps(u1, u5, 0x31));
        _mm256_storeu_ps(d + 6 * ds, _mm256_permute2f128_ps(u2, u6, 0x31));
        _mm256_storeu_ps(d + 7 * ds, _mm256_permute2f128_ps(u3, u7, 0x31));
    }
    #else
    #define CCONV_AVX 0
    static inline void cconv_transpose8(const float* s, ptrdiff_t ss, float* d, ptrdiff_t ds) {}
    #endif
    """
    const bint CCONV_AVX
    void transpose8 "cconv_transpose8"(const float* s, Py_ssize_t ss, float* d,
                                       Py_ssize_t ds) noexcept nogil


cdef inline void pack_b(const floating* B, Py_ssize_t b_rs, Py_ssize_t b_cs, Py_ssize_t K,
                        Py_ssize_t width, floating* dst, Py_ssize_t ps) noexcept nogil:
    """dst = B[0:K, 0:width] as NR-wide panels (K, NR) ps apart, zero-padded. A row-major
    B is read a row at a time across all panels: one sequential run per row, where a
    panel at a time would take one cache line from each row, rows a multiple of 4 KiB
    apart, which defeats the prefetchers. Any other B is read a column at a time."""
    cdef Py_ssize_t nr = panel_width(B)
    cdef Py_ssize_t full = width // nr
    cdef Py_ssize_t k, j, jb, k8
    cdef const floating* src
    cdef floating* d
    if b_cs == 1:
        for k in range(K):
            src = B + k * b_rs
            for jb in range(full):
                memcpy(dst + jb * ps + k * nr, src + jb * nr, nr * sizeof(floating))
            if full * nr < width:
                d = dst + full * ps + k * nr
                for j in range(nr):
                    d[j] = src[full * nr + j] if full * nr + j < width else 0
        return
    k8 = 0
    if floating is float:
        if CCONV_AVX and b_rs == 1:
            # Full panels, eight k at a time: NR / 8 transposes of 8 x 8 per eight rows.
            k8 = K - K % 8
            for jb in range(full):
                for k in range(0, k8, 8):
                    for j in range(0, nr, 8):
                        transpose8(B + (jb * nr + j) * b_cs + k, b_cs,
                                   dst + jb * ps + k * nr + j, nr)
    for jb in range((width + nr - 1) // nr):
        d = dst + jb * ps
        for j in range(nr):
            src = B + (jb * nr + j) * b_cs
            if jb * nr + j < width:
                for k in range(k8 if jb < full else 0, K):
                    d[k * nr + j] = src[k * b_rs]
            else:
                for k in range(K):
                    d[k * nr + j] = 0


cdef inline void pack_a(const floating* A, Py_ssize_t a_rs, Py_ssize_t a_cs, Py_ssize_t rows,
                        Py_ssize_t K, floating* dst) noexcept nogil:
    """dst (tiles, K, MR) = A[0:rows, 0:K] with the MR rows of a tile interleaved (zeros
    past the last row), so that the micro-kernel reads one contiguous run per tile
    instead of MR strided rows, which alias in the cache when a row is 4 KiB long."""
    cdef Py_ssize_t ib, k, r, mr
    cdef const floating* a
    cdef floating* d
    for ib in range((rows + MR - 1) // MR):
        a = A + ib * MR * a_rs
        d = dst + ib * K * MR
        mr = min(MR, rows - ib * MR)
        if mr == MR:
            for k in range(K):
                for r in range(MR):
                    d[k * MR + r] = a[r * a_rs + k * a_cs]
        else:
            for k in range(K):
                for r in range(MR):
                    d[k * MR + r] = a[r * a_rs + k * a_cs] if r < mr else 0


cdef void gemm_task(Py_ssize_t K,
                    const floating* A, Py_ssize_t a_rs, Py_ssize_t a_cs,
                    const floating* B, Py_ssize_t b_rs, Py_ssize_t b_cs,
                    floating* C, Py_ssize_t c_rs, Py_ssize_t c_cs, const floating* bias,
                    Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t j0, Py_ssize_t j1,
                    Py_ssize_t kc, bint short, floating* bpack,
                    floating* apack) noexcept nogil:
    """C[i0:i1, j0:j1] = A @ B (+ bias per column).

    B is packed kc deep at a time into bpack as NR-wide panels (kc, NR), one row of
    padding apart so that the rows of consecutive panels fall in different cache sets;
    they then serve every row of the task. Rows go MC at a time, their kc-deep slice of A
    packed into apack (tiles of kc x MR) unless A's tile rows are adjacent already."""
    cdef const floating* a[TILE_MR]
    cdef Py_ssize_t nr = panel_width(A)
    cdef Py_ssize_t panels = (j1 - j0 + nr - 1) // nr
    cdef Py_ssize_t ps = (kc + 1) * nr
    # A short A reuses each element of a row-major B too little to repay packing it: the
    # kernel reads B's rows in place (from L2; the rows of a panel alias in L1).
    cdef bint inplace = short and b_cs == 1 and (j1 - j0) % nr == 0
    # A short A's MR rows, often 4 KiB apart, are packed; a tall one would be packed once
    # per column block, at a cost that reading it in place does not have.
    cdef bint packa = short and a_rs != 1
    cdef Py_ssize_t ldb
    cdef const floating* bp
    cdef Py_ssize_t kb, k0, kl, jb, jj, nv, rb, r0, ib, ii, i_end, mr, tiles, ars, acs, r
    cdef const floating* ap
    cdef const floating* init
    cdef floating* c
    # Without a bias, tiles start from a row of zeros.
    cdef floating zeros[TILE_NR]
    for jj in range(TILE_NR):
        zeros[jj] = 0
    for kb in range((K + kc - 1) // kc):
        k0 = kb * kc
        kl = min(kc, K - k0)
        if not inplace:
            pack_b(B + k0 * b_rs + j0 * b_cs, b_rs, b_cs, kl, j1 - j0, bpack, ps)
        for rb in range((i1 - i0 + MC - 1) // MC):
            r0 = i0 + rb * MC
            i_end = min(i1, r0 + MC)
            if packa:
                pack_a(A + r0 * a_rs + k0 * a_cs, a_rs, a_cs, i_end - r0, kl, apack)
            tiles = (i_end - r0 + MR - 1) // MR
            for jb in range(panels):
                jj = j0 + jb * nr
                nv = min(nr, j1 - jj)
                for ib in range(tiles):
                    ii = r0 + ib * MR
                    mr = min(MR, i_end - ii)
                    if packa:
                        ap = apack + ib * kl * MR
                        ars = 1
                        acs = MR
                    else:
                        ap = A + ii * a_rs + k0 * a_cs
                        ars = a_rs
                        acs = a_cs
                    init = NULL
                    if k0 == 0:
                        init = bias + jj if bias != NULL else zeros
                    c = C + ii * c_rs + jj * c_cs
                    if inplace:
                        bp = B + k0 * b_rs + jj
                        ldb = b_rs
                    else:
                        bp = bpack + jb * ps
                        ldb = nr
                    # Rows past the matrix repeat its last row; they are never stored.
                    for r in range(MR):
                        a[r] = ap + min(r, mr - 1) * ars
                    tile_to(a, 1, kl, 0, acs, bp, ldb, c, c_rs, c_cs, init, mr, nv)


def gemm(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
         const floating[::1] a, Py_ssize_t a_rs, Py_ssize_t a_cs,
         const floating[::1] b, Py_ssize_t b_rs, Py_ssize_t b_cs,
         floating[::1] c, Py_ssize_t c_rs, Py_ssize_t c_cs, const floating[::1] bias,
         floating[:, ::1] work, int num_threads):
    """c (M x N, strides c_rs, c_cs) = a (M x K, strides a_rs, a_cs) @ b (K x N, strides
    b_rs, b_cs) + bias (N, or empty). work is (num_threads, pack_size()).

    Tasks are column blocks, each cut into row groups when there are too few blocks to
    keep every thread busy; every element's sum is the same whatever the cut, and
    whichever path below computes it. Blocks are NC_PANELS panels wide and KC deep,
    except for a short A (at most MC rows, a training batch) and a row-major B: then
    each thread takes one block of whole rows (up to NC_WIDE panels) that the kernel
    reads in place KC_ROWS deep at a time."""
    cdef Py_ssize_t nr = panel_width(&a[0])
    cdef bint short = M <= MC
    cdef Py_ssize_t kc = KC_ROWS if short and b_cs == 1 else KC
    cdef Py_ssize_t width = nr * NC_PANELS
    if short and b_cs == 1:
        # As wide as NC_WIDE allows, but a block per thread.
        width = nr * min(NC_WIDE, max(NC_PANELS, ((N + nr - 1) // nr + num_threads - 1)
                                      // num_threads))
    cdef Py_ssize_t col_blocks = (N + width - 1) // width
    cdef Py_ssize_t groups = max(1, min((2 * num_threads + col_blocks - 1) // col_blocks,
                                        (M + MC - 1) // MC))
    cdef Py_ssize_t rows = (M + groups - 1) // groups
    cdef const floating* bias_p = &bias[0] if bias.shape[0] > 0 else NULL
    cdef Py_ssize_t task, g, cb, tid
    with nogil:
        # Dynamic: on a shared machine a preempted thread leaves its work to the others.
        # No element's sum depends on which thread computes it.
        for task in prange(groups * col_blocks, num_threads=num_threads,
                           schedule="dynamic"):
            cb = task // groups
            g = task % groups
            tid = threadid()
            gemm_task(K, &a[0], a_rs, a_cs, &b[0], b_rs, b_cs, &c[0], c_rs, c_cs, bias_p,
                      g * rows, min(M, (g + 1) * rows), cb * width, min(N, (cb + 1) * width),
                      kc, short, &work[tid, 0], &work[tid, BPACK])


def tile_columns(int itemsize):
    """NR for float32 (itemsize 4) or float64 (8): ops packs weights in panels this wide."""
    return 2 * (VF_LANES if itemsize == 4 else VD_LANES)


def pack_size():
    """Elements of one thread's packing buffer for gemm: B's block, then A's."""
    return BPACK + MC * KC


# ---------------------------------------------------------------- convolutions

cdef void fill_frame(const floating* src, floating* frame, Py_ssize_t SH, Py_ssize_t SW,
                     Py_ssize_t C, Py_ssize_t Hp, Py_ssize_t Wp, Py_ssize_t top,
                     Py_ssize_t left) noexcept nogil:
    """frame (Hp, Wp, C) = src (SH, SW, C) placed at (top, left), zeros around it."""
    cdef Py_ssize_t y, row = Wp * C
    cdef Py_ssize_t right = (Wp - left - SW) * C
    if top > 0:
        memset(frame, 0, top * row * sizeof(floating))
    for y in range(SH):
        if left > 0:
            memset(frame + (top + y) * row, 0, left * C * sizeof(floating))
        memcpy(frame + (top + y) * row + left * C, src + y * SW * C, SW * C * sizeof(floating))
        if right > 0:
            memset(frame + (top + y) * row + (left + SW) * C, 0, right * sizeof(floating))
    if Hp - top - SH > 0:
        memset(frame + (top + SH) * row, 0, (Hp - top - SH) * row * sizeof(floating))


cdef void conv_image(const floating* frame, const floating* wpack, const floating* bias,
                     floating* out, Py_ssize_t C, Py_ssize_t KH, Py_ssize_t KW,
                     Py_ssize_t F, Py_ssize_t OH, Py_ssize_t OW, int act) noexcept nogil:
    """out (OH, OW, F) = act(frame * w + bias) for one framed image; wpack holds the
    kernels as NR-wide panels, (ceil(F / NR), KH*KW*C, NR)."""
    cdef const floating* a[TILE_MR]
    cdef floating zeros[TILE_NR]
    cdef Py_ssize_t nr = panel_width(frame)
    cdef Py_ssize_t Wp = OW + KW - 1, P = OH * OW, K = KH * KW * C
    cdef Py_ssize_t jb, ib, j0, nv, p0, mr, r, p
    memset(zeros, 0, sizeof(zeros))
    for jb in range((F + nr - 1) // nr):
        j0 = jb * nr
        nv = min(nr, F - j0)
        for ib in range((P + MR - 1) // MR):
            p0 = ib * MR
            mr = min(MR, P - p0)
            # Rows past the image repeat its last pixel; they are never stored.
            for r in range(MR):
                p = p0 + min(r, mr - 1)
                a[r] = frame + ((p // OW) * Wp + p % OW) * C
            tile_to(a, KH, KW * C, Wp * C, 1, wpack + jb * K * nr, nr, out + p0 * F + j0, F,
                    1, bias + j0 if bias != NULL else zeros, mr, nv)
            if act != 0:
                for r in range(mr):
                    activate(out + (p0 + r) * F + j0, nv, act)


def conv_forward(const floating[:, :, :, ::1] src, const floating[:, :, ::1] wpack,
                 const floating[::1] bias, floating[:, :, :, ::1] out,
                 floating[:, ::1] frames, Py_ssize_t KH, Py_ssize_t KW,
                 Py_ssize_t top, Py_ssize_t left, int act, int num_threads):
    """out = act(conv(src, w) + bias), stride 1, any number of channels.

    src (N, SH, SW, C) is framed with `top` zero rows above and `left` columns to its
    left into frames[thread] (Hp * Wp * C, Hp = OH + KH - 1, Wp = OW + KW - 1); wpack is
    w (KH, KW, C, F) as zero-padded NR-wide panels (ceil(F / NR), KH*KW*C, NR); bias
    (F,) or empty. Also serves the input gradient (src = grad_out, w the flipped,
    transposed kernels)."""
    cdef Py_ssize_t N = src.shape[0], SH = src.shape[1], SW = src.shape[2]
    cdef Py_ssize_t C = src.shape[3]
    cdef Py_ssize_t OH = out.shape[1], OW = out.shape[2], F = out.shape[3]
    cdef const floating* bias_p = &bias[0] if bias.shape[0] > 0 else NULL
    cdef floating* frame
    cdef Py_ssize_t n
    check_activation_code(act)
    with nogil:
        # Dynamic, as in gemm: images are independent, so any assignment gives the same bits.
        for n in prange(N, num_threads=num_threads, schedule="dynamic"):
            frame = &frames[threadid(), 0]
            fill_frame(&src[n, 0, 0, 0], frame, SH, SW, C, OH + KH - 1, OW + KW - 1,
                       top, left)
            conv_image(frame, &wpack[0, 0, 0], bias_p, &out[n, 0, 0, 0], C, KH, KW, F,
                       OH, OW, act)


cdef void kernel_grad_worker(const floating* x, const floating* grad_out, floating* gw,
                             floating* frame, floating* gpack,
                             Py_ssize_t N, Py_ssize_t H, Py_ssize_t W, Py_ssize_t C,
                             Py_ssize_t KH, Py_ssize_t KW, Py_ssize_t F, Py_ssize_t OH,
                             Py_ssize_t OW, Py_ssize_t top, Py_ssize_t left,
                             Py_ssize_t task0, Py_ssize_t task1) noexcept nogil:
    """Tiles task0..task1 of grad_w (K x F). Each image is framed and its grad_out packed
    into panels (ceil(F / NR), OH*OW, NR), then added to every tile, images in order."""
    cdef const floating* a[TILE_MR]
    cdef floating zeros[TILE_NR]
    cdef Py_ssize_t nr = panel_width(x)
    cdef Py_ssize_t Hp = OH + KH - 1, Wp = OW + KW - 1, P = OH * OW
    cdef Py_ssize_t K = KH * KW * C
    cdef Py_ssize_t row_tiles = (K + MR - 1) // MR
    cdef Py_ssize_t n, task, jb, i0, j0, mr, nv, r, k
    memset(zeros, 0, sizeof(zeros))
    for n in range(N):
        fill_frame(x + n * H * W * C, frame, H, W, C, Hp, Wp, top, left)
        for jb in range((F + nr - 1) // nr):
            pack_panel(grad_out + n * P * F + jb * nr, F, P, min(nr, F - jb * nr),
                       gpack + jb * P * nr)
        for task in range(task0, task1):
            jb = task // row_tiles
            j0 = jb * nr
            i0 = (task % row_tiles) * MR
            mr = min(MR, K - i0)
            nv = min(nr, F - j0)
            # Row k of the product is tap (ky, kx) = divmod(k // C, KW), channel k % C.
            for r in range(MR):
                k = i0 + min(r, mr - 1)
                a[r] = frame + ((k // (KW * C)) * Wp + (k // C) % KW) * C + k % C
            tile_to(a, OH, OW, Wp * C, C, gpack + jb * P * nr, nr, gw + i0 * F + j0, F, 1,
                    zeros if n == 0 else NULL, mr, nv)


def conv_backward_weights(const floating[:, :, :, ::1] x,
                         const floating[:, :, :, ::1] grad_out,
                         floating[:, :, :, ::1] grad_w, floating[:, ::1] work,
                         Py_ssize_t top, Py_ssize_t left, int num_threads):
    """grad_w (KH, KW, C, F) = sum over images and pixels of window x grad_out.

    Output tiles (MR rows of (ky, kx, c) by NR filters, panel-major so that a worker's
    tiles share few panels) are split among work.shape[0] workers. Each worker frames
    every image itself and adds it to its tiles, images in order, so the bits do not
    depend on the split. work[worker] holds Hp*Wp*C + ceil(F / NR)*OH*OW*NR."""
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t KH = grad_w.shape[0], KW = grad_w.shape[1], F = grad_w.shape[3]
    cdef Py_ssize_t OH = grad_out.shape[1], OW = grad_out.shape[2]
    cdef Py_ssize_t frame_size = (OH + KH - 1) * (OW + KW - 1) * C
    cdef Py_ssize_t nr = panel_width(&grad_w[0, 0, 0, 0])
    cdef Py_ssize_t tasks = ((KH * KW * C + MR - 1) // MR) * ((F + nr - 1) // nr)
    cdef Py_ssize_t workers = work.shape[0]
    cdef Py_ssize_t worker
    with nogil:
        for worker in prange(workers, num_threads=num_threads, schedule="static"):
            kernel_grad_worker(&x[0, 0, 0, 0], &grad_out[0, 0, 0, 0], &grad_w[0, 0, 0, 0],
                               &work[worker, 0], &work[worker, frame_size], N, H, W, C,
                               KH, KW, F, OH, OW, top, left, worker * tasks // workers,
                               (worker + 1) * tasks // workers)


def conv_pool_forward(const floating[:, :, :, ::1] src, const floating[:, :, ::1] wpack,
                      const floating[::1] bias, floating[:, :, :, ::1] out,
                      int32_t[:, :, :, ::1] argmax, floating[:, ::1] work,
                      Py_ssize_t KH, Py_ssize_t KW, Py_ssize_t top, Py_ssize_t left,
                      Py_ssize_t OH, Py_ssize_t OW, int act, Py_ssize_t ph, Py_ssize_t pw,
                      Py_ssize_t pool_top, Py_ssize_t pool_left, Py_ssize_t band_rows,
                      int num_threads):
    """out = max_pool(act(conv(src, w) + bias)) without the convolution's output ever
    leaving the cache: the pooling windows of band_rows pooled rows at a time are
    computed by conv_image into a per-thread band and pooled from there (see
    _convpool.pool_rows). Each pixel's sum is conv_forward's, in the same order, so the
    result has the bits of conv_forward followed by max pooling.

    Arguments as for conv_forward, with OH x OW the convolution's output size; out
    (N, POH, POW, F); argmax the same shape, or empty to skip it; (ph, pw) the window,
    (pool_top, pool_left) the pooling's padding. work[thread] holds the frame
    ((OH + KH - 1) * (OW + KW - 1) * C) and then the band (band_rows * ph * OW * F)."""
    cdef Py_ssize_t N = src.shape[0], SH = src.shape[1], SW = src.shape[2]
    cdef Py_ssize_t C = src.shape[3]
    cdef Py_ssize_t POH = out.shape[1], POW = out.shape[2], F = out.shape[3]
    cdef Py_ssize_t Hp = OH + KH - 1, Wp = OW + KW - 1
    cdef Py_ssize_t bands = (POH + band_rows - 1) // band_rows
    cdef const floating* bias_p = &bias[0] if bias.shape[0] > 0 else NULL
    cdef bint track = argmax.shape[0] > 0
    cdef floating* frame
    cdef floating* band
    cdef int32_t* arg_n
    cdef Py_ssize_t n, bi, oy0, oy1, r0, r1
    check_activation_code(act)
    with nogil:
        # Dynamic, as in conv_forward: images are independent.
        for n in prange(N, num_threads=num_threads, schedule="dynamic"):
            frame = &work[threadid(), 0]
            band = frame + Hp * Wp * C
            arg_n = &argmax[n, 0, 0, 0] if track else NULL
            fill_frame(&src[n, 0, 0, 0], frame, SH, SW, C, Hp, Wp, top, left)
            for bi in range(bands):
                oy0, oy1, r0, r1 = band_of(bi, band_rows, POH, OH, ph, pool_top)
                # The band's rows are an image of their own whose frame starts r0 rows down.
                conv_image(frame + r0 * Wp * C, &wpack[0, 0, 0], bias_p, band, C, KH, KW, F,
                           r1 - r0, OW, act)
                pool_rows(band, r0, OH, OW, F, oy0, oy1, POW, ph, pw, pool_top, pool_left,
                          &out[n, 0, 0, 0], arg_n)
