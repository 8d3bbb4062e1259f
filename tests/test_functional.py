"""Functional models (cconv.Model over a graph of layer calls) against independent
references: the oracle's layer-by-layer composition in float64 (forward and the
gradients of one SGD step), Keras 3 on the same weights (predictions, ten training steps,
.keras files both ways), and clear errors for hostile graphs."""
import copy
import os
import pickle

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_ENABLE_X64", "1")  # float64 in Keras needs it before jax starts

import cconv  # noqa: E402
from cconv import layers, oracle  # noqa: E402
from zoo import need  # noqa: E402

SHAPE, CLASSES = (8, 7, 2), 4


def residual(L, Input, Model):
    """A residual block (conv -> conv, added to its input) and a softmax head, written
    once for cconv and for Keras."""
    x = Input(SHAPE, name="image")
    a = L.Conv2D(3, 3, padding="same", activation="relu", name="c1")(x)
    b = L.Conv2D(3, 3, padding="same", name="c2")(a)
    s = L.Activation("tanh", name="act")(L.Add(name="add")([a, b]))
    p = L.Flatten(name="flat")(L.MaxPooling2D(name="pool")(s))
    return Model(x, L.Dense(CLASSES, activation="softmax", name="head")(p))


def siamese(L, Input, Model):
    """One Dense layer called on two inputs (shared weights), the two calls joined."""
    left, right = Input((5,), name="left"), Input((5,), name="right")
    shared = L.Dense(3, activation="tanh", name="shared")
    joined = L.Concatenate(name="join")([shared(left), shared(right)])
    return Model([left, right], L.Dense(CLASSES, activation="softmax", name="head")(joined))


def two_heads(L, Input, Model):
    """Two inputs, two branches, a merge, and two outputs given as a dict."""
    img, aux = Input(SHAPE, name="img"), Input((3,), name="aux")
    x = L.Conv2D(4, 3, activation="relu", name="conv")(img)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    y = L.Dense(4, activation="relu", name="side")(aux)
    m = L.Multiply(name="mix")([x, y])
    cls = L.Dense(CLASSES, activation="softmax", name="cls")(L.Average(name="avg")([m, x]))
    reg = L.Dense(1, name="reg")(L.Subtract(name="sub")([x, y]))
    return Model({"img": img, "aux": aux}, {"cls": cls, "reg": reg})


def ours(make, dtype="float64", seed=0):
    cconv.utils.set_random_seed(seed)
    with_dtype = lambda *a, **k: cconv.Model(*a, **k, dtype=dtype)  # noqa: E731
    return make(layers, cconv.Input, with_dtype)


def data(model, n, seed=1):
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal((n,) + shape) for shape in model._input_shapes]
    return xs[0] if len(xs) == 1 else xs


def sgd_gradients(model, x, y):
    """The gradient of one full-batch SGD step of rate 1: the weights before minus
    after."""
    before = model.get_weights()
    model.compile(cconv.optimizers.SGD(1.0), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=len(y), epochs=1, shuffle=False, verbose=0)
    after = model.get_weights()
    model.set_weights(before)
    return [b - a for b, a in zip(before, after)]


def softmax_ce_grad(logits, y):
    p = oracle.softmax(logits)
    g = p.copy()
    g[np.arange(len(y)), y] -= 1
    return p, g / len(y)


def test_residual_forward_and_gradients_are_the_oracles_composition():
    model = ours(residual)
    x = data(model, 6)
    y = np.arange(6) % CLASSES
    w1, b1, w2, b2, wd, bd = model.get_weights()
    z1 = oracle.conv2d(x, w1, b1, "same")
    a = oracle.activation("relu", z1)
    b = oracle.conv2d(a, w2, b2, "same")
    t = oracle.activation("tanh", oracle.add([a, b]))
    pooled, argmax = oracle.max_pool2d(t, (2, 2))
    flat = pooled.reshape(len(x), -1)
    probs, g_logits = softmax_ce_grad(oracle.dense(flat, wd, bd), y)
    np.testing.assert_allclose(model.predict(x, verbose=0), probs, rtol=1e-12, atol=1e-14)

    g_flat, g_wd, g_bd = oracle.dense_backward(flat, wd, g_logits)
    g_t = oracle.max_pool2d_backward(g_flat.reshape(pooled.shape), argmax, t.shape, (2, 2))
    g_sum = oracle.activation_backward("tanh", t, g_t)
    g_a_skip, g_b = oracle.add_backward(g_sum, 2)
    g_a, g_w2, g_b2 = oracle.conv2d_backward(a, w2, g_b, "same")
    g_z1 = oracle.activation_backward("relu", a, g_a + g_a_skip)
    _, g_w1, g_b1 = oracle.conv2d_backward(x, w1, g_z1, "same", need_grad_x=False)
    want = [g_w1, g_b1, g_w2, g_b2, g_wd, g_bd]
    for i, (got, w) in enumerate(zip(sgd_gradients(model, x, y), want)):
        np.testing.assert_allclose(got, w, rtol=1e-9, atol=1e-12, err_msg=f"weight {i}")


