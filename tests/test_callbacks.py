"""EarlyStopping, ModelCheckpoint, CSVLogger, ReduceLROnPlateau and
LearningRateScheduler: Keras's rules, checked against values worked out by hand, through
the hooks directly and through real fits (tests/test_keras_callbacks.py compares them
with Keras's own)."""
import csv
import inspect
import os
import re
import types

import numpy as np
import pytest

import cconv
from cconv.callbacks import (Callback, CSVLogger, EarlyStopping, LearningRateScheduler,
                             ModelCheckpoint, ReduceLROnPlateau)
from cconv.layers import Conv2D, Dense, Flatten, Input
from conftest import FrozenOptimizer


class StubModel:
    """Its 'weights' are the number of the epoch that produced them; save_weights records
    the epoch saved under each name."""

    def __init__(self):
        self.stop_training = False
        self.epoch = None
        self.restored = None
        self.saved = {}
        self.optimizer = types.SimpleNamespace(learning_rate=1.0)

    def save_weights(self, path):
        self.saved[os.path.basename(path)] = self.epoch

    def get_weights(self):
        return [np.array(self.epoch)]

    def set_weights(self, weights):
        self.restored = int(weights[0])


def drive(callback, values, monitor="val_loss", epochs=None, seen=None):
    """Feed per-epoch values through the hooks as fit() would; `seen` gets each epoch's
    logs after the callback. Returns (epochs run, model)."""
    model = StubModel()
    callback.set_model(model)
    callback.set_params({"epochs": epochs or len(values), "metrics": ["loss", monitor]})
    callback.on_train_begin()
    run = 0
    for epoch, value in enumerate(values):
        model.epoch = epoch
        callback.on_epoch_begin(epoch)
        logs = {"loss": 0.0, monitor: value}
        callback.on_epoch_end(epoch, logs)
        if seen is not None:
            seen.append(logs)
        run += 1
        if model.stop_training:
            break
    callback.on_train_end()
    return run, model


# (kwargs, monitored values, epochs run, best epoch restored), each worked out by hand
EARLY_CASES = [
    # best 0.8 at epoch 1; epochs 2 and 3 do not beat it: wait 2 = patience -> stop
    (dict(patience=2), [1.0, 0.8, 0.9, 0.85, 0.7], 4, 1),
    # 0.9 beats 1.0 by 0.1 only, not by min_delta 0.15: no improvement -> stop at once
    (dict(patience=1, min_delta=0.15), [1.0, 0.9, 0.8, 0.6], 2, 0),
    # min_delta is taken as its absolute value
    (dict(patience=1, min_delta=-0.15), [1.0, 0.9, 0.8, 0.6], 2, 0),
    # patience 0: the first epoch that does not improve stops training
    (dict(), [3.0, 2.0, 2.0, 1.0], 3, 1),
    # never stops: every epoch improves; the last is the best
    (dict(patience=0), [5.0, 4.0, 3.0], 3, 2),
    # no early stop, yet the best weights (epoch 1) are put back at the end
    (dict(patience=5), [1.0, 0.5, 0.7, 0.6], 4, 1),
    # baseline 0.5 is never beaten, so wait is never reset: 0.9 improves (wait 1) and
    # 0.95 does not (wait 2 = patience) -> stop at epoch 1
    (dict(patience=2, baseline=0.5), [0.9, 0.95, 0.97, 0.99], 2, 0),
    # the same values without a baseline stop one epoch later
    (dict(patience=2), [0.9, 0.95, 0.97, 0.99], 3, 0),
    # epochs 0 and 1 are not watched: the best is 1.0 at epoch 2
    (dict(patience=0, start_from_epoch=2), [0.1, 0.2, 1.0, 1.1, 0.5], 4, 2),
]


