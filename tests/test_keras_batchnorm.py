"""BatchNormalization and trainable=False against Keras 3 itself (KERAS_BACKEND=jax by
default; skipped, saying so, without Keras): outputs in training and inference mode from
the same weights, moving statistics and weights after several SGD steps of small conv
and dense nets, frozen layers (weights untouched, the others trained as Keras trains
them, optimizer slots in .keras files), .keras files both ways and configs.

Tolerances: cconv takes the batch statistics in float64 and rounds the output once,
Keras computes in float32, so outputs agree to float32 rounding of a normalised value
(PREDICT_TOL); after six SGD steps the weights and moving statistics agree within
FIT_TOL (measured: under 2e-7 + 2e-6 * |w|)."""
import os
import zipfile

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_ENABLE_X64", "1")  # as the other Keras tests: jax starts once
from zoo import file_layers, need, unnamed  # noqa: E402

h5py = need("h5py", "h5")
keras = need("keras", "interop")

import cconv  # noqa: E402
from cconv import layers  # noqa: E402

PREDICT_TOL = dict(rtol=2e-5, atol=2e-5)
FIT_TOL = dict(rtol=1e-5, atol=1e-6)
SHAPE = (6, 6, 2)


def network(L, kind, frozen=()):
    """The layers of a network of `kind` in module L (cconv.layers or keras.layers); the
    layers at the positions in `frozen` get trainable=False."""
    net = {
        # Keras's usual pattern, BN after a linear conv; BN with center/scale off; BN on
        # dense rows; a conv with an activation before its BN
        "conv": lambda: [
            L.Conv2D(4, 3, use_bias=False), L.BatchNormalization(), L.Activation("relu"),
            L.Conv2D(3, 3, activation="tanh", padding="same"),
            L.BatchNormalization(center=False, momentum=0.9, epsilon=0.01),
            L.Flatten(), L.Dense(5), L.BatchNormalization(scale=False, momentum=0.5),
            L.Activation("softmax")],
        "dense": lambda: [
            L.Flatten(), L.Dense(6), L.BatchNormalization(momentum=0.8), L.Activation("tanh"),
            L.Dense(3, activation="softmax")],
    }[kind]()
    for i in frozen:
        net[i].trainable = False
    return net


def twins(kind, seed=0, frozen=()):
    """cconv's and Keras's model of `kind` with the same weights, BN's non-trivial."""
    cconv.utils.set_random_seed(seed)
    ours = cconv.Sequential([layers.Input(SHAPE)] + network(layers, kind, frozen))
    theirs = keras.Sequential([keras.Input(SHAPE)] + network(keras.layers, kind, frozen))
    rng = np.random.default_rng(seed)
    weights = []
    for layer, k in ours._weight_keys():
        w = layer.params[k]
        if k in ("gamma", "moving_variance"):
            w = rng.uniform(0.5, 2.0, w.shape).astype(np.float32)
        elif k in ("beta", "moving_mean"):
            w = rng.standard_normal(w.shape).astype(np.float32)
        weights.append(w)
    ours.set_weights(weights)
    theirs.set_weights(weights)
    x = (rng.standard_normal((24,) + SHAPE) * 2 + 1).astype(np.float32)
    return ours, theirs, x, rng.integers(0, 5 if kind == "conv" else 3, len(x))


def keras_weight_names(model):
    return [v.name for v in model.weights]


@pytest.mark.parametrize("kind", ["conv", "dense"])
def test_weights_in_keras_order_and_names(kind):
    ours, theirs, _, _ = twins(kind)
    assert [k for _, k in ours._weight_keys()] == keras_weight_names(theirs)
    assert [w.shape for w in ours.get_weights()] == [w.shape for w in theirs.get_weights()]


