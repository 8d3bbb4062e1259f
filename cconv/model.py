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
from cconv import _config, fusion, graph, losses, ops, optimizers, saving, utils
from cconv import metrics as metrics_module
from cconv._guard import ModelBusyError, ModelGuard  # noqa: F401 (ModelBusyError: API)
_FINITE_CHECK_ROWS = 4096  # check NaN/inf in slices: never a bool copy of all of x
# predict and evaluate run the model on chunks whose largest activation is about this
# size, whatever batch_size says: every row's output is computed on its own, so the
# results are the same, and small batches would pay each step's fixed cost many times.
INFERENCE_CHUNK_BYTES = 32 << 20


class NotCompiledError(RuntimeError, ValueError):
    """fit/evaluate called before compile."""


class _Call:
    """One call of a layer in a model: the slots (numbered tensors) it reads and the one
    it writes; many: a merge layer, reading a list."""

    __slots__ = ("layer", "ins", "out", "many", "order")

    def __init__(self, layer, ins, out, many, order):
        self.layer, self.ins, self.out, self.many = layer, list(ins), out, many
        self.order = order  # when the call was made: a layer's calls are numbered so


class _Run:
    """One step of a plan: a layer, or a fused run of a chain of layers (cconv.fusion),
    reading the slots ins and writing out. shared: the layer is called more than once
    in the model; each pass then runs a copy of it that shares its weights but keeps
    its own saved inputs, gradients and buffers."""

    __slots__ = ("step", "ins", "out", "many", "shared")

    def __init__(self, step, ins, out, many, shared):
        self.step, self.ins, self.out, self.many, self.shared = step, ins, out, many, shared


