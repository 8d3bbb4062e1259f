"""Every file format of cconv: whole models in Keras 3's `.keras` format (with
Sequential's config), weights in `.npz` files, and the metadata those `.npz` files carry
(the preset a `cconv train --save` file was trained as).

This module sits below cconv.model: it never imports it. Functions that make a model
take its class (`cls=Sequential`, which cconv.models and cconv.model pass); those that
read or write one use its methods and attributes.

A `.keras` file is a zip of three members (the layout keras/src/saving/saving_lib.py
reads and writes):
- config.json: {"module": "keras", "class_name": "Sequential", "config": {...},
  "build_config": {"input_shape": [null, ...]}, "compile_config": {...}};
- metadata.json: {"keras_version": ..., "date_saved": ...};
- model.weights.h5: each layer's weights as datasets layers/<key>/vars/0, 1, ...
  (in its weight_names order: kernel, bias; BatchNormalization's gamma, beta,
  moving_mean, moving_variance), where the key is the layer's class in snake case, numbered within the
  model (conv2d, conv2d_1, dense, ...; never the layer's name); the optimizer's as
  optimizer/vars/0 (iterations), 1 (the learning rate, unless a schedule gives it),
  then the slots in Keras's order (cconv/optimizers: SGD momentums; RMSprop velocities,
  momentums, average gradients; Adam each weight's momentum and velocity, then
  velocity_hats), over the weights the optimizer updates (the trainable weights of
  trainable layers: not BatchNormalization's moving statistics, nor a frozen layer's).

Loading reads and checks everything (members, sizes, config, every dataset's name and
shape) before it makes the model; a file it cannot use raises a ValueError naming the
file and what is wrong. It never unpickles and imports nothing a file names (an
initializer is looked up in a fixed list of cconv's own, or in custom_objects). h5py
is needed only for .keras files (pip install "cconv[h5]").

An `.npz` weights file holds one array per weight, named "<i:03d>.<layer name>.<weight
name>" in the model's order of weights (cconv.layers.weight_keys), and string arrays
named META_PREFIX + key for its metadata.
"""
import datetime
import io
import json
import math
import os
import zipfile
import zlib

import numpy as np

from cconv import layers as layers_module
from cconv import losses, ops, optimizers, utils
from cconv._io import atomic_write
from cconv._version import __version__

CONFIG, METADATA, WEIGHTS = "config.json", "metadata.json", "model.weights.h5"
# The Keras release whose .keras files cconv's were checked against (tests/test_keras_interop.py)
KERAS_VERSION = "3.15.1"
_JSON_LIMIT = 16 << 20       # bytes a config.json or metadata.json may expand to
_H5_SLACK = 8 << 20          # HDF5's own structures, beyond the arrays themselves
_DTYPES = ("float32", "float64")
META_PREFIX = "meta."  # arrays in a weights file that describe it; load_weights skips them


def _h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError('.keras files need h5py, which cconv installs only on request: '
                          'pip install "cconv[h5]" (or pip install h5py)') from None
    return h5py


# ---- configs -------------------------------------------------------------------------
def serialize_layer(layer, dtype):
    config = layer.get_config()
    config["dtype"] = utils.dtype_policy(dtype)
    module = "cconv.layers" if type(layer).__name__ in layers_module.CCONV_LAYERS \
        else "keras.layers"
    out = {"module": module, "class_name": type(layer).__name__, "config": config,
           "registered_name": None if module == "keras.layers"
           else f"cconv>{type(layer).__name__}"}
    if layer.built and layer.KERAS_BUILD_CONFIG:
        out["build_config"] = {"input_shape": [[None, *shape] for shape in layer.input_shape]
                               if layer.MULTI_INPUT else [None, *layer.input_shape]}
    return out


def sequential_config(model):
    layer_configs = []
    if model.input_shape is not None:
        inp = layers_module.InputLayer(model.input_shape, name="input_layer")
        layer_configs.append({"module": "keras.layers", "class_name": "InputLayer",
                              "config": {**inp.get_config(), "dtype": model.dtype.name},
                              "registered_name": None})
    layer_configs += [serialize_layer(layer, model.dtype) for layer in model.layers]
    config = {"name": model.name, "trainable": True,
              "dtype": utils.dtype_policy(model.dtype), "layers": layer_configs}
    if model.input_shape is not None:
        config["build_input_shape"] = [None, *model.input_shape]
    return config


