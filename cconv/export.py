"""ONNX export: a model's inference pass as a standard ONNX graph, for onnxruntime and
the other ONNX runtimes.

The core, export_graph, takes a graph description, not a model: its inputs (tensor
name, one sample's shape), its nodes (layer, input tensor names, output tensor name)
in topological order, and its outputs (tensor names). A layer may appear in several
nodes (shared weights, stored once in the file). A model describes its graph that way
(cconv.model's _graph_description: a Sequential's chain or a functional graph).

Each layer class has one export rule in RULES (by class name), each activation one in
ACTIVATIONS (by cconv.activations' names); tests/test_onnx.py walks every layer class
and every row of the activation table and fails on one without a rule. The rules
export what the layers compute at inference: Dropout is the identity, BatchNormalization
uses its moving statistics, and a run that cconv.fusion fuses exports as its plain
layers, one after the other.

The file keeps cconv's layout: images are (batch, height, width, channels) going in and
coming out; the convolutions and poolings, which ONNX defines on (batch, channels,
height, width), are wrapped in two Transposes that onnxruntime's optimizer merges away
between consecutive ones. The batch axis is dynamic ("batch"). The 'same' paddings
are written out as explicit pads, computed from the sample's shape by cconv.ops's own
window geometry (any odd pixel at the bottom and right, as Keras), never left to a
runtime's auto_pad.

Opset OPSET (18): the lowest with every operator this module writes (Mish is new in
18, and the reductions take their axes as an input there), old enough that
onnxruntime has run it since version 1.14 (2023).

The `onnx` package is imported only here, when a graph is built (build_graph): cconv
needs it for export alone (pip install cconv[onnx]).
"""
import os

import numpy as np

from cconv import activations
from cconv.ops import _windows

OPSET = 18
FORMATS = ("onnx",)
# float64 is refused: onnxruntime's CPU provider (1.32) has no float64 Conv or
# AveragePool kernel, so a float64 convnet's file would not load there, and ONNX's own
# Celu takes float32 alone
DTYPES = ("float32",)


