"""Optimizers update a model's weights in place from its gradients."""
import numbers

import numpy as np


def _positive_float(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a positive float, got {type(value).__name__}")
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name}: expected a positive, finite float, got {value}")
    return float(value)


class Optimizer:
    def update(self, params, grads):
        """params and grads: lists of arrays, in the same order every step."""
        raise NotImplementedError


class SGD(Optimizer):
    """w -= learning_rate * g, or with momentum m: v = m * v - lr * g; w += v (as Keras)."""

    def __init__(self, learning_rate=0.01, momentum=0.0):
        self.learning_rate = _positive_float("learning_rate", learning_rate)
        if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real) \
                or not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum: expected a float in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)
        self.velocities = None

    def update(self, params, grads):
        if self.momentum == 0.0:
            for p, g in zip(params, grads):
                p -= p.dtype.type(self.learning_rate) * g
            return
        if self.velocities is None:
            self.velocities = [np.zeros_like(p) for p in params]
        for p, g, v in zip(params, grads, self.velocities):
            v *= p.dtype.type(self.momentum)
            v -= p.dtype.type(self.learning_rate) * g
            p += v


OPTIMIZERS = {"sgd": SGD}


def get(optimizer):
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, str) and optimizer.lower() in OPTIMIZERS:
        return OPTIMIZERS[optimizer.lower()]()
    raise ValueError(f"optimizer: expected one of {sorted(OPTIMIZERS)} or a "
                     f"cconv.optimizers.Optimizer, got {optimizer!r}")