def _layer_class(i, entry, custom_objects):
    name = entry.get("class_name")
    registered = entry.get("registered_name")
    if not isinstance(name, str) or not isinstance(registered, (str, type(None))):
        raise ValueError(f"Sequential config: layers[{i}]: class_name and registered_name "
                         f"should be strings, got {name!r} and {registered!r}")
    for key in (registered, name):
        if key in custom_objects:
            return custom_objects[key]
    if entry.get("module", "keras.layers") == "cconv.layers" or \
            (isinstance(registered, str) and registered.startswith("cconv>")):
        cls = layers_module.CCONV_LAYERS.get(name)
    else:
        cls = layers_module.KERAS_LAYERS.get(name)
    if cls is None:
        known = sorted(set(layers_module.KERAS_LAYERS) | set(layers_module.CCONV_LAYERS))
        raise ValueError(f"layer {name!r} ({entry['config'].get('name')!r}) is "
                         f"not one cconv has ({', '.join(known)})")
    return cls


def sequential_from_config(config, custom_objects=None, *, cls):
    """A cls (Sequential) from Keras's Sequential config (or get_config's); nothing is
    built until every layer's config has been checked."""
    layers, input_shape, dtype, name = _sequential_parts(config, custom_objects)
    inputs = [] if input_shape is None else [layers_module.InputLayer(input_shape)]
    return cls(inputs + layers, dtype=dtype, name=name)


