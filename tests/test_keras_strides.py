"""Conv2D's strides and dilation_rate, MaxPooling2D's strides, and AveragePooling2D
against Keras 3 itself (KERAS_BACKEND=jax by default; skipped, saying so, without Keras):
the ops and the oracle against keras.ops on the same geometry; whole networks with the
same weights give Keras's predictions and, after one SGD step, Keras's weights; .keras
files cross both ways with the same layer configs; the fused steps leave these layers
alone; bad arguments are named."""
import json
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_ENABLE_X64", "1")  # as the other Keras tests: jax starts once
from conftest import numerical_grad  # noqa: E402
from zoo import (assert_one_sgd_step_as_keras, file_layers, layer_configs, need,  # noqa: E402
                 unnamed)

need("h5py", "h5")
keras = need("keras", "interop")

import cconv  # noqa: E402
from cconv import fusion, layers, ops, oracle  # noqa: E402

PREDICT_TOL = dict(rtol=1e-5, atol=1e-6)
SHAPE = (9, 8, 3)
NEW = ("Conv2D", "MaxPooling2D", "AveragePooling2D")


# ---- the ops' geometry is Keras's -----------------------------------------------------
CONV_GEOMETRY = [  # (H, W), (KH, KW), strides, dilation_rate
    ((7, 8), (3, 3), 2, 1), ((8, 8), (4, 3), 3, 1), ((9, 7), (3, 2), (2, 3), 1),
    ((5, 6), (1, 1), 2, 1), ((9, 10), (3, 3), 1, 2), ((10, 9), (2, 3), 1, (3, 2)),
    ((4, 5), (5, 5), 2, 1),
]


