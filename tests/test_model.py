"""The Keras-like API: one training step against NumPy, and every bad input named."""
import numpy as np
import pytest

import cconv
from cconv import activations, oracle
from cconv.layers import (Activation, Conv2D, Dense, Dropout, Flatten, Input, KernelPooling,
                          MaxPooling2D)
from conftest import keras_adam

TOL = {"float32": dict(rtol=1e-4, atol=1e-6), "float64": dict(rtol=1e-10, atol=1e-12)}


def small_model(dtype="float32", padding="valid", activation="tanh", compile=True):
    cconv.utils.set_random_seed(0)
    model = cconv.Sequential([Input((10, 9, 2)), Conv2D(3, 3, activation=activation,
                                                        padding=padding),
                              Dropout(0.5), Flatten(), Dense(4, activation="softmax")],
                             dtype=dtype)
    if compile:
        model.compile(optimizer=cconv.optimizers.SGD(0.5),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("padding,activation", [(("valid", "same")[i % 2], name)
                                                for i, name in enumerate(activations.NAMES)])
def test_one_training_step_matches_numpy(dtype, padding, activation):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 10, 9, 2)).astype(dtype)
    y = rng.integers(0, 4, 6)
    model = small_model(dtype, padding, activation)
    k, kb, w, wb = [a.astype(np.float64) for a in model.get_weights()]
    history = model.fit(x, y, batch_size=6, epochs=1, shuffle=False, verbose=0, seed=0)
    mask = model.layers[1].saved["mask"]  # the mask itself is tested against the oracle elsewhere

    xd = x.astype(np.float64)
    pre = oracle.conv2d(xd, k, kb, padding)
    h = oracle.activation(activation, pre)
    s = h if activations.row(activation).gradient_from == "output" else pre
    d, _ = oracle.dropout(h, 0.5, mask=mask)
    flat = d.reshape(6, -1)
    p = softmax(oracle.dense(flat, w, wb))
    onehot = np.eye(4)[y]
    loss = -np.log(p[np.arange(6), y]).mean()
    gd, gw, gwb = oracle.dense_backward(flat, w, (p - onehot) / 6)
    gh = oracle.activation_backward(activation, s,
                                    oracle.dropout_backward(gd.reshape(h.shape), mask, 0.5))
    _, gk, gkb = oracle.conv2d_backward(xd, k, gh, padding)
    want = [k - 0.5 * gk, kb - 0.5 * gkb, w - 0.5 * gw, wb - 0.5 * gwb]

    for got, exp in zip(model.get_weights(), want):
        np.testing.assert_allclose(got, exp, **TOL[dtype])
    np.testing.assert_allclose(history.history["loss"][0], loss, rtol=1e-5)


def test_predict_and_evaluate_match_numpy_in_any_batch_size():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((10, 10, 9, 2))
    y = rng.integers(0, 4, 10)
    model = small_model("float64")
    k, kb, w, wb = model.get_weights()
    p = softmax(oracle.dense(oracle.tanh(oracle.conv2d(x, k, kb)).reshape(10, -1), w, wb))
    np.testing.assert_allclose(model.predict(x, batch_size=3), p, rtol=1e-12)
    loss, acc = model.evaluate(x, y, batch_size=4)
    np.testing.assert_allclose(loss, -np.log(p[np.arange(10), y]).mean(), rtol=1e-10)
    assert acc == (p.argmax(axis=1) == y).mean()


@pytest.mark.parametrize("make", ["small", "tf"])
def test_predict_rows_do_not_depend_on_their_chunk(rng, monkeypatch, threads, make):
    """predict picks its own chunk size; each row must come out the same bits whatever
    rows share its chunk: alone, in the chunks of a small chunk budget (with a ragged
    last chunk), or all at once, at any batch_size and thread count."""
    model = small_model() if make == "small" else tf_style_model()
    x = rng.random((45,) + model.input_shape).astype(np.float32)
    alone = np.concatenate([model.predict(x[i:i + 1]) for i in range(len(x))])
    widest = max(np.prod(shape) for shape in
                 [model.input_shape] + [layer.output_shape for layer in model.layers]) * 4
    # a budget of a few images, whose chunks leave a ragged last one
    for k in range(7, 30):
        monkeypatch.setattr(cconv.model, "INFERENCE_CHUNK_BYTES", k * widest)
        if 1 < model._inference_chunk() < len(x) and len(x) % model._inference_chunk():
            break
    assert 1 < model._inference_chunk() < len(x) and len(x) % model._inference_chunk()
    for n_threads in (1, 2):
        cconv.set_num_threads(n_threads)
        for batch_size in (1, 32, 500, len(x)):
            assert np.array_equal(model.predict(x, batch_size=batch_size), alone)
    monkeypatch.setattr(cconv.model, "INFERENCE_CHUNK_BYTES", 1 << 40)
    assert np.array_equal(model.predict(x), alone)


