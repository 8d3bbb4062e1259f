"""Small models with every layer cconv has, for the round-trip tests (configs, copies,
.keras files, Keras interop)."""
import json
import zipfile

import numpy as np

import cconv
from cconv.layers import (Activation, Conv2D, Dense, Dropout, Flatten, Input, KernelPooling,
                          MaxPooling2D)

OPTIMIZERS = {
    "sgd": lambda: cconv.optimizers.SGD(0.05),
    "sgd_momentum": lambda: cconv.optimizers.SGD(0.05, momentum=0.9),
    "adam": lambda: cconv.optimizers.Adam(0.01),
}


def keras_layers_model(dtype="float32", with_input=True):
    """Every layer Keras has too: both paddings, with and without bias, each activation."""
    return cconv.Sequential(([Input((12, 12, 2))] if with_input else []) + [
        Conv2D(4, 3, activation="tanh"),
        MaxPooling2D(2, padding="same"),
        Conv2D(3, (2, 3), activation="relu", padding="same", use_bias=False),
        Dropout(0.3),
        Flatten(),
        Dense(6),
        Activation("relu"),
        Dense(5, activation="softmax"),
    ], dtype=dtype)


def kernel_pooling_model(dtype="float32", with_input=True):
    """cconv's own KernelPooling, a linear conv and logits."""
    return cconv.Sequential(([Input((10, 10, 1))] if with_input else []) + [
        Conv2D(5, 3, kernel_initializer="he_normal", bias_initializer="ones"),
        Activation("tanh"),
        KernelPooling("max"),
        Flatten(),
        Dropout(0.2),
        Dense(5, kernel_initializer="glorot_normal"),
    ], dtype=dtype)


MODELS = {"keras_layers": keras_layers_model, "kernel_pooling": kernel_pooling_model}


def data(model_name, n=20, seed=0):
    shape = (12, 12, 2) if model_name == "keras_layers" else (10, 10, 1)
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n,) + shape), rng.integers(0, 5, n)


def make(model_name, dtype="float32", optimizer="adam", compiled=True, trained=True,
         with_input=True):
    """The model, seeded; compiled with `optimizer`; trained two epochs when asked."""
    cconv.utils.set_random_seed(7)
    model = MODELS[model_name](dtype, with_input)
    if compiled:
        loss = (cconv.losses.SparseCategoricalCrossentropy(from_logits=True)
                if model_name == "kernel_pooling" else "sparse_categorical_crossentropy")
        model.compile(optimizer=OPTIMIZERS[optimizer](), loss=loss, metrics=["accuracy"])
    if trained:
        x, y = data(model_name)
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, seed=1)
    return model


def same_bits(a, b):
    return all(u.dtype == v.dtype and u.shape == v.shape and np.array_equal(u, v)
               for u, v in zip(a, b)) and len(a) == len(b)


def need(module, extra):
    """module, imported; without it the test skips, saying which extra installs it (a
    failure in CI, where CCONV_REQUIRE_TEST_DEPS=1 allows no such skip)."""
    import pytest
    return pytest.importorskip(module, reason=f'{module} is not installed (pip install '
                                              f'".[{extra}]")')


def assert_one_sgd_step_as_keras(ours, theirs, x, y, label, lr=0.1,
                                 loss="sparse_categorical_crossentropy"):
    """One SGD step of cconv's model `ours` (fit, one batch) and Keras's `theirs`
    (train_on_batch) from the same weights, with `loss` (a name, or a function of the
    losses module giving each engine's object): the same loss (rtol 1e-5), and each weight
    within 1e-5 of its largest change plus its own float32 rounding (both engines round
    w - lr g once). Fails too if no weight moved: the test would compare nothing."""
    import keras
    start = ours.get_weights()
    ours.compile(optimizer=cconv.optimizers.SGD(lr),
                 loss=loss if isinstance(loss, str) else loss(cconv.losses))
    theirs.compile(optimizer=keras.optimizers.SGD(lr),
                   loss=loss if isinstance(loss, str) else loss(keras.losses))
    history = ours.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    their_loss = theirs.train_on_batch(x, y)
    np.testing.assert_allclose(history.history["loss"][0], float(np.asarray(their_loss)),
                               rtol=1e-5, err_msg=f"{label}: loss")
    got_weights, want_weights = ours.get_weights(), theirs.get_weights()
    assert len(got_weights) == len(want_weights) == len(start), label
    moved = False
    for i, (w0, got, want) in enumerate(zip(start, got_weights, want_weights)):
        change = np.abs(want.astype(np.float64) - w0)
        moved |= bool(change.max() > 0)
        atol = 1e-5 * change.max() + np.spacing(np.abs(want))
        excess = np.abs(got.astype(np.float64) - want) - atol
        assert excess.max() <= 0, f"{label}: weight {i}: {excess.max():.3g} beyond tolerance"
    assert moved, f"{label}: the step changed nothing: the test compares nothing"


def file_layers(path):
    """The layer entries of a .keras file's model config."""
    with zipfile.ZipFile(path) as z:
        return json.loads(z.read("config.json"))["config"]["layers"]


def unnamed(config, drop=("name",)):
    """A layer config without the keys in drop (by default its name: Keras numbers
    default names process-wide) and without the shared_object_id Keras gives a dtype
    policy that several layers share."""
    out = {k: v for k, v in config.items() if k not in drop}
    if isinstance(out.get("dtype"), dict):
        out["dtype"] = {k: v for k, v in out["dtype"].items() if k != "shared_object_id"}
    return out


def layer_configs(entries, classes, drop=("name",)):
    """(class name, unnamed config, build_config) of the entries whose class is in
    classes."""
    return [(e["class_name"], unnamed(e["config"], drop), e.get("build_config"))
            for e in entries if e["class_name"] in classes]
