"""Rescaling, Reshape, ZeroPadding2D, GlobalAveragePooling2D and GlobalMaxPooling2D
against Keras 3 itself (KERAS_BACKEND=jax by default; skipped, saying so, without Keras):
each between layers with weights, so that its backward pass carries their gradients. The
same weights give Keras's predictions; one SGD step gives Keras's weights; .keras files
cross both ways with the same layer configs; bad arguments are named."""
import json
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_ENABLE_X64", "1")  # as the other Keras tests: jax starts once
from conftest import numerical_grad, rel_error  # noqa: E402
from zoo import (assert_one_sgd_step_as_keras, file_layers, layer_configs, need,  # noqa: E402
                 unnamed)

need("h5py", "h5")
keras = need("keras", "interop")

import cconv  # noqa: E402
from cconv import layers  # noqa: E402

PREDICT_TOL = dict(rtol=1e-5, atol=1e-6)
SHAPE = (6, 5, 3)
NEW = ("Rescaling", "Reshape", "ZeroPadding2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D")


def network(L, kind):
    """The layers of one network of `kind` in module L (cconv.layers or keras.layers)."""
    conv = lambda f, k=3: L.Conv2D(f, k, activation="tanh", bias_initializer="random_normal")
    head = [L.Dense(3, activation="softmax")]
    return {
        "rescaling": [L.Rescaling(1 / 4, offset=0.5), conv(4),
                      L.Rescaling([2.0, -1.0, 0.5, 3.0], offset=[0.0, 1.0, 0.0, -1.0]),
                      L.Flatten()] + head,
        "reshape": [conv(4), L.Reshape((-1, 4)), L.Dense(5, activation="tanh"),
                    L.Reshape((6, 10)), L.Flatten()] + head,
        "zero_padding": [L.ZeroPadding2D(((1, 2), (0, 1))), conv(4),
                         L.ZeroPadding2D(((2, 0), (1, 3))),
                         conv(2), L.ZeroPadding2D((0, 2)), L.Flatten()] + head,
        "global_average": [conv(6), L.GlobalAveragePooling2D()] + head,
        "global_average_keepdims": [conv(6), L.GlobalAveragePooling2D(keepdims=True),
                                    conv(5, 1), L.Flatten()] + head,
        "global_max": [conv(6), L.GlobalMaxPooling2D()] + head,
        "global_max_keepdims": [conv(6), L.GlobalMaxPooling2D(keepdims=True), conv(5, 1),
                                L.Flatten()] + head,
    }[kind]


KINDS = ["rescaling", "reshape", "zero_padding", "global_average", "global_average_keepdims",
         "global_max", "global_max_keepdims"]


def twins(kind, seed=0):
    cconv.utils.set_random_seed(seed)
    ours = cconv.Sequential([layers.Input(SHAPE)] + network(layers, kind))
    theirs = keras.Sequential([keras.Input(SHAPE)] + network(keras.layers, kind))
    theirs.set_weights(ours.get_weights())
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((8,) + SHAPE).astype(np.float32)
    return ours, theirs, x, rng.integers(0, 3, len(x))


@pytest.mark.parametrize("kind", KINDS)
def test_same_weights_same_outputs_as_keras(kind):
    ours, theirs, x, _ = twins(kind)
    assert [l.output_shape for l in ours.layers] == [
        tuple(l.output.shape[1:]) for l in theirs.layers]
    np.testing.assert_allclose(ours.predict(x, verbose=0), theirs.predict(x, verbose=0),
                               **PREDICT_TOL)
    # every new layer's own output, not only what the softmax makes of it
    out = x
    for i, layer in enumerate(ours.layers[:-1]):
        out = layer.forward(out)
        if type(layer).__name__ in NEW:
            inner = keras.Model(theirs.inputs, theirs.layers[i].output)
            np.testing.assert_allclose(out, inner.predict(x, verbose=0), **PREDICT_TOL,
                                       err_msg=f"{kind}: layer {i} {layer.name}")


