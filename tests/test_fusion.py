"""The fusion rules of cconv.fusion against the oracle and the unfused layers:
ConvDense (the chapter-10 network at inference), ConvDropoutDense (its training step)
and ConvPool (Conv2D -> MaxPooling2D, by finite differences and a model trained with it
against one trained layer by layer); each applies only where it should. The fused ops
they run are tested in tests/ops/test_fused.py, the contract with the layers in
tests/test_fusion_contract.py."""
import numpy as np
import pytest

import cconv
from cconv import activations, fusion, oracle
from cconv.layers import Conv2D, Dense, Dropout, Flatten, Input, MaxPooling2D
from conftest import DTYPES, assert_close, numerical_grad


# ---- ConvDense and ConvDropoutDense ----------------------------------------------------


def ch10_model(dtype, padding="valid", activation="tanh", dropouts=1, channels=1):
    cconv.utils.set_random_seed(3)
    layers = ([Input((28, 28, channels)),
               Conv2D(16, 3, activation=activation, padding=padding)]
              + [Dropout(0.5) for _ in range(dropouts)]
              + [Flatten(), Dense(10, activation="softmax")])
    model = cconv.Sequential(layers, dtype=dtype)
    model.compile(optimizer=cconv.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def reference_probs(model, x):
    """The model's output from its weights, layer by layer in the float64 oracle."""
    conv, dense = model.layers[0], model.layers[-1]
    p = {k: v.astype(np.float64) for k, v in conv.params.items()}
    q = {k: v.astype(np.float64) for k, v in dense.params.items()}
    h = oracle.conv2d(x.astype(np.float64), p["kernel"], p.get("bias"), conv.padding)
    h = oracle.activation(conv.activation.name, h)
    return oracle.softmax(oracle.dense(h.reshape(len(h), -1), q["kernel"], q.get("bias")))


def fused_steps(model, training):
    return [s for s in fusion.plan(model.layers, training) if isinstance(s, fusion.ConvDense)]


# The activations the fused kernels do not take (softmax, and those whose gradient needs
# their input).
NOT_FUSED = [name for name in activations.NAMES if name not in activations.FUSED]
assert NOT_FUSED and "softmax" in NOT_FUSED

# Every activation the fused kernels take (and None), each with one of the paddings and
# dropout counts in turn: each pair of those meets at least one activation.
FUSED_CASES = [(("valid", "same")[i % 2], activation, (1, 0, 2)[i % 3])
               for i, activation in enumerate([None, *activations.FUSED])]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding,activation,dropouts", FUSED_CASES)
def test_model_uses_the_fused_step(rng, dtype, padding, activation, dropouts):
    model = ch10_model(dtype, padding, activation, dropouts)
    assert len(fused_steps(model, False)) == 1
    assert fused_steps(model, False)[0].layers == tuple(model.layers)
    assert fused_steps(model, True) == []
    x = rng.uniform(0, 1, (45, 28, 28, 1)).astype(dtype)
    y = rng.integers(0, 10, 45)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # weights that are not the initial ones
    want = reference_probs(model, x)
    tol = 1e-5 if dtype == np.float32 else 1e-11
    np.testing.assert_allclose(model.predict(x, batch_size=20), want, rtol=tol, atol=tol)
    loss, acc = model.evaluate(x, y, batch_size=20)
    want_loss = -np.mean(np.log(want[np.arange(45), y]))
    np.testing.assert_allclose(loss, want_loss, rtol=tol)
    assert acc == np.mean(want.argmax(axis=1) == y)


def test_rule_applies_only_where_it_should():
    assert fused_steps(ch10_model("float32", channels=3), False) == []
    for name in NOT_FUSED:
        assert fused_steps(ch10_model("float32", activation=name), False) == [], name
    cconv.utils.set_random_seed(0)
    model = cconv.Sequential([Input((8, 8, 1)), Conv2D(4, 3), MaxPooling2D(2), Flatten(),
                              Dense(3)])
    assert fused_steps(model, False) == []
    model = cconv.Sequential([Input((8, 8, 1)), Conv2D(4, 3), Flatten(), Dense(3),
                              Dense(2)])
    steps = fusion.plan(model.layers, False)
    assert isinstance(steps[0], fusion.ConvDense) and steps[1] is model.layers[3]
    model = cconv.Sequential([Input((8, 8, 1)), Conv2D(4, 3), Dropout(0.2)])
    assert fused_steps(model, False) == []


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding,activation,dropouts,channels",
                         [(padding, activation, min(dropouts, 1), 1 + i % 2)
                          for i, (padding, activation, dropouts) in enumerate(FUSED_CASES)])
