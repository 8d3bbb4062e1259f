"""Optimizer updates (kernels: _optim.pyx.tp)."""
import numbers

import numpy as np

from cconv._kernels import _optim
from cconv.ops._checks import FLOAT_DTYPES, float_array
from cconv.ops._scratch import threads_for


def _state_array(name, a, like=None):
    """An array the update writes into: it must be used as is, never copied."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(a).__name__}")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected dtype float32 or float64, got {a.dtype}")
    if like is not None and (a.shape != like.shape or a.dtype != like.dtype):
        raise ValueError(f"{name}: expected shape {like.shape} and dtype {like.dtype} to match "
                         f"param, got {a.shape} and {a.dtype}")
    if not (a.flags.c_contiguous and a.flags.writeable):
        raise ValueError(f"{name}: expected a writeable, C-contiguous array (it is updated "
                         f"in place)")
    return a


def _hyper(name, value, low, high, low_open=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a float, got {type(value).__name__}")
    value = float(value)
    ok = (low < value if low_open else low <= value) and value < high
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name}: expected a float in {bracket}{low}, {high}), got {value}")
    return value


def adam_update(param, grad, m, v, step, learning_rate=0.001, beta_1=0.9, beta_2=0.999,
                epsilon=1e-7):
    """One Adam step as Keras takes it, in place on param, m and v (step t counts from 1):
        alpha = learning_rate * sqrt(1 - beta_2**t) / (1 - beta_1**t)
        m += (grad - m) * (1 - beta_1);  v += (grad**2 - v) * (1 - beta_2)
        param -= alpha * m / (sqrt(v) + epsilon)"""
    param = _state_array("param", param)
    m = _state_array("m", m, param)
    v = _state_array("v", v, param)
    grad = float_array("grad", grad, dtype=param.dtype)
    if grad.shape != param.shape:
        raise ValueError(f"grad: expected shape {param.shape} to match param, got {grad.shape}")
    arrays = {"param": param, "m": m, "v": v, "grad": grad}
    names = list(arrays)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if np.may_share_memory(arrays[a], arrays[b]):
                raise ValueError(f"{b}: must not share memory with {a}")
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 1:
        raise ValueError(f"step: expected an int >= 1 (the update's number), got {step!r}")
    lr = _hyper("learning_rate", learning_rate, 0.0, np.inf, low_open=True)
    b1 = _hyper("beta_1", beta_1, 0.0, 1.0)
    b2 = _hyper("beta_2", beta_2, 0.0, 1.0)
    eps = _hyper("epsilon", epsilon, 0.0, np.inf, low_open=True)
    alpha = lr * np.sqrt(1.0 - b2 ** int(step)) / (1.0 - b1 ** int(step))
    if param.size:
        _optim.adam_update(param.reshape(-1), grad.reshape(-1), m.reshape(-1), v.reshape(-1),
                           alpha, 1.0 - b1, 1.0 - b2, eps, threads_for(param.size))