@pytest.mark.parametrize("kwargs, values, run, best", EARLY_CASES)
def test_early_stopping_by_hand(kwargs, values, run, best):
    cb = EarlyStopping(restore_best_weights=True, **kwargs)
    got_run, model = drive(cb, values)
    assert got_run == run
    assert cb.stopped_epoch == (run - 1 if run < len(values) else 0)
    assert model.restored == best
    assert cb.best_epoch == best


def test_early_stopping_max_mode_for_accuracy():
    # "auto" reads val_accuracy as higher-is-better: 0.6 does not beat 0.6 -> stop
    for mode in ("auto", "max"):
        cb = EarlyStopping(monitor="val_accuracy", patience=1, mode=mode,
                           restore_best_weights=True)
        run, model = drive(cb, [0.5, 0.6, 0.6, 0.55], monitor="val_accuracy")
        assert (run, model.restored) == (3, 1)
    # forcing "min" on an accuracy reads the same values the other way round
    cb = EarlyStopping(monitor="val_accuracy", patience=1, mode="min")
    assert drive(cb, [0.5, 0.6, 0.6, 0.55], monitor="val_accuracy")[0] == 2
    # going up by 0.05 is less than min_delta 0.1: no improvement -> stop at epoch 1;
    # 0.7 at epoch 1 beats 0.5 by more than 0.1
    for values, run in [([0.5, 0.55, 0.7], 2), ([0.5, 0.7, 0.75, 0.7], 3)]:
        cb = EarlyStopping(monitor="val_accuracy", patience=1, min_delta=0.1)
        assert drive(cb, values, monitor="val_accuracy")[0] == run


def test_early_stopping_without_restore_leaves_weights():
    run, model = drive(EarlyStopping(patience=1), [1.0, 0.5, 0.7, 0.6])
    assert run == 3 and model.restored is None


def test_early_stopping_is_reusable():
    cb = EarlyStopping(patience=1, restore_best_weights=True)
    drive(cb, [0.1, 0.2, 0.3])
    # a second training starts from scratch: its own best, not 0.1 from the first
    run, model = drive(cb, [5.0, 4.0, 4.5])
    assert (run, model.restored) == (3, 1)


def test_epochs_without_validation_are_skipped_by_hand():
    """validation_freq > 1: epochs whose logs hold no val_* value are skipped, as Keras 3
    does (no wait counted, nothing saved). Best 1.0 at epoch 1; 1.2 at epoch 3 does not
    beat it: wait 1 = patience -> stop at epoch 3, restore epoch 1."""
    model = StubModel()
    cb = EarlyStopping(patience=1, restore_best_weights=True)
    cb.set_model(model)
    cb.set_params({"epochs": 6, "metrics": ["loss", "val_loss"]})
    cb.on_train_begin()
    logs = [{"loss": 0.0}, {"loss": 0.0, "val_loss": 1.0}, {"loss": 0.0},
            {"loss": 0.0, "val_loss": 1.2}, {"loss": 0.0}, {"loss": 0.0, "val_loss": 0.5}]
    for epoch, epoch_logs in enumerate(logs):
        model.epoch = epoch
        cb.on_epoch_end(epoch, epoch_logs)
        if model.stop_training:
            break
    cb.on_train_end()
    assert (epoch, cb.stopped_epoch, model.restored) == (3, 3, 1)


def test_validation_freq_with_val_monitors_in_a_real_fit(tmp_path):
    x, y, xv, yv = small_problem()
    rec = Recorder()
    checkpoint = ModelCheckpoint(str(tmp_path / "ckpt-{epoch}-{val_loss:.3f}.npz"),
                                 save_best_only=True)
    small_model().fit(x, y, batch_size=16, epochs=4, verbose=0, validation_data=(xv, yv),
                      validation_freq=2, callbacks=[rec, checkpoint, EarlyStopping(patience=5)])
    assert len(rec.logs) == 4
    saved = sorted(name.split("-")[1] for name in os.listdir(tmp_path))
    # saved only after epochs that validated (2 and 4): epoch 2 is always the first best
    assert saved[0] == "2" and set(saved) <= {"2", "4"}


