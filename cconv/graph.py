"""Models as graphs: the symbolic tensors that calling a layer on cconv.Input records, and
the topology a Model is built from.

A KerasTensor stands for a batch of samples of a known shape; it remembers the Node
that made it. A Node is one call of a layer on its input tensors. The graph between a
model's inputs and outputs is walked as Keras 3 walks it (keras/src/ops/function.py),
so that the model's layers come in Keras's order: the order of its weights, of its
.keras files' layers and of their datasets.

This module sits below cconv.layers: it knows layers only as objects with a name.
"""
import itertools

_created = itertools.count()  # the order in which nodes were made, across all graphs


class KerasTensor:
    """A symbolic batch: shape is (None, *sample shape), as Keras's. Arithmetic on it is
    not supported: call layers (Add, Multiply, ...) on it."""

    def __init__(self, sample_shape, dtype, node=None):
        self.sample_shape = tuple(sample_shape)
        self.dtype = dtype
        self.node = node  # the Node that outputs it

    @property
    def shape(self):
        return (None,) + self.sample_shape

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def name(self):
        return self.node.layer.name

    def __repr__(self):
        layer = self.node.layer if self.node else None
        return (f"<KerasTensor shape={self.shape}, dtype={self.dtype}, "
                f"made by {getattr(layer, 'name', None) or type(layer).__name__}>")

    def __bool__(self):
        raise TypeError("a KerasTensor has no truth value: it stands for data that only a "
                        "model's fit, evaluate or predict gives")

    def __array__(self, *args, **kwargs):
        raise TypeError("a KerasTensor is symbolic: it holds no values to convert to an "
                        "array; build a cconv.Model from it and call predict")

    def _no_arithmetic(self, *args):
        raise TypeError("cconv has no arithmetic on KerasTensors; use the merge layers "
                        "(cconv.layers.Add, Subtract, Multiply, ...) instead")

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _no_arithmetic
    __truediv__ = __rtruediv__ = __neg__ = __getitem__ = _no_arithmetic


class Node:
    """One call of `layer` on `inputs` (KerasTensors), giving `output`. many: the layer
    was called on a list of tensors (a merge layer), not on one."""

    def __init__(self, layer, inputs, many):
        self.layer = layer
        self.inputs = list(inputs)
        self.many = many
        self.order = next(_created)
        self.output = None

    @property
    def is_input(self):
        return not self.inputs and not self.many


def flatten(structure, what):
    """(the KerasTensors of a tensor, a list/tuple or a dict in its order, the structure:
    None for a lone tensor, else ("list", n), ("tuple", n) or ("dict", keys)), for pack
    to give values back in the same structure."""
    if isinstance(structure, KerasTensor):
        return [structure], None
    if isinstance(structure, dict):
        keys = list(structure)
        for k in keys:
            if not isinstance(k, str):
                raise TypeError(f"{what}: dict keys must be strings, got {k!r}")
        tensors, kind = [structure[k] for k in keys], ("dict", tuple(keys))
    elif isinstance(structure, (list, tuple)):
        tensors = list(structure)
        kind = (type(structure).__name__, len(tensors))
    else:
        raise TypeError(f"{what}: expected a KerasTensor (from cconv.Input or a layer "
                        f"called on one), or a list or dict of them, got "
                        f"{type(structure).__name__}")
    if not tensors:
        raise ValueError(f"{what}: expected at least one tensor, got an empty "
                         f"{type(structure).__name__}")
    for i, t in enumerate(tensors):
        if not isinstance(t, KerasTensor):
            raise TypeError(f"{what}[{i}]: expected a KerasTensor, got {type(t).__name__}")
    return tensors, kind


def pack(kind, values):
    """values (a list) in the structure flatten gave."""
    if kind is None:
        return values[0]
    if kind[0] == "dict":
        return dict(zip(kind[1], values))
    return tuple(values) if kind[0] == "tuple" else list(values)


def walk(inputs, outputs):
    """(nodes, layers) of the graph from inputs to outputs: nodes in an order that runs
    (each after the nodes its inputs come from), layers (InputLayers included) in
    Keras's order. Raises ValueError for an output that does not descend from the
    inputs, and for a cycle."""
    # Depth-first from the outputs: visit order numbers the layers, finish order is a
    # topological order of the nodes.
    finished, in_progress, order, index = set(), set(), [], {}
    input_ids = {id(t) for t in inputs}

    def visit(tensor, path):
        node = tensor.node
        if node is None:
            raise ValueError(f"{path}: the tensor was made by no layer")
        if node in finished:
            return
        if node in in_progress:
            raise ValueError(f"the graph has a cycle through layer {node.layer.name!r}")
        index.setdefault(node.layer, len(index))
        if not node.inputs and id(tensor) not in input_ids:
            raise ValueError(f"Graph disconnected: {path} descends from the input "
                             f"{node.layer.name!r}, which is not among the model's inputs")
        in_progress.add(node)
        if id(tensor) not in input_ids:
            for t in node.inputs:
                visit(t, f"the input of layer {node.layer.name!r}")
        in_progress.discard(node)
        finished.add(node)
        order.append(node)

    for i, t in enumerate(outputs):
        visit(t, f"outputs[{i}]")
    # Keras's depths: an output's node is 0, a node feeding others is one more than the
    # deepest of them, and a layer is as deep as its deepest node.
    depth, layer_depth = {}, {}
    in_graph = set(order)
    for node in reversed(order):
        d = max(depth.setdefault(node, 0), layer_depth.get(node.layer, 0))
        layer_depth[node.layer] = depth[node] = d
        for t in node.inputs:
            if t.node in in_graph:
                depth[t.node] = max(depth.get(t.node, 0), d + 1)
    for t in inputs:  # inputs no output needs still belong to the model, as in Keras
        if t.node.layer not in layer_depth:
            layer_depth[t.node.layer] = 0
            index[t.node.layer] = -1
            order.insert(0, t.node)
    layers = sorted(layer_depth, key=lambda l: (-layer_depth[l], index[l]))
    return order, layers
