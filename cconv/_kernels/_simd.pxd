# Math shared by the kernel modules, inline: the SIMD layer, then tanh for float32 and
# float64, cconv's own and written once on the layer, so that a level gives the same bits
# on any CPU and every level with FMA gives the same bits (no libm or libmvec tanh, whose
# last bits vary with the vector width and the CPU).
from cython cimport floating



# The SIMD layer: one vector type per dtype whose width is the build's CPU level (see
# _levels.py): AVX-512 (16 float32), AVX2 + FMA (8), SSE4.2 on the x86-64 default level
# (4), NEON on aarch64 (4), else one scalar. Kernels are written once against these
# names. Every fused multiply-add is explicit (the build passes -ffp-contract=off), so a
# result does not depend on the vector width: levels with FMA give the same bits. The
# x86-64 default level has no FMA instruction, so there fma is a multiply then an add.
cdef extern from * nogil:
    """
    #include <math.h>
    #if defined(__AVX512F__)
    #include <immintrin.h>
    typedef __m512 cconv_vf;
    typedef __m512d cconv_vd;
    #define CCONV_VF_LANES 16
    #define CCONV_VD_LANES 8
    #define CCONV_HAVE_FMA 1
    #define cconv_vf_zero() _mm512_setzero_ps()
    #define cconv_vd_zero() _mm512_setzero_pd()
    #define cconv_vf_set1(x) _mm512_set1_ps(x)
    #define cconv_vd_set1(x) _mm512_set1_pd(x)
    #define cconv_vf_load(p) _mm512_loadu_ps(p)
    #define cconv_vd_load(p) _mm512_loadu_pd(p)
    #define cconv_vf_store(p, v) _mm512_storeu_ps((p), (v))
    #define cconv_vd_store(p, v) _mm512_storeu_pd((p), (v))
    #define cconv_vf_add(a, b) _mm512_add_ps((a), (b))
    #define cconv_vd_add(a, b) _mm512_add_pd((a), (b))
    #define cconv_vf_sub(a, b) _mm512_sub_ps((a), (b))
    #define cconv_vd_sub(a, b) _mm512_sub_pd((a), (b))
    #define cconv_vf_mul(a, b) _mm512_mul_ps((a), (b))
    #define cconv_vd_mul(a, b) _mm512_mul_pd((a), (b))
    #define cconv_vf_div(a, b) _mm512_div_ps((a), (b))
    #define cconv_vd_div(a, b) _mm512_div_pd((a), (b))
    #define cconv_vf_sqrt(a) _mm512_sqrt_ps(a)
    #define cconv_vd_sqrt(a) _mm512_sqrt_pd(a)
    #define cconv_vf_min(a, b) _mm512_min_ps((a), (b))
    #define cconv_vd_min(a, b) _mm512_min_pd((a), (b))
    #define cconv_vf_max(a, b) _mm512_max_ps((a), (b))
    #define cconv_vd_max(a, b) _mm512_max_pd((a), (b))
    #define cconv_vf_fma(a, b, acc) _mm512_fmadd_ps((a), (b), (acc))
    #define cconv_vd_fma(a, b, acc) _mm512_fmadd_pd((a), (b), (acc))
    #define cconv_vf_first(v) _mm512_cvtss_f32(v)
    #define cconv_vd_first(v) _mm512_cvtsd_f64(v)
    #elif defined(__AVX2__) && (defined(__FMA__) || defined(_MSC_VER))
    /* MSVC's /arch:AVX2 implies FMA but does not define __FMA__; nor does it define
       __SSE2__, which every x64 CPU has. */
    #include <immintrin.h>
    typedef __m256 cconv_vf;
    typedef __m256d cconv_vd;
    #define CCONV_VF_LANES 8
    #define CCONV_VD_LANES 4
    #define CCONV_HAVE_FMA 1
    #define cconv_vf_zero() _mm256_setzero_ps()
    #define cconv_vd_zero() _mm256_setzero_pd()
    #define cconv_vf_set1(x) _mm256_set1_ps(x)
    #define cconv_vd_set1(x) _mm256_set1_pd(x)
    #define cconv_vf_load(p) _mm256_loadu_ps(p)
    #define cconv_vd_load(p) _mm256_loadu_pd(p)
    #define cconv_vf_store(p, v) _mm256_storeu_ps((p), (v))
    #define cconv_vd_store(p, v) _mm256_storeu_pd((p), (v))
    #define cconv_vf_add(a, b) _mm256_add_ps((a), (b))
    #define cconv_vd_add(a, b) _mm256_add_pd((a), (b))
    #define cconv_vf_sub(a, b) _mm256_sub_ps((a), (b))
    #define cconv_vd_sub(a, b) _mm256_sub_pd((a), (b))
    #define cconv_vf_mul(a, b) _mm256_mul_ps((a), (b))
    #define cconv_vd_mul(a, b) _mm256_mul_pd((a), (b))
    #define cconv_vf_div(a, b) _mm256_div_ps((a), (b))
    #define cconv_vd_div(a, b) _mm256_div_pd((a), (b))
    #define cconv_vf_sqrt(a) _mm256_sqrt_ps(a)
    #define cconv_vd_sqrt(a) _mm256_sqrt_pd(a)
    #define cconv_vf_min(a, b) _mm256_min_ps((a), (b))
    #define cconv_vd_min(a, b) _mm256_min_pd((a), (b))
    #define cconv_vf_max(a, b) _mm256_max_ps((a), (b))
    #define cconv_vd_max(a, b) _mm256_max_pd((a), (b))
    #define cconv_vf_fma(a, b, acc) _mm256_fmadd_ps((a), (b), (acc))
    #define cconv_vd_fma(a, b, acc) _mm256_fmadd_pd((a), (b), (acc))
    #define cconv_vf_first(v) _mm256_cvtss_f32(v)
    #define cconv_vd_first(v) _mm256_cvtsd_f64(v)
    #elif defined(__SSE2__) || defined(_M_X64)
    #include <emmintrin.h>
    typedef __m128 cconv_vf;
    typedef __m128d cconv_vd;
    #define CCONV_VF_LANES 4
    #define CCONV_VD_LANES 2
    #define CCONV_HAVE_FMA 0
    #define cconv_vf_zero() _mm_setzero_ps()
    #define cconv_vd_zero() _mm_setzero_pd()
    #define cconv_vf_set1(x) _mm_set1_ps(x)
    #define cconv_vd_set1(x) _mm_set1_pd(x)
    #define cconv_vf_load(p) _mm_loadu_ps(p)
    #define cconv_vd_load(p) _mm_loadu_pd(p)
    #define cconv_vf_store(p, v) _mm_storeu_ps((p), (v))
    #define cconv_vd_store(p, v) _mm_storeu_pd((p), (v))
    #define cconv_vf_add(a, b) _mm_add_ps((a), (b))
    #define cconv_vd_add(a, b) _mm_add_pd((a), (b))
    #define cconv_vf_sub(a, b) _mm_sub_ps((a), (b))
    #define cconv_vd_sub(a, b) _mm_sub_pd((a), (b))
    #define cconv_vf_mul(a, b) _mm_mul_ps((a), (b))
    #define cconv_vd_mul(a, b) _mm_mul_pd((a), (b))
    #define cconv_vf_div(a, b) _mm_div_ps((a), (b))
    #define cconv_vd_div(a, b) _mm_div_pd((a), (b))
    #define cconv_vf_sqrt(a) _mm_sqrt_ps(a)
    #define cconv_vd_sqrt(a) _mm_sqrt_pd(a)
    #define cconv_vf_min(a, b) _mm_min_ps((a), (b))
    #define cconv_vd_min(a, b) _mm_min_pd((a), (b))
    #define cconv_vf_max(a, b) _mm_max_ps((a), (b))
    #define cconv_vd_max(a, b) _mm_max_pd((a), (b))
    #define cconv_vf_fma(a, b, acc) _mm_add_ps(_mm_mul_ps((a), (b)), (acc))
    #define cconv_vd_fma(a, b, acc) _mm_add_pd(_mm_mul_pd((a), (b)), (acc))
    #define cconv_vf_first(v) _mm_cvtss_f32(v)
    #define cconv_vd_first(v) _mm_cvtsd_f64(v)
    #elif defined(__aarch64__) && defined(__ARM_NEON)
    #include <arm_neon.h>
    typedef float32x4_t cconv_vf;
    typedef float64x2_t cconv_vd;
    #define CCONV_VF_LANES 4
    #define CCONV_VD_LANES 2
    #define CCONV_HAVE_FMA 1
    #define cconv_vf_zero() vdupq_n_f32(0.0f)
    #define cconv_vd_zero() vdupq_n_f64(0.0)
    #define cconv_vf_set1(x) vdupq_n_f32(x)
    #define cconv_vd_set1(x) vdupq_n_f64(x)
    #define cconv_vf_load(p) vld1q_f32(p)
    #define cconv_vd_load(p) vld1q_f64(p)
    #define cconv_vf_store(p, v) vst1q_f32((p), (v))
    #define cconv_vd_store(p, v) vst1q_f64((p), (v))
    #define cconv_vf_add(a, b) vaddq_f32((a), (b))
    #define cconv_vd_add(a, b) vaddq_f64((a), (b))
    #define cconv_vf_sub(a, b) vsubq_f32((a), (b))
    #define cconv_vd_sub(a, b) vsubq_f64((a), (b))
    #define cconv_vf_mul(a, b) vmulq_f32((a), (b))
    #define cconv_vd_mul(a, b) vmulq_f64((a), (b))
    #define cconv_vf_div(a, b) vdivq_f32((a), (b))
    #define cconv_vd_div(a, b) vdivq_f64((a), (b))
    #define cconv_vf_sqrt(a) vsqrtq_f32(a)
    #define cconv_vd_sqrt(a) vsqrtq_f64(a)
    #define cconv_vf_min(a, b) vminq_f32((a), (b))
    #define cconv_vd_min(a, b) vminq_f64((a), (b))
    #define cconv_vf_max(a, b) vmaxq_f32((a), (b))
    #define cconv_vd_max(a, b) vmaxq_f64((a), (b))
    #define cconv_vf_fma(a, b, acc) vfmaq_f32((acc), (a), (b))
    #define cconv_vd_fma(a, b, acc) vfmaq_f64((acc), (a), (b))
    #define cconv_vf_first(v) vgetq_lane_f32((v), 0)
    #define cconv_vd_first(v) vgetq_lane_f64((v), 0)
    #else
    typedef float cconv_vf;
    typedef double cconv_vd;
    #define CCONV_VF_LANES 1
    #define CCONV_VD_LANES 1
    #define CCONV_HAVE_FMA 0
    #define cconv_vf_zero() 0.0f
    #define cconv_vd_zero() 0.0
    #define cconv_vf_set1(x) ((float)(x))
    #define cconv_vd_set1(x) ((double)(x))
    #define cconv_vf_load(p) (*(p))
    #define cconv_vd_load(p) (*(p))
    #define cconv_vf_store(p, v) (*(p) = (v))
    #define cconv_vd_store(p, v) (*(p) = (v))
    #define cconv_vf_add(a, b) ((a) + (b))
    #define cconv_vd_add(a, b) ((a) + (b))
    #define cconv_vf_sub(a, b) ((a) - (b))
    #define cconv_vd_sub(a, b) ((a) - (b))
    #define cconv_vf_mul(a, b) ((a) * (b))
    #define cconv_vd_mul(a, b) ((a) * (b))
    #define cconv_vf_div(a, b) ((a) / (b))
    #define cconv_vd_div(a, b) ((a) / (b))
    #define cconv_vf_sqrt(a) sqrtf(a)
    #define cconv_vd_sqrt(a) sqrt(a)
    #define cconv_vf_min(a, b) ((a) < (b) ? (a) : (b))
    #define cconv_vd_min(a, b) ((a) < (b) ? (a) : (b))
    #define cconv_vf_max(a, b) ((a) > (b) ? (a) : (b))
    #define cconv_vd_max(a, b) ((a) > (b) ? (a) : (b))
    #define cconv_vf_fma(a, b, acc) ((a) * (b) + (acc))
    #define cconv_vd_fma(a, b, acc) ((a) * (b) + (acc))
    #define cconv_vf_first(v) (v)
    #define cconv_vd_first(v) (v)
    #endif
    /* A scalar times a vector, added: the broadcast-FMA of register-blocked kernels. */
    #define cconv_vf_madd(x, w, acc) cconv_vf_fma(cconv_vf_set1(x), (w), (acc))
    #define cconv_vd_madd(x, w, acc) cconv_vd_fma(cconv_vd_set1(x), (w), (acc))
    /* Scalar fma with the level's rounding: one rounding where the level has FMA. */
    #if CCONV_HAVE_FMA
    #define cconv_fmaf(a, b, c) fmaf((a), (b), (c))
    #define cconv_fma(a, b, c) fma((a), (b), (c))
    #else
    #define cconv_fmaf(a, b, c) ((a) * (b) + (c))
    #define cconv_fma(a, b, c) ((a) * (b) + (c))
    #endif

    /* tanh for float32 as x * P(x^2) / Q(x^2), both of degree 4 in x^2, with x clamped
       to [-8, 8]: a minimax fit of relative error made for cconv (3.3e-8 in exact
       arithmetic). All coefficients are positive, so nothing cancels; tanh(8) is
       1 - 2.3e-7. Error against tanh, every float32 checked (tools/check_tanh.py):
       < 3.7e-7 with FMA, < 3.9e-7 without (x86-64 default level, whose unfused
       rounding is why the result is clamped to [-1, 1]). Written once on the layer's vectors; the scalar form takes one
       lane, so every path of a level gives the same bits. */
    #define CCONV_TANH_LIM 8.0f
    #define CCONV_TANH_P3 1.3319577852503073e-08f
    #define CCONV_TANH_P2 2.0579624965682738e-05f
    #define CCONV_TANH_P1 3.4936116883939063e-03f
    #define CCONV_TANH_P0 1.3379303324748443e-01f
    #define CCONV_TANH_Q3 7.7609924182223179e-07f
    #define CCONV_TANH_Q2 3.2825339540148995e-04f
    #define CCONV_TANH_Q1 2.5869276098076096e-02f
    #define CCONV_TANH_Q0 4.6712619591919868e-01f
    static inline cconv_vf cconv_vf_tanh(cconv_vf v) {
        const cconv_vf lim = cconv_vf_set1(CCONV_TANH_LIM), one = cconv_vf_set1(1.0f);
        const cconv_vf minus_lim = cconv_vf_set1(-CCONV_TANH_LIM), minus_one = cconv_vf_set1(-1.0f);
        cconv_vf x = cconv_vf_max(minus_lim, cconv_vf_min(lim, v));  /* a NaN stays */
        cconv_vf u = cconv_vf_mul(x, x);
        cconv_vf p = cconv_vf_fma(cconv_vf_set1(CCONV_TANH_P3), u, cconv_vf_set1(CCONV_TANH_P2));
        cconv_vf q = cconv_vf_fma(cconv_vf_set1(CCONV_TANH_Q3), u, cconv_vf_set1(CCONV_TANH_Q2));
        p = cconv_vf_fma(p, u, cconv_vf_set1(CCONV_TANH_P1));
        q = cconv_vf_fma(q, u, cconv_vf_set1(CCONV_TANH_Q1));
        p = cconv_vf_fma(p, u, cconv_vf_set1(CCONV_TANH_P0));
        q = cconv_vf_fma(q, u, cconv_vf_set1(CCONV_TANH_Q0));
        p = cconv_vf_fma(p, u, one);
        q = cconv_vf_fma(q, u, one);
        cconv_vf y = cconv_vf_div(cconv_vf_mul(x, p), q);
        return cconv_vf_max(minus_one, cconv_vf_min(one, y));
    }
    static inline float cconv_tanhf(float v) {
        return cconv_vf_first(cconv_vf_tanh(cconv_vf_set1(v)));
    }
    """
    ctypedef struct vf "cconv_vf":
        pass
    ctypedef struct vd "cconv_vd":
        pass
    const Py_ssize_t VF_LANES "CCONV_VF_LANES"
    const Py_ssize_t VD_LANES "CCONV_VD_LANES"
    vf vf_zero "cconv_vf_zero"()
    vd vd_zero "cconv_vd_zero"()
    vf vf_load "cconv_vf_load"(const float* p)
    vd vd_load "cconv_vd_load"(const double* p)
    void vf_store "cconv_vf_store"(float* p, vf v)
    void vd_store "cconv_vd_store"(double* p, vd v)
    vf vf_madd "cconv_vf_madd"(float x, vf w, vf acc)
    vd vd_madd "cconv_vd_madd"(double x, vd w, vd acc)
    vf vf_set1 "cconv_vf_set1"(float x)
    vd vd_set1 "cconv_vd_set1"(double x)
    vf vf_add "cconv_vf_add"(vf a, vf b)
    vd vd_add "cconv_vd_add"(vd a, vd b)
    vf vf_fma "cconv_vf_fma"(vf a, vf b, vf acc)
    vd vd_fma "cconv_vd_fma"(vd a, vd b, vd acc)
    vf vf_sub "cconv_vf_sub"(vf a, vf b)
    vd vd_sub "cconv_vd_sub"(vd a, vd b)
    float vf_first "cconv_vf_first"(vf v)
    double vd_first "cconv_vd_first"(vd v)
    vf vf_mul "cconv_vf_mul"(vf a, vf b)
    vd vd_mul "cconv_vd_mul"(vd a, vd b)
    vf vf_div "cconv_vf_div"(vf a, vf b)
    vd vd_div "cconv_vd_div"(vd a, vd b)
    vf vf_min "cconv_vf_min"(vf a, vf b)
    vd vd_min "cconv_vd_min"(vd a, vd b)
    vf vf_max "cconv_vf_max"(vf a, vf b)
    vd vd_max "cconv_vd_max"(vd a, vd b)
    float fma_f32 "cconv_fmaf"(float a, float b, float c)
    double fma_f64 "cconv_fma"(double a, double b, double c)
    const bint HAVE_FMA "CCONV_HAVE_FMA"
    float tanh_f32 "cconv_tanhf"(float v)
    vf vf_tanh "cconv_vf_tanh"(vf v)
    vf vf_sqrt "cconv_vf_sqrt"(vf a)
    vd vd_sqrt "cconv_vd_sqrt"(vd a)