def test_a_shared_layer_sums_the_gradients_of_its_calls():
    model = ours(siamese)
    left, right = data(model, 5)
    y = np.array([0, 1, 2, 3, 1])
    ws, bs, wd, bd = model.get_weights()
    hl = oracle.activation("tanh", oracle.dense(left, ws, bs))
    hr = oracle.activation("tanh", oracle.dense(right, ws, bs))
    joined = oracle.concatenate([hl, hr], axis=-1)
    probs, g_logits = softmax_ce_grad(oracle.dense(joined, wd, bd), y)
    np.testing.assert_allclose(model.predict([left, right], verbose=0), probs, rtol=1e-12)
    g_joined, g_wd, g_bd = oracle.dense_backward(joined, wd, g_logits)
    g_hl, g_hr = oracle.concatenate_backward(g_joined, [hl.shape, hr.shape], axis=-1)
    _, g_wl, g_bl = oracle.dense_backward(left, ws, oracle.activation_backward("tanh", hl, g_hl))
    _, g_wr, g_br = oracle.dense_backward(right, ws, oracle.activation_backward("tanh", hr, g_hr))
    want = [g_wl + g_wr, g_bl + g_br, g_wd, g_bd]
    for i, (got, w) in enumerate(zip(sgd_gradients(model, [left, right], y), want)):
        np.testing.assert_allclose(got, w, rtol=1e-9, atol=1e-12, err_msg=f"weight {i}")
    # as a dict by the inputs' names too
    np.testing.assert_array_equal(model.predict({"left": left, "right": right}, verbose=0),
                                  model.predict([left, right], verbose=0))


@pytest.mark.parametrize("make", [residual, siamese, two_heads])
def test_predictions_equal_keras_on_the_same_weights(make):
    keras = need("keras", "interop")
    model = ours(make, "float32")
    theirs = make(keras.layers, keras.Input, keras.Model)
    assert [l.name for l in theirs.layers] == [l.name for l in model.layers]
    theirs.set_weights(model.get_weights())
    x = data(model, 9)
    x = {k: v.astype(np.float32) for k, v in zip(model._input_names, x)} \
        if isinstance(x, list) else x.astype(np.float32)
    if make is siamese:
        x = list(x.values())
    got, want = model.predict(x, verbose=0), theirs.predict(x, verbose=0)
    got, want = (got, want) if isinstance(got, dict) else ({"out": got}, {"out": want})
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6, err_msg=key)


def two_branch_parity(keras, dtype):
    """The two-heads model in both engines from the same weights, compiled alike."""
    model = ours(two_heads, dtype)
    theirs = two_heads(keras.layers, keras.Input, keras.Model)
    theirs.set_weights(model.get_weights())
    compile_args = lambda m: dict(  # noqa: E731
        optimizer=m.optimizers.Adam(0.01),
        loss={"cls": "sparse_categorical_crossentropy", "reg": "mse"},
        loss_weights={"cls": 1.0, "reg": 0.5})
    model.compile(**compile_args(cconv))
    theirs.compile(**compile_args(keras))
    return model, theirs


def test_two_branch_training_follows_keras_for_ten_steps():
    keras = need("keras", "interop")
    before = keras.config.floatx()
    keras.config.set_floatx("float64")
    try:
        model, theirs = two_branch_parity(keras, "float64")
        rng = np.random.default_rng(5)
        start = model.get_weights()
        for step in range(10):
            x = {"img": rng.standard_normal((8,) + SHAPE), "aux": rng.standard_normal((8, 3))}
            y = {"cls": rng.integers(0, CLASSES, 8), "reg": rng.standard_normal(8)}
            logs = model.fit(x, y, batch_size=8, shuffle=False, verbose=0).history
            want = theirs.train_on_batch(x, y, return_dict=True)
            for key in ("loss", "cls_loss", "reg_loss"):
                assert abs(logs[key][0] - float(want[key])) <= 1e-5 * max(1, abs(want[key])), \
                    (step, key, logs[key][0], want[key])
            for i, (g, w) in enumerate(zip(model.get_weights(), theirs.get_weights())):
                np.testing.assert_allclose(g, w, rtol=0, atol=1e-5 * max(1, np.abs(w).max()),
                                           err_msg=f"step {step}: weight {i}")
        assert min(np.abs(a - b).max() for a, b in zip(start, model.get_weights())) > 0
    finally:
        keras.config.set_floatx(before)


