"""Sequential: a stack of layers with Keras's compile / fit / evaluate / predict.

Everything a user passes is checked here, once, before any kernel runs. Inputs are not
rescaled: x is cast to the model's dtype as it is (uint8 pixels stay 0..255; divide by
255 yourself, as with Keras).
"""
import copy
import math
import numbers
import os
import sys

import numpy as np

from cconv import callbacks as callbacks_module
from cconv import layers as layers_module
from cconv import _config, fusion, losses, ops, optimizers, saving, utils
from cconv import metrics as metrics_module
from cconv._guard import ModelBusyError, ModelGuard  # noqa: F401 (ModelBusyError: API)
_FINITE_CHECK_ROWS = 4096  # check NaN/inf in slices: never a bool copy of all of x
# predict and evaluate run the model on chunks whose largest activation is about this
# size, whatever batch_size says: every row's output is computed on its own, so the
# results are the same, and small batches would pay each step's fixed cost many times.
INFERENCE_CHUNK_BYTES = 32 << 20


class NotCompiledError(RuntimeError, ValueError):
    """fit/evaluate called before compile."""


class Sequential:
    """A linear stack of layers. The first item may be cconv.layers.Input(shape) (or the
    first layer may say input_shape=, as Keras allows); without either the model is built
    from the first data it sees.

    dtype is "float32" (default) or "float64" for weights and computation."""

    def __init__(self, layers=None, dtype="float32", name="sequential"):
        if np.dtype(dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
        self.dtype = np.dtype(dtype)
        self.name = name
        self.layers = []
        self.input_shape = None
        self.built = False
        self.compiled = False
        # {layer: its trainable} when the optimizer took its weights (see _optimizer_keys)
        self._optimizer_trainable = None
        self.stop_training = False
        self.history = None
        self._plans = {}
        self._guard = ModelGuard()
        for layer in layers or []:
            self.add(layer)
        if self.input_shape is not None and self.layers:
            self.build()

    # ---- structure -------------------------------------------------------------------
    def add(self, layer):
        if isinstance(layer, layers_module.Input):
            if self.layers or self.input_shape is not None:
                raise ValueError("Input: must come first in the model")
            self.input_shape = layer.shape
            return
        if not isinstance(layer, layers_module.Layer):
            raise TypeError(f"layers: expected cconv.layers objects, got {type(layer).__name__}")
        if self.built:
            if self.compiled:
                raise ValueError("add: the model is already compiled; add its layers "
                                 "before compile")
            # Keras's add after build (TF's tutorials call summary() between adds): the
            # built layers keep their weights and the new one is built with the model
            self.built = False
        if layer.built:
            raise ValueError(f"add: layer {layer.name!r} already belongs to a model")
        hint = getattr(layer, "_input_shape_arg", None)
        if hint is not None and not self.layers and self.input_shape is None:
            # Keras 3's legacy case: input_shape= on the first layer stands for an Input
            # before it; on any other layer (or after an Input) it is ignored, as there.
            self.input_shape = hint
        taken = {l.name for l in self.layers}
        if layer.name is None:
            base = utils.default_name(type(layer))
            i, name = 0, base
            while name in taken:
                i += 1
                name = f"{base}_{i}"
            layer.name = name
        elif layer.name in taken:
            raise ValueError(f"layers: two layers are named {layer.name!r}")
        self.layers.append(layer)

    def build(self, input_shape=None, initialize=True):
        """Create the weights, using the global seed (cconv.utils.set_random_seed);
        initialize=False: zeros, drawing nothing (for weights loaded next)."""
        if self.built:
            return
        if input_shape is not None:
            self.input_shape = tuple(int(s) for s in input_shape)
        if self.input_shape is None:
            raise ValueError("build: the input shape is unknown; start the model with "
                             "Input(shape) or call fit/predict first")
        if not self.layers:
            raise ValueError("build: the model has no layers")
        rng = utils._rng() if initialize else None
        shape = self.input_shape
        for i, layer in enumerate(self.layers):
            if not layer.built:
                layer.build(shape, self.dtype, rng)
            layer.need_input_grad = i > 0
            shape = layer.output_shape
        self._plans = {training: fusion.plan(self.layers, training) for training in (False, True)}
        self.built = True

    @property
    def output_shape(self):
        return self.layers[-1].output_shape if self.built else None

    def _ensure_built(self, x):
        if not self.built:
            self.build(self.input_shape or np.shape(x)[1:])

    def count_params(self):
        return sum(layer.count_params() for layer in self.layers)

    # ---- a model as a value ----------------------------------------------------------
    def __getstate__(self):
        # The fused plans hold per-thread scratch and the guard holds locks: both are
        # made anew on the far side, from the layers.
        self._guard.check(self.name, "pickle/copy")
        return {k: v for k, v in self.__dict__.items() if k not in ("_plans", "_guard")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._guard = ModelGuard()
        self._plans = ({training: fusion.plan(self.layers, training)
                        for training in (False, True)} if self.built else {})

    def __copy__(self):
        # A shallow copy would share the layers, so two "models" would train the same
        # weights; a copy of a model is a model of its own.
        return copy.deepcopy(self)

    def get_config(self):
        """Keras's Sequential config: name, dtype, the layers' configs."""
        return saving.sequential_config(self)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """The (uncompiled) model a config describes, built when it gives the input shape."""
        return saving.sequential_from_config(config, custom_objects, cls=cls)

    def summary(self, line_length=None, positions=None, print_fn=None, expand_nested=False,
                show_trainable=False, layer_range=None):
        """Keras's table of layers, output shapes and parameter counts, with the total,
        trainable and non-trainable counts below it as Keras prints them (by each
        layer's trainable now); show_trainable adds Keras's "Trainable" column (Y, N, or
        - for a layer without weights). A Sequential of cconv's layers nests nothing, so
        expand_nested adds nothing; line_length, positions and layer_range are not
        supported."""
        _refuse({"line_length": line_length, "positions": positions,
                 "layer_range": layer_range}, "summary", "cconv's table sizes itself")
        print_fn = print if print_fn is None else print_fn
        if not self.built:
            self.build()
        head = ("Layer (type)", "Output Shape", "Param #") + (
            ("Trainable",) if show_trainable else ())
        rows = [(f"{l.name} ({type(l).__name__})", str((None,) + l.output_shape),
                 f"{l.count_params():,}") + (
                     (("Y" if l.trainable else "N") if l.params else "-",)
                     if show_trainable else ()) for l in self.layers]
        widths = [max(len(r[i]) for r in rows + [head]) + 2 for i in range(len(head))]
        line = "_" * (sum(widths) + 2)
        fmt = lambda r: "".join(f"{v:<{w}}" for v, w in zip(r, widths)).rstrip()  # noqa: E731
        out = [f'Model: "{self.name}"', line, fmt(head), "=" * len(line)]
        out += [fmt(r) for r in rows]
        trainable = sum(layer.params[k].size
                        for layer, k in layers_module.trainable_keys(self.layers))
        out += ["=" * len(line), f"Total params: {self.count_params():,}",
                f"Trainable params: {trainable:,}",
                f"Non-trainable params: {self.count_params() - trainable:,}", line]
        print_fn("\n".join(out))

    # ---- weights ---------------------------------------------------------------------
    def _weight_keys(self):
        """[(layer, weight name)] in the one order of weights (layers.weight_keys)."""
        return list(layers_module.weight_keys(self.layers))

    def _optimizer_keys(self):
        """[(layer, weight name)] that the optimizer updates and keeps slots for: the
        trainable weights of the trainable layers, as they were when the optimizer took
        them (see _take_trainable), else as they are now."""
        return list(layers_module.trainable_keys(self.layers, self._optimizer_trainable))

    def _take_trainable(self):
        """The optimizer takes the trainable weights, as Keras 3 builds its optimizer: at
        the first fit after compile() (or when a .keras file gives it its state)."""
        if self._optimizer_trainable is None:
            self._optimizer_trainable = {layer: layer.trainable for layer in self.layers}
        self._check_trainable("fit")

    def _check_trainable(self, what):
        """A layer's trainable changed after the optimizer took the weights is refused, as
        Keras refuses it, until compile() with a new optimizer: the optimizer's slots
        belong to the weights it took."""
        if self._optimizer_trainable is None:
            return
        changed = [layer.name for layer in self.layers
                   if layer.trainable != self._optimizer_trainable.get(layer)]
        if changed:
            raise ValueError(f"{what}: the trainable of layers {changed} changed since the "
                             f"optimizer took the model's trainable weights (at the first "
                             f"fit after compile); call compile() again, with a new "
                             f"optimizer, for the change to take effect (as Keras 3 requires)")

    def _weights_changed(self):
        """Tell the inference plan's steps that weights were written (a fit step,
        set_weights): what they derived from them (folded weights) is stale."""
        fusion.weights_changed(self._plans.get(False, ()))

    def get_weights(self):
        if not self.built:
            self.build()
        with self._guard.reading():
            return [layer.params[k].copy() for layer, k in self._weight_keys()]

    def set_weights(self, weights):
        self._guard.check(self.name, "set_weights")
        if not self.built:
            self.build()
        keys = self._weight_keys()
        weights = list(weights)
        if len(weights) != len(keys):
            raise ValueError(f"set_weights: expected {len(keys)} arrays, got {len(weights)}")
        # a write, as an optimizer step: a predict in another thread sees the old
        # weights or the new ones, never a mix
        with self._guard.updating():
            before = [dict(layer.params) for layer in self.layers]
            start = 0
            try:
                for layer in self.layers:
                    n = len(layer.get_weights())
                    layer.set_weights(weights[start:start + n])
                    start += n
            except BaseException:  # all or nothing: no layer keeps its new weights
                for layer, params in zip(self.layers, before):
                    layer.params = params
                raise
            finally:
                self._weights_changed()

    def save_weights(self, path, metadata=None):
        """Save to an .npz file (no pickles). The file is written under a temporary name
        and renamed, so an existing file is never left half-written. metadata, a dict of
        str -> str, is stored beside the weights as "meta.<key>" string arrays."""
        if not self.built:
            self.build()
        with self._guard.reading(self.name, "save_weights"):
            saving.save_weights(self, path, metadata)

    def save(self, filepath, overwrite=True, zipped=None, include_optimizer=True, **kwargs):
        """Save the whole model (layers, weights, optimizer state) as Keras 3's .keras
        zip, which keras.models.load_model and cconv.models.load_model open. Written
        under a temporary name and renamed. Needs h5py (pip install "cconv[h5]")."""
        _refuse({"zipped": None if zipped in (None, True) else zipped,
                 "include_optimizer": None if include_optimizer else include_optimizer,
                 **kwargs}, "save", "cconv writes the zipped .keras format, with the "
                "optimizer and its state, only")
        if self.compiled:
            self._check_trainable("save")  # the file's slots would not match its configs
        with self._guard.reading(self.name, "save"):
            saving.save_model(self, filepath, overwrite=overwrite)

    def load_weights(self, path):
        self._guard.check(self.name, "load_weights")
        if not self.built:
            self.build()
        path = os.fspath(path)
        arrays = saving.load_weights(self, path)
        try:
            self.set_weights(arrays)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"load_weights: {path}: {exc}") from None

    # ---- compile ---------------------------------------------------------------------
    def compile(self, optimizer="rmsprop", loss="categorical_crossentropy", loss_weights=None,
                metrics=None, weighted_metrics=None, run_eagerly=False, steps_per_execution=1,
                jit_compile="auto", auto_scale_loss=True):
        """Keras's compile, with its default optimizer ("rmsprop"). cconv always runs its
        compiled kernels eagerly, so run_eagerly, jit_compile, steps_per_execution and
        auto_scale_loss change nothing and are accepted as Keras's scripts pass them;
        loss_weights needs several outputs. metrics are computed unweighted,
        weighted_metrics with fit's and evaluate's sample_weight (or class_weight), as in
        Keras."""
        self._guard.check(self.name, "compile")
        _refuse({"loss_weights": None if loss_weights in (None, 1, 1.0, [1], [1.0])
                 else loss_weights}, "compile", "a Sequential has one output")
        utils._positive_int("steps_per_execution", steps_per_execution)
        optimizer = optimizers.get(optimizer)
        loss_object = losses.get(loss)
        metrics = metrics_module.check("metrics", metrics)
        weighted_metrics = metrics_module.check("weighted_metrics", weighted_metrics)
        self.optimizer, self.loss = optimizer, loss_object
        # the compile config writes the loss as it was given, as Keras does: a name stays
        # a name
        self._loss_config = loss if isinstance(loss, str) else losses.serialize(loss_object)
        self.metrics, self.weighted_metrics = metrics, weighted_metrics
        self._optimizer_trainable = None
        self.compiled = True

    def _require_compiled(self, what):
        if not self.compiled:
            raise NotCompiledError(f"{what}: the model must be compiled first; call "
                                   f"model.compile(optimizer=..., loss=...)")

    # ---- input checks ----------------------------------------------------------------
    def _check_x(self, x, name="x"):
        x = utils._numeric_array(name, x, "a numeric (bool, int or float) array")
        if x.ndim < 2:
            raise ValueError(f"{name}: expected a batch of samples of shape (N, ...), got "
                             f"shape {x.shape}")
        if len(x) == 0:
            raise ValueError(f"{name}: expected at least one sample, got shape {x.shape}")
        self._ensure_built(x)
        if x.shape[1:] != self.input_shape:
            hint = ""
            if x.shape[1:] + (1,) == self.input_shape:
                hint = "; add a channel axis with x[..., None]"
            raise ValueError(f"{name}: expected samples of shape {self.input_shape}, got "
                             f"{x.shape[1:]} (x.shape = {x.shape}){hint}")
        ops.check_size(name, x.shape, self.dtype)
        if x.dtype.kind == "f":
            for start in range(0, len(x), _FINITE_CHECK_ROWS):
                # checked after the cast: 1e300 is finite in float64, inf in float32
                with np.errstate(over="ignore"):
                    rows = x[start:start + _FINITE_CHECK_ROWS].astype(self.dtype, copy=False)
                if not np.isfinite(rows).all():
                    raise ValueError(f"{name}: contains NaN or inf, or values too large for "
                                     f"{self.dtype} (first in rows {start}.."
                                     f"{start + _FINITE_CHECK_ROWS - 1})")
        return x

    def _num_classes(self):
        shape = self.output_shape
        if len(shape) != 1:
            raise ValueError(f"the model's output has shape {shape}; {self.loss.name} needs "
                             f"a flat (classes,) output: end with Flatten/Dense")
        return shape[0]

    def _check_y(self, y, n, name="y"):
        """The targets as an array of the output's shape (sparse labels as one-hot rows)
        in the model's dtype, checked as the loss reads them."""
        y = utils._numeric_array(name, y, "numeric labels")
        if y.ndim == 0 or len(y) != n:
            got = len(y) if y.ndim else "a scalar"
            raise ValueError(f"{name}: expected {n} labels to match x, got {got} "
                             f"(len(x) = {n}, y.shape = {y.shape})")
        kind = self.loss.target
        if kind == "sparse":
            k = self._num_classes()
            if y.ndim == 2 and y.shape[1] == 1:
                y = y[:, 0]
            if y.ndim != 1:
                raise ValueError(f"{name}: sparse_categorical_crossentropy expects integer "
                                 f"class labels of shape (N,), got shape {y.shape}")
            if y.dtype.kind == "f" and not (np.isfinite(y).all() and (y == np.round(y)).all()):
                raise ValueError(f"{name}: expected integer class labels, got non-integer "
                                 f"values")
            if y.min() < 0 or y.max() >= k:
                raise ValueError(f"{name}: labels must be in [0, {k}) for a model with {k} "
                                 f"outputs, got values from {y.min()} to {y.max()}")
            ops.check_size(name, (n, k), self.dtype)
            out = np.zeros((n, k), dtype=self.dtype)
            out[np.arange(n), y.astype(np.intp)] = 1
            return out
        if kind == "categorical":
            k = self._num_classes()
            if y.ndim != 2 or y.shape[1] != k:
                hint = (" (integer labels? use loss='sparse_categorical_crossentropy' or "
                        "cconv.utils.to_categorical)" if y.ndim == 1 else "")
                raise ValueError(f"{name}: categorical_crossentropy expects one-hot labels "
                                 f"of shape (N, {k}), got shape {y.shape}{hint}")
        else:
            # binary and regression targets have the output's shape; as Keras
            # (squeeze_or_expand_to_same_rank), a trailing axis of 1 on either side is
            # added or dropped: y of shape (N,) fits an output (N, 1)
            want = (n,) + self.output_shape
            if y.shape != want and y.shape + (1,) != want and y.shape != want + (1,):
                hint = (" (one column per sample: an output of 1 unit takes y of shape "
                        "(N,) or (N, 1))" if self.output_shape[-1] == 1 else "")
                raise ValueError(f"{name}: {self.loss.name} expects targets of the model's "
                                 f"output shape {want}, got shape {y.shape}{hint}")
            y = y.reshape(want)
        ops.check_size(name, y.shape, self.dtype)
        with np.errstate(over="ignore"):
            y = y.astype(self.dtype, copy=False)
        if not np.isfinite(y).all():
            raise ValueError(f"{name}: contains NaN or inf, or values too large for "
                             f"{self.dtype}")
        if kind == "binary" and (y.min() < 0 or y.max() > 1):
            raise ValueError(f"{name}: binary_crossentropy expects labels in [0, 1], got "
                             f"values from {y.min()} to {y.max()}")
        return y

    def _check_weights(self, sample_weight, n, name="sample_weight"):
        """sample_weight as a float64 (N,) array, or None. As in Keras, weights weigh
        each sample's loss (any real number, negative ones included); one weight per
        sample, shape (N,) or (N, 1)."""
        if sample_weight is None:
            return None
        w = utils._numeric_array(name, sample_weight, "numeric weights, one per sample")
        if w.ndim == 2 and w.shape[1] == 1:
            w = w[:, 0]
        if w.ndim != 1 or len(w) != n:
            raise ValueError(f"{name}: expected one weight per sample, shape ({n},), got "
                             f"shape {w.shape}")
        w = w.astype(np.float64)
        if not np.isfinite(w).all():
            raise ValueError(f"{name}: contains NaN or inf")
        if len(self.output_shape) > 1:
            raise ValueError(f"{name}: per-sample weights need an output of shape (N, d); "
                             f"the model's is {(None,) + self.output_shape} (Keras 3 "
                             f"cannot broadcast them either)")
        return w

    def _class_weights(self, class_weight, target):
        """class_weight as per-sample weights, as Keras turns it into them: each sample's
        class is its label (sparse), the argmax of its row, or its one value rounded;
        classes the dict lacks weigh 1."""
        if not isinstance(class_weight, dict):
            raise ValueError(f"class_weight: expected a dict {{class index: weight}}, got "
                             f"{class_weight!r}")
        for key, value in class_weight.items():
            if isinstance(key, (bool, np.bool_)) or not isinstance(key, numbers.Integral):
                raise ValueError(f"class_weight: keys must be integer class indices, got "
                                 f"{key!r}")
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) \
                    or not np.isfinite(value):
                raise ValueError(f"class_weight: weights must be finite numbers, got "
                                 f"{value!r} for class {key}")
        if target.ndim != 2:
            raise ValueError(f"class_weight: needs one class per sample, from labels of "
                             f"shape (N,) or (N, classes); the targets have shape "
                             f"{target.shape}")
        if self.loss.target == "sparse" or target.shape[1] != 1:
            labels = target.argmax(axis=1)
        else:
            labels = np.round(target[:, 0]).astype(np.int64)
        weights = np.ones(len(labels))
        for key, value in class_weight.items():
            weights[labels == key] = value
        return weights

    def _check_batch_size(self, batch_size, default=32, name="batch_size"):
        if batch_size is None:
            return default
        return utils._positive_int(name, batch_size)

    # ---- computation -----------------------------------------------------------------
    def _folded(self):
        """Whether the last layer's activation is folded into the loss (softmax into a
        categorical cross-entropy, sigmoid into the binary one): the loss then reads the
        logits, for an exact and stable gradient."""
        last = self.layers[-1].activation
        return (not self.loss.from_logits and last is not None
                and last.name == self.loss.folds)

    def _forward(self, xb, training, rng=None, logits=False):
        """Output of the model; with logits=True the last layer stops before its
        activation (the one folded into the loss)."""
        out = np.asarray(xb, dtype=self.dtype)
        steps = self._plans[bool(training)]
        for step in steps[:-1]:
            out = step.forward(out, training, rng)
        last = steps[-1]
        return (last.forward_linear if logits else last.forward)(out, training, rng)

    def _loss_and_grad(self, target, xb, weights, training, rng):
        """Each sample's loss, the gradient of the batch's loss sum(w * loss) / N wrt the
        output (or the logits, when folded), and the output as predict gives it."""
        folded = self._folded()
        out = self._forward(xb, training, rng, logits=folded)
        losses_, grad = self.loss.per_sample(target, out, folded or self.loss.from_logits)
        if weights is None:
            grad /= len(out)
        else:
            grad *= (weights / len(out)).astype(self.dtype).reshape(
                (-1,) + (1,) * (grad.ndim - 1))
        if folded and (self.metrics or self.weighted_metrics):
            out = self.layers[-1].activation.forward(out)
        return losses_, grad, out

    def _metric_functions(self):
        return [metrics_module.function(m, self.output_shape)
                for m in self.metrics + self.weighted_metrics]

    def _new_tally(self):
        return metrics_module.Tally(
            metrics_module.log_names(self.metrics, self.weighted_metrics), len(self.metrics))

    def _train_step(self, xb, target, weights, rng, tally):
        """One optimizer step on a batch; returns the batch's sums for tally."""
        losses_, grad, out = self._loss_and_grad(target, xb, weights, True, rng)
        steps = self._plans[True]
        if self._folded():
            grad = steps[-1].backward_linear(grad)
            steps = steps[:-1]
        for step in reversed(steps):
            grad = step.backward(grad)
        params, grads = [], []
        for layer, k in self._optimizer_keys():
            params.append(layer.params[k])
            grads.append(layer.grads[k])
        with self._guard.updating():
            self.optimizer.update(params, grads)
            for layer in self.layers:
                layer.update_state()
            self._weights_changed()
        return tally.batch(losses_, [fn(target, out) for fn in self._metric_functions()],
                           weights)

    # ---- public loops ----------------------------------------------------------------
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, class_weight=None,
            sample_weight=None, initial_epoch=0, steps_per_epoch=None, validation_steps=None,
            validation_batch_size=None, validation_freq=1, seed=None):
        """Keras's fit; returns a History whose .history has, per epoch, loss and each
        metric by the name compile was given, and with validation their val_ twins.
        sample_weight (one number per sample) or class_weight ({class: weight}) weigh
        each sample's loss, and weighted_metrics; validation_data may carry its own
        weights as (x_val, y_val, val_sample_weight). Epochs run from initial_epoch
        to epochs - 1; validation runs after every validation_freq-th epoch.
        steps_per_epoch / validation_steps cap the batches per epoch / validation.
        seed (cconv's own) seeds shuffling and dropout for this call."""
        with self._guard.claim(self.name, "fit"):
            return self._fit(x, y, batch_size, epochs, verbose, callbacks, validation_split,
                             validation_data, shuffle, class_weight, sample_weight,
                             initial_epoch, steps_per_epoch, validation_steps,
                             validation_batch_size, validation_freq, seed)

    def _fit(self, x, y, batch_size, epochs, verbose, callbacks, validation_split,
             validation_data, shuffle, class_weight, sample_weight, initial_epoch,
             steps_per_epoch, validation_steps, validation_batch_size, validation_freq, seed):
        self._require_compiled("fit")
        x = self._check_x(_required("x", x))
        target = self._check_y(_required("y", y), len(x))
        if class_weight is not None and sample_weight is not None:
            raise ValueError("fit: class_weight and sample_weight cannot both be given "
                             "(as in Keras): fold the class weights into sample_weight")
        weights = self._check_weights(sample_weight, len(x))
        if class_weight is not None:
            weights = self._class_weights(class_weight, target)
        batch_size = self._check_batch_size(batch_size)
        val_batch_size = self._check_batch_size(validation_batch_size, batch_size,
                                                "validation_batch_size")
        epochs = utils._positive_int("epochs", epochs)
        initial_epoch = utils._non_negative_int("initial_epoch", initial_epoch)
        validation_freq = utils._positive_int("validation_freq", validation_freq)
        verbose = _verbosity(verbose, fit=True)
        if isinstance(validation_split, bool) or not isinstance(validation_split, numbers.Real) \
                or not 0.0 <= validation_split < 1.0:
            raise ValueError(f"validation_split: expected a float in [0, 1), got "
                             f"{validation_split!r}")
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) \
                    or len(validation_data) not in (2, 3):
                raise ValueError("validation_data: expected a tuple (x_val, y_val) or "
                                 "(x_val, y_val, val_sample_weight)")
            xv = self._check_x(validation_data[0], "validation_data[0]")
            val = (xv, self._check_y(validation_data[1], len(xv), "validation_data[1]"),
                   self._check_weights(validation_data[2] if len(validation_data) == 3
                                       else None, len(xv), "validation_data[2]"))
        elif validation_split > 0:
            # Like Keras: the last fraction of the data, taken before any shuffling; the
            # training part is floor(n * (1 - split)) samples, as Keras rounds it.
            split_at = int(np.floor(len(x) * (1.0 - validation_split)))
            if split_at == 0 or split_at == len(x):
                raise ValueError(f"validation_split: {validation_split} of {len(x)} samples "
                                 f"leaves an empty training or validation set")
            # sample_weight is split with them; class weights weigh training alone
            val = (x[split_at:], target[split_at:],
                   None if sample_weight is None else weights[split_at:])
            x, target = x[:split_at], target[:split_at]
            weights = None if weights is None else weights[:split_at]
        if val is not None and validation_steps is not None:
            keep = utils._positive_int("validation_steps", validation_steps) * val_batch_size
            val = tuple(None if a is None else a[:keep] for a in val)
        self._take_trainable()
        rng = utils._rng(seed)

        history = callbacks_module.History()
        cbs = _check_callbacks(callbacks) + [history]
        if verbose:
            cbs.append(callbacks_module.ProgbarLogger(verbose))
        n = len(x)
        steps = batches_per_pass = -(-n // batch_size)
        if steps_per_epoch is not None:
            wanted = utils._positive_int("steps_per_epoch", steps_per_epoch)
            if wanted > steps:
                raise ValueError(f"steps_per_epoch: {wanted} batches of {batch_size} need "
                                 f"{wanted * batch_size} samples, but x has {n}")
            steps = wanted
        log_keys = list(self._new_tally().logs())
        if val is not None:
            log_keys += ["val_" + k for k in log_keys]
        # "metrics" (as in Keras 2) lets callbacks check their monitor before any batch
        params = {"epochs": epochs, "steps": steps, "batch_size": batch_size,
                  "verbose": verbose, "samples": n, "metrics": log_keys}
        self._attach(cbs, params)
        self.history = history
        self.stop_training = False
        for cb in cbs:
            cb.on_train_begin()
        # As Keras 3 (trainers/epoch_iterator.py): with steps_per_epoch, one pass over
        # the data goes on across epochs; an epoch that reaches the end of the pass ends
        # there (shorter), and the next epoch starts a new pass, in a new order.
        order, done = None, batches_per_pass  # done: batches of the pass trained on
        for epoch in range(initial_epoch, epochs):
            for cb in cbs:
                cb.on_epoch_begin(epoch)
            if done == batches_per_pass:
                order = rng.permutation(n) if shuffle else np.arange(n)
                done = 0
            tally = self._new_tally()
            for step in range(min(steps, batches_per_pass - done)):
                for cb in cbs:
                    cb.on_train_batch_begin(step)
                idx = order[done * batch_size:(done + 1) * batch_size]
                done += 1
                with _config.governor():  # times the step: see _config.Governor
                    batch = self._train_step(x[idx], target[idx],
                                             None if weights is None else weights[idx], rng,
                                             tally)
                tally.add(batch)
                logs = tally.logs()
                for cb in cbs:
                    cb.on_train_batch_end(step, logs)
                if self.stop_training:  # as Keras: the epoch ends after this batch
                    break
            logs = tally.logs()
            if val is not None and (epoch + 1) % validation_freq == 0:
                logs.update(self._evaluate_arrays(*val, val_batch_size, "val_"))
            for cb in cbs:
                cb.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        for cb in cbs:
            cb.on_train_end()
        return history

    def _attach(self, cbs, params):
        for cb in cbs:
            cb.set_model(self)
            cb.set_params(params)

    def _inference_chunk(self):
        """Images per forward pass of predict and evaluate (at least one)."""
        widest = max(math.prod(shape) for shape in
                     [self.input_shape] + [layer.output_shape for layer in self.layers])
        return max(1, INFERENCE_CHUNK_BYTES // (widest * np.dtype(self.dtype).itemsize))

    def _chunks(self, n, batch_size):
        """(start, stop, batches) for each chunk of cconv's own size over n samples, where
        batches lists the (step, start, stop) of the batch_size batches that end in it:
        callbacks hear of batches as Keras reports them, after their chunk is done."""
        chunk, step = self._inference_chunk(), 0
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            batches = []
            while step * batch_size < n and min(n, (step + 1) * batch_size) <= stop:
                batches.append((step, step * batch_size, min(n, (step + 1) * batch_size)))
                step += 1
            yield start, stop, batches

    def _evaluate_arrays(self, x, target, weights, batch_size, prefix="", cbs=()):
        """The logs of evaluate. Sums go chunk by chunk, so they do not depend on
        batch_size, which only sets when callbacks are told of progress."""
        tally, functions = self._new_tally(), self._metric_functions()
        for start, stop, batches in self._chunks(len(x), batch_size):
            tb = target[start:stop]
            wb = None if weights is None else weights[start:stop]
            with _config.governor():
                losses_, _, out = self._loss_and_grad(tb, x[start:stop], wb, False, None)
            values = [fn(tb, out) for fn in functions]
            for step, _, end in batches if cbs else ():
                for cb in cbs:
                    cb.on_test_batch_begin(step)
                k = end - start
                logs = tally.logs(pending=tally.batch(
                    losses_[:k], [v[:k] for v in values], None if wb is None else wb[:k]))
                for cb in cbs:
                    cb.on_test_batch_end(step, logs)
            tally.add(tally.batch(losses_, values, wb))
        return tally.logs(prefix)

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None,
                 steps=None, callbacks=None, return_dict=False):
        """Loss and metrics over (x, y), sample_weight weighing the loss and
        weighted_metrics. Returns [loss, metrics...], or loss alone without metrics, or
        a dict with return_dict=True. steps caps the number of batches.
        verbose="auto" shows a bar on a terminal or in a notebook only. The work goes in
        chunks of cconv's choosing: batch_size sets only what callbacks hear, never the
        result."""
        self._require_compiled("evaluate")
        with self._guard.reading(self.name, "evaluate"):
            x = self._check_x(_required("x", x))
            target = self._check_y(_required("y", y), len(x))
            weights = self._check_weights(sample_weight, len(x))
            batch_size = self._check_batch_size(batch_size)
            verbose = _verbosity(verbose)
            if steps is not None:
                keep = utils._positive_int("steps", steps) * batch_size
                x, target = x[:keep], target[:keep]
                weights = None if weights is None else weights[:keep]
            cbs = _check_callbacks(callbacks)
            if verbose:
                cbs.append(callbacks_module.ProgbarLogger(verbose))
            n_steps = -(-len(x) // batch_size)
            self._attach(cbs, {"steps": n_steps, "verbose": verbose})
            for cb in cbs:
                cb.on_test_begin()
            logs = self._evaluate_arrays(x, target, weights, batch_size, cbs=cbs)
            for cb in cbs:
                cb.on_test_end(logs)
        if return_dict:
            return logs
        values = list(logs.values())
        return values if len(values) > 1 else values[0]

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """The model's output (what its last layer gives). As in evaluate, the work
        goes in chunks of cconv's choosing, and batch_size does not change the result.
        steps caps the number of batches; verbose="auto" shows a bar on a terminal or
        in a notebook only. From another thread during a fit, it waits for the weight
        update in progress and holds the next one back: it sees one set of weights."""
        x = self._check_x(x)
        batch_size = self._check_batch_size(batch_size)
        verbose = _verbosity(verbose)
        if steps is not None:
            x = x[:utils._positive_int("steps", steps) * batch_size]
        cbs = _check_callbacks(callbacks)
        if verbose:
            cbs.append(callbacks_module.ProgbarLogger(verbose))
        ops.check_size("predict output", (len(x),) + self.output_shape, self.dtype)
        out = np.empty((len(x),) + self.output_shape, dtype=self.dtype)
        n_steps = -(-len(x) // batch_size)
        with self._guard.reading():
            self._attach(cbs, {"steps": n_steps, "verbose": verbose})
            for cb in cbs:
                cb.on_predict_begin()
            for start, stop, batches in self._chunks(len(x), batch_size):
                with _config.governor():
                    out[start:stop] = self._forward(x[start:stop], False)
                for step, first, end in batches if cbs else ():
                    for cb in cbs:
                        cb.on_predict_batch_begin(step)
                    for cb in cbs:
                        cb.on_predict_batch_end(step, {"outputs": out[first:end]})
            for cb in cbs:
                cb.on_predict_end()
        return out


def _required(name, value):
    if value is None:
        raise ValueError(f"{name}: required, got None")
    return value


def _refuse(arguments, where, why):
    """A ValueError naming the arguments, among {name: value}, that are set, when cconv
    has no meaning for them."""
    given = {k: v for k, v in arguments.items() if v is not None}
    if given:
        names = ", ".join(f"{k}={v!r}" for k, v in given.items())
        raise ValueError(f"{where}: {names} not supported ({why})")


def _verbosity(verbose, fit=False):
    """verbose as 0, 1 or 2. "auto": a live bar on a terminal or in a notebook; elsewhere
    (a pipe, a log file) fit prints a line per epoch and evaluate and predict nothing."""
    if verbose == "auto":
        return 1 if callbacks_module._live(sys.stdout) else (2 if fit else 0)
    if isinstance(verbose, bool) or verbose not in (0, 1, 2):
        raise ValueError(f"verbose: expected 0, 1, 2 or 'auto', got {verbose!r}")
    return int(verbose)


def _check_callbacks(callbacks):
    cbs = list(callbacks or [])
    for cb in cbs:
        if not isinstance(cb, callbacks_module.Callback):
            raise TypeError(f"callbacks: expected cconv.callbacks.Callback objects, got "
                            f"{type(cb).__name__}")
    return cbs
