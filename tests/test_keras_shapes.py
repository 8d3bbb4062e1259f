"""Against Keras 3 itself (KERAS_BACKEND=jax by default; skipped, saying so, without
Keras): Dense on rank-3 and rank-4 inputs (the same weights' predictions, one SGD step),
and input_shape= on a first layer (the .keras files each engine writes for it, crossed
both ways)."""
import json
import os
import warnings
import zipfile

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
from zoo import assert_one_sgd_step_as_keras, need  # noqa: E402

need("h5py", "h5")
keras = need("keras", "interop")

import cconv  # noqa: E402
from cconv import layers  # noqa: E402

PREDICT_TOL = dict(rtol=1e-5, atol=1e-6)


def build(lib, kind, hinted=False):
    """The same network in cconv (lib=cconv) or Keras: Dense on a (5, 4) or (4, 4, 2)
    input, its output flattened into a softmax Dense. hinted: input_shape= on the first
    layer instead of an Input."""
    L = layers if lib is cconv else keras.layers
    shape = {"rank3": (5, 4), "rank4": (4, 4, 2)}[kind]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        first = [L.Dense(6, activation="gelu", bias_initializer="random_normal",
                         **({"input_shape": shape} if hinted else {})),
                 L.Dense(5, activation="tanh", bias_initializer="random_normal")]
    return lib.Sequential(([] if hinted else [L.Input(shape)]) + first + [
        L.Flatten(), L.Dense(3, activation="softmax")]), shape


def twins(kind, seed=0):
    cconv.utils.set_random_seed(seed)
    ours, shape = build(cconv, kind)
    theirs, _ = build(keras, kind)
    theirs.set_weights(ours.get_weights())
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((8,) + shape).astype(np.float32)
    return ours, theirs, x, rng.integers(0, 3, len(x))


@pytest.mark.parametrize("kind", ["rank3", "rank4"])
def test_dense_on_any_rank_predicts_as_keras(kind):
    ours, theirs, x, _ = twins(kind)
    assert [l.output_shape for l in ours.layers] == [
        tuple(l.output.shape[1:]) for l in theirs.layers]
    np.testing.assert_allclose(ours.predict(x, verbose=0), theirs.predict(x, verbose=0),
                               **PREDICT_TOL)
    # the intermediate rank-n output too, not only what the softmax makes of it
    inner = keras.Model(theirs.inputs, theirs.layers[1].output)
    got = ours.layers[1].forward(ours.layers[0].forward(x))
    np.testing.assert_allclose(got, inner.predict(x, verbose=0), **PREDICT_TOL)


@pytest.mark.parametrize("kind", ["rank3", "rank4"])
def test_dense_on_any_rank_one_sgd_step_gives_keras_weights(kind):
    ours, theirs, x, y = twins(kind, seed=1)
    assert_one_sgd_step_as_keras(ours, theirs, x, y, kind)


def config_layers(path):
    with zipfile.ZipFile(path) as z:
        return json.loads(z.read("config.json"))["config"]["layers"]


def comparable(entries):
    """What both engines must agree on: each entry's class and shapes (its config's
    batch_shape, whether it has an input_shape or input_dim, its build_config)."""
    return [(e["class_name"], e["config"].get("batch_shape"),
             {"input_shape", "input_dim"} & set(e["config"]), e.get("build_config"))
            for e in entries]


@pytest.mark.parametrize("kind", ["rank3", "rank4"])
def test_input_shape_model_files_match_keras_both_ways(tmp_path, kind):
    cconv.utils.set_random_seed(2)
    ours, shape = build(cconv, kind, hinted=True)
    keras.utils.set_random_seed(2)
    theirs, _ = build(keras, kind, hinted=True)
    ours.save(tmp_path / "ours.keras")
    theirs.save(tmp_path / "theirs.keras")
    our_config, their_config = (config_layers(tmp_path / f"{who}.keras")
                                for who in ("ours", "theirs"))
    # Keras writes the hint as an InputLayer before the layers, and no input_shape in
    # the first layer's config; so does cconv
    assert their_config[0]["class_name"] == "InputLayer"
    assert "input_shape" not in their_config[1]["config"]
    assert comparable(our_config) == comparable(their_config)
    x = np.random.default_rng(3).standard_normal((6,) + shape).astype(np.float32)
    loaded_by_keras = keras.models.load_model(tmp_path / "ours.keras")
    np.testing.assert_allclose(loaded_by_keras.predict(x, verbose=0),
                               ours.predict(x, verbose=0), **PREDICT_TOL)
    loaded_by_us = cconv.models.load_model(tmp_path / "theirs.keras")
    assert loaded_by_us.input_shape == shape
    assert [l.output_shape for l in loaded_by_us.layers] == [l.output_shape
                                                              for l in ours.layers]
    np.testing.assert_allclose(loaded_by_us.predict(x, verbose=0),
                               theirs.predict(x, verbose=0), **PREDICT_TOL)


def test_tf_cnn_tutorial_model_crosses(tmp_path):
    def tutorial(L, lib):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return lib.Sequential([
                L.Conv2D(8, (3, 3), activation="relu", input_shape=(12, 12, 3)),
                L.MaxPooling2D((2, 2)), L.Conv2D(8, (3, 3), activation="relu"), L.Flatten(),
                L.Dense(16, activation="relu"), L.Dense(10)])
    ours, theirs = tutorial(layers, cconv), tutorial(keras.layers, keras)
    assert ours.count_params() == theirs.count_params()
    theirs.set_weights(ours.get_weights())
    x = np.random.default_rng(4).standard_normal((4, 12, 12, 3)).astype(np.float32)
    np.testing.assert_allclose(ours.predict(x, verbose=0), theirs.predict(x, verbose=0),
                               **PREDICT_TOL)
    ours.save(tmp_path / "t.keras")
    np.testing.assert_allclose(keras.models.load_model(tmp_path / "t.keras").predict(
        x, verbose=0), theirs.predict(x, verbose=0), **PREDICT_TOL)
