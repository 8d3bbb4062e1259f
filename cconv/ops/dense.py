"""dense and dense_backward, and the routing between their kernels: layers of at least
DENSE_GEMM_MIN_UNITS units go through the GEMM kernels (_gemm.gemm); narrower ones (a
10-way classifier) through the dot-product kernels of _dense_narrow, built for them."""
import numpy as np

from cconv._config import get_num_threads
from cconv._kernels import _dense_narrow, _gemm
from cconv.ops import _scratch
from cconv.ops._checks import bias, check_size, empty, float_array

DENSE_GEMM_MIN_UNITS = 16
DENSE_BLOCK = 512  # features per thread work unit in the narrow weight gradient


def check_dense(x, w):
    x = float_array("x", x, ndim=2)
    w = float_array("w", w, ndim=2, dtype=x.dtype)
    if x.shape[1] != w.shape[0]:
        raise ValueError(f"x: expected {w.shape[0]} features to match w of shape {w.shape}, "
                         f"got x of shape {x.shape}")
    return x, w


def transposed(w):
    """The _dense_narrow kernels read the weights one output unit at a time: (U, D) rows."""
    return np.ascontiguousarray(w.T)


def dense_by_gemm(x, w):
    return w.shape[1] >= DENSE_GEMM_MIN_UNITS and x.size > 0 and w.size > 0


def _gemm_call(m, n, k, a, a_rs, a_cs, b, ldb, c, c_rs, c_cs, bias_, b_cs=1):
    """c = a @ b (+ bias_) through _gemm.gemm, with flat views and this thread's packing
    buffer. b's rows are ldb apart and its columns b_cs."""
    threads = get_num_threads()
    work = _scratch.workspace("gemm_pack", (threads, _gemm.pack_size()), a.dtype)
    _gemm.gemm(m, n, k, a.reshape(-1), a_rs, a_cs, b.reshape(-1), ldb, b_cs, c.reshape(-1),
               c_rs, c_cs, bias_, work, threads)


def dense(x, w, b=None):
    """x (N, D) @ w (D, U) + b (U,)."""
    x, w = check_dense(x, w)
    b = bias("b", b, w.shape[1], x.dtype, f"w's {w.shape[1]} units")
    out = empty("dense output", (x.shape[0], w.shape[1]), x.dtype)
    if dense_by_gemm(x, w):
        n, d = x.shape
        u = w.shape[1]
        _gemm_call(n, u, d, x, d, 1, w, u, out, u, 1, b)
    elif x.shape[1] == 0:  # no features: the kernel would address x[n, 0], which is not there
        out[...] = b if b.size else 0
    elif out.size:  # an empty (2**40, 0) output must not cost 2**40 empty iterations
        _dense_narrow.dense_forward(x, transposed(w), b, out, get_num_threads())
    return out


def dense_grad_x_by_gemm(grad_out, w):
    """grad_out @ w.T, w.T packed straight from w's rows: the batch is the short side, as
    in the forward pass (as the columns of grad_x.T it would fill four 16-wide panels
    with 50)."""
    n, (d, u) = grad_out.shape[0], w.shape
    grad_x = np.empty((n, d), dtype=w.dtype)
    _gemm_call(n, d, u, grad_out, u, 1, w, 1, grad_x, d, 1, np.empty(0, dtype=w.dtype),
               b_cs=u)
    return grad_x


def dense_backward(x, w, grad_out, need_grad_x=True):
    """Gradients of dense: (grad_x or None, grad_w, grad_b)."""
    x, w = check_dense(x, w)
    grad_out = float_array("grad_out", grad_out, ndim=2, dtype=x.dtype)
    if grad_out.shape != (x.shape[0], w.shape[1]):
        raise ValueError(f"grad_out: expected shape {(x.shape[0], w.shape[1])} for x "
                         f"{x.shape} and w {w.shape}, got {grad_out.shape}")
    check_size("grad_b", (w.shape[1],), x.dtype)
    if dense_by_gemm(x, w):
        n, d = x.shape
        u = w.shape[1]
        grad_w = np.empty_like(w)
        # grad_w = x.T @ grad_out: each element sums the batch in order.
        _gemm_call(d, u, n, x, 1, d, grad_out, u, grad_w, u, 1, np.empty(0, dtype=x.dtype))
        grad_x = dense_grad_x_by_gemm(grad_out, w) if need_grad_x else None
        return grad_x, grad_w, grad_out.sum(axis=0)
    threads = get_num_threads()
    grad_w_t = np.zeros(w.shape[::-1], w.dtype) if x.shape[0] == 0 else np.empty(
        w.shape[::-1], w.dtype)
    if x.shape[0] and grad_w_t.size:  # empty work must not loop over huge dimensions
        _dense_narrow.dense_backward_weights(x, grad_out, grad_w_t, DENSE_BLOCK, threads)
    grad_x = None
    if need_grad_x:
        grad_x = np.empty_like(x)
        if grad_x.size:
            _dense_narrow.dense_backward_input(grad_out, transposed(w), grad_x, threads)
    return grad_x, np.ascontiguousarray(grad_w_t.T), grad_out.sum(axis=0)
