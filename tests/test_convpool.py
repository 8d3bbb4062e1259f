"""Convolution fused with max pooling: ops.conv2d_maxpool against the oracle in both
dtypes, its argmax against max_pool2d's on the unfused output, 1/2/3 threads bit-exact,
bad input named; the ConvPool step of fusion against the oracle and finite differences,
and a model trained with it against one trained layer by layer."""
import numpy as np
import pytest

import cconv
from cconv import fusion, ops, oracle
from cconv.layers import Conv2D, Dense, Flatten, Input, MaxPooling2D
from test_gradcheck import numerical_grad

DTYPES = [np.float32, np.float64]
EPS = {np.float32: 2e-6, np.float64: 1e-14}  # relative rounding of one term, with margin

CASES = [  # (N, H, W, C), (KH, KW, F), padding, pool_size, pool_padding
    ((1, 6, 6, 1), (3, 3, 5), "valid", 2, "valid"),
    ((2, 28, 28, 1), (5, 5, 32), "same", 2, "valid"),     # the tutorial's conv1 and pool
    ((2, 14, 14, 32), (5, 5, 64), "same", 2, "valid"),    # its conv2 and pool
    ((3, 9, 7, 1), (3, 3, 4), "same", 2, "same"),         # odd sizes, 'same' pooling
    ((2, 9, 7, 3), (3, 2, 17), "valid", 2, "valid"),      # 7x6 output, a row dropped
    ((1, 11, 10, 5), (3, 3, 20), "same", 3, "same"),
    ((2, 8, 9, 2), (2, 2, 7), "valid", (2, 3), "valid"),  # 7x8: a row and 2 columns dropped
    ((2, 8, 9, 1), (2, 3, 33), "same", (2, 3), "same"),
    ((1, 5, 5, 4), (5, 5, 3), "valid", 1, "valid"),       # a 1x1 output
    ((1, 4, 4, 2), (3, 3, 8), "same", 5, "same"),         # a window larger than the image
    ((2, 30, 31, 3), (3, 3, 16), "same", 2, "valid"),     # several bands per image
    ((1, 7, 5, 1), (1, 1, 1), "valid", 3, "same"),        # one filter
    ((2, 13, 6, 1), (4, 3, 17), "same", (3, 2), "same"),  # PX-wide blocks do not fit rows
]
ACTIVATIONS = [None, "linear", "tanh", "relu"]


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def inputs(rng, case, dtype, bias=True):
    xs, (kh, kw, f) = case[0], case[1]
    x = rng.standard_normal(xs).astype(dtype)
    w = (rng.standard_normal((kh, kw, xs[3], f)) / np.sqrt(kh * kw * xs[3])).astype(dtype)
    b = rng.standard_normal(f).astype(dtype) if bias else None
    return x, w, b


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_maxpool_is_conv_then_pool(rng, dtype, case, activation, bias):
    _, _, padding, pool, pool_padding = case
    x, w, b = inputs(rng, case, dtype, bias)
    y, argmax = ops.conv2d_maxpool(x, w, b, padding, activation, pool, pool_padding,
                                   need_argmax=True)
    want, _ = oracle.conv2d_maxpool(x.astype(np.float64), w.astype(np.float64),
                                    None if b is None else b.astype(np.float64), padding,
                                    activation, pool, pool_padding)
    assert y.dtype == dtype and argmax.dtype == np.int32 and y.shape == want.shape
    terms = w.shape[0] * w.shape[1] * w.shape[2] + 1
    np.testing.assert_allclose(y, want, rtol=0, atol=EPS[dtype] * terms * 4)
    # The unfused ops give the same bits: the same sums, then the same pooling.
    h = ops.conv2d(x, w, b, padding, activation)
    want_y, want_argmax = ops.max_pool2d(h, pool, pool_padding)
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(argmax, want_argmax)
    # argmax names, in the oracle's convolution, an element holding the pooled value.
    h_oracle = oracle.conv2d_maxpool(x, w, b, padding, activation, 1)[0]
    picked = np.take_along_axis(h_oracle.reshape(len(x), -1),
                                argmax.reshape(len(x), -1).astype(np.intp), axis=1)
    np.testing.assert_allclose(picked.reshape(y.shape), want, rtol=0,
                               atol=EPS[dtype] * terms * 4)
    y2, none = ops.conv2d_maxpool(x, w, b, padding, activation, pool, pool_padding)
    assert none is None
    np.testing.assert_array_equal(y2, y)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [CASES[1], CASES[2], CASES[3], CASES[7]])
@pytest.mark.parametrize("activation", [None, "relu"])
def test_ties_go_to_the_first_like_the_oracle(rng, dtype, case, activation, monkeypatch):
    """Small integers: every sum is exact, many windows tie (all of relu's negative ones
    at 0), and the argmax must be the oracle's, which picks the first. Winograd's
    transforms round even integer sums, so it is kept out: this tests the fused path."""
    monkeypatch.setattr(ops.winograd, "WINOGRAD_MIN_CHANNELS", 10**9)
    xs, (kh, kw, f), padding, pool, pool_padding = case
    x = rng.integers(-1, 2, xs).astype(dtype)
    w = rng.integers(-1, 2, (kh, kw, xs[3], f)).astype(dtype)
    b = rng.integers(-2, 3, f).astype(dtype)
    y, argmax = ops.conv2d_maxpool(x, w, b, padding, activation, pool, pool_padding,
                                   need_argmax=True)
    want_y, want_argmax = oracle.conv2d_maxpool(x, w, b, padding, activation, pool,
                                                pool_padding, need_argmax=True)
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(argmax, want_argmax)


