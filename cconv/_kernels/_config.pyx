"""What the compiled kernels were built with, and the codes ops passes to them."""
from cconv._kernels._codes cimport (ACT_LINEAR, ACT_RELU, ACT_TANH, POOL_MAX, POOL_MEAN,
                                    POOL_SUM)
from cconv._kernels._openmp cimport CCONV_HAVE_OPENMP, omp_get_max_threads, omp_get_num_procs

ACTIVATION_CODES = {"linear": ACT_LINEAR, "tanh": ACT_TANH, "relu": ACT_RELU}
POOL_MODES = {"max": POOL_MAX, "mean": POOL_MEAN, "sum": POOL_SUM}


def openmp_enabled():
    return bool(CCONV_HAVE_OPENMP)


def openmp_max_threads():
    return omp_get_max_threads()


def openmp_num_procs():
    return omp_get_num_procs()