@pytest.mark.parametrize("size, kernel, strides, dilation", CONV_GEOMETRY)
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv2d_is_keras_ops_conv(size, kernel, strides, dilation, padding):
    """ops.conv2d and oracle.conv2d against keras.ops.conv (XLA's padding): the same
    output shape, and values within float64 rounding."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, *size, 3))
    w = rng.standard_normal((*kernel, 3, 4))
    try:
        want = np.asarray(keras.ops.conv(x, w, strides, padding, dilation_rate=dilation))
    except ValueError:  # Keras refuses too large a kernel for 'valid': so must we
        with pytest.raises(ValueError, match="x: images"):
            ops.conv2d(x, w, padding=padding, strides=strides, dilation_rate=dilation)
        return
    for impl in (ops.conv2d, oracle.conv2d):
        got = impl(x, w, padding=padding, strides=strides, dilation_rate=dilation)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


POOL_GEOMETRY = [  # (H, W), pool_size, strides
    ((7, 9), 3, 2), ((6, 6), 2, 1), ((5, 8), (2, 3), (1, 2)), ((8, 7), 2, 3),
    ((4, 5), 5, 2), ((7, 5), 2, None), ((8, 8), 4, 3),
]


@pytest.mark.parametrize("size, pool, strides", POOL_GEOMETRY)
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_pools_are_keras_ops_pools(size, pool, strides, padding):
    """max_pool2d and avg_pool2d (ops and oracle) against keras.ops.max_pool and
    keras.ops.average_pool: at the border, 'same' averages only the pixels in the image."""
    x = np.random.default_rng(1).standard_normal((2, *size, 3))
    steps = pool if strides is None else strides  # (keras.ops trips over None in 3.15)
    want_max = np.asarray(keras.ops.max_pool(x, pool, steps, padding))
    want_avg = np.asarray(keras.ops.average_pool(x, pool, steps, padding))
    if want_max.size == 0:  # Keras makes no window there; we refuse, as for convolutions
        with pytest.raises(ValueError, match="pool_size"):
            ops.avg_pool2d(x, pool, padding, strides=strides)
        return
    for impl_max, impl_avg in ((ops.max_pool2d, ops.avg_pool2d),
                               (oracle.max_pool2d, oracle.avg_pool2d)):
        np.testing.assert_array_equal(impl_max(x, pool, padding, strides=strides)[0], want_max)
        got = impl_avg(x, pool, padding, strides=strides)
        assert got.shape == want_avg.shape
        np.testing.assert_allclose(got, want_avg, rtol=1e-12, atol=1e-12)


# ---- whole networks -------------------------------------------------------------------
def network(L, kind):
    """The layers of one network of `kind` in module L (cconv.layers or keras.layers)."""
    conv = lambda f, k=3, **kw: L.Conv2D(f, k, activation="tanh",
                                         bias_initializer="random_normal", **kw)
    head = [L.Flatten(), L.Dense(3, activation="softmax")]
    return {
        "strided_conv": [conv(4, strides=2, padding="same"),
                         conv(3, (2, 3), strides=(1, 2))] + head,
        "strided_grey_conv": [conv(1, 1), conv(4, 3, strides=3, padding="same"),
                              L.Conv2D(2, 2, strides=(2, 1), activation="relu")] + head,
        "dilated_conv": [conv(4, dilation_rate=2, padding="same"),
                         conv(3, 2, dilation_rate=(1, 2))] + head,
        "max_pool_strided": [conv(4, padding="same"),
                             L.MaxPooling2D(3, strides=2, padding="same"),
                             conv(3, 2), L.MaxPooling2D(2, strides=1)] + head,
        "average_pool": [conv(4, padding="same"),
                         L.AveragePooling2D(3, strides=2, padding="same"),
                         conv(3, 2), L.AveragePooling2D(2, padding="same")] + head,
        "average_pool_valid": [conv(4), L.AveragePooling2D((2, 3), strides=(1, 2))] + head,
    }[kind]


KINDS = ["strided_conv", "strided_grey_conv", "dilated_conv", "max_pool_strided",
         "average_pool", "average_pool_valid"]


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
    out = x
    for i, layer in enumerate(ours.layers[:-2]):  # each layer's own output
        out = layer.forward(out)
        inner = keras.Model(theirs.inputs, theirs.layers[i].output)
        np.testing.assert_allclose(out, inner.predict(x, verbose=0), **PREDICT_TOL,
                                   err_msg=f"{kind}: layer {i} {layer.name}")


@pytest.mark.parametrize("kind", KINDS)
def test_one_sgd_step_gives_keras_weights(kind):
    ours, theirs, x, y = twins(kind, seed=1)
    assert_one_sgd_step_as_keras(ours, theirs, x, y, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_summary_shapes_are_keras(kind, capsys):
    ours, theirs, _, _ = twins(kind)
    ours.summary()
    printed = capsys.readouterr().out
    for layer in theirs.layers:
        assert str((None,) + tuple(layer.output.shape[1:])) in printed, layer.name


# Initializer configs are tests/test_initializers.py's to compare (Keras 3.15's
# GlorotUniform writes input_axes and output_axes); here, the layers' own options.
OTHERS = ("name", "kernel_initializer", "bias_initializer")


@pytest.mark.parametrize("kind", KINDS)
def test_keras_files_cross_both_ways(tmp_path, kind):
    cconv.utils.set_random_seed(2)
    ours = cconv.Sequential([layers.Input(SHAPE)] + network(layers, kind))
    keras.utils.set_random_seed(2)
    theirs = keras.Sequential([keras.Input(SHAPE)] + network(keras.layers, kind))
    ours.save(tmp_path / "ours.keras")
    theirs.save(tmp_path / "theirs.keras")
    mine, keras_own = (layer_configs(file_layers(tmp_path / f"{who}.keras"), NEW, OTHERS)
                       for who in ("ours", "theirs"))
    assert mine and mine == keras_own
    x = np.random.default_rng(3).standard_normal((6,) + SHAPE).astype(np.float32)
    loaded_by_keras = keras.models.load_model(tmp_path / "ours.keras")
    np.testing.assert_allclose(loaded_by_keras.predict(x, verbose=0),
                               ours.predict(x, verbose=0), **PREDICT_TOL)
    loaded_by_us = cconv.models.load_model(tmp_path / "theirs.keras")
    assert [unnamed(l.get_config(), OTHERS) for l in loaded_by_us.layers
            if type(l).__name__ in NEW] == [c for _, c, _ in keras_own]
    np.testing.assert_allclose(loaded_by_us.predict(x, verbose=0),
                               theirs.predict(x, verbose=0), **PREDICT_TOL)


@pytest.mark.parametrize("make", [
    lambda L: L.Conv2D(4, 3), lambda L: L.Conv2D(4, 3, strides=2, padding="same"),
    lambda L: L.Conv2D(2, (2, 3), strides=(1, 3)), lambda L: L.Conv2D(3, 2, dilation_rate=2),
    lambda L: L.Conv2D(3, 3, dilation_rate=(1, 2), padding="same"),
    lambda L: L.MaxPooling2D(), lambda L: L.MaxPooling2D(3, strides=2, padding="same"),
    lambda L: L.MaxPooling2D((2, 3), strides=1), lambda L: L.AveragePooling2D(2),
    lambda L: L.AveragePooling2D(3, strides=(2, 1), padding="same"),
    lambda L: L.AveragePooling2D(pool_size=(3, 2)),
])
def test_configs_round_trip_and_match_keras(make):
    ours, theirs = make(layers), make(keras.layers)
    model = cconv.Sequential([layers.Input(SHAPE), ours])
    keras.Sequential([keras.Input(SHAPE), theirs])
    want = json.loads(json.dumps(theirs.get_config()))
    got = json.loads(json.dumps(ours.get_config()))
    assert unnamed(got, OTHERS) == unnamed(want, OTHERS)
    again = type(ours).from_config(want)
    assert json.loads(json.dumps(again.get_config())) == {**got, "name": want["name"]}
    assert model.layers[0].output_shape == tuple(theirs.compute_output_shape((None,) + SHAPE)[1:])


def test_keras_aliases_load():
    assert keras.layers.AvgPool2D is keras.layers.AveragePooling2D
    assert layers.KERAS_LAYERS["AvgPool2D"] is layers.AveragePooling2D
    assert cconv.utils.default_name(layers.AveragePooling2D) == \
        keras.src.utils.naming.to_snake_case("AveragePooling2D")


@pytest.mark.parametrize("call, error, match", [
    (lambda: layers.Conv2D(2, 3, strides=2, dilation_rate=2), ValueError,
     "strides > 1 cannot be combined with dilation_rate > 1"),
    (lambda: layers.Conv2D(2, 3, strides=0), ValueError, "strides"),
    (lambda: layers.Conv2D(2, 3, dilation_rate=(1, 2, 3)), ValueError, "dilation_rate"),
    (lambda: layers.Conv2D(2, 3, groups=2), ValueError, "groups=2 is not supported"),
    (lambda: layers.Conv2D(2, 3, data_format="channels_first"), ValueError,
     "Conv2D: data_format='channels_first' is not supported"),
    (lambda: layers.MaxPooling2D(2, strides=0), ValueError, "strides"),
    (lambda: layers.AveragePooling2D(2, padding="full"), ValueError, "padding"),
    (lambda: layers.AveragePooling2D(2, data_format="channels_first"), ValueError,
     "AveragePooling2D: data_format='channels_first' is not supported"),
])
def test_bad_arguments_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_keras_refuses_what_we_refuse():
    """Keras too refuses strides and dilation both above 1."""
    with pytest.raises(ValueError):
        keras.layers.Conv2D(2, 3, strides=2, dilation_rate=2)


@pytest.mark.parametrize("layer, match", [
    (lambda: layers.Conv2D(2, 4, dilation_rate=3),
     r"Conv2D: kernel_size \(4, 4\) dilated by \(3, 3\) is larger than the 9x8 input"),
    (lambda: layers.AveragePooling2D(9, strides=1),
     r"AveragePooling2D: pool_size \(9, 9\) is larger than the 9x8 input"),
])
def test_incompatible_input_is_named(layer, match):
    with pytest.raises(ValueError, match=match):
        cconv.Sequential([layers.Input(SHAPE), layer()])


@pytest.mark.parametrize("training", [False, True])
def test_fusion_leaves_strided_layers_alone(training):
    """ConvPool and ConvDense compute stride-1 convolutions and side-by-side pools only:
    a strided or dilated conv, or a pool with other strides, is never fused."""
    cases = [
        [layers.Conv2D(4, 3, strides=2, activation="relu"), layers.MaxPooling2D(2)],
        [layers.Conv2D(4, 3, dilation_rate=2, activation="relu"), layers.MaxPooling2D(2)],
        [layers.Conv2D(4, 3, activation="relu"), layers.MaxPooling2D(2, strides=1)],
        [layers.Conv2D(4, 3, activation="relu"), layers.MaxPooling2D(3, strides=2)],
    ]
    for run in cases:
        model = cconv.Sequential([layers.Input(SHAPE)] + run + [layers.Flatten(),
                                                                layers.Dense(3)])
        model.build()
        assert not any(isinstance(s, fusion.ConvPool)
                       for s in fusion.plan(model.layers, training)), run
    grey = cconv.Sequential([layers.Input((9, 8, 1)),
                             layers.Conv2D(4, 3, strides=2, activation="tanh"),
                             layers.Flatten(), layers.Dense(3)])
    grey.build()
    assert not any(isinstance(s, fusion.ConvDense) for s in fusion.plan(grey.layers, False))
    # and a plain conv followed by a plain pool still fuses
    plain = cconv.Sequential([layers.Input(SHAPE), layers.Conv2D(4, 3, activation="relu"),
                              layers.MaxPooling2D(2, strides=2), layers.Flatten(),
                              layers.Dense(3)])
    plain.build()
    assert any(isinstance(s, fusion.ConvPool) for s in fusion.plan(plain.layers, training))


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_through_the_model_are_finite_differences(kind):
    """The whole network's loss gradient wrt its input, through the layers' backward
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
    # centred differences, h = 1e-6: error about 1e-16 * |loss| / h
    np.testing.assert_allclose(grad, numerical_grad(loss, x), rtol=1e-5, atol=1e-8)
