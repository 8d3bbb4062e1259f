"""Batch normalisation over the last axis (channels-last), by the kernels of _norm.

x of any rank (..., C) is a C-contiguous (M, C) view: M rows, one per position of every
sample. The batch's statistics are per-channel means and biased variances, taken in two
passes (the mean, then the mean of squared deviations from it) with float64 accumulators
whatever the dtype, in fixed chunks of rows reduced in order (see _norm.pyx): accurate,
and the same bits for any thread count and CPU level. They are returned in float64, the
values the output was computed with, for the backward pass and the moving averages.
"""
import numbers

import numpy as np

from cconv._kernels import _norm
from cconv.ops import _scratch
from cconv.ops._checks import empty, float_array

# Elements per chunk of the per-channel sums: rows per chunk = max(1, this // C), from the
# shape alone, so the order of additions never depends on the thread count.
CHUNK_ELEMENTS = 4096


def _rows(name, x):
    """x checked, as its (M, C) view."""
    x = float_array(name, x)
    if x.ndim < 1 or x.size == 0:
        raise ValueError(f"{name}: expected a non-empty array of shape (..., channels), got "
                         f"shape {x.shape}")
    return x, x.reshape(-1, x.shape[-1])


def _channels(name, a, c, default):
    """A per-channel vector (C,) as float64; `default` everywhere when a is None."""
    if a is None:
        return np.full(c, default, dtype=np.float64)
    a = float_array(name, a)
    if a.shape != (c,):
        raise ValueError(f"{name}: expected shape ({c},), one value per channel of the last "
                         f"axis, got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: contains NaN or inf")
    return a.astype(np.float64)


def check_epsilon(epsilon):
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) \
            or not (np.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon: expected a positive, finite float, got {epsilon!r}")
    return float(epsilon)


def _inv_std(var, epsilon):
    return 1.0 / np.sqrt(var + check_epsilon(epsilon))


def _chunk(c):
    return max(1, CHUNK_ELEMENTS // c)


def moments(x):
    """(mean, biased variance) of x (..., C) per channel of the last axis, in float64."""
    x, rows = _rows("x", x)
    m, c = rows.shape
    chunk = _chunk(c)
    partial = _scratch.workspace("norm_partial", (-(-m // chunk), c), np.float64)
    threads = _scratch.threads_for(rows.size)
    mean, var = np.empty(c), np.empty(c)
    _norm.channel_sums(rows, np.zeros(c), partial, mean, chunk, False, threads)
    mean /= m
    _norm.channel_sums(rows, mean, partial, var, chunk, True, threads)
    var /= m
    return mean, var


def _normalize(x, rows, mean, scale, offset):
    out = empty("batch_norm output", x.shape, x.dtype)
    _norm.normalize(rows, mean, scale, offset, out.reshape(rows.shape), _chunk(rows.shape[1]),
                    _scratch.threads_for(rows.size))
    return out


def batch_norm(x, gamma=None, beta=None, epsilon=1e-3):
    """Training-mode batch normalisation of x (..., C) over every axis but the last:
    (y, mean, var) with y = (x - mean) / sqrt(var + epsilon) * gamma + beta, mean and
    var the batch's (biased variance, as Keras), returned in float64. gamma and beta,
    (C,) or None (Keras's scale=False / center=False: 1 and 0)."""
    x, rows = _rows("x", x)
    c = rows.shape[1]
    gamma, beta = _channels("gamma", gamma, c, 1.0), _channels("beta", beta, c, 0.0)
    mean, var = moments(x)
    return _normalize(x, rows, mean, gamma * _inv_std(var, epsilon), beta), mean, var


def batch_norm_inference(x, mean, var, gamma=None, beta=None, epsilon=1e-3):
    """Inference-mode batch normalisation: as batch_norm with given statistics (the
    moving mean and variance), which nothing updates."""
    x, rows = _rows("x", x)
    c = rows.shape[1]
    mean, var = _channels("mean", mean, c, 0.0), _channels("var", var, c, 1.0)
    if (var < 0).any():
        raise ValueError(f"var: expected variances >= 0, got a minimum of {var.min()}")
    gamma, beta = _channels("gamma", gamma, c, 1.0), _channels("beta", beta, c, 0.0)
    return _normalize(x, rows, mean, gamma * _inv_std(var, epsilon), beta)


def batch_norm_backward(x, grad_out, mean, var, gamma=None, epsilon=1e-3, need_grad_x=True,
                        batch_statistics=True):
    """Gradients of batch_norm, given x, the gradient wrt y and the batch's mean and var
    (batch_norm's): (grad_x, grad_gamma, grad_beta) with, per channel, xhat = (x - mean)
    / sqrt(var + epsilon), grad_beta = sum(grad_out), grad_gamma = sum(grad_out * xhat),
    grad_x = gamma / sqrt(var + epsilon) * (grad_out - grad_beta / M - xhat * grad_gamma
    / M), the closed form over M rows. grad_x is None when need_grad_x is False.
    batch_statistics=False: the gradients of batch_norm_inference instead, where mean
    and var are constants: grad_x = gamma / sqrt(var + epsilon) * grad_out."""
    x, rows = _rows("x", x)
    grad_out = float_array("grad_out", grad_out, dtype=x.dtype)
    if grad_out.shape != x.shape:
        raise ValueError(f"grad_out: expected shape {x.shape} to match x, got "
                         f"{grad_out.shape}")
    m, c = rows.shape
    grad_rows = grad_out.reshape(rows.shape)
    mean, var = _channels("mean", mean, c, 0.0), _channels("var", var, c, 1.0)
    gamma = _channels("gamma", gamma, c, 1.0)
    inv_std = _inv_std(var, epsilon)
    chunk = _chunk(c)
    partial = _scratch.workspace("norm_partial", (2 * -(-m // chunk), c), np.float64)
    threads = _scratch.threads_for(rows.size)
    sum_grad, sum_grad_xhat = np.empty(c), np.empty(c)
    _norm.backward_sums(rows, grad_rows, mean, inv_std, partial, sum_grad, sum_grad_xhat,
                        chunk, threads)
    grad_x = None
    if need_grad_x:
        grad_x = empty("batch_norm grad_x", x.shape, x.dtype)
        # the batch's statistics depend on every row: the terms through them
        through = (sum_grad / m, sum_grad_xhat / m) if batch_statistics else \
            (np.zeros(c), np.zeros(c))
        _norm.backward_input(rows, grad_rows, mean, inv_std, gamma * inv_std, *through,
                             grad_x.reshape(rows.shape), chunk, threads)
    return grad_x, sum_grad_xhat.astype(x.dtype), sum_grad.astype(x.dtype)