def test_evaluate_is_the_same_at_every_batch_size_and_thread_count(rng, threads):
    """The per-sample mean of the loss, against the probabilities written out by hand
    from predict; the same bits at batch sizes 1, 32 and all, on 1 and 2 threads."""
    model = small_model()
    x = rng.random((300, 10, 9, 2)).astype(np.float32)
    y = rng.integers(0, 4, len(x))
    p = model.predict(x).astype(np.float64)
    results = set()
    for n in (1, 2):
        cconv.set_num_threads(n)
        for batch_size in (1, 32, len(x)):
            results.add(tuple(model.evaluate(x, y, batch_size=batch_size)))
    assert len(results) == 1
    loss, acc = results.pop()
    np.testing.assert_allclose(loss, -np.log(p[np.arange(len(x)), y]).mean(), rtol=1e-6)
    assert acc == (p.argmax(axis=1) == y).mean()


def test_awkward_inputs_work_unscaled():
    rng = np.random.default_rng(3)
    model = small_model()
    x8 = rng.integers(0, 256, (5, 10, 9, 2), dtype=np.uint8)
    want = model.predict(x8.astype(np.float32))
    np.testing.assert_array_equal(model.predict(x8), want)  # uint8 is not rescaled
    fortran = np.asfortranarray(x8.astype(np.float32))
    reversed_twice = x8.astype(np.float32)[::-1][::-1]
    reversed_twice.setflags(write=False)
    np.testing.assert_array_equal(model.predict(fortran), want)
    np.testing.assert_array_equal(model.predict(reversed_twice), want)


def test_history_and_validation():
    """The last epoch's val_loss and val_accuracy are the trained weights' loss and
    accuracy, worked out in NumPy, on the held-out samples: the last 5 of 20 with
    validation_split=0.25, or validation_data."""
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((20, 10, 9, 2)), rng.integers(0, 4, 20)
    model = small_model("float64")

    def loss_and_accuracy(xs, ys):
        k, kb, w, wb = model.get_weights()
        p = softmax(oracle.dense(oracle.tanh(oracle.conv2d(xs, k, kb)).reshape(len(xs), -1),
                                 w, wb))
        return -np.log(p[np.arange(len(ys)), ys]).mean(), (p.argmax(axis=1) == ys).mean()

    h = model.fit(x, y, batch_size=8, epochs=3, verbose=0, validation_split=0.25)
    assert sorted(h.history) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert all(len(v) == 3 for v in h.history.values())
    loss, acc = loss_and_accuracy(x[15:], y[15:])
    np.testing.assert_allclose(h.history["val_loss"][-1], loss, rtol=1e-10)
    assert h.history["val_accuracy"][-1] == acc
    h = model.fit(x, y, epochs=2, verbose=0, validation_data=(x[:5], y[:5]))
    assert len(h.history["val_loss"]) == 2
    loss, acc = loss_and_accuracy(x[:5], y[:5])
    np.testing.assert_allclose(h.history["val_loss"][-1], loss, rtol=1e-10)
    assert h.history["val_accuracy"][-1] == acc


def test_categorical_and_sparse_agree():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((7, 10, 9, 2)), rng.integers(0, 4, 7)
    sparse = small_model()
    dense = small_model(compile=False)
    dense.compile(optimizer="sgd", loss="categorical_crossentropy", metrics=["accuracy"])
    assert np.isclose(sparse.evaluate(x, y)[0],
                      dense.evaluate(x, cconv.utils.to_categorical(y, 4))[0])


def test_seeds_make_runs_repeatable():
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((16, 10, 9, 2)), rng.integers(0, 4, 16)
    runs = []
    for seed in (1, 1, 2):
        model = small_model()
        model.fit(x, y, batch_size=4, epochs=1, verbose=0, seed=seed)
        runs.append(model.get_weights()[0])
    assert np.array_equal(runs[0], runs[1]) and not np.array_equal(runs[0], runs[2])


