"""Keras-like layers. Each layer holds its weights, calls cconv.ops forward and backward,
and keeps what its backward pass needs from the last training forward pass in its
`saved` dict (see Layer).

Shapes given to layers exclude the batch axis, as in Keras.
"""
import numbers
import threading
import warnings

import numpy as np

from cconv import activations, graph, initializers, ops, utils
from cconv.ops._scratch import reused
from cconv.utils import _positive_int, dtype_policy, policy_name


class _Act:
    """A layer's activation: a row of cconv.activations' table, computed by ops.activation
    and ops.activation_backward. It keeps no state: what its backward pass needs, the
    output or the input as the row's gradient_from says, is the layer's saved["y"] or
    saved["z"]."""

    def __init__(self, activation):
        # the name alone is kept (the table's formulas do not pickle); the rest is read
        # from the table
        self.name = activations.serialize(activation)

    @property
    def elementwise(self):
        """The kernels may apply it in place."""
        return activations.row(self.name).code is not None

    @property
    def fused(self):
        """... in training too: its gradient comes from its output."""
        return activations.row(self.name).fused

    @property
    def gradient_from(self):
        return activations.row(self.name).gradient_from

    def forward(self, z):
        return z if self.name == "linear" else ops.activation(self.name, z)

    def backward(self, s, grad):
        """The gradient wrt the activation's input, given its output or input s."""
        return grad if self.name == "linear" else ops.activation_backward(self.name, s, grad)


def _pair(name, value):
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name}: expected an int or a pair of ints, got {value!r}")
        return _positive_int(name, value[0]), _positive_int(name, value[1])
    v = _positive_int(name, value)
    return v, v


def _initializer(name, value):
    """A layer's initializer argument: a name, config or class as an Initializer (see
    cconv.initializers.get); an Initializer or a callable (shape, dtype, rng) as is."""
    if isinstance(value, (str, dict)):
        return initializers.deserialize(value, what=name)
    try:
        return initializers.get(value)
    except ValueError:
        raise ValueError(f"{name}: expected an initializer's name (one of "
                         f"{sorted(initializers.ALIASES)}), an Initializer or a callable "
                         f"(shape, dtype, rng) -> array, got {value!r}") from None


def _init(spec, shape, dtype, rng, what):
    """A new weight drawn by spec; zeros without any draw when rng is None (the weights
    are about to be loaded)."""
    if rng is None:
        ops.check_size(what, shape, dtype)
        return np.zeros(shape, dtype=dtype)
    ops.check_size(what, shape, np.float64)  # the initializers draw in float64
    arr = np.asarray(initializers.sample(spec, shape, dtype, rng))
    if arr.shape != tuple(shape):
        raise ValueError(f"{what}: the initializer returned shape {arr.shape}, "
                         f"expected {tuple(shape)}")
    return np.ascontiguousarray(arr, dtype=dtype)


def _input_shape_hint(input_shape, input_dim):
    """Keras's legacy input_shape= / input_dim= of a layer: the shape of one sample, a
    tuple of positive ints (input_dim=D is input_shape=(D,)), or None. Keras 3 warns, as
    here, and a Sequential uses it only on its first layer (see Sequential.add)."""
    if input_shape is None and input_dim is None:
        return None
    if input_shape is not None and input_dim is not None:
        raise ValueError(f"give input_shape or input_dim, not both (got input_shape="
                         f"{input_shape!r}, input_dim={input_dim!r})")
    if input_dim is not None:
        shape = (_positive_int("input_dim", input_dim),)
    else:
        if not isinstance(input_shape, (tuple, list)) or not input_shape:
            raise TypeError(f"input_shape: expected a tuple of positive ints (one sample's "
                            f"shape, without the batch axis), got {input_shape!r}")
        if any(d is None for d in input_shape):
            raise ValueError(f"input_shape: expected a tuple of positive ints, got "
                             f"{input_shape!r} (cconv needs every size but the batch's)")
        shape = tuple(_positive_int("input_shape", d) for d in input_shape)
    warnings.warn("Do not pass an `input_shape`/`input_dim` argument to a layer. When using "
                  "Sequential models, prefer using an `Input(shape)` object as the first "
                  "layer in the model instead.", UserWarning, stacklevel=4)
    return shape


def weight_keys(layers):
    """(layer, weight name) for every weight the built layers hold, in the one order
    that get_weights, set_weights and every weights file use: layer by layer, and
    within a layer in the order of its weight_names."""
    for layer in layers:
        for key in layer.weight_keys():
            yield layer, key


def trainable_keys(layers, trainable=None):
    """The (layer, weight name) of weight_keys that an optimizer updates, in that order:
    the trainable weights (not a layer's non_trainable_names) of the layers that are
    trainable, by `trainable` ({layer: flag}) where it names the layer, else by the
    layer's attribute. Keras's optimizer keeps slots for these alone."""
    for layer in layers:
        if (trainable or {}).get(layer, layer.trainable):
            for key in layer.weight_keys():
                if key not in layer.non_trainable_names:
                    yield layer, key


