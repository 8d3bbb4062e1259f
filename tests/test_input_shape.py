"""input_shape= (and input_dim=) on a layer, Keras 3's legacy hint: on the first layer of a
Sequential it stands for an Input of that shape; elsewhere it is ignored; Keras warns
either way, and so does cconv. Configs write it as Keras does: an InputLayer in the
Sequential's config, nothing in the layer's. Keras itself: tests/test_keras_shapes.py."""
import copy
import pickle
import warnings

import numpy as np
import pytest

import cconv
from cconv import layers

# every layer class, with the arguments of a first layer on (8, 8, 3) inputs
EVERY_LAYER = {
    "Conv2D": lambda **kw: layers.Conv2D(4, 3, activation="relu", **kw),
    "Dense": lambda **kw: layers.Dense(5, **kw),
    "Activation": lambda **kw: layers.Activation("tanh", **kw),
    "Dropout": lambda **kw: layers.Dropout(0.25, **kw),
    "Flatten": lambda **kw: layers.Flatten(**kw),
    "MaxPooling2D": lambda **kw: layers.MaxPooling2D(2, **kw),
    "KernelPooling": lambda **kw: layers.KernelPooling("max", **kw),
    "Rescaling": lambda **kw: layers.Rescaling(1 / 255, offset=0.5, **kw),
    "Reshape": lambda **kw: layers.Reshape((-1, 12), **kw),
    "ZeroPadding2D": lambda **kw: layers.ZeroPadding2D(((1, 0), 2), **kw),
    "GlobalAveragePooling2D": lambda **kw: layers.GlobalAveragePooling2D(**kw),
    "GlobalMaxPooling2D": lambda **kw: layers.GlobalMaxPooling2D(keepdims=True, **kw),
}


def quietly(make, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return make(**kw)


@pytest.mark.parametrize("name", EVERY_LAYER)
def test_every_layer_takes_input_shape_first_and_builds_the_model(name):
    with pytest.warns(UserWarning, match="input_shape"):
        first = EVERY_LAYER[name](input_shape=(8, 8, 3))
    hinted = cconv.Sequential([first, layers.Flatten(), layers.Dense(2)])
    cconv.utils.set_random_seed(3)
    declared = cconv.Sequential([layers.Input((8, 8, 3)), EVERY_LAYER[name](), layers.Flatten(),
                                 layers.Dense(2)])
    assert hinted.built and hinted.input_shape == (8, 8, 3)
    assert hinted.get_config() == declared.get_config()
    hinted.set_weights(declared.get_weights())
    x = np.random.default_rng(0).standard_normal((3, 8, 8, 3))
    np.testing.assert_array_equal(hinted.predict(x, verbose=0), declared.predict(x, verbose=0))


def test_tf_cnn_tutorial_model():
    # TensorFlow's CNN tutorial, as written there
    model = cconv.Sequential()
    with pytest.warns(UserWarning):
        model.add(layers.Conv2D(32, (3, 3), activation="relu", input_shape=(32, 32, 3)))
    model.add(layers.MaxPooling2D((2, 2)))
    model.add(layers.Conv2D(64, (3, 3), activation="relu"))
    model.add(layers.MaxPooling2D((2, 2)))
    model.add(layers.Conv2D(64, (3, 3), activation="relu"))
    model.add(layers.Flatten())
    model.add(layers.Dense(64, activation="relu"))
    model.add(layers.Dense(10))
    assert model.input_shape == (32, 32, 3)
    model.build()
    assert [l.output_shape for l in model.layers][:5:2] == [(30, 30, 32), (13, 13, 64),
                                                            (4, 4, 64)]
    assert model.count_params() == 122570  # the tutorial's summary


def test_input_dim_is_a_flat_input_shape():
    with pytest.warns(UserWarning):
        model = cconv.Sequential([layers.Dense(4, input_dim=6), layers.Dense(2)])
    assert model.built and model.input_shape == (6,)
    assert quietly(layers.Dense, units=3, input_shape=[7])._input_shape_arg == (7,)


def test_on_a_later_layer_or_after_an_input_it_is_ignored_as_in_keras():
    later = quietly(layers.Dense, units=3, input_shape=(99,))
    model = cconv.Sequential([layers.Input((5,)), quietly(layers.Dense, units=4,
                                                          input_shape=(77,)), later])
    assert model.input_shape == (5,)
    assert [w.shape for w in model.get_weights()] == [(5, 4), (4,), (4, 3), (3,)]
    unbuilt = cconv.Sequential([layers.Dense(4), later.__class__(3)])
    assert not unbuilt.built


def test_the_layers_config_has_no_input_shape_and_round_trips():
    model = cconv.Sequential([quietly(layers.Conv2D, filters=2, kernel_size=3,
                                      input_shape=(6, 6, 1)), layers.Flatten(),
                              layers.Dense(3)])
    config = model.get_config()
    first, conv = config["layers"][:2]
    assert first["class_name"] == "InputLayer"
    assert first["config"]["batch_shape"] == [None, 6, 6, 1]
    assert "input_shape" not in conv["config"] and "input_dim" not in conv["config"]
    again = cconv.Sequential.from_config(config)
    assert again.built and again.input_shape == (6, 6, 1)
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert twin.get_config() == config


@pytest.mark.parametrize("kw,error,named", [
    (dict(input_shape=5), TypeError, "input_shape: expected a tuple of positive ints"),
    (dict(input_shape="ab"), TypeError, "input_shape"),
    (dict(input_shape=()), TypeError, "input_shape"),
    (dict(input_shape=(0, 4)), ValueError, "input_shape: expected a positive int, got 0"),
    (dict(input_shape=(-3,)), ValueError, "input_shape"),
    (dict(input_shape=(2.0,)), TypeError, "input_shape: expected a positive int, got float"),
    (dict(input_shape=(True, 3)), TypeError, "input_shape"),
    (dict(input_shape=(None, 4)), ValueError, "every size but the batch"),
    (dict(input_dim=0), ValueError, "input_dim"),
    (dict(input_dim=(4,)), TypeError, "input_dim"),
    (dict(input_shape=(4,), input_dim=4), ValueError, "input_shape or input_dim, not both"),
])
@pytest.mark.parametrize("name", EVERY_LAYER)
def test_bad_input_shape_is_named(name, kw, error, named):
    with pytest.raises(error, match=named):
        EVERY_LAYER[name](**kw)


def test_keras_batch_input_shape_is_refused_as_in_keras():
    with pytest.raises(TypeError, match="batch_input_shape"):
        layers.Dense(3, batch_input_shape=(None, 5))
