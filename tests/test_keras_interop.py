""".keras files across engines, with Keras 3 itself (KERAS_BACKEND=jax by default; CI
installs keras, jax, scipy and h5py). Skipped, saying so, when Keras is absent."""
import inspect
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_ENABLE_X64", "1")  # else jax computes float64 models in float32
from zoo import data, make, need  # noqa: E402

need("h5py", "h5")
keras = need("keras", "interop")

import cconv  # noqa: E402

# Keras 3.15 on jax computes parts of a float64 model in float32 (its first conv's output
# is 1.5e-7 from float64's, the same raw jax.lax conv is 1e-15 from cconv's oracle), so
# float64 is held to float32's tolerance here; cconv's float64 is tested to 1e-12 against
# the oracle elsewhere.
TOL = {"float32": dict(rtol=1e-5, atol=2e-6), "float64": dict(rtol=1e-5, atol=2e-6)}


def inputs(n=20, seed=0):
    """Inputs that float32 holds exactly: Keras's data adapters cast float arrays to
    floatx (float32) even for a float64 model."""
    x, y = data("keras_layers", n=n, seed=seed)
    return x.astype(np.float32), y


@pytest.mark.parametrize("optimizer", ["sgd_momentum", "adam"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_keras_loads_what_cconv_saves(tmp_path, dtype, optimizer):
    model = make("keras_layers", dtype, optimizer)
    path = tmp_path / "m.keras"
    model.save(path)
    theirs = keras.models.load_model(path)
    x = inputs(seed=4)[0].astype(dtype)
    np.testing.assert_allclose(theirs.predict(x, verbose=0), model.predict(x), **TOL[dtype])
    assert [l.name for l in theirs.layers] == [l.name for l in model.layers]
    assert int(np.asarray(theirs.optimizer.iterations)) == model.optimizer.iterations
    # the optimizer's state crossed too: Keras's variables after iterations and rate
    slots = [np.asarray(v) for v in theirs.optimizer.variables[2:]]
    for got, want in zip(slots, model.optimizer.slots(model.get_weights()), strict=True):
        np.testing.assert_array_equal(got, want)


def keras_every_layer(dtype):
    layers = keras.layers
    return keras.Sequential([
        keras.Input((12, 12, 2), dtype=dtype),
        layers.Conv2D(4, 3, activation="tanh", dtype=dtype),
        layers.MaxPooling2D(2, padding="same", dtype=dtype),
        layers.Conv2D(3, (2, 3), activation="relu", padding="same", use_bias=False,
                      dtype=dtype),
        layers.Flatten(dtype=dtype),
        layers.Dense(6, dtype=dtype),
        layers.Activation("relu", dtype=dtype),
        layers.Dropout(0.0, dtype=dtype),  # rate 0: both engines' next steps comparable
        layers.Dense(5, activation="softmax", dtype=dtype),
    ])


@pytest.mark.parametrize("optimizer", [
    lambda: keras.optimizers.SGD(0.05, momentum=0.9), lambda: keras.optimizers.Adam(0.01)],
    ids=["sgd_momentum", "adam"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cconv_loads_what_keras_saves_and_trains_on_as_keras_does(tmp_path, dtype,
                                                                  optimizer):
    keras.utils.set_random_seed(3)
    theirs = keras_every_layer(dtype)  # Keras's own random initialisation
    theirs.compile(optimizer=optimizer(), loss="sparse_categorical_crossentropy",
                   metrics=["accuracy"])
    x, y = inputs(n=16)
    x = x.astype(dtype)
    theirs.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    path = tmp_path / "k.keras"
    theirs.save(path)
    ours = cconv.models.load_model(path)
    assert ours.dtype == np.dtype(dtype)
    np.testing.assert_allclose(ours.predict(x), theirs.predict(x, verbose=0), **TOL[dtype])
    assert ours.optimizer.iterations == 2
    # one more step in each engine, from the restored optimizer state
    theirs.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    ours.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    for got, want in zip(ours.get_weights(), theirs.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, **TOL[dtype])


@pytest.mark.parametrize("layer,named", [
    (lambda: keras.layers.LayerNormalization(), "LayerNormalization"),
    (lambda: keras.layers.Conv2D(2, 3, kernel_regularizer="l2"), "kernel_regularizer"),
    (lambda: keras.layers.Conv2D(2, 3, activation="hard_shrink"), "hard_shrink"),
    (lambda: keras.layers.SpatialDropout2D(0.5), "SpatialDropout2D"),
])
def test_keras_model_with_what_cconv_lacks_is_refused_naming_it(tmp_path, layer, named):
    theirs = keras.Sequential([keras.Input((8, 8, 1)), layer(), keras.layers.Flatten(),
                               keras.layers.Dense(2)])
    path = tmp_path / "k.keras"
    theirs.save(path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=named):
        cconv.models.load_model(path)
    assert path.read_bytes() == before


def test_default_layer_names_are_keras_names():
    for cls in (cconv.layers.Conv2D, cconv.layers.Dense, cconv.layers.MaxPooling2D,
                cconv.layers.Flatten, cconv.layers.Dropout, cconv.layers.Activation):
        keras_cls = getattr(keras.layers, cls.__name__)
        assert cconv.utils.default_name(cls) == keras.src.utils.naming.to_snake_case(
            keras_cls.__name__)


@pytest.mark.parametrize("method", ["fit", "evaluate", "predict", "compile", "summary", "save"])
def test_every_keras_argument_is_accepted_by_name(method):
    """Each argument of Keras's Sequential method exists in cconv's, so a Keras call
    never fails with 'unexpected keyword'; those without a meaning here raise a
    ValueError naming them when set (tests/test_keras_api.py)."""
    theirs = inspect.signature(getattr(keras.Sequential, method)).parameters
    ours = inspect.signature(getattr(cconv.Sequential, method)).parameters
    missing = [n for n, p in theirs.items()
               if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and n not in ours]
    assert missing == []


@pytest.mark.parametrize("compiled", [False, True])
def test_untrained_keras_models_load(tmp_path, compiled):
    keras.utils.set_random_seed(5)
    theirs = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, activation="tanh")])
    if compiled:
        theirs.compile(optimizer="adam", loss="categorical_crossentropy")
    theirs.save(tmp_path / "k.keras")
    ours = cconv.models.load_model(tmp_path / "k.keras")
    assert ours.compiled == compiled
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(2, 6)
    np.testing.assert_allclose(ours.predict(x), theirs.predict(x, verbose=0), **TOL["float32"])
    if compiled:
        assert ours.optimizer.iterations == 0 and isinstance(ours.optimizer,
                                                             cconv.optimizers.Adam)