class Layer:
    """Base class. Subclasses set `weight_names` and fill `params` in `build`.

    What a layer keeps between passes, and what cconv.fusion may touch (the contract
    between fused steps and layers):
    - `params`: the weights, by name ("kernel", "bias").
    - `grads`: their gradients, filled by backward, by the same names.
    - `saved`: what backward needs from the last training forward pass, by these keys:
        "x"       the input (Conv2D, Dense, KernelPooling, BatchNormalization);
        "mean", "var"  the batch's statistics, or None in inference mode
                  (BatchNormalization);
        "moving"  the batch's statistics, which update_state blends into the moving
                  ones (BatchNormalization);
        "y"       the activation's output (every layer with an activation);
        "z"       the activation's input, for an activation whose gradient needs it;
        "mask"    the keep-mask, or None when rate is 0 (Dropout);
        "argmax", "x_shape"  where each window's max was, and the input shape
                  (MaxPooling2D, GlobalMaxPooling2D; "x_shape" alone:
                  AveragePooling2D, GlobalAveragePooling2D).
        "xs"      the list of inputs (Multiply, Maximum: the merge layers whose
                  gradients need them).
    - public configuration (activation.name, padding, rate, use_bias, pool_size, strides,
      dilation_rate, epsilon, dtype, input_shape, output_shape) and the methods below.
    CONTRACT lists these names: a fused step touches nothing else. Each rule in
    cconv.fusion declares the `saved` keys it uses; tests/test_fusion_contract.py
    checks that the layers provide them and that the steps keep to CONTRACT."""

    CONTRACT = frozenset({
        "params", "grads", "saved", "activation", "padding", "rate", "use_bias",
        "pool_size", "strides", "dilation_rate", "epsilon", "dtype", "input_shape",
        "output_shape", "name",
        "forward", "forward_linear", "backward", "backward_linear", "activate",
        "activation_grad"})
    weight_names = ()
    # weights no optimizer updates, whatever `trainable` says (BatchNormalization's
    # moving statistics)
    non_trainable_names = ()
    activation = None
    # called on a list of tensors (the merge layers), not on one
    MULTI_INPUT = False

    def __init__(self, name=None, *, input_shape=None, input_dim=None, trainable=True):
        self.name = name
        self.trainable = trainable
        # Keras's legacy hint: the model's input shape when this layer comes first
        self._input_shape_arg = _input_shape_hint(input_shape, input_dim)
        self.built = False
        self.input_shape = None
        self.output_shape = None
        self.params = {}
        self.grads = {}
        self.saved = {}
        self.need_input_grad = True

    @property
    def trainable(self):
        """False freezes the layer, as in Keras 3: no optimizer updates its weights (nor
        keeps slots for them), gradients still flow through it to the layers before it,
        and a BatchNormalization runs in inference mode. A model's optimizer takes the
        trainable weights at the first fit after compile(), as Keras 3's: a change after
        that needs compile() again (with a new optimizer), and fit says so."""
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"trainable: expected True or False, got {value!r}")
        self._trainable = bool(value)

    def compute_output_shape(self, input_shape):
        return input_shape

    def __call__(self, inputs, training=None, mask=None):
        """Calling a layer on a KerasTensor (from cconv.Input, or a layer called on one)
        records the call and returns the output's KerasTensor, from which cconv.Model
        builds a model, as in Keras's functional API. A merge layer takes a list of
        tensors. Every call of one layer shares its weights."""
        if training is not None or mask is not None:
            raise ValueError(f"{type(self).__name__}: training= and mask= are not "
                             f"supported in a call (a model's fit trains, its predict "
                             f"does not; cconv has no masks)")
        label = f"{type(self).__name__} {self.name or ''}".rstrip()
        if self.MULTI_INPUT:
            if not isinstance(inputs, (list, tuple)):
                raise TypeError(f"{label}: expected a list of KerasTensors, got "
                                f"{type(inputs).__name__}")
            tensors = list(inputs)
        else:
            if isinstance(inputs, (list, tuple)) and len(inputs) == 1:
                inputs = inputs[0]  # Keras takes [x] for x
            tensors = [inputs]
        for i, t in enumerate(tensors):
            if not isinstance(t, graph.KerasTensor):
                where = f"inputs[{i}]" if self.MULTI_INPUT else "inputs"
                if isinstance(t, np.ndarray):
                    raise TypeError(f"{label}: {where}: cconv's layers are called on "
                                    f"KerasTensors (cconv.Input) to build a model, not on "
                                    f"arrays; run arrays through a model's predict")
                raise TypeError(f"{label}: {where}: expected a KerasTensor, got "
                                f"{type(t).__name__}")
        shapes = [t.sample_shape for t in tensors]
        shape = shapes if self.MULTI_INPUT else shapes[0]
        first = next((n for n in getattr(self, "_inbound_nodes", ())), None)
        if first is not None:
            before = [t.sample_shape for t in first.inputs]
            if before != shapes:
                raise ValueError(f"{label}: called on inputs of shape "
                                 f"{[(None,) + s for s in shapes]}, but its first call was "
                                 f"on {[(None,) + s for s in before]}; a layer called "
                                 f"again shares its weights, so its inputs keep their shape")
        if self.built and tuple(shape) != tuple(self.input_shape):
            raise ValueError(f"{label}: built for inputs of shape {self.input_shape}, "
                             f"called on {tuple(shape)}")
        out_shape = tuple(self.compute_output_shape(shape))
        node = graph.Node(self, tensors, self.MULTI_INPUT)
        node.output = graph.KerasTensor(out_shape, tensors[0].dtype, node)
        self._inbound_nodes = list(getattr(self, "_inbound_nodes", ())) + [node]
        return node.output

    def weight_shapes(self, input_shape):
        """{weight name: shape} for this layer on inputs of input_shape, in the order the
        weights are made (and saved)."""
        return {}

    def build(self, input_shape, dtype, rng):
        """Make the weights, drawn from rng; zeros, drawing nothing, when rng is None."""
        self.input_shape = tuple(input_shape)
        self.output_shape = tuple(self.compute_output_shape(self.input_shape))
        self.dtype = np.dtype(dtype)
        self.built = True

    def _init_weights(self, rng):
        for key, shape in self.weight_shapes(self.input_shape).items():
            self.params[key] = _init(getattr(self, f"{key}_initializer"), shape,
                                     self.dtype, rng, f"{key}_initializer")

    def forward(self, x, training=False, rng=None):
        return self.activate(self.forward_linear(x, training, rng), training)

    def forward_linear(self, x, training=False, rng=None):
        """The forward pass up to, not including, the layer's activation."""
        return x

    def activate(self, z, training):
        """The layer's activation of z; in training, its output is saved["y"] (and its
        input saved["z"] when its gradient needs it)."""
        if self.activation is None:
            return z
        y = self.activation.forward(z)
        if training:
            self.saved["y"] = y
            if self.activation.gradient_from == "input":
                self.saved["z"] = z
        return y

    def backward(self, grad):
        """Gradient wrt the input; fills self.grads. Needs a training forward first."""
        return self.backward_linear(self.activation_grad(grad))

    def activation_grad(self, grad):
        """The gradient wrt the activation's input, given grad wrt its output."""
        if self.activation is None:
            return grad
        source = "y" if self.activation.gradient_from == "output" else "z"
        return self.activation.backward(self.saved[source], grad)

    def backward_linear(self, grad):
        """The backward pass given the gradient wrt this layer's pre-activation output."""
        return grad

    def update_state(self):
        """Apply the state updates of the last training forward pass (BatchNormalization's
        moving statistics); the model calls it with the optimizer's update, so that a
        concurrent predict sees the state before or after a step, never a mix."""

    def weight_keys(self):
        """The names of the weights this layer holds, in order (see weight_keys)."""
        return [k for k in self.weight_names if k in self.params]

    def get_weights(self):
        return [self.params[k].copy() for k in self.weight_keys()]

    def set_weights(self, weights):
        names = self.weight_keys()
        if len(weights) != len(names):
            raise ValueError(f"set_weights: layer {self.name!r} expects {len(names)} arrays "
                             f"({', '.join(names) or 'none'}), got {len(weights)}")
        new = {}
        for k, w in zip(names, weights):
            w = np.asarray(w)
            if w.shape != self.params[k].shape:
                raise ValueError(f"set_weights: {self.name}.{k} expects shape "
                                 f"{self.params[k].shape}, got {w.shape}")
            if w.dtype.kind not in "fiu":
                raise TypeError(f"set_weights: {self.name}.{k} expects a float array, "
                                f"got dtype {w.dtype}")
            if not np.isfinite(w).all():
                raise ValueError(f"set_weights: {self.name}.{k} contains NaN or inf")
            # a copy, as Keras's: the caller's array never aliases the layer's weight
            new[k] = np.array(w, dtype=self.params[k].dtype, order="C")
        self.params.update(new)

    def count_params(self):
        return int(sum(p.size for p in self.params.values()))

    # ---- configs and copies ------------------------------------------------------------
    # Keras options that cconv has only at one value: {option: that value}. A config with
    # another value is refused, naming the option.
    KERAS_FIXED = {}
    # attributes holding per-thread scratch memory: never copied, made anew on the far side
    _scratch_attrs = ()
    # whether a built layer's entry in a .keras config has a build_config, as Keras writes
    # one (Keras's Reshape is built at construction and writes none)
    KERAS_BUILD_CONFIG = True

    def get_config(self):
        """The constructor's arguments, in the dict shape of the Keras layer's config,
        with the options cconv has at one value (KERAS_FIXED) at that value."""
        return {"name": self.name, "trainable": self.trainable,
                "dtype": dtype_policy(getattr(self, "dtype", None) or "float32"),
                **{k: list(v) if isinstance(v, tuple) else v
                   for k, v in self.KERAS_FIXED.items()}}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """The layer a config describes (a Keras config or get_config's). Options cconv
        lacks raise a ValueError naming the layer and the option."""
        if not isinstance(config, dict):
            raise ValueError(f"{cls.__name__}.from_config: expected a dict, got {config!r}")
        config = dict(config)
        label = f"{cls.__name__} {config.get('name')!r}"
        policy_name(f"{label}: dtype", config.pop("dtype", None))  # the model's dtype rules
        kwargs = utils._keras_options(label, cls, config, cls.KERAS_FIXED)
        for key in kwargs:
            if key.endswith("_initializer"):
                kwargs[key] = initializers.deserialize(kwargs[key], custom_objects,
                                                       what=f"{label}: {key}")
        return utils._construct(label, cls, kwargs)

    def __getstate__(self):
        # What the last batch left (saved inputs, gradients) and per-thread scratch are
        # not part of the layer's value.
        state = {k: v for k, v in self.__dict__.items() if k not in self._scratch_attrs}
        state["saved"], state["grads"] = {}, {}
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        for attr in self._scratch_attrs:
            setattr(self, attr, threading.local())


