"""Optimizers update a model's weights in place from its gradients, as Keras 3's do.

A step (Keras's base optimizer, in this order): the learning rate is read at the
iteration count of the updates already made (a schedule is evaluated there); the
gradients are clipped (clipnorm: each gradient to that L2 norm; global_clipnorm: all
of them together to that norm; clipvalue: elementwise), in NumPy; weight decay, when
set, shrinks each weight first (w -= w * weight_decay * lr, decoupled from the
gradient), in NumPy; then one fused compiled pass per weight array (cconv.ops
sgd_update, rmsprop_update, adam_update) updates the weight and its slots.

Slots (the state kept per weight) are named and ordered as Keras keeps them, which is
the order of a .keras file's optimizer/vars after iterations and the learning rate:
groups of slot names, each group for every weight in turn (Adam: momentum and velocity
of each weight, then each velocity_hat)."""
import math
import numbers

import numpy as np

from cconv import ops, utils
from cconv.optimizers import schedules

# Keras options that have one value here: {option: that value}
_KERAS_FIXED = {"use_ema": False, "ema_overwrite_frequency": None, "loss_scale_factor": None,
                "gradient_accumulation_steps": None}
MAX_SLOTS = 3  # most slot arrays per weight (RMSprop centered with momentum; Adam amsgrad)


def _positive_float(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a positive float, got {type(value).__name__}")
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name}: expected a positive, finite float, got {value}")
    return float(value)


def _fraction(name, value):
    """A float in [0, 1) (betas, rho, momentum)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not 0.0 <= value < 1.0:
        raise ValueError(f"{name}: expected a float in [0, 1), got {value!r}")
    return float(value)


def _optional(name, value):
    """None, or a float >= 0 (weight decay and the clipping options; Keras treats 0 as
    off)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name}: expected None or a float >= 0, got {value!r}")
    return float(value)


def _flag(name, value):
    if not isinstance(value, bool):
        raise ValueError(f"{name}: expected True or False, got {value!r}")
    return value


def _sum_of_squares(g):
    """sum(g**2) in float64, with NumPy's pairwise order: the same at any thread count."""
    return float(np.sum(np.square(g, dtype=np.float64)))