# float64 tanh. Its helpers need the bits of a double (sign, exponent), so they are
# defined here per vector width rather than in the layer above.
cdef extern from * nogil:
    """
    #include <stdint.h>
    #include <string.h>
    #if CCONV_VD_LANES == 8
    #define cconv_vd_bits_and(a, b) _mm512_and_pd((a), (b))
    #define cconv_vd_bits_or(a, b) _mm512_or_pd((a), (b))
    #define cconv_vd_bits_andnot(a, b) _mm512_andnot_pd((a), (b))
    #define cconv_vd_bits_shl52(v) _mm512_castsi512_pd(_mm512_slli_epi64(_mm512_castpd_si512(v), 52))
    #define cconv_vd_lt_select(a, b, x, y) \
        _mm512_mask_blend_pd(_mm512_cmp_pd_mask((a), (b), _CMP_LT_OQ), (y), (x))
    #define cconv_vd_lt_lanes(a, b) ((int)_mm512_cmp_pd_mask((a), (b), _CMP_LT_OQ))
    #elif CCONV_VD_LANES == 4
    #define cconv_vd_bits_and(a, b) _mm256_and_pd((a), (b))
    #define cconv_vd_bits_or(a, b) _mm256_or_pd((a), (b))
    #define cconv_vd_bits_andnot(a, b) _mm256_andnot_pd((a), (b))
    #define cconv_vd_bits_shl52(v) _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_castpd_si256(v), 52))
    #define cconv_vd_lt_select(a, b, x, y) _mm256_blendv_pd((y), (x), _mm256_cmp_pd((a), (b), _CMP_LT_OQ))
    #define cconv_vd_lt_lanes(a, b) _mm256_movemask_pd(_mm256_cmp_pd((a), (b), _CMP_LT_OQ))
    #elif CCONV_VD_LANES == 2 && defined(__SSE2__)
    #define cconv_vd_bits_and(a, b) _mm_and_pd((a), (b))
    #define cconv_vd_bits_or(a, b) _mm_or_pd((a), (b))
    #define cconv_vd_bits_andnot(a, b) _mm_andnot_pd((a), (b))
    #define cconv_vd_bits_shl52(v) _mm_castsi128_pd(_mm_slli_epi64(_mm_castpd_si128(v), 52))
    static inline __m128d cconv_vd_lt_select(__m128d a, __m128d b, __m128d x, __m128d y) {
        __m128d m = _mm_cmplt_pd(a, b);
        return _mm_or_pd(_mm_and_pd(m, x), _mm_andnot_pd(m, y));
    }
    #define cconv_vd_lt_lanes(a, b) _mm_movemask_pd(_mm_cmplt_pd((a), (b)))
    #elif CCONV_VD_LANES == 2
    #define cconv_vd_bits_and(a, b) \
        vreinterpretq_f64_u64(vandq_u64(vreinterpretq_u64_f64(a), vreinterpretq_u64_f64(b)))
    #define cconv_vd_bits_or(a, b) \
        vreinterpretq_f64_u64(vorrq_u64(vreinterpretq_u64_f64(a), vreinterpretq_u64_f64(b)))
    #define cconv_vd_bits_andnot(a, b) \
        vreinterpretq_f64_u64(vbicq_u64(vreinterpretq_u64_f64(b), vreinterpretq_u64_f64(a)))
    #define cconv_vd_bits_shl52(v) vreinterpretq_f64_u64(vshlq_n_u64(vreinterpretq_u64_f64(v), 52))
    #define cconv_vd_lt_select(a, b, x, y) vbslq_f64(vcltq_f64((a), (b)), (x), (y))
    static inline int cconv_vd_lt_lanes(float64x2_t a, float64x2_t b) {
        uint64x2_t m = vcltq_f64(a, b);
        return (int)(vgetq_lane_u64(m, 0) & 1) | (int)((vgetq_lane_u64(m, 1) & 1) << 1);
    }
    #else
    static inline uint64_t cconv_bits_of(double v) { uint64_t u; memcpy(&u, &v, 8); return u; }
    static inline double cconv_double_of(uint64_t u) { double v; memcpy(&v, &u, 8); return v; }
    #define cconv_vd_bits_and(a, b) cconv_double_of(cconv_bits_of(a) & cconv_bits_of(b))
    #define cconv_vd_bits_or(a, b) cconv_double_of(cconv_bits_of(a) | cconv_bits_of(b))
    #define cconv_vd_bits_andnot(a, b) cconv_double_of(~cconv_bits_of(a) & cconv_bits_of(b))
    #define cconv_vd_bits_shl52(v) cconv_double_of(cconv_bits_of(v) << 52)
    #define cconv_vd_lt_select(a, b, x, y) ((a) < (b) ? (x) : (y))
    #define cconv_vd_lt_lanes(a, b) ((a) < (b))
    #endif
    /* The same for float32, and the two dtypes' remaining bit and select operations:
       cconv_v?_le_select(a, b, x, y) is x where a <= b, else y (a NaN gives y);
       cconv_v?_pow2i(k) is 2^k for an integer-valued k in the normal exponent range,
       made from k's bits after adding CCONV_V?_POW2_ROUND, whose last bits are then
       k + the exponent bias. */
    #define CCONV_VF_POW2_ROUND 12583039.0f           /* 1.5 * 2^23 + 127 */
    #define CCONV_VD_POW2_ROUND 6755399441056767.0    /* 1.5 * 2^52 + 1023 */
    #if CCONV_VF_LANES == 16
    #define cconv_vf_bits_and(a, b) _mm512_and_ps((a), (b))
    #define cconv_vf_bits_or(a, b) _mm512_or_ps((a), (b))
    #define cconv_vf_bits_andnot(a, b) _mm512_andnot_ps((a), (b))
    #define cconv_vf_bits_xor(a, b) _mm512_xor_ps((a), (b))
    #define cconv_vd_bits_xor(a, b) _mm512_xor_pd((a), (b))
    #define cconv_vf_bits_shl23(v) _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_castps_si512(v), 23))
    #define cconv_vf_lt_select(a, b, x, y) \
        _mm512_mask_blend_ps(_mm512_cmp_ps_mask((a), (b), _CMP_LT_OQ), (y), (x))
    #define cconv_vf_le_select(a, b, x, y) \
        _mm512_mask_blend_ps(_mm512_cmp_ps_mask((a), (b), _CMP_LE_OQ), (y), (x))
    #define cconv_vd_le_select(a, b, x, y) \
        _mm512_mask_blend_pd(_mm512_cmp_pd_mask((a), (b), _CMP_LE_OQ), (y), (x))
    #elif CCONV_VF_LANES == 8
    #define cconv_vf_bits_and(a, b) _mm256_and_ps((a), (b))
    #define cconv_vf_bits_or(a, b) _mm256_or_ps((a), (b))
    #define cconv_vf_bits_andnot(a, b) _mm256_andnot_ps((a), (b))
    #define cconv_vf_bits_xor(a, b) _mm256_xor_ps((a), (b))
    #define cconv_vd_bits_xor(a, b) _mm256_xor_pd((a), (b))
    #define cconv_vf_bits_shl23(v) _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(v), 23))
    #define cconv_vf_lt_select(a, b, x, y) _mm256_blendv_ps((y), (x), _mm256_cmp_ps((a), (b), _CMP_LT_OQ))
    #define cconv_vf_le_select(a, b, x, y) _mm256_blendv_ps((y), (x), _mm256_cmp_ps((a), (b), _CMP_LE_OQ))
    #define cconv_vd_le_select(a, b, x, y) _mm256_blendv_pd((y), (x), _mm256_cmp_pd((a), (b), _CMP_LE_OQ))
    #elif CCONV_VF_LANES == 4 && (defined(__SSE2__) || defined(_M_X64))
    #define cconv_vf_bits_and(a, b) _mm_and_ps((a), (b))
    #define cconv_vf_bits_or(a, b) _mm_or_ps((a), (b))
    #define cconv_vf_bits_andnot(a, b) _mm_andnot_ps((a), (b))
    #define cconv_vf_bits_xor(a, b) _mm_xor_ps((a), (b))
    #define cconv_vd_bits_xor(a, b) _mm_xor_pd((a), (b))
    #define cconv_vf_bits_shl23(v) _mm_castsi128_ps(_mm_slli_epi32(_mm_castps_si128(v), 23))
    static inline __m128 cconv_vf_mask_select(__m128 m, __m128 x, __m128 y) {
        return _mm_or_ps(_mm_and_ps(m, x), _mm_andnot_ps(m, y));
    }
    #define cconv_vf_lt_select(a, b, x, y) cconv_vf_mask_select(_mm_cmplt_ps((a), (b)), (x), (y))
    #define cconv_vf_le_select(a, b, x, y) cconv_vf_mask_select(_mm_cmple_ps((a), (b)), (x), (y))
    static inline __m128d cconv_vd_le_select(__m128d a, __m128d b, __m128d x, __m128d y) {
        __m128d m = _mm_cmple_pd(a, b);
        return _mm_or_pd(_mm_and_pd(m, x), _mm_andnot_pd(m, y));
    }
    #elif CCONV_VF_LANES == 4
    #define cconv_vf_bits_and(a, b) \
        vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(a), vreinterpretq_u32_f32(b)))
    #define cconv_vf_bits_or(a, b) \
        vreinterpretq_f32_u32(vorrq_u32(vreinterpretq_u32_f32(a), vreinterpretq_u32_f32(b)))
    #define cconv_vf_bits_andnot(a, b) \
        vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(b), vreinterpretq_u32_f32(a)))
    #define cconv_vf_bits_xor(a, b) \
        vreinterpretq_f32_u32(veorq_u32(vreinterpretq_u32_f32(a), vreinterpretq_u32_f32(b)))
    #define cconv_vd_bits_xor(a, b) \
        vreinterpretq_f64_u64(veorq_u64(vreinterpretq_u64_f64(a), vreinterpretq_u64_f64(b)))
    #define cconv_vf_bits_shl23(v) vreinterpretq_f32_u32(vshlq_n_u32(vreinterpretq_u32_f32(v), 23))
    #define cconv_vf_lt_select(a, b, x, y) vbslq_f32(vcltq_f32((a), (b)), (x), (y))
    #define cconv_vf_le_select(a, b, x, y) vbslq_f32(vcleq_f32((a), (b)), (x), (y))
    #define cconv_vd_le_select(a, b, x, y) vbslq_f64(vcleq_f64((a), (b)), (x), (y))
    #else
    static inline uint32_t cconv_bits_of_f(float v) { uint32_t u; memcpy(&u, &v, 4); return u; }
    static inline float cconv_float_of(uint32_t u) { float v; memcpy(&v, &u, 4); return v; }
    #define cconv_vf_bits_and(a, b) cconv_float_of(cconv_bits_of_f(a) & cconv_bits_of_f(b))
    #define cconv_vf_bits_or(a, b) cconv_float_of(cconv_bits_of_f(a) | cconv_bits_of_f(b))
    #define cconv_vf_bits_andnot(a, b) cconv_float_of(~cconv_bits_of_f(a) & cconv_bits_of_f(b))
    #define cconv_vf_bits_xor(a, b) cconv_float_of(cconv_bits_of_f(a) ^ cconv_bits_of_f(b))
    #define cconv_vd_bits_xor(a, b) cconv_double_of(cconv_bits_of(a) ^ cconv_bits_of(b))
    #define cconv_vf_bits_shl23(v) cconv_float_of(cconv_bits_of_f(v) << 23)
    #define cconv_vf_lt_select(a, b, x, y) ((a) < (b) ? (x) : (y))
    #define cconv_vf_le_select(a, b, x, y) ((a) <= (b) ? (x) : (y))
    #define cconv_vd_le_select(a, b, x, y) ((a) <= (b) ? (x) : (y))
    #endif
    #define cconv_vf_pow2i(k) cconv_vf_bits_shl23(cconv_vf_add((k), cconv_vf_set1(CCONV_VF_POW2_ROUND)))
    #define cconv_vd_pow2i(k) cconv_vd_bits_shl52(cconv_vd_add((k), cconv_vd_set1(CCONV_VD_POW2_ROUND)))
    /* cconv_vd_lt_lanes(a, b): a bit per lane where a < b, lane 0 lowest */
    #define CCONV_VD_ALL_LANES ((1 << CCONV_VD_LANES) - 1)

    /* tanh for float64, on |x| with the sign put back (so tanh(-0.0) = -0.0).
       |x| < 0.625: |x| + |x| u P(u), u = x^2, P of degree 11: tanh(x) = x in float64
       below about 2^-27 and subnormals pass through exactly.
       Else 1 - 2 / (exp(2|x|) + 1), 2|x| clamped to 39 (past 19.06, tanh rounds to 1):
       exp(y) = 2^j exp(r), j = round(y / ln2), r = y - j ln2 with ln2 split in two so
       that j * HI is exact, exp(r) = 1 + r + r^2 E(r), E of degree 9; 2^j is made from
       j's bits, which the addition of ROUND leaves in the low bits of s.
       P and E are least-squares fits of relative error at Chebyshev nodes made for cconv
       (tools/fit_tanh64.py). A vector computes only the branches its lanes need, and
       selects one per lane when it needs both; below TINY the first branch rounds to |x|
       exactly (|x| u P(u) is under 2^-55 |x|), so a vector of only such lanes, as a conv
       over an image's blank margin gives, returns x as it is. The scalar form takes one
       lane, so every path of a level gives the same bits. */
    #define CCONV_TANH64_TINY 7.450580596923828e-09 /* 2^-27 */
    #define CCONV_TANH64_SMALL 0.625
    #define CCONV_TANH64_LIM 39.0
    #define CCONV_TANH64_LOG2E 1.4426950408889634
    #define CCONV_TANH64_ROUND 6755399441056767.0 /* 1.5 * 2^52 + 1023, the exponent bias */
    #define CCONV_TANH64_LN2_HI 0.6931471805599188
    #define CCONV_TANH64_LN2_LO 2.6557520756679704e-14
    /* highest degree first */
    static const double cconv_tanh64_p[] = {6.476658369354856e-06, -3.118276779963142e-05,
        9.255408976445487e-05, -0.0002375816628927853, 0.0005896577189384784,
        -0.0014557747943454275, 0.003592121667721315, -0.008863235096209671,
        0.021869488518662286, -0.05396825396788825, 0.13333333333333033,
        -0.3333333333333333};
    static const double cconv_tanh64_e[] = {2.5063343807073415e-08, 2.7620037084441966e-07,
        2.755736853682071e-06, 2.480152141932158e-05, 0.00019841269772941656,
        0.0013888888917121128, 0.008333333333360105, 0.04166666666662435,
        0.1666666666666664, 0.5000000000000001};
    static inline cconv_vd cconv_vd_horner(const double* c, int n, cconv_vd u) {
        cconv_vd acc = cconv_vd_set1(c[0]);
        for (int k = 1; k < n; k++)
            acc = cconv_vd_fma(acc, u, cconv_vd_set1(c[k]));
        return acc;
    }
    static inline cconv_vd cconv_vd_tanh_small(cconv_vd ax) {
        cconv_vd u = cconv_vd_mul(ax, ax);
        cconv_vd p = cconv_vd_horner(cconv_tanh64_p, 12, u);
        return cconv_vd_fma(ax, cconv_vd_mul(u, p), ax);
    }
    static inline cconv_vd cconv_vd_tanh_large(cconv_vd ax) {
        const cconv_vd one = cconv_vd_set1(1.0);
        /* min(LIM, y), not min(y, LIM): x86 min returns its second operand for a NaN */
        cconv_vd y = cconv_vd_min(cconv_vd_set1(CCONV_TANH64_LIM), cconv_vd_add(ax, ax));
        cconv_vd s = cconv_vd_add(cconv_vd_mul(y, cconv_vd_set1(CCONV_TANH64_LOG2E)),
                                  cconv_vd_set1(CCONV_TANH64_ROUND));
        cconv_vd j = cconv_vd_sub(s, cconv_vd_set1(CCONV_TANH64_ROUND));
        cconv_vd r = cconv_vd_fma(j, cconv_vd_set1(-CCONV_TANH64_LN2_HI), y);
        r = cconv_vd_fma(j, cconv_vd_set1(-CCONV_TANH64_LN2_LO), r);
        cconv_vd e = cconv_vd_horner(cconv_tanh64_e, 10, r);
        e = cconv_vd_add(cconv_vd_fma(cconv_vd_mul(r, r), e, r), one);
        e = cconv_vd_mul(e, cconv_vd_bits_shl52(s));
        return cconv_vd_sub(one, cconv_vd_div(cconv_vd_set1(2.0), cconv_vd_add(e, one)));
    }
    static inline cconv_vd cconv_vd_tanh(cconv_vd x) {
        const cconv_vd sign = cconv_vd_set1(-0.0), small = cconv_vd_set1(CCONV_TANH64_SMALL);
        cconv_vd ax = cconv_vd_bits_andnot(sign, x), mag;
        if (cconv_vd_lt_lanes(ax, cconv_vd_set1(CCONV_TANH64_TINY)) == CCONV_VD_ALL_LANES)
            return x;
        int lanes_small = cconv_vd_lt_lanes(ax, small);
        if (lanes_small == CCONV_VD_ALL_LANES)
            mag = cconv_vd_tanh_small(ax);
        else if (lanes_small == 0)  /* NaN lanes too: the second branch gives their NaN */
            mag = cconv_vd_tanh_large(ax);
        else
            mag = cconv_vd_lt_select(ax, small, cconv_vd_tanh_small(ax), cconv_vd_tanh_large(ax));
        return cconv_vd_bits_or(mag, cconv_vd_bits_and(sign, x));
    }
    static inline double cconv_tanh(double v) {
        return cconv_vd_first(cconv_vd_tanh(cconv_vd_set1(v)));
    }
    """
    double tanh_f64 "cconv_tanh"(double v)
    vd vd_tanh "cconv_vd_tanh"(vd v)