@pytest.mark.parametrize("kind", ["conv", "dense"])
def test_outputs_in_inference_and_training_as_keras(kind):
    ours, theirs, x, _ = twins(kind)
    # inference: predict (folded where it applies) and each layer's own output
    np.testing.assert_allclose(ours.predict(x, verbose=0), theirs.predict(x, verbose=0),
                               **PREDICT_TOL)
    # each layer on the same input: inference first, as training moves Keras's statistics
    inputs = [x]
    for layer, keras_layer in zip(ours.layers, theirs.layers):
        got = layer.forward(inputs[-1])
        np.testing.assert_allclose(got, np.asarray(keras_layer(inputs[-1])), **PREDICT_TOL,
                                   err_msg=f"{layer.name}, inference")
        inputs.append(got)
    for layer, keras_layer, inp in zip(ours.layers, theirs.layers, inputs):
        got = layer.forward(inp, training=True)
        np.testing.assert_allclose(got, np.asarray(keras_layer(inp, training=True)),
                                   **PREDICT_TOL, err_msg=f"{layer.name}, training")


def _fit_both(ours, theirs, x, y, **fit):
    ours.compile(optimizer=cconv.optimizers.SGD(0.05, momentum=0.5),
                 loss="sparse_categorical_crossentropy")
    theirs.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.5),
                   loss="sparse_categorical_crossentropy")
    for model in (ours, theirs):
        model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, **fit)


def _assert_weights_as_keras(ours, theirs, label):
    for (layer, k), got, want in zip(ours._weight_keys(), ours.get_weights(),
                                     theirs.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, **FIT_TOL, err_msg=f"{label}: {layer.name}.{k}")


@pytest.mark.parametrize("kind", ["conv", "dense"])
def test_moving_statistics_after_fit_as_keras(kind):
    """Six SGD steps with validation after each epoch: the moving statistics (and every
    weight) as Keras's; validation, evaluate and predict update nothing."""
    ours, theirs, x, y = twins(kind, seed=1)
    start = ours.get_weights()
    _fit_both(ours, theirs, x, y, validation_data=(x[:8], y[:8]))
    _assert_weights_as_keras(ours, theirs, kind)
    for (layer, k), w0, w in zip(ours._weight_keys(), start, ours.get_weights()):
        assert not np.array_equal(w0, w), f"{layer.name}.{k} did not move: the test is void"
    before = ours.get_weights()
    ours.evaluate(x, y, verbose=0)
    ours.predict(x, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, ours.get_weights()))
    np.testing.assert_allclose(ours.predict(x, verbose=0), theirs.predict(x, verbose=0),
                               **FIT_TOL)


@pytest.mark.parametrize("kind, frozen", [("conv", (0, 1)), ("conv", (4, 6)), ("dense", (2,)),
                                          ("dense", (1, 4))])
def test_frozen_layers_as_keras(tmp_path, kind, frozen):
    """Frozen layers keep their weights (a frozen BN its moving statistics too: it runs in
    inference mode), the others train as Keras trains them (gradients flow through the
    frozen ones), and each .keras file holds slots for the trainable weights alone."""
    ours, theirs, x, y = twins(kind, seed=2, frozen=frozen)
    start = ours.get_weights()
    _fit_both(ours, theirs, x, y)
    _assert_weights_as_keras(ours, theirs, f"{kind} frozen {frozen}")
    frozen_layers = {ours.layers[i] for i in frozen}
    for (layer, k), w0, w in zip(ours._weight_keys(), start, ours.get_weights()):
        if layer in frozen_layers:
            assert np.array_equal(w0, w), f"frozen {layer.name}.{k} changed"
        else:
            assert not np.array_equal(w0, w), f"{layer.name}.{k} did not train"
    ours.save(tmp_path / "ours.keras")
    theirs.save(tmp_path / "theirs.keras")
    trainable = sum(1 for v in theirs.trainable_weights)
    for who in ("ours", "theirs"):
        with zipfile.ZipFile(tmp_path / f"{who}.keras") as z, \
                h5py.File(z.open("model.weights.h5")) as f:
            assert len(f["optimizer/vars"]) == 2 + trainable, who  # one momentum each


