"""Dense on inputs of any rank acts on the last axis, as Keras's does: (N, d1, ..., D) ->
(N, d1, ..., units), every row through the same weights. Against cconv.oracle (dense on
the input reshaped to rows), its shapes, weights and summary, and fusion, whose rules
must never take a Dense that reads anything but a Flatten's output. Keras itself:
tests/test_keras_shapes.py."""
import copy
import pickle

import numpy as np
import pytest

import cconv
from cconv import activations, fusion, oracle
from cconv.layers import Conv2D, Dense, Dropout, Flatten, Input, MaxPooling2D

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}
SHAPES = [(5, 4), (3, 2, 7), (2, 2, 2, 20)]  # rank 3, 4 and 5 inputs with the batch


def built_dense(shape, units, activation, dtype, seed=0):
    cconv.utils.set_random_seed(seed)
    layer = Dense(units, activation=activation, bias_initializer="random_normal")
    model = cconv.Sequential([Input(shape), layer], dtype=np.dtype(dtype).name)
    return model, layer


def oracle_forward(layer, x):
    """The oracle's dense on x's rows, then the activation, back in x's shape."""
    rows = x.reshape(-1, x.shape[-1]).astype(np.float64)
    z = oracle.dense(rows, layer.params["kernel"].astype(np.float64),
                     layer.params["bias"].astype(np.float64))
    return z, oracle.activation(layer.activation.name, z).reshape(
        x.shape[:-1] + (layer.units,))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("activation", activations.NAMES)
def test_forward_and_backward_match_the_oracle_on_rows(shape, activation, dtype):
    # gradients from the output (saved "y") and from the input ("z"), and softmax on the
    # last axis: each saved and reshaped the same way
    model, layer = built_dense(shape, 24, activation, dtype)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6,) + shape).astype(dtype)
    z, want = oracle_forward(layer, x)
    assert layer.output_shape == shape[:-1] + (24,)
    np.testing.assert_allclose(model.predict(x, verbose=0), want, **TOL[dtype])
    y = layer.forward(x, training=True)
    np.testing.assert_allclose(y, want, **TOL[dtype])
    grad = rng.standard_normal(y.shape).astype(dtype)
    layer.need_input_grad = True
    grad_x = layer.backward(grad)
    from_output = activations.row(activation).gradient_from == "output"
    g_rows = oracle.activation_backward(activation, want if from_output
                                        else z.reshape(want.shape),
                                        grad.astype(np.float64)).reshape(-1, 24)
    want_x, want_w, want_b = oracle.dense_backward(
        x.reshape(-1, shape[-1]).astype(np.float64), layer.params["kernel"].astype(np.float64),
        g_rows)
    assert grad_x.shape == x.shape
    np.testing.assert_allclose(grad_x, want_x.reshape(x.shape), **TOL[dtype])
    np.testing.assert_allclose(layer.grads["kernel"], want_w, **TOL[dtype])
    np.testing.assert_allclose(layer.grads["bias"], want_b, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_each_row_has_the_flat_layers_bits(dtype):
    # the rows of a rank-3 input go through the flat op: the same bits as a flat Dense
    # with the same weights on those rows, forward and backward
    model, layer = built_dense((5, 16), 32, "relu", dtype)
    flat = cconv.Sequential([Input((16,)), Dense(32, activation="relu")],
                            dtype=np.dtype(dtype).name)
    flat.set_weights(model.get_weights())
    x = np.random.default_rng(2).standard_normal((7, 5, 16)).astype(dtype)
    np.testing.assert_array_equal(model.predict(x, verbose=0).reshape(-1, 32),
                                  flat.predict(x.reshape(-1, 16), verbose=0))
    grad = np.random.default_rng(3).standard_normal((7, 5, 32)).astype(dtype)
    layer.forward(x, training=True)
    layer.need_input_grad = True
    gx = layer.backward(grad)
    other = flat.layers[0]
    other.forward(x.reshape(-1, 16), training=True)
    other.need_input_grad = True
    np.testing.assert_array_equal(gx.reshape(-1, 16), other.backward(grad.reshape(-1, 32)))
    np.testing.assert_array_equal(layer.grads["kernel"], other.grads["kernel"])


def test_shapes_weights_summary_and_config():
    model = cconv.Sequential([Input((5, 4)), Dense(6, activation="tanh"), Flatten(),
                              Dense(3, activation="softmax")])
    assert [l.output_shape for l in model.layers] == [(5, 6), (30,), (3,)]
    assert [w.shape for w in model.get_weights()] == [(4, 6), (6,), (30, 3), (3,)]
    assert model.layers[0].weight_shapes((9, 8, 4)) == {"kernel": (4, 6), "bias": (6,)}
    lines = []
    model.summary(print_fn=lines.append)
    assert "(None, 5, 6)" in lines[0] and "(None, 30)" in lines[0]
    assert model.count_params() == 4 * 6 + 6 + 30 * 3 + 3
    again = cconv.Sequential.from_config(model.get_config())
    assert [l.output_shape for l in again.layers] == [(5, 6), (30,), (3,)]
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        x = np.random.default_rng(4).standard_normal((3, 5, 4))
        np.testing.assert_array_equal(twin.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.parametrize("middle", [[], [Dropout(0.5)], [MaxPooling2D(2)]],
                         ids=["conv-dense", "conv-dropout-dense", "conv-pool-dense"])
@pytest.mark.parametrize("cin", [1, 2])  # ConvDense takes one channel, ConvDropoutDense any
def test_a_dense_on_a_conv_output_is_never_fused_as_flatten_dense(middle, cin):
    # The conv -> dense rules expect Flatten before the Dense (its kernel is (H*W*F, U));
    # a Dense reading the conv's (H, W, F) output directly acts on F alone.
    cconv.utils.set_random_seed(5)
    model = cconv.Sequential([Input((6, 6, cin)), Conv2D(4, 3, activation="tanh"),
                              *copy.deepcopy(middle), Dense(3, activation="relu"), Flatten(),
                              Dense(2, activation="softmax")])
    dense = model.layers[-3]
    for training in (False, True):
        for step in model._steps(training):
            if isinstance(step, fusion.Fused):
                assert dense not in step.layers, (training, type(step).__name__)
    conv = model.layers[0]
    x = np.random.default_rng(6).standard_normal((4, 6, 6, cin)).astype(np.float32)
    h = oracle.conv2d(x.astype(np.float64), conv.params["kernel"].astype(np.float64),
                      conv.params["bias"].astype(np.float64), "valid", "tanh")
    if middle and isinstance(middle[0], MaxPooling2D):
        h = oracle.max_pool2d(h, (2, 2), need_argmax=False)[0]
    _, h = oracle_forward(dense, h)
    _, want = oracle_forward(model.layers[-1], h.reshape(len(h), -1))
    np.testing.assert_allclose(model.predict(x, verbose=0), want, rtol=2e-5, atol=2e-6)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    history = model.fit(x, np.array([0, 1, 1, 0]), epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])


def test_flatten_dense_after_a_conv_still_fuses():
    # the rank-n Dense changed nothing for the rules' own case
    model = cconv.Sequential([Input((6, 6, 1)), Conv2D(4, 3, activation="tanh"), Flatten(),
                              Dense(3, activation="softmax")])
    assert isinstance(model._steps(False)[0], fusion.ConvDense)
    assert isinstance(model._steps(True)[0], fusion.ConvDropoutDense)


def test_wrong_last_axis_is_named():
    model = cconv.Sequential([Input((5, 4)), Dense(3)])
    with pytest.raises(ValueError, match="x"):
        model.predict(np.zeros((2, 5, 3)), verbose=0)
