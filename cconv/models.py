"""keras.models's names: Model, Sequential, load_model, clone_model."""
from cconv import graph
from cconv import layers as layers_module
from cconv import saving
from cconv.model import Model, Sequential, _refuse

__all__ = ["Model", "Sequential", "load_model", "clone_model"]


def load_model(filepath, custom_objects=None, compile=True, safe_mode=True):
    """The model in a .keras file written by cconv or by Keras 3 (Sequential models of
    and functional models of the layers cconv has), with its weights and, when
    compile=True and the file was
    compiled, its optimizer and optimizer state. safe_mode is accepted for Keras's
    sake: cconv never runs code a file names. See cconv.saving."""
    return saving.load_model(filepath, custom_objects, compile, safe_mode,
                             classes={"Sequential": Sequential, "Functional": Model})


def clone_model(model, input_tensors=None, clone_function=None, call_function=None,
                recursive=False, **kwargs):
    """A new, uncompiled model with model's layers and fresh weights (drawn as any new
    model's are), as keras.models.clone_model makes: the same graph for a functional
    model, a layer called twice cloned once and called twice. clone_function(layer)
    makes each new layer; by default type(layer).from_config(layer.get_config()).
    recursive has nothing to do here: cconv's layers nest no model."""
    if not isinstance(model, Model):
        raise TypeError(f"model: expected a cconv Model or Sequential, got "
                        f"{type(model).__name__}")
    _refuse({"input_tensors": input_tensors, "call_function": call_function, **kwargs},
            "clone_model", "the clone's inputs are new cconv.Inputs like the model's")
    if clone_function is None:
        def clone_function(layer):
            return type(layer).from_config(layer.get_config())
    clones = {}

    def clone(layer):
        if layer not in clones:
            new = clone_function(layer)
            if not isinstance(new, layers_module.Layer):
                raise TypeError(f"clone_function: expected it to return a cconv layer for "
                                f"{layer.name!r}, got {type(new).__name__}")
            clones[layer] = new
        return clones[layer]

    if isinstance(model, Sequential):
        new_layers = [clone(layer) for layer in model.layers]
        items = ([layers_module.Input(model.input_shape)] if model.input_shape else []
                 ) + new_layers
        return Sequential(items, dtype=model.dtype, name=model.name)
    tensors = {}
    for t, slot in zip(model.inputs, model._input_slots):
        tensors[slot] = layers_module.InputLayer.from_config(t.node.layer.get_config()).output
    for call in sorted(model._calls, key=lambda c: c.order):  # as they were made
        ins = [tensors[s] for s in call.ins]
        tensors[call.out] = clone(call.layer)(ins if call.many else ins[0])
    return Model(graph.pack(model._input_kind, [tensors[s] for s in model._input_slots]),
                 graph.pack(model._output_kind, [tensors[s] for s in model._output_slots]),
                 name=model.name, dtype=model.dtype)