def small_problem(seed=3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((48, 6, 6, 1))
    y = rng.integers(0, 3, 48)
    xv = rng.standard_normal((40, 6, 6, 1))
    yv = rng.integers(0, 3, 40)  # labels unrelated to the training ones: it will overfit
    return x, y, xv, yv


def small_model(lr=0.5):
    cconv.utils.set_random_seed(11)
    model = cconv.Sequential([Input((6, 6, 1)), Conv2D(4, 3, activation="tanh"), Flatten(),
                              Dense(3, activation="softmax")], dtype="float64")
    model.compile(optimizer=cconv.optimizers.SGD(learning_rate=lr),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


class Recorder(Callback):
    """Weights and logs at the end of every epoch, and how many batches ran."""

    def __init__(self):
        super().__init__()
        self.weights, self.logs, self.batches = [], [], 0

    def on_train_batch_begin(self, batch, logs=None):
        self.batches += 1

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_weights())
        self.logs.append(dict(logs))


def test_early_stopping_in_a_real_fit_restores_the_best_epoch():
    x, y, xv, yv = small_problem()
    model, rec = small_model(), Recorder()
    history = model.fit(x, y, batch_size=16, epochs=60, verbose=0, validation_data=(xv, yv),
                        callbacks=[rec, EarlyStopping(patience=3, restore_best_weights=True)],
                        seed=2)
    val = history.history["val_loss"]
    # the rule, run by hand over the recorded values: stop once 3 epochs fail to beat
    # the best so far
    best, best_epoch, stop = np.inf, 0, None
    for epoch, v in enumerate(val):
        if v < best:
            best, best_epoch = v, epoch
        elif epoch - best_epoch >= 3:
            stop = epoch
            break
    assert stop is not None and len(val) == stop + 1 < 60, val
    for got, want in zip(model.get_weights(), rec.weights[best_epoch]):
        np.testing.assert_array_equal(got, want)
    # and the final weights are not simply the last epoch's
    assert not all(np.array_equal(a, b) for a, b in zip(model.get_weights(), rec.weights[-1]))


@pytest.mark.parametrize("make, bad", [
    (lambda: EarlyStopping(monitor="val_los"), "val_los"),
    (lambda: EarlyStopping(monitor="accuracy_", mode="max"), "accuracy_"),
    (lambda: ModelCheckpoint("w.npz", monitor="val_acc", save_best_only=True), "val_acc"),
])
def test_misspelled_monitor_fails_before_the_first_batch(make, bad):
    x, y, xv, yv = small_problem()
    model, rec = small_model(), Recorder()
    before = model.get_weights()
    with pytest.raises(ValueError, match=f"{bad!r} is not produced") as err:
        model.fit(x, y, epochs=2, verbose=0, validation_data=(xv, yv), callbacks=[rec, make()])
    assert "available: loss, accuracy, val_loss, val_accuracy" in str(err.value)
    assert rec.batches == 0
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_val_monitor_without_validation_says_why():
    x, y, _, _ = small_problem()
    with pytest.raises(ValueError, match="validation_data"):
        small_model().fit(x, y, epochs=1, verbose=0, callbacks=[EarlyStopping()])


def test_fit_announces_its_log_keys():
    seen = {}

    class Params(Callback):
        def on_train_begin(self, logs=None):
            seen.update(self.params)

    x, y, xv, yv = small_problem()
    small_model().fit(x, y, epochs=1, verbose=0, callbacks=[Params()])
    assert seen["metrics"] == ["loss", "accuracy"]
    small_model().fit(x, y, epochs=1, verbose=0, validation_data=(xv, yv), callbacks=[Params()])
    assert seen["metrics"] == ["loss", "accuracy", "val_loss", "val_accuracy"]


# For each callback, a bad value of each argument that is checked; the others take any
# value as Keras's do (verbose, and flags read as bool()).
BAD_ARGUMENTS = {
    EarlyStopping: dict(monitor=3, min_delta=float("nan"), patience=-1, mode="up",
                        baseline="low", start_from_epoch=1.5),
    ModelCheckpoint: dict(filepath="", monitor="", mode="best", save_freq=0,
                          save_weights_only=False, initial_value_threshold="0.5"),
    ReduceLROnPlateau: dict(monitor=None, factor=1.0, patience=-2, mode=0,
                            min_delta="big", cooldown=0.5, min_lr=float("inf")),
    LearningRateScheduler: dict(schedule=0.1),
    CSVLogger: dict(filename=3, separator=";;"),
}
ACCEPT_ANYTHING = {"verbose", "restore_best_weights", "save_best_only", "append"}
REQUIRED = {ModelCheckpoint: dict(filepath="w.npz"), LearningRateScheduler:
            dict(schedule=lambda epoch, lr: lr), CSVLogger: dict(filename="log.csv")}
MORE_BAD = [  # values of other kinds, and arguments bad together
    (ModelCheckpoint, dict(save_freq="batch"), "save_freq"),
    (ModelCheckpoint, dict(save_freq=True), "save_freq"),
    (ModelCheckpoint, dict(save_best_only=True, save_freq=5), "save_freq"),
    (ModelCheckpoint, dict(filepath=None), "filepath"),
    (ReduceLROnPlateau, dict(factor=2), "factor"),
    (ReduceLROnPlateau, dict(factor="half"), "factor"),
    (EarlyStopping, dict(min_delta=True), "min_delta"),
    (CSVLogger, dict(separator=None), "separator"),
]


def test_every_checked_argument_is_listed():
    for cls, bad in BAD_ARGUMENTS.items():
        names = set(inspect.signature(cls).parameters)
        assert names == set(bad) | (names & ACCEPT_ANYTHING), cls.__name__


@pytest.mark.parametrize("cls, kwargs, name", [
    (cls, {name: value}, name) for cls, bad in BAD_ARGUMENTS.items()
    for name, value in bad.items()] + MORE_BAD, ids=str)
def test_bad_arguments_are_named(cls, kwargs, name):
    with pytest.raises((ValueError, TypeError)) as err:
        cls(**{**REQUIRED.get(cls, {}), **kwargs})
    assert f"{cls.__name__}: " in str(err.value)
    assert re.search(rf"\b{name}\b", str(err.value)), str(err.value)


def test_auto_mode_needs_a_known_direction():
    with pytest.raises(ValueError, match="mode='min' or mode='max'"):
        drive(EarlyStopping(monitor="val_f1"), [0.5, 0.6], monitor="val_f1")
    assert drive(EarlyStopping(monitor="val_f1", mode="max"), [0.5, 0.4, 0.3],
                 monitor="val_f1")[0] == 2


def test_checkpoint_every_epoch_with_formatted_names(tmp_path):
    x, y, xv, yv = small_problem()
    model, rec = small_model(), Recorder()
    pattern = str(tmp_path / "ckpt" / "w-{epoch:02d}-{val_loss:.4f}.npz")
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0, validation_data=(xv, yv),
                        callbacks=[rec, ModelCheckpoint(pattern)], seed=1)
    val = history.history["val_loss"]
    names = sorted(os.listdir(tmp_path / "ckpt"))
    assert names == [f"w-{e + 1:02d}-{v:.4f}.npz" for e, v in enumerate(val)]
    for epoch, name in enumerate(names):
        other = small_model()
        other.load_weights(tmp_path / "ckpt" / name)
        for got, want in zip(other.get_weights(), rec.weights[epoch]):
            np.testing.assert_array_equal(got, want)