@pytest.mark.parametrize("case", [CASES[2], CASES[10], CASES[12]])
def test_any_band_height_gives_the_same_bits(rng, case, monkeypatch):
    """Bands of one pooled row each, against the default bands (of the fused path, so
    without Winograd)."""
    monkeypatch.setattr(ops.winograd, "WINOGRAD_MIN_CHANNELS", 10**9)
    _, _, padding, pool, pool_padding = case
    x, w, b = inputs(rng, case, np.float32)
    want = ops.conv2d_maxpool(x, w, b, padding, "relu", pool, pool_padding, True)
    monkeypatch.setattr(ops.fused, "CONV_POOL_BAND_BYTES", 1)
    got = ops.conv2d_maxpool(x, w, b, padding, "relu", pool, pool_padding, True)
    for g, e in zip(got, want):
        np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("case", [CASES[1], CASES[2], CASES[5]])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_same_bits_on_one_two_and_three_threads(rng, case, activation, threads):
    _, _, padding, pool, pool_padding = case
    x, w, b = inputs(rng, case, np.float32)
    x = np.concatenate([x] * 4)  # more images than threads
    results = []
    for n in (1, 2, 3):
        cconv.set_num_threads(n)
        results.append(ops.conv2d_maxpool(x, w, b, padding, activation, pool, pool_padding,
                                          need_argmax=True))
    for y, a in results[1:]:
        assert np.array_equal(y, results[0][0]) and np.array_equal(a, results[0][1])


def test_empty_batch_and_given_buffers(rng):
    x, w, b = inputs(rng, CASES[3], np.float32)
    y, a = ops.conv2d_maxpool(x[:0], w, b, "same", "relu", 2, "same", need_argmax=True)
    assert y.shape == (0, 5, 4, 4) and a.shape == y.shape
    out = np.full((3, 5, 4, 4), np.nan, np.float32)
    arg = np.full(out.shape, -1, np.int32)
    y, a = ops.conv2d_maxpool(x, w, b, "same", "relu", 2, "same", True, out=out,
                              out_argmax=arg)
    assert y is out and a is arg
    want_y, want_a = ops.max_pool2d(ops.conv2d(x, w, b, "same", "relu"), 2, "same")
    assert np.array_equal(out, want_y) and np.array_equal(arg, want_a)


@pytest.mark.parametrize("call,error,match", [
    (lambda x, w, b: ops.conv2d_maxpool(x.astype(np.int8), w, b), TypeError, "x: expected dtype"),
    (lambda x, w, b: ops.conv2d_maxpool(x, w.astype(np.float32), b), TypeError, "w: expected"),
    (lambda x, w, b: ops.conv2d_maxpool(x[..., 0], w, b), ValueError, "x: expected a 4-d"),
    (lambda x, w, b: ops.conv2d_maxpool(x, w[:, :, :1], b), ValueError, "x: expected 1 channels"),
    (lambda x, w, b: ops.conv2d_maxpool(x, w, b[:2]), ValueError, "b: expected shape"),
    (lambda x, w, b: ops.conv2d_maxpool(x, w, b, "full"), ValueError, "padding: expected"),
    (lambda x, w, b: ops.conv2d_maxpool(x, w, b, activation="softmax"), ValueError,
     "activation: expected"),
    (lambda x, w, b: ops.conv2d_maxpool(x, w, b, pool_size=0), ValueError, "pool_size"),
    (lambda x, w, b: ops.conv2d_maxpool(x, w, b, pool_size=2.0), TypeError, "pool_size"),
    (lambda x, w, b: ops.conv2d_maxpool(x, w, b, pool_size=(2, 2, 2)), ValueError,
     "pool_size"),
    (lambda x, w, b: ops.conv2d_maxpool(x, w, b, pool_size=7), ValueError,
     "pool_size: a 7x7 window is larger than the 6x5 convolution output"),
    (lambda x, w, b: ops.conv2d_maxpool(x, w, b, pool_padding="full"), ValueError,
     "pool_padding: expected"),
    (lambda x, w, b: ops.conv2d_maxpool(x, w, b, out=np.empty((3, 3, 3, 4))), ValueError,
     "out: expected shape"),
    (lambda x, w, b: ops.conv2d_maxpool(x, w, b, need_argmax=True,
                                        out_argmax=np.empty((3, 3, 2, 4))), ValueError,
     "out_argmax: expected"),
    (lambda x, w, b: ops.conv2d_maxpool(x, w, b, need_argmax=True, out_argmax=[0]),
     TypeError, "out_argmax: expected a numpy array"),
])
def test_bad_input_is_named(call, error, match):
    x = np.zeros((3, 8, 7, 2))
    w = np.zeros((3, 3, 2, 4))
    b = np.zeros(4)
    with pytest.raises(error, match=match):
        call(x, w, b)


# ---- the fused step ----------------------------------------------------------------
@pytest.mark.parametrize("activation", ["relu", "tanh", None])
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
        steps = model._plans[training]
        assert [type(s).__name__ for s in steps] == ["ConvPool", "ConvPool", "Flatten",
                                                     "Dense"]
        assert steps[0].layers == tuple(model.layers[:2])
    # Softmax is no activation the kernels apply: no fusion.
    plain = cconv.Sequential([Input((6, 6, 1)), Conv2D(2, 3, activation="softmax"),
                              MaxPooling2D(2), Flatten(), Dense(2)])
    assert not any(isinstance(s, fusion.ConvPool) for s in plain._plans[True])


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
        assert any(isinstance(s, fusion.ConvPool) for s in model._plans[True]) == bool(rules)
        model.fit(x, y, batch_size=5, epochs=2, seed=1, verbose=0)
        results.append(model.get_weights() + [model.predict(x)])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