# ---- 64-byte blocks: 16 float32 or 8 float64 lanes whatever the level ----------------
# A kernel whose sums are split across lanes (a dot product, a row of filters) uses these
# so that which terms meet in which lane, and so the result's bits, do not depend on the
# level: a block is one AVX-512 vector, two AVX2 ones, four SSE or NEON ones.
cdef extern from * nogil:
    """
    #define CCONV_VF16_PARTS (16 / CCONV_VF_LANES)
    #define CCONV_VD8_PARTS (8 / CCONV_VD_LANES)
    typedef struct { cconv_vf v[CCONV_VF16_PARTS]; } cconv_vf16;
    typedef struct { cconv_vd v[CCONV_VD8_PARTS]; } cconv_vd8;
    #define CCONV_BLOCK_OPS(B, V, T, PARTS, LANES) \
    static inline B B##_zero(void) { \
        B r; for (int i = 0; i < PARTS; i++) r.v[i] = V##_zero(); return r; } \
    static inline B B##_load(const T* p) { \
        B r; for (int i = 0; i < PARTS; i++) r.v[i] = V##_load(p + i * LANES); return r; } \
    static inline void B##_store(T* p, B a) { \
        for (int i = 0; i < PARTS; i++) V##_store(p + i * LANES, a.v[i]); } \
    static inline B B##_add(B a, B b) { \
        for (int i = 0; i < PARTS; i++) a.v[i] = V##_add(a.v[i], b.v[i]); return a; } \
    static inline B B##_fma(B a, B b, B acc) { \
        for (int i = 0; i < PARTS; i++) acc.v[i] = V##_fma(a.v[i], b.v[i], acc.v[i]); \
        return acc; } \
    static inline B B##_madd(T x, B w, B acc) { \
        V s = V##_set1(x); \
        for (int i = 0; i < PARTS; i++) acc.v[i] = V##_fma(s, w.v[i], acc.v[i]); \
        return acc; }
    CCONV_BLOCK_OPS(cconv_vf16, cconv_vf, float, CCONV_VF16_PARTS, CCONV_VF_LANES)
    CCONV_BLOCK_OPS(cconv_vd8, cconv_vd, double, CCONV_VD8_PARTS, CCONV_VD_LANES)
    static inline cconv_vf16 cconv_vf16_tanh(cconv_vf16 a) {
        for (int i = 0; i < CCONV_VF16_PARTS; i++) a.v[i] = cconv_vf_tanh(a.v[i]);
        return a;
    }
    """
    ctypedef struct vf16 "cconv_vf16":
        pass
    ctypedef struct vd8 "cconv_vd8":
        pass
    vf16 vf16_fma "cconv_vf16_fma"(vf16 a, vf16 b, vf16 acc)
    vd8 vd8_fma "cconv_vd8_fma"(vd8 a, vd8 b, vd8 acc)
    vf16 vf16_madd "cconv_vf16_madd"(float x, vf16 w, vf16 acc)
    vd8 vd8_madd "cconv_vd8_madd"(double x, vd8 w, vd8 acc)
    vf16 vf16_add "cconv_vf16_add"(vf16 a, vf16 b)
    vd8 vd8_add "cconv_vd8_add"(vd8 a, vd8 b)
    vf16 vf16_zero "cconv_vf16_zero"()
    vf16 vf16_load "cconv_vf16_load"(const float* p)
    void vf16_store "cconv_vf16_store"(float* p, vf16 a)
    vf16 vf16_tanh "cconv_vf16_tanh"(vf16 a)
    vd8 vd8_zero "cconv_vd8_zero"()
    vd8 vd8_load "cconv_vd8_load"(const double* p)
    void vd8_store "cconv_vd8_store"(double* p, vd8 a)



