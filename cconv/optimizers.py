"""Optimizers update a model's weights in place from its gradients."""
import numbers

import numpy as np

from cconv import ops, utils


def _positive_float(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a positive float, got {type(value).__name__}")
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name}: expected a positive, finite float, got {value}")
    return float(value)


# Keras optimizer options that have one value here: {option: that value}
_KERAS_FIXED = {"use_ema": False, "nesterov": False, "amsgrad": False}
# Keras options that only matter when another option is on (use_ema)
_KERAS_IGNORED = ("name", "ema_momentum")


class Optimizer:
    keras_name = None  # Keras's default name, which its configs and weight files carry
    iterations = 0

    def update(self, params, grads):
        """params and grads: lists of arrays, in the same order every step."""
        raise NotImplementedError

    def get_config(self):
        """The constructor's arguments, in the dict shape of the Keras optimizer's config."""
        return {"name": self.keras_name, "learning_rate": self.learning_rate,
                "weight_decay": None, "clipnorm": None, "global_clipnorm": None,
                "clipvalue": None, "use_ema": False, "ema_momentum": 0.99,
                "ema_overwrite_frequency": None, "loss_scale_factor": None,
                "gradient_accumulation_steps": None}

    @classmethod
    def from_config(cls, config):
        """The optimizer a config describes; options cconv lacks raise a ValueError
        naming them."""
        label = f"optimizer {cls.__name__}"
        kwargs = utils._keras_options(label, cls, config, _KERAS_FIXED, _KERAS_IGNORED)
        for key, value in kwargs.items():
            if isinstance(value, dict):  # a learning-rate schedule
                raise ValueError(f"{label}: {key}={value.get('class_name', value)!r} is not "
                                 f"supported by cconv (only a number)")
        return utils._construct(label, cls, kwargs)

    def slots(self, params):
        """The state kept per weight array, in Keras's order: for each weight, its slot
        arrays (zeros before the first update)."""
        return []

    def set_slots(self, slots, iterations):
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
        self.iterations = 0

    keras_name = "SGD"

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": False}

    def slots(self, params):
        if self.momentum == 0.0:
            return []
        return [v.copy() for v in self.velocities] if self.velocities is not None \
            else [np.zeros_like(p) for p in params]

    def set_slots(self, slots, iterations):
        self.iterations = iterations
        self.velocities = [np.array(s) for s in slots] if self.momentum else None

    def update(self, params, grads):
        self.iterations += 1
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

    keras_name = "adam"

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon, "amsgrad": False}

    def slots(self, params):
        if self.moments is None:
            return [np.zeros_like(p) for p in params for _ in range(2)]
        return [a.copy() for pair in self.moments for a in pair]

    def set_slots(self, slots, iterations):
        self.iterations = iterations
        self.moments = [(np.array(slots[i]), np.array(slots[i + 1]))
                        for i in range(0, len(slots), 2)]

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


def serialize(optimizer):
    return {"module": "keras.optimizers", "class_name": type(optimizer).__name__,
            "config": optimizer.get_config(), "registered_name": None}


def deserialize(value):
    """An optimizer from a name ("adam") or a Keras config dict."""
    if isinstance(value, str):
        return get(value)
    if not isinstance(value, dict) or not isinstance(value.get("class_name"), str):
        raise ValueError(f"optimizer: expected a name or a config dict, got {value!r}")
    cls = OPTIMIZERS.get(value["class_name"].lower())
    if cls is None:
        raise ValueError(f"optimizer: {value['class_name']!r} is not one cconv has "
                         f"(SGD, Adam)")
    return cls.from_config(value.get("config") or {})


def get(optimizer):
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, str) and optimizer.lower() in OPTIMIZERS:
        return OPTIMIZERS[optimizer.lower()]()
    raise ValueError(f"optimizer: expected one of {sorted(OPTIMIZERS)} or a "
                     f"cconv.optimizers.Optimizer, got {optimizer!r}")