class Model:
    """A model as a graph of layer calls, Keras's functional API:

        inputs = cconv.Input((28, 28, 1))
        x = cconv.layers.Conv2D(16, 3, activation="relu")(inputs)
        outputs = cconv.layers.Dense(10, activation="softmax")(cconv.layers.Flatten()(x))
        model = cconv.Model(inputs, outputs)

    inputs and outputs may be a KerasTensor, a list or a dict of them; fit, evaluate and
    predict then take (and predict gives) arrays in the same structure, dicts by the
    inputs' names and the outputs' keys. A layer called twice shares its weights, and
    its gradients are summed. dtype ("float32" or "float64") is the dtype of every
    weight and computation. Subclassing Model with a call() method is not supported."""

    def __init__(self, inputs=None, outputs=None, name=None, trainable=True,
                 dtype="float32"):
        if inputs is None or outputs is None:
            raise TypeError("Model: expected Model(inputs, outputs) with the KerasTensors "
                            "of cconv.Input and of layers called on them (subclassing "
                            "Model with call() is not supported)")
        if trainable is not True:
            raise ValueError(f"Model: trainable={trainable!r} is not supported by cconv "
                             f"(set trainable on the layers)")
        self._setup(inputs, outputs, name or "functional", dtype)
        self.build()

    def _init_state(self, dtype, name):
        if np.dtype(dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
        if not isinstance(name, str):
            raise TypeError(f"name: expected a str, got {name!r}")
        self.dtype = np.dtype(dtype)
        self.name = name
        self.built = False
        self.compiled = False
        # {layer: its trainable} when the optimizer took its weights (see _optimizer_keys)
        self._optimizer_trainable = None
        self.stop_training = False
        self.history = None
        self._plans = {}
        self._guard = ModelGuard()

    def _setup(self, inputs, outputs, name, dtype):
        """The graph from inputs to outputs, checked, its layers named; nothing built."""
        self._init_state(dtype, name)
        in_tensors, self._input_kind = graph.flatten(inputs, "inputs")
        out_tensors, self._output_kind = graph.flatten(outputs, "outputs")
        for i, t in enumerate(in_tensors):
            if not t.node.is_input:
                raise ValueError(f"inputs[{i}]: expected a tensor made by cconv.Input, got "
                                 f"the output of layer {t.node.layer.name!r}")
        if len({id(t) for t in in_tensors}) != len(in_tensors):
            raise ValueError("inputs: the same tensor is given twice")
        nodes, layers = graph.walk(in_tensors, out_tensors)
        taken = {layer.name for layer in layers if layer.name is not None}
        for layer in layers:
            if layer.name is None:
                layer.name = _fresh_name(type(layer), taken)
                taken.add(layer.name)
        names = [layer.name for layer in layers]
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise ValueError(f"Model: layer names must be unique in a model; "
                             f"{doubled} name several layers")
        self.layers = layers
        self.inputs, self.outputs = in_tensors, out_tensors
        self._input_names = (list(self._input_kind[1]) if self._input_kind
                             and self._input_kind[0] == "dict"
                             else [t.node.layer.name for t in in_tensors])
        self._output_names = (list(self._output_kind[1]) if self._output_kind
                              and self._output_kind[0] == "dict"
                              else [t.node.layer.name for t in out_tensors])
        if len(set(self._output_names)) != len(self._output_names):
            raise ValueError(f"outputs: two outputs have the same name "
                             f"({self._output_names}); give them in a dict to name them")
        slots = {}
        for node in nodes:
            slots[id(node.output)] = len(slots)
        self._input_slots = [slots[id(t)] for t in in_tensors]
        self._output_slots = [slots[id(t)] for t in out_tensors]
        self._calls = [_Call(n.layer, [slots[id(t)] for t in n.inputs], slots[id(n.output)],
                             n.many, n.order) for n in nodes if not n.is_input]
        self._input_shapes = [t.sample_shape for t in in_tensors]

    def _nodes_of(self, layer):
        """The calls of layer in this model, in the order they were made."""
        return sorted((c for c in self._calls if c.layer is layer), key=lambda c: c.order)

    # ---- structure -------------------------------------------------------------------
    def build(self, input_shape=None, initialize=True):
        """Create the weights, using the global seed (cconv.utils.set_random_seed);
        initialize=False: zeros, drawing nothing (for weights loaded next). A functional
        model is built when it is made."""
        if self.built:
            return
        rng = utils._rng() if initialize else None
        shapes = dict(zip(self._input_slots, self._input_shapes))
        for call in self._calls:
            layer = call.layer
            shape = [shapes[i] for i in call.ins] if call.many else shapes[call.ins[0]]
            if not layer.built:
                layer.build(shape, self.dtype, rng)
            elif layer.dtype != self.dtype:
                raise ValueError(f"layer {layer.name!r} was built in {layer.dtype} by "
                                 f"another model; this model computes in {self.dtype}")
            shapes[call.out] = layer.output_shape
        # a layer computes the gradient wrt its input unless every call of it reads a
        # model's input
        inputs = set(self._input_slots)
        for call in self._calls:
            call.layer.need_input_grad = False
        for call in self._calls:
            if not set(call.ins) <= inputs:
                call.layer.need_input_grad = True
        self._slot_shapes = shapes
        self._plans = {training: self._plan(training) for training in (False, True)}
        self.built = True

    def _plan(self, training):
        """The runs of a pass: each call in an order that runs, where each chain of
        single-input calls (each the only reader of the one before) is planned by
        cconv.fusion, so that a chain inside a graph still fuses."""
        readers = {}
        for i, call in enumerate(self._calls):
            for slot in call.ins:
                readers.setdefault(slot, []).append(i)
        counts = {}
        for call in self._calls:
            counts[call.layer] = counts.get(call.layer, 0) + 1
        outputs = set(self._output_slots)

        def chains(call):
            return not call.many and counts[call.layer] == 1

        runs, done = [], set()
        for i, call in enumerate(self._calls):
            if i in done:
                continue
            chain = [i]
            while chains(self._calls[chain[-1]]):
                out = self._calls[chain[-1]].out
                nxt = readers.get(out, [])
                if out in outputs or len(nxt) != 1 or not chains(self._calls[nxt[0]]):
                    break
                chain.append(nxt[0])
            done.update(chain)
            calls = [self._calls[k] for k in chain]
            if not chains(call):
                runs.append(_Run(call.layer, call.ins, call.out, call.many,
                                 counts[call.layer] > 1))
                continue
            at = 0
            for step in fusion.plan([c.layer for c in calls], training):
                n = len(step.layers) if isinstance(step, fusion.Fused) else 1
                runs.append(_Run(step, calls[at].ins, calls[at + n - 1].out, False, False))
                at += n
        return runs

    def _steps(self, training):
        """The layers and fused runs of the training or inference plan, in order."""
        return [run.step for run in self._plans[bool(training)]]

    @property
    def output_shape(self):
        """The output's sample shape (a list of them for several outputs), or None
        before the model is built."""
        if not self.built:
            return None
        shapes = [self._slot_shapes[s] for s in self._output_slots]
        return shapes[0] if self._output_kind is None else shapes

    @property
    def input_shape(self):
        return self._input_shapes[0] if self._input_kind is None else list(self._input_shapes)

    def _output_shapes(self):
        return [self._slot_shapes[s] for s in self._output_slots]

    def _ensure_built(self, xs):
        if not self.built:
            self.build()

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
        self._plans = ({training: self._plan(training) for training in (False, True)}
                       if self.built else {})

    def __copy__(self):
        # A shallow copy would share the layers, so two "models" would train the same
        # weights; a copy of a model is a model of its own.
        return copy.deepcopy(self)

    def get_config(self):
        """Keras's Functional config: name, the layers with the calls that feed them,
        the input and output layers."""
        return saving.functional_config(self)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """The (uncompiled) model a config describes."""
        return saving.functional_from_config(config, custom_objects, cls=cls)

    def summary(self, line_length=None, positions=None, print_fn=None, expand_nested=False,
                show_trainable=False, layer_range=None):
        """Keras's table of layers, output shapes and parameter counts (and, for a
        functional model, the "Connected to" column: the calls feeding each layer, as
        name[call][0]), with the total, trainable and non-trainable counts below it as
        Keras prints them (by each layer's trainable now); show_trainable adds Keras's
        "Trainable" column (Y, N, or - for a layer without weights). cconv's layers
        nest nothing, so expand_nested adds nothing; line_length, positions and
        layer_range are not supported."""
        _refuse({"line_length": line_length, "positions": positions,
                 "layer_range": layer_range}, "summary", "cconv's table sizes itself")
        print_fn = print if print_fn is None else print_fn
        if not self.built:
            self.build()
        connected = self._connections()
        head = ("Layer (type)", "Output Shape", "Param #") + (
            ("Connected to",) if connected else ()) + (
            ("Trainable",) if show_trainable else ())
        rows = []
        for layer in self.layers:
            shapes = [layer.output_shape] if connected is None else [
                self._slot_shapes[c.out] for c in self._nodes_of(layer)] or [
                layer.output_shape]
            shape = ", ".join(str((None,) + tuple(s)) for s in dict.fromkeys(shapes))
            rows.append((f"{layer.name} ({type(layer).__name__})", shape,
                         f"{layer.count_params():,}")
                        + ((connected[layer],) if connected else ())
                        + ((("Y" if layer.trainable else "N") if layer.params else "-",)
                           if show_trainable else ()))
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

    def _connections(self):
        """{layer: its "Connected to" entry}, "-" for an input: each call's inputs as
        producer[call index][0], as Keras prints them."""
        producer = {}
        for slot, layer in zip(self._input_slots, (t.node.layer for t in self.inputs)):
            producer[slot] = f"{layer.name}[0][0]"
        for call in self._calls:
            producer[call.out] = f"{call.layer.name}[{self._nodes_of(call.layer).index(call)}][0]"
        return {layer: ", ".join(producer[s] for c in self._nodes_of(layer) for s in c.ins)
                or "-" for layer in self.layers}

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
        fusion.weights_changed(self._steps(False) if self._plans else ())

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

    def export(self, filepath, format="onnx", verbose=None, input_signature=None,
               **kwargs):
        """Keras 3's export of the inference pass: format="onnx" (the only one cconv
        writes) gives an ONNX file (opset cconv.export.OPSET) that onnxruntime runs,
        with a dynamic batch axis, the input "input" and the output "output" laid out
        as predict's. Needs the onnx package (pip install cconv[onnx]) and a built
        float32 model. verbose (default True, as Keras) prints where it was saved."""
        from cconv import export as export_module  # a floor below; onnx only when used
        export_module.check_arguments(format, input_signature, kwargs)
        if not self.built:
            raise ValueError("export: the model is not built; give it an Input(shape) or "
                             "call build, fit or predict first")
        with self._guard.reading():
            export_module.export_graph(filepath, *self._graph_description(),
                                       dtype=self.dtype, name=self.name)
        if verbose is None or verbose:
            print(f"Saved artifact at '{filepath}'.")


    def _graph_description(self):
        """(nodes, inputs, outputs) as cconv.export reads a graph: [(layer, input names,
        output name)] in an order that runs, [(input name, sample shape)], [output
        names]. A lone input is "input", a lone output "output"."""
        names = {}
        one_in, one_out = len(self._input_slots) == 1, len(self._output_slots) == 1
        for slot, name in zip(self._input_slots, self._input_names):
            names[slot] = "input" if one_in else name
        for slot, name in zip(self._output_slots, self._output_names):
            names.setdefault(slot, "output" if one_out else name)
        for call in self._calls:
            k = self._nodes_of(call.layer).index(call)
            names.setdefault(call.out, f"{call.layer.name}/output" + (f"_{k}" if k else ""))
        nodes = [(c.layer, [names[s] for s in c.ins], names[c.out]) for c in self._calls]
        return (nodes, [(names[s], shape) for s, shape in zip(self._input_slots,
                                                              self._input_shapes)],
                [names[s] for s in self._output_slots])

    # ---- compile ---------------------------------------------------------------------
    def compile(self, optimizer="rmsprop", loss="categorical_crossentropy", loss_weights=None,
                metrics=None, weighted_metrics=None, run_eagerly=False, steps_per_execution=1,
                jit_compile="auto", auto_scale_loss=True):
        """Keras's compile, with its default optimizer ("rmsprop"). cconv always runs its
        compiled kernels eagerly, so run_eagerly, jit_compile, steps_per_execution and
        auto_scale_loss change nothing and are accepted as Keras's scripts pass them.
        metrics are computed unweighted, weighted_metrics with fit's and evaluate's
        sample_weight (or class_weight), as in Keras.

        With several outputs, as in Keras: loss is one loss for every output, a list (one
        per output) or a dict by output name; loss_weights a list or dict of numbers
        (1 where a dict is silent); metrics and weighted_metrics a list of lists or a
        dict by output name. The loss minimized is sum(loss_weight * output's loss);
        logs name each output's loss "<output>_loss" and its metrics "<output>_<metric>"."""
        self._guard.check(self.name, "compile")
        utils._positive_int("steps_per_execution", steps_per_execution)
        optimizer = optimizers.get(optimizer)
        names = self._output_names
        per_loss = self._per_output("loss", loss, lambda v: isinstance(v, (str, losses.Loss))
                                    or (isinstance(v, dict) and "class_name" in v))
        loss_objects = [losses.get(v) for v in per_loss]
        if loss_weights is None:
            weights = [1.0] * len(names)
        else:
            weights = self._per_output("loss_weights", loss_weights,
                                       lambda v: isinstance(v, numbers.Real), default=1.0)
            for w in weights:
                if isinstance(w, bool) or not isinstance(w, numbers.Real) \
                        or not np.isfinite(w):
                    raise ValueError(f"loss_weights: expected finite numbers, got "
                                     f"{loss_weights!r}")
        per_metrics = [metrics_module.check(f"metrics[{n!r}]" if len(names) > 1 else
                                            "metrics", m)
                       for n, m in zip(names, self._per_output_lists("metrics", metrics))]
        per_weighted = [metrics_module.check(f"weighted_metrics[{n!r}]" if len(names) > 1
                                             else "weighted_metrics", m)
                        for n, m in zip(names, self._per_output_lists("weighted_metrics",
                                                                     weighted_metrics))]
        self.optimizer = optimizer
        self.loss = loss_objects[0] if len(names) == 1 else loss_objects
        self._losses, self._loss_weights = loss_objects, [float(w) for w in weights]
        # the compile config writes loss, loss_weights and metrics as they were given,
        # as Keras does: a name stays a name
        self._compile_args = {"loss": _loss_config(loss), "loss_weights": loss_weights,
                              "metrics": metrics, "weighted_metrics": weighted_metrics}
        self.metrics, self.weighted_metrics = per_metrics[0], per_weighted[0]
        self._per_metrics, self._per_weighted = per_metrics, per_weighted
        self._optimizer_trainable = None
        self.compiled = True

    def _per_output(self, argument, value, single, default=None):
        """value (one for every output, a list by output or a dict by output name) as a
        list by output; single(value) tells one value from a structure."""
        names = self._output_names
        if isinstance(value, dict) and not single(value):
            unknown = sorted(set(value) - set(names))
            if unknown:
                raise ValueError(f"{argument}: {unknown} name no output of the model (its "
                                 f"outputs: {names})")
            missing = [n for n in names if n not in value]
            if missing and default is None:
                raise ValueError(f"{argument}: no entry for outputs {missing}")
            return [value.get(n, default) for n in names]
        if isinstance(value, (list, tuple)):
            if len(value) != len(names):
                raise ValueError(f"{argument}: expected {len(names)} entries, one per output "
                                 f"{names}, got {len(value)}")
            return list(value)
        if not single(value):
            raise ValueError(f"{argument}: expected one value, a list of {len(names)} or a "
                             f"dict by output name {names}, got {value!r}")
        return [value] * len(names)

    def _per_output_lists(self, argument, value):
        """metrics as one list of names per output: a list of names for a single output;
        a list of lists or a dict of names or lists by output name for several."""
        names = self._output_names
        if value is None:
            return [None] * len(names)
        if len(names) == 1:
            if isinstance(value, dict) and set(value) == set(names):
                value = value[names[0]]
            elif isinstance(value, (list, tuple)) and len(value) == 1 \
                    and isinstance(value[0], (list, tuple)):
                value = value[0]
            return [value]
        if isinstance(value, dict):
            return [[v] if isinstance(v, str) else v
                    for v in self._per_output(argument, value, lambda v: False, default=[])]
        if isinstance(value, (list, tuple)) and all(isinstance(v, (list, tuple, type(None)))
                                                    for v in value):
            return self._per_output(argument, list(value), lambda v: False)
        raise ValueError(f"{argument}: a model with outputs {names} takes a list of lists "
                         f"of metric names (one list per output) or a dict by output name, "
                         f"got {value!r}")

    def _require_compiled(self, what):
        if not self.compiled:
            raise NotCompiledError(f"{what}: the model must be compiled first; call "
                                   f"model.compile(optimizer=..., loss=...)")

    # ---- input checks ----------------------------------------------------------------
    def _structure(self, value, names, name, what):
        """A list of one item per name from value: the item itself for one name, else a
        list or tuple in order or a dict by name."""
        if isinstance(value, dict):
            unknown = sorted(set(value) - set(names))
            missing = [n for n in names if n not in value]
            if unknown or missing:
                raise ValueError(f"{name}: expected a dict with keys {names}, got keys "
                                 f"{sorted(value)}")
            return [value[n] for n in names]
        if len(names) == 1:
            if isinstance(value, (list, tuple)) and len(value) == 1 \
                    and isinstance(value[0], np.ndarray):
                return [value[0]]
            return [value]
        if not isinstance(value, (list, tuple)) or len(value) != len(names):
            got = f"{len(value)} items" if isinstance(value, (list, tuple)) else \
                type(value).__name__
            raise ValueError(f"{name}: the model has {len(names)} {what} {names}: expected "
                             f"a list of {len(names)} arrays or a dict by name, got {got}")
        return list(value)

    def _check_x(self, x, name="x"):
        """The model's inputs, as a list of arrays (one per input), each checked."""
        many = len(self._input_names) > 1
        xs = self._structure(x, self._input_names, name, "inputs")
        out = []
        for i, (key, xi) in enumerate(zip(self._input_names, xs)):
            label = f"{name}[{key!r}]" if many else name
            xi = utils._numeric_array(label, xi, "a numeric (bool, int or float) array")
            if xi.ndim < 2:
                raise ValueError(f"{label}: expected a batch of samples of shape (N, ...), "
                                 f"got shape {xi.shape}")
            if len(xi) == 0:
                raise ValueError(f"{label}: expected at least one sample, got shape "
                                 f"{xi.shape}")
            out.append(xi)
        self._ensure_built(out)
        for key, xi, shape in zip(self._input_names, out, self._input_shapes):
            label = f"{name}[{key!r}]" if many else name
            if xi.shape[1:] != shape:
                hint = ""
                if xi.shape[1:] + (1,) == shape:
                    hint = "; add a channel axis with x[..., None]"
                raise ValueError(f"{label}: expected samples of shape {shape}, got "
                                 f"{xi.shape[1:]} ({label}.shape = {xi.shape}){hint}")
            if len(xi) != len(out[0]):
                raise ValueError(f"{name}: the inputs have different numbers of samples "
                                 f"({[len(a) for a in out]})")
            ops.check_size(label, xi.shape, self.dtype)
            if xi.dtype.kind == "f":
                for start in range(0, len(xi), _FINITE_CHECK_ROWS):
                    # checked after the cast: 1e300 is finite in float64, inf in float32
                    with np.errstate(over="ignore"):
                        rows = xi[start:start + _FINITE_CHECK_ROWS].astype(self.dtype,
                                                                           copy=False)
                    if not np.isfinite(rows).all():
                        raise ValueError(f"{label}: contains NaN or inf, or values too large "
                                         f"for {self.dtype} (first in rows {start}.."
                                         f"{start + _FINITE_CHECK_ROWS - 1})")
        return out

    def _check_y(self, y, n, name="y"):
        """The targets, one array per output in the output's shape (sparse labels as
        one-hot rows) in the model's dtype, each checked as its loss reads it."""
        many = len(self._output_names) > 1
        ys = self._structure(y, self._output_names, name, "outputs")
        return [self._check_target(yi, n, loss, shape, f"{name}[{key!r}]" if many else name)
                for yi, key, loss, shape in zip(ys, self._output_names, self._losses,
                                                self._output_shapes())]

    def _check_target(self, y, n, loss, shape, name):
        y = utils._numeric_array(name, y, "numeric labels")
        if y.ndim == 0 or len(y) != n:
            got = len(y) if y.ndim else "a scalar"
            raise ValueError(f"{name}: expected {n} labels to match x, got {got} "
                             f"(len(x) = {n}, {name}.shape = {y.shape})")
        kind = loss.target
        if kind in ("sparse", "categorical") and len(shape) != 1:
            raise ValueError(f"the model's output has shape {shape}; {loss.name} needs "
                             f"a flat (classes,) output: end with Flatten/Dense")
        if kind == "sparse":
            k = shape[0]
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
            k = shape[0]
            if y.ndim != 2 or y.shape[1] != k:
                hint = (" (integer labels? use loss='sparse_categorical_crossentropy' or "
                        "cconv.utils.to_categorical)" if y.ndim == 1 else "")
                raise ValueError(f"{name}: categorical_crossentropy expects one-hot labels "
                                 f"of shape (N, {k}), got shape {y.shape}{hint}")
        else:
            # binary and regression targets have the output's shape; as Keras
            # (squeeze_or_expand_to_same_rank), a trailing axis of 1 on either side is
            # added or dropped: y of shape (N,) fits an output (N, 1)
            want = (n,) + tuple(shape)
            if y.shape != want and y.shape + (1,) != want and y.shape != want + (1,):
                hint = (" (one column per sample: an output of 1 unit takes y of shape "
                        "(N,) or (N, 1))" if shape[-1] == 1 else "")
                raise ValueError(f"{name}: {loss.name} expects targets of the model's "
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
        sample, shape (N,) or (N, 1), for every output alike."""
        if sample_weight is None:
            return None
        if isinstance(sample_weight, dict) or (isinstance(sample_weight, (list, tuple))
                                               and sample_weight
                                               and isinstance(sample_weight[0], np.ndarray)
                                               and len(self._output_names) > 1):
            raise ValueError(f"{name}: one weight array per output is not supported by "
                             f"cconv; give one array of N weights for every output")
        w = utils._numeric_array(name, sample_weight, "numeric weights, one per sample")
        if w.ndim == 2 and w.shape[1] == 1:
            w = w[:, 0]
        if w.ndim != 1 or len(w) != n:
            raise ValueError(f"{name}: expected one weight per sample, shape ({n},), got "
                             f"shape {w.shape}")
        w = w.astype(np.float64)
        if not np.isfinite(w).all():
            raise ValueError(f"{name}: contains NaN or inf")
        wide = [s for s in self._output_shapes() if len(s) > 1]
        if wide:
            raise ValueError(f"{name}: per-sample weights need an output of shape (N, d); "
                             f"the model's is {(None,) + tuple(wide[0])} (Keras 3 cannot "
                             f"broadcast them either)")
        return w

    def _class_weights(self, class_weight, targets):
        """class_weight as per-sample weights, as Keras turns it into them: each sample's
        class is its label (sparse), the argmax of its row, or its one value rounded;
        classes the dict lacks weigh 1."""
        if len(targets) > 1:
            raise ValueError("class_weight: not supported for a model with several outputs "
                             "(as in Keras 3); give sample_weight instead")
        target = targets[0]
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
        if self._losses[0].target == "sparse" or target.shape[1] != 1:
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
        """For each output, whether the activation of the layer that gives it is folded
        into its loss (softmax into a categorical cross-entropy, sigmoid into the binary
        one): the loss then reads the logits, for an exact and stable gradient. Only an
        output that nothing else in the model reads is folded."""
        readers = {slot for call in self._calls for slot in call.ins}
        last = {run.out: run for run in self._plans[True]}
        out = []
        for slot, loss in zip(self._output_slots, self._losses):
            run = last.get(slot)
            act = None if run is None or run.many else run.step.activation
            out.append(not loss.from_logits and act is not None and act.name == loss.folds
                       and slot not in readers and self._output_slots.count(slot) == 1)
        return out

    def _run(self, xs, training, rng=None, folded=None):
        """The outputs of the model on the batch xs (one array per input), and in
        training the copies that ran the shared layers ({run index: copy}). folded: for
        each output, whether to stop before its activation (see _folded). An
        intermediate result is dropped as soon as its last reader has run."""
        values = {slot: np.asarray(x, dtype=self.dtype)
                  for slot, x in zip(self._input_slots, xs)}
        runs = self._plans[bool(training)]
        left = self._reads(runs)
        stop = {slot for slot, f in zip(self._output_slots, folded or ()) if f}
        copies = {}
        for i, run in enumerate(runs):
            args = [values[slot] for slot in run.ins]
            step = run.step
            if run.shared:  # its own saved inputs and buffers, the layer's weights
                step = copies[i] = copy.copy(step)
            forward = step.forward_linear if run.out in stop else step.forward
            values[run.out] = forward(args if run.many else args[0], training, rng)
            for slot in run.ins:
                left[slot] -= 1
                if not left[slot]:
                    del values[slot]
        return [values[slot] for slot in self._output_slots], copies

    def _reads(self, runs):
        """{slot: how many of the runs read it, plus one per time it is an output}: when
        a count reaches 0, nothing needs the slot's value any more."""
        left = {}
        for slot in [s for run in runs for s in run.ins] + self._output_slots:
            left[slot] = left.get(slot, 0) + 1
        return left

    def _backward(self, grads, copies, folded):
        """Back through the training plan from {output slot: gradient}: fills every
        layer's grads, summing over the calls of a shared layer. folded: as _run was
        given it."""
        grads = dict(grads)
        stop = {slot for slot, f in zip(self._output_slots, folded) if f}
        inputs = set(self._input_slots)
        shared = {}
        runs = self._plans[True]
        for i in range(len(runs) - 1, -1, -1):
            run = runs[i]
            step = copies.get(i, run.step)
            grad = grads.pop(run.out)
            back = step.backward_linear if run.out in stop else step.backward
            got = back(grad)
            if run.shared:
                total = shared.setdefault(run.step, {})
                for k, g in step.grads.items():
                    total[k] = g.copy() if k not in total else total[k] + g
            for slot, g in zip(run.ins, got if run.many else [got]):
                if slot in inputs:
                    continue
                grads[slot] = g if slot not in grads else grads[slot] + g
        for layer, total in shared.items():
            layer.grads = total

    def _forward(self, xs, training, rng=None):
        """The model's outputs on xs, a list with one array per input."""
        return self._run(xs, training, rng)[0]

    def _loss_and_grad(self, targets, xs, weights, training, rng, folded=None):
        """Each sample's loss (sum of loss_weight * output's loss), each output's losses,
        the gradient of the batch's loss sum(w * loss) / N wrt each output (or its
        logits, when folded), and the outputs as predict gives them; in training also
        the copies that ran the shared layers."""
        folded = self._folded() if folded is None else folded
        outs, copies = self._run(xs, training, rng, folded)
        total, per_output, grads = None, [], []
        n = len(outs[0])
        for i, (target, out, loss, lw, fold) in enumerate(zip(
                targets, outs, self._losses, self._loss_weights, folded)):
            losses_, grad = loss.per_sample(target, out, fold or loss.from_logits)
            if weights is None and lw == 1.0:
                grad /= n
            else:
                factor = (np.ones(n) if weights is None else weights) / n
                if lw != 1.0:
                    factor = factor * lw
                grad *= factor.astype(self.dtype).reshape((-1,) + (1,) * (grad.ndim - 1))
            per_output.append(losses_)
            term = losses_ if lw == 1.0 else losses_ * lw
            total = term if total is None else total + term
            grads.append(grad)
            if fold and self._metric_specs():
                outs[i] = self._producer(self._output_slots[i]).activation.forward(out)
        return total, per_output, grads, outs, copies

    def _producer(self, slot):
        return next(run.step for run in self._plans[True] if run.out == slot)

    def _metric_specs(self):
        """(output index, metric name, log name, weighted) of every metric, in the order
        of the logs."""
        specs = []
        many = len(self._output_names) > 1
        for i, (plain, weighted) in enumerate(zip(self._per_metrics, self._per_weighted)):
            names = metrics_module.log_names(plain, weighted)
            for name, log, w in zip(plain + weighted, names,
                                    [False] * len(plain) + [True] * len(weighted)):
                specs.append((i, name, f"{self._output_names[i]}_{log}" if many else log, w))
        # plain metrics first, then the weighted ones, as the Tally keeps them
        return [s for s in specs if not s[3]] + [s for s in specs if s[3]]

    def _metric_values(self, targets, outs):
        shapes = self._output_shapes()
        return [metrics_module.function(name, shapes[i])(targets[i], outs[i])
                for i, name, _, _ in self._metric_specs()]

    def _new_tally(self):
        specs = self._metric_specs()
        loss_names = ([f"{n}_loss" for n in self._output_names]
                      if len(self._output_names) > 1 else [])
        return metrics_module.Tally(loss_names + [s[2] for s in specs], len(loss_names),
                                    sum(1 for s in specs if not s[3]))

    def _tally_values(self, per_output, targets, outs):
        """The values a Tally sums for a batch: each output's losses (several outputs),
        then the metrics."""
        return (per_output if len(per_output) > 1 else []) + self._metric_values(targets,
                                                                                  outs)

    def _train_step(self, xs, targets, weights, rng, tally):
        """One optimizer step on a batch; returns the batch's sums for tally."""
        folded = self._folded()
        total, per_output, grads, outs, copies = self._loss_and_grad(targets, xs, weights,
                                                                    True, rng, folded)
        by_slot = {}
        for slot, g in zip(self._output_slots, grads):
            by_slot[slot] = g if slot not in by_slot else by_slot[slot] + g
        self._backward(by_slot, copies, folded)
        params, grads_ = [], []
        for layer, k in self._optimizer_keys():
            params.append(layer.params[k])
            grads_.append(layer.grads[k])
        with self._guard.updating():
            self.optimizer.update(params, grads_)
            runs = self._plans[True]
            for i, run in enumerate(runs):
                if run.shared:
                    copies[i].update_state()
                else:
                    for layer in getattr(run.step, "layers", (run.step,)):
                        layer.update_state()
            self._weights_changed()
        return tally.batch(total, self._tally_values(per_output, targets, outs), weights)

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
        n = len(x[0])
        target = self._check_y(_required("y", y), n)
        if class_weight is not None and sample_weight is not None:
            raise ValueError("fit: class_weight and sample_weight cannot both be given "
                             "(as in Keras): fold the class weights into sample_weight")
        weights = self._check_weights(sample_weight, n)
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
            nv = len(xv[0])
            val = (xv, self._check_y(validation_data[1], nv, "validation_data[1]"),
                   self._check_weights(validation_data[2] if len(validation_data) == 3
                                       else None, nv, "validation_data[2]"))
        elif validation_split > 0:
            # Like Keras: the last fraction of the data, taken before any shuffling; the
            # training part is floor(n * (1 - split)) samples, as Keras rounds it.
            split_at = int(np.floor(n * (1.0 - validation_split)))
            if split_at == 0 or split_at == n:
                raise ValueError(f"validation_split: {validation_split} of {n} samples "
                                 f"leaves an empty training or validation set")
            # sample_weight is split with them; class weights weigh training alone
            val = (_rows(x, split_at, None), _rows(target, split_at, None),
                   None if sample_weight is None else weights[split_at:])
            x, target = _rows(x, 0, split_at), _rows(target, 0, split_at)
            weights = None if weights is None else weights[:split_at]
            n = split_at
        if val is not None and validation_steps is not None:
            keep = utils._positive_int("validation_steps", validation_steps) * val_batch_size
            val = (_rows(val[0], 0, keep), _rows(val[1], 0, keep),
                   None if val[2] is None else val[2][:keep])
        self._take_trainable()
        rng = utils._rng(seed)

        history = callbacks_module.History()
        cbs = _check_callbacks(callbacks) + [history]
        if verbose:
            cbs.append(callbacks_module.ProgbarLogger(verbose))
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
                    batch = self._train_step([a[idx] for a in x], [t[idx] for t in target],
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
        """Images per forward pass of predict and evaluate (at least one): the widest cut
        of the inference plan, the most sample bytes held at once between two runs,
        fits in INFERENCE_CHUNK_BYTES."""
        runs, size = self._plans[False], {}
        for slot, shape in self._slot_shapes.items():
            size[slot] = math.prod(shape)
        left = self._reads(runs)
        live = {slot: size[slot] for slot in self._input_slots}
        widest = sum(live.values())
        for run in runs:
            live[run.out] = size[run.out]
            widest = max(widest, sum(live.values()))
            for slot in run.ins:
                left[slot] -= 1
                if not left[slot]:
                    live.pop(slot, None)
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
        tally = self._new_tally()
        for start, stop, batches in self._chunks(len(x[0]), batch_size):
            tb = _rows(target, start, stop)
            wb = None if weights is None else weights[start:stop]
            with _config.governor():
                total, per_output, _, outs, _ = self._loss_and_grad(
                    tb, _rows(x, start, stop), wb, False, None)
            values = self._tally_values(per_output, tb, outs)
            for step, _, end in batches if cbs else ():
                for cb in cbs:
                    cb.on_test_batch_begin(step)
                k = end - start
                logs = tally.logs(pending=tally.batch(
                    total[:k], [v[:k] for v in values], None if wb is None else wb[:k]))
                for cb in cbs:
                    cb.on_test_batch_end(step, logs)
            tally.add(tally.batch(total, values, wb))
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
            target = self._check_y(_required("y", y), len(x[0]))
            weights = self._check_weights(sample_weight, len(x[0]))
            batch_size = self._check_batch_size(batch_size)
            verbose = _verbosity(verbose)
            if steps is not None:
                keep = utils._positive_int("steps", steps) * batch_size
                x, target = _rows(x, 0, keep), _rows(target, 0, keep)
                weights = None if weights is None else weights[:keep]
            cbs = _check_callbacks(callbacks)
            if verbose:
                cbs.append(callbacks_module.ProgbarLogger(verbose))
            n_steps = -(-len(x[0]) // batch_size)
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
        """The model's output: an array, or for several outputs a list or dict as the
        model's outputs were given. As in evaluate, the work goes in chunks of cconv's
        choosing, and batch_size does not change the result. steps caps the number of
        batches; verbose="auto" shows a bar on a terminal or in a notebook only. From
        another thread during a fit, it waits for the weight update in progress and
        holds the next one back: it sees one set of weights."""
        x = self._check_x(x)
        batch_size = self._check_batch_size(batch_size)
        verbose = _verbosity(verbose)
        if steps is not None:
            x = _rows(x, 0, utils._positive_int("steps", steps) * batch_size)
        n = len(x[0])
        cbs = _check_callbacks(callbacks)
        if verbose:
            cbs.append(callbacks_module.ProgbarLogger(verbose))
        shapes = self._output_shapes()
        for shape in shapes:
            ops.check_size("predict output", (n,) + tuple(shape), self.dtype)
        outs = [np.empty((n,) + tuple(shape), dtype=self.dtype) for shape in shapes]
        n_steps = -(-n // batch_size)
        with self._guard.reading():
            self._attach(cbs, {"steps": n_steps, "verbose": verbose})
            for cb in cbs:
                cb.on_predict_begin()
            for start, stop, batches in self._chunks(n, batch_size):
                with _config.governor():
                    for out, got in zip(outs, self._forward(_rows(x, start, stop), False)):
                        out[start:stop] = got
                for step, first, end in batches if cbs else ():
                    for cb in cbs:
                        cb.on_predict_batch_begin(step)
                    for cb in cbs:
                        cb.on_predict_batch_end(step, {"outputs": graph.pack(
                            self._output_kind, [o[first:end] for o in outs])})
            for cb in cbs:
                cb.on_predict_end()
        return graph.pack(self._output_kind, outs)


class Sequential(Model):
    """A linear stack of layers. The first item may be cconv.Input(shape) (or the first
    layer may say input_shape=, as Keras allows); without either the model is built from
    the first data it sees.

    dtype is "float32" (default) or "float64" for weights and computation."""

    input_shape = None  # the sample shape, once known (an attribute, not Model's property)

    def __init__(self, layers=None, dtype="float32", name="sequential"):
        self._init_state(dtype, name)
        self.layers = []
        self._input_kind = self._output_kind = None
        self._input_names = ["input_layer"]
        for layer in layers or []:
            self.add(layer)
        if self.input_shape is not None and self.layers:
            self.build()

    # ---- structure -------------------------------------------------------------------
    def add(self, layer):
        if isinstance(layer, graph.KerasTensor) and layer.node.is_input:
            layer = layer.node.layer
        if isinstance(layer, layers_module.InputLayer):
            if self.layers or self.input_shape is not None:
                raise ValueError("Input: must come first in the model")
            self.input_shape = layer.shape
            return
        if isinstance(layer, graph.KerasTensor):
            raise TypeError("layers: a Sequential takes layers (and a cconv.Input first), "
                            "not the KerasTensor of a layer's call; use cconv.Model for "
                            "graphs")
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
            layer.name = _fresh_name(type(layer), taken)
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
        # a chain: layer i reads slot i and writes slot i + 1
        self._input_shapes = [self.input_shape]
        self._input_slots, self._output_slots = [0], [len(self.layers)]
        self._calls = [_Call(layer, [i], i + 1, False, i) for i, layer in enumerate(self.layers)]
        Model.build(self, initialize=initialize)

    @property
    def _output_names(self):
        return [self.layers[-1].name if self.layers else "output"]

    def _ensure_built(self, xs):
        if not self.built:
            self.build(self.input_shape or np.shape(xs[0])[1:])

    def _connections(self):
        return None  # Keras's Sequential table has no "Connected to" column

    def get_config(self):
        """Keras's Sequential config: name, dtype, the layers' configs."""
        return saving.sequential_config(self)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """The (uncompiled) model a config describes, built when it gives the input shape."""
        return saving.sequential_from_config(config, custom_objects, cls=cls)


def _rows(arrays, start, stop):
    """Rows start:stop of each array in a list."""
    return [a[start:stop] for a in arrays]


def _fresh_name(cls, taken):
    """Keras's default name for a new object of cls, numbered past the names taken."""
    base = utils.default_name(cls)
    i, name = 0, base
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    return name


def _loss_config(loss):
    """A loss as a compile config writes it: names as names, objects as Keras's dicts,
    lists and dicts of them entry by entry."""
    if isinstance(loss, (list, tuple)):
        return [_loss_config(v) for v in loss]
    if isinstance(loss, dict) and "class_name" not in loss:
        return {k: _loss_config(v) for k, v in loss.items()}
    return loss if isinstance(loss, str) else losses.serialize(losses.get(loss))


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
