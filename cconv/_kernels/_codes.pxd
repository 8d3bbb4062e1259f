# The codes that ops passes to the kernels, defined once: ops reads them through
# _config's ACTIVATION_CODES and POOL_MODES, the kernels cimport them from here.
cdef enum Activation:
    ACT_LINEAR = 0
    ACT_TANH = 1
    ACT_RELU = 2

cdef enum PoolMode:
    POOL_MAX = 0
    POOL_MEAN = 1
    POOL_SUM = 2