# ---- the graph being written ---------------------------------------------------------
class _Graph:
    """Nodes and weights of the ONNX graph being built, with fresh tensor names."""

    def __init__(self, onnx, dtype):
        self.onnx, self.dtype = onnx, np.dtype(dtype)
        self.nodes, self.initializers = [], []
        self.names = set()
        self.described = set()  # the description's tensors: inputs and nodes' outputs
        self._weights = {}  # (id(layer), weight name) -> initializer name

    def fresh(self, hint):
        hint = "tensor" if hint is None else str(hint)
        name, i = hint, 0
        while name in self.names:
            i += 1
            name = f"{hint}_{i}"
        self.names.add(name)
        return name

    def const(self, value, hint, dtype=None, key=None):
        """An initializer holding value (in the model's dtype unless given); the same key
        returns the same initializer (a shared layer's weights, stored once)."""
        if key is not None and key in self._weights:
            return self._weights[key]
        array = np.asarray(value, dtype=dtype or self.dtype)
        name = self.fresh(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        if key is not None:
            self._weights[key] = name
        return name

    def scalar(self, value, hint="constant"):
        return self.const(value, hint)

    def ints(self, values, hint):
        return self.const(np.asarray(values, dtype=np.int64), hint, dtype=np.int64)

    def node(self, op, inputs, hint, **attributes):
        """Add a node with one output; returns the output's name."""
        out = self.fresh(hint)
        self.nodes.append(self.onnx.helper.make_node(op, list(inputs), [out],
                                                     name=self.fresh(f"{out}/{op}"),
                                                     **attributes))
        return out

    def rename(self, name, target):
        """Make `name`, what a node's rules computed, appear as the described tensor
        `target`: the last node's own output is renamed; a tensor that is already
        described (an input, an earlier node's output) is copied by an Identity."""
        last = self.nodes[-1].output if self.nodes else None
        if last is not None and last[0] == name and name not in self.described:
            last[0] = target
        else:
            self.nodes.append(self.onnx.helper.make_node(
                "Identity", [name], [target], name=self.fresh(f"{target}/Identity")))


# ---- activations: one rule per row of cconv.activations' table -------------------------
def _unary(op, **attributes):
    return lambda g, x: g.node(op, [x], x, **attributes)


def _clip(low, high):
    return lambda g, x: g.node("Clip", [x, g.scalar(low), g.scalar(high)], x)


def _gelu(g, x):
    # x * Phi(x) = x / 2 * (1 + erf(x / sqrt(2))); ONNX's Gelu needs opset 20
    erf = g.node("Erf", [g.node("Mul", [x, g.scalar(np.sqrt(0.5))], x)], x)
    phi = g.node("Mul", [g.node("Add", [erf, g.scalar(1.0)], x), g.scalar(0.5)], x)
    return g.node("Mul", [x, phi], x)


def _silu(g, x):
    return g.node("Mul", [x, g.node("Sigmoid", [x], x)], x)


def _log_sigmoid(g, x):
    # -softplus(-x)
    return g.node("Neg", [g.node("Softplus", [g.node("Neg", [x], x)], x)], x)


def _tanh_shrink(g, x):
    return g.node("Sub", [x, g.node("Tanh", [x], x)], x)


def _squareplus(g, x):
    square = g.node("Mul", [x, x], x)
    root = g.node("Sqrt", [g.node("Add", [square, g.scalar(activations.SQUAREPLUS_B)], x)], x)
    return g.node("Mul", [g.node("Add", [x, root], x), g.scalar(0.5)], x)


def _sparse_plus(g, x):
    # (clip(x, -1, 1) + 1)^2 / 4 is 0 up to -1 and the parabola up to 1; x from there
    shifted = g.node("Add", [_clip(-1.0, 1.0)(g, x), g.scalar(1.0)], x)
    parabola = g.node("Mul", [g.node("Mul", [shifted, shifted], x), g.scalar(0.25)], x)
    return g.node("Where", [g.node("GreaterOrEqual", [x, g.scalar(1.0)], x), x, parabola], x)


ACTIVATIONS = {
    "linear": lambda g, x: x,
    "tanh": _unary("Tanh"),
    "relu": _unary("Relu"),
    "sigmoid": _unary("Sigmoid"),
    "softplus": _unary("Softplus"),
    "softsign": _unary("Softsign"),
    "elu": _unary("Elu", alpha=1.0),
    "selu": _unary("Selu", alpha=activations.SELU_ALPHA, gamma=activations.SELU_SCALE),
    "celu": _unary("Celu", alpha=1.0),
    "gelu": _gelu,
    "silu": _silu,
    "leaky_relu": _unary("LeakyRelu", alpha=activations.LEAKY_SLOPE),
    "relu6": _clip(0.0, 6.0),
    "hard_sigmoid": _unary("HardSigmoid", alpha=1 / 6, beta=0.5),
    "hard_silu": _unary("HardSwish"),
    "hard_tanh": _clip(-1.0, 1.0),
    "exponential": _unary("Exp"),
    "mish": _unary("Mish"),
    "log_sigmoid": _log_sigmoid,
    "tanh_shrink": _tanh_shrink,
    "squareplus": _squareplus,
    "sparse_plus": _sparse_plus,
    "softmax": _unary("Softmax", axis=-1),
}


def activation(g, name, x):
    """The activation `name` (a row of cconv.activations' table) of tensor x."""
    name = activations.canonical(name)
    if name not in ACTIVATIONS:
        raise ValueError(f"export: activation {name!r} has no ONNX export rule "
                         f"(cconv.export.ACTIVATIONS)")
    return ACTIVATIONS[name](g, x)


# ---- layers: one rule per layer class ------------------------------------------------
# A rule(g, layer, inputs, shapes) returns (output tensor, output's per-sample shape),
# given the input tensors' names and per-sample shapes; the layer's `activation`, if
# any, is applied after it by export_graph.
def _nchw(g, x, op, layer, hint, **attributes):
    """op (a convolution or a pooling) on the channels-last tensor x, through NCHW."""
    inputs = [g.node("Transpose", [x], hint, perm=[0, 3, 1, 2])]
    if op == "Conv":
        kernel = np.transpose(layer.params["kernel"], (3, 2, 0, 1))  # (F, C, KH, KW)
        inputs.append(g.const(kernel, f"{layer.name}/kernel", key=(id(layer), "kernel")))
        if layer.use_bias:
            inputs.append(g.const(layer.params["bias"], f"{layer.name}/bias",
                                  key=(id(layer), "bias")))
    y = g.node(op, inputs, hint, **attributes)
    return g.node("Transpose", [y], hint, perm=[0, 2, 3, 1])


def _pads(shape, window, strides, dilation, padding):
    """ONNX's pads [top, left, bottom, right] for a window sliding over (H, W, C)."""
    before, after = [], []
    for size, k, s, d in zip(shape[:2], window, strides, dilation):
        out = _windows.out_size(size, k, s, d, padding)
        total = max((out - 1) * s + _windows.span(k, d) - size, 0) if padding == "same" else 0
        top = _windows.pad_before(size, k, s, d, padding)
        before.append(top)
        after.append(total - top)
    return before + after


def _conv2d(g, layer, inputs, shapes):
    shape = shapes[0]
    y = _nchw(g, inputs[0], "Conv", layer, layer.name,
              kernel_shape=list(layer.kernel_size), strides=list(layer.strides),
              dilations=list(layer.dilation_rate),
              pads=_pads(shape, layer.kernel_size, layer.strides, layer.dilation_rate,
                         layer.padding))
    return y, layer.compute_output_shape(shape)


def _pooling(op):
    def rule(g, layer, inputs, shapes):
        shape = shapes[0]
        y = _nchw(g, inputs[0], op, layer, layer.name, kernel_shape=list(layer.pool_size),
                  strides=list(layer.strides),
                  pads=_pads(shape, layer.pool_size, layer.strides, (1, 1), layer.padding))
        return y, layer.compute_output_shape(shape)
    return rule


def _dense(g, layer, inputs, shapes):
    # MatMul broadcasts over any leading axes, as Dense does on (..., D)
    kernel = g.const(layer.params["kernel"], f"{layer.name}/kernel", key=(id(layer), "kernel"))
    y = g.node("MatMul", [inputs[0], kernel], layer.name)
    if layer.use_bias:
        bias = g.const(layer.params["bias"], f"{layer.name}/bias", key=(id(layer), "bias"))
        y = g.node("Add", [y, bias], layer.name)
    return y, layer.compute_output_shape(shapes[0])


def _identity(g, layer, inputs, shapes):
    return inputs[0], tuple(shapes[0])


def _flatten(g, layer, inputs, shapes):
    # row-major over the channels-last sample, as cconv's Flatten
    return g.node("Flatten", inputs, layer.name, axis=1), layer.compute_output_shape(shapes[0])


def _reshape(g, layer, inputs, shapes):
    shape = layer.compute_output_shape(shapes[0])
    target = g.ints([0, *shape], f"{layer.name}/shape")  # 0: the batch size, copied
    return g.node("Reshape", [inputs[0], target], layer.name), shape


def _rescaling(g, layer, inputs, shapes):
    # two roundings, as ops.rescale: never a fused multiply-add
    scaled = g.node("Mul", [inputs[0], g.const(layer.scale, f"{layer.name}/scale")], layer.name)
    y = g.node("Add", [scaled, g.const(layer.offset, f"{layer.name}/offset")], layer.name)
    return y, layer.compute_output_shape(shapes[0])


def _zero_padding(g, layer, inputs, shapes):
    (top, bottom), (left, right) = layer.padding
    pads = g.ints([0, top, left, 0, 0, bottom, right, 0], f"{layer.name}/pads")
    y = g.node("Pad", [inputs[0], pads], layer.name, mode="constant")
    return y, layer.compute_output_shape(shapes[0])


def _reduce(op, axes):
    def rule(g, layer, inputs, shapes):
        keep = int(getattr(layer, "keepdims", True))
        y = g.node(op, [inputs[0], g.ints(axes, f"{layer.name}/axes")], layer.name,
                   keepdims=keep)
        return y, layer.compute_output_shape(shapes[0])
    return rule


def _kernel_pooling(g, layer, inputs, shapes):
    op = {"max": "ReduceMax", "mean": "ReduceMean", "sum": "ReduceSum"}[layer.mode]
    return _reduce(op, [-1])(g, layer, inputs, shapes)


def _relu(g, layer, inputs, shapes):
    """ReLU and LeakyReLU with Keras's options: min(x, max_value) where x > threshold,
    else negative_slope * (x - threshold). Options that are a row of the activation
    table run as that row (the layer's activation)."""
    x, label = inputs[0], layer.name
    if layer.activation is not None:
        return x, tuple(shapes[0])
    threshold = g.scalar(layer.threshold)
    above = x if layer.max_value is None else \
        g.node("Min", [x, g.scalar(layer.max_value)], label)
    below = g.node("Mul", [g.node("Sub", [x, threshold], label),
                           g.scalar(layer.negative_slope)], label)
    y = g.node("Where", [g.node("Greater", [x, threshold], label), above, below], label)
    return y, tuple(shapes[0])


def _elu(g, layer, inputs, shapes):
    if layer.activation is not None:
        return inputs[0], tuple(shapes[0])
    return g.node("Elu", inputs, layer.name, alpha=layer.alpha), tuple(shapes[0])


def _softmax(g, layer, inputs, shapes):
    x, label = inputs[0], layer.name
    if layer.activation is not None:
        return x, tuple(shapes[0])
    axes = layer.axis if isinstance(layer.axis, list) else [layer.axis]
    if len(axes) == 1:
        return g.node("Softmax", [x], label, axis=axes[0]), tuple(shapes[0])
    # over several axes at once, as ops.softmax: exp(x - max) / sum
    axes = g.ints(axes, f"{label}/axes")
    e = g.node("Exp", [g.node("Sub", [x, g.node("ReduceMax", [x, axes], label)], label)], label)
    return g.node("Div", [e, g.node("ReduceSum", [e, axes], label)], label), tuple(shapes[0])


def _batch_norm(g, layer, inputs, shapes):
    """At inference, as ops.batch_norm_inference: (x - moving_mean) * scale + offset, with
    scale = gamma / sqrt(moving_variance + epsilon) computed in float64."""
    p, label = layer.params, layer.name
    scale = 1.0 / np.sqrt(p["moving_variance"].astype(np.float64) + layer.epsilon)
    if "gamma" in p:
        scale = scale * p["gamma"]
    centred = g.node("Sub", [inputs[0], g.const(p["moving_mean"], f"{label}/moving_mean",
                                                key=(id(layer), "moving_mean"))], label)
    y = g.node("Mul", [centred, g.const(scale, f"{label}/scale", key=(id(layer), "scale"))],
               label)
    if "beta" in p:
        y = g.node("Add", [y, g.const(p["beta"], f"{label}/beta", key=(id(layer), "beta"))],
                   label)
    return y, tuple(shapes[0])


def _variadic(op):
    """A merge of inputs of one shape by an ONNX operator that takes any number."""
    def rule(g, layer, inputs, shapes):
        return g.node(op, inputs, layer.name), tuple(shapes[0])
    return rule


def _subtract(g, layer, inputs, shapes):
    return g.node("Sub", inputs, layer.name), tuple(shapes[0])


def _multiply(g, layer, inputs, shapes):
    y = inputs[0]
    for x in inputs[1:]:
        y = g.node("Mul", [y, x], layer.name)
    return y, tuple(shapes[0])


def _concatenate(g, layer, inputs, shapes):
    rank = len(shapes[0]) + 1
    axis = layer.axis % rank  # Keras's axis counts the batch axis
    if axis == 0:
        raise ValueError(f"export: Concatenate {layer.name!r} joins along the batch axis")
    shape = list(shapes[0])
    shape[axis - 1] = sum(s[axis - 1] for s in shapes)
    return g.node("Concat", inputs, layer.name, axis=axis), tuple(shape)


# One rule per layer class, by class name: Keras's merge layers are named here too.
RULES = {
    "Conv2D": _conv2d,
    "Dense": _dense,
    "Activation": _identity,
    "Dropout": _identity,
    "Flatten": _flatten,
    "MaxPooling2D": _pooling("MaxPool"),
    "AveragePooling2D": _pooling("AveragePool"),
    "Rescaling": _rescaling,
    "Reshape": _reshape,
    "ZeroPadding2D": _zero_padding,
    "GlobalAveragePooling2D": _reduce("ReduceMean", [1, 2]),
    "GlobalMaxPooling2D": _reduce("ReduceMax", [1, 2]),
    "ReLU": _relu,
    "LeakyReLU": _relu,
    "ELU": _elu,
    "Softmax": _softmax,
    "BatchNormalization": _batch_norm,
    "KernelPooling": _kernel_pooling,
    "Add": _variadic("Sum"),
    "Subtract": _subtract,
    "Multiply": _multiply,
    "Average": _variadic("Mean"),
    "Maximum": _variadic("Max"),
    "Concatenate": _concatenate,
}


def rule(layer):
    """The export rule of a layer (its class's, by exact class name)."""
    name = type(layer).__name__
    if name not in RULES:
        raise ValueError(f"export: layer {getattr(layer, 'name', None)!r} of class {name} "
                         f"has no ONNX export rule (cconv.export.RULES)")
    return RULES[name]


# ---- the graph -----------------------------------------------------------------------
def _check_description(nodes, inputs, outputs):
    known = set()
    for name, shape in inputs:
        if name in known:
            raise ValueError(f"export: two inputs are named {name!r}")
        if any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1
               for d in shape):
            raise ValueError(f"export: input {name!r}: expected one sample's shape (positive "
                             f"ints), got {shape!r}")
        known.add(name)
    for layer, names, out in nodes:
        if not getattr(layer, "built", False):
            raise ValueError(f"export: layer {getattr(layer, 'name', None)!r} is not built; "
                             f"build the model (or call predict) first")
        missing = [n for n in names if n not in known]
        if missing:
            raise ValueError(f"export: layer {layer.name!r} reads {missing}, which no input or "
                             f"earlier node produces (nodes must be in topological order)")
        if out in known:
            raise ValueError(f"export: tensor {out!r} is produced twice")
        known.add(out)
    unknown = [n for n in outputs if n not in known]
    if unknown or not outputs:
        raise ValueError(f"export: outputs {list(outputs)!r}: expected tensors the inputs or "
                         f"nodes produce")


