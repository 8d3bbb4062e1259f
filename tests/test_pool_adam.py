"""Max pooling, kernel pooling and Adam: compiled ops against the oracle in both dtypes,
finite differences, Keras's Adam formula, the TensorFlow tutorial's network through the
API, 1 vs 2 threads bit-exact, and bad input named."""
import numpy as np
import pytest

import cconv
from cconv import ops, oracle
from test_gradcheck import numerical_grad, rel_error
from cconv.layers import (Conv2D, Dense, Dropout, Flatten, Input, KernelPooling,
                          MaxPooling2D)

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}

POOL_CASES = [  # (N, H, W, C), pool_size
    ((1, 1, 1, 1), 1),
    ((2, 7, 5, 3), 2),          # odd sizes: 'valid' drops the last row and column
    ((3, 28, 28, 32), 2),       # the tutorial's first pooling
    ((2, 14, 14, 64), 2),       # and its second
    ((2, 9, 10, 4), (3, 4)),    # rectangular windows, neither dividing the size
    ((1, 5, 5, 2), 5),          # one window as large as the image
    ((4, 6, 11, 17), 3),
    ((2, 4, 4, 3), (4, 1)),
]


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ---- max pooling -----------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES)
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("ties", [False, True])
def test_max_pool2d(rng, dtype, case, padding, ties):
    shape, pool = case
    x = (rng.integers(0, 3, shape) if ties else rng.standard_normal(shape)).astype(dtype)
    y, argmax = ops.max_pool2d(x, pool, padding)
    want_y, want_argmax = oracle.max_pool2d(x, pool, padding)
    assert y.dtype == dtype and argmax.dtype == np.int32
    # No arithmetic: the same values, and ties broken the same way (first in row-major order).
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(argmax, want_argmax)
    y2, none = ops.max_pool2d(x, pool, padding, need_argmax=False)
    assert none is None and np.array_equal(y2, y)
    g = rng.standard_normal(y.shape).astype(dtype)
    got = ops.max_pool2d_backward(g, argmax, x.shape, pool, padding)
    np.testing.assert_array_equal(got, oracle.max_pool2d_backward(g, want_argmax, x.shape,
                                                                  pool, padding))


@pytest.mark.parametrize("h,w,pool,padding,out_hw", [
    (7, 5, 2, "valid", (3, 2)), (7, 5, 2, "same", (4, 3)),
    (28, 28, 2, "valid", (14, 14)), (14, 14, 2, "same", (7, 7)),
    (5, 5, 3, "valid", (1, 1)), (5, 5, 3, "same", (2, 2)), (2, 2, 3, "same", (1, 1)),
])
def test_max_pool2d_output_shape_is_keras(h, w, pool, padding, out_hw):
    """Keras: 'valid' floors (H - P) / S + 1, 'same' takes ceil(H / S)."""
    x = np.zeros((1, h, w, 1))
    assert ops.max_pool2d(x, pool, padding)[0].shape == (1,) + out_hw + (1,)
    assert MaxPooling2D(pool, padding=padding).compute_output_shape((h, w, 1)) == out_hw + (1,)


@pytest.mark.parametrize("padding,want", [
    ("valid", [[6, 8], [16, 18]]),          # column 4 is dropped
    ("same", [[6, 8, 9], [16, 18, 19]]),    # column 4 is a window of its own
])
def test_max_pool2d_known_answer(padding, want):
    x = np.arange(20.0).reshape(1, 4, 5, 1)
    y, argmax = ops.max_pool2d(x, 2, padding)
    np.testing.assert_array_equal(y[0, :, :, 0], want)
    np.testing.assert_array_equal(argmax[0, :, :, 0], want)  # x's values are its indices


def test_max_pool2d_same_padding_is_tensorflows():
    """TensorFlow pads 'same' with the smaller half first: for H = 4 and a window of 3,
    one row above and one below, so the windows are rows 0-1 and 2-3."""
    x = np.arange(16.0).reshape(1, 4, 4, 1)
    y, _ = ops.max_pool2d(x, 3, "same")
    np.testing.assert_array_equal(y[0, :, :, 0], [[5, 7], [13, 15]])