class Optimizer:
    """The base: a subclass defines _apply (the step after clipping and weight decay)
    and _slot_groups, or overrides update. learning_rate has a default here (Keras's
    base has none) so that a subclass without arguments of its own can be made bare."""

    keras_name = None  # Keras's default name, which its configs and weight files carry

    def __init__(self, learning_rate=0.001, weight_decay=None, clipnorm=None, clipvalue=None,
                 global_clipnorm=None, use_ema=False, ema_momentum=0.99,
                 ema_overwrite_frequency=None, loss_scale_factor=None,
                 gradient_accumulation_steps=None, name=None):
        given = {"use_ema": use_ema, "ema_overwrite_frequency": ema_overwrite_frequency,
                 "loss_scale_factor": loss_scale_factor,
                 "gradient_accumulation_steps": gradient_accumulation_steps}
        for key, value in given.items():
            if value != _KERAS_FIXED[key]:
                raise ValueError(f"{key}={value!r} is not supported by cconv "
                                 f"(only {_KERAS_FIXED[key]!r})")
        if name is not None and not isinstance(name, str):
            raise ValueError(f"name: expected a string, got {name!r}")
        self.name = name or self.keras_name
        self.ema_momentum = ema_momentum
        self.weight_decay = _optional("weight_decay", weight_decay)
        self.clipnorm = _optional("clipnorm", clipnorm)
        self.clipvalue = _optional("clipvalue", clipvalue)
        self.global_clipnorm = _optional("global_clipnorm", global_clipnorm)
        clips = {"clipnorm": clipnorm, "clipvalue": clipvalue,
                 "global_clipnorm": global_clipnorm}
        if sum(v is not None for v in clips.values()) > 1:
            raise ValueError("Only one of clipnorm, clipvalue and global_clipnorm can be "
                             "set; got " + ", ".join(f"{k}={v}" for k, v in clips.items()))
        self._learning_rate = None
        self.learning_rate = learning_rate
        self.iterations = 0
        self._slots = None   # {slot name: [array per weight]} once built
        self._shapes = None  # the weights' (shape, dtype), fixed at the first update

    # ---- the learning rate -------------------------------------------------------------
    @property
    def learning_rate(self):
        """The learning rate of the next update: a schedule's value at iterations."""
        if isinstance(self._learning_rate, schedules.LearningRateSchedule):
            return float(self._learning_rate(self.iterations))
        return self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        if isinstance(value, schedules.LearningRateSchedule):
            self._learning_rate = value
            return
        if isinstance(self._learning_rate, schedules.LearningRateSchedule):
            raise TypeError("learning_rate: this optimizer was made with a "
                            "LearningRateSchedule, so its learning rate cannot be set; "
                            "make the optimizer with a float learning_rate to set it")
        self._learning_rate = _positive_float("learning_rate", value)

    @property
    def schedule(self):
        """The LearningRateSchedule that gives the learning rate, or None."""
        lr = self._learning_rate
        return lr if isinstance(lr, schedules.LearningRateSchedule) else None

    # ---- the step ----------------------------------------------------------------------
    def update(self, params, grads):
        """params and grads: lists of arrays, in the same order every step."""
        self._build(params)
        grads = self._clip(grads)
        lr = self.learning_rate
        if self.weight_decay is not None:
            for p in params:
                t = p.dtype.type
                p -= p * t(self.weight_decay) * t(lr)
        self._apply(params, grads, lr)
        self.iterations += 1

    def _apply(self, params, grads, learning_rate):
        raise NotImplementedError

    def _clip(self, grads):
        if self.clipnorm:
            clipped = []
            for g in grads:
                t = g.dtype.type
                norm = math.sqrt(_sum_of_squares(g))
                clipped.append(g * t(self.clipnorm) / t(max(norm, self.clipnorm)))
            return clipped
        if self.global_clipnorm:
            with np.errstate(divide="ignore", invalid="ignore"):
                norm = np.sqrt(np.float64(math.fsum(_sum_of_squares(g) for g in grads)))
                # a NaN or inf norm makes every gradient NaN, as Keras does
                scale = self.global_clipnorm * min(1.0 / norm, 1.0 / self.global_clipnorm) \
                    + (norm - norm)
            return [g * g.dtype.type(scale) for g in grads]
        if self.clipvalue:
            return [np.clip(g, -self.clipvalue, self.clipvalue) for g in grads]
        return grads

    # ---- slots -------------------------------------------------------------------------
    def _slot_groups(self):
        """Keras's slot names, in groups: each group is kept for every weight in turn."""
        return []

    def _build(self, params):
        shapes = [(p.shape, p.dtype) for p in params]
        if self._shapes is None:
            self._shapes = shapes
        elif shapes != self._shapes:
            raise ValueError(f"{type(self).__name__}.update: the weights changed shape since "
                             f"the first update; use a new optimizer for a new model")
        if self._slots is None:
            self._slots = {n: [np.zeros_like(p) for p in params]
                           for group in self._slot_groups() for n in group}

    def slots(self, params):
        """The state kept per weight array, in Keras's order (zeros before the first
        update)."""
        made = self._slots
        out = []
        for group in self._slot_groups():
            for i, p in enumerate(params):
                out += [made[n][i].copy() if made else np.zeros_like(p) for n in group]
        return out

    def set_slots(self, slots, iterations):
        """Take the state slots(params) gives (as a weights file holds it)."""
        groups = self._slot_groups()
        per_weight = sum(len(g) for g in groups)
        count = len(slots) // per_weight if per_weight else 0
        made, k = {n: [None] * count for g in groups for n in g}, 0
        for group in groups:
            for i in range(count):
                for n in group:
                    made[n][i] = np.array(slots[k])
                    k += 1
        self._slots = made if groups else None
        self._shapes = [(a.shape, a.dtype) for a in made[groups[0][0]]] if groups else None
        self.iterations = iterations

    def scalars(self):
        """The variables Keras keeps before the slots: iterations, then the learning rate
        unless a schedule gives it."""
        head = [np.int64(self.iterations)]
        if self.schedule is None:
            head.append(np.float32(self._learning_rate))
        return head

    # ---- configs -----------------------------------------------------------------------
    def get_config(self):
        """The constructor's arguments, in the dict shape of the Keras optimizer's config."""
        lr = self.schedule
        return {"name": self.name,
                "learning_rate": self._learning_rate if lr is None else schedules.serialize(lr),
                "weight_decay": self.weight_decay, "clipnorm": self.clipnorm,
                "global_clipnorm": self.global_clipnorm, "clipvalue": self.clipvalue,
                "use_ema": False, "ema_momentum": self.ema_momentum,
                "ema_overwrite_frequency": None, "loss_scale_factor": None,
                "gradient_accumulation_steps": None}

    @classmethod
    def from_config(cls, config):
        """The optimizer a config describes; options cconv lacks raise a ValueError
        naming them."""
        label = f"optimizer {cls.__name__}"
        kwargs = utils._keras_options(label, cls, config, _KERAS_FIXED)
        if isinstance(kwargs.get("learning_rate"), dict):
            kwargs["learning_rate"] = schedules.deserialize(kwargs["learning_rate"])
        return utils._construct(label, cls, kwargs)


class SGD(Optimizer):
    """w -= lr * g, or with momentum mu: m = mu * m - lr * g; w += m, and with nesterov
    w += mu * m - lr * g (as Keras)."""

    keras_name = "sgd"

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, use_ema=False,
                 ema_momentum=0.99, ema_overwrite_frequency=None, loss_scale_factor=None,
                 gradient_accumulation_steps=None, name=None):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm,
                         use_ema, ema_momentum, ema_overwrite_frequency, loss_scale_factor,
                         gradient_accumulation_steps, name)
        self.momentum = _fraction("momentum", momentum)
        self.nesterov = _flag("nesterov", nesterov)

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}

    def _slot_groups(self):
        return [["momentum"]] if self.momentum else []

    def _apply(self, params, grads, learning_rate):
        momentums = self._slots.get("momentum", [None] * len(params))
        for p, g, m in zip(params, grads, momentums):
            ops.sgd_update(p, g, m, learning_rate, self.momentum, self.nesterov)