class InputLayer(Layer):
    """The layer behind cconv.Input: it declares the shape of one sample, e.g.
    InputLayer((28, 28, 1)), with the arguments of keras.layers.InputLayer.
    batch_shape=(None, 28, 28, 1) says the same; dtype is the dtype of the data (any
    numeric dtype: cconv casts inputs to the model's dtype). It has no weights."""

    def __init__(self, shape=None, batch_size=None, dtype=None, sparse=None,
                 batch_shape=None, name=None, tensor=None, optional=False):
        if batch_shape is not None:
            if shape is not None:
                raise ValueError("Input: give shape or batch_shape, not both")
            if not isinstance(batch_shape, (tuple, list)) or len(batch_shape) < 2:
                raise TypeError(f"batch_shape: expected (batch, d1, ...), got {batch_shape!r}")
            batch_size, shape = batch_shape[0], tuple(batch_shape[1:])
        if shape is None:
            raise TypeError("Input: shape is required, e.g. Input(shape=(28, 28, 1))")
        if isinstance(shape, numbers.Integral):
            shape = (shape,)
        if not isinstance(shape, (tuple, list)) or not shape:
            raise TypeError(f"shape: expected a tuple of positive ints, got {shape!r}")
        self.shape = tuple(_positive_int("shape", s) for s in shape)
        for arg, value, meaning in (
                ("batch_size", batch_size, "cconv models take batches of any size"),
                ("sparse", sparse or None, "cconv has no sparse tensors"),
                ("tensor", tensor, "cconv makes the input's KerasTensor itself"),
                ("optional", optional or None, "a model's inputs are never optional")):
            if value is not None:
                raise ValueError(f"Input: {arg}={value!r} is not supported ({meaning})")
        if dtype is not None and np.dtype(dtype).kind not in "biuf":
            raise TypeError(f"dtype: expected a numeric dtype, got {dtype!r}")
        super().__init__(name)
        self.dtype = None if dtype is None else np.dtype(dtype).name
        self.build(self.shape, self.dtype or "float32", None)
        node = graph.Node(self, [], False)
        node.output = graph.KerasTensor(self.shape, self.dtype or "float32", node)
        self._inbound_nodes = [node]

    @property
    def output(self):
        """The KerasTensor that stands for the model's input."""
        return self._inbound_nodes[0].output

    def build(self, input_shape, dtype, rng):
        self.input_shape = self.output_shape = tuple(input_shape)
        self.built = True

    def __call__(self, inputs, training=None, mask=None):
        raise TypeError("an InputLayer is not called: use cconv.Input(shape), which gives "
                        "the KerasTensor to call layers on")

    def get_config(self):
        """keras.layers.InputLayer's config."""
        return {"batch_shape": [None, *self.shape], "dtype": self.dtype or "float32",
                "sparse": False, "ragged": False, "name": self.name or "input_layer",
                "optional": False}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("sparse", "ragged", "optional"):
            if config.pop(key, False):
                raise ValueError(f"InputLayer: {key}=True is not supported by cconv")
        shape = config.pop("batch_shape", None)
        if shape is None and config.get("batch_input_shape") is not None:
            shape = config.pop("batch_input_shape")  # Keras 2's name
        config.pop("batch_input_shape", None)
        name = config.pop("name", None)
        dtype = policy_name("InputLayer: dtype", config.pop("dtype", None))
        unknown = {k: v for k, v in config.items() if v is not None}
        if unknown:
            raise ValueError(f"InputLayer: options {unknown} are not supported by cconv")
        if not isinstance(shape, (list, tuple)) or len(shape) < 2:
            raise ValueError(f"InputLayer: expected batch_shape [null, d1, ...], got {shape!r}")
        return cls(shape=tuple(shape[1:]), dtype=dtype, name=name)


def Input(shape=None, batch_size=None, dtype=None, sparse=None, batch_shape=None,
          name=None, tensor=None, optional=False):
    """A model's input, as keras.Input: a KerasTensor of shape (None, *shape) to call
    layers on (cconv.Model(inputs, outputs)), or the first item of a Sequential."""
    return InputLayer(shape, batch_size, dtype, sparse, batch_shape, name, tensor,
                      optional).output


def _weights_config(layer):
    """The part of Keras's config that Conv2D and Dense share: bias and initializers, and
    the regularizers and constraints cconv does not have."""
    return {"use_bias": layer.use_bias,
            "kernel_initializer": initializers.serialize(layer.kernel_initializer),
            "bias_initializer": initializers.serialize(layer.bias_initializer),
            "kernel_regularizer": None, "bias_regularizer": None,
            "activity_regularizer": None, "kernel_constraint": None, "bias_constraint": None}


class Conv2D(Layer):
    """2-D convolution, channels-last: (H, W, C) -> (OH, OW, filters), as in Keras.

    kernel_size is an int or (KH, KW); strides and dilation_rate are ints or pairs (not
    both above 1, as in Keras); padding is "valid" (no padding: OH = floor((H - span) /
    SH) + 1, span = (KH - 1) * DH + 1) or "same" (OH = ceil(H / SH), zeros around the
    image, any odd one at the bottom and right)."""

    weight_names = ("kernel", "bias")
    KERAS_FIXED = {"data_format": "channels_last", "groups": 1}
    _scratch_attrs = ("_buffers",)

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid",
                 data_format=None, dilation_rate=(1, 1), groups=1, activation=None,
                 use_bias=True, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 name=None, *, input_shape=None, input_dim=None, trainable=True):
        super().__init__(name, input_shape=input_shape, input_dim=input_dim,
                         trainable=trainable)
        self.filters = _positive_int("filters", filters)
        self.kernel_size = _pair("kernel_size", kernel_size)
        self.strides, self.dilation_rate = ops.conv.conv_steps(
            _pair("strides", strides), _pair("dilation_rate", dilation_rate))
        if padding not in ops.PADDINGS:
            raise ValueError(f"padding: expected one of {ops.PADDINGS}, got {padding!r}")
        self.padding = padding
        _data_format("Conv2D", data_format)
        if groups != 1:
            raise ValueError(f"Conv2D: groups={groups!r} is not supported by cconv (only 1)")
        self.use_bias = bool(use_bias)
        self.activation = _Act(activation)
        self.kernel_initializer = _initializer("kernel_initializer", kernel_initializer)
        self.bias_initializer = _initializer("bias_initializer", bias_initializer)
        self._buffers = threading.local()

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": list(self.kernel_size), "strides": list(self.strides),
                "padding": self.padding, "dilation_rate": list(self.dilation_rate),
                "activation": self.activation.name, **_weights_config(self)}

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"Conv2D: expected input of shape (height, width, channels), got "
                             f"{input_shape}; for grey images add a channel axis, "
                             f"e.g. x[..., None]")
        kh, kw = self.kernel_size
        h, w, c = input_shape
        dh, dw = self.dilation_rate
        if self.padding == "valid" and (h < (kh - 1) * dh + 1 or w < (kw - 1) * dw + 1):
            dilated = "" if self.dilation_rate == (1, 1) else \
                f" dilated by {self.dilation_rate}"
            raise ValueError(f"Conv2D: kernel_size {self.kernel_size}{dilated} is larger "
                             f"than the {h}x{w} input with padding='valid'")
        _, oh, ow, f = ops.conv_output_shape((1, h, w, c), (kh, kw, c, self.filters),
                                             self.padding, self.strides, self.dilation_rate)
        return (oh, ow, f)

    def weight_shapes(self, input_shape):
        kh, kw = self.kernel_size
        shapes = {"kernel": (kh, kw, input_shape[2], self.filters)}
        if self.use_bias:
            shapes["bias"] = (self.filters,)
        return shapes

    def build(self, input_shape, dtype, rng):
        super().build(input_shape, dtype, rng)
        self._init_weights(rng)

    def forward(self, x, training=False, rng=None):
        # The kernel applies an elementwise activation in place, except in training
        # where its gradient needs its input, which the layer must keep.
        if not self.activation.elementwise or (training and not self.activation.fused):
            return super().forward(x, training, rng)
        y = self._conv(x, training, self.activation.name)
        if training:
            self.saved["y"] = y
        return y

    def forward_linear(self, x, training=False, rng=None):
        return self._conv(x, training, None)

    def _conv(self, x, training, activation):
        """The convolution into this thread's output array, reused while the batch shape
        stays the same: a layer's output lives only until the model's next forward pass
        (the model copies what it returns), and each thread has its own, so concurrent
        predicts are safe."""
        if training:
            self.saved["x"] = x
        out = reused(self._buffers, "out", (len(x),) + self.output_shape, self.dtype,
                     f"{self.name} output")
        return ops.conv2d(x, self.params["kernel"], self.params.get("bias"), self.padding,
                          activation, out=out, strides=self.strides,
                          dilation_rate=self.dilation_rate)

    def backward_linear(self, grad):
        grad_x, grad_w, grad_b = ops.conv2d_backward(
            self.saved["x"], self.params["kernel"], grad, self.padding, self.need_input_grad,
            strides=self.strides, dilation_rate=self.dilation_rate)
        self.grads["kernel"] = grad_w
        if self.use_bias:
            self.grads["bias"] = grad_b
        return grad_x