def _sequential_parts(config, custom_objects):
    """(layers, input shape or None, dtype, name) of a Sequential config, every layer's
    config checked; nothing built."""
    custom_objects = dict(custom_objects or {})
    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        raise ValueError(f"Sequential config: expected a dict with a 'layers' list, got "
                         f"{type(config).__name__}")
    for i, entry in enumerate(config["layers"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
            raise ValueError(f"Sequential config: layers[{i}] is not a layer's config dict")
    dtype = _config_dtype("Sequential", config, config["layers"])
    if config.get("trainable", True) is not True:
        raise ValueError("Sequential: trainable=False is not supported by cconv")
    items, input_shape = [], None
    for i, entry in enumerate(config["layers"]):
        if entry.get("class_name") == "InputLayer":
            if i != 0:
                raise ValueError("Sequential config: an InputLayer must come first")
            input_shape = layers_module.InputLayer.from_config(entry["config"]).shape
            continue
        cls = _layer_class(i, entry, custom_objects)
        items.append(cls.from_config(entry["config"], custom_objects)
                     if issubclass(cls, layers_module.Layer) else cls.from_config(
                         entry["config"]))
    if input_shape is None:
        input_shape = _batch_shape("Sequential: build_input_shape",
                                   config.get("build_input_shape"))
    return items, input_shape, dtype, config.get("name") or "sequential"


def _batch_shape(what, shape):
    """A config's [null, d1, ...] as (d1, ...), or None when it gives none."""
    if not isinstance(shape, list) or len(shape) < 2:
        return None
    try:
        return layers_module.InputLayer(tuple(shape[1:])).shape
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: {exc}") from exc


def functional_config(model):
    """Keras 3's Functional config: each layer (InputLayers included, in the model's
    order) with its calls as inbound_nodes, whose arguments name the tensors they read
    as [layer name, call index, 0]; input_layers and output_layers in the structure the
    model was given (a list, or a dict by name)."""
    dtype = model.dtype.name
    index = {}
    for layer in model.layers:
        for i, call in enumerate(model._nodes_of(layer)):
            index[call.out] = [layer.name, i, 0]
    for t, slot in zip(model.inputs, model._input_slots):
        index[slot] = [t.node.layer.name, 0, 0]

    def tensor(slot):
        return {"class_name": "__keras_tensor__",
                "config": {"shape": [None, *model._slot_shapes[slot]], "dtype": dtype,
                           "keras_history": index[slot]}}

    entries = []
    for layer in model.layers:
        if isinstance(layer, layers_module.InputLayer):
            entries.append({"module": "keras.layers", "class_name": "InputLayer",
                            "config": {**layer.get_config(), "name": layer.name},
                            "registered_name": None, "name": layer.name,
                            "inbound_nodes": []})
            continue
        entry = serialize_layer(layer, model.dtype)
        entry["name"] = layer.name
        entry["inbound_nodes"] = [
            {"args": [[tensor(s) for s in call.ins] if call.many else tensor(call.ins[0])],
             "kwargs": {}} for call in model._nodes_of(layer)]
        entries.append(entry)

    def ends(kind, slots):
        refs = [index[s] for s in slots]
        return dict(zip(kind[1], refs)) if kind and kind[0] == "dict" else refs

    return {"name": model.name, "trainable": True, "layers": entries,
            "input_layers": ends(model._input_kind, model._input_slots),
            "output_layers": ends(model._output_kind, model._output_slots)}


def functional_from_config(config, custom_objects=None, *, cls):
    """A cls (cconv.Model) from Keras's Functional config (or get_config's), made and
    checked with nothing built: model.build() draws its weights."""
    model = _functional(config, custom_objects, cls)
    model.build()
    return model


def _functional(config, custom_objects, cls):
    """The model of a Functional config, its graph checked, not built."""
    custom_objects = dict(custom_objects or {})
    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        raise ValueError(f"Functional config: expected a dict with a 'layers' list, got "
                         f"{type(config).__name__}")
    entries = config["layers"]
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
            raise ValueError(f"Functional config: layers[{i}] is not a layer's config dict")
        if not isinstance(entry.get("inbound_nodes", []), list):
            raise ValueError(f"Functional config: layers[{i}]: inbound_nodes should be a list")
    dtype = _config_dtype("Functional", config, entries)
    if config.get("trainable", True) is not True:
        raise ValueError("Functional: trainable=False is not supported by cconv")
    made, tensors = {}, {}
    for i, entry in enumerate(entries):
        name = entry.get("name", entry["config"].get("name"))
        if not isinstance(name, str) or name in made:
            raise ValueError(f"Functional config: layers[{i}]: a missing or repeated name "
                             f"{name!r}")
        if entry.get("class_name") == "InputLayer":
            layer = layers_module.InputLayer.from_config({**entry["config"], "name": name})
            tensors[(name, 0)] = layer.output
        else:
            kind = _layer_class(i, entry, custom_objects)
            layer = kind.from_config(entry["config"], custom_objects)
            layer.name = name
        made[name] = layer
    # a layer's calls may read layers listed after it (a shared layer is listed once):
    # call what can be called until nothing is left, or nothing more can be
    pending = [(made[e.get("name", e["config"].get("name"))], i, node)
               for e in entries if e.get("class_name") != "InputLayer"
               for i, node in enumerate(e.get("inbound_nodes", []))]
    while pending:
        left = []
        for layer, i, node in pending:
            args = _node_args(layer, node)
            if all(ref in tensors for ref in args[0]):
                if i != sum(1 for key in tensors if key[0] == layer.name):
                    left.append((layer, i, node))  # its earlier calls first
                    continue
                inputs = [tensors[ref] for ref in args[0]]
                tensors[(layer.name, i)] = layer(inputs if args[1] else inputs[0])
            else:
                left.append((layer, i, node))
        if len(left) == len(pending):
            raise ValueError(f"Functional config: the calls of "
                             f"{sorted({l.name for l, _, _ in left})} read tensors no "
                             f"layer gives (a disconnected or cyclic graph)")
        pending = left

    def ends(what):
        refs = config.get(what)
        if isinstance(refs, dict):
            return {k: _tensor_at(tensors, what, v) for k, v in refs.items()}
        if not isinstance(refs, list) or not refs:
            raise ValueError(f"Functional config: {what} should be a list or dict of "
                             f"[layer, call, 0], got {refs!r}")
        if isinstance(refs[0], str):  # a lone [name, 0, 0]
            return _tensor_at(tensors, what, refs)
        out = [_tensor_at(tensors, what, r) for r in refs]
        return out[0] if len(out) == 1 else out

    model = cls.__new__(cls)
    model._setup(ends("input_layers"), ends("output_layers"),
                 config.get("name") or "functional", dtype)
    return model


def _node_args(layer, node):
    """([(layer name, call index)] a call reads, whether it reads a list)."""
    label = f"Functional config: layer {layer.name!r}"
    if not isinstance(node, dict) or not isinstance(node.get("args"), list) \
            or len(node["args"]) != 1:
        raise ValueError(f"{label}: inbound_nodes entries should be {{'args': [tensor or "
                         f"list of tensors], 'kwargs': {{}}}}, got {node!r}")
    kwargs = node.get("kwargs") or {}
    if not isinstance(kwargs, dict) or any(v is not None for v in kwargs.values()):
        raise ValueError(f"{label}: call arguments {kwargs!r} are not supported by cconv")
    arg = node["args"][0]
    many = isinstance(arg, list)
    refs = []
    for t in arg if many else [arg]:
        history = t.get("config", {}).get("keras_history") if isinstance(t, dict) else None
        if not isinstance(history, list) or len(history) != 3 \
                or not isinstance(history[0], str) or not isinstance(history[1], int):
            raise ValueError(f"{label}: expected tensors as __keras_tensor__ with a "
                             f"keras_history [layer, call, 0], got {t!r}")
        refs.append((history[0], history[1]))
    return refs, many


def _tensor_at(tensors, what, ref):
    if not isinstance(ref, list) or len(ref) != 3 or (ref[0], ref[1]) not in tensors:
        raise ValueError(f"Functional config: {what}: {ref!r} names no call of a layer")
    return tensors[(ref[0], ref[1])]


def _config_dtype(kind, config, entries):
    """The one dtype of a model config: its layers' common one, else the model's. Keras
    keeps a dtype per layer (its model's own stays at floatx when only the layers are
    given one); cconv computes every layer in one dtype."""
    layer_dtypes = {utils.policy_name(f"layer {e['config'].get('name')!r}: dtype",
                                      e["config"].get("dtype"))
                    for e in entries if e.get("class_name") != "InputLayer"} - {None}
    if len(layer_dtypes) > 1:
        raise ValueError(f"{kind}: the layers' dtypes differ ({sorted(layer_dtypes)}); "
                         f"cconv computes every layer in the model's one dtype")
    dtype = layer_dtypes.pop() if layer_dtypes else (
        utils.policy_name(f"{kind}: dtype", config.get("dtype")) or "float32")
    if dtype not in _DTYPES:
        raise ValueError(f"{kind}: dtype {dtype!r} is not supported by cconv (only "
                         f"float32 or float64)")
    return dtype


def compile_config(model):
    args = model._compile_args
    return {"optimizer": optimizers.serialize(model.optimizer),
            "loss": args["loss"], "loss_weights": _plain(args["loss_weights"]),
            "metrics": _plain(args["metrics"]) or None,
            "weighted_metrics": _plain(args["weighted_metrics"]) or None,
            "run_eagerly": False, "steps_per_execution": 1, "jit_compile": False}


def _plain(value):
    """compile's arguments as JSON writes them: tuples as lists."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def compile_from_config(model, config):
    """Compile model as a Keras compile_config says; options cconv lacks raise."""
    if not isinstance(config, dict):
        raise ValueError(f"compile_config: expected a dict, got {config!r}")
    for key in ("metrics", "weighted_metrics"):
        # Keras writes a metric object as a dict; compile checks the names
        value = config.get(key)
        if not isinstance(value, (list, dict, type(None))):
            raise ValueError(f"compile_config: {key} should be a list of names (or of "
                             f"lists, or a dict by output name), got {value!r}")
        entries = (list(value.values()) if isinstance(value, dict) else value) or ()
        for m in (x for e in entries for x in (e if isinstance(e, list) else [e])):
            if isinstance(m, dict):
                raise ValueError(f"compile_config: {key}: metric objects "
                                 f"({m.get('class_name')!r}) are not supported by cconv; "
                                 f"names are, such as 'accuracy' or 'mae'")
    model.compile(optimizer=optimizers.deserialize(config.get("optimizer", "rmsprop")),
                  loss=_loss(config.get("loss")),
                  loss_weights=config.get("loss_weights"), metrics=config.get("metrics"),
                  weighted_metrics=config.get("weighted_metrics"))


def _loss(value):
    """A compile config's loss: a name, a Keras loss dict, or a list or dict (by output)
    of them."""
    if isinstance(value, list):
        return [_loss(v) for v in value]
    if isinstance(value, dict) and "class_name" not in value:
        return {k: _loss(v) for k, v in value.items()}
    return value if isinstance(value, str) else losses.deserialize(value)


# ---- writing -------------------------------------------------------------------------
def _h5_keys(model):
    """Each layer's group under layers/ in model.weights.h5, as Keras numbers them."""
    keys, used = [], {}
    for layer in model.layers:
        base = utils.default_name(type(layer))
        n = used.get(base, 0)
        used[base] = n + 1
        keys.append(base if n == 0 else f"{base}_{n}")
    return keys


def _h5_weight_paths(model):
    """(dataset path, layer, weight key) for each weight, in the model's order
    (cconv.layers.weight_keys), with the paths Keras gives them: layers/<key>/vars/<i>."""
    for layer, key in zip(model.layers, _h5_keys(model)):
        for i, k in enumerate(layer.weight_keys()):
            yield f"layers/{key}/vars/{i}", layer, k


def _weights_h5(model):
    """model.weights.h5's bytes: each layer's weights, then the optimizer's state."""
    h5py = _h5py()
    buf = io.BytesIO()
    # Keras's optimizer has slots for the trainable weights only
    params = [layer.params[k] for layer, k in model._optimizer_keys()] if model.built else []
    with h5py.File(buf, "w") as f:
        for layer, key in zip(model.layers, _h5_keys(model)):
            f.create_group(f"layers/{key}/vars").attrs["name"] = layer.name
        for path, layer, k in _h5_weight_paths(model):
            f.create_dataset(path, data=layer.params[k])
        f.create_group("vars").attrs["name"] = model.name
        if model.compiled and model.built:
            opt = model.optimizer
            group = f.create_group("optimizer/vars")
            group.attrs["name"] = opt.name
            for i, value in enumerate(opt.scalars() + opt.slots(params)):
                group.create_dataset(str(i), data=value)
    return buf.getvalue()


def save_model(model, filepath, overwrite=True):
    path = os.fspath(filepath)
    if not path.endswith(".keras"):
        raise ValueError(f"filepath: expected a name ending in .keras, got {path!r} (for "
                         f"weights alone, use save_weights with a .npz name)")
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"filepath: {path} exists and overwrite=False")
    if not model.built and model.input_shape is not None:
        model.build()
    if _is_sequential(model):
        config = {"module": "keras", "class_name": "Sequential",
                  "config": sequential_config(model), "registered_name": None}
        if model.built:
            config["build_config"] = {"input_shape": [None, *model.input_shape]}
    else:
        config = {"module": "keras.src.models.functional", "class_name": "Functional",
                  "config": functional_config(model), "registered_name": "Functional",
                  "build_config": {"input_shape": None}}
    if model.compiled:
        config["compile_config"] = compile_config(model)
    metadata = {"keras_version": KERAS_VERSION, "cconv_version": __version__,
                "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S")}
    weights = _weights_h5(model)  # before the temporary file: an error leaves nothing
    with atomic_write(path, suffix=".keras.tmp") as f:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.writestr(METADATA, json.dumps(metadata))
            z.writestr(CONFIG, json.dumps(config))
            # HDF5 of floats barely compresses; storing it keeps saves fast
            z.writestr(zipfile.ZipInfo(WEIGHTS, date_time=(1980, 1, 1, 0, 0, 0)), weights,
                       compress_type=zipfile.ZIP_STORED)