def test_checkpoint_best_only_keeps_the_best_epoch(tmp_path):
    x, y, xv, yv = small_problem()
    model, rec = small_model(), Recorder()
    path = tmp_path / "best.npz"
    history = model.fit(x, y, batch_size=16, epochs=25, verbose=0, validation_data=(xv, yv),
                        callbacks=[rec, ModelCheckpoint(path, save_best_only=True)], seed=2)
    val = history.history["val_loss"]
    best = int(np.argmin(val))
    assert best < len(val) - 1, "the test needs a run whose last epoch is not the best"
    other = small_model()
    other.load_weights(path)
    for got, want in zip(other.get_weights(), rec.weights[best]):
        np.testing.assert_array_equal(got, want)
    assert os.listdir(tmp_path) == ["best.npz"]  # no temporary files left behind
    # monitoring accuracy keeps the epoch of the highest val_accuracy instead (the first
    # of equals)
    model, rec = small_model(), Recorder()
    history = model.fit(x, y, batch_size=16, epochs=8, verbose=0, validation_data=(xv, yv),
                        callbacks=[rec, ModelCheckpoint(path, monitor="val_accuracy",
                                                        save_best_only=True)], seed=2)
    best = int(np.argmax(history.history["val_accuracy"]))
    other.load_weights(path)
    for got, want in zip(other.get_weights(), rec.weights[best]):
        np.testing.assert_array_equal(got, want)