def test_max_pool2d_backward_rejects_a_foreign_argmax(rng):
    x = rng.standard_normal((2, 6, 6, 3))
    y, argmax = ops.max_pool2d(x, 2)
    g = np.ones_like(y)
    for bad in (argmax + 3, argmax[:, ::-1], -argmax - 1, argmax + 6 * 3 * 2):
        with pytest.raises(ValueError, match="argmax: some indices lie outside"):
            ops.max_pool2d_backward(g, np.ascontiguousarray(bad), x.shape, 2)
    # A different pool size reads the same array as other windows.
    with pytest.raises(ValueError, match="argmax"):
        ops.max_pool2d_backward(g[:, :3, :3], np.ascontiguousarray(argmax[:, :3, :3]),
                                (2, 9, 9, 3), 3)


def test_max_pool2d_writes_into_given_buffers(rng):
    x = rng.standard_normal((3, 8, 6, 5)).astype(np.float32)
    out = np.full((3, 4, 3, 5), np.nan, np.float32)
    arg = np.full(out.shape, -1, np.int32)
    y, a = ops.max_pool2d(x, 2, out=out, out_argmax=arg)
    assert y is out and a is arg
    want_y, want_a = oracle.max_pool2d(x, 2)
    assert np.array_equal(out, want_y) and np.array_equal(arg, want_a)


# ---- kernel pooling --------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["max", "mean", "sum"])
@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (2, 6, 6, 1), (3, 7, 5, 16),
                                   (2, 33, 40, 4), (2, 3, 4, 5, 6)])
@pytest.mark.parametrize("ties", [False, True])
def test_kernel_pool(rng, dtype, mode, shape, ties):
    x = (rng.integers(0, 3, shape) if ties else rng.standard_normal(shape)).astype(dtype)
    y = ops.kernel_pool(x, mode)
    assert y.shape == shape[:-1] + (1,) and y.dtype == dtype
    tol = dict(rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * shape[-1])
    np.testing.assert_allclose(y, oracle.kernel_pool(x, mode), **tol)
    g = rng.standard_normal(y.shape).astype(dtype)
    np.testing.assert_allclose(ops.kernel_pool_backward(x, g, mode),
                               oracle.kernel_pool_backward(x, g, mode), **tol)


def test_kernel_pool_is_the_chapters_picture():
    """Four kernels' 2x2 maps; pooled elementwise across the kernels."""
    maps = np.array([[[1, 5], [0, 2]], [[3, 1], [4, 2]], [[2, 2], [-1, 8]], [[0, 0], [1, 0]]],
                    dtype=float)
    x = maps.transpose(1, 2, 0)[None]  # (1, 2, 2, 4): the kernels on the last axis
    np.testing.assert_array_equal(ops.kernel_pool(x, "max")[0, :, :, 0], [[3, 5], [4, 8]])
    np.testing.assert_array_equal(ops.kernel_pool(x, "sum")[0, :, :, 0], [[6, 8], [4, 12]])
    np.testing.assert_array_equal(ops.kernel_pool(x, "mean")[0, :, :, 0], [[1.5, 2], [1, 3]])


# ---- finite differences ----------------------------------------------------------------
def distinct(rng, shape):
    """Values at least 1e-3 apart, so no max changes hands within a step of H."""
    return (rng.permutation(int(np.prod(shape))) * 1e-3 - 0.5).reshape(shape)


@pytest.mark.parametrize("module", [oracle, ops])
@pytest.mark.parametrize("shape,pool,padding", [((2, 5, 6, 3), 2, "valid"),
                                                ((2, 5, 6, 3), 2, "same"),
                                                ((1, 7, 4, 2), (3, 2), "same")])
def test_max_pool2d_gradient(module, shape, pool, padding):
    rng = np.random.default_rng(5)
    x = distinct(rng, shape)
    r = rng.standard_normal(module.max_pool2d(x, pool, padding)[0].shape)
    loss = lambda: float((module.max_pool2d(x, pool, padding)[0] * r).sum())
    _, argmax = module.max_pool2d(x, pool, padding)
    got = module.max_pool2d_backward(r, argmax, x.shape, pool, padding)
    assert rel_error(got, numerical_grad(loss, x)) < 1e-6


