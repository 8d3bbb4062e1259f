"""Models as values: pickle, copy.copy, copy.deepcopy and get_config/from_config, for
every layer type and both dtypes, built or not, compiled or not, trained or not. A copy
predicts the same bits and trains on exactly as the original does, owns its weights and
optimizer state, and brings no per-thread scratch memory along."""
import copy
import pickle
import threading

import numpy as np
import pytest

import cconv
from cconv import layers, losses, optimizers
from zoo import MODELS, data, make, same_bits

COPIERS = {
    "pickle": lambda m: pickle.loads(pickle.dumps(m)),
    "deepcopy": copy.deepcopy,
    "copy": copy.copy,
}
STATES = {  # (compiled, trained)
    "uncompiled": (False, False),
    "compiled": (True, False),
    "trained": (True, True),
}


def continue_training(model, name):
    x, y = data(name, seed=3)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, seed=11)
    return model.get_weights()


@pytest.mark.parametrize("copier", COPIERS)
@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", MODELS)
def test_copy_predicts_and_trains_on_as_the_original(name, dtype, state, copier):
    compiled, trained = STATES[state]
    model = make(name, dtype, "adam", compiled, trained)
    model.predict(data(name)[0])  # leave per-thread output buffers behind
    twin = COPIERS[copier](model)
    assert twin is not model and twin.layers[0] is not model.layers[0]
    assert same_bits(twin.get_weights(), model.get_weights())
    x = data(name, seed=5)[0]
    assert np.array_equal(twin.predict(x), model.predict(x))
    assert twin.compiled == model.compiled and twin.dtype == model.dtype
    if compiled:
        assert twin.optimizer is not model.optimizer
        before = model.get_weights()
        got = continue_training(twin, name)
        assert same_bits(model.get_weights(), before)  # the copy trained its own weights
        assert same_bits(got, continue_training(model, name))


@pytest.mark.parametrize("copier", COPIERS)
@pytest.mark.parametrize("optimizer", ["sgd_momentum", "adam"])
def test_optimizer_state_travels(copier, optimizer):
    model = make("keras_layers", "float64", optimizer)
    twin = COPIERS[copier](model)
    params = model.get_weights()
    assert twin.optimizer.iterations == model.optimizer.iterations > 0
    assert same_bits(twin.optimizer.slots(params), model.optimizer.slots(params))
    assert any(np.any(s != 0) for s in model.optimizer.slots(params))


@pytest.mark.parametrize("copier", COPIERS)
def test_unbuilt_model_copies_and_builds_alike(copier):
    model = make("keras_layers", compiled=True, trained=False, with_input=False)
    assert not model.built
    twin = COPIERS[copier](model)
    assert not twin.built
    x, y = data("keras_layers")
    for m in (model, twin):
        cconv.utils.set_random_seed(4)
        m.fit(x, y, batch_size=8, epochs=1, verbose=0, seed=2)
    assert same_bits(twin.get_weights(), model.get_weights())


@pytest.mark.parametrize("copier", COPIERS)
def test_no_scratch_or_thread_state_travels(copier):
    model = make("keras_layers")
    x = data("keras_layers")[0]
    model.predict(x)
    model.fit(x[:8], data("keras_layers")[1][:8], epochs=1, verbose=0)  # fills saved, grads
    twin = COPIERS[copier](model)
    for old, new in zip(model.layers, twin.layers):
        assert new.saved == {} and new.grads == {}
        for attr in old._scratch_attrs:
            assert isinstance(getattr(new, attr), threading.local)
            assert getattr(new, attr) is not getattr(old, attr)
            assert not vars(getattr(new, attr))  # empty in this thread too
    for training in (False, True):  # the fused plans were made from the copy's layers
        for step in twin._steps(training):
            for layer in getattr(step, "layers", (step,)):
                assert any(layer is l for l in twin.layers)
    assert twin._guard is not model._guard


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", MODELS)
def test_from_config_rebuilds_the_architecture(name, dtype):
    model = make(name, dtype, trained=True)
    config = model.get_config()
    twin = cconv.Sequential.from_config(config)
    assert twin.get_config() == config
    assert not twin.compiled and twin.built and twin.dtype == model.dtype
    assert [type(l) for l in twin.layers] == [type(l) for l in model.layers]
    twin.set_weights(model.get_weights())
    x = data(name, seed=5)[0]
    assert np.array_equal(twin.predict(x), model.predict(x))


def test_layer_configs_round_trip_for_every_layer():
    model = make("keras_layers", trained=False)
    model2 = make("kernel_pooling", trained=False)
    for layer in model.layers + model2.layers:
        config = layer.get_config()
        again = type(layer).from_config(config)
        assert again.get_config() == {**config, "dtype": again.get_config()["dtype"]}


