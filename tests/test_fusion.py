"""The fused ops of the chapter-10 network against the oracle: conv2d_dense (Conv2D ->
Flatten -> Dense at inference, without the conv output in memory) and
dense_backward_gated (back through Dense, Dropout and the conv's activation), and the
fusion rules ConvDense and ConvDropoutDense that run them for models."""
import numpy as np
import pytest

import cconv
from cconv import fusion, ops, oracle
from cconv.layers import Conv2D, Dense, Dropout, Flatten, Input, MaxPooling2D

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 2e-5, np.float64: 1e-12}

CASES = [  # (N, H, W, KH, KW, F, U): the kernel's groups of 8 images, pairs, unit fives
    (1, 28, 28, 3, 3, 16, 10),   # chapter 10, one image
    (2, 5, 3, 3, 3, 20, 17),     # 'valid' rows of one pixel; 16 + 4 filters; 17 units
    (9, 7, 9, 1, 3, 9, 10),      # a full group and one image left over; 9 filters
    (3, 6, 6, 6, 6, 8, 1),       # kernel as large as the image; one unit
    (17, 4, 5, 3, 2, 3, 1),      # two groups and one; 3 filters, rows shorter than a block
    (2, 12, 10, 5, 5, 32, 10),   # 25 taps, two filter blocks
    (11, 5, 7, 2, 4, 5, 7),      # an odd group of three; strips of 5 * F not a SIMD multiple
]


@pytest.fixture
def rng():
    return np.random.default_rng(11)


def weights(rng, x_shape, kh, kw, f, units, padding, dtype):
    _, oh, ow, _ = ops.conv_output_shape(x_shape, (kh, kw, x_shape[3], f), padding)
    w = rng.uniform(-0.5, 0.5, (kh, kw, x_shape[3], f)).astype(dtype)
    b = rng.uniform(-0.5, 0.5, f).astype(dtype)
    dense_w = rng.uniform(-0.1, 0.1, (oh * ow * f, units)).astype(dtype)
    dense_b = rng.uniform(-0.5, 0.5, units).astype(dtype)
    return w, b, dense_w, dense_b


def reference(x, w, b, dense_w, dense_b, padding, activation):
    """The oracle in float64, whatever the dtype of the arguments."""
    def f64(a):
        return None if a is None else a.astype(np.float64)
    return oracle.conv2d_dense(f64(x), f64(w), f64(b), f64(dense_w), f64(dense_b), padding,
                               activation)


