"""The ReLU, LeakyReLU, ELU and Softmax layers against Keras 3 itself (KERAS_BACKEND=jax
by default; skipped, saying so, without Keras), at their defaults and at other options:
between layers with weights, the same weights give Keras's outputs, one SGD step gives
Keras's weights, and .keras files cross both ways with the same configs."""
import json
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_ENABLE_X64", "1")  # as the other Keras tests: jax starts once
from zoo import (assert_one_sgd_step_as_keras, file_layers, layer_configs, need,  # noqa: E402
                 unnamed)

need("h5py", "h5")
keras = need("keras", "interop")

import cconv  # noqa: E402
from cconv import layers  # noqa: E402

PREDICT_TOL = dict(rtol=1e-5, atol=1e-6)
SHAPE = (6, 5, 3)
NEW = ("ReLU", "LeakyReLU", "ELU", "Softmax")
# (label, the layer in module L, whether it is a table row's twin)
VARIANTS = [
    ("relu", lambda L: L.ReLU()),
    ("relu_capped_6", lambda L: L.ReLU(max_value=6.0)),
    ("relu_all_options", lambda L: L.ReLU(max_value=0.9, negative_slope=0.15, threshold=0.1)),
    ("relu_threshold", lambda L: L.ReLU(threshold=0.2)),
    ("leaky_default", lambda L: L.LeakyReLU()),
    ("leaky_0.2", lambda L: L.LeakyReLU(negative_slope=0.2)),
    ("leaky_0.05", lambda L: L.LeakyReLU(negative_slope=0.05)),
    ("elu", lambda L: L.ELU()),
    ("elu_0.4", lambda L: L.ELU(alpha=0.4)),
    ("softmax_channels", lambda L: L.Softmax()),
    ("softmax_rows", lambda L: L.Softmax(axis=1)),
    ("softmax_image", lambda L: L.Softmax(axis=[1, 2])),
]
LABELS = [v[0] for v in VARIANTS]
MAKE = dict(VARIANTS)


def network(L, label):
    """conv -> the layer -> conv -> flatten -> softmax head: the layer's gradient moves
    the first conv's weights. The first conv's tanh keeps a softmax across positions
    from cancelling its bias (a shift along the softmax's axes changes nothing)."""
    return [L.Conv2D(4, 3, activation="tanh", bias_initializer="random_normal"),
            MAKE[label](L),
            L.Conv2D(3, 2, activation="tanh"), L.Flatten(), L.Dense(3, activation="softmax")]


def twins(label, seed=0):
    cconv.utils.set_random_seed(seed)
    ours = cconv.Sequential([layers.Input(SHAPE)] + network(layers, label))
    theirs = keras.Sequential([keras.Input(SHAPE)] + network(keras.layers, label))
    theirs.set_weights(ours.get_weights())
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((8,) + SHAPE).astype(np.float32)
    return ours, theirs, x, rng.integers(0, 3, len(x))


@pytest.mark.parametrize("label", LABELS)
def test_same_weights_same_outputs_as_keras(label):
    ours, theirs, x, _ = twins(label)
    np.testing.assert_allclose(ours.predict(x, verbose=0), theirs.predict(x, verbose=0),
                               **PREDICT_TOL)
    conv_out = ours.layers[0].forward(x)
    inner = keras.Model(theirs.inputs, theirs.layers[1].output)
    np.testing.assert_allclose(ours.layers[1].forward(conv_out), inner.predict(x, verbose=0),
                               **PREDICT_TOL)


@pytest.mark.parametrize("label", LABELS)
def test_one_sgd_step_gives_keras_weights(label):
    ours, theirs, x, y = twins(label, seed=1)
    assert_one_sgd_step_as_keras(ours, theirs, x, y, label)