def test_checkpoint_bad_filename_field_fails_at_start(tmp_path):
    x, y, xv, yv = small_problem()
    model, rec = small_model(), Recorder()
    with pytest.raises(ValueError, match="val_los.*available: epoch, loss"):
        model.fit(x, y, epochs=1, verbose=0, validation_data=(xv, yv),
                  callbacks=[rec, ModelCheckpoint(str(tmp_path / "w-{val_los:.2f}.npz"))])
    assert rec.batches == 0 and os.listdir(tmp_path) == []


def read_csv(path, sep=","):
    with open(path, newline="") as f:
        return list(csv.reader(f, delimiter=sep))


def test_csv_logger_rows_match_history(tmp_path):
    x, y, xv, yv = small_problem()
    path = tmp_path / "log.csv"
    model = small_model()
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0, validation_data=(xv, yv),
                        callbacks=[CSVLogger(path)]).history
    rows = read_csv(path)
    assert rows[0] == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]
    assert [r[0] for r in rows[1:]] == ["0", "1", "2"]
    for epoch, row in enumerate(rows[1:]):
        assert [float(v) for v in row[1:]] == [history[k][epoch] for k in rows[0][1:]]
    # append: the second run's rows follow, under the same single header
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, validation_data=(xv, yv),
              callbacks=[CSVLogger(path, append=True)])
    rows = read_csv(path)
    assert len(rows) == 1 + 3 + 2 and rows[0][0] == "epoch"
    assert [r[0] for r in rows[1:]] == ["0", "1", "2", "0", "1"]
    # without append, the file starts over
    history = model.fit(x, y, epochs=1, verbose=0,
                        callbacks=[CSVLogger(path, separator=";")]).history
    rows = read_csv(path, ";")
    # without validation, Keras adds the val_ columns all the same, NA
    assert rows[0] == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]
    assert len(rows) == 2 and rows[1][3:] == ["NA", "NA"]
    assert [float(v) for v in rows[1][1:3]] == [history["accuracy"][0], history["loss"][0]]
    assert os.listdir(tmp_path) == ["log.csv"]


def test_csv_logger_rows_are_the_epoch_means_worked_out_by_hand(tmp_path):
    """With weights that do not move, every epoch's row is known in advance: the mean
    loss and accuracy over all 45 training and all 13 validation samples (batches of 10,
    so the last batch of each is short), from the softmax of the weights."""
    rng = np.random.default_rng(8)
    x, y = rng.standard_normal((45, 5)), rng.integers(0, 3, 45)
    xv, yv = rng.standard_normal((13, 5)), rng.integers(0, 3, 13)
    cconv.utils.set_random_seed(6)
    model = cconv.Sequential([Input((5,)), Dense(3, activation="softmax")], dtype="float64")
    model.compile(optimizer=FrozenOptimizer(), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    w, b = model.get_weights()

    def means(xs, ys):
        z = xs @ w + b
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        return (p.argmax(axis=1) == ys).mean(), -np.log(p[np.arange(len(ys)), ys]).mean()

    want = [*means(x, y), *means(xv, yv)]
    path = tmp_path / "log.csv"
    model.fit(x, y, batch_size=10, epochs=2, verbose=0, validation_data=(xv, yv),
              callbacks=[CSVLogger(path)])
    rows = read_csv(path)
    assert rows[0] == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]
    for epoch, row in enumerate(rows[1:]):
        assert row[0] == str(epoch)
        np.testing.assert_allclose([float(v) for v in row[1:]], want, rtol=1e-12)
    assert len(rows) == 3


