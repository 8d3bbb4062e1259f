"""One model, several threads: while a thread trains a model, another thread's fit,
evaluate, save (and compile, set_weights, load_weights, pickling) raise ModelBusyError
naming the model and what runs; predict from another thread sees one set of weights."""
import copy
import pickle
import threading

import numpy as np
import pytest

import cconv
from zoo import data, make, need


class Pause(cconv.callbacks.Callback):
    """Holds the fit at its first batch until released."""

    def __init__(self):
        super().__init__()
        self.reached, self.release = threading.Event(), threading.Event()

    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:
            self.reached.set()
            assert self.release.wait(30)


@pytest.fixture
def training(tmp_path):
    model = make("keras_layers", trained=False)
    model.name = "net_a"
    x, y = data("keras_layers")
    pause, errors = Pause(), []

    def run():
        try:
            model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[pause])
        except BaseException as exc:  # noqa: BLE001 (reported by the test)
            errors.append(exc)
    thread = threading.Thread(target=run, name="trainer")
    thread.start()
    assert pause.reached.wait(30)
    yield model, x, y, tmp_path
    pause.release.set()
    thread.join(30)
    assert not errors, errors


CALLS = {
    "fit": lambda m, x, y, d: m.fit(x, y, verbose=0),
    "evaluate": lambda m, x, y, d: m.evaluate(x, y, verbose=0),
    "save": lambda m, x, y, d: m.save(d / "m.keras"),
    "save_weights": lambda m, x, y, d: m.save_weights(d / "w.npz"),
    "load_weights": lambda m, x, y, d: m.load_weights(d / "w.npz"),
    "compile": lambda m, x, y, d: m.compile(optimizer="sgd"),
    "set_weights": lambda m, x, y, d: m.set_weights(m.get_weights()),
    "pickle/copy": lambda m, x, y, d: pickle.dumps(m),
}


@pytest.mark.parametrize("call", CALLS)
def test_second_use_from_another_thread_is_refused_naming_the_model(training, call):
    model, x, y, folder = training
    if call == "save":
        need("h5py", "h5")
    before = model.get_weights()
    with pytest.raises(cconv.ModelBusyError,
                       match=rf"{call}: model 'net_a' is running fit in thread 'trainer'"):
        CALLS[call](model, x, y, folder)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_the_training_thread_may_evaluate_save_and_copy_from_callbacks(tmp_path):
    need("h5py", "h5")
    model = make("keras_layers", trained=False)
    x, y = data("keras_layers")
    seen = {}

    class Check(cconv.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen["eval"] = self.model.evaluate(x, y, verbose=0)
            self.model.save(tmp_path / "m.keras")
            seen["copy"] = copy.deepcopy(self.model)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[Check()])
    assert seen["eval"] == model.evaluate(x, y, verbose=0)
    assert (tmp_path / "m.keras").exists() and seen["copy"].built
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # free again once the fit ended


class SlowSGD(cconv.optimizers.SGD):
    """SGD that writes its weight arrays one at a time, slowly: a predict that read the
    weights mid-update would mix two steps."""

    def update(self, params, grads):
        for p, g in zip(params, grads):
            p -= p.dtype.type(self.learning_rate) * g
            threading.Event().wait(0.002)