def test_save_and_load_weights(tmp_path):
    model = small_model()
    path = tmp_path / "w.npz"
    model.save_weights(path)
    with np.load(path, allow_pickle=False) as f:
        assert len(f.files) == 4
    other = small_model()
    other.set_weights([np.zeros_like(a) for a in other.get_weights()])
    other.load_weights(path)
    for a, b in zip(model.get_weights(), other.get_weights()):
        assert np.array_equal(a, b)
    wrong = cconv.Sequential([Input((10, 9, 2)), Flatten(), Dense(4)])
    with pytest.raises(ValueError, match="w.npz"):
        wrong.load_weights(path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="w.npz"):
        model.load_weights(path)


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    model = small_model()
    path = tmp_path / "w.npz"
    model.save_weights(path)
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        model.save_weights(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["w.npz"]


def test_summary_counts_parameters(capsys):
    small_model().summary()
    out = capsys.readouterr().out
    conv, dense = 3 * 3 * 2 * 3 + 3, 8 * 7 * 3 * 4 + 4
    assert "(None, 8, 7, 3)" in out and f"{conv:,}" in out and f"{dense:,}" in out
    assert f"Total params: {conv + dense:,}" in out


def test_verbose_and_callbacks(capsys):
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((8, 10, 9, 2)), rng.integers(0, 4, 8)

    class StopAfterTwo(cconv.callbacks.Callback):
        seen = []

        def on_epoch_end(self, epoch, logs=None):
            self.seen.append(sorted(logs))
            if epoch == 1:
                self.model.stop_training = True

    model = small_model()
    h = model.fit(x, y, epochs=5, verbose=2, callbacks=[StopAfterTwo()])
    assert len(h.history["loss"]) == 2 and StopAfterTwo.seen[0] == ["accuracy", "loss"]
    assert capsys.readouterr().out.count("Epoch ") == 2
    model.fit(x, y, epochs=1, verbose=0)
    assert capsys.readouterr().out == ""


def test_learns_a_separable_problem():
    rng = np.random.default_rng(8)
    x = rng.random((200, 10, 9, 2)) * 0.2
    y = rng.integers(0, 2, 200)
    x[y == 0, :5] += 1  # class 0 bright on top, class 1 at the bottom
    x[y == 1, 5:] += 1
    model = small_model()
    model.fit(x, y, batch_size=20, epochs=5, verbose=0)
    assert model.evaluate(x, y)[1] > 0.9


X = np.zeros((4, 10, 9, 2))
Y = np.array([0, 1, 2, 3])


@pytest.mark.parametrize("call, error, match", [
    (lambda m: m.fit(np.zeros((4, 10, 9)), Y, verbose=0), ValueError, r"x: expected samples of shape"),
    (lambda m: m.fit(np.zeros((4, 9, 10, 2)), Y, verbose=0), ValueError, r"\(9, 10, 2\)"),
    (lambda m: m.fit(X, Y[:3], verbose=0), ValueError, r"y: expected 4 labels.*got 3"),
    (lambda m: m.fit(X, np.array([0, 1, 2, 4]), verbose=0), ValueError, r"y: labels must be in \[0, 4\)"),
    (lambda m: m.fit(X, np.array([0, -1, 2, 3]), verbose=0), ValueError, r"y: labels"),
    (lambda m: m.fit(X, np.array([0, 1.5, 2, 3]), verbose=0), ValueError, r"y: expected integer"),
    (lambda m: m.fit(X, np.zeros((4, 5)), verbose=0), ValueError, r"y: sparse_categorical"),
    (lambda m: m.fit(np.full(X.shape, np.nan), Y, verbose=0), ValueError, r"x: contains NaN or inf"),
    (lambda m: m.predict(np.full(X.shape, np.inf)), ValueError, r"x: contains NaN or inf"),
    (lambda m: m.fit(X.astype(object), Y, verbose=0), TypeError, r"x: expected a numeric"),
    (lambda m: m.predict(X.astype(complex)), TypeError, r"x: expected a numeric.*complex"),
    (lambda m: m.fit(X, Y.astype(str), verbose=0), TypeError, r"y: expected numeric labels"),
    (lambda m: m.fit(X, Y, batch_size=0, verbose=0), ValueError, r"batch_size: expected a positive int, got 0"),
    (lambda m: m.predict(X, batch_size=2.5), TypeError, r"batch_size: expected a positive int"),
    (lambda m: m.fit(X, Y, epochs=0, verbose=0), ValueError, r"epochs"),
    (lambda m: m.fit(X, Y, validation_split=1.5, verbose=0), ValueError, r"validation_split"),
    (lambda m: m.fit(X, Y, verbose=5), ValueError, r"verbose"),
    (lambda m: m.set_weights([np.zeros(3)]), ValueError, r"set_weights: expected 4 arrays"),
    (lambda m: m.predict(np.zeros((0, 10, 9, 2))), ValueError, r"at least one sample"),
])
def test_bad_input_names_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call(small_model())


def test_categorical_labels_of_wrong_width():
    model = small_model(compile=False)
    model.compile(loss="categorical_crossentropy")
    with pytest.raises(ValueError, match=r"y: categorical_crossentropy expects one-hot labels of shape \(N, 4\), got shape \(4, 3\)"):
        model.fit(X, np.eye(3)[[0, 1, 2, 0]], verbose=0)


def test_fit_or_evaluate_before_compile():
    model = small_model(compile=False)
    for call in (lambda: model.fit(X, Y, verbose=0), lambda: model.evaluate(X, Y)):
        with pytest.raises(cconv.NotCompiledError, match="compile"):
            call()
    assert issubclass(cconv.NotCompiledError, ValueError)


@pytest.mark.parametrize("make, match", [
    (lambda: Conv2D(0, 3), "filters"),
    (lambda: Conv2D(4, (3,)), "kernel_size"),
    (lambda: Conv2D(4, 3, padding="full"), "padding"),
    (lambda: Conv2D(4, 3, activation="glu"), "activation"),
    (lambda: Dropout(1.0), "rate"),
    (lambda: Dense(0), "units"),
    (lambda: Activation("hard_shrink"), "activation"),
    (lambda: cconv.Sequential([Input((5, 5, 1)), Conv2D(2, 7)]).build(), "larger than"),
    (lambda: Dense(2, input_shape=(5, 0)), "input_shape"),
    (lambda: small_model(compile=False).compile(loss="hinge"), "loss"),
    (lambda: small_model(compile=False).compile(optimizer="lion"), "optimizer"),
    (lambda: small_model(compile=False).compile(metrics=["auc"]), "metrics"),
    (lambda: cconv.utils.to_categorical([0, 5], num_classes=3), "num_classes"),
])
def test_bad_construction_names_the_argument(make, match):
    with pytest.raises((TypeError, ValueError), match=match):
        make()


def test_to_categorical():
    np.testing.assert_array_equal(cconv.utils.to_categorical([2, 0], 3),
                                  [[0, 0, 1], [1, 0, 0]])



def test_fit_same_bits_on_one_and_two_threads(rng, threads):
    x = rng.random((64, 12, 12, 1))
    y = rng.integers(0, 10, 64)
    weights = []
    for n in (1, 2):
        cconv.set_num_threads(n)
        cconv.utils.set_random_seed(0)
        model = cconv.Sequential([Input((12, 12, 1)), Conv2D(4, 3, activation="tanh"),
                                  Dropout(0.5), Flatten(), Dense(10, activation="softmax")])
        model.compile(optimizer=cconv.optimizers.SGD(0.1),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(x, y, batch_size=16, epochs=2, seed=3, verbose=0)
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        assert np.array_equal(a, b)


# ---- the TensorFlow tutorial's layers through the API ---------------------------------


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


def read_only(a):
    a.setflags(write=False)
    return a


@pytest.mark.parametrize("make, error, match", [
    (lambda: MaxPooling2D(0), ValueError, "pool_size"),
    (lambda: MaxPooling2D(2, strides=0), ValueError, "strides"),
    (lambda: MaxPooling2D((2, 3), strides=(2, 2, 2)), ValueError, "strides"),
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


@pytest.mark.parametrize("name", activations.NAMES)
def test_every_activation_predicts_as_the_oracle(name):
    """Conv2D, Activation and Dense with each activation of the table, at inference
    (where the conv kernel applies an elementwise one in place), against the oracle's
    layers one by one."""
    rng = np.random.default_rng(8)
    model = cconv.Sequential([Input((6, 6, 2)), Conv2D(3, 3, activation=name), Activation(name),
                              Flatten(), Dense(4, activation=name)], dtype="float64")
    x = rng.uniform(-1, 1, (5, 6, 6, 2))
    (w, b), _, _, (dw, db) = (layer.get_weights() for layer in model.layers)
    h = oracle.activation(name, oracle.activation(name, oracle.conv2d(x, w, b)))
    want = oracle.activation(name, oracle.dense(h.reshape(5, -1), dw, db))
    np.testing.assert_allclose(model.predict(x, verbose=0), want, rtol=1e-12, atol=1e-14)
