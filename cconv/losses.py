"""Keras 3's losses: cross-entropies and regression errors, vectorised NumPy (memory-bound).

A loss gives each sample's loss and its gradient wrt that sample's output; the model
weighs and reduces them as Keras's "sum_over_batch_size" does: sum(w_i * loss_i) / N.
A sample's loss is Keras's: the cross-entropy summed over the classes (last axis); for
the elementwise losses (mse, mae, binary cross-entropy) the mean over the sample's
elements, which is what Keras's mean over the last axis followed by the mean over the
batch comes to.

The model hands a loss either logits (when the last layer's activation is the one the
loss folds, or from_logits=True) or the output. From logits the gradient is the exact,
stable p - y of softmax or sigmoid. On probabilities Keras's numbers are kept: the
cross-entropies clip p to [EPSILON, 1 - EPSILON] (the categorical ones first divide the
output by its sum), and the gradient is zero where the clip binds.
"""
import numbers

import numpy as np

from cconv import ops, utils

EPSILON = 1e-7  # Keras's backend.epsilon()
REDUCTION = "sum_over_batch_size"


class Loss:
    """Base of cconv's losses. Subclasses set the class attributes below."""
    name = None       # Keras's default name=, and the string compile() takes
    aliases = ()      # compile()'s other strings for it (Keras's "mse", "bce"...)
    target = None     # the labels it reads: "sparse", "categorical", "binary", "regression"
    folds = None      # the final activation folded into the loss on logits
    elementwise = True  # a sample's loss is the mean over its elements (else a class sum)
    from_logits = False
    label_smoothing = 0.0

    def __init__(self, reduction=REDUCTION, name=None, dtype=None):
        if reduction not in (REDUCTION, "auto"):  # Keras 2's "auto" meant the same
            raise ValueError(f"{type(self).__name__}: reduction={reduction!r} is not "
                             f"supported by cconv (only {REDUCTION!r})")
        if dtype is not None:
            raise ValueError(f"{type(self).__name__}: dtype={dtype!r} is not supported by "
                             f"cconv (losses compute in the model's dtype)")
        if name is not None and not isinstance(name, str):
            raise ValueError(f"{type(self).__name__}: name: expected a str, got {name!r}")
        self.loss_name = name or self.name

    def get_config(self):
        """Keras's config for this loss."""
        return {"name": self.loss_name, "reduction": REDUCTION, **self._options()}

    def _options(self):
        return {}

    @classmethod
    def from_config(cls, config):
        label = f"loss {cls.__name__}"
        kwargs = utils._keras_options(label, cls, config, ignored=("dtype",))
        return utils._construct(label, cls, kwargs)

    def __repr__(self):
        options = ", ".join(f"{k}={v!r}" for k, v in self._options().items())
        return f"{type(self).__name__}({options})"

    # ---- numbers ---------------------------------------------------------------------
    def per_sample(self, target, out, on_logits):
        """(each sample's loss, shape (N,); d(sample's loss)/d(its output or logits),
        out's shape). target has out's shape (one-hot rows for the sparse loss)."""
        target = self.smoothed(target)
        values, grad = (self._on_logits if on_logits else self._on_output)(target, out)
        if self.elementwise:
            m = out[0].size
            return values.reshape(len(out), -1).mean(axis=1), grad / m
        return values.sum(axis=-1), grad

    def smoothed(self, target):
        return target


class _Crossentropy(Loss):
    """Categorical cross-entropy: -sum(y * log p) over the last axis."""
    folds = "softmax"
    elementwise = False

    def smoothed(self, target):
        if not self.label_smoothing:
            return target
        k = target.shape[-1]
        return target * (1 - self.label_smoothing) + self.label_smoothing / k

    def _on_logits(self, target, logits):
        # For rows of y that do not sum to 1 (Keras takes any label weights) the
        # gradient of -sum(y * log softmax(z)) is p * sum(y) - y.
        log_p = ops.log_softmax(logits)
        grad = np.exp(log_p) * target.sum(axis=-1, keepdims=True) - target
        return -target * log_p, grad

    def _on_output(self, target, out):
        total = out.sum(axis=-1, keepdims=True)
        q = out / total
        clipped = np.clip(q, EPSILON, 1 - EPSILON)
        g = np.where(clipped == q, -target / clipped, 0)  # d/dq; the clip stops it
        # through q = out / sum(out)
        grad = (g - (g * q).sum(axis=-1, keepdims=True)) / total
        return -target * np.log(clipped), grad


class CategoricalCrossentropy(_Crossentropy):
    """Labels are rows of class weights (one-hot, usually) of width classes."""
    name = "categorical_crossentropy"
    target = "categorical"

    def __init__(self, from_logits=False, label_smoothing=0.0, axis=-1,
                 reduction=REDUCTION, name=None, dtype=None):
        super().__init__(reduction, name, dtype)
        self.from_logits = _bool(self, "from_logits", from_logits)
        self.label_smoothing = _fraction(self, label_smoothing)
        _last_axis(self, axis)

    def _options(self):
        return {"from_logits": self.from_logits, "label_smoothing": self.label_smoothing,
                "axis": -1}