def test_training_step_grads_match_oracle(rng, dtype, padding, activation, dropouts,
                                          channels):
    """One forward and backward through the training plan, against the oracle's grads
    for the same dropout mask."""
    model = ch10_model(dtype, padding, activation, dropouts, channels)
    steps = fusion.plan(model.layers, True)
    assert isinstance(steps[0], fusion.ConvDropoutDense) and len(steps) == 1
    x = rng.uniform(0, 1, (5, 28, 28, channels)).astype(dtype)
    g = rng.standard_normal((5, 10)).astype(dtype)
    z = steps[0].forward_linear(x, True, np.random.default_rng(1))
    steps[0].backward_linear(g)
    conv, dense = model.layers[0], model.layers[-1]
    f64 = {k: v.astype(np.float64) for k, v in conv.params.items()}
    d64 = {k: v.astype(np.float64) for k, v in dense.params.items()}
    pre = oracle.conv2d(x.astype(np.float64), f64["kernel"], f64["bias"], padding)
    h = oracle.activation(activation, pre)
    mask = model.layers[1].saved["mask"] if dropouts else None
    rate = model.layers[1].rate if dropouts else 0.0
    dropped = h if mask is None else oracle.dropout(h, rate, mask=mask)[0]
    flat = dropped.reshape(5, -1)
    assert_close(z, oracle.dense(flat, d64["kernel"], d64["bias"]), dtype, flat.shape[1])
    _, grad_dw, grad_db = oracle.dense_backward(flat, d64["kernel"], g.astype(np.float64))
    grad_z = oracle.dense_backward_gated(g.astype(np.float64), d64["kernel"], h.reshape(5, -1),
                                         None if mask is None else mask.reshape(5, -1), rate,
                                         activation)
    _, grad_k, grad_b = oracle.conv2d_backward(x.astype(np.float64), f64["kernel"],
                                               grad_z.reshape(h.shape), padding)
    assert_close(dense.grads["kernel"], grad_dw, dtype, 5)
    assert_close(dense.grads["bias"], grad_db, dtype, 5)
    assert_close(conv.grads["kernel"], grad_k, dtype, grad_z.size)
    assert_close(conv.grads["bias"], grad_b, dtype, grad_z.size)


def test_training_rule_applies_only_where_it_should():
    model = ch10_model("float32", dropouts=2)
    assert not any(isinstance(s, fusion.ConvDropoutDense) for s in fusion.plan(model.layers, True))
    for name in NOT_FUSED:
        model = ch10_model("float32", activation=name)
        assert not any(isinstance(s, fusion.ConvDropoutDense)
                       for s in fusion.plan(model.layers, True)), name
    assert not any(isinstance(s, fusion.ConvDropoutDense)
                   for s in fusion.plan(ch10_model("float32").layers, False))


# ---- ConvPool ---------------------------------------------------------------------------


@pytest.mark.parametrize("activation", [None, *activations.FUSED])
@pytest.mark.parametrize("c,padding,pool,pool_padding", [(1, "same", 2, "valid"),
                                                        (3, "valid", (2, 3), "same")])
