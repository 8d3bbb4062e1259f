"""Merge kernels, as keras.layers.Add, Subtract, Multiply, Average and Maximum, over flat
C-contiguous arrays of one length: the forward passes, and the backward passes that mix
the inputs (Multiply's and Maximum's; the others' gradients are copies, a negation or a
division, which cconv/ops/merge.py leaves to NumPy).

The inputs arrive as a list of arrays, whose data pointers are taken once with the GIL
(the list keeps the arrays alive; NumPy never moves an array's data). Each block of
BLOCK elements then folds all the inputs, left to right as Keras does ((x0 + x1) + x2,
...), while the block is in cache. Every element's result depends on that element alone,
through plain IEEE operations of which none feeds a product into a sum (and the build
passes -ffp-contract=off): vectors of any width and the scalar tail give the same bits,
so every thread count and every CPU level does, the x86-64 default included.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stdlib cimport free, malloc

cdef enum:
    BLOCK = 4096

cdef enum Fold:
    ADD, MULTIPLY, MAXIMUM


cdef inline Py_ssize_t n_blocks(Py_ssize_t n) noexcept nogil:
    return (n + BLOCK - 1) // BLOCK


cdef const floating** reads(list arrays, const floating[::1] like,
                            str what="input") except NULL:
    """The data pointers of `arrays`: 1-D, C-contiguous, of like's dtype and length (the
    caller frees the list of pointers); `what` names them in an error."""
    cdef Py_ssize_t k = len(arrays), j
    cdef const floating[::1] view
    cdef const floating** ptrs = <const floating**>malloc((k + 1) * sizeof(floating*))
    if ptrs == NULL:
        raise MemoryError()
    try:
        for j in range(k):
            view = arrays[j]
            if view.shape[0] != like.shape[0]:
                raise ValueError(f"{what} {j}: length {view.shape[0]}, expected "
                                 f"{like.shape[0]}")
            ptrs[j] = &view[0] if view.shape[0] else NULL
    except BaseException:
        free(ptrs)
        raise
    return ptrs


cdef floating** writes(list arrays, const floating[::1] like) except NULL:
    """reads(), for arrays that must be writeable: a read-only one is refused here."""
    cdef floating[::1] view
    cdef Py_ssize_t j
    for j in range(len(arrays)):
        view = arrays[j]  # raises for a read-only array
    return <floating**>reads(arrays, like, "output")


cdef inline bint takes(floating v, floating m) noexcept nogil:
    """Whether v replaces the running maximum m: when it is larger, or the first NaN (so
    NaN propagates, as np.maximum's; a tie keeps the earlier input)."""
    return (v > m) | ((v != v) & (m == m))


cdef void fold_block(Fold fold, const floating** xs, Py_ssize_t k, floating* out,
                     Py_ssize_t start, Py_ssize_t end) noexcept nogil:
    """out[start:end] = xs[0] op xs[1] op ... op xs[k-1], left to right."""
    cdef Py_ssize_t i, j
    cdef const floating* x = xs[0]
    cdef floating v, m
    for i in range(start, end):
        out[i] = x[i]
    for j in range(1, k):
        x = xs[j]
        if fold == ADD:
            for i in range(start, end):
                out[i] = out[i] + x[i]
        elif fold == MULTIPLY:
            for i in range(start, end):
                out[i] = out[i] * x[i]
        else:
            for i in range(start, end):
                v = x[i]
                m = out[i]
                out[i] = v if takes(v, m) else m


cdef void fold(Fold how, list xs, floating[::1] out, floating divisor, int num_threads):
    """out = the fold of xs, divided by divisor unless it is 1."""
    cdef Py_ssize_t n = out.shape[0], k = len(xs), blk, start, end, i
    cdef const floating** ptrs
    if k < 1:
        raise ValueError("xs: expected at least one array, got none")
    ptrs = reads(xs, out)
    try:
        with nogil:
            for blk in prange(n_blocks(n), num_threads=num_threads, schedule="dynamic"):
                start = blk * BLOCK
                end = min(n, start + BLOCK)
                fold_block(how, ptrs, k, &out[0], start, end)
                if divisor != 1:
                    for i in range(start, end):
                        out[i] = out[i] / divisor
    finally:
        free(ptrs)


def add(list xs, floating[::1] out, int num_threads):
    """out = ((xs[0] + xs[1]) + xs[2]) + ...; xs: one or more arrays."""
    fold(ADD, xs, out, 1, num_threads)


def average(list xs, floating[::1] out, int num_threads):
    """out = (((xs[0] + xs[1]) + ...) + xs[k-1]) / k, a division as Keras's (not a
    product by 1/k, whose rounding differs)."""
    fold(ADD, xs, out, <floating>len(xs), num_threads)


def multiply(list xs, floating[::1] out, int num_threads):
    """out = ((xs[0] * xs[1]) * xs[2]) * ..."""
    fold(MULTIPLY, xs, out, 1, num_threads)


def maximum(list xs, floating[::1] out, int num_threads):
    """out = the elementwise maximum of xs, NaN if any is NaN."""
    fold(MAXIMUM, xs, out, 1, num_threads)


def subtract(const floating[::1] a, const floating[::1] b, floating[::1] out,
             int num_threads):
    """out = a - b."""
    cdef Py_ssize_t n = out.shape[0], blk, i
    if a.shape[0] != n or b.shape[0] != n:
        raise ValueError(f"a, b: lengths {a.shape[0]} and {b.shape[0]}, expected {n}")
    with nogil:
        for blk in prange(n_blocks(n), num_threads=num_threads, schedule="dynamic"):
            for i in range(blk * BLOCK, min(n, (blk + 1) * BLOCK)):
                out[i] = a[i] - b[i]


cdef void multiply_backward_block(const floating** xs, Py_ssize_t k, const floating* g,
                                  floating** outs, Py_ssize_t start,
                                  Py_ssize_t end) noexcept nogil:
    """Reverse mode through p1 = x0 * x1, p2 = p1 * x2, ...: the product before x_j
    reaches x_j's gradient times the gradient carried back from the end. outs[j] holds
    that product (outs[1] = x0, outs[j] = outs[j-1] * x_{j-1}), outs[0] the carried
    gradient, until each is turned into its input's gradient."""
    cdef Py_ssize_t i, j
    cdef floating* carry = outs[0]
    cdef const floating* x
    if k > 1:
        x = xs[0]
        for i in range(start, end):
            outs[1][i] = x[i]
    for j in range(2, k):
        x = xs[j - 1]
        for i in range(start, end):
            outs[j][i] = outs[j - 1][i] * x[i]
    for i in range(start, end):
        carry[i] = g[i]
    for j in range(k - 1, 0, -1):
        x = xs[j]
        for i in range(start, end):
            outs[j][i] = carry[i] * outs[j][i]
            carry[i] = carry[i] * x[i]


cdef void backward(Fold how, list xs, const floating[::1] grad_out, list outs,
                   int num_threads):
    """outs = the gradients of the fold `how` (MULTIPLY or MAXIMUM) of xs wrt each input,
    block by block."""
    cdef Py_ssize_t n = grad_out.shape[0], k = len(xs), blk, start, end
    cdef const floating** xp = NULL
    cdef floating** op = NULL
    if k < 1 or len(outs) != k:
        raise ValueError(f"xs, outs: expected as many outputs as inputs (at least one), "
                         f"got {k} and {len(outs)}")
    if how == MAXIMUM and k > 2**31 - 1:
        raise ValueError(f"xs: {k} inputs, more than an int counts")
    try:
        xp = reads(xs, grad_out)
        op = writes(outs, grad_out)
        with nogil:
            for blk in prange(n_blocks(n), num_threads=num_threads, schedule="dynamic"):
                start = blk * BLOCK
                end = min(n, start + BLOCK)
                if how == MULTIPLY:
                    multiply_backward_block(xp, k, &grad_out[0], op, start, end)
                else:
                    maximum_backward_block(xp, k, &grad_out[0], op, start, end)
    finally:
        free(xp)
        free(op)


def multiply_backward(list xs, const floating[::1] grad_out, list outs, int num_threads):
    """outs[j] = grad_out times the product of the other inputs, in the order reverse mode
    takes through Keras's left-to-right product: with three inputs, outs[2] = g * (x0 *
    x1), outs[1] = (g * x2) * x0, outs[0] = (g * x2) * x1."""
    backward(MULTIPLY, xs, grad_out, outs, num_threads)


cdef void maximum_backward_block(const floating** xs, Py_ssize_t k, const floating* g,
                                 floating** outs, Py_ssize_t start,
                                 Py_ssize_t end) noexcept nogil:
    """Which input each element's maximum came from (the first on a tie, the first NaN if
    any), by the forward fold's rule, then grad_out to that input and 0 to the others.
    outs[0] holds the running maximum until the gradients are written."""
    cdef int which[BLOCK]
    cdef Py_ssize_t i, j
    cdef int jj
    cdef floating* m = outs[0]
    cdef const floating* x = xs[0]
    cdef floating v, mi
    cdef bint t
    for i in range(start, end):
        m[i] = x[i]
        which[i - start] = 0
    for j in range(1, k):
        x = xs[j]
        jj = <int>j
        for i in range(start, end):
            v = x[i]
            mi = m[i]
            t = takes(v, mi)
            m[i] = v if t else mi
            which[i - start] = jj if t else which[i - start]
    for j in range(k):
        jj = <int>j
        for i in range(start, end):
            outs[j][i] = g[i] if which[i - start] == jj else 0


def maximum_backward(list xs, const floating[::1] grad_out, list outs, int num_threads):
    """outs[j] = grad_out where xs[j] holds the maximum, else 0. On a tie the gradient
    goes to the first input holding the maximum, whole (Keras on jax splits it)."""
    backward(MAXIMUM, xs, grad_out, outs, num_threads)