class SparseCategoricalCrossentropy(_Crossentropy):
    """Labels are integer class indices (Keras has no label_smoothing for them)."""
    name = "sparse_categorical_crossentropy"
    target = "sparse"

    def __init__(self, from_logits=False, ignore_class=None, reduction=REDUCTION,
                 name=None, dtype=None):
        super().__init__(reduction, name, dtype)
        self.from_logits = _bool(self, "from_logits", from_logits)
        if ignore_class is not None:
            raise ValueError(f"SparseCategoricalCrossentropy: ignore_class={ignore_class!r}"
                             f" is not supported by cconv (only None)")

    def _options(self):
        return {"from_logits": self.from_logits, "ignore_class": None}


class BinaryCrossentropy(Loss):
    """Labels in [0, 1] of the output's shape; -(y log p + (1 - y) log(1 - p)) for each
    element. label_smoothing moves labels towards 0.5."""
    name = "binary_crossentropy"
    aliases = ("bce",)
    target = "binary"
    folds = "sigmoid"

    def __init__(self, from_logits=False, label_smoothing=0.0, axis=-1,
                 reduction=REDUCTION, name=None, dtype=None):
        super().__init__(reduction, name, dtype)
        self.from_logits = _bool(self, "from_logits", from_logits)
        self.label_smoothing = _fraction(self, label_smoothing)
        _last_axis(self, axis)

    def _options(self):
        return {"from_logits": self.from_logits, "label_smoothing": self.label_smoothing,
                "axis": -1}

    def smoothed(self, target):
        if not self.label_smoothing:
            return target
        return target * (1 - self.label_smoothing) + 0.5 * self.label_smoothing

    def _on_logits(self, target, z):
        # -y log(sigmoid z) - (1 - y) log(sigmoid -z), with log(sigmoid -z) = -softplus(z)
        softplus = np.logaddexp(0, z)
        values = softplus - target * z
        return values, np.exp(z - softplus) - target  # sigmoid(z) - y

    def _on_output(self, target, p):
        clipped = np.clip(p, EPSILON, 1 - EPSILON)
        values = -(target * np.log(clipped) + (1 - target) * np.log(1 - clipped))
        grad = np.where(clipped == p, (clipped - target) / (clipped * (1 - clipped)), 0)
        return values, grad


class MeanSquaredError(Loss):
    name = "mean_squared_error"
    aliases = ("mse",)
    target = "regression"

    def _on_output(self, target, out):
        diff = out - target
        return diff * diff, 2 * diff


class MeanAbsoluteError(Loss):
    """|out - y|; at a tie the gradient is 0 (Keras on JAX takes -1 there, TensorFlow
    0: the subgradient is any value in [-1, 1])."""
    name = "mean_absolute_error"
    aliases = ("mae",)
    target = "regression"

    def _on_output(self, target, out):
        diff = out - target
        return np.abs(diff), np.sign(diff)


def _bool(loss, what, value):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{type(loss).__name__}: {what}: expected a bool, got {value!r}")
    return bool(value)


def _fraction(loss, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not 0.0 <= value <= 1.0:
        raise ValueError(f"{type(loss).__name__}: label_smoothing: expected a float in "
                         f"[0, 1], got {value!r}")
    return float(value)


def _last_axis(loss, axis):
    if axis != -1 or isinstance(axis, bool):
        raise ValueError(f"{type(loss).__name__}: axis={axis!r} is not supported by cconv "
                         f"(only -1, the last axis)")


# The one table of losses: class by Keras's class name; every string compile() takes
# (Keras's function names and aliases) is read from the classes.
LOSSES = {cls.__name__: cls for cls in (MeanSquaredError, MeanAbsoluteError,
                                        BinaryCrossentropy, CategoricalCrossentropy,
                                        SparseCategoricalCrossentropy)}
NAMES = {name: cls for cls in LOSSES.values() for name in (cls.name,) + cls.aliases}


def get(loss):
    """A Loss from a Loss, a name compile() takes, a Keras class name or a Keras dict."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str) and loss in NAMES:
        return NAMES[loss]()
    if isinstance(loss, str) and loss in LOSSES:
        return LOSSES[loss]()
    if isinstance(loss, dict):
        return deserialize(loss)
    raise ValueError(f"loss: expected one of {sorted(NAMES)} or a cconv.losses.Loss, "
                     f"got {loss!r}")


def serialize(loss):
    """As Keras writes a loss object in a compile config."""
    return {"module": "keras.losses", "class_name": type(loss).__name__,
            "config": loss.get_config(), "registered_name": None}


def deserialize(value):
    if isinstance(value, str):
        return get(value)
    if isinstance(value, dict) and isinstance(value.get("class_name"), str):
        cls = LOSSES.get(value["class_name"]) or NAMES.get(value["class_name"])
        if cls is not None:
            config = value.get("config") or {}
            if isinstance(config, dict) and config.get("reduction") == "auto":
                config = {**config, "reduction": REDUCTION}
            return cls.from_config(config)
    name = value.get("class_name") if isinstance(value, dict) else value
    raise ValueError(f"loss: {name!r} is not one cconv has ({', '.join(LOSSES)})")