def test_conv_pool_step_gradients_by_finite_differences(activation, c, padding, pool,
                                                        pool_padding):
    rng = np.random.default_rng(7)
    conv = Conv2D(4, 3, activation=activation, padding=padding, bias_initializer="ones")
    maxpool = MaxPooling2D(pool, padding=pool_padding)
    conv.build((7, 8, c), np.float64, rng)
    maxpool.build(conv.output_shape, np.float64, rng)
    step = fusion.ConvPool((conv, maxpool))
    x = rng.standard_normal((2, 7, 8, c))
    k, b = conv.params["kernel"], conv.params["bias"]
    r = rng.standard_normal((2,) + maxpool.output_shape)
    step.forward(x, training=True)
    grad_x = step.backward(r)

    def loss():
        y, _ = oracle.conv2d_maxpool(x, k, b, padding, activation, pool, pool_padding)
        return float((y * r).sum())
    # Differences of a loss of order 1 over 2e-6 carry errors of about 1e-10.
    for got, a in ((conv.grads["kernel"], k), (conv.grads["bias"], b), (grad_x, x)):
        np.testing.assert_allclose(got, numerical_grad(loss, a), rtol=1e-6, atol=1e-8)


def conv_pool_model(dtype, optimizer=None):
    cconv.utils.set_random_seed(0)
    model = cconv.Sequential([
        Input((9, 8, 1)),
        Conv2D(5, 3, padding="same", activation="relu", bias_initializer="ones"),
        MaxPooling2D(2, padding="same"),
        Conv2D(4, 3, activation="tanh"),
        MaxPooling2D((2, 1)),
        Flatten(),
        Dense(3),
    ], dtype=dtype)
    model.compile(optimizer=optimizer or cconv.optimizers.SGD(0.1),
                  loss=cconv.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def test_plan_fuses_conv_and_pool():
    model = conv_pool_model("float32")
    for training in (False, True):
        steps = model._steps(training)
        assert [type(s).__name__ for s in steps] == ["ConvPool", "ConvPool", "Flatten",
                                                     "Dense"]
        assert steps[0].layers == tuple(model.layers[:2])
    # An activation the fused kernels do not take (softmax, or one whose gradient needs
    # its input): no fusion, in training or not.
    for name in NOT_FUSED:
        plain = cconv.Sequential([Input((6, 6, 1)), Conv2D(2, 3, activation=name),
                                  MaxPooling2D(2), Flatten(), Dense(2)])
        for training in (False, True):
            assert not any(isinstance(s, fusion.ConvPool) for s in plain._steps(training)), name


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_training_step_matches_the_oracle(dtype):
    rng = np.random.default_rng(3)
    x = rng.random((6, 9, 8, 1)).astype(dtype)
    y = rng.integers(0, 3, 6)
    model = conv_pool_model(dtype)
    k1, b1, k2, b2, w3, b3 = [a.astype(np.float64) for a in model.get_weights()]
    history = model.fit(x, y, batch_size=6, epochs=1, shuffle=False, verbose=0, seed=0)

    xd = x.astype(np.float64)
    h1 = oracle.relu(oracle.conv2d(xd, k1, b1, "same"))
    p1, a1 = oracle.max_pool2d(h1, 2, "same")
    h2 = oracle.tanh(oracle.conv2d(p1, k2, b2))
    p2, a2 = oracle.max_pool2d(h2, (2, 1))
    flat = p2.reshape(6, -1)
    logits = oracle.dense(flat, w3, b3)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_p[np.arange(6), y].mean()
    g = (np.exp(log_p) - np.eye(3)[y]) / 6
    gflat, gw3, gb3 = oracle.dense_backward(flat, w3, g)
    gh2 = oracle.tanh_backward(h2, oracle.max_pool2d_backward(gflat.reshape(p2.shape), a2,
                                                              h2.shape, (2, 1)))
    gp1, gk2, gb2 = oracle.conv2d_backward(p1, k2, gh2)
    gh1 = oracle.relu_backward(h1, oracle.max_pool2d_backward(gp1, a1, h1.shape, 2, "same"))
    _, gk1, gb1 = oracle.conv2d_backward(xd, k1, gh1, "same")
    grads = [gk1, gb1, gk2, gb2, gw3, gb3]
    want = [p - 0.1 * gp for p, gp in zip([k1, b1, k2, b2, w3, b3], grads)]
    tol = {"float32": dict(rtol=1e-4, atol=1e-6), "float64": dict(rtol=1e-10, atol=1e-12)}
    for layer_grad, exp in zip([model.layers[0].grads["kernel"], model.layers[2].grads["bias"],
                                model.layers[5].grads["kernel"]], [gk1, gb2, gw3]):
        np.testing.assert_allclose(layer_grad, exp, **tol[dtype])
    for got, exp in zip(model.get_weights(), want):
        np.testing.assert_allclose(got, exp, **tol[dtype])
    np.testing.assert_allclose(history.history["loss"][0], loss, rtol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_model_has_the_bits_of_the_unfused_one(dtype, monkeypatch):
    rng = np.random.default_rng(4)
    x = rng.random((20, 9, 8, 1)).astype(dtype)
    y = rng.integers(0, 3, 20)
    results = []
    for rules in (list(fusion.RULES), []):
        monkeypatch.setattr(fusion, "RULES", rules)
        model = conv_pool_model(dtype, cconv.optimizers.Adam(1e-2))
        assert any(isinstance(s, fusion.ConvPool) for s in model._steps(True)) == bool(rules)
        model.fit(x, y, batch_size=5, epochs=2, seed=1, verbose=0)
        results.append(model.get_weights() + [model.predict(x)])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_blank_images_meet_a_nonfinite_weight_as_the_layers_do(bad, monkeypatch):
    """A bias-free conv model predicts through conv2d_dense, which skips the windows of
    zeros, but not beside an inf or NaN weight: there the layers give NaN (0 * inf), and
    so must the fused step."""
    x = np.zeros((4, 9, 9, 1))
    x[1, 3:6, 2:7, 0] = np.random.default_rng(5).random((3, 5))
    results = []
    for rules in (list(fusion.RULES), []):
        monkeypatch.setattr(fusion, "RULES", rules)
        rng = np.random.default_rng(6)  # the same weights for both
        model = cconv.Sequential([Input((9, 9, 1)), Conv2D(4, 3, activation="tanh",
                                                           use_bias=False),
                                  Flatten(), Dense(3, use_bias=False)], dtype="float64")
        model.set_weights([rng.uniform(-0.5, 0.5, w.shape) for w in model.get_weights()])
        # as a diverged fit leaves it (set_weights refuses it): read by the top-left
        # window, blank in every image but one
        model.layers[-1].params["kernel"][0, 2] = bad
        results.append(model.predict(x, verbose=0))
    fused, layers = results
    assert np.isnan(layers[:, 2]).all()
    np.testing.assert_array_equal(np.isnan(fused), np.isnan(layers))


@pytest.mark.parametrize("name", activations.FUSED)
def test_blank_images_through_every_fused_activation(name, monkeypatch):
    """A bias-free conv model on images with blank margins predicts through
    conv2d_dense, which may skip the windows of zeros only where the activation keeps 0
    at 0: sigmoid's 0.5 or exponential's 1 there still reaches the logits. The fused step
    must give the layers' numbers."""
    x = np.zeros((3, 9, 9, 1))
    x[1:, 3:6, 2:7, 0] = np.random.default_rng(5).random((2, 3, 5))
    results = []
    for rules in (list(fusion.RULES), []):
        monkeypatch.setattr(fusion, "RULES", rules)
        rng = np.random.default_rng(6)  # the same weights for both
        model = cconv.Sequential([Input((9, 9, 1)), Conv2D(4, 3, activation=name,
                                                           use_bias=False),
                                  Flatten(), Dense(3, use_bias=False)], dtype="float64")
        model.set_weights([rng.uniform(-0.5, 0.5, w.shape) for w in model.get_weights()])
        assert any(isinstance(s, fusion.ConvDense) for s in model._steps(False)) == bool(rules)
        results.append(model.predict(x, verbose=0))
    np.testing.assert_allclose(*results, rtol=1e-12, atol=1e-12)