class Dense(Layer):
    """Fully connected on the last axis, as in Keras: (..., D) -> (..., units). A flat
    input (D,) is the usual case; on (d1, ..., D) every row of D features goes through
    the same weights (Flatten() before it instead mixes them all)."""

    weight_names = ("kernel", "bias")

    def __init__(self, units, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", name=None, *,
                 input_shape=None, input_dim=None, trainable=True):
        super().__init__(name, input_shape=input_shape, input_dim=input_dim,
                         trainable=trainable)
        self.units = _positive_int("units", units)
        self.use_bias = bool(use_bias)
        self.activation = _Act(activation)
        self.kernel_initializer = _initializer("kernel_initializer", kernel_initializer)
        self.bias_initializer = _initializer("bias_initializer", bias_initializer)

    def get_config(self):
        return {**super().get_config(), "units": self.units,
                "activation": self.activation.name, **_weights_config(self)}

    def compute_output_shape(self, input_shape):
        if len(input_shape) < 1:
            raise ValueError(f"Dense: expected an input of shape (..., features), got "
                             f"{input_shape}")
        return tuple(input_shape[:-1]) + (self.units,)

    def weight_shapes(self, input_shape):
        shapes = {"kernel": (input_shape[-1], self.units)}
        if self.use_bias:
            shapes["bias"] = (self.units,)
        return shapes

    def build(self, input_shape, dtype, rng):
        super().build(input_shape, dtype, rng)
        self._init_weights(rng)

    # Above rank 2, the rows of the last axis are a batch of N * d1 * ... rows for the
    # flat ops (a reshape, no copy for a contiguous x), and saved["x"] keeps that 2-D view.
    def forward_linear(self, x, training=False, rng=None):
        rows = x if x.ndim == 2 else x.reshape(-1, x.shape[-1])
        if training:
            self.saved["x"] = rows
        out = ops.dense(rows, self.params["kernel"], self.params.get("bias"))
        return out if x.ndim == 2 else out.reshape(x.shape[:-1] + (self.units,))

    def backward_linear(self, grad):
        rows = grad if grad.ndim == 2 else grad.reshape(-1, self.units)
        grad_x, grad_w, grad_b = ops.dense_backward(self.saved["x"], self.params["kernel"],
                                                    rows, self.need_input_grad)
        self.grads["kernel"] = grad_w
        if self.use_bias:
            self.grads["bias"] = grad_b
        if grad_x is not None and grad.ndim != 2:
            grad_x = grad_x.reshape(grad.shape[:-1] + (grad_x.shape[1],))
        return grad_x


class Activation(Layer):
    """Activation(name): any activation of cconv.activations (by its Keras name, an
    alias, or one of that module's functions); softmax acts on the last axis."""

    def __init__(self, activation, name=None, *,
                 input_shape=None, input_dim=None, trainable=True):
        super().__init__(name, input_shape=input_shape, input_dim=input_dim,
                         trainable=trainable)
        self.activation = _Act(activation)

    def get_config(self):
        return {**super().get_config(), "activation": self.activation.name}


class _OptionsActivation(Layer):
    """A layer that applies one activation with Keras's options. Where the options are
    a row of cconv.activations' table (ReLU(), ReLU(max_value=6), LeakyReLU(0.2),
    ELU(), Softmax()), the layer holds that row as its `activation`, which the kernels
    and cconv.fusion know; other options run the layer's own op (`_op`), whose backward
    pass reads the saved input (or, for softmax, output)."""

    KERAS_BUILD_CONFIG = False  # Keras builds these at construction

    def __init__(self, name, input_shape, input_dim, trainable):
        super().__init__(name, input_shape=input_shape, input_dim=input_dim,
                         trainable=trainable)
        row = self._row()
        self.activation = None if row is None else _Act(row)

    def forward_linear(self, x, training=False, rng=None):
        if self.activation is not None:
            return x
        y = self._op(x)
        if training:
            self.saved["x"], self.saved["y"] = x, y
        return y

    def backward_linear(self, grad):
        if self.activation is not None:
            return grad
        return self._op_backward(grad)


class ReLU(_OptionsActivation):
    """keras.layers.ReLU: min(x, max_value) where x > threshold, else
    negative_slope * (x - threshold); max_value None caps nothing."""

    def __init__(self, max_value=None, negative_slope=0.0, threshold=0.0, name=None, *,
                 input_shape=None, input_dim=None, trainable=True):
        self.negative_slope, cap, self.threshold = ops.elementwise.check_relu_options(
            negative_slope, max_value, threshold)
        self.max_value = None if max_value is None else cap
        super().__init__(name, input_shape, input_dim, trainable)

    def _row(self):
        if self.negative_slope == 0 and self.threshold == 0:
            return {None: "relu", 6.0: "relu6"}.get(self.max_value)
        return None

    def _options(self):
        return self.negative_slope, self.max_value, self.threshold

    def _op(self, x):
        return ops.relu_general(x, *self._options())

    def _op_backward(self, grad):
        return ops.relu_general_backward(self.saved["x"], grad, *self._options())

    def get_config(self):
        return {**super().get_config(), "max_value": self.max_value,
                "negative_slope": self.negative_slope, "threshold": self.threshold}


class LeakyReLU(ReLU):
    """keras.layers.LeakyReLU: x where x >= 0, else negative_slope * x (Keras's default
    slope here is 0.3; the leaky_relu activation's is 0.2). `alpha` is Keras's older
    name for negative_slope."""

    def __init__(self, negative_slope=0.3, name=None, *, alpha=None, input_shape=None,
                 input_dim=None, trainable=True):
        if alpha is not None:
            warnings.warn("LeakyReLU: alpha is deprecated; use negative_slope", stacklevel=2)
            negative_slope = alpha
        super().__init__(None, negative_slope, 0.0, name, input_shape=input_shape,
                         input_dim=input_dim, trainable=trainable)

    def _row(self):
        return "leaky_relu" if self.negative_slope == activations.LEAKY_SLOPE else None

    def get_config(self):
        config = super().get_config()
        for key in ("max_value", "threshold"):
            del config[key]
        return config


