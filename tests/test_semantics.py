"""Keras's semantics above the kernels, each against a reference written out here by hand
(Keras's rule, restated in NumPy), never against cconv's own output: which samples
fit trains on and in what order, which it holds out for validation, what the history
reports, SGD with momentum, the initializers' ranges, softmax's backward pass when it is
not folded into the loss, the standalone Dropout layer's backward pass, and the names
and order of the arrays in a weights file."""
import numpy as np
import pytest

import cconv
from cconv import presets
from cconv.layers import Activation, Dense, Dropout, Input
from conftest import FrozenOptimizer, numerical_grad, rel_error


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class Recorder(cconv.layers.Layer):
    """An identity layer that writes down which samples pass through it: the inputs
    are sample numbers (x[i] = i), so each forward pass logs (training, sample ids)."""

    def __init__(self, log):
        super().__init__()
        self.log = log

    def forward_linear(self, x, training=False, rng=None):
        self.log.append((training, x[:, 0].astype(int).tolist()))
        return x


def recording_model(log):
    model = cconv.Sequential([Input((1,)), Recorder(log), Dense(2, activation="softmax")],
                             dtype="float64")
    model.compile(optimizer=cconv.optimizers.SGD(0.01),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def ids_and_labels(n):
    return np.arange(n, dtype=np.float64)[:, None], np.arange(n) % 2


# ---- fit: order, validation split, history ------------------------------------------


def test_unshuffled_batches_are_the_data_in_order():
    log = []
    x, y = ids_and_labels(20)
    recording_model(log).fit(x, y, batch_size=6, epochs=2, shuffle=False, verbose=0)
    want = [list(range(0, 6)), list(range(6, 12)), list(range(12, 18)), [18, 19]]
    assert [ids for training, ids in log if training] == want + want


def test_shuffled_batches_cover_every_sample_once_in_a_new_order_each_epoch():
    """Keras draws a fresh permutation of the samples every epoch and cuts it into
    batches of batch_size (the last one shorter)."""
    log = []
    n, batch, epochs = 40, 6, 3
    x, y = ids_and_labels(n)
    recording_model(log).fit(x, y, batch_size=batch, epochs=epochs, shuffle=True, verbose=0,
                             seed=5)
    batches = [ids for training, ids in log if training]
    steps = -(-n // batch)
    assert [len(b) for b in batches] == ([batch] * (steps - 1) + [n % batch]) * epochs
    orders = [sum(batches[e * steps:(e + 1) * steps], []) for e in range(epochs)]
    for order in orders:
        assert sorted(order) == list(range(n))
        assert order != list(range(n))  # 1 in 40! that a true shuffle leaves it sorted
    assert len({tuple(order) for order in orders}) == epochs  # every epoch its own order


def epoch_batches(log, per_epoch):
    """The recorded training batches, split into epochs of the given batch counts."""
    batches, out = [ids for training, ids in log if training], []
    for count in per_epoch:
        out.append(batches[:count])
        batches = batches[count:]
    assert batches == []
    return out


class BatchCounter(cconv.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.per_epoch = []

    def on_epoch_begin(self, epoch, logs=None):
        self.per_epoch.append(0)

    def on_train_batch_end(self, batch, logs=None):
        self.per_epoch[-1] += 1


def test_steps_per_epoch_carries_one_pass_over_the_data_across_epochs():
    """Keras 3 (keras/src/trainers/epoch_iterator.py): with steps_per_epoch the pass over
    the data goes on from one epoch to the next, its last (partial) batch included; an
    epoch that reaches the end of the pass stops there, and the next starts a new pass.
    20 samples in batches of 6 make a pass of 4 batches; 3 steps per epoch: epochs of
    3, 1, 3, 1 batches."""
    log, counter = [], BatchCounter()
    x, y = ids_and_labels(20)
    h = recording_model(log).fit(x, y, batch_size=6, epochs=4, steps_per_epoch=3,
                                 shuffle=False, verbose=0, callbacks=[counter])
    one_pass = [list(range(0, 6)), list(range(6, 12)), list(range(12, 18)), [18, 19]]
    assert counter.per_epoch == [3, 1, 3, 1] and len(h.history["loss"]) == 4
    assert epoch_batches(log, [3, 1, 3, 1]) == [one_pass[:3], one_pass[3:]] * 2

    log = []
    recording_model(log).fit(x, y, batch_size=6, epochs=4, steps_per_epoch=2, shuffle=True,
                             verbose=0, seed=1)
    epochs = [sum(batches, []) for batches in epoch_batches(log, [2, 2, 2, 2])]
    first, second = epochs[0] + epochs[1], epochs[2] + epochs[3]
    assert sorted(first) == sorted(second) == list(range(20))
    assert first != second  # the second pass is in a new order


def test_shuffle_is_on_by_default():
    """Keras's fit shuffles unless told not to."""
    log = []
    x, y = ids_and_labels(30)
    recording_model(log).fit(x, y, batch_size=30, epochs=1, verbose=0, seed=3)
    [(training, order)] = [entry for entry in log if entry[0]]
    assert sorted(order) == list(range(30)) and order != list(range(30))


@pytest.mark.parametrize("n,split", [(20, 0.25), (10, 0.25), (10, 0.3), (7, 0.5), (100, 0.1),
                                     (9, 0.05 + 0.1)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_validation_split_holds_out_the_last_samples_before_shuffling(n, split, shuffle):
    """Keras (keras/src/trainers/data_adapters/array_slicing.py, train_validation_split)
    trains on the first floor(n * (1 - split)) samples and validates on the rest, in
    order, cut before any shuffling."""
    split_at = int(np.floor(n * (1.0 - split)))
    log = []
    x, y = ids_and_labels(n)
    recording_model(log).fit(x, y, batch_size=4, epochs=2, shuffle=shuffle, verbose=0,
                             validation_split=split)
    trained = [i for training, ids in log if training for i in ids]
    validated = [i for training, ids in log if not training for i in ids]
    assert sorted(trained) == sorted(list(range(split_at)) * 2)
    assert validated == list(range(split_at, n)) * 2


def test_history_is_the_mean_over_every_sample_of_the_epoch():
    """Keras's training loss and accuracy for an epoch are means over all its samples
    (each batch weighted by its size), not the last batch's nor a mean of batch means."""
    rng = np.random.default_rng(3)
    n, batch = 50, 16
    x = rng.standard_normal((n, 4))
    y = rng.integers(0, 3, n)
    cconv.utils.set_random_seed(2)
    model = cconv.Sequential([Input((4,)), Dense(3, activation="softmax")], dtype="float64")
    model.compile(optimizer=FrozenOptimizer(), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    w, b = model.get_weights()
    p = softmax(x @ w + b)
    right = p.argmax(axis=1) == y
    losses = -np.log(p[np.arange(n), y])
    # the test can tell the rules apart: the last batch (2 samples) and the mean of the
    # batch means disagree with the mean over the samples
    starts = range(0, n, batch)
    batch_means = [right[s:s + batch].mean() for s in starts]
    assert right.mean() not in (batch_means[-1], np.mean(batch_means))
    assert not np.isclose(losses.mean(), np.mean([losses[s:s + batch].mean() for s in starts]))

    h = model.fit(x, y, batch_size=batch, epochs=2, shuffle=True, verbose=0)
    np.testing.assert_allclose(h.history["accuracy"], [right.mean()] * 2, rtol=1e-15)
    np.testing.assert_allclose(h.history["loss"], [losses.mean()] * 2, rtol=1e-12)


def test_stop_training_in_a_batch_ends_the_epoch_after_that_batch():
    """Keras 3 breaks out of the batch loop right after on_train_batch_end when
    stop_training is set; on_epoch_end still runs, with means over the batches run."""
    rng = np.random.default_rng(4)
    n, batch = 50, 16
    x = rng.standard_normal((n, 4))
    y = rng.integers(0, 3, n)
    model = cconv.Sequential([Input((4,)), Dense(3, activation="softmax")], dtype="float64")
    model.compile(optimizer=FrozenOptimizer(), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    w, b = model.get_weights()
    p = softmax(x @ w + b)
    losses, right = -np.log(p[np.arange(n), y]), p.argmax(axis=1) == y

    class StopAtSecondBatch(cconv.callbacks.Callback):
        steps, epochs = [], []

        def on_train_batch_end(self, step, logs=None):
            self.steps.append(step)
            if step == 1:
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            self.epochs.append(epoch)

    cb = StopAtSecondBatch()
    h = model.fit(x, y, batch_size=batch, epochs=3, shuffle=False, verbose=0, callbacks=[cb])
    assert cb.steps == [0, 1] and cb.epochs == [0]
    np.testing.assert_allclose(h.history["loss"], [losses[:2 * batch].mean()], rtol=1e-12)
    np.testing.assert_allclose(h.history["accuracy"], [right[:2 * batch].mean()], rtol=1e-15)


# ---- optimizers ------------------------------------------------------------------------


@pytest.mark.parametrize("momentum", [0.0, 0.9, 0.5])
def test_sgd_over_several_steps_is_kerass_formula(momentum):
    """Keras's SGD: v = momentum * v - lr * g; w = w + v (with momentum 0: w -= lr * g).
    Five steps with different gradients, so a velocity that does not decay, or is not
    kept between steps, shows."""
    rng = np.random.default_rng(4)
    lr = 0.1
    w0 = [rng.standard_normal((3, 4)), rng.standard_normal(5)]
    grads = [[rng.standard_normal(a.shape) for a in w0] for _ in range(5)]
    opt = cconv.optimizers.SGD(learning_rate=lr, momentum=momentum)
    params = [a.copy() for a in w0]
    want = [a.copy() for a in w0]
    velocity = [np.zeros_like(a) for a in w0]
    for step in grads:
        opt.update(params, step)
        for i, g in enumerate(step):
            velocity[i] = momentum * velocity[i] - lr * g
            want[i] = want[i] + velocity[i]
    for got, exp in zip(params, want):
        np.testing.assert_allclose(got, exp, rtol=1e-13, atol=1e-15)


def test_sgd_momentum_in_fit_follows_the_hand_written_gradient():
    """Six batches of a softmax regression trained by fit with momentum, against its
    gradient written out: d(mean loss)/d(logits) = (p - y) / batch."""
    rng = np.random.default_rng(5)
    n, batch, lr, momentum = 24, 8, 0.3, 0.8
    x = rng.standard_normal((n, 4))
    y = rng.integers(0, 3, n)
    cconv.utils.set_random_seed(1)
    model = cconv.Sequential([Input((4,)), Dense(3, activation="softmax")], dtype="float64")
    model.compile(optimizer=cconv.optimizers.SGD(lr, momentum=momentum),
                  loss="sparse_categorical_crossentropy")
    w, b = model.get_weights()
    vw, vb = np.zeros_like(w), np.zeros_like(b)
    onehot = np.eye(3)[y]
    for _ in range(2):
        for s in range(0, n, batch):
            xb, yb = x[s:s + batch], onehot[s:s + batch]
            g = (softmax(xb @ w + b) - yb) / len(xb)
            vw = momentum * vw - lr * (xb.T @ g)
            vb = momentum * vb - lr * g.sum(axis=0)
            w, b = w + vw, b + vb
    model.fit(x, y, batch_size=batch, epochs=2, shuffle=False, verbose=0)
    for got, exp in zip(model.get_weights(), (w, b)):
        np.testing.assert_allclose(got, exp, rtol=1e-11, atol=1e-13)


# The initializers' distributions are tested in tests/test_initializers.py.


# ---- backward passes the loss does not fold in -----------------------------------------


def one_sgd_step_gradients(model, x, y, lr=0.5, **fit):
    """The gradient of the mean loss that one SGD step of fit applied, from the weights
    before and after it: (w_before - w_after) / lr."""
    before = model.get_weights()
    history = model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0, **fit)
    return [(b - a) / lr for b, a in zip(before, model.get_weights())], before, history


@pytest.mark.parametrize("case", ["softmax_layer_before_a_linear_end",
                                  "softmax_dense_inside_the_network"])
def test_softmax_backward_unfused_against_finite_differences(case):
    """A softmax that is not the model's last activation is not folded into the loss: its
    own backward pass runs, and the gradient must still be the loss's derivative."""
    rng = np.random.default_rng(9)
    n = 6
    x = rng.standard_normal((n, 4))
    y = rng.integers(0, 3, n)
    cconv.utils.set_random_seed(3)
    if case == "softmax_layer_before_a_linear_end":
        stack = [Dense(3), Activation("softmax"), Activation("linear")]
    else:
        stack = [Dense(5, activation="softmax"), Dense(3, activation="softmax")]
    model = cconv.Sequential([Input((4,))] + stack, dtype="float64")
    model.compile(optimizer=cconv.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")
    grads, weights, _ = one_sgd_step_gradients(model, x, y)

    def loss():
        if case == "softmax_layer_before_a_linear_end":
            p = softmax(x @ weights[0] + weights[1])
        else:
            h = softmax(x @ weights[0] + weights[1])
            p = softmax(h @ weights[2] + weights[3])
        return -np.log(p[np.arange(n), y]).mean()

    for got, arr in zip(grads, weights):
        assert rel_error(got, numerical_grad(loss, arr)) < 1e-6


@pytest.mark.parametrize("from_logits", [False, True])
def test_categorical_labels_that_are_not_one_hot(from_logits):
    """Keras's categorical cross-entropy takes any label weights y: the loss is
    -sum(y * log p) and the step must be its gradient, also when a row of y does not
    sum to 1 (there the gradient wrt the logits is p * sum(y) - y, not p - y)."""
    rng = np.random.default_rng(14)
    n = 6
    x = rng.standard_normal((n, 4))
    y = rng.uniform(0, 1, (n, 3)) * rng.choice([0.5, 1.0, 2.0], (n, 1))
    cconv.utils.set_random_seed(5)
    model = cconv.Sequential([Input((4,)), Dense(3, activation=None if from_logits
                                                 else "softmax")], dtype="float64")
    model.compile(optimizer=cconv.optimizers.SGD(0.5),
                  loss=cconv.losses.CategoricalCrossentropy(from_logits=from_logits))
    grads, weights, history = one_sgd_step_gradients(model, x, y)

    def loss():
        return -(y * np.log(softmax(x @ weights[0] + weights[1]))).sum(axis=1).mean()

    np.testing.assert_allclose(history.history["loss"][0], loss(), rtol=1e-12)
    for got, arr in zip(grads, weights):
        assert rel_error(got, numerical_grad(loss, arr)) < 1e-6


def test_softmax_layer_backward_is_the_jacobian_written_out():
    """Activation("softmax").backward(g) for each row is J^T g, J = diag(p) - p p^T."""
    rng = np.random.default_rng(12)
    z, g = rng.standard_normal((5, 7)), rng.standard_normal((5, 7))
    cconv.utils.set_random_seed(0)
    layer = cconv.Sequential([Input((7,)), Activation("softmax")], dtype="float64").layers[0]
    p = softmax(z)
    np.testing.assert_allclose(layer.forward(z, training=True), p, rtol=1e-14)
    want = np.stack([(np.diag(pi) - np.outer(pi, pi)).T @ gi for pi, gi in zip(p, g)])
    np.testing.assert_allclose(layer.backward(g), want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("rate", [0.5, 0.2, 0.75])
def test_standalone_dropout_layer_trained_with_sgd(rate):
    """Dense -> Dropout -> Dense (no fused step): the loss the model reports is the loss
    with the mask it drew, kept inputs scaled by 1 / (1 - rate), and the SGD step is that
    loss's gradient in magnitude, not only in sign. Rates other than 0.5 tell rate from
    1 - rate, and 1 / (1 - rate) from 2."""
    rng = np.random.default_rng(10)
    n = 10
    x = rng.standard_normal((n, 6))
    y = rng.integers(0, 3, n)
    cconv.utils.set_random_seed(4)
    model = cconv.Sequential([Input((6,)), Dense(8, activation="tanh"), Dropout(rate),
                              Dense(3, activation="softmax")], dtype="float64")
    model.compile(optimizer=cconv.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")
    grads, weights, history = one_sgd_step_gradients(model, x, y, seed=11)
    mask = model.layers[1].saved["mask"]  # which units it dropped; the rest is checked
    # 80 draws: the kept share is within 0.2 of 1 - rate (a binomial's 3.5 sigma at most)
    assert abs(mask.mean() - (1 - rate)) < 0.2

    def loss():
        h = np.tanh(x @ weights[0] + weights[1]) * mask / (1 - rate)
        p = softmax(h @ weights[2] + weights[3])
        return -np.log(p[np.arange(n), y]).mean()

    np.testing.assert_allclose(history.history["loss"][0], loss(), rtol=1e-12)
    for got, arr in zip(grads, weights):
        assert rel_error(got, numerical_grad(loss, arr)) < 1e-6


# ---- the weights file ------------------------------------------------------------------

# The arrays of a weights file, in the order they are written: "<position>.<layer>.<name>".
# Changing this is changing the file format: files written before would not load.
FIXED_KEYS = [("000.conv2d.kernel", (3, 3, 1, 16)), ("001.conv2d.bias", (16,)),
              ("002.dense.kernel", (10816, 10)), ("003.dense.bias", (10,))]
TF_KEYS = [("000.conv2d.kernel", (5, 5, 1, 32)), ("001.conv2d.bias", (32,)),
           ("002.conv2d_1.kernel", (5, 5, 32, 64)), ("003.conv2d_1.bias", (64,)),
           ("004.dense.kernel", (3136, 1024)), ("005.dense.bias", (1024,)),
           ("006.dense_1.kernel", (1024, 10)), ("007.dense_1.bias", (10,))]


@pytest.mark.parametrize("preset,keys", [("fixed", FIXED_KEYS), ("tf", TF_KEYS)])
def test_weights_file_keys_and_order_are_pinned(tmp_path, preset, keys):
    cconv.utils.set_random_seed(1)
    model = presets.get(preset).build()
    path = tmp_path / "w.npz"
    presets.save(model, preset, path)
    with np.load(path, allow_pickle=False) as data:
        assert data.files == [k for k, _ in keys] + ["meta.preset", "meta.cconv_version"]
        assert [data[k].shape for k, _ in keys] == [s for _, s in keys]
        by_name = {layer.name: layer for layer in model.layers}
        for key, _ in keys:
            _, layer, name = key.split(".")
            np.testing.assert_array_equal(data[key], by_name[layer].params[name])
        assert str(data["meta.preset"]) == preset


def test_load_weights_reads_the_documented_layout(tmp_path):
    """A file written by hand in the pinned layout loads each array into its layer."""
    cconv.utils.set_random_seed(1)
    model = presets.build_fixed()
    rng = np.random.default_rng(13)
    arrays = {key: rng.standard_normal(shape).astype(np.float32) for key, shape in FIXED_KEYS}
    np.savez(tmp_path / "by_hand.npz", **arrays)
    model.load_weights(tmp_path / "by_hand.npz")
    by_name = {layer.name: layer for layer in model.layers}
    for key, _ in FIXED_KEYS:
        _, layer, name = key.split(".")
        np.testing.assert_array_equal(by_name[layer].params[name], arrays[key])