def _is_sequential(model):
    """Whether model is a Sequential (by its config's kind: this module never imports
    cconv.model)."""
    return any(c.__name__ == "Sequential" for c in type(model).__mro__)


# ---- reading -------------------------------------------------------------------------
class _Bad(ValueError):
    """A problem with the file, before the file's name is added."""


def _read_member(z, name, limit):
    info = z.getinfo(name)
    if info.file_size > limit:
        raise _Bad(f"{name} expands to {info.file_size:,} bytes, more than the "
                   f"{limit:,} this model can need (a damaged file or a zip bomb)")
    with z.open(info) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise _Bad(f"{name} expands beyond {limit:,} bytes")
    return data


def _json(z, name):
    try:
        return json.loads(_read_member(z, name, _JSON_LIMIT))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _Bad(f"{name} is not valid JSON ({exc})") from None
    except RecursionError:
        raise _Bad(f"{name} is nested too deeply to be a model's config") from None


def _expected_datasets(model, compiled):
    """{dataset path: (shape, kinds)} that model.weights.h5 must hold for this model."""
    want = {path: (layer.params[k].shape, "f") for path, layer, k in _h5_weight_paths(model)}
    if compiled:
        opt = model.optimizer
        params = [layer.params[k] for layer, k in model._optimizer_keys()]
        for i, value in enumerate(opt.scalars() + opt.slots(params)):
            want[f"optimizer/vars/{i}"] = (value.shape, "iu" if i == 0 else "f")
    return want