class ELU(_OptionsActivation):
    """keras.layers.ELU: x where x > 0, else alpha * (exp(x) - 1)."""

    def __init__(self, alpha=1.0, name=None, *, input_shape=None, input_dim=None,
                 trainable=True):
        self.alpha = ops.elementwise.check_alpha(alpha)
        super().__init__(name, input_shape, input_dim, trainable)

    def _row(self):
        return "elu" if self.alpha == 1.0 else None

    def _op(self, x):
        return ops.elu(x, self.alpha)

    def _op_backward(self, grad):
        return ops.elu_backward(self.saved["x"], grad, self.alpha)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}


class Softmax(_OptionsActivation):
    """keras.layers.Softmax over `axis` (an int or a list of ints, counting the batch
    axis as Keras does; not the batch axis itself, whose softmax would depend on how
    predict splits the data). Softmax() at the end of a model is folded into the
    cross-entropy as an Activation("softmax") is."""

    def __init__(self, axis=-1, name=None, *, input_shape=None, input_dim=None,
                 trainable=True):
        many = isinstance(axis, (tuple, list))
        items = list(axis) if many else [axis]
        if not items or not all(isinstance(a, numbers.Integral) and not isinstance(a, bool)
                                for a in items):
            raise TypeError(f"axis: expected an int or a non-empty list of ints, got "
                            f"{axis!r}")
        self.axis = [int(a) for a in items] if many else int(axis)
        super().__init__(name, input_shape, input_dim, trainable)

    def _row(self):
        return "softmax" if self.axis in (-1, [-1]) else None

    def compute_output_shape(self, input_shape):
        rank = len(input_shape) + 1
        for a in self.axis if isinstance(self.axis, list) else [self.axis]:
            if not -rank <= a < rank:
                raise ValueError(f"Softmax: axis {a} is out of range for inputs of "
                                 f"{rank} dimensions (batch included)")
            if a % rank == 0:
                raise ValueError(f"Softmax: axis {a} is the batch axis; cconv refuses a "
                                 f"softmax across samples (it would depend on how predict "
                                 f"splits the data)")
        return input_shape

    def _op(self, x):
        return ops.softmax(x, self.axis)

    def _op_backward(self, grad):
        return ops.softmax_backward(self.saved["y"], grad, self.axis)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


class Dropout(Layer):
    """During training, zero each input with probability `rate` and scale the rest by
    1 / (1 - rate); at inference, pass inputs through unchanged."""

    def __init__(self, rate, name=None, *,
                 input_shape=None, input_dim=None, trainable=True):
        super().__init__(name, input_shape=input_shape, input_dim=input_dim,
                         trainable=trainable)
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
            raise TypeError(f"rate: expected a float in [0, 1), got {type(rate).__name__}")
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"rate: expected a float in [0, 1), got {rate}")
        self.rate = float(rate)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": None, "noise_shape": None}

    def forward_linear(self, x, training=False, rng=None):
        if not training:
            return x
        if self.rate == 0.0:
            self.saved["mask"] = None
            return x
        y, self.saved["mask"] = ops.dropout(x, self.rate, seed=int(rng.integers(0, 2**63)))
        return y

    def backward_linear(self, grad):
        if self.saved["mask"] is None:
            return grad
        return ops.dropout_backward(grad, self.saved["mask"], self.rate)


class Flatten(Layer):
    """(d1, d2, ...) -> (d1 * d2 * ...,)."""

    KERAS_FIXED = {"data_format": "channels_last"}

    def __init__(self, name=None, *, input_shape=None, input_dim=None, trainable=True):
        super().__init__(name, input_shape=input_shape, input_dim=input_dim,
                         trainable=trainable)

    def compute_output_shape(self, input_shape):
        return (int(np.prod(input_shape)),)

    def forward_linear(self, x, training=False, rng=None):
        return x.reshape(x.shape[0], -1)

    def backward_linear(self, grad):
        return grad.reshape((grad.shape[0],) + self.input_shape)


class _Pooling2D(Layer):
    """Spatial pooling, channels-last: (H, W, C) -> (OH, OW, C), as in Keras.

    pool_size is an int or (PH, PW); strides too, by default pool_size (windows side by
    side). padding "valid" keeps whole windows only (OH = floor((H - PH) / SH) + 1);
    "same" pads so that every pixel is in a window (OH = ceil(H / SH)), and the padding
    never takes part (it never wins a max, and an average counts only the pixels in the
    image)."""

    KERAS_FIXED = {"data_format": "channels_last"}
    KERAS_BUILD_CONFIG = False  # Keras builds it at construction
    _scratch_attrs = ("_buffers",)

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None,
                 name=None, *, input_shape=None, input_dim=None, trainable=True):
        super().__init__(name, input_shape=input_shape, input_dim=input_dim,
                         trainable=trainable)
        self.pool_size = _pair("pool_size", pool_size)
        self.strides = self.pool_size if strides is None else _pair("strides", strides)
        if not isinstance(padding, str) or padding not in ops.PADDINGS:
            raise ValueError(f"padding: expected one of {ops.PADDINGS}, got {padding!r}")
        self.padding = padding
        _data_format(type(self).__name__, data_format)
        self._buffers = threading.local()

    def get_config(self):
        return {**super().get_config(), "pool_size": list(self.pool_size),
                "padding": self.padding, "strides": list(self.strides)}

    def compute_output_shape(self, input_shape):
        label = type(self).__name__
        if len(input_shape) != 3:
            raise ValueError(f"{label}: expected input of shape (height, width, "
                             f"channels), got {input_shape}")
        h, w, c = input_shape
        ph, pw = self.pool_size
        if self.padding == "valid" and (h < ph or w < pw):
            raise ValueError(f"{label}: pool_size {self.pool_size} is larger than the "
                             f"{h}x{w} input with padding='valid'")
        return ops.pool_output_shape((1, h, w, c), self.pool_size, self.padding,
                                     self.strides)[1:]

    def _grad_out(self):
        """This thread's array for the gradient wrt the input."""
        return reused(self._buffers, "grad_x", self.saved["x_shape"], self.dtype)


class MaxPooling2D(_Pooling2D):
    """The max of each window; its gradient goes to the first maximum in row-major order
    (on a tie), added up where overlapping windows share one."""

    def forward_linear(self, x, training=False, rng=None):
        # The output buffer is reused like Conv2D's; it lives until the next forward pass.
        shape = (len(x),) + self.output_shape
        out = reused(self._buffers, "out", shape, self.dtype)
        argmax = reused(self._buffers, "argmax", shape, np.int32) if training else None
        y, argmax = ops.max_pool2d(x, self.pool_size, self.padding, need_argmax=training,
                                   out=out, out_argmax=argmax, strides=self.strides)
        if training:
            self.saved["argmax"], self.saved["x_shape"] = argmax, x.shape
        return y

    def backward_linear(self, grad):
        return ops.max_pool2d_backward(grad, self.saved["argmax"], self.saved["x_shape"],
                                       self.pool_size, self.padding, out=self._grad_out(),
                                       strides=self.strides)


class AveragePooling2D(_Pooling2D):
    """The mean of each window, over its pixels inside the image."""

    def __init__(self, pool_size, strides=None, padding="valid", data_format=None,
                 name=None, *, input_shape=None, input_dim=None, trainable=True):
        # pool_size has no default, as in Keras
        super().__init__(pool_size, strides, padding, data_format, name,
                         input_shape=input_shape, input_dim=input_dim, trainable=trainable)

    def forward_linear(self, x, training=False, rng=None):
        out = reused(self._buffers, "out", (len(x),) + self.output_shape, self.dtype)
        if training:
            self.saved["x_shape"] = x.shape
        return ops.avg_pool2d(x, self.pool_size, self.padding, strides=self.strides, out=out)

    def backward_linear(self, grad):
        return ops.avg_pool2d_backward(grad, self.saved["x_shape"], self.pool_size,
                                       self.padding, strides=self.strides,
                                       out=self._grad_out())