def _check_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype.name not in DTYPES:
        raise ValueError(f"export: the model's dtype is {dtype.name}; ONNX export writes "
                         f"{', '.join(DTYPES)} (onnxruntime's CPU provider has no float64 "
                         f"convolution or pooling). Copy the weights into a float32 model "
                         f"(Sequential(..., dtype='float32'), then set_weights) and export "
                         f"that")
    return dtype


def build_graph(nodes, inputs, outputs, dtype, name="cconv"):
    """The onnx.ModelProto of a graph description (see export_graph)."""
    try:
        import onnx
    except ImportError:
        raise ImportError("export: format='onnx' needs the onnx package: "
                          "pip install onnx (or cconv[onnx])") from None
    dtype = _check_dtype(dtype)
    nodes, inputs, outputs = list(nodes), list(inputs), list(outputs)
    _check_description(nodes, inputs, outputs)
    g = _Graph(onnx, dtype)
    shapes = {}
    elem = onnx.helper.np_dtype_to_tensor_dtype(dtype)
    graph_inputs = []
    for tensor, shape in inputs:
        g.names.add(tensor)
        g.described.add(tensor)
        shapes[tensor] = tuple(int(d) for d in shape)
        graph_inputs.append(onnx.helper.make_tensor_value_info(tensor, elem,
                                                               ["batch", *shapes[tensor]]))
    for _, _, out in nodes:
        g.names.add(out)
        g.described.add(out)
    for layer, names, out in nodes:
        y, shape = rule(layer)(g, layer, list(names), [shapes[n] for n in names])
        if layer.activation is not None:
            y = activation(g, layer.activation.name, y)
        g.rename(y, out)
        shapes[out] = tuple(shape)
    graph_outputs = [onnx.helper.make_tensor_value_info(t, elem, ["batch", *shapes[t]])
                     for t in outputs]
    graph = onnx.helper.make_graph(g.nodes, name, graph_inputs, graph_outputs, g.initializers)
    model = onnx.helper.make_model(graph, producer_name="cconv",
                                   opset_imports=[onnx.helper.make_opsetid("", OPSET)])
    # the IR version of the opset, not the newest the onnx package knows: older
    # runtimes refuse a file that claims a newer IR than theirs
    model.ir_version = onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model, full_check=True)
    return model