@pytest.mark.parametrize("make", [residual, siamese, two_heads])
def test_keras_files_cross_both_ways(make, tmp_path):
    keras = need("keras", "interop")
    need("h5py", "h5")
    model = ours(make, "float32")
    x = data(model, 7)
    x = [a.astype(np.float32) for a in x] if isinstance(x, list) else x.astype(np.float32)
    if make is two_heads:
        x = dict(zip(model._input_names, x))
    flat = lambda p: list(p.values()) if isinstance(p, dict) else (  # noqa: E731
        [p] if isinstance(p, np.ndarray) else list(p))
    model.save(tmp_path / "ours.keras")
    theirs = keras.models.load_model(tmp_path / "ours.keras")
    # the order of the layers is the order of the file's weights: Keras's own
    assert [e["name"] for e in model.get_config()["layers"]] == [l.name for l in theirs.layers]
    for g, w in zip(flat(model.predict(x, verbose=0)), flat(theirs.predict(x, verbose=0))):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    theirs.set_weights([w * 0.5 for w in theirs.get_weights()])
    theirs.save(tmp_path / "theirs.keras")
    back = cconv.models.load_model(tmp_path / "theirs.keras")
    assert [type(l) for l in back.layers] == [type(l) for l in model.layers]
    assert back.get_config()["input_layers"] == theirs.get_config()["input_layers"]
    for g, w in zip(flat(back.predict(x, verbose=0)), flat(theirs.predict(x, verbose=0))):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_loss_weights_and_a_shared_layer_train_as_in_keras():
    """Three SGD steps of the siamese model with loss_weights=[0.5] (a single output):
    the shared layer's summed gradients and the halved loss, against Keras's."""
    keras = need("keras", "interop")
    model = ours(siamese, "float32")
    theirs = siamese(keras.layers, keras.Input, keras.Model)
    theirs.set_weights(model.get_weights())
    for m, engine in ((model, cconv), (theirs, keras)):
        m.compile(engine.optimizers.SGD(0.5), "sparse_categorical_crossentropy",
                  loss_weights=[0.5])
    rng = np.random.default_rng(4)
    for step in range(3):
        x = [rng.standard_normal((6, 5)).astype(np.float32) for _ in range(2)]
        y = rng.integers(0, CLASSES, 6)
        got = model.fit(x, y, batch_size=6, verbose=0).history["loss"][0]
        want = float(theirs.train_on_batch(x, y))
        assert abs(got - want) <= 1e-5, (step, got, want)
        for g, w in zip(model.get_weights(), theirs.get_weights()):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, err_msg=f"step {step}")


def test_a_compiled_two_output_model_keeps_its_training_state_across_keras(tmp_path):
    keras = need("keras", "interop")
    need("h5py", "h5")
    model, theirs = two_branch_parity(keras, "float32")
    rng = np.random.default_rng(8)
    x = {"img": rng.standard_normal((8,) + SHAPE).astype(np.float32),
         "aux": rng.standard_normal((8, 3)).astype(np.float32)}
    y = {"cls": rng.integers(0, CLASSES, 8), "reg": rng.standard_normal(8)}
    model.fit(x, y, batch_size=8, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    again = cconv.models.load_model(tmp_path / "m.keras")
    a = again.fit(x, y, batch_size=8, shuffle=False, verbose=0).history["loss"][0]
    b = float(loaded.train_on_batch(x, y, return_dict=True)["loss"])
    assert abs(a - b) <= 1e-4 * max(1, abs(b))


def test_copies_pickles_and_clones_are_models_of_their_own():
    model = ours(siamese)
    x = data(model, 4)
    want = model.predict(x, verbose=0)
    for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model)), copy.copy(model)):
        np.testing.assert_array_equal(other.predict(x, verbose=0), want)
        other.set_weights([w + 1 for w in other.get_weights()])
        np.testing.assert_array_equal(model.predict(x, verbose=0), want)
    clone = cconv.models.clone_model(model)
    assert clone.get_config() == model.get_config()
    shared = [l for l in clone.layers if l.name == "shared"]
    assert len(shared) == 1 and len(clone._nodes_of(shared[0])) == 2
    rebuilt = cconv.Model.from_config(model.get_config())
    rebuilt.set_weights(model.get_weights())
    np.testing.assert_array_equal(rebuilt.predict(x, verbose=0), want)