def _check_in_file(h5py, name, ds):
    """Refuse a dataset whose data are not stored in this file: external raw storage
    and virtual datasets read whatever paths the file names on this machine."""
    if ds.is_virtual:
        raise _Bad(f"{WEIGHTS}: {name} is a virtual dataset (its data would be read "
                   f"from other files); only datasets stored in the file are read")
    if ds.external is not None:
        raise _Bad(f"{WEIGHTS}: {name} has external storage ({len(ds.external)} other "
                   f"file(s)); only datasets stored in the file are read")
    layout = ds.id.get_create_plist().get_layout()
    if layout not in (h5py.h5d.CONTIGUOUS, h5py.h5d.CHUNKED, h5py.h5d.COMPACT):
        raise _Bad(f"{WEIGHTS}: {name} has storage layout {layout}; only contiguous, "
                   f"chunked or compact datasets stored in the file are read")


def _read_weights(model, data, compiled, skip_optimizer):
    """{dataset path: array} from model.weights.h5's bytes, each checked against the
    model: no dataset missing, none extra, every shape and kind right. skip_optimizer:
    the optimizer's datasets are passed over (load_model(compile=False))."""
    h5py = _h5py()
    want = _expected_datasets(model, compiled)
    found, stateless = {}, False
    try:
        with h5py.File(io.BytesIO(data), "r") as f:
            def visit(name, obj):
                if isinstance(obj, h5py.Dataset):
                    _check_in_file(h5py, name, obj)
                    if not (skip_optimizer and name.startswith("optimizer/")):
                        found[name] = obj
            f.visititems(visit)
            scalars = {f"optimizer/vars/{i}" for i in range(len(model.optimizer.scalars()))
                       } if compiled else set()
            if compiled and {n for n in found if n.startswith("optimizer/")} == scalars:
                # an optimizer that has not stepped: Keras may write no slots for it
                stateless = any(k.startswith("optimizer/vars/") and k not in found
                                for k in want)
                want = {k: v for k, v in want.items()
                        if not k.startswith("optimizer/vars/") or k in found}
            missing = sorted(set(want) - set(found))
            extra = sorted(set(found) - set(want))
            if missing or extra:
                raise _Bad(f"{WEIGHTS} does not match the config: "
                           + "; ".join(p for p in (
                               f"missing {', '.join(missing)}" if missing else "",
                               f"unexpected {', '.join(extra)}" if extra else "") if p))
            arrays = {}
            for name, (shape, kinds) in want.items():
                ds = found[name]
                if ds.shape != tuple(shape):
                    raise _Bad(f"{WEIGHTS}: {name} has shape {ds.shape}, the config "
                               f"needs {tuple(shape)}")
                if ds.dtype.kind not in kinds:
                    raise _Bad(f"{WEIGHTS}: {name} has dtype {ds.dtype}, expected "
                               f"{'a float' if kinds == 'f' else 'an integer'}")
                arrays[name] = ds[()]
    except (OSError, KeyError, RuntimeError, TypeError) as exc:  # h5py's damaged-file errors
        raise _Bad(f"{WEIGHTS} is not a readable HDF5 file ({exc})") from None
    for name, arr in arrays.items():
        if not np.all(np.isfinite(arr)):
            raise _Bad(f"{WEIGHTS}: {name} contains NaN or inf")
    if compiled:
        iterations = int(arrays["optimizer/vars/0"])
        if iterations < 0 or (stateless and iterations != 0):
            raise _Bad(f"{WEIGHTS}: the optimizer's iterations is {iterations}"
                       + (" with no state saved (only an optimizer that has not stepped "
                          "may omit it)" if stateless else "; expected >= 0"))
    return arrays