def assert_close(got, want, dtype, d):
    # A logit sums d terms: its rounding grows like sqrt(d).
    tol = TOL[dtype] * np.sqrt(d)
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv2d_dense_matches_oracle(rng, dtype, case, padding):
    n, h, w_, kh, kw, f, units = case
    x = rng.uniform(0, 1, (n, h, w_, 1)).astype(dtype)
    w, b, dense_w, dense_b = weights(rng, x.shape, kh, kw, f, units, padding, dtype)
    for activation in [None, "linear", "tanh", "relu"]:
        for cb, db in [(b, dense_b), (None, dense_b), (b, None), (None, None)]:
            got = ops.conv2d_dense(x, w, cb, dense_w, db, padding, activation)
            assert got.shape == (n, units) and got.dtype == dtype
            assert_close(got, reference(x, w, cb, dense_w, db, padding, activation), dtype,
                         dense_w.shape[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_dense_is_the_unfused_layers(rng, dtype):
    """Same values as conv2d then dense, and an image's logits do not depend on the
    images around it in the batch."""
    x = rng.uniform(0, 1, (13, 28, 28, 1)).astype(dtype)
    w, b, dense_w, dense_b = weights(rng, x.shape, 3, 3, 16, 10, "valid", dtype)
    fused = ops.conv2d_dense(x, w, b, dense_w, dense_b, "valid", "tanh")
    h = ops.conv2d(x, w, b, "valid", "tanh")
    assert_close(fused, ops.dense(h.reshape(13, -1), dense_w, dense_b), dtype, 10816)
    for i in [0, 7, 8, 12]:
        alone = ops.conv2d_dense(x[i:i + 1], w, b, dense_w, dense_b, "valid", "tanh")
        np.testing.assert_array_equal(alone[0], fused[i])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv2d_dense_several_channels(rng, dtype, padding):
    """More channels than one go layer by layer, with the same result."""
    x = rng.uniform(0, 1, (5, 6, 7, 3)).astype(dtype)
    w, b, dense_w, dense_b = weights(rng, x.shape, 3, 2, 4, 6, padding, dtype)
    got = ops.conv2d_dense(x, w, b, dense_w, dense_b, padding, "tanh")
    assert_close(got, reference(x, w, b, dense_w, dense_b, padding, "tanh"), dtype,
                 dense_w.shape[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_dense_empty(rng, dtype):
    x = np.zeros((0, 6, 6, 1), dtype)
    w, b, dense_w, dense_b = weights(rng, x.shape, 3, 3, 4, 5, "valid", dtype)
    assert ops.conv2d_dense(x, w, b, dense_w, dense_b).shape == (0, 5)
    x = np.zeros((2, 0, 6, 1), dtype)  # 'same' on empty images: the logits are the bias
    w, b, dense_w, dense_b = weights(rng, x.shape, 3, 3, 4, 5, "same", dtype)
    got = ops.conv2d_dense(x, w, b, dense_w, dense_b, "same")
    np.testing.assert_array_equal(got, np.broadcast_to(dense_b, (2, 5)))


def test_conv2d_dense_strided_inputs(rng):
    """Non-contiguous arguments are copied, not misread."""
    x = rng.uniform(0, 1, (4, 9, 8, 2)).astype(np.float32)[..., :1]
    w, b, dense_w, dense_b = weights(rng, x.shape, 3, 3, 5, 6, "valid", np.float32)
    dense_w_f = np.asfortranarray(dense_w)
    got = ops.conv2d_dense(x, w, b, dense_w_f, dense_b[::-1].copy()[::-1])
    assert_close(got, reference(x, w, b, dense_w, dense_b, "valid", None), np.float32,
                 dense_w.shape[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv2d_dense_thread_count_invariant(rng, threads, dtype, padding):
    x = rng.uniform(0, 1, (37, 14, 13, 1)).astype(dtype)
    w, b, dense_w, dense_b = weights(rng, x.shape, 3, 3, 16, 10, padding, dtype)
    results = []
    for t in (1, 2, 3):
        cconv.set_num_threads(t)
        results.append(ops.conv2d_dense(x, w, b, dense_w, dense_b, padding, "tanh"))
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])


def test_conv2d_dense_bad_input(rng):
    x = rng.uniform(0, 1, (2, 6, 6, 1)).astype(np.float32)
    w, b, dense_w, dense_b = weights(rng, x.shape, 3, 3, 4, 5, "valid", np.float32)
    bad = [
        (dict(x=x[0]), ValueError, "x: expected a 4-d array"),
        (dict(x=x.astype(np.int32).astype(np.complex64)), TypeError, "x: expected dtype"),
        (dict(w=w.astype(np.float64)), TypeError, "w: expected dtype float32"),
        (dict(w=w[:, :, :, :, None]), ValueError, "w: expected a 4-d array"),
        (dict(x=x[:, :2]), ValueError, "x: images of 2x6 are smaller"),
        (dict(b=b[:3]), ValueError, r"b: expected shape \(4,\)"),
        (dict(b=b.astype(np.float64)), TypeError, "b: expected dtype float32"),
        (dict(dense_w=None), TypeError, "dense_w: expected a numpy array"),
        (dict(dense_w=dense_w[:-1]), ValueError, "dense_w: expected 64 rows"),
        (dict(dense_w=dense_w[:, 0]), ValueError, "dense_w: expected a 2-d array"),
        (dict(dense_w=dense_w.astype(np.float64)), TypeError, "dense_w: expected dtype"),
        (dict(dense_b=dense_b[:4]), ValueError, r"dense_b: expected shape \(5,\)"),
        (dict(dense_b=dense_b.astype(np.float64)), TypeError, "dense_b: expected dtype"),
        (dict(padding="full"), ValueError, "padding: expected one of"),
        (dict(activation="softmax"), ValueError, "activation: expected one of"),
    ]
    for change, error, message in bad:
        args = dict(x=x, w=w, b=b, dense_w=dense_w, dense_b=dense_b, padding="valid",
                    activation="tanh")
        args.update(change)
        with pytest.raises(error, match=message):
            ops.conv2d_dense(**args)


# ---- the fusion rule ------------------------------------------------------------------
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
    h = {"tanh": np.tanh, "relu": lambda a: np.maximum(a, 0)}.get(conv.activation.name,
                                                                     lambda a: a)(h)
    z = oracle.dense(h.reshape(len(h), -1), q["kernel"], q.get("bias"))
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def fused_steps(model, training):
    return [s for s in fusion.plan(model.layers, training) if isinstance(s, fusion.ConvDense)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding,activation,dropouts", [("valid", "tanh", 1),
                                                         ("same", "relu", 0),
                                                         ("valid", None, 2)])
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
    assert fused_steps(ch10_model("float32", activation="softmax"), False) == []
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


# ---- training: back through Dense, Dropout and the conv's activation in one op --------
GATED_CASES = [(1, 37, 1), (4, 64, 10), (5, 100, 17), (2, 31, 5), (7, 10816 // 16, 10)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,d,units", GATED_CASES)
def test_dense_backward_gated_matches_oracle(rng, dtype, n, d, units):
    g = rng.standard_normal((n, units)).astype(dtype)
    w = rng.standard_normal((d, units)).astype(dtype)
    z = rng.standard_normal((n, d)).astype(dtype)
    mask = (rng.uniform(0, 1, (n, d)) >= 0.3).astype(np.uint8)
    for activation, y in [(None, z), ("linear", z), ("tanh", np.tanh(z).astype(dtype)),
                          ("relu", np.maximum(z, 0))]:
        for m, rate in [(mask, 0.3), (None, 0.0), (mask.astype(bool), 0.6)]:
            got = ops.dense_backward_gated(g, w, y, m, rate, activation)
            want = oracle.dense_backward_gated(g.astype(np.float64), w.astype(np.float64),
                                               y.astype(np.float64), m, rate, activation)
            assert got.shape == (n, d) and got.dtype == dtype
            assert_close(got, want, dtype, units)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_backward_gated_thread_count_invariant(rng, threads, dtype):
    g = rng.standard_normal((23, 10)).astype(dtype)
    w = rng.standard_normal((333, 10)).astype(dtype)
    y = np.tanh(rng.standard_normal((23, 333))).astype(dtype)
    mask = (rng.uniform(0, 1, y.shape) >= 0.5).astype(np.uint8)
    results = []
    for t in (1, 2, 3):
        cconv.set_num_threads(t)
        results.append(ops.dense_backward_gated(g, w, y, mask, 0.5, "tanh"))
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])


def test_dense_backward_gated_bad_input(rng):
    g = rng.standard_normal((3, 4)).astype(np.float32)
    w = rng.standard_normal((6, 4)).astype(np.float32)
    y = rng.standard_normal((3, 6)).astype(np.float32)
    mask = np.ones((3, 6), np.uint8)
    bad = [
        (dict(grad_out=g[:2]), ValueError, "grad_out: expected shape"),
        (dict(w=w[:5]), ValueError, "grad_out: expected shape"),
        (dict(w=w.astype(np.float64)), TypeError, "w: expected dtype float32"),
        (dict(y=y[None]), ValueError, "y: expected a 2-d array"),
        (dict(mask=mask[:2]), ValueError, "mask: expected shape"),
        (dict(mask=mask * 2), ValueError, "mask: expected only 0s and 1s"),
        (dict(rate=1.0), ValueError, "rate: expected a float in"),
        (dict(activation="softmax"), ValueError, "activation: expected one of"),
    ]
    for change, error, message in bad:
        args = dict(grad_out=g, w=w, y=y, mask=mask, rate=0.5, activation="tanh")
        args.update(change)
        with pytest.raises(error, match=message):
            ops.dense_backward_gated(**args)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding,activation,dropouts,channels", [("valid", "tanh", 1, 1),
                                                                  ("same", "relu", 0, 1),
                                                                  ("valid", None, 1, 2)])
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
    h = {"tanh": np.tanh, "relu": lambda a: np.maximum(a, 0)}.get(activation, lambda a: a)(pre)
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
    model = ch10_model("float32", activation="softmax")
    assert not any(isinstance(s, fusion.ConvDropoutDense) for s in fusion.plan(model.layers, True))
    assert not any(isinstance(s, fusion.ConvDropoutDense)
                   for s in fusion.plan(ch10_model("float32").layers, False))