@pytest.mark.parametrize("make", [residual, siamese, two_heads])
def test_onnx_export_of_a_graph_runs_as_predict(make, tmp_path):
    need("onnx", "onnx")
    ort = need("onnxruntime", "test")
    model = ours(make, "float32")
    model.export(tmp_path / "m.onnx", verbose=False)
    x = data(model, 3)
    xs = [a.astype(np.float32) for a in (x if isinstance(x, list) else [x])]
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    names = [i.name for i in session.get_inputs()]
    got = session.run(None, dict(zip(names, xs)))
    want = model.predict(dict(zip(model._input_names, xs)) if len(xs) > 1 else xs[0],
                         verbose=0)
    want = list(want.values()) if isinstance(want, dict) else (
        [want] if isinstance(want, np.ndarray) else want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_summary_has_the_connected_to_column():
    lines = []
    ours(siamese).summary(print_fn=lines.append)
    table = lines[0]
    assert "Connected to" in table
    row = next(r for r in table.splitlines() if r.startswith("join"))
    assert "shared[0][0], shared[1][0]" in row
    assert next(r for r in table.splitlines() if r.startswith("left")).rstrip().endswith("-")


def test_a_chain_inside_a_graph_still_fuses():
    inp = cconv.Input((12, 12, 1))
    a = layers.Conv2D(4, 3, activation="relu")(inp)
    b = layers.Flatten()(layers.MaxPooling2D()(a))
    c = layers.Flatten()(layers.Conv2D(2, 1)(a))
    model = cconv.Model(inp, layers.Concatenate()([b, c]))
    fused = [type(s).__name__ for s in model._steps(True)]
    assert "ConvPool" not in fused  # a is read twice: no chain through it
    inp = cconv.Input((12, 12, 1))
    x = layers.MaxPooling2D()(layers.Conv2D(4, 3, activation="relu")(inp))
    y = layers.Dense(3)(layers.Flatten()(x))
    model = cconv.Model(inp, layers.Concatenate()([y, layers.Dense(2)(layers.Flatten()(x))]))
    assert any(type(s).__name__ == "ConvPool" for s in model._steps(True))


def test_inference_holds_only_the_widest_cut():
    """A long chain of wide layers beside the input: the chunk is set by the two widest
    tensors alive at once, not by the sum over all layers."""
    inp = cconv.Input((16, 16, 4))
    x = inp
    for _ in range(6):
        x = layers.Activation("relu")(x)
    model = cconv.Model(inp, layers.Add()([x, inp]))
    per_sample = 16 * 16 * 4 * 4
    chunk = model._inference_chunk()
    assert chunk * 3 * per_sample <= cconv.model.INFERENCE_CHUNK_BYTES
    assert chunk * 4 * per_sample > cconv.model.INFERENCE_CHUNK_BYTES


def test_hostile_graphs_get_clear_errors():
    inp, other = cconv.Input((4,)), cconv.Input((4,), name="other")
    h = layers.Dense(3)(other)
    with pytest.raises(ValueError, match="disconnected"):
        cconv.Model(inp, layers.Add()([layers.Dense(3)(inp), h]))
    with pytest.raises(ValueError, match="shape"):
        layers.Add()([inp, cconv.Input((5,))])
    with pytest.raises(TypeError, match="outputs"):
        cconv.Model(inp, np.zeros((1, 4)))
    with pytest.raises(TypeError, match="KerasTensor"):
        layers.Dense(3)(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="made by cconv.Input"):
        cconv.Model(h, layers.Dense(2)(h))
    dense = layers.Dense(2)
    dense(inp)
    with pytest.raises(ValueError, match="first call"):
        dense(cconv.Input((6,)))
    with pytest.raises(ValueError, match="unique"):
        cconv.Model(inp, layers.Dense(2, name="d")(layers.Dense(2, name="d")(inp)))
    # a cycle can only be made by rewiring a node by hand; it is found, not followed
    a = layers.Dense(4)(inp)
    b = layers.Dense(4)(a)
    a.node.inputs = [b]
    with pytest.raises(ValueError, match="cycle"):
        cconv.Model(inp, b)
    with pytest.raises(TypeError, match="arithmetic"):
        inp + inp
    model = cconv.Model([inp, other], [layers.Dense(2, name="o1")(inp), h])
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="2 inputs"):
        model.predict(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="keys"):
        model.predict({"input_layer": np.zeros((3, 4))})
    with pytest.raises(ValueError, match="loss"):
        model.compile("sgd", loss=["mse"])
    with pytest.raises(ValueError, match="name no output"):
        model.compile("sgd", loss={"nope": "mse", "o1": "mse"})


def test_the_residual_example_trains_on_mnist(mnist_dir):
    """examples/resnet_mnist.py on 3,000 images for 2 epochs: well above chance (0.1)."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, os.path.join(root, "examples", "resnet_mnist.py"),
                           "--epochs", "2", "--train", "3000", "--n", "256"],
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, CCONV_DATA_DIR=mnist_dir))
    assert done.returncode == 0, done.stderr[-2000:]
    accuracy = float(done.stdout.split("final test accuracy")[1].split()[0])
    assert accuracy > 0.2, done.stdout
