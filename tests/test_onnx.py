"""ONNX export (cconv.export, Sequential.export): onnxruntime, another engine, runs the
exported file and must give cconv's predictions (float32: within 1e-5 relatively, and
1e-5 of the outputs' scale absolutely: the TF tutorial's logits, up to 18 here, come
out of a 3136-term and a 1024-term sum, whose rounding leaves each engine about 1e-6 of
that scale from a float64 run, measured 2.8e-5 for cconv and 1.2e-5 for onnxruntime
in absolute terms), for the
book's chapter-10 network, the TF tutorial's, keras.io's MNIST convnet and every layer
and activation alone, at batch sizes that the export never saw (its batch axis is
dynamic). Every layer class and every activation of the table must have a rule and a
case here."""
import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cconv
from cconv import activations, export, layers, presets
from conftest import same_cconv_env
from zoo import MODELS, need

onnx = need("onnx", "test")
ort = need("onnxruntime", "test")

ROOT = Path(__file__).resolve().parents[1]
KERAS_CONVNET = ROOT / "examples" / "keras_mnist_convnet.py"
BATCHES = (1, 5)  # the file holds no batch size: any must run
MERGES = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Concatenate")


def randomize(model, seed=0):
    """Weights that make every term count: the initial ones moved by noise (biases start
    at zero, where a lost bias would pass unseen), moving variances in [0.5, 2]."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for key in layer.weight_keys():
            w = layer.params[key]
            if key == "moving_variance":
                new = rng.uniform(0.5, 2.0, w.shape)
            else:
                new = w + rng.normal(0, 0.3 * (w.std() or 1.0), w.shape)
            layer.params[key] = new.astype(w.dtype)
    return model


def run_onnx(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (name,) = [i.name for i in session.get_inputs()]
    return session.run(None, {name: x})[0]


def assert_round_trip(model, tmp_path, draw=None, seed=1):
    """Export model; onnxruntime's output equals predict's at each of BATCHES, on inputs
    draw(rng, shape) (by default pixels: uniform in [0, 1))."""
    path = tmp_path / "model.onnx"
    model.export(path, verbose=False)
    loaded = onnx.load(str(path))
    batch_dims = [v.type.tensor_type.shape.dim[0] for v in
                  (*loaded.graph.input, *loaded.graph.output)]
    assert all(d.dim_param == "batch" and not d.dim_value for d in batch_dims)
    assert [(o.domain, o.version) for o in loaded.opset_import] == [("", export.OPSET)]
    # plain ONNX operators only, fused runs included: no runtime's own extensions
    assert all(node.domain == "" for node in loaded.graph.node)
    rng = np.random.default_rng(seed)
    for n in BATCHES:
        x = (draw or np.random.Generator.random)(rng, (n, *model.input_shape))
        x = x.astype(np.float32)
        got = run_onnx(path, x)
        want = model.predict(x, verbose=0)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5,
                                   atol=1e-5 * max(1.0, np.abs(want).max()))


def keras_convnet(monkeypatch):
    """keras.io's MNIST convnet as examples/keras_mnist_convnet.py builds it: its lines
    up to model.summary() run, on a tiny stand-in for MNIST."""
    tiny = np.zeros((2, 28, 28), np.uint8), np.zeros(2, np.uint8)
    monkeypatch.setattr(cconv.datasets.mnist, "load_data", lambda path=None: (tiny, tiny))
    source = KERAS_CONVNET.read_text()
    head = source[:source.index("model.summary()")]
    scope = {"__name__": "keras_convnet"}
    exec(compile(head, str(KERAS_CONVNET), "exec"), scope)
    return scope["model"]


NETWORKS = {
    "chapter10": lambda mp: presets.build_fixed(),
    "tf_tutorial": lambda mp: presets.build_tf(),
    "keras_convnet": keras_convnet,
    **{name: (lambda mp, build=build: build()) for name, build in MODELS.items()},
}


@pytest.mark.parametrize("name", NETWORKS)
def test_networks_run_in_onnxruntime_as_in_cconv(name, tmp_path, monkeypatch, capsys):
    model = randomize(NETWORKS[name](monkeypatch))
    capsys.readouterr()
    assert_round_trip(model, tmp_path)


# ---- each layer alone ----------------------------------------------------------------
def _conv_cases():
    steps = [(1, 1), (2, 1), ((2, 3), 1), (3, 1), (1, 2), (1, (2, 1))]
    for padding, (strides, dilation), kernel in itertools.product(
            ("valid", "same"), steps, (3, (2, 3))):
        yield (f"Conv2D-{padding}-s{strides}-d{dilation}-k{kernel}",
               lambda p=padding, s=strides, d=dilation, k=kernel:
               layers.Conv2D(4, k, strides=s, dilation_rate=d, padding=p),
               (9, 8, 3))
    yield "Conv2D-relu-nobias", lambda: layers.Conv2D(2, 2, activation="relu",
                                                      use_bias=False), (5, 6, 1)


def _pool_cases():
    windows = [(2, None), (3, None), (3, 2), ((3, 2), 1), (2, (1, 2))]
    for cls, padding, (pool, strides) in itertools.product(
            (layers.MaxPooling2D, layers.AveragePooling2D), ("valid", "same"), windows):
        yield (f"{cls.__name__}-{padding}-p{pool}-s{strides}",
               lambda c=cls, p=pool, s=strides, pad=padding: c(p, strides=s, padding=pad),
               (7, 9, 3))


LAYER_CASES = [
    *_conv_cases(),
    *_pool_cases(),
    ("Dense", lambda: layers.Dense(4), (6,)),
    ("Dense-rank3-nobias", lambda: layers.Dense(3, use_bias=False), (4, 5, 2)),
    ("Dense-tanh", lambda: layers.Dense(5, activation="tanh"), (7,)),
    ("Activation", lambda: layers.Activation("tanh"), (4, 3)),
    ("Dropout", lambda: layers.Dropout(0.5), (4, 3)),
    ("Flatten", lambda: layers.Flatten(), (3, 4, 2)),
    ("Rescaling", lambda: layers.Rescaling(1 / 255, offset=-0.5), (3, 3, 2)),
    ("Rescaling-channels", lambda: layers.Rescaling((2.0, -1.0), offset=(0.5, 1.0)),
     (3, 3, 2)),
    ("Reshape", lambda: layers.Reshape((-1, 3)), (4, 3, 2)),
    ("ZeroPadding2D", lambda: layers.ZeroPadding2D(), (3, 4, 2)),
    ("ZeroPadding2D-uneven", lambda: layers.ZeroPadding2D(((1, 2), (0, 3))), (3, 4, 2)),
    ("GlobalAveragePooling2D", lambda: layers.GlobalAveragePooling2D(), (5, 4, 3)),
    ("GlobalAveragePooling2D-keepdims",
     lambda: layers.GlobalAveragePooling2D(keepdims=True), (5, 4, 3)),
    ("GlobalMaxPooling2D", lambda: layers.GlobalMaxPooling2D(), (5, 4, 3)),
    ("GlobalMaxPooling2D-keepdims", lambda: layers.GlobalMaxPooling2D(keepdims=True),
     (5, 4, 3)),
    ("ReLU", lambda: layers.ReLU(), (4, 3)),
    ("ReLU-6", lambda: layers.ReLU(max_value=6), (4, 3)),
    ("ReLU-options", lambda: layers.ReLU(max_value=1.5, negative_slope=0.1,
                                         threshold=0.5), (4, 3)),
    ("ReLU-slope", lambda: layers.ReLU(negative_slope=0.25), (4, 3)),
    ("LeakyReLU", lambda: layers.LeakyReLU(), (4, 3)),
    ("LeakyReLU-0.2", lambda: layers.LeakyReLU(0.2), (4, 3)),
    ("ELU", lambda: layers.ELU(), (4, 3)),
    ("ELU-alpha", lambda: layers.ELU(0.5), (4, 3)),
    ("Softmax", lambda: layers.Softmax(), (4, 3)),
    ("Softmax-axis1", lambda: layers.Softmax(axis=1), (4, 3)),
    ("Softmax-axes", lambda: layers.Softmax(axis=[1, 2]), (4, 3, 2)),
    ("BatchNormalization", lambda: layers.BatchNormalization(), (4, 3, 5)),
    ("BatchNormalization-flat-plain",
     lambda: layers.BatchNormalization(center=False, scale=False, epsilon=0.1), (6,)),
    ("KernelPooling-max", lambda: layers.KernelPooling("max"), (4, 3, 5)),
    ("KernelPooling-mean", lambda: layers.KernelPooling("mean"), (4, 3, 5)),
    ("KernelPooling-sum", lambda: layers.KernelPooling("sum"), (4, 3, 5)),
]


@pytest.mark.parametrize("make, shape", [case[1:] for case in LAYER_CASES],
                         ids=[case[0] for case in LAYER_CASES])
def test_each_layer_alone_runs_as_in_cconv(make, shape, tmp_path):
    model = randomize(cconv.Sequential([layers.Input(shape), make()]))
    assert_round_trip(model, tmp_path, draw=lambda rng, shape: rng.normal(0, 2, shape))


@pytest.mark.parametrize("name", activations.NAMES)
def test_each_activation_alone_runs_as_in_cconv(name, tmp_path):
    model = cconv.Sequential([layers.Input((4, 5)), layers.Activation(name)])
    assert_round_trip(model, tmp_path, draw=lambda rng, shape: rng.normal(0, 3, shape))


def test_every_layer_and_activation_has_a_rule_and_a_case():
    classes = {cls for table in (layers.KERAS_LAYERS, layers.CCONV_LAYERS)
               for cls in table.values()}
    no_rule = sorted(cls.__name__ for cls in classes if cls.__name__ not in export.RULES)
    assert not no_rule, f"layers without an ONNX export rule in cconv.export.RULES: {no_rule}"
    covered = {type(make()).__name__ for _, make, _ in LAYER_CASES}
    untested = sorted(cls.__name__ for cls in classes
                      if cls.__name__ not in covered | set(MERGES))
    assert not untested, f"layers without a case in LAYER_CASES: {untested}"
    assert sorted(export.ACTIVATIONS) == sorted(activations.NAMES), \
        "cconv.export.ACTIVATIONS must have one rule per row of cconv.activations.TABLE"


# ---- graphs --------------------------------------------------------------------------
def test_a_network_of_uneven_paddings_runs_as_in_cconv(tmp_path):
    """Odd sizes everywhere, so that every 'same' window has an odd pixel of padding to
    place (at the bottom and right, as Keras), through consecutive NCHW operators."""
    model = randomize(cconv.Sequential([
        layers.Input((13, 11, 2)),
        layers.Conv2D(3, 3, strides=2, padding="same", activation="relu"),
        layers.MaxPooling2D(2, padding="same"),
        layers.Conv2D(4, (2, 3), dilation_rate=2, padding="same"),
        layers.AveragePooling2D(2, strides=(1, 2), padding="same"),
        layers.BatchNormalization(),
        layers.ZeroPadding2D(((0, 1), (2, 0))),
        layers.MaxPooling2D(3, strides=2, padding="same"),
        layers.Flatten(),
        layers.Dense(3, activation="softmax"),
    ]))
    assert_round_trip(model, tmp_path)


def test_export_graph_stores_a_shared_layer_once(tmp_path):
    """The graph description of the functional API: one Dense applied twice, both
    results as outputs; its weights are written once."""
    dense = layers.Dense(4, name="shared")
    dense.build((4,), np.float32, np.random.default_rng(0))
    dense.params["bias"] = np.linspace(-1, 1, 4).astype(np.float32)
    path = tmp_path / "shared.onnx"
    model = export.export_graph(path, [(dense, ["x"], "once"), (dense, ["once"], "twice")],
                                [("x", (4,))], ["once", "twice"], np.float32)
    assert len(model.graph.initializer) == 2
    x = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    once, twice = session.run(["once", "twice"], {"x": x})
    want = dense.forward(x)
    np.testing.assert_allclose(once, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(twice, dense.forward(want), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name, expected", [
    ("Add", lambda a, b, c: a + b + c),
    ("Subtract", lambda a, b: a - b),
    ("Multiply", lambda a, b, c: a * b * c),
    ("Average", lambda a, b, c: (a + b + c) / 3),
    ("Maximum", lambda a, b, c: np.maximum(np.maximum(a, b), c)),
    ("Concatenate", lambda a, b: np.concatenate([a, b], axis=-1)),
    ("Concatenate-axis1", lambda a, b: np.concatenate([a, b], axis=1)),
])
def test_merge_rules_follow_keras(name, expected, tmp_path):
    """The merge layers' rules, by class name, on stand-ins that have what the rules
    read (Keras's semantics, computed by NumPy)."""
    cls_name, _, axis = name.partition("-axis")
    layer = type(cls_name, (), {"name": name.lower(), "built": True, "activation": None,
                                "axis": int(axis or -1)})()
    n = expected.__code__.co_argcount
    rng = np.random.default_rng(2)
    xs = [rng.normal(size=(3, 2, 4)).astype(np.float32) for _ in range(n)]
    names = [f"x{i}" for i in range(n)]
    path = tmp_path / "merge.onnx"
    export.export_graph(path, [(layer, names, "y")], [(t, (2, 4)) for t in names], ["y"],
                        np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, dict(zip(names, xs)))[0]
    np.testing.assert_allclose(got, expected(*xs), rtol=1e-6, atol=1e-6)
    assert tuple(session.get_outputs()[0].shape[1:]) == expected(*xs).shape[1:]


# ---- what export refuses -------------------------------------------------------------
def small_model(**kwargs):
    return cconv.Sequential([layers.Input((4,)), layers.Dense(2)], **kwargs)


@pytest.mark.parametrize("call, error, match", [
    (lambda m, p: m.export(p, format="tf_saved_model"), ValueError,
     "format='tf_saved_model'.*'onnx'"),
    (lambda m, p: m.export(p, input_signature=[(None, 4)]), ValueError, "input_signature"),
    (lambda m, p: m.export(p, opset_version=13), ValueError, "opset_version=13.*18"),
    (lambda m, p: m.export(p, bogus=1), TypeError, "bogus"),
])
def test_bad_arguments_are_refused(call, error, match, tmp_path):
    path = tmp_path / "m.onnx"
    with pytest.raises(error, match=match):
        call(small_model(), path)
    assert not path.exists()


def test_an_unbuilt_model_is_refused(tmp_path):
    model = cconv.Sequential([layers.Dense(2)])
    with pytest.raises(ValueError, match="not built"):
        model.export(tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


def test_float64_is_refused_naming_the_way_out(tmp_path):
    with pytest.raises(ValueError, match="float64.*float32.*set_weights"):
        small_model(dtype="float64").export(tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


def test_a_layer_without_a_rule_is_refused(tmp_path):
    class MyDense(layers.Dense):
        pass
    model = cconv.Sequential([layers.Input((4,)), MyDense(2, name="mine")])
    with pytest.raises(ValueError, match="'mine' of class MyDense has no ONNX export rule"):
        model.export(tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


def test_onnx_is_imported_by_export_alone(tmp_path):
    """import cconv, building and predicting never load onnx; export does."""
    code = ("import sys, numpy as np, cconv\n"
            "m = cconv.Sequential([cconv.layers.Input((3,)), cconv.layers.Dense(2)])\n"
            "m.predict(np.ones((1, 3)), verbose=0)\n"
            "assert 'onnx' not in sys.modules\n"
            "m.export('m.onnx', verbose=False)\n"
            "assert 'onnx' in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=same_cconv_env(),
                   check=True)


def test_without_onnx_export_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match="pip install onnx"):
        small_model().export(tmp_path / "m.onnx")


def test_export_replaces_a_file_and_says_where(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"old")
    model = randomize(small_model())
    model.export(str(path))
    assert capsys.readouterr().out == f"Saved artifact at '{path}'.\n"
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(run_onnx(path, x), model.predict(x, verbose=0), rtol=1e-5)
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