@pytest.mark.parametrize("kind, frozen", [("conv", ()), ("conv", (0, 4)), ("dense", (2, 4))])
def test_keras_files_cross_both_ways(tmp_path, kind, frozen):
    """Each engine's file, with BN and frozen layers, trained (optimizer slots) and
    saved: the same layer configs, and each engine loads the other's with its weights,
    its trainable flags and its optimizer state, and trains on from it as the other."""
    ours, theirs, x, y = twins(kind, seed=3, frozen=frozen)
    _fit_both(ours, theirs, x, y)
    ours.save(tmp_path / "ours.keras")
    theirs.save(tmp_path / "theirs.keras")
    # BatchNormalization's entries as Keras writes them, and every layer's trainable
    mine, keras_own = ([(e["class_name"], e["config"].get("trainable"),
                         (unnamed(e["config"]), e.get("build_config"))
                         if e["class_name"] == "BatchNormalization" else None)
                        for e in file_layers(tmp_path / f"{who}.keras")]
                       for who in ("ours", "theirs"))
    assert mine == keras_own
    by_keras = keras.models.load_model(tmp_path / "ours.keras")
    by_us = cconv.models.load_model(tmp_path / "theirs.keras")
    assert [l.trainable for l in by_us.layers] == [l.trainable for l in theirs.layers]
    assert [l.trainable for l in by_keras.layers] == [l.trainable for l in ours.layers]
    for got, want in zip(by_us.get_weights(), theirs.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(by_keras.get_weights(), ours.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    # one more epoch from each loaded file, momentum included: as the other engine
    for a, b in ((by_us, theirs), (ours, by_keras)):
        for model in (a, b):
            model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        _assert_weights_as_keras(a, b, f"{kind} frozen {frozen}")


def test_configs_as_keras():
    kwargs = dict(axis=-1, momentum=0.7, epsilon=0.01, center=False, scale=True,
                  gamma_initializer="random_normal", moving_variance_initializer="ones",
                  trainable=False)
    ours = layers.BatchNormalization(**kwargs, name="bn")
    theirs = keras.layers.BatchNormalization(**kwargs, name="bn")
    assert unnamed(ours.get_config()) == unnamed(theirs.get_config())
    again = layers.BatchNormalization.from_config(theirs.get_config())
    assert again.get_config() == ours.get_config() and again.trainable is False
    for cls in ("Conv2D", "Dense"):
        args = (3, 2) if cls == "Conv2D" else (3,)
        config = getattr(keras.layers, cls)(*args, trainable=False).get_config()
        assert getattr(layers, cls).from_config(config).trainable is False
        assert getattr(layers, cls)(*args, trainable=False).get_config()["trainable"] \
            is config["trainable"] is False


def _printed_counts(model):
    lines = []
    model.summary(print_fn=lambda *a, **k: lines.append(a[0] if a else ""))
    text = "\n".join(lines)
    counts = {}
    for what in ("Total", "Trainable", "Non-trainable"):
        line = next(l for l in text.splitlines() if l.strip().startswith(f"{what} params:"))
        counts[what] = int(line.split(":")[1].split("(")[0].strip().replace(",", ""))
    return counts


@pytest.mark.parametrize("kind, frozen", [("conv", ()), ("conv", (0, 6)), ("dense", (2,))])
def test_summary_counts_as_keras(kind, frozen):
    ours, theirs, _, _ = twins(kind, frozen=frozen)
    assert _printed_counts(ours) == _printed_counts(theirs)


@pytest.mark.parametrize("call, match", [
    (lambda: layers.BatchNormalization(gamma_regularizer="l2"), "gamma_regularizer"),
    (lambda: layers.BatchNormalization(beta_constraint="non_neg"), "beta_constraint"),
    (lambda: layers.BatchNormalization(renorm=True), "renorm"),
    (lambda: layers.BatchNormalization(synchronized=True), "synchronized"),
    (lambda: layers.BatchNormalization(epsilon=0), "epsilon"),
    (lambda: layers.BatchNormalization(momentum="high"), "momentum"),
    (lambda: cconv.Sequential([layers.Input((4, 4, 2)), layers.BatchNormalization(axis=1)]),
     "axis=1"),
    (lambda: layers.BatchNormalization.from_config(
        {**keras.layers.BatchNormalization(beta_regularizer="l1").get_config()}),
     "beta_regularizer"),
])
def test_arguments_cconv_cannot_honour_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()
