"""Optimizer updates (kernels: _optim.pyx.tp): one fused pass per weight array, in place
on the parameter and the optimizer's slots, with Keras 3's arithmetic and order."""
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


def _flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__}")
    return bool(value)


def _arrays(param, grad, **slots):
    """param, grad (as param's dtype) and the slots that are not None, checked: shapes
    and dtypes match param's, state arrays writeable and C-contiguous, no two sharing
    memory. Returns (param, grad, {slot name: flat array or None})."""
    param = _state_array("param", param)
    grad = float_array("grad", grad, dtype=param.dtype)
    if grad.shape != param.shape:
        raise ValueError(f"grad: expected shape {param.shape} to match param, got {grad.shape}")
    given = {"param": param, "grad": grad}
    for name, a in slots.items():
        if a is not None:
            given[name] = _state_array(name, a, param)
    names = list(given)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if np.may_share_memory(given[a], given[b]):
                raise ValueError(f"{b}: must not share memory with {a}")
    flat = {name: (a.reshape(-1) if a is not None else None) for name, a in slots.items()}
    return param, grad, flat


def adam_update(param, grad, m, v, step, learning_rate=0.001, beta_1=0.9, beta_2=0.999,
                epsilon=1e-7, amsgrad=False, v_hat=None):
    """One Adam step as Keras takes it, in place on param, m, v (and v_hat) (step t
    counts from 1):
        alpha = learning_rate * sqrt(1 - beta_2**t) / (1 - beta_1**t)
        m += (grad - m) * (1 - beta_1);  v += (grad**2 - v) * (1 - beta_2)
        amsgrad: v_hat = max(v_hat, v), which takes v's place below
        param -= alpha * m / (sqrt(v) + epsilon)"""
    if _flag("amsgrad", amsgrad) != (v_hat is not None):
        raise ValueError(f"v_hat: expected an array exactly when amsgrad=True, got "
                         f"{type(v_hat).__name__} with amsgrad={amsgrad}")
    param, grad, s = _arrays(param, grad, m=m, v=v, v_hat=v_hat)
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 1:
        raise ValueError(f"step: expected an int >= 1 (the update's number), got {step!r}")
    lr = _hyper("learning_rate", learning_rate, 0.0, np.inf)
    b1 = _hyper("beta_1", beta_1, 0.0, 1.0)
    b2 = _hyper("beta_2", beta_2, 0.0, 1.0)
    eps = _hyper("epsilon", epsilon, 0.0, np.inf, low_open=True)
    alpha = lr * np.sqrt(1.0 - b2 ** int(step)) / (1.0 - b1 ** int(step))
    if param.size:
        _optim.adam_update(param.reshape(-1), grad.reshape(-1), s["m"], s["v"], s["v_hat"],
                           alpha, 1.0 - b1, 1.0 - b2, eps, threads_for(param.size))


def sgd_update(param, grad, momentums=None, learning_rate=0.01, momentum=0.0,
               nesterov=False):
    """One SGD step as Keras takes it, in place on param (and momentums m):
        momentum == 0 (momentums None): param -= grad * learning_rate
        else: m = m * momentum - grad * learning_rate; param += m, or with nesterov
              param += m * momentum - grad * learning_rate"""
    mu = _hyper("momentum", momentum, 0.0, 1.0)
    if (mu != 0.0) != (momentums is not None):
        raise ValueError(f"momentums: expected an array exactly when momentum > 0, got "
                         f"{type(momentums).__name__} with momentum={mu}")
    nesterov = _flag("nesterov", nesterov)
    param, grad, s = _arrays(param, grad, momentums=momentums)
    lr = _hyper("learning_rate", learning_rate, 0.0, np.inf)
    if param.size:
        _optim.sgd_update(param.reshape(-1), grad.reshape(-1), s["momentums"], lr, mu,
                          nesterov, threads_for(param.size))


def rmsprop_update(param, grad, velocity, momentums=None, average_gradient=None,
                   learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7,
                   centered=False):
    """One RMSprop step as Keras takes it, in place on param and the slots:
        velocity = rho * velocity + (1 - rho) * grad**2
        centered: average_gradient = rho * average_gradient + (1 - rho) * grad,
                  d = velocity - average_gradient**2 + epsilon; else d = velocity + epsilon
        step = learning_rate * grad / sqrt(d)
        momentum > 0: momentums = momentum * momentums + step; param -= momentums
        else: param -= step"""
    mu = _hyper("momentum", momentum, 0.0, 1.0)
    if (mu != 0.0) != (momentums is not None):
        raise ValueError(f"momentums: expected an array exactly when momentum > 0, got "
                         f"{type(momentums).__name__} with momentum={mu}")
    if _flag("centered", centered) != (average_gradient is not None):
        raise ValueError(f"average_gradient: expected an array exactly when centered=True, "
                         f"got {type(average_gradient).__name__} with centered={centered}")
    if velocity is None:
        raise TypeError("velocity: expected a numpy array, got NoneType")
    param, grad, s = _arrays(param, grad, velocity=velocity, momentums=momentums,
                             average_gradient=average_gradient)
    lr = _hyper("learning_rate", learning_rate, 0.0, np.inf)
    r = _hyper("rho", rho, 0.0, 1.0)
    eps = _hyper("epsilon", epsilon, 0.0, np.inf, low_open=True)
    if param.size:
        _optim.rmsprop_update(param.reshape(-1), grad.reshape(-1), s["velocity"],
                              s["momentums"], s["average_gradient"], lr, r, 1.0 - r, mu,
                              eps, threads_for(param.size))