def load_model(filepath, custom_objects=None, compile=True, safe_mode=True, *, classes):
    """The model in a .keras file written by cconv or by Keras 3 (Sequential and
    functional models of the layers cconv has), with its weights and, when compile=True
    and the file was compiled, its optimizer and optimizer state. classes: {"Sequential":
    cconv's Sequential, "Functional": cconv's Model}. safe_mode is accepted for Keras's
    sake: cconv never runs code a file names."""
    path = os.fspath(filepath)
    try:
        return _load(path, custom_objects, compile, classes)
    except _Bad as exc:
        raise ValueError(f"load_model: {path}: {exc}") from None
    except (TypeError, ValueError) as exc:  # a config's values of the wrong type or range
        raise ValueError(f"load_model: {path}: {exc}") from exc
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise ValueError(f"load_model: {path} is not a readable .keras zip "
                         f"({type(exc).__name__}: {exc})") from None


def _entry(config, key):
    """config[key] as a dict ({} when absent)."""
    value = config.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Bad(f"{CONFIG}: {key} should be a dict, got {type(value).__name__}")
    return value


def _weights_nbytes(calls, dtype):
    """The bytes the weights of the layers take, from [(layer, the shape it is called
    on)] alone; more than this machine's memory is refused."""
    count = sum(math.prod(s) for layer, shape in calls
                for s in layer.weight_shapes(shape).values())
    ops.check_size("the config's weights", ((1 + optimizers.MAX_SLOTS) * count,), dtype)
    return count * np.dtype(dtype).itemsize


