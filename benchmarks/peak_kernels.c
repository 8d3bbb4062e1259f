/* The peak probe's loops (benchmarks/peak.py compiles this file once per cconv CPU level,
   with that level's flags from cconv/_kernels/_levels.py, and calls it through ctypes).

   fma_*: independent chains of a = a * m + c on whole vectors, the chains' count large
   enough to cover the multiply-add's latency times the units that issue it; each chain
   stays in a register, so nothing but arithmetic is timed. a converges to c / (1 - m),
   far from overflow and subnormals. Without FMA (the x86 default level) a * m + c is a
   multiply and an add: still 2 FLOPs.
   triad: a = b + s * c, STREAM's triad, on arrays the caller makes far larger than the
   caches. */
#include <stddef.h>

#if defined(__AVX512F__)
#define VBYTES 64
#elif defined(__AVX__)
#define VBYTES 32
#else
#define VBYTES 16
#endif

typedef float vfloat __attribute__((vector_size(VBYTES)));
typedef double vdouble __attribute__((vector_size(VBYTES)));

int vector_bytes(void) { return VBYTES; }

#define CHAINS8(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
#define CHAINS12(X) CHAINS8(X) X(8) X(9) X(10) X(11)
#define CHAINS16(X) CHAINS12(X) X(12) X(13) X(14) X(15)
#define CHAINS24(X) CHAINS16(X) X(16) X(17) X(18) X(19) X(20) X(21) X(22) X(23)

#define DECLARE(i) V a##i = zero + (T)(i);
#define STEP(i) a##i = a##i * m + c;
#define ADD(i) s += a##i;

/* NAME(iters): iters steps of every chain; returns the chains' sum so that no step is
   dead code. */
#define FMA_LOOP(NAME, V, T, CHAINS)                            \
    double NAME(long iters) {                                   \
        V zero = {0};                                           \
        V m = zero + (T)0.999999, c = zero + (T)1e-6, s = zero; \
        CHAINS(DECLARE)                                         \
        for (long k = 0; k < iters; k++) {                      \
            CHAINS(STEP)                                        \
        }                                                       \
        CHAINS(ADD)                                             \
        double total = 0;                                       \
        for (size_t l = 0; l < VBYTES / sizeof(T); l++)         \
            total += s[l];                                      \
        return total;                                           \
    }

#define V vfloat
#define T float
FMA_LOOP(fma_f32_8, V, T, CHAINS8)
FMA_LOOP(fma_f32_12, V, T, CHAINS12)
FMA_LOOP(fma_f32_16, V, T, CHAINS16)
FMA_LOOP(fma_f32_24, V, T, CHAINS24)
#undef V
#undef T
#define V vdouble
#define T double
FMA_LOOP(fma_f64_8, V, T, CHAINS8)
FMA_LOOP(fma_f64_12, V, T, CHAINS12)
FMA_LOOP(fma_f64_16, V, T, CHAINS16)
FMA_LOOP(fma_f64_24, V, T, CHAINS24)
#undef V
#undef T

void triad(double *restrict a, const double *restrict b, const double *restrict c,
           double s, long n) {
    for (long i = 0; i < n; i++)
        a[i] = b[i] + s * c[i];
}
