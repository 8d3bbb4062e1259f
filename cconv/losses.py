"""Cross-entropy losses, mean over the batch as in Keras.

The model hands a loss either logits (when the last layer's softmax is folded into the
loss, or from_logits=True) or probabilities. From logits the gradient is the exact,
stable (softmax(z) - y) / N.
"""
import numpy as np

from cconv import ops, utils

EPSILON = 1e-7  # Keras clips probabilities to [eps, 1 - eps] before the log


class Loss:
    sparse = False
    name = None  # Keras's name; its string form in compile()
    # Keras options with one value here, {option: that value}
    KERAS_FIXED = {"reduction": "sum_over_batch_size", "label_smoothing": 0.0, "axis": -1,
                   "ignore_class": None}

    def __init__(self, from_logits=False):
        self.from_logits = bool(from_logits)

    def get_config(self):
        """Keras's config for this loss (its options cconv has at their defaults)."""
        config = {"name": self.name, "reduction": "sum_over_batch_size",
                  "from_logits": self.from_logits, "axis": -1}
        if self.sparse:
            config["ignore_class"] = None
        else:
            config["label_smoothing"] = 0.0
        return config

    @classmethod
    def from_config(cls, config):
        label = f"loss {cls.__name__}"
        if isinstance(config, dict) and config.get("reduction") == "auto":
            config = {**config, "reduction": "sum_over_batch_size"}  # Keras's alias of it
        kwargs = utils._keras_options(label, cls, config, cls.KERAS_FIXED, ("name", "dtype"))
        from_logits = kwargs.get("from_logits", False)
        if not isinstance(from_logits, bool):
            raise ValueError(f"{label}: from_logits: expected a bool, got {from_logits!r}")
        return cls(from_logits=from_logits)

    def one_hot(self, y, num_classes, dtype):
        """Labels as a (N, num_classes) one-hot array. `y` was checked by the model."""
        if not self.sparse:
            return y.astype(dtype, copy=False)
        out = np.zeros((len(y), num_classes), dtype=dtype)
        out[np.arange(len(y)), y.astype(np.intp)] = 1
        return out

    def value_and_grad_logits(self, onehot, logits):
        """(per-sample losses, d(mean loss)/d(logits)). For label rows y that do not sum
        to 1 (categorical labels may be any weights, as in Keras) the gradient of
        -sum(y * log softmax(z)) is p * sum(y) - y; a one-hot row makes it p - y."""
        log_p = ops.log_softmax(logits)
        losses = -(onehot * log_p).sum(axis=1)
        grad = (np.exp(log_p) * onehot.sum(axis=1, keepdims=True) - onehot) / len(logits)
        return losses, grad

    def value_and_grad_probs(self, onehot, probs):
        """(per-sample losses, d(mean loss)/d(probs))."""
        clipped = np.clip(probs, EPSILON, 1 - EPSILON)
        losses = -(onehot * np.log(clipped)).sum(axis=1)
        grad = -onehot / clipped / len(probs)
        return losses, grad


class CategoricalCrossentropy(Loss):
    """Labels are one-hot rows of width num_classes."""

    name = "categorical_crossentropy"


class SparseCategoricalCrossentropy(Loss):
    """Labels are integer class indices."""

    sparse = True
    name = "sparse_categorical_crossentropy"


LOSSES = {
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
}


def get(loss):
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str) and loss in LOSSES:
        return LOSSES[loss]()
    raise ValueError(f"loss: expected one of {sorted(LOSSES)} or a cconv.losses.Loss, "
                     f"got {loss!r}")


def serialize(loss):
    """As Keras writes it in a compile config: the name for the default options, else a
    dict naming the class."""
    if not loss.from_logits:
        return loss.name
    return {"module": "keras.losses", "class_name": type(loss).__name__,
            "config": loss.get_config(), "registered_name": None}


def deserialize(value):
    if isinstance(value, str):
        return get(value)
    if isinstance(value, dict) and isinstance(value.get("class_name"), str):
        for cls in LOSSES.values():
            if value["class_name"] in (cls.__name__, cls.name):
                return cls.from_config(value.get("config") or {})
    name = value.get("class_name") if isinstance(value, dict) else value
    raise ValueError(f"loss: {name!r} is not one cconv has ({', '.join(LOSSES)})")
