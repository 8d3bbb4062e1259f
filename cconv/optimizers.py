"""Optimizers update a model's weights in place from its gradients."""
import numbers

import numpy as np

from cconv import ops


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


class Adam(Optimizer):
    """Adam with Keras's update rule (t counts updates from 1):

        alpha = learning_rate * sqrt(1 - beta_2**t) / (1 - beta_1**t)
        m = beta_1 * m + (1 - beta_1) * g;  v = beta_2 * v + (1 - beta_2) * g**2
        w -= alpha * m / (sqrt(v) + epsilon)

    Keras adds epsilon to sqrt(v) after the bias correction is folded into alpha (the
    paper's "epsilon hat"), hence its small default. One fused compiled pass per weight
    array (cconv.ops.adam_update)."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
        self.learning_rate = _positive_float("learning_rate", learning_rate)
        for name, beta in (("beta_1", beta_1), ("beta_2", beta_2)):
            if isinstance(beta, bool) or not isinstance(beta, numbers.Real) \
                    or not 0.0 <= beta < 1.0:
                raise ValueError(f"{name}: expected a float in [0, 1), got {beta!r}")
        self.beta_1, self.beta_2 = float(beta_1), float(beta_2)
        self.epsilon = _positive_float("epsilon", epsilon)
        self.iterations = 0
        self.moments = None

    def update(self, params, grads):
        if self.moments is None:
            self.moments = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
        elif [m.shape for m, _ in self.moments] != [p.shape for p in params]:
            raise ValueError("Adam.update: the weights changed shape since the first update; "
                             "use a new optimizer for a new model")
        self.iterations += 1
        for p, g, (m, v) in zip(params, grads, self.moments):
            ops.adam_update(p, g, m, v, self.iterations, self.learning_rate, self.beta_1,
                            self.beta_2, self.epsilon)


OPTIMIZERS = {"sgd": SGD, "adam": Adam}


def get(optimizer):
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, str) and optimizer.lower() in OPTIMIZERS:
        return OPTIMIZERS[optimizer.lower()]()
    raise ValueError(f"optimizer: expected one of {sorted(OPTIMIZERS)} or a "
                     f"cconv.optimizers.Optimizer, got {optimizer!r}")