def test_a_last_softmax_layer_folds_into_the_loss_as_keras_computes_it():
    """Softmax() closing the model: cconv folds it into the cross-entropy (exact
    gradient from the logits); Keras takes the log of its clipped output. One step
    agrees."""
    def net(L):
        return [L.Conv2D(3, 3), L.Flatten(), L.Dense(4), L.Softmax()]
    cconv.utils.set_random_seed(4)
    ours = cconv.Sequential([layers.Input(SHAPE)] + net(layers))
    theirs = keras.Sequential([keras.Input(SHAPE)] + net(keras.layers))
    theirs.set_weights(ours.get_weights())
    rng = np.random.default_rng(4)
    x = rng.standard_normal((8,) + SHAPE).astype(np.float32)
    assert_one_sgd_step_as_keras(ours, theirs, x, rng.integers(0, 4, 8), "softmax last")
    assert ours._folded()


@pytest.mark.parametrize("label", ["relu_all_options", "leaky_0.05", "elu_0.4",
                                   "softmax_image", "relu"])
def test_keras_files_cross_both_ways(tmp_path, label):
    cconv.utils.set_random_seed(2)
    ours = cconv.Sequential([layers.Input(SHAPE)] + network(layers, label))
    keras.utils.set_random_seed(2)
    theirs = keras.Sequential([keras.Input(SHAPE)] + network(keras.layers, label))
    ours.save(tmp_path / "ours.keras")
    theirs.save(tmp_path / "theirs.keras")
    mine, keras_own = (layer_configs(file_layers(tmp_path / f"{who}.keras"), NEW)
                       for who in ("ours", "theirs"))
    assert mine and mine == keras_own
    x = np.random.default_rng(3).standard_normal((6,) + SHAPE).astype(np.float32)
    np.testing.assert_allclose(keras.models.load_model(tmp_path / "ours.keras").predict(
        x, verbose=0), ours.predict(x, verbose=0), **PREDICT_TOL)
    loaded = cconv.models.load_model(tmp_path / "theirs.keras")
    assert [type(l).__name__ for l in loaded.layers] == [type(l).__name__ for l in ours.layers]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), theirs.predict(x, verbose=0),
                               **PREDICT_TOL)


@pytest.mark.parametrize("label", LABELS)
def test_configs_round_trip_and_match_keras(label):
    ours, theirs = MAKE[label](layers), MAKE[label](keras.layers)
    want = json.loads(json.dumps(theirs.get_config()))
    got = json.loads(json.dumps(ours.get_config()))
    assert unnamed(got) == unnamed(want)
    again = type(ours).from_config(want)
    assert json.loads(json.dumps(again.get_config())) == {**got, "name": want["name"]}


def test_default_names_are_keras_names():
    for name in NEW:
        assert cconv.utils.default_name(getattr(layers, name)) == \
            keras.src.utils.naming.to_snake_case(name)


def test_leaky_relus_alpha_is_keras_older_name():
    with pytest.warns(UserWarning, match="alpha is deprecated"):
        layer = layers.LeakyReLU(alpha=0.1)
    assert layer.negative_slope == 0.1


@pytest.mark.parametrize("call, error, match", [
    (lambda: layers.ReLU(max_value=-1.0), ValueError, "max_value: expected a finite float"),
    (lambda: layers.ReLU(negative_slope=-0.5), ValueError, "negative_slope: expected"),
    (lambda: layers.ReLU(threshold=None), ValueError, "threshold: expected"),
    (lambda: layers.LeakyReLU(negative_slope=-0.3), ValueError, "negative_slope: expected"),
    (lambda: layers.ELU(alpha="one"), ValueError, "alpha: expected a finite float"),
    (lambda: layers.Softmax(axis=1.5), TypeError, "axis: expected an int"),
    (lambda: cconv.Sequential([layers.Input(SHAPE), layers.Softmax(axis=4)]), ValueError,
     "Softmax: axis 4 is out of range"),
    (lambda: cconv.Sequential([layers.Input(SHAPE), layers.Softmax(axis=0)]), ValueError,
     "Softmax: axis 0 is the batch axis"),
    (lambda: cconv.Sequential([layers.Input(SHAPE), layers.Softmax(axis=[1, -4])]),
     ValueError, "Softmax: axis -4 is the batch axis"),
])
def test_bad_arguments_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call()