def export_graph(path, nodes, inputs, outputs, dtype, name="cconv"):
    """Write an ONNX file at `path` for a graph description:
    - inputs: [(tensor name, one sample's shape)]: the graph's inputs, with a dynamic
      batch axis before that shape;
    - nodes: [(layer, [input tensor names], output tensor name)] in topological order;
      a layer may appear in several nodes (its weights are stored once);
    - outputs: [tensor name]: the graph's outputs;
    - dtype: the model's dtype (float32).
    The file is written to a temporary file, then renamed."""
    from cconv._io import atomic_write
    model = build_graph(nodes, inputs, outputs, dtype, name)
    with atomic_write(os.fspath(path)) as f:
        f.write(model.SerializeToString())
    return model


def check_arguments(format, input_signature, options):
    """Keras's export arguments: format (cconv writes ONNX alone), input_signature (None:
    the model's own input) and the ONNX options (opset_version: None or OPSET)."""
    if format not in FORMATS:
        raise ValueError(f"export: format={format!r} is not supported by cconv; expected "
                         f"one of {list(FORMATS)} (Keras's tf_saved_model, openvino, litert "
                         f"and torch need their frameworks)")
    if input_signature is not None:
        raise ValueError(f"export: input_signature={input_signature!r} not supported (the "
                         f"input is the model's own: (batch, *input_shape), batch dynamic)")
    options = dict(options)
    opset = options.pop("opset_version", None)
    if opset not in (None, OPSET):
        raise ValueError(f"export: opset_version={opset!r} is not supported; cconv writes "
                         f"opset {OPSET}")
    if options:
        raise TypeError(f"export: unexpected arguments {sorted(options)}")