def _load(path, custom_objects, compile_, classes):
    with open(path, "rb") as raw, zipfile.ZipFile(raw) as z:
        names = set(z.namelist())
        if CONFIG not in names:
            raise _Bad(f"no {CONFIG} inside: not a .keras file")
        if WEIGHTS not in names:
            raise _Bad(f"no {WEIGHTS} inside (Keras's .npz or sharded weight stores are "
                       f"not supported; save with its default .h5 store)")
        unknown = sorted(n for n in names - {CONFIG, METADATA, WEIGHTS} if not n.endswith("/"))
        if unknown:
            raise _Bad(f"holds members cconv does not know: {', '.join(unknown)}")
        config = _json(z, CONFIG)
        kind = config.get("class_name") if isinstance(config, dict) else config
        if kind in ("Functional", "Model"):
            model = _functional(config.get("config"), custom_objects, classes["Functional"])
            calls = [(layer, layer._inbound_nodes[0].inputs) for layer in model.layers
                     if not isinstance(layer, layers_module.InputLayer)]
            calls = [(layer, [t.sample_shape for t in ins] if layer.MULTI_INPUT
                      else ins[0].sample_shape) for layer, ins in calls]
            input_shape = True
        elif kind == "Sequential":
            layers, input_shape, dtype, name = _sequential_parts(config.get("config"),
                                                                 custom_objects)
            if input_shape is None:
                input_shape = _batch_shape(f"{CONFIG}: build_config.input_shape",
                                           _entry(config, "build_config").get("input_shape"))
            model = classes["Sequential"](layers, dtype=dtype, name=name)
            calls, shape = [], input_shape
            for layer in layers if input_shape is not None else ():
                calls.append((layer, shape))
                shape = tuple(layer.compute_output_shape(shape))
        else:
            raise _Bad(f"{CONFIG} describes a {kind!r}; cconv loads Sequential and "
                       f"Functional models")
        # Keras writes {} for a model that was never compiled
        compile_config = config.get("compile_config") or None
        compiled = compile_ and compile_config is not None
        if input_shape is None:  # saved before it knew its input: no weights to read
            _read_member(z, WEIGHTS, _H5_SLACK)
        else:
            # The weights' sizes follow from the config alone: the file must hold them
            # all before any memory is spent on them, and what is made is zeros (no
            # random draws) since the file's values replace them.
            need = _weights_nbytes(calls, model.dtype)
            declared = z.getinfo(WEIGHTS).file_size
            if declared < need:
                raise _Bad(f"{WEIGHTS} holds {declared:,} bytes, fewer than the "
                           f"{need:,} the config's weights need")
            limit = _H5_SLACK + (1 + optimizers.MAX_SLOTS) * need
            data = _read_member(z, WEIGHTS, limit)
            model.build(None if input_shape is True else input_shape, initialize=False)
        if compiled:
            compile_from_config(model, compile_config)
        if not model.built:
            return model
        arrays = _read_weights(model, data, compiled,
                               skip_optimizer=compile_config is not None and not compiled)
    model.set_weights([arrays[path] for path, _, _ in _h5_weight_paths(model)])
    if compiled:
        opt = model.optimizer
        first = len(opt.scalars())
        slots = [arrays[k] for k in sorted((k for k in arrays if k.startswith("optimizer/")
                                            and int(k.rsplit("/", 1)[1]) >= first),
                                           key=lambda k: int(k.rsplit("/", 1)[1]))]
        iterations = int(arrays["optimizer/vars/0"])
        model._take_trainable()  # the slots belong to the weights trainable now
        if slots:
            opt.set_slots([np.ascontiguousarray(a, dtype=model.dtype) for a in slots],
                          iterations)
        else:
            opt.iterations = iterations
    return model