def test_layer_config_has_keras_shape():
    # Keras 3's Conv2D config, key by key (from keras/src/layers/convolutional/base_conv.py)
    config = layers.Conv2D(8, (3, 2), activation="relu", name="c").get_config()
    assert config["kernel_size"] == [3, 2] and config["strides"] == [1, 1]
    assert config["data_format"] == "channels_last" and config["groups"] == 1
    assert config["kernel_initializer"] == {"module": "keras.initializers",
                                            "class_name": "GlorotUniform",
                                            "config": {"seed": None}, "registered_name": None}
    assert config["dtype"]["class_name"] == "DTypePolicy"


@pytest.mark.parametrize("opt", [optimizers.SGD(0.1, momentum=0.5), optimizers.Adam(0.002)])
def test_optimizer_configs_round_trip(opt):
    again = optimizers.deserialize(optimizers.serialize(opt))
    assert type(again) is type(opt) and again.get_config() == opt.get_config()


@pytest.mark.parametrize("loss", [losses.CategoricalCrossentropy(),
                                  losses.SparseCategoricalCrossentropy(from_logits=True)])
def test_loss_configs_round_trip(loss):
    again = losses.deserialize(losses.serialize(loss))
    assert type(again) is type(loss) and again.from_logits == loss.from_logits


@pytest.mark.parametrize("cls,config,named", [
    (layers.Conv2D, {"filters": 2, "kernel_size": 3, "strides": [2, 2],
                     "dilation_rate": [2, 2]}, "strides"),
    (layers.Conv2D, {"filters": 2, "kernel_size": 3, "dilation_rate": [0, 1]}, "dilation_rate"),
    (layers.Conv2D, {"filters": 2, "kernel_size": 3, "groups": 2}, "groups"),
    (layers.Conv2D, {"filters": 2, "kernel_size": 3, "data_format": "channels_first"},
     "data_format"),
    (layers.Conv2D, {"filters": 2, "kernel_size": 3, "activation": "glu"}, "activation"),
    (layers.Dense, {"units": 2, "kernel_regularizer": {"class_name": "L2"}}, "kernel_regularizer"),
    (layers.Dense, {"units": 2, "kernel_initializer": {"class_name": "Identity",
                                                       "config": {}}}, "Identity"),
    (layers.Dense, {"units": 2, "kernel_initializer": {"class_name": "GlorotUniform",
                                                       "config": {"seed": {
                                                           "class_name": "SeedGenerator"}}}},
     "seed"),
    (layers.Dense, {"units": 2, "kernel_initializer": {"class_name": "VarianceScaling",
                                                       "config": {"mode": "fan_sum"}}},
     "mode"),
    (layers.Dense, {"units": 2, "trainable": "no"}, "trainable"),
    (layers.Dropout, {"rate": 0.5, "noise_shape": [None, 1]}, "noise_shape"),
    (layers.MaxPooling2D, {"pool_size": [3, 3], "strides": [0, 1]}, "strides"),
])
def test_options_cconv_lacks_are_named(cls, config, named):
    with pytest.raises(ValueError, match=named):
        cls.from_config(config)


def test_optimizer_and_loss_options_cconv_lacks_are_named():
    with pytest.raises(ValueError, match="use_ema"):
        optimizers.SGD.from_config({"learning_rate": 0.1, "use_ema": True})
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        optimizers.Adam.from_config({"learning_rate": 0.1, "gradient_accumulation_steps": 2})
    with pytest.raises(ValueError, match="PolynomialDecay"):
        optimizers.Adam.from_config({"learning_rate": {"class_name": "PolynomialDecay"}})
    with pytest.raises(ValueError, match="Lion"):
        optimizers.deserialize({"class_name": "Lion", "config": {}})
    with pytest.raises(ValueError, match="ignore_class"):
        losses.SparseCategoricalCrossentropy.from_config({"ignore_class": 3})


def test_unserializable_initializer_is_named_but_the_model_still_pickles():
    model = cconv.Sequential([layers.Input((4,)),
                              layers.Dense(2, kernel_initializer=lambda s, d, r: np.ones(s))])
    with pytest.raises(ValueError, match="initializer"):
        model.get_config()
    assert copy.deepcopy(model).layers[0].params["kernel"].sum() == 8


def test_cconv_initializer_functions_round_trip_by_name():
    from cconv import presets
    model = presets.build_tf()
    twin = cconv.Sequential.from_config(model.get_config())
    assert twin.layers[0].kernel_initializer is presets.tutorial_normal