class KernelPooling(Layer):
    """Pooling across kernels rather than across space: (..., F) -> (..., 1).

    The idea comes from the convolution chapter of Grokking Deep Learning. A layer of F
    kernels leaves F prediction maps, one per kernel, each as large as the image
    positions it scanned. Instead of handing all F maps to the next layer, combine them
    into a single map by looking, at every position, at the F kernels' outputs there:
    add them ("sum"), average them ("mean"), or keep only the strongest ("max", the
    usual choice). Only that one map goes on. With "max", the gradient flows back only
    to the kernel that won at each position (the first, on a tie)."""

    def __init__(self, mode="max", name=None, *,
                 input_shape=None, input_dim=None, trainable=True):
        super().__init__(name, input_shape=input_shape, input_dim=input_dim,
                         trainable=trainable)
        if not isinstance(mode, str) or mode not in ops.KERNEL_POOL_MODES:
            raise ValueError(f"mode: expected one of {list(ops.KERNEL_POOL_MODES)}, "
                             f"got {mode!r}")
        self.mode = mode

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}

    def compute_output_shape(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(f"KernelPooling: expected input with positions and kernels, "
                             f"e.g. (height, width, kernels), got {input_shape}")
        return tuple(input_shape[:-1]) + (1,)

    def forward_linear(self, x, training=False, rng=None):
        if training:
            self.saved["x"] = x
        return ops.kernel_pool(x, self.mode)

    def backward_linear(self, grad):
        return ops.kernel_pool_backward(self.saved["x"], grad, self.mode)


def _data_format(layer, data_format):
    """Keras's data_format argument: None (Keras's default, channels_last) or
    "channels_last"; cconv's layout is channels-last only."""
    if data_format not in (None, "channels_last"):
        raise ValueError(f"{layer}: data_format={data_format!r} is not supported by cconv "
                         f"(only 'channels_last': images (height, width, channels))")


def _image_shape(layer, input_shape):
    if len(input_shape) != 3:
        raise ValueError(f"{layer}: expected input of shape (height, width, channels), got "
                         f"{input_shape}")
    return input_shape


class Rescaling(Layer):
    """y = x * scale + offset, as keras.layers.Rescaling (e.g. Rescaling(1 / 255) for pixel
    values). scale and offset are numbers, or one per channel of the last axis; they are
    cast to the model's dtype before use, as Keras casts them to the layer's."""

    def __init__(self, scale, offset=0.0, name=None, *,
                 input_shape=None, input_dim=None, trainable=True):
        super().__init__(name, input_shape=input_shape, input_dim=input_dim,
                         trainable=trainable)
        self.scale = ops.spatial.check_factor("scale", scale)
        self.offset = ops.spatial.check_factor("offset", offset)

    def get_config(self):
        plain = lambda v: list(v) if isinstance(v, tuple) else v
        return {**super().get_config(), "scale": plain(self.scale),
                "offset": plain(self.offset)}

    def compute_output_shape(self, input_shape):
        for arg in ("scale", "offset"):
            value = getattr(self, arg)
            if isinstance(value, tuple) and (not input_shape or input_shape[-1] != len(value)):
                raise ValueError(f"Rescaling: {arg} has {len(value)} values (one per channel) "
                                 f"but the input's shape is {tuple(input_shape)}")
        return input_shape

    def forward_linear(self, x, training=False, rng=None):
        return ops.rescale(x, self.scale, self.offset)

    def backward_linear(self, grad):
        return ops.rescale_backward(grad, self.scale)


class Reshape(Layer):
    """(d1, d2, ...) -> target_shape, as keras.layers.Reshape: the same values in the same
    (row-major) order; one entry of target_shape may be -1, inferred from the others."""

    KERAS_BUILD_CONFIG = False  # Keras builds it at construction

    def __init__(self, target_shape, name=None, *,
                 input_shape=None, input_dim=None, trainable=True):
        super().__init__(name, input_shape=input_shape, input_dim=input_dim,
                         trainable=trainable)
        if not isinstance(target_shape, (tuple, list)):
            raise TypeError(f"target_shape: expected a tuple of positive ints (and at most "
                            f"one -1), got {target_shape!r}")
        for d in target_shape:
            if isinstance(d, bool) or not isinstance(d, numbers.Integral):
                raise TypeError(f"target_shape: expected a tuple of positive ints (and at "
                                f"most one -1), got {target_shape!r}")
            if d == 0 or d < -1:
                raise ValueError(f"target_shape: expected positive ints (and at most one "
                                 f"-1), got {tuple(target_shape)!r}")
        if list(target_shape).count(-1) > 1:
            raise ValueError(f"target_shape: at most one -1 may be inferred, got "
                             f"{tuple(target_shape)!r}")
        self.target_shape = tuple(int(d) for d in target_shape)

    def get_config(self):
        return {**super().get_config(), "target_shape": list(self.target_shape)}

    def compute_output_shape(self, input_shape):
        size = int(np.prod(input_shape))
        known = int(np.prod([d for d in self.target_shape if d != -1]))
        if -1 in self.target_shape:
            if known == 0 or size % known:
                raise ValueError(f"Reshape: target_shape {self.target_shape} cannot hold an "
                                 f"input of shape {tuple(input_shape)} ({size} values: not a "
                                 f"multiple of {known})")
            return tuple(size // known if d == -1 else d for d in self.target_shape)
        if known != size:
            raise ValueError(f"Reshape: target_shape {self.target_shape} holds {known} values, "
                             f"the input of shape {tuple(input_shape)} has {size}")
        return self.target_shape

    def forward_linear(self, x, training=False, rng=None):
        return x.reshape((x.shape[0],) + self.output_shape)

    def backward_linear(self, grad):
        return grad.reshape((grad.shape[0],) + self.input_shape)


class ZeroPadding2D(Layer):
    """Zero rows and columns around each image, channels-last, as keras.layers.ZeroPadding2D:
    padding is an int (every side), a pair (symmetric height, width padding) or
    ((top, bottom), (left, right))."""

    KERAS_FIXED = {"data_format": "channels_last"}

    def __init__(self, padding=(1, 1), data_format=None, name=None, *, input_shape=None,
                 input_dim=None, trainable=True):
        super().__init__(name, input_shape=input_shape, input_dim=input_dim,
                         trainable=trainable)
        _data_format("ZeroPadding2D", data_format)
        self.padding = ops.pad_widths(padding)

    def get_config(self):
        return {**super().get_config(), "padding": [list(p) for p in self.padding]}

    def compute_output_shape(self, input_shape):
        h, w, c = _image_shape("ZeroPadding2D", input_shape)
        (top, bottom), (left, right) = self.padding
        return (top + h + bottom, left + w + right, c)

    def forward_linear(self, x, training=False, rng=None):
        return ops.zero_pad2d(x, self.padding)

    def backward_linear(self, grad):
        return ops.zero_pad2d_backward(grad, (grad.shape[0],) + self.input_shape, self.padding)


class _GlobalPooling2D(Layer):
    """Pools each channel over the whole image, channels-last: (H, W, C) -> (C,), or
    (1, 1, C) with keepdims=True."""

    KERAS_FIXED = {"data_format": "channels_last"}
    KERAS_BUILD_CONFIG = False  # Keras builds it at construction

    def __init__(self, data_format=None, keepdims=False, name=None, *, input_shape=None,
                 input_dim=None, trainable=True):
        super().__init__(name, input_shape=input_shape, input_dim=input_dim,
                         trainable=trainable)
        _data_format(type(self).__name__, data_format)
        if not isinstance(keepdims, (bool, np.bool_)):
            raise TypeError(f"keepdims: expected True or False, got {keepdims!r}")
        self.keepdims = bool(keepdims)

    def get_config(self):
        return {**super().get_config(), "keepdims": self.keepdims}

    def compute_output_shape(self, input_shape):
        h, w, c = _image_shape(type(self).__name__, input_shape)
        return (1, 1, c) if self.keepdims else (c,)

    def _out(self, y):
        return y.reshape((y.shape[0],) + self.output_shape)

    def _grad(self, grad):
        return grad.reshape(grad.shape[0], -1)


class GlobalAveragePooling2D(_GlobalPooling2D):
    """The mean of each channel over the image, as keras.layers.GlobalAveragePooling2D."""

    def forward_linear(self, x, training=False, rng=None):
        if training:
            self.saved["x_shape"] = x.shape
        return self._out(ops.global_avg_pool2d(x))

    def backward_linear(self, grad):
        return ops.global_avg_pool2d_backward(self._grad(grad), self.saved["x_shape"])


class GlobalMaxPooling2D(_GlobalPooling2D):
    """The max of each channel over the image, as keras.layers.GlobalMaxPooling2D. Its
    gradient goes to the first maximum in row-major order on a tie, as MaxPooling2D's
    (Keras on jax splits it between the tied pixels)."""

    def forward_linear(self, x, training=False, rng=None):
        y, argmax = ops.global_max_pool2d(x, need_argmax=training)
        if training:
            self.saved["argmax"], self.saved["x_shape"] = argmax, x.shape
        return self._out(y)

    def backward_linear(self, grad):
        return ops.global_max_pool2d_backward(self._grad(grad), self.saved["argmax"],
                                              self.saved["x_shape"])


class BatchNormalization(Layer):
    """Normalises each channel of the last axis, as keras.layers.BatchNormalization
    (axis=-1, channels-last; any input rank: after Conv2D (H, W, C), after Dense (units,)).

    In training it uses the batch's mean and biased variance over every other axis
    (ops.batch_norm) and moves the moving statistics toward them: moving = moving *
    momentum + batch * (1 - momentum). At inference (predict, evaluate, validation), and
    in training when the layer is frozen (trainable=False, Keras 3's rule), it uses the
    moving statistics and updates nothing. y = (x - mean) / sqrt(var + epsilon) * gamma
    + beta, without gamma when scale=False and beta when center=False. Weights, in
    Keras's order: gamma, beta (trainable), moving_mean, moving_variance (never
    trained)."""

    weight_names = ("gamma", "beta", "moving_mean", "moving_variance")
    non_trainable_names = ("moving_mean", "moving_variance")

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones",
                 moving_mean_initializer="zeros", moving_variance_initializer="ones",
                 beta_regularizer=None, gamma_regularizer=None, beta_constraint=None,
                 gamma_constraint=None, renorm=False, renorm_clipping=None,
                 renorm_momentum=0.99, synchronized=False, name=None, *, input_shape=None,
                 input_dim=None, trainable=True):
        super().__init__(name, input_shape=input_shape, input_dim=input_dim,
                         trainable=trainable)
        refused = {"beta_regularizer": beta_regularizer,
                   "gamma_regularizer": gamma_regularizer,
                   "beta_constraint": beta_constraint, "gamma_constraint": gamma_constraint,
                   "renorm": renorm or None, "renorm_clipping": renorm_clipping,
                   "synchronized": synchronized or None}
        given = {k: v for k, v in refused.items() if v is not None}
        if given:
            names = ", ".join(f"{k}={v!r}" for k, v in given.items())
            raise ValueError(f"BatchNormalization: {names} not supported by cconv (no "
                             f"regularizers, constraints, batch renormalization or "
                             f"cross-device statistics)")
        if isinstance(axis, (list, tuple)) and len(axis) == 1:
            axis = axis[0]
        if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
            raise ValueError(f"axis: expected an int (the channels' axis, -1), got {axis!r}")
        self.axis = int(axis)
        for arg, value in (("momentum", momentum), ("renorm_momentum", renorm_momentum)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                    or not np.isfinite(value):
                raise ValueError(f"{arg}: expected a float, got {value!r}")
        self.momentum = float(momentum)
        self.renorm_momentum = float(renorm_momentum)
        self.epsilon = ops.norm.check_epsilon(epsilon)
        for arg, value in (("center", center), ("scale", scale)):
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{arg}: expected True or False, got {value!r}")
        self.center, self.scale = bool(center), bool(scale)
        for key, value in (("beta_initializer", beta_initializer),
                           ("gamma_initializer", gamma_initializer),
                           ("moving_mean_initializer", moving_mean_initializer),
                           ("moving_variance_initializer", moving_variance_initializer)):
            setattr(self, key, _initializer(key, value))

    def get_config(self):
        config = {**super().get_config(), "axis": self.axis, "momentum": self.momentum,
                  "epsilon": self.epsilon, "center": self.center, "scale": self.scale}
        for key in ("beta_initializer", "gamma_initializer", "moving_mean_initializer",
                    "moving_variance_initializer"):
            config[key] = initializers.serialize(getattr(self, key))
        return {**config, "beta_regularizer": None, "gamma_regularizer": None,
                "beta_constraint": None, "gamma_constraint": None, "synchronized": False,
                "renorm": False, "renorm_clipping": None,
                "renorm_momentum": self.renorm_momentum}

    def compute_output_shape(self, input_shape):
        rank = len(input_shape) + 1  # Keras's axis counts the batch axis
        if self.axis not in (-1, rank - 1):
            raise ValueError(f"BatchNormalization: axis={self.axis} is not supported by "
                             f"cconv (only the last axis, -1, channels-last; the input has "
                             f"shape {(None, *input_shape)})")
        return input_shape

    def weight_shapes(self, input_shape):
        keep = {"gamma": self.scale, "beta": self.center, "moving_mean": True,
                "moving_variance": True}
        return {k: (input_shape[-1],) for k in self.weight_names if keep[k]}

    def build(self, input_shape, dtype, rng):
        super().build(input_shape, dtype, rng)
        self._init_weights(rng)

    def forward_linear(self, x, training=False, rng=None):
        p = self.params
        if training and self.trainable:
            y, mean, var = ops.batch_norm(x, p.get("gamma"), p.get("beta"), self.epsilon)
            self.saved["moving"] = (mean.astype(self.dtype), var.astype(self.dtype))
        else:
            y = ops.batch_norm_inference(x, p["moving_mean"], p["moving_variance"],
                                         p.get("gamma"), p.get("beta"), self.epsilon)
            mean = var = None
        if training:
            self.saved["x"], self.saved["mean"], self.saved["var"] = x, mean, var
            if mean is None:  # frozen: no update, not even one left by an earlier pass
                self.saved.pop("moving", None)
        return y

    def update_state(self):
        batch = self.saved.pop("moving", None)
        if batch is not None:
            # as Keras, in the weights' dtype: moving * momentum + batch * (1 - momentum),
            # from the moving statistics as they are now (a layer called twice in a
            # model blends twice, in call order, as Keras's does)
            keep = self.dtype.type(self.momentum)
            take = self.dtype.type(1.0 - self.momentum)
            p = self.params
            p["moving_mean"] = p["moving_mean"] * keep + batch[0] * take
            p["moving_variance"] = p["moving_variance"] * keep + batch[1] * take

    def backward_linear(self, grad):
        p, batch = self.params, self.saved["mean"] is not None
        mean, var = (self.saved["mean"], self.saved["var"]) if batch else \
            (p["moving_mean"], p["moving_variance"])
        grad_x, grad_gamma, grad_beta = ops.batch_norm_backward(
            self.saved["x"], grad, mean, var, p.get("gamma"), self.epsilon,
            self.need_input_grad, batch_statistics=batch)
        if self.scale:
            self.grads["gamma"] = grad_gamma
        if self.center:
            self.grads["beta"] = grad_beta
        return grad_x


# The classes a config may name, by Keras's class name; cconv's own under "cconv.layers".
KERAS_LAYERS = {cls.__name__: cls for cls in (Conv2D, Dense, Activation, Dropout, Flatten,
                                              MaxPooling2D, AveragePooling2D, Rescaling,
                                              Reshape, ZeroPadding2D,
                                              GlobalAveragePooling2D, GlobalMaxPooling2D,
                                              ReLU, LeakyReLU, ELU, Softmax,
                                              BatchNormalization)}
CCONV_LAYERS = {"KernelPooling": KernelPooling}
# Keras's other spellings of the same layer
KERAS_LAYERS["MaxPool2D"] = MaxPooling2D
KERAS_LAYERS["AvgPool2D"] = AveragePooling2D
KERAS_LAYERS["Convolution2D"] = Conv2D
KERAS_LAYERS["GlobalAvgPool2D"] = GlobalAveragePooling2D
KERAS_LAYERS["GlobalMaxPool2D"] = GlobalMaxPooling2D


# ---- merge layers: a list of inputs, one output --------------------------------------
class _Merge(Layer):
    """Base of the layers that merge several inputs into one, as Keras's merging layers.

    The protocol the model's graph calls them by (MULTI_INPUT = True): compute_output_shape
    and build take a list of per-sample shapes, one per input (input_shape is then a tuple
    of them); forward and forward_linear take the list of batch arrays and return one
    array; backward and backward_linear return a list of gradients, one new array per
    input. The inputs must all have one shape (Concatenate: but along its axis): Keras's
    broadcasting of inputs whose shapes differ by 1s or by rank is refused."""

    MULTI_INPUT = True
    INPUTS = (1, None)  # the least and the most inputs Keras takes (None: any number)

    def __init__(self, name=None, *, trainable=True):
        super().__init__(name, trainable=trainable)

    def _label(self):
        return f"{type(self).__name__} {self.name!r}" if self.name else type(self).__name__

    def _count(self, what, items, received):
        least, most = self.INPUTS
        if least <= len(items) and (most is None or len(items) <= most):
            return
        expected = f"exactly {least}" if least == most else f"at least {least}"
        raise ValueError(f"{self._label()}: a `{type(self).__name__}` layer should be called "
                         f"on {expected} input{'s' * (least > 1)}, received {what}={received}")

    def _shapes(self, input_shapes):
        """input_shapes checked, as a list of tuples: one per-sample shape per input."""
        if not isinstance(input_shapes, (list, tuple)) or not all(
                isinstance(s, (list, tuple)) for s in input_shapes):
            raise ValueError(f"{self._label()}: a merge layer should be called on a list of "
                             f"inputs, received input_shape={input_shapes!r} (not a list of "
                             f"shapes)")
        shapes = [tuple(s) for s in input_shapes]
        self._count("input_shape", shapes, shapes)
        return shapes

    def compute_output_shape(self, input_shapes):
        shapes = self._shapes(input_shapes)
        if any(s != shapes[0] for s in shapes[1:]):
            raise ValueError(f"{self._label()}: inputs have incompatible shapes, received "
                             f"shapes {shapes} (cconv merges inputs of one shape; it does not "
                             f"broadcast them as Keras does)")
        return shapes[0]

    def build(self, input_shapes, dtype, rng):
        super().build(self._shapes(input_shapes), dtype, rng)

    def _inputs(self, xs):
        if not isinstance(xs, (list, tuple)):
            raise TypeError(f"{self._label()}: expected a list of input arrays, got "
                            f"{type(xs).__name__}")
        self._count("inputs", xs, f"{len(xs)} arrays")
        if self.built and len(xs) != len(self.input_shape):
            raise ValueError(f"{self._label()}: built for {len(self.input_shape)} inputs, "
                             f"received {len(xs)}")
        return list(xs)


class Add(_Merge):
    """The elementwise sum of its inputs, ((x0 + x1) + x2) + ..., as keras.layers.Add."""

    def forward_linear(self, xs, training=False, rng=None):
        return ops.add(self._inputs(xs))

    def backward_linear(self, grad):
        return ops.add_backward(grad, len(self.input_shape))


class Subtract(_Merge):
    """x0 - x1, as keras.layers.Subtract (exactly two inputs)."""

    INPUTS = (2, 2)

    def forward_linear(self, xs, training=False, rng=None):
        return ops.subtract(*self._inputs(xs))

    def backward_linear(self, grad):
        return ops.subtract_backward(grad)


class Multiply(_Merge):
    """The elementwise product of its inputs, ((x0 * x1) * x2) * ..., as
    keras.layers.Multiply."""

    def forward_linear(self, xs, training=False, rng=None):
        xs = self._inputs(xs)
        if training:
            self.saved["xs"] = xs
        return ops.multiply(xs)

    def backward_linear(self, grad):
        return ops.multiply_backward(self.saved["xs"], grad)


class Average(_Merge):
    """The elementwise mean of its inputs, their sum (left to right) divided by their
    count, as keras.layers.Average."""

    def forward_linear(self, xs, training=False, rng=None):
        return ops.average(self._inputs(xs))

    def backward_linear(self, grad):
        return ops.average_backward(grad, len(self.input_shape))


class Maximum(_Merge):
    """The elementwise maximum of its inputs, as keras.layers.Maximum. Its gradient goes
    to the first input holding the maximum on a tie (Keras on jax splits it between the
    tied inputs), as MaxPooling2D's goes to the first maximum of its window."""

    def forward_linear(self, xs, training=False, rng=None):
        xs = self._inputs(xs)
        if training:
            self.saved["xs"] = xs
        return ops.maximum(xs)

    def backward_linear(self, grad):
        return ops.maximum_backward(self.saved["xs"], grad)


class Concatenate(_Merge):
    """Its inputs joined along `axis`, as keras.layers.Concatenate: the axis counts the
    batch axis, as Keras's (-1, the last, by default; 0, the batch axis, is refused), and
    the inputs match on every other axis."""

    def __init__(self, axis=-1, name=None, *, trainable=True):
        super().__init__(name, trainable=trainable)
        if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
            raise TypeError(f"axis: expected an int, got {type(axis).__name__} {axis!r}")
        self.axis = int(axis)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}

    def _sample_axis(self, rank):
        """self.axis as an axis of one sample's shape, of `rank` dimensions."""
        if not -(rank + 1) <= self.axis <= rank:
            raise ValueError(f"{self._label()}: axis={self.axis} is out of range for inputs "
                             f"of {rank + 1} dimensions (the batch axis included)")
        if self.axis % (rank + 1) == 0:
            raise ValueError(f"{self._label()}: axis={self.axis} is the batch axis; cconv "
                             f"concatenates along the axes of a sample")
        return self.axis % (rank + 1) - 1

    def compute_output_shape(self, input_shapes):
        shapes = self._shapes(input_shapes)
        mismatch = ValueError(
            f"{self._label()}: a `Concatenate` layer requires inputs with matching shapes "
            f"except for the concatenation axis, received input_shape="
            f"{[(None, *s) for s in shapes]} (axis={self.axis})")
        if len({len(s) for s in shapes}) != 1:
            raise mismatch
        axis = self._sample_axis(len(shapes[0]))
        others = {s[:axis] + s[axis + 1:] for s in shapes}
        if len(others) != 1:
            raise mismatch
        out = list(shapes[0])
        out[axis] = sum(s[axis] for s in shapes)
        return tuple(out)

    def forward_linear(self, xs, training=False, rng=None):
        return ops.concatenate(self._inputs(xs), self.axis)

    def backward_linear(self, grad):
        return ops.concatenate_backward(grad, [(grad.shape[0], *s) for s in self.input_shape],
                                        self.axis)


KERAS_LAYERS.update({cls.__name__: cls for cls in (Add, Subtract, Multiply, Average, Maximum,
                                                   Concatenate)})