@pytest.mark.parametrize("module", [oracle, ops])
@pytest.mark.parametrize("mode", ["max", "mean", "sum"])
def test_kernel_pool_gradient(module, mode):
    rng = np.random.default_rng(6)
    x = distinct(rng, (2, 3, 4, 5))
    r = rng.standard_normal((2, 3, 4, 1))
    loss = lambda: float((module.kernel_pool(x, mode) * r).sum())
    got = module.kernel_pool_backward(x, r, mode)
    assert rel_error(got, numerical_grad(loss, x)) < 1e-6


# ---- Adam ------------------------------------------------------------------------------
def keras_adam(w, grads, lr, beta_1, beta_2, epsilon):
    """Keras's Adam written out in float64: bias corrections folded into the step size,
    epsilon added to sqrt(v)."""
    w = w.astype(np.float64).copy()
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g * g
        w = w - lr * np.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t) * m / (np.sqrt(v) + epsilon)
    return w


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("module", [ops, oracle])
@pytest.mark.parametrize("size", [1, 37, 4096, 10_001])
def test_adam_update_is_keras(rng, dtype, module, size):
    w0 = rng.standard_normal(size).astype(dtype)
    grads = [(rng.standard_normal(size) * 10.0 ** rng.integers(-8, 2)).astype(dtype)
             for _ in range(6)]
    hyper = dict(learning_rate=0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-6)
    w, m, v = w0.copy(), np.zeros_like(w0), np.zeros_like(w0)
    for t, g in enumerate(grads, start=1):
        module.adam_update(w, g, m, v, t, **hyper)
    want = keras_adam(w0, [g.astype(np.float64) for g in grads], *hyper.values())
    # A step moves w by at most about learning_rate; float32 rounds that to ~1e-7.
    atol = {np.float32: 2e-6, np.float64: 1e-13}[dtype]
    np.testing.assert_allclose(w, want, rtol=0, atol=atol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_with_tiny_gradients(dtype):
    """float32 gradients below ~1e-18 make v subnormal; a fast-math vector sqrt returned
    NaN there (seen on MNIST after one step). Tiny steps must stay tiny, and exact zeros
    must leave the weights alone."""
    g = np.tile(np.array([0.0, 1e-19, -3e-25, 1e-30, 1e-44, 2e-3], dtype), 700)
    w = np.ones_like(g)
    m, v = np.zeros_like(g), np.zeros_like(g)
    for t in (1, 2, 3):
        ops.adam_update(w, g, m, v, t)
    want = keras_adam(np.ones_like(g), [g.astype(np.float64)] * 3, 0.001, 0.9, 0.999, 1e-7)
    assert np.isfinite(w).all() and np.isfinite(v).all()
    np.testing.assert_allclose(w, want, rtol=0, atol=1e-7)
    assert (w[g == 0] == 1).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_optimizer_is_keras(rng, dtype):
    params = [rng.standard_normal(s).astype(dtype) for s in [(3, 4), (4,), (2, 2, 2, 5)]]
    start = [p.copy() for p in params]
    opt = cconv.optimizers.Adam(learning_rate=0.003)
    history = [[] for _ in params]
    for _ in range(4):
        grads = [rng.standard_normal(p.shape).astype(dtype) for p in params]
        for h, g in zip(history, grads):
            h.append(g.astype(np.float64))
        opt.update(params, grads)
    assert opt.iterations == 4
    for p, p0, gs in zip(params, start, history):
        want = keras_adam(p0, gs, 0.003, 0.9, 0.999, 1e-7)
        np.testing.assert_allclose(p, want, rtol=0, atol={np.float32: 2e-6,
                                                          np.float64: 1e-13}[dtype])
    assert isinstance(cconv.optimizers.get("adam"), cconv.optimizers.Adam)
    assert isinstance(cconv.optimizers.get("Adam"), cconv.optimizers.Adam)


# ---- the tutorial's network through the API --------------------------------------------
def tf_style_model(dtype="float32", size=12, optimizer=None):
    """The TensorFlow tutorial's layers at a small size."""
    cconv.utils.set_random_seed(0)
    model = cconv.Sequential([
        Input((size, size, 1)),
        Conv2D(4, 5, padding="same", activation="relu", bias_initializer="ones"),
        MaxPooling2D(2),
        Conv2D(6, 5, padding="same", activation="relu", bias_initializer="ones"),
        MaxPooling2D(2),
        Flatten(),
        Dense(16, activation="relu", bias_initializer="ones"),
        Dropout(0.5),
        Dense(10),
    ], dtype=dtype)
    model.compile(optimizer=optimizer or cconv.optimizers.Adam(1e-3),
                  loss=cconv.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_tf_network_training_step_matches_numpy(dtype):
    """One step of the whole network (convs with 'same', max pools, dense, dropout,
    logits with from_logits=True, Adam), against the oracle and Keras's formulas."""
    rng = np.random.default_rng(3)
    x = rng.random((5, 12, 12, 1)).astype(dtype)
    y = rng.integers(0, 10, 5)
    model = tf_style_model(dtype, optimizer=cconv.optimizers.Adam(0.01))
    k1, b1, k2, b2, w3, b3, w4, b4 = [a.astype(np.float64) for a in model.get_weights()]
    history = model.fit(x, y, batch_size=5, epochs=1, shuffle=False, verbose=0, seed=0)
    mask = model.layers[6].saved["mask"]  # the mask is tested against the oracle elsewhere

    xd = x.astype(np.float64)
    h1 = oracle.relu(oracle.conv2d(xd, k1, b1, "same"))
    p1, a1 = oracle.max_pool2d(h1, 2)
    h2 = oracle.relu(oracle.conv2d(p1, k2, b2, "same"))
    p2, a2 = oracle.max_pool2d(h2, 2)
    flat = p2.reshape(5, -1)
    h3 = oracle.relu(oracle.dense(flat, w3, b3))
    d3, _ = oracle.dropout(h3, 0.5, mask=mask)
    logits = oracle.dense(d3, w4, b4)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_p[np.arange(5), y].mean()
    g = (np.exp(log_p) - np.eye(10)[y]) / 5
    gd3, gw4, gb4 = oracle.dense_backward(d3, w4, g)
    gh3 = oracle.relu_backward(h3, oracle.dropout_backward(gd3, mask, 0.5))
    gflat, gw3, gb3 = oracle.dense_backward(flat, w3, gh3)
    gh2 = oracle.relu_backward(h2, oracle.max_pool2d_backward(
        gflat.reshape(p2.shape), a2, h2.shape, 2))
    gp1, gk2, gb2 = oracle.conv2d_backward(p1, k2, gh2, "same")
    gh1 = oracle.relu_backward(h1, oracle.max_pool2d_backward(gp1, a1, h1.shape, 2))
    _, gk1, gb1 = oracle.conv2d_backward(xd, k1, gh1, "same")
    start = [k1, b1, k2, b2, w3, b3, w4, b4]
    grads = [gk1, gb1, gk2, gb2, gw3, gb3, gw4, gb4]
    want = [keras_adam(p, [gp], 0.01, 0.9, 0.999, 1e-7) for p, gp in zip(start, grads)]
    # Adam's first step is about lr * sign(g): compare where g is clearly non-zero.
    for got, exp, gp in zip(model.get_weights(), want, grads):
        clear = np.abs(gp) > {"float32": 1e-4, "float64": 1e-9}[dtype]
        np.testing.assert_allclose(got[clear], exp[clear],
                                   rtol=0, atol={"float32": 1e-5, "float64": 1e-10}[dtype])
        assert np.abs(got - exp).max() <= 0.01 * 1.01  # never more than one step apart
    np.testing.assert_allclose(history.history["loss"][0], loss,
                               rtol={"float32": 1e-5, "float64": 1e-10}[dtype])


def test_from_logits_loss_is_stable_and_predict_returns_logits():
    """Logits in the thousands: a naive softmax overflows; the loss must not."""
    cconv.utils.set_random_seed(0)
    model = cconv.Sequential([Input((3,)), Dense(4)], dtype="float64")
    model.compile(optimizer="sgd",
                  loss=cconv.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    w = np.array([[900.0, -800, 3, 0], [0, 1, 2, 3], [5, 0, -1000, 2]])
    b = np.array([0.0, 1, 2, 3])
    model.set_weights([w, b])
    x = np.array([[1.0, 0, 0], [0, 0, 1], [0.5, 0.5, 0.5]])
    y = np.array([1, 2, 0])
    logits = x @ w + b
    np.testing.assert_allclose(model.predict(x), logits, rtol=1e-12)
    # log-sum-exp by hand: log(sum exp z) = max z + log(sum exp(z - max z))
    lse = logits.max(axis=1) + np.log(np.exp(logits - logits.max(axis=1, keepdims=True)).sum(1))
    want = (lse - logits[np.arange(3), y]).mean()
    loss, acc = model.evaluate(x, y)
    assert np.isfinite(loss)
    np.testing.assert_allclose(loss, want, rtol=1e-12)
    assert acc == np.mean(logits.argmax(axis=1) == y)


def test_summary_shows_the_new_layers(capsys):
    tf_style_model().summary()
    model = cconv.Sequential([Input((6, 6, 8)), KernelPooling("mean"), Flatten(), Dense(2)])
    model.summary()
    out = capsys.readouterr().out
    assert "(MaxPooling2D)" in out and "(None, 6, 6, 4)" in out and "(None, 3, 3, 6)" in out
    assert "(KernelPooling)" in out and "(None, 6, 6, 1)" in out


@pytest.mark.parametrize("pool,padding", [(2, "valid"), (3, "same"), ((2, 3), "valid")])
def test_pooling_layers_predict_like_the_oracle(rng, pool, padding):
    x = rng.standard_normal((7, 9, 5, 4))
    model = cconv.Sequential([Input((9, 5, 4)), MaxPooling2D(pool, padding=padding),
                              KernelPooling("sum")], dtype="float64")
    want = oracle.kernel_pool(oracle.max_pool2d(x, pool, padding)[0], "sum")
    np.testing.assert_allclose(model.predict(x, batch_size=3), want, rtol=1e-12)


def test_kernel_pooling_layer_trains(rng):
    cconv.utils.set_random_seed(0)
    model = cconv.Sequential([Input((8, 8, 1)), Conv2D(4, 3, activation="relu"),
                              KernelPooling("max"), Flatten(), Dense(2)])
    model.compile(optimizer="adam", loss=cconv.losses.SparseCategoricalCrossentropy(
        from_logits=True), metrics=["accuracy"])
    x = rng.random((40, 8, 8, 1))
    y = (x[:, :4].mean(axis=(1, 2, 3)) > x[:, 4:].mean(axis=(1, 2, 3))).astype(int)
    before = model.evaluate(x, y)[0]
    model.fit(x, y, batch_size=8, epochs=5, verbose=0, seed=1)
    assert model.evaluate(x, y)[0] < before


# ---- determinism -----------------------------------------------------------------------
def test_same_bits_on_one_and_two_threads(rng, threads):
    x = rng.standard_normal((37, 20, 22, 33)).astype(np.float32)
    p = rng.standard_normal(300_001).astype(np.float32)
    g = rng.standard_normal(p.size).astype(np.float32)
    results = []
    for n in (1, 2):
        cconv.set_num_threads(n)
        y, a = ops.max_pool2d(x, 3, "same")
        w, m, v = p.copy(), np.zeros_like(p), np.zeros_like(p)
        for t in (1, 2):
            ops.adam_update(w, g, m, v, t)
        results.append([y, a, ops.max_pool2d_backward(y, a, x.shape, 3, "same"),
                        ops.kernel_pool(x, "mean"), ops.kernel_pool_backward(x, x[..., :1], "max"),
                        w, m, v])
    for a, b in zip(*results):
        assert np.array_equal(a, b)


def test_tf_network_fit_same_bits_on_one_and_two_threads(rng, threads):
    x = rng.random((40, 12, 12, 1)).astype(np.float32)
    y = rng.integers(0, 10, 40)
    weights = []
    for n in (1, 2):
        cconv.set_num_threads(n)
        model = tf_style_model()
        model.fit(x, y, batch_size=10, epochs=2, seed=4, verbose=0)
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        assert np.array_equal(a, b)


# ---- 'same' convolution with many channels ---------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_same_with_the_tutorials_channels(rng, dtype):
    """The second conv of the tutorial (32 -> 64 channels, 5x5, 'same') on 14x14 maps."""
    x = rng.standard_normal((2, 14, 14, 32)).astype(dtype)
    k = rng.standard_normal((5, 5, 32, 64)).astype(dtype) * 0.1
    b = rng.standard_normal(64).astype(dtype)
    scale = np.sqrt(5 * 5 * 32) * 0.1
    tol = dict(rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * scale * 10)
    np.testing.assert_allclose(ops.conv2d(x, k, b, "same", "relu"),
                               oracle.relu(oracle.conv2d(x, k, b, "same")), **tol)
    g = rng.standard_normal((2, 14, 14, 64)).astype(dtype)
    for got, want in zip(ops.conv2d_backward(x, k, g, "same"),
                         oracle.conv2d_backward(x, k, g, "same")):
        np.testing.assert_allclose(got, want, rtol=tol["rtol"],
                                   atol=tol["atol"] * np.sqrt(2 * 14 * 14 * 64))


# ---- bad input -------------------------------------------------------------------------
X4 = np.zeros((2, 6, 6, 3))


@pytest.mark.parametrize("call, error, match", [
    (lambda: ops.max_pool2d(np.zeros((6, 6, 3)), 2), ValueError, "x: expected a 4-d"),
    (lambda: ops.max_pool2d(X4, 7), ValueError, "pool_size: a 7x7 window is larger"),
    (lambda: ops.max_pool2d(X4, (2, 7)), ValueError, "pool_size: a 2x7 window"),
    (lambda: ops.max_pool2d(X4, 0), ValueError, "pool_size: expected positive"),
    (lambda: ops.max_pool2d(X4, 2.0), TypeError, "pool_size: expected positive ints"),
    (lambda: ops.max_pool2d(X4, (2, 2, 2)), ValueError, "pool_size: expected an int or a pair"),
    (lambda: ops.max_pool2d(X4, 2, "full"), ValueError, "padding"),
    (lambda: ops.max_pool2d(X4.astype(int), 2), TypeError, "x: expected dtype"),
    (lambda: ops.max_pool2d(X4, 2, out=np.zeros((2, 3, 3, 3), np.float32)), ValueError, "out:"),
    (lambda: ops.max_pool2d(X4, 2, out_argmax=np.zeros((2, 3, 3, 3))), ValueError,
     "out_argmax"),
    (lambda: ops.max_pool2d_backward(np.zeros((2, 3, 3, 3)), np.zeros((2, 3, 3, 3), np.int32),
                                     (2, 6, 6), 2), ValueError, "x_shape"),
    (lambda: ops.max_pool2d_backward(np.zeros((2, 2, 3, 3)), np.zeros((2, 3, 3, 3), np.int32),
                                     X4.shape, 2), ValueError, r"grad_out: expected shape \(2, 3"),
    (lambda: ops.max_pool2d_backward(np.zeros((2, 3, 3, 3)), np.zeros((2, 3, 3, 3)),
                                     X4.shape, 2), TypeError, "argmax: expected an integer"),
    (lambda: ops.max_pool2d_backward(np.zeros((2, 3, 3, 3)), np.zeros((2, 3, 3), np.int32),
                                     X4.shape, 2), ValueError, "argmax: expected shape"),
    (lambda: ops.max_pool2d_backward(np.zeros((2, 3, 3, 3)), [0], X4.shape, 2), TypeError,
     "argmax: expected a numpy array"),
    (lambda: ops.kernel_pool(X4, "median"), ValueError, "mode: expected one of"),
    (lambda: ops.kernel_pool(np.zeros(4)), ValueError, "x: expected an array of shape"),
    (lambda: ops.kernel_pool(np.zeros((3, 0))), ValueError, "at least one kernel"),
    (lambda: ops.kernel_pool_backward(X4, np.zeros((2, 6, 6, 3))), ValueError,
     r"grad_out: expected shape \(2, 6, 6, 1\)"),
    (lambda: ops.kernel_pool_backward(X4, np.zeros((2, 6, 6, 1), np.float32)), TypeError,
     "grad_out: expected dtype float64"),
])
def test_bad_pool_input_is_named(call, error, match):
    with pytest.raises(error, match=match):
        call()


def _adam(**changes):
    p = np.zeros(4)
    args = dict(param=p, grad=np.zeros(4), m=np.zeros(4), v=np.zeros(4), step=1)
    args.update(changes)
    return lambda: ops.adam_update(**args)


@pytest.mark.parametrize("call, error, match", [
    (_adam(m=np.zeros(5)), ValueError, "m: expected shape"),
    (_adam(v=np.zeros(4, np.float32)), ValueError, "v: expected shape"),
    (_adam(grad=np.zeros(3)), ValueError, "grad: expected shape"),
    (_adam(param=np.zeros(8)[::2]), ValueError, "param: expected a writeable, C-contiguous"),
    (_adam(param=[0.0, 0, 0, 0]), TypeError, "param: expected a numpy array"),
    (_adam(param=np.zeros(4, int)), TypeError, "param: expected dtype"),
    (_adam(step=0), ValueError, "step: expected an int >= 1"),
    (_adam(learning_rate=0.0), ValueError, "learning_rate"),
    (_adam(beta_1=1.0), ValueError, r"beta_1: expected a float in \[0.0, 1.0\)"),
    (_adam(beta_2=-0.1), ValueError, "beta_2"),
    (_adam(epsilon=0), ValueError, "epsilon"),
    (_adam(epsilon="1e-7"), TypeError, "epsilon: expected a float"),
])
def test_bad_adam_input_is_named(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_adam_rejects_aliased_state():
    p = np.zeros(4)
    with pytest.raises(ValueError, match="m: must not share memory with param"):
        ops.adam_update(p, np.zeros(4), p, np.zeros(4), 1)
    v = np.zeros(4)
    with pytest.raises(ValueError, match="v: must not share memory with m"):
        ops.adam_update(np.zeros(4), np.zeros(4), v, v, 1)


def read_only(a):
    a.setflags(write=False)
    return a


@pytest.mark.parametrize("make, error, match", [
    (lambda: MaxPooling2D(0), ValueError, "pool_size"),
    (lambda: MaxPooling2D(2, strides=1), ValueError, "strides: only strides equal to"),
    (lambda: MaxPooling2D((2, 3), strides=(2, 2)), ValueError, "strides"),
    (lambda: MaxPooling2D(2, padding="causal"), ValueError, "padding"),
    (lambda: cconv.Sequential([Input((3, 3, 1)), MaxPooling2D(4)]), ValueError,
     r"MaxPooling2D: pool_size \(4, 4\) is larger than the 3x3 input"),
    (lambda: cconv.Sequential([Input((9,)), MaxPooling2D(2)]), ValueError,
     "MaxPooling2D: expected input of shape"),
    (lambda: KernelPooling("median"), ValueError, "mode: expected one of"),
    (lambda: cconv.Sequential([Input((9,)), KernelPooling()]), ValueError,
     "KernelPooling: expected input with positions and kernels"),
    (lambda: cconv.optimizers.Adam(learning_rate=-1), ValueError, "learning_rate"),
    (lambda: cconv.optimizers.Adam(beta_1=1.0), ValueError, "beta_1"),
    (lambda: cconv.optimizers.Adam(beta_2=True), ValueError, "beta_2"),
    (lambda: cconv.optimizers.Adam(epsilon=0.0), ValueError, "epsilon"),
    (lambda: cconv.optimizers.Adam().update([read_only(np.zeros(3))], [np.zeros(3)]),
     ValueError, "param: expected a writeable"),
])
def test_bad_layer_and_optimizer_arguments_are_named(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_adam_refuses_weights_of_another_shape():
    opt = cconv.optimizers.Adam()
    opt.update([np.zeros(3)], [np.ones(3)])
    with pytest.raises(ValueError, match="changed shape"):
        opt.update([np.zeros(4)], [np.ones(4)])
