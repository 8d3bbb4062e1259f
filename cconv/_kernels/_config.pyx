"""What the compiled kernels were built with."""
from cconv._kernels._openmp cimport CCONV_HAVE_OPENMP, omp_get_max_threads, omp_get_num_procs


def openmp_enabled():
    return bool(CCONV_HAVE_OPENMP)


def openmp_max_threads():
    return omp_get_max_threads()


def openmp_num_procs():
    return omp_get_num_procs()