def test_csv_logger_marks_missing_values(tmp_path):
    path = tmp_path / "log.csv"
    cb = CSVLogger(path)
    cb.set_params({})
    cb.on_train_begin()
    cb.on_epoch_end(0, {"loss": 0.5, "val_loss": 0.25})
    cb.on_epoch_end(1, {"loss": 0.125})
    cb.on_train_end()
    assert read_csv(path) == [["epoch", "loss", "val_loss"], ["0", "0.5", "0.25"],
                              ["1", "0.125", "NA"]]


def test_reduce_lr_on_plateau_by_hand():
    """patience 1, factor 0.5, cooldown 2, min_lr 0.125, worked out epoch by epoch. A
    reduction sets the cooldown counter to 2; each later epoch first counts it down, and
    only an epoch that leaves it at 0 counts towards patience (Keras's rule: cooldown 2
    skips one epoch). Logged: the rate the epoch trained with."""
    cb = ReduceLROnPlateau(factor=0.5, patience=1, cooldown=2, min_lr=0.125, min_delta=0)
    seen = []
    _, model = drive(cb, [1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5], seen=seen)
    # e0 best 1.0 | e1 tie, wait 1 -> 0.5 | e2 cooldown | e3 wait 1 -> 0.25 | e4 cooldown
    # | e5 0.5 improves | e6 wait 1 -> 0.125 | e7 cooldown | e8 wait 1, at min_lr: stays
    assert [logs["learning_rate"] for logs in seen] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25,
                                                        0.25, 0.125, 0.125]
    assert model.optimizer.learning_rate == 0.125 and (cb.wait, cb.best) == (1, 0.5)
    # in max mode, min_delta 0.25 asks each value to exceed the best by more than 0.25
    cb = ReduceLROnPlateau(monitor="val_accuracy", factor=0.5, patience=1, min_delta=0.25)
    _, model = drive(cb, [0.25, 0.5, 0.75, 1.0625], monitor="val_accuracy")
    # e1 +0.25 is no gain -> 0.5 | e2 +0.5 -> best 0.75 | e3 +0.3125 -> best 1.0625
    assert (model.optimizer.learning_rate, cb.best) == (0.5, 1.0625)


def rate_fits(callback, rates, **kwargs):
    """A len(rates)-epoch fit with `callback`, and the same epochs fitted one
    at a time with each rate set by hand: (its history, its weights, the hand-set ones)."""
    x, y, xv, yv = small_problem()
    fit = dict(batch_size=16, verbose=0, shuffle=False, validation_data=(xv, yv))
    model = small_model(lr=rates[0])
    history = model.fit(x, y, epochs=len(rates), callbacks=[callback], **fit, **kwargs)
    by_hand = small_model(lr=rates[0])
    for rate in rates:
        by_hand.optimizer.learning_rate = rate
        by_hand.fit(x, y, epochs=1, **fit)
    return history.history, model.get_weights(), by_hand.get_weights()