cdef inline floating fma_of(floating a, floating b, floating c) noexcept nogil:
    """a * b + c with the rounding of the level's vector fma (vf_fma, vf16_fma, ...)."""
    if floating is float:
        return fma_f32(a, b, c)
    else:
        return fma_f64(a, b, c)


# Dropout's select, out = x * scale where the mask byte is nonzero, else +0.0, done on
# the bits (an AND with all ones or zeros): a compiler turns `kept ? v : 0` into a branch
# at levels without mask registers, and a random mask mispredicts half of them.
cdef extern from * nogil:
    """
    #include <stdint.h>
    #include <string.h>
    #define CCONV_KEEP_SCALED(NAME, T, U) \
    static inline void NAME(const T* x, const uint8_t* m, T scale, T* out, Py_ssize_t n) { \
        for (Py_ssize_t i = 0; i < n; i++) { \
            T v = x[i] * scale; U b; memcpy(&b, &v, sizeof b); \
            b &= (U)0 - (U)(m[i] != 0); memcpy(&out[i], &b, sizeof b); } }
    CCONV_KEEP_SCALED(cconv_keep_scaled_f32, float, uint32_t)
    CCONV_KEEP_SCALED(cconv_keep_scaled_f64, double, uint64_t)
    """
    void keep_scaled_f32 "cconv_keep_scaled_f32"(const float* x, const unsigned char* m,
                                                 float scale, float* out, Py_ssize_t n)
    void keep_scaled_f64 "cconv_keep_scaled_f64"(const double* x, const unsigned char* m,
                                                 double scale, double* out, Py_ssize_t n)


cdef inline void keep_scaled(const floating* x, const unsigned char* m, floating scale,
                             floating* out, Py_ssize_t n) noexcept nogil:
    """out[i] = x[i] * scale where m[i] != 0, else 0: dropout, forward and backward.
    out may be x."""
    if floating is float:
        keep_scaled_f32(x, m, scale, out, n)
    else:
        keep_scaled_f64(x, m, scale, out, n)


cdef inline floating sum_lanes(floating* s, Py_ssize_t n) noexcept nogil:
    """s[0] + ... + s[n - 1] for n a power of two, as a fixed tree (halves added lane by
    lane); s is overwritten."""
    cdef Py_ssize_t h = n // 2, i
    while h > 0:
        for i in range(h):
            s[i] = s[i] + s[i + h]
        h //= 2
    return s[0]