@pytest.mark.parametrize("kind", KINDS)
def test_one_sgd_step_gives_keras_weights(kind):
    ours, theirs, x, y = twins(kind, seed=1)
    assert_one_sgd_step_as_keras(ours, theirs, x, y, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_keras_files_cross_both_ways(tmp_path, kind):
    cconv.utils.set_random_seed(2)
    ours = cconv.Sequential([layers.Input(SHAPE)] + network(layers, kind))
    keras.utils.set_random_seed(2)
    theirs = keras.Sequential([keras.Input(SHAPE)] + network(keras.layers, kind))
    ours.save(tmp_path / "ours.keras")
    theirs.save(tmp_path / "theirs.keras")
    # the new layers' configs, as each engine writes them, are the same
    mine, keras_own = (layer_configs(file_layers(tmp_path / f"{who}.keras"), NEW)
                       for who in ("ours", "theirs"))
    assert mine and mine == keras_own
    x = np.random.default_rng(3).standard_normal((6,) + SHAPE).astype(np.float32)
    loaded_by_keras = keras.models.load_model(tmp_path / "ours.keras")
    np.testing.assert_allclose(loaded_by_keras.predict(x, verbose=0),
                               ours.predict(x, verbose=0), **PREDICT_TOL)
    loaded_by_us = cconv.models.load_model(tmp_path / "theirs.keras")
    assert [type(l).__name__ for l in loaded_by_us.layers] == [
        type(l).__name__ for l in ours.layers]
    assert [unnamed(l.get_config()) for l in loaded_by_us.layers
            if type(l).__name__ in NEW] == [
        c for _, c, _ in keras_own]
    np.testing.assert_allclose(loaded_by_us.predict(x, verbose=0),
                               theirs.predict(x, verbose=0), **PREDICT_TOL)


def test_keras_aliases_load():
    for alias, cls in (("GlobalAvgPool2D", layers.GlobalAveragePooling2D),
                       ("GlobalMaxPool2D", layers.GlobalMaxPooling2D)):
        assert getattr(keras.layers, alias) is getattr(keras.layers, cls.__name__)
        assert layers.KERAS_LAYERS[alias] is cls


def test_default_names_are_keras_names():
    for name in NEW:
        assert cconv.utils.default_name(getattr(layers, name)) == \
            keras.src.utils.naming.to_snake_case(name)


@pytest.mark.parametrize("make", [
    lambda L: L.Rescaling(0.5), lambda L: L.Rescaling(2, offset=-1),
    lambda L: L.Reshape((-1,)), lambda L: L.Reshape([2, 3, 15]),
    lambda L: L.ZeroPadding2D(), lambda L: L.ZeroPadding2D(3), lambda L: L.ZeroPadding2D((1, 2)),
    lambda L: L.GlobalAveragePooling2D(keepdims=True), lambda L: L.GlobalMaxPooling2D(),
])
def test_configs_round_trip_and_match_keras(make):
    ours, theirs = make(layers), make(keras.layers)
    model = cconv.Sequential([layers.Input(SHAPE), ours])
    keras.Sequential([keras.Input(SHAPE), theirs])
    want = json.loads(json.dumps(theirs.get_config()))
    got = json.loads(json.dumps(ours.get_config()))
    assert {k: v for k, v in got.items() if k != "name"} == \
        {k: v for k, v in want.items() if k != "name"}
    again = type(ours).from_config(want)
    assert json.loads(json.dumps(again.get_config())) == {**got, "name": want["name"]}
    assert model.layers[0].output_shape == tuple(theirs.compute_output_shape((None,) + SHAPE)[1:])


@pytest.mark.parametrize("call, error, match", [
    (lambda: layers.Rescaling("x"), TypeError, "scale: expected a number"),
    (lambda: layers.Rescaling(1.0, offset=None), TypeError, "offset: expected a number"),
    (lambda: layers.Rescaling(float("inf")), ValueError, "scale: expected a finite"),
    (lambda: layers.Reshape(5), TypeError, "target_shape: expected a tuple"),
    (lambda: layers.Reshape((2, 0)), ValueError, "target_shape: expected positive ints"),
    (lambda: layers.Reshape((-2, 3)), ValueError, "target_shape: expected positive ints"),
    (lambda: layers.Reshape((-1, -1)), ValueError, "target_shape: at most one -1"),
    (lambda: layers.Reshape((2.0, 3)), TypeError, "target_shape: expected a tuple"),
    (lambda: layers.ZeroPadding2D(-1), ValueError, "padding: expected non-negative ints"),
    (lambda: layers.ZeroPadding2D(((0, 1), (2, -3))), ValueError, "padding: expected non-neg"),
    (lambda: layers.ZeroPadding2D((1, 2, 3)), ValueError, "padding: expected an int, a pair"),
    (lambda: layers.ZeroPadding2D("same"), TypeError, "padding: expected non-negative ints"),
    (lambda: layers.ZeroPadding2D(1, data_format="channels_first"), ValueError,
     "ZeroPadding2D: data_format='channels_first' is not supported"),
    (lambda: layers.GlobalAveragePooling2D(data_format="channels_first"), ValueError,
     "GlobalAveragePooling2D: data_format='channels_first'"),
    (lambda: layers.GlobalMaxPooling2D(keepdims="yes"), TypeError, "keepdims"),
])
def test_bad_arguments_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("layer, match", [
    (lambda: layers.Reshape((7, -1)), r"Reshape: target_shape \(7, -1\) cannot hold an input "
                                      r"of shape \(6, 5, 3\) \(90 values"),
    (lambda: layers.Reshape((9, 9)), r"Reshape: target_shape \(9, 9\) holds 81 values, the "
                                     r"input of shape \(6, 5, 3\) has 90"),
    (lambda: layers.Rescaling([1.0, 2.0]), "Rescaling: scale has 2 values"),
    (lambda: layers.GlobalMaxPooling2D(), "GlobalMaxPooling2D: expected input of shape"),
    (lambda: layers.ZeroPadding2D(), "ZeroPadding2D: expected input of shape"),
])
def test_incompatible_input_is_named(layer, match):
    shape = SHAPE if "Pool" not in match and "Padding" not in match else (90,)
    with pytest.raises(ValueError, match=match):
        cconv.Sequential([layers.Input(shape), layer()])


def test_channels_first_configs_are_refused_naming_the_option():
    for cls in (layers.ZeroPadding2D, layers.GlobalAveragePooling2D,
                layers.GlobalMaxPooling2D):
        config = getattr(keras.layers, cls.__name__)(data_format="channels_first").get_config()
        with pytest.raises(ValueError, match="data_format='channels_first' is not supported"):
            cls.from_config(config)


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_through_the_model_are_finite_differences(kind):
    """The whole network's loss gradient wrt its input, through the new layers' backward
    passes, against centred differences in float64."""
    cconv.utils.set_random_seed(4)
    model = cconv.Sequential([layers.Input(SHAPE)] + network(layers, kind), dtype="float64")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2,) + SHAPE)
    r = rng.standard_normal((2, 3))
    model.layers[0].need_input_grad = True

    def loss():
        out = x
        for layer in model.layers:
            out = layer.forward(out, training=True)
        return float((out * r).sum())

    loss()
    grad = r
    for layer in reversed(model.layers):
        grad = layer.backward(grad)
    assert rel_error(grad, numerical_grad(loss, x)) < 1e-5  # centred differences, h = 1e-6
