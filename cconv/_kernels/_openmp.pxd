# The one place that knows whether OpenMP was compiled in. Without it the kernels
# still build: prange becomes a plain loop and these stand-ins report one thread.
cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define CCONV_HAVE_OPENMP 1
    #else
    #define CCONV_HAVE_OPENMP 0
    static int omp_get_max_threads(void) { return 1; }
    static int omp_get_num_procs(void) { return 1; }
    #endif
    """
    const bint CCONV_HAVE_OPENMP
    int omp_get_max_threads() noexcept nogil
    int omp_get_num_procs() noexcept nogil
