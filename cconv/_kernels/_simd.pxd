# Math shared by the kernel modules. Inline, so that loops calling it vectorise (float64
# tanh comes from glibc's SIMD libmvec under -ffast-math; float32 tanh is cconv's own).
from cython cimport floating
from libc.math cimport tanh

from cconv._kernels._codes cimport ACT_RELU, ACT_TANH


# A few SIMD primitives for register-blocked micro-kernels. Written with compiler
# intrinsics because gcc's -ffast-math reassociation otherwise splits plain
# `acc = acc + x * w` chains across unrolled loop iterations and spills the accumulators.
# A "vector" holds VF_LANES float32 or VD_LANES float64: AVX2+FMA registers when the build
# targets them, SSE2 on any other x86-64, else one scalar (correct, just not fast).
cdef extern from * nogil:
    """
    #if defined(__AVX2__) && defined(__FMA__)
    #include <immintrin.h>
    typedef __m256 cconv_vf;
    typedef __m256d cconv_vd;
    #define CCONV_VF_LANES 8
    #define CCONV_VD_LANES 4
    #define cconv_vf_zero() _mm256_setzero_ps()
    #define cconv_vd_zero() _mm256_setzero_pd()
    #define cconv_vf_load(p) _mm256_loadu_ps(p)
    #define cconv_vd_load(p) _mm256_loadu_pd(p)
    #define cconv_vf_store(p, v) _mm256_storeu_ps((p), (v))
    #define cconv_vd_store(p, v) _mm256_storeu_pd((p), (v))
    #define cconv_vf_madd(x, w, acc) _mm256_fmadd_ps(_mm256_set1_ps(x), (w), (acc))
    #define cconv_vd_madd(x, w, acc) _mm256_fmadd_pd(_mm256_set1_pd(x), (w), (acc))
    #define cconv_vf_add(a, b) _mm256_add_ps((a), (b))
    #define cconv_vd_add(a, b) _mm256_add_pd((a), (b))
    #define cconv_vf_fma(a, b, acc) _mm256_fmadd_ps((a), (b), (acc))
    #define cconv_vd_fma(a, b, acc) _mm256_fmadd_pd((a), (b), (acc))
    #elif defined(__SSE2__)
    #include <emmintrin.h>
    typedef __m128 cconv_vf;
    typedef __m128d cconv_vd;
    #define CCONV_VF_LANES 4
    #define CCONV_VD_LANES 2
    #define cconv_vf_zero() _mm_setzero_ps()
    #define cconv_vd_zero() _mm_setzero_pd()
    #define cconv_vf_load(p) _mm_loadu_ps(p)
    #define cconv_vd_load(p) _mm_loadu_pd(p)
    #define cconv_vf_store(p, v) _mm_storeu_ps((p), (v))
    #define cconv_vd_store(p, v) _mm_storeu_pd((p), (v))
    #define cconv_vf_madd(x, w, acc) _mm_add_ps(_mm_mul_ps(_mm_set1_ps(x), (w)), (acc))
    #define cconv_vd_madd(x, w, acc) _mm_add_pd(_mm_mul_pd(_mm_set1_pd(x), (w)), (acc))
    #define cconv_vf_add(a, b) _mm_add_ps((a), (b))
    #define cconv_vd_add(a, b) _mm_add_pd((a), (b))
    #define cconv_vf_fma(a, b, acc) _mm_add_ps(_mm_mul_ps((a), (b)), (acc))
    #define cconv_vd_fma(a, b, acc) _mm_add_pd(_mm_mul_pd((a), (b)), (acc))
    #else
    typedef float cconv_vf;
    typedef double cconv_vd;
    #define CCONV_VF_LANES 1
    #define CCONV_VD_LANES 1
    #define cconv_vf_zero() 0.0f
    #define cconv_vd_zero() 0.0
    #define cconv_vf_load(p) (*(p))
    #define cconv_vd_load(p) (*(p))
    #define cconv_vf_store(p, v) (*(p) = (v))
    #define cconv_vd_store(p, v) (*(p) = (v))
    #define cconv_vf_madd(x, w, acc) ((acc) + (x) * (w))
    #define cconv_vd_madd(x, w, acc) ((acc) + (x) * (w))
    #define cconv_vf_add(a, b) ((a) + (b))
    #define cconv_vd_add(a, b) ((a) + (b))
    #define cconv_vf_fma(a, b, acc) ((acc) + (a) * (b))
    #define cconv_vd_fma(a, b, acc) ((acc) + (a) * (b))
    #endif

    /* tanh for float32 as x * P(x^2) / Q(x^2), both of degree 4 in x^2, with x clamped
       to [-8, 8]: a minimax fit of relative error made for cconv (3.3e-8 in exact
       arithmetic). All coefficients are positive, so nothing cancels. tanh(8) is 1 - 2.3e-7.
       Checked on every float32 in [0, 12] for the AVX2 build: error under 3.7e-7, never
       past +-1 (the function is odd bit for bit). The division must be a true, correctly
       rounded one, so it is written in assembly: under -ffast-math gcc would turn
       _mm256_div_ps into a reciprocal estimate plus a Newton step, which is both less
       accurate and, here, slower. About half the cost of glibc's SIMD tanhf. There is one
       implementation per build, on vectors; the scalar form takes one lane of it, so
       every path gives the same bits. */
    #define CCONV_TANH_LIM 8.0f
    #define CCONV_TANH_P3 1.3319577852503073e-08f
    #define CCONV_TANH_P2 2.0579624965682738e-05f
    #define CCONV_TANH_P1 3.4936116883939063e-03f
    #define CCONV_TANH_P0 1.3379303324748443e-01f
    #define CCONV_TANH_Q3 7.7609924182223179e-07f
    #define CCONV_TANH_Q2 3.2825339540148995e-04f
    #define CCONV_TANH_Q1 2.5869276098076096e-02f
    #define CCONV_TANH_Q0 4.6712619591919868e-01f
    #if defined(__AVX2__) && defined(__FMA__)
    static inline cconv_vf cconv_vf_tanh(cconv_vf v) {
        const __m256 lim = _mm256_set1_ps(CCONV_TANH_LIM), one = _mm256_set1_ps(1.0f);
        __m256 x = _mm256_max_ps(_mm256_min_ps(v, lim), _mm256_sub_ps(_mm256_setzero_ps(), lim));
        __m256 u = _mm256_mul_ps(x, x);
        __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(CCONV_TANH_P3), u, _mm256_set1_ps(CCONV_TANH_P2));
        __m256 q = _mm256_fmadd_ps(_mm256_set1_ps(CCONV_TANH_Q3), u, _mm256_set1_ps(CCONV_TANH_Q2));
        p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(CCONV_TANH_P1));
        q = _mm256_fmadd_ps(q, u, _mm256_set1_ps(CCONV_TANH_Q1));
        p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(CCONV_TANH_P0));
        q = _mm256_fmadd_ps(q, u, _mm256_set1_ps(CCONV_TANH_Q0));
        p = _mm256_fmadd_ps(p, u, one);
        q = _mm256_fmadd_ps(q, u, one);
        __m256 y, n = _mm256_mul_ps(x, p);
        __asm__("vdivps %2, %1, %0" : "=x"(y) : "x"(n), "x"(q));
        return y;
    }
    static inline float cconv_tanhf(float v) {
        return _mm256_cvtss_f32(cconv_vf_tanh(_mm256_set1_ps(v)));
    }
    #elif defined(__SSE2__)
    /* Without FMA the rounding differs, so the result is also clamped to [-1, 1]. */
    static inline cconv_vf cconv_vf_tanh(cconv_vf v) {
        const __m128 lim = _mm_set1_ps(CCONV_TANH_LIM), one = _mm_set1_ps(1.0f);
        __m128 x = _mm_max_ps(_mm_min_ps(v, lim), _mm_sub_ps(_mm_setzero_ps(), lim));
        __m128 u = _mm_mul_ps(x, x);
        __m128 p = _mm_add_ps(_mm_mul_ps(_mm_set1_ps(CCONV_TANH_P3), u), _mm_set1_ps(CCONV_TANH_P2));
        __m128 q = _mm_add_ps(_mm_mul_ps(_mm_set1_ps(CCONV_TANH_Q3), u), _mm_set1_ps(CCONV_TANH_Q2));
        p = _mm_add_ps(_mm_mul_ps(p, u), _mm_set1_ps(CCONV_TANH_P1));
        q = _mm_add_ps(_mm_mul_ps(q, u), _mm_set1_ps(CCONV_TANH_Q1));
        p = _mm_add_ps(_mm_mul_ps(p, u), _mm_set1_ps(CCONV_TANH_P0));
        q = _mm_add_ps(_mm_mul_ps(q, u), _mm_set1_ps(CCONV_TANH_Q0));
        p = _mm_add_ps(_mm_mul_ps(p, u), one);
        q = _mm_add_ps(_mm_mul_ps(q, u), one);
        __m128 y = _mm_mul_ps(x, p);
        #if defined(__GNUC__)
        __asm__("divps %1, %0" : "+x"(y) : "x"(q));
        #else
        y = _mm_div_ps(y, q);
        #endif
        return _mm_max_ps(_mm_min_ps(y, one), _mm_sub_ps(_mm_setzero_ps(), one));
    }
    static inline float cconv_tanhf(float v) {
        return _mm_cvtss_f32(cconv_vf_tanh(_mm_set1_ps(v)));
    }
    #else
    static inline float cconv_tanhf(float v) {
        float x = v < CCONV_TANH_LIM ? v : CCONV_TANH_LIM;
        x = x > -CCONV_TANH_LIM ? x : -CCONV_TANH_LIM;
        float u = x * x;
        float p = (((CCONV_TANH_P3 * u + CCONV_TANH_P2) * u + CCONV_TANH_P1) * u
                   + CCONV_TANH_P0) * u + 1.0f;
        float q = (((CCONV_TANH_Q3 * u + CCONV_TANH_Q2) * u + CCONV_TANH_Q1) * u
                   + CCONV_TANH_Q0) * u + 1.0f;
        float y = x * p / q;
        y = y < 1.0f ? y : 1.0f;
        return y > -1.0f ? y : -1.0f;
    }
    #define cconv_vf_tanh(v) cconv_tanhf(v)
    #endif
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
    vf vf_add "cconv_vf_add"(vf a, vf b)
    vd vd_add "cconv_vd_add"(vd a, vd b)
    vf vf_fma "cconv_vf_fma"(vf a, vf b, vf acc)
    vd vd_fma "cconv_vd_fma"(vd a, vd b, vd acc)
    float tanh_f32 "cconv_tanhf"(float v)
    vf vf_tanh "cconv_vf_tanh"(vf v)


cdef inline floating tanh_of(floating v) noexcept nogil:
    if floating is float:
        return tanh_f32(v)
    else:
        return tanh(v)


cdef inline void tanh_f32_array(const float* x, float* out, Py_ssize_t n) noexcept nogil:
    """out[i] = tanh(x[i]) for float32, a vector at a time (the scalar tail has the same
    bits); x and out may be the same array."""
    cdef Py_ssize_t i = 0
    while i + VF_LANES <= n:
        vf_store(out + i, vf_tanh(vf_load(x + i)))
        i += VF_LANES
    while i < n:
        out[i] = tanh_f32(x[i])
        i += 1


cdef inline floating activation_of(floating v, int act) noexcept nogil:
    if act == ACT_TANH:
        return tanh_of(v)
    if act == ACT_RELU:
        return v if v > 0 else 0
    return v


cdef inline void activate(floating* a, Py_ssize_t n, int act) noexcept nogil:
    """Apply an activation in place to a[0:n]."""
    cdef Py_ssize_t i
    if floating is float and act == ACT_TANH:
        tanh_f32_array(a, a, n)
    elif act == ACT_TANH:
        for i in range(n):
            a[i] = tanh_of(a[i])
    elif act == ACT_RELU:
        for i in range(n):
            a[i] = a[i] if a[i] > 0 else 0