def test_predict_during_fit_sees_one_set_of_weights():
    cconv.utils.set_random_seed(2)
    model = cconv.Sequential([cconv.Input((6,)), cconv.layers.Dense(8, activation="tanh"),
                              cconv.layers.Dense(8, activation="tanh"),
                              cconv.layers.Dense(3, activation="softmax")], dtype="float64")
    model.compile(optimizer=SlowSGD(0.5), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((64, 6)), rng.integers(0, 3, 64)
    probe = rng.standard_normal((4, 6))
    snapshots = [model.get_weights()]

    class Record(cconv.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            snapshots.append(model.get_weights())
    seen, done = [], threading.Event()

    def predicting():
        while not done.is_set():
            seen.append(model.predict(probe, verbose=0))
    reader = threading.Thread(target=predicting)
    reader.start()
    try:
        model.fit(x, y, batch_size=4, epochs=3, verbose=0, callbacks=[Record()], seed=0)
    finally:
        done.set()
        reader.join()
    twin = copy.deepcopy(model)
    allowed = []
    for weights in snapshots:
        twin.set_weights(weights)
        allowed.append(twin.predict(probe, verbose=0))
    assert len(seen) > 10
    for out in seen:
        assert any(np.array_equal(out, a) for a in allowed), "a predict mixed two steps"


def dense_model(optimizer="sgd"):
    cconv.utils.set_random_seed(2)
    model = cconv.Sequential([cconv.Input((6,)), cconv.layers.Dense(8, activation="tanh"),
                              cconv.layers.Dense(3, activation="softmax")], dtype="float64")
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    return model


def run_in_thread(target, name):
    """Start target in a daemon thread (a deadlock must fail the test, not hang it);
    returns (thread, errors)."""
    errors = []

    def run():
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 (reported by the test)
            errors.append(exc)
    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread, errors


def wait_until(condition, seconds=30):
    deadline = threading.Event()
    for _ in range(int(seconds / 0.01)):
        if condition():
            return True
        deadline.wait(0.01)
    return False


def test_predict_callbacks_may_read_while_a_fit_waits_to_update():
    """A predict's callback reads the weights again (get_weights, predict) while a fit in
    another thread waits for that predict to finish before its update: the inner reads
    must not queue behind the update, which waits for the outer read."""
    model = dense_model()
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((16, 6)), rng.integers(0, 3, 16)
    probe = rng.standard_normal((4, 6))
    inside, results = threading.Event(), {}

    class Nested(cconv.callbacks.Callback):
        def on_predict_batch_end(self, batch, logs=None):
            inside.set()
            # hold the read until the fit queues its first update behind it
            assert wait_until(lambda: model._guard._waiting > 0)
            results["weights"] = model.get_weights()
            results["inner"] = model.predict(probe, verbose=0)

    predictor, predict_errors = run_in_thread(
        lambda: results.setdefault("outer", model.predict(probe, verbose=0,
                                                          callbacks=[Nested()])), "predictor")
    assert inside.wait(30)
    trainer, fit_errors = run_in_thread(
        lambda: model.fit(x, y, batch_size=4, epochs=1, verbose=0), "trainer")
    predictor.join(30)
    trainer.join(30)
    assert not predictor.is_alive() and not trainer.is_alive(), "deadlock"
    assert not predict_errors and not fit_errors, (predict_errors, fit_errors)
    # all reads of the predict saw the weights from before the fit's first step
    np.testing.assert_array_equal(results["inner"], results["outer"])


def test_set_weights_during_predict_is_one_set_or_the_other():
    """set_weights (load_weights and EarlyStopping's restore go through it) swaps the
    arrays layer by layer: a predict in another thread must see the old or the new
    weights, never the first layer's new ones with the second layer's old ones."""
    model = dense_model()
    rng = np.random.default_rng(1)
    probe = rng.standard_normal((4, 6))
    old = model.get_weights()
    new = [w + rng.standard_normal(w.shape) for w in old]
    allowed = []
    for weights in (old, new):
        model.set_weights(weights)
        allowed.append(model.predict(probe, verbose=0))
    first = model.layers[0]
    plain_set = first.set_weights

    def slow_set(weights):  # widens the window between the two layers' swaps
        plain_set(weights)
        threading.Event().wait(0.005)
    first.set_weights = slow_set
    seen, done = [], threading.Event()

    def predicting():
        while not done.is_set():
            seen.append(model.predict(probe, verbose=0))
    reader, errors = run_in_thread(predicting, "reader")
    try:
        for i in range(30):
            model.set_weights(new if i % 2 == 0 else old)
            threading.Event().wait(0.002)  # lets the reader in between two swaps
    finally:
        done.set()
        reader.join(30)
    assert not reader.is_alive() and not errors, errors
    assert len(seen) > 10
    for out in seen:
        assert any(np.array_equal(out, a) for a in allowed), "a predict mixed two sets"