def test_reduce_lr_on_plateau_in_a_real_fit():
    # min_delta 10: after the first epoch nothing improves; patience 0 -> halve each epoch
    cb = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=10)
    history, got, want = rate_fits(cb, [0.4, 0.4, 0.2, 0.1])
    assert history["learning_rate"] == [0.4, 0.4, 0.2, 0.1]
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_learning_rate_scheduler_in_a_real_fit():
    calls = []

    def schedule(epoch, lr):
        calls.append((epoch, lr))
        return [0.4, 0.1, 0.3][epoch]

    history, got, want = rate_fits(LearningRateScheduler(schedule), [0.4, 0.1, 0.3])
    assert calls == [(0, 0.4), (1, 0.4), (2, 0.1)]
    assert history["learning_rate"] == [0.4, 0.1, 0.3]
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    # a one-argument schedule gets the epoch alone; an int is refused, as by Keras
    calls.clear()
    drive(LearningRateScheduler(lambda epoch: calls.append(epoch) or 0.5 ** epoch),
          [1.0, 1.0, 1.0])
    assert calls == [0, 1, 2]
    with pytest.raises(ValueError, match="schedule: .*float, got 1 at epoch 0"):
        drive(LearningRateScheduler(lambda epoch, lr: 1), [1.0])


def test_checkpoint_initial_value_threshold_by_hand():
    # only values below 0.5 count, and only when they beat the best saved so far
    cb = ModelCheckpoint("w-{epoch}.npz", save_best_only=True, initial_value_threshold=0.5)
    _, model = drive(cb, [0.8, 0.6, 0.4, 0.45, 0.3])
    assert model.saved == {"w-3.npz": 2, "w-5.npz": 4}
    cb = ModelCheckpoint("w-{epoch}.npz", monitor="val_accuracy", save_best_only=True,
                         initial_value_threshold=0.5)
    _, model = drive(cb, [0.25, 0.5, 0.75, 0.625], monitor="val_accuracy")
    assert model.saved == {"w-3.npz": 2}


def test_checkpoint_every_n_batches_by_hand(tmp_path):
    """save_freq=3 over epochs of 2 batches: saves after the 3rd and 6th batch seen,
    whatever the epoch (Keras counts across epochs), named by epoch and batch from 1."""
    cb = ModelCheckpoint(str(tmp_path / "w-{epoch}-{batch}-{loss:.1f}.npz"), save_freq=3)
    model = StubModel()
    cb.set_model(model)
    cb.set_params({"epochs": 3, "metrics": ["loss"]})
    cb.on_train_begin()
    for epoch in range(3):
        model.epoch = epoch
        cb.on_epoch_begin(epoch)
        for batch in range(2):
            cb.on_train_batch_end(batch, {"loss": epoch + batch / 10})
        cb.on_epoch_end(epoch, {"loss": 9.0})
    assert model.saved == {"w-2-1-1.0.npz": 1, "w-3-2-2.1.npz": 2}


def test_csv_logger_append_keeps_the_file_and_writes_this_runs_columns(tmp_path):
    """Keras's rule: the header only goes into an empty file; the columns are those of
    this run's logs, whatever the file's first line says. Worked out by hand."""
    path = tmp_path / "log.csv"
    logs = [{"loss": 0.5, "accuracy": 0.25}, {"loss": 0.125, "accuracy": 0.75}]
    rows = b"0,0.25,0.5,NA,NA\r\n1,0.75,0.125,NA,NA\r\n"
    header = b"epoch,accuracy,loss,val_accuracy,val_loss\r\n"
    for prior, want in [(None, header + rows), (b"", header + rows),
                        (b"\n", b"\n" + rows),  # once read back as no columns at all
                        (b"epoch,loss\r\n0,1.0\r\n", b"epoch,loss\r\n0,1.0\r\n" + rows),
                        (b"epoch,loss\n0,1.0", b"epoch,loss\n0,1.0\r\n" + rows)]:
        if prior is not None:
            path.write_bytes(prior)
        elif path.exists():
            path.unlink()
        cb = CSVLogger(path, append=True)
        cb.set_params({})
        cb.on_train_begin()
        for epoch, epoch_logs in enumerate(logs):
            cb.on_epoch_end(epoch, dict(epoch_logs))
        cb.on_train_end()
        assert path.read_bytes() == want, prior