class RMSprop(Optimizer):
    """Keras's RMSprop: v = rho * v + (1 - rho) * g**2; centered, also a = rho * a +
    (1 - rho) * g and v - a**2 in v's place below; step = lr * g / sqrt(v + epsilon);
    with momentum mu, m = mu * m + step and w -= m, else w -= step."""

    keras_name = "rm_sprop"

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7,
                 centered=False, weight_decay=None, clipnorm=None, clipvalue=None,
                 global_clipnorm=None, use_ema=False, ema_momentum=0.99,
                 ema_overwrite_frequency=None, loss_scale_factor=None,
                 gradient_accumulation_steps=None, name=None):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm,
                         use_ema, ema_momentum, ema_overwrite_frequency, loss_scale_factor,
                         gradient_accumulation_steps, name)
        self.rho = _fraction("rho", rho)
        self.momentum = _fraction("momentum", momentum)
        self.epsilon = _positive_float("epsilon", epsilon)
        self.centered = _flag("centered", centered)

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum,
                "epsilon": self.epsilon, "centered": self.centered}

    def _slot_groups(self):
        return [["velocity"]] + ([["momentum"]] if self.momentum else []) \
            + ([["average_gradient"]] if self.centered else [])

    def _apply(self, params, grads, learning_rate):
        none = [None] * len(params)
        s = self._slots
        for p, g, v, m, a in zip(params, grads, s["velocity"], s.get("momentum", none),
                                 s.get("average_gradient", none)):
            ops.rmsprop_update(p, g, v, m, a, learning_rate, self.rho, self.momentum,
                               self.epsilon, self.centered)


class Adam(Optimizer):
    """Adam with Keras's update rule (t counts updates from 1):

        alpha = learning_rate * sqrt(1 - beta_2**t) / (1 - beta_1**t)
        m = beta_1 * m + (1 - beta_1) * g;  v = beta_2 * v + (1 - beta_2) * g**2
        amsgrad: v_hat = max(v_hat, v), used in v's place
        w -= alpha * m / (sqrt(v) + epsilon)

    Keras adds epsilon to sqrt(v) after the bias correction is folded into alpha (the
    paper's "epsilon hat"), hence its small default. One fused compiled pass per weight
    array (cconv.ops.adam_update)."""

    keras_name = "adam"

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False, weight_decay=None, clipnorm=None, clipvalue=None,
                 global_clipnorm=None, use_ema=False, ema_momentum=0.99,
                 ema_overwrite_frequency=None, loss_scale_factor=None,
                 gradient_accumulation_steps=None, name=None):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm,
                         use_ema, ema_momentum, ema_overwrite_frequency, loss_scale_factor,
                         gradient_accumulation_steps, name)
        self.beta_1 = _fraction("beta_1", beta_1)
        self.beta_2 = _fraction("beta_2", beta_2)
        self.epsilon = _positive_float("epsilon", epsilon)
        self.amsgrad = _flag("amsgrad", amsgrad)

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon, "amsgrad": self.amsgrad}

    def _slot_groups(self):
        return [["momentum", "velocity"]] + ([["velocity_hat"]] if self.amsgrad else [])

    def _apply(self, params, grads, learning_rate):
        s = self._slots
        hats = s.get("velocity_hat", [None] * len(params))
        for p, g, m, v, h in zip(params, grads, s["momentum"], s["velocity"], hats):
            ops.adam_update(p, g, m, v, self.iterations + 1, learning_rate, self.beta_1,
                            self.beta_2, self.epsilon, self.amsgrad, h)


class AdamW(Adam):
    """Adam with weight decay on by default (Keras's AdamW: the base optimizer's
    decoupled decay, w -= w * weight_decay * lr before each Adam step)."""

    keras_name = "adam_w"

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-7, amsgrad=False, clipnorm=None, clipvalue=None,
                 global_clipnorm=None, use_ema=False, ema_momentum=0.99,
                 ema_overwrite_frequency=None, loss_scale_factor=None,
                 gradient_accumulation_steps=None, name=None):
        if weight_decay is None:
            raise ValueError("weight_decay: AdamW needs a float, got None")
        super().__init__(learning_rate, beta_1, beta_2, epsilon, amsgrad, weight_decay,
                         clipnorm, clipvalue, global_clipnorm, use_ema, ema_momentum,
                         ema_overwrite_frequency, loss_scale_factor,
                         gradient_accumulation_steps, name)


OPTIMIZERS = {cls.__name__.lower(): cls for cls in (SGD, RMSprop, Adam, AdamW)}


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
                         f"({', '.join(c.__name__ for c in OPTIMIZERS.values())})")
    return cls.from_config(value.get("config") or {})


def get(optimizer):
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, str) and optimizer.lower() in OPTIMIZERS:
        return OPTIMIZERS[optimizer.lower()]()
    raise ValueError(f"optimizer: expected one of {sorted(OPTIMIZERS)} or a "
                     f"cconv.optimizers.Optimizer, got {optimizer!r}")
