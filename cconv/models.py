"""keras.models's names: Sequential, load_model, clone_model."""
from cconv import layers as layers_module
from cconv import saving
from cconv.model import Sequential, _refuse

__all__ = ["Sequential", "load_model", "clone_model"]


def load_model(filepath, custom_objects=None, compile=True, safe_mode=True):
    """The model in a .keras file written by cconv or by Keras 3 (Sequential models of
    the layers cconv has), with its weights and, when compile=True and the file was
    compiled, its optimizer and optimizer state. safe_mode is accepted for Keras's
    sake: cconv never runs code a file names. See cconv.saving."""
    return saving.load_model(filepath, custom_objects, compile, safe_mode, cls=Sequential)


def clone_model(model, input_tensors=None, clone_function=None, call_function=None,
                recursive=False, **kwargs):
    """A new, uncompiled model with model's layers and fresh weights (drawn as any new
    model's are), as keras.models.clone_model makes. clone_function(layer) makes each
    new layer; by default type(layer).from_config(layer.get_config()). recursive has
    nothing to do here: a Sequential of cconv's layers nests no model."""
    if not isinstance(model, Sequential):
        raise TypeError(f"model: expected a cconv Sequential, got {type(model).__name__}")
    _refuse({"input_tensors": input_tensors, "call_function": call_function, **kwargs},
            "clone_model", "cconv has no symbolic tensors or functional models")
    if clone_function is None:
        def clone_function(layer):
            return type(layer).from_config(layer.get_config())
    new_layers = []
    for layer in model.layers:
        new = clone_function(layer)
        if not isinstance(new, layers_module.Layer):
            raise TypeError(f"clone_function: expected it to return a cconv layer for "
                            f"{layer.name!r}, got {type(new).__name__}")
        new_layers.append(new)
    items = ([layers_module.Input(model.input_shape)] if model.input_shape else []) + new_layers
    return Sequential(items, dtype=model.dtype, name=model.name)
