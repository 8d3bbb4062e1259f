"""The metrics compile accepts, by Keras's names, and the running means that fit and
evaluate log, as Keras 3 computes them.

A metric gives each sample a value (the mean over the sample's elements, as Keras's
Mean reduces them); an epoch logs the mean of those values over its samples, or for a
weighted metric sum(w * value) / sum(w) (0 when the weights sum to 0, as Keras). A
metric is logged under the name it was given ("acc" logs as "acc").
"""
from collections import namedtuple

import numpy as np

BINARY_THRESHOLD = 0.5  # keras.metrics.binary_accuracy(threshold=0.5)


def _per_sample(values):
    return values.reshape(len(values), -1).mean(axis=1)


def categorical_accuracy(target, out):
    """Whether argmax(out) is argmax(target) over the last axis (sparse labels reach
    here as one-hot rows, so this is Keras's sparse_categorical_accuracy too)."""
    return _per_sample(out.argmax(axis=-1) == target.argmax(axis=-1))


def binary_accuracy(target, out):
    return _per_sample(target == (out > BINARY_THRESHOLD))


def mean_absolute_error(target, out):
    return _per_sample(np.abs(out - target))


def mean_squared_error(target, out):
    diff = out - target
    return _per_sample(diff * diff)


Metric = namedtuple("Metric", "higher_is_better fn")
# name -> Metric; fn None: resolved from the output's shape, as Keras resolves
# "accuracy" (see function)
METRICS = {
    "accuracy": Metric(True, None),
    "acc": Metric(True, None),
    "categorical_accuracy": Metric(True, categorical_accuracy),
    "sparse_categorical_accuracy": Metric(True, categorical_accuracy),
    "binary_accuracy": Metric(True, binary_accuracy),
    "mae": Metric(False, mean_absolute_error),
    "mean_absolute_error": Metric(False, mean_absolute_error),
    "mse": Metric(False, mean_squared_error),
    "mean_squared_error": Metric(False, mean_squared_error),
}


def function(name, output_shape):
    """The function computing metric `name` for a model whose samples' output has
    output_shape. "accuracy" and "acc" are binary accuracy for an output with one value
    on its last axis, else categorical accuracy (Keras's choice between categorical and
    sparse categorical is moot: cconv's labels reach metrics as one-hot rows)."""
    fn = METRICS[name].fn
    if fn is None:
        fn = binary_accuracy if output_shape[-1] == 1 else categorical_accuracy
    return fn


def check(argument, names):
    """names as a list of metric names compile() takes; a ValueError naming argument
    otherwise."""
    if names is None:
        return []
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise ValueError(f"{argument}: expected a list of metric names, got {names!r}")
    for m in names:
        if not isinstance(m, str) or m not in METRICS:
            raise ValueError(f"{argument}: expected names from {tuple(METRICS)}, got {m!r}")
    return list(names)


def log_names(metrics, weighted_metrics):
    """The logged names of compile's metrics then weighted_metrics, as Keras names them:
    a weighted metric whose name is taken becomes weighted_<name>, then _1, _2...; a
    repeated plain metric becomes <name>_1..."""
    taken, out = {"loss"}, []
    for names, prefix in ((metrics, ""), (weighted_metrics, "weighted_")):
        for name in names:
            if name in taken:
                base = prefix + name if prefix else name
                name, i = base, 1
                while name in taken:
                    name, i = f"{base}_{i}", i + 1
            taken.add(name)
            out.append(name)
    return out


def higher_is_better(name):
    """True for a metric where higher is better, False for a loss, None when unknown."""
    if name == "loss":
        return False
    metric = METRICS.get(name)
    if metric is None and name.startswith("weighted_"):
        metric = METRICS.get(name[len("weighted_"):])
    return None if metric is None else metric.higher_is_better


class Tally:
    """The running sums behind one epoch's (or one evaluate's) logs: the loss's
    sum(w * loss) over the samples seen (Keras logs it over their count), and for each
    name in log_names: first n_loss outputs' losses, summed as the loss is; then n_plain
    plain metrics, each a sum of values; then the weighted metrics, each a
    sum(w * value) with the weights' sum."""

    def __init__(self, log_names, n_loss, n_plain):
        self.names, self.n_loss, self.n_plain = log_names, n_loss, n_plain
        self.loss = self.weight = 0.0
        self.count = 0
        self.sums = [0.0] * len(log_names)

    def batch(self, losses, values, weights):
        """The sums of one batch: losses (N,), values [(N,) per name], weights (N,) or
        None (every weight 1)."""
        w = np.ones(len(losses)) if weights is None else weights
        # NumPy's pairwise sums, not BLAS's dot: the same bits whatever its threads
        sums = [float(v.sum(dtype=np.float64))
                if self.n_loss <= i < self.n_loss + self.n_plain else float((w * v).sum())
                for i, v in enumerate(values)]
        return float((w * losses).sum()), len(losses), float(w.sum()), sums

    def add(self, batch):
        loss, count, weight, sums = batch
        self.loss += loss
        self.count += count
        self.weight += weight
        self.sums = [a + b for a, b in zip(self.sums, sums)]

    def logs(self, prefix="", pending=None):
        """{prefix + name: value}; pending, a batch's sums, counted without adding it."""
        loss, count, weight, sums = self.loss, self.count, self.weight, self.sums
        if pending is not None:
            loss, count, weight = loss + pending[0], count + pending[1], weight + pending[2]
            sums = [a + b for a, b in zip(sums, pending[3])]
        logs = {prefix + "loss": loss / count if count else 0.0}
        for i, (name, total) in enumerate(zip(self.names, sums)):
            divisor = count if i < self.n_loss + self.n_plain else weight
            logs[prefix + name] = total / divisor if divisor else 0.0
        return logs
