"""Ten training steps of cconv and of Keras 3 (jax backend) from the same weights on the
same batches, for the networks issue 22 brought: strided convolutions, BatchNormalization,
GlobalAveragePooling2D and RMSprop (Keras's default optimizer); and the same with sample
weights and class weights. After every step the two report the same loss and hold the
same weights, moving statistics included.

Tolerances, relative to the largest value of each array (weights) or to the loss, and
absolute below 1 (a bias of 0.01 is held to the same bound as a kernel of order 1): in
float64, 1e-5 -- Keras on jax reduces the loss in float32 whatever the dtype (measured:
its loss and first step are 1e-7 from float64's, 3e-6 after some steps of Adam), so
float64 cannot be compared more closely; in
float32, 2e-4 -- rounding differences of about 1e-7 amplified step by step (RMSprop
divides each gradient by its own running size)."""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_ENABLE_X64", "1")  # float64 in Keras needs it before jax starts
from zoo import need  # noqa: E402

keras = need("keras", "interop")

import cconv  # noqa: E402

STEPS, BATCH, SHAPE, CLASSES = 10, 12, (13, 11, 3), 5
TOL = {"float64": 1e-5, "float32": 2e-4}


def strided_bn_net(L):
    """Conv2D strides (both axes, then one) and 'same'/'valid' paddings, BN before and
    after an activation, global average pooling, a softmax head."""
    return [L.Conv2D(8, 3, strides=2, padding="same", use_bias=False),
            L.BatchNormalization(),
            L.ReLU(),
            L.Conv2D(12, (3, 2), strides=(1, 2), activation="tanh"),
            L.BatchNormalization(momentum=0.9, epsilon=1e-4),
            L.GlobalAveragePooling2D(),
            L.Dense(CLASSES, activation="softmax")]


def weighted_net(L):
    return [L.Conv2D(6, 3, strides=2, activation="relu"),
            L.BatchNormalization(),
            L.Flatten(),
            L.Dense(CLASSES, activation="softmax")]


@pytest.fixture
def keras_float(request):
    """Keras's default float type for this test, restored afterwards."""
    before = keras.config.floatx()
    yield lambda dtype: keras.config.set_floatx(dtype)
    keras.config.set_floatx(before)


def twins(make, dtype, optimizer, keras_float, seed=0):
    keras_float(dtype)
    cconv.utils.set_random_seed(seed)
    ours = cconv.Sequential([cconv.layers.Input(SHAPE)] + make(cconv.layers), dtype=dtype)
    theirs = keras.Sequential([keras.Input(SHAPE)] + make(keras.layers))
    theirs.set_weights(ours.get_weights())
    ours.compile(optimizer=optimizer(cconv.optimizers), loss="sparse_categorical_crossentropy")
    theirs.compile(optimizer=optimizer(keras.optimizers), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((STEPS * BATCH,) + SHAPE).astype(dtype)
    y = rng.integers(0, CLASSES, len(x))
    return ours, theirs, x, y


def assert_close(got, want, tol, what):
    scale = max(np.abs(want).max(), 1.0)
    assert np.abs(np.asarray(got, np.float64) - want).max() <= tol * scale, \
        f"{what}: {np.abs(got - want).max():.3g} apart, bound {tol * scale:.3g}"


def train_side_by_side(ours, theirs, x, y, tol, **weights):
    """STEPS steps, one batch each (cconv: fit on the batch; Keras: train_on_batch),
    comparing the loss and every weight after each step. weights: sample_weight (an
    array over x) or class_weight (a dict)."""
    start = ours.get_weights()
    for step in range(STEPS):
        batch = slice(step * BATCH, (step + 1) * BATCH)
        extra = {k: (v[batch] if isinstance(v, np.ndarray) else v) for k, v in weights.items()}
        got = ours.fit(x[batch], y[batch], batch_size=BATCH, epochs=1, shuffle=False,
                       verbose=0, **extra).history["loss"][0]
        want = float(np.asarray(theirs.train_on_batch(x[batch], y[batch], **extra)))
        assert_close(got, want, tol, f"step {step}: loss")
        for i, (g, w) in enumerate(zip(ours.get_weights(), theirs.get_weights())):
            assert_close(g, w, tol, f"step {step}: weight {i} {theirs.weights[i].path}")
    moved = [np.abs(a - b).max() for a, b in zip(start, ours.get_weights())]
    assert min(moved) > 0, "a weight never moved: the comparison would be empty"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_strided_bn_network_with_rmsprop_follows_keras(dtype, keras_float):
    ours, theirs, x, y = twins(strided_bn_net, dtype, lambda m: m.RMSprop(), keras_float)
    assert type(ours.optimizer).__name__ == "RMSprop"
    train_side_by_side(ours, theirs, x, y, TOL[dtype])
    # inference uses the moving statistics ten steps of training left, as Keras's does
    xt = np.random.default_rng(9).standard_normal((7,) + SHAPE).astype(dtype)
    assert_close(ours.predict(xt, verbose=0), theirs.predict(xt, verbose=0), TOL[dtype],
                 "predict after training")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sample_weights_follow_keras(dtype, keras_float):
    ours, theirs, x, y = twins(weighted_net, dtype, lambda m: m.SGD(0.05, momentum=0.5),
                               keras_float, seed=1)
    w = np.random.default_rng(2).uniform(0, 2, len(x))
    w[::5] = 0  # some samples do not count at all
    train_side_by_side(ours, theirs, x, y, TOL[dtype], sample_weight=w)


def test_class_weights_follow_keras(keras_float):
    ours, theirs, x, y = twins(weighted_net, "float64", lambda m: m.Adam(1e-2), keras_float,
                               seed=3)
    train_side_by_side(ours, theirs, x, y, TOL["float64"],
                       class_weight={0: 0.5, 1: 2.0, 2: 1.0, 3: 0.0, 4: 3.0})