# ---- .npz weights --------------------------------------------------------------------
def _npz_names(model):
    """The array name of each weight in an .npz file, in the model's order."""
    return [f"{i:03d}.{layer.name}.{k}"
            for i, (layer, k) in enumerate(layers_module.weight_keys(model.layers))]


def save_weights(model, path, metadata=None):
    """Write a built model's weights to an .npz file (no pickles), under a temporary name
    renamed into place. metadata, a dict of str -> str, is stored beside the weights as
    META_PREFIX + key string arrays."""
    path = os.fspath(path)
    arrays = {name: layer.params[k] for name, (layer, k) in
              zip(_npz_names(model), layers_module.weight_keys(model.layers))}
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"metadata: expected a dict of str -> str, got "
                            f"{key!r}: {value!r}")
        arrays[META_PREFIX + key] = np.array(value)
    with atomic_write(path, suffix=".npz.tmp") as f:
        np.savez(f, **arrays)


def load_weights(model, path):
    """The arrays of an .npz weights file for a built model, in the model's order of
    weights, each checked (names, float dtype, shape); a ValueError naming the file
    else."""
    path = os.fspath(path)
    keys = list(layers_module.weight_keys(model.layers))
    expected = _npz_names(model)
    try:
        with np.load(path, allow_pickle=False) as data:
            found = sorted(k for k in data.files if not k.startswith(META_PREFIX))
            if found != sorted(expected):
                raise ValueError(f"load_weights: {path} holds arrays {found}, but this "
                                 f"model expects {expected}")
            arrays = [data[k] for k in expected]
    # MemoryError: a corrupt .npy header declaring a huge shape; RuntimeError (and its
    # NotImplementedError): a flipped bit marking a member encrypted or compressed
    # by an unknown method
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, MemoryError,
            RuntimeError) as exc:
        raise ValueError(f"load_weights: cannot read {path} as an .npz file: {exc}") from exc
    except ValueError as exc:
        if str(exc).startswith("load_weights:"):
            raise
        raise ValueError(f"load_weights: {path} is not a valid weights file: {exc}") from exc
    for (layer, k), arr, key in zip(keys, arrays, expected):
        if arr.dtype.kind != "f":
            raise ValueError(f"load_weights: {path}: {key} has dtype {arr.dtype}, "
                             f"expected a float array")
        if arr.shape != layer.params[k].shape:
            raise ValueError(f"load_weights: {path}: {key} has shape {arr.shape}, "
                             f"expected {layer.params[k].shape}")
    return arrays


def read_metadata(path, key, missing):
    """The string stored under META_PREFIX + key in an .npz weights file. A ValueError
    naming the file when it cannot be read, when it lacks the entry (`missing` says what
    that means) or when the entry is not a string."""
    path = os.fspath(path)
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        # numpy reports a file that is neither .npz nor .npy as "pickled data"
        raise ValueError(f"cannot read {path} as an .npz weights file "
                         f"({type(exc).__name__})") from exc
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} holds a single .npy array, not an .npz weights file")
    with data:
        if META_PREFIX + key not in data.files:
            raise ValueError(f"{path} {missing}")
        try:
            value = data[META_PREFIX + key]
        except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{path}: cannot read its {key} entry ({exc})") from exc
    if value.dtype.kind != "U" or value.ndim != 0:
        raise ValueError(f"{path}: its {key} entry is not a string")
    return str(value)
