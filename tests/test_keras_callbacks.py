"""cconv's callbacks against Keras 3's own (KERAS_BACKEND=jax): each pair is driven
through its hooks with the same epoch (and batch) logs, on the same stand-in model, in
every mode and at non-default arguments, and what they do is compared: epochs run,
stop_training, weights restored, files saved and their names, learning rates, their
bookkeeping (best, wait, ...) after every epoch, CSV files byte for byte.

Keras's callbacks are driven through Keras's CallbackList, as its fit does (it hands
them float log values); cconv's in list order, as cconv's fit does. The monitored
values are multiples of 1/16 (and NaN): Keras on jax compares them in float32, cconv in
float64, and such values make no difference between the two. Skipped, saying so, when
Keras is absent."""
import math
import os
import types

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
from zoo import need  # noqa: E402

keras = need("keras", "interop")

import cconv  # noqa: E402

LIBS = {"keras": keras.callbacks, "cconv": cconv.callbacks}
NAN = math.nan


@pytest.fixture(scope="module")
def keras_metrics():
    """The metrics of a compiled Keras model that has run once: Keras's "auto" mode reads
    a metric's direction from them (loss alone is known without)."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.evaluate(np.zeros((2, 2), "float32"), np.zeros(2), verbose=0)
    return model.metrics


class StandIn:
    """What the callbacks read and write of a model: stop_training, get_weights and
    set_weights (the 'weights' are the epoch that produced them), optimizer.learning_rate
    (a float), save and save_weights (which write the epoch and batch into the file)."""

    def __init__(self, metrics, lr=1.0):
        self.metrics = metrics
        self.stop_training = False
        self.epoch = self.batch = self.restored = None
        self.optimizer = types.SimpleNamespace(learning_rate=lr)

    def get_weights(self):
        return [np.array(self.epoch)]

    def set_weights(self, weights):
        self.restored = int(weights[0])

    def save(self, path, **kwargs):
        with open(path, "w") as f:
            f.write(f"{self.epoch} {self.batch}")

    save_weights = save


class _CconvList:
    """cconv's fit calls each callback's hook in list order with the same logs dict."""

    def __init__(self, callbacks, model, params):
        self.callbacks = callbacks
        for cb in callbacks:
            cb.set_model(model)
            cb.set_params(params)

    def __getattr__(self, hook):
        return lambda *args: [getattr(cb, hook)(*args) for cb in self.callbacks]


def recorder(lib, watched, attributes):
    """A callback after `watched` (where fit puts History) that records, per epoch, the
    logs as they reach it and the watched callback's attributes."""

    class Recorder(LIBS[lib].Callback):
        def __init__(self):
            super().__init__()
            self.epochs = []

        def on_epoch_end(self, epoch, logs=None):
            state = {a: getattr(watched, a) for a in attributes}
            self.epochs.append((dict(logs), state, self.model.stop_training))

    return Recorder()


def drive(lib, callback, epoch_logs, model, attributes=(), batches=0, batch_logs=None,
          snapshot=None):
    """One training of len(epoch_logs) epochs, as fit runs it, until stop_training.
    batch_logs(epoch, batch) gives a batch's logs; snapshot() is called after
    on_train_begin and after every epoch. Returns what the recorder saw, and the
    snapshots."""
    rec = recorder(lib, callback, attributes)
    keys = sorted({k for logs in epoch_logs for k in logs})
    params = dict(epochs=len(epoch_logs), steps=batches, metrics=keys)
    if lib == "keras":
        hooks = keras.callbacks.CallbackList([callback, rec], model=model, **params)
    else:
        hooks = _CconvList([callback, rec], model, params)
    shots = []
    hooks.on_train_begin()
    shots.append(snapshot and snapshot())
    for epoch, logs in enumerate(epoch_logs):
        model.epoch = epoch
        hooks.on_epoch_begin(epoch)
        for batch in range(batches):
            model.batch = batch
            hooks.on_train_batch_begin(batch)
            hooks.on_train_batch_end(batch, dict(batch_logs(epoch, batch)))
        model.batch = None
        hooks.on_epoch_end(epoch, dict(logs))
        shots.append(snapshot and snapshot())
        if model.stop_training:
            break
    hooks.on_train_end()
    return plain(rec.epochs), shots


def plain(value):
    """value with NaN written "nan" and NumPy scalars as Python ones, so that == compares
    what the two libraries did."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if isinstance(value, (float, np.floating)):
        return "nan" if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


# monitored values, epoch by epoch (multiples of 1/16, so float32 and float64 agree)
SEQUENCES = {
    "rising": [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0],
    "falling": [2.0, 1.75, 1.5, 1.25, 1.0, 0.75, 0.5, 0.25],
    "plateau": [0.5] * 8,
    "zigzag": [1.0, 0.75, 0.875, 0.625, 0.75, 0.75, 0.5, 0.625, 0.5, 1.0, 0.375, 0.5],
    "steps_of_1/16": [1.0, 0.9375, 0.875, 0.9375, 0.8125, 0.875, 0.75, 0.8125, 0.9375,
                      1.0625],
    "nan_inside": [1.0, 0.5, NAN, 0.25, 0.75, 0.5, 1.5, 0.125],
    "nan_first": [NAN, 1.0, 0.5, 0.25, 0.75],
    "peak_then_fall": [0.5, 1.0, 1.5, 1.0, 0.5, 0.25, 1.25, 1.5, 2.0],
}
# (monitor, mode): the direction said or read from the name
MONITORS = [("val_loss", "auto"), ("val_loss", "min"), ("val_loss", "max"),
            ("val_accuracy", "auto"), ("val_accuracy", "max"), ("val_accuracy", "min"),
            ("loss", "auto"), ("accuracy", "auto"), ("accuracy", "min")]
KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


def epochs_of(monitor, values, validate_every=1):
    """Epoch logs with `monitor` following `values`; the other values differ per epoch
    (for file names) but are not watched. validate_every=2: the odd epochs only carry
    val_* values, as fit(validation_freq=2)."""
    out = []
    for epoch, v in enumerate(values):
        logs = {k: (v if k == monitor else 0.0625 * (epoch + i + 1))
                for i, k in enumerate(KEYS)}
        if (epoch + 1) % validate_every:
            logs = {k: x for k, x in logs.items() if not k.startswith("val_")}
        out.append(logs)
    return out


def both(make, epoch_logs, metrics, attributes, lr=1.0, **kw):
    """Run make(lib) on each library; return (cconv's, Keras's) records, each with the
    stand-in's stop_training, restored weights and learning rate at the end."""
    results = []
    for lib in ("cconv", "keras"):
        model = StandIn(metrics, lr)
        seen, shots = drive(lib, make(lib), epoch_logs, model, attributes, **kw)
        results.append(dict(seen=seen, restored=model.restored, shots=shots,
                            lr=float(model.optimizer.learning_rate)))
    return results


EARLY_KWARGS = [
    dict(),
    dict(patience=2, restore_best_weights=True),
    dict(patience=3, min_delta=0.125, restore_best_weights=True),
    dict(patience=1, min_delta=-0.0625),
    dict(patience=2, baseline=0.75, restore_best_weights=True),
    dict(patience=1, baseline=1.125, min_delta=0.0625, restore_best_weights=True),
    dict(patience=1, start_from_epoch=2, restore_best_weights=True),
    dict(patience=0, start_from_epoch=3, baseline=0.5),
]


@pytest.mark.parametrize("kwargs", EARLY_KWARGS, ids=str)
@pytest.mark.parametrize("sequence", SEQUENCES)
@pytest.mark.parametrize("monitor, mode", MONITORS)
def test_early_stopping_as_keras(keras_metrics, monitor, mode, sequence, kwargs):
    def make(lib):
        return LIBS[lib].EarlyStopping(monitor=monitor, mode=mode, **kwargs)

    ours, theirs = both(make, epochs_of(monitor, SEQUENCES[sequence]), keras_metrics,
                        ("best", "wait", "stopped_epoch", "best_epoch"))
    assert ours == theirs


@pytest.mark.parametrize("sequence", ["zigzag", "nan_inside", "peak_then_fall"])
@pytest.mark.parametrize("monitor, mode", MONITORS[:6])
def test_early_stopping_skips_unvalidated_epochs_as_keras(keras_metrics, monitor, mode,
                                                          sequence):
    def make(lib):
        return LIBS[lib].EarlyStopping(monitor=monitor, mode=mode, patience=1,
                                       restore_best_weights=True)

    epoch_logs = epochs_of(monitor, SEQUENCES[sequence], validate_every=2)
    ours, theirs = both(make, epoch_logs, keras_metrics,
                        ("best", "wait", "stopped_epoch", "best_epoch"))
    assert ours == theirs


def listing(folder):
    """{file name relative to folder: its content}: which epoch and batch each holds."""
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path) as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


CHECKPOINT_KWARGS = [
    dict(),
    dict(save_best_only=True),
    dict(save_best_only=True, initial_value_threshold=0.875),
    dict(save_best_only=True, initial_value_threshold=-1.0),
    dict(save_best_only=True, save_freq=2),
    dict(save_freq=4),
]
PATTERNS = ["ckpt/{epoch:02d}-{val_loss:.2f}.keras", "{epoch}-{loss:.3f}-{accuracy:.1f}.keras"]


def checkpoint_files(tmp_path, monitor, mode, sequence, kwargs, pattern, metrics,
                     validate_every=1):
    """(cconv's, Keras's) records and files of one run; save_freq counts 3 batches per
    epoch, whose loss and accuracy also follow the sequence."""
    values = SEQUENCES[sequence]
    files = {}

    def make(lib):
        folder = tmp_path / lib
        folder.mkdir()
        files[lib] = folder
        return LIBS[lib].ModelCheckpoint(str(folder / pattern), monitor=monitor, mode=mode,
                                         save_weights_only=False, **kwargs)

    def batch_logs(epoch, batch):
        v = values[(epoch + batch) % len(values)]
        return {"loss": v, "accuracy": v}

    results = both(make, epochs_of(monitor, values, validate_every), metrics,
                   ("best",), batches=3, batch_logs=batch_logs)
    for r, lib in zip(results, ("cconv", "keras")):
        r["files"] = listing(files[lib])
    return results


# every combination but those cconv refuses (test_callbacks.py checks the refusals):
# save_freq=N formats the name from batch logs, which hold no val_* value, and, with
# save_best_only, compares them
CHECKPOINT_CASES = [
    (monitor, mode, sequence, kwargs, pattern)
    for monitor, mode in MONITORS
    for sequence in ["falling", "plateau", "zigzag", "nan_first"]
    for kwargs in CHECKPOINT_KWARGS
    for pattern in PATTERNS
    if "save_freq" not in kwargs or not ("val_" in pattern or kwargs.get("save_best_only")
                                         and monitor.startswith("val_"))]


@pytest.mark.parametrize("monitor, mode, sequence, kwargs, pattern", CHECKPOINT_CASES,
                         ids=str)
def test_checkpoint_as_keras(tmp_path, keras_metrics, monitor, mode, sequence, kwargs,
                             pattern):
    ours, theirs = checkpoint_files(tmp_path, monitor, mode, sequence, kwargs, pattern,
                                    keras_metrics)
    assert ours == theirs


@pytest.mark.parametrize("sequence", ["zigzag", "peak_then_fall"])
@pytest.mark.parametrize("monitor, mode", MONITORS[:6])
def test_checkpoint_skips_unvalidated_epochs_where_keras_saves(tmp_path, keras_metrics,
                                                               monitor, mode, sequence):
    """validation_freq=2 with save_best_only on a val_* value: Keras, having nothing to
    compare on an epoch without validation, saves it (with a warning); cconv skips it, so
    the file kept stays the best validated one. Everything else is the same."""
    ours, theirs = checkpoint_files(tmp_path, monitor, mode, sequence,
                                    dict(save_best_only=True), "e{epoch}.keras",
                                    keras_metrics, validate_every=2)
    unvalidated = {f"e{e + 1}.keras": f"{e} None" for e in range(0, 12, 2)}
    keras_files = theirs.pop("files")
    assert ours.pop("files") == {k: v for k, v in keras_files.items()
                                 if k not in unvalidated}
    assert set(keras_files) - set(unvalidated)  # some validated epoch was saved
    assert ours == theirs


RLROP_KWARGS = [
    dict(patience=0),
    dict(patience=1, factor=0.5),
    dict(patience=2, factor=0.25, cooldown=1),
    dict(patience=1, factor=0.5, cooldown=2, min_lr=0.125),
    dict(patience=0, factor=0.5, cooldown=3),
    dict(patience=1, factor=0.5, min_delta=0.125),
    dict(patience=1, factor=0.5, min_delta=0.0),
    dict(patience=2, factor=0.0, min_lr=0.0625),
]


@pytest.mark.parametrize("kwargs", RLROP_KWARGS, ids=str)
@pytest.mark.parametrize("sequence", SEQUENCES)
@pytest.mark.parametrize("monitor, mode", MONITORS)
def test_reduce_lr_on_plateau_as_keras(keras_metrics, monitor, mode, sequence, kwargs):
    def make(lib):
        return LIBS[lib].ReduceLROnPlateau(monitor=monitor, mode=mode, **kwargs)

    ours, theirs = both(make, epochs_of(monitor, SEQUENCES[sequence]), keras_metrics,
                        ("best", "wait", "cooldown_counter"))
    assert ours == theirs


@pytest.mark.parametrize("kwargs", [dict(), dict(factor=0.1, patience=1, min_lr=0.001),
                                    dict(factor=0.3, patience=0, cooldown=1)], ids=str)
@pytest.mark.parametrize("validate_every", [1, 2])
@pytest.mark.parametrize("monitor", ["val_loss", "loss"])
def test_reduce_lr_on_plateau_long_runs_as_keras(keras_metrics, monitor, validate_every,
                                                 kwargs):
    """Defaults (patience 10, min_delta 1e-4) over a long run, and factors that binary
    floats do not hold: the stand-in's rate is a Python float in both, so the rates
    agree to the bit (a real Keras optimizer would hold them in float32)."""
    values = [1.0 - 0.0625 * min(e, 6) + (0.03125 if e % 5 == 4 else 0.0) for e in range(40)]

    def make(lib):
        return LIBS[lib].ReduceLROnPlateau(monitor=monitor, **kwargs)

    ours, theirs = both(make, epochs_of(monitor, values, validate_every), keras_metrics,
                        ("best", "wait", "cooldown_counter"), lr=0.5)
    assert ours == theirs
    assert ours["lr"] < 0.5, "the rate never changed: the case compares little"


SCHEDULES = {
    "halve": lambda epoch, lr: lr * 0.5,
    "by_epoch_only": lambda epoch: 0.5 / (epoch + 1),
    "float32": lambda epoch, lr: np.float32(lr) * np.float32(0.75),
    "float64_steps": lambda epoch, lr: np.float64(0.25 if epoch >= 2 else lr),
}


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_learning_rate_scheduler_as_keras(keras_metrics, schedule):
    calls = {"cconv": [], "keras": []}

    def make(lib):
        def logged(*args):
            calls[lib].append(plain(args))
            return SCHEDULES[schedule](*args)
        return LIBS[lib].LearningRateScheduler(logged)

    ours, theirs = both(make, epochs_of("loss", SEQUENCES["zigzag"]), keras_metrics, ())
    assert ours == theirs
    assert calls["cconv"] == calls["keras"]
    assert [logs["learning_rate"] for logs, _, _ in ours["seen"]] != [1.0] * 12


@pytest.mark.parametrize("value", [1, "0.5", None, np.int64(2)])
def test_learning_rate_scheduler_refuses_what_keras_refuses(keras_metrics, value):
    for lib in ("cconv", "keras"):
        cb = LIBS[lib].LearningRateScheduler(lambda epoch, lr: value)
        with pytest.raises(ValueError, match="float"):
            drive(lib, cb, epochs_of("loss", [1.0]), StandIn(keras_metrics))


@pytest.mark.parametrize("monitor", ["val_f1", "f1"])
@pytest.mark.parametrize("name", ["EarlyStopping", "ReduceLROnPlateau", "ModelCheckpoint"])
def test_auto_mode_on_an_unknown_metric_raises_as_keras(tmp_path, keras_metrics, name,
                                                        monitor):
    for lib in ("cconv", "keras"):
        kwargs = dict(filepath=str(tmp_path / "m.keras"), save_best_only=True,
                      save_weights_only=False) if name == "ModelCheckpoint" else {}
        cb = getattr(LIBS[lib], name)(monitor=monitor, **kwargs)
        logs = [{"loss": 1.0, monitor: 0.5}, {"loss": 1.0, monitor: 0.25}]
        with pytest.raises(ValueError, match="mode='max'"):
            drive(lib, cb, logs, StandIn(keras_metrics))


# ---- CSVLogger: the same bytes on disk after every hook ----

CSV_RUNS = {
    "validated": [{"loss": 0.5, "accuracy": 0.25, "val_loss": 0.75, "val_accuracy": 0.125},
                  {"loss": 1 / 3, "accuracy": 0.1, "val_loss": 2e-10, "val_accuracy": 1.0}],
    "not_validated": [{"loss": 0.5, "accuracy": 0.25}, {"loss": 0.1, "accuracy": 0.2},
                      {"loss": 0.3, "accuracy": 0.4}],
    "validation_freq_2": [{"loss": 0.5, "accuracy": 0.25},
                          {"loss": 0.1, "accuracy": 0.2, "val_loss": 7.0,
                           "val_accuracy": 0.5},
                          {"loss": 0.3, "accuracy": 0.4}],
    "odd_values": [{"loss": NAN, "learning_rate": 0.001, "val_loss": math.inf,
                    "note": "a,b"},
                   {"loss": -0.0, "learning_rate": 1e-300, "val_loss": 3},
                   {"loss": 1e16, "note": 'say "x"', "val_loss": np.float32(0.1)}],
}
PRIORS = {"missing": None, "empty": b"", "blank_first_line": b"\n",
          "keras_table": b"epoch,accuracy,loss\r\n0,0.5,1.0\r\n",
          "other_columns": b"epoch;loss\n0;1.0\n", "not_a_table": b"garbage\r\nmore\r\n"}


def csv_runs(tmp_path, prior, runs, **kwargs):
    """Each library's CSVLogger over consecutive trainings (one logger, as a user who
    calls fit again) on a file holding `prior` first; the file's bytes after each hook."""
    out = []
    for lib in ("cconv", "keras"):
        path = tmp_path / f"{lib}.csv"
        if prior is not None:
            path.write_bytes(prior)
        logger = LIBS[lib].CSVLogger(str(path), **kwargs)

        def snapshot():
            return path.read_bytes() if path.exists() else None

        out.append([drive(lib, logger, run, StandIn(None), snapshot=snapshot)[1]
                    for run in runs])
    return out


@pytest.mark.parametrize("separator", [",", "\t"])
@pytest.mark.parametrize("append", [False, True])
@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("run", CSV_RUNS)
def test_csv_logger_writes_keras_bytes(tmp_path, run, prior, append, separator):
    ours, theirs = csv_runs(tmp_path, PRIORS[prior], [CSV_RUNS[run], CSV_RUNS[run][:1]],
                            separator=separator, append=append)
    assert ours == theirs
    if append and PRIORS[prior]:  # the prior content is kept, in front
        assert ours[-1][-1].startswith(PRIORS[prior])


def test_csv_logger_ends_an_unterminated_file_where_keras_glues(tmp_path):
    """A file whose last line has no line end: Keras writes its first row onto that line;
    cconv ends the line first. Everything else is the same."""
    prior = b"epoch,loss\r\n0,1.0"
    ours, theirs = csv_runs(tmp_path, prior, [CSV_RUNS["not_validated"]], append=True)
    glued = [s.replace(prior, prior + b"\r\n", 1) for s in theirs[0]]
    assert ours[0] == glued
    assert ours[0][-1].startswith(prior + b"\r\n0,0.25,0.5,NA,NA\r\n")


VERBOSE = [
    ("EarlyStopping", dict(patience=1, restore_best_weights=True)),
    ("ReduceLROnPlateau", dict(patience=1, factor=0.5)),
    ("ModelCheckpoint", dict(save_best_only=True, save_weights_only=False)),
    ("ModelCheckpoint", dict(save_weights_only=False, save_freq=5)),
    ("LearningRateScheduler", dict(schedule=lambda epoch, lr: lr / 2)),
]


@pytest.mark.parametrize("name, kwargs", VERBOSE, ids=str)
def test_verbose_messages_as_keras(tmp_path, capsys, keras_metrics, name, kwargs):
    printed = []
    for lib in ("cconv", "keras"):
        if name == "ModelCheckpoint":
            kwargs = dict(kwargs, filepath=str(tmp_path / "{epoch}.keras"))
        cb = getattr(LIBS[lib], name)(verbose=1, **kwargs)
        drive(lib, cb, epochs_of("val_loss", SEQUENCES["zigzag"]), StandIn(keras_metrics),
              batches=3, batch_logs=lambda epoch, batch: {"loss": 1.0})
        printed.append(capsys.readouterr().out)
    assert printed[0] == printed[1]
    assert printed[0].count("Epoch ") >= 1


@pytest.mark.parametrize("name, kwargs", [
    ("ReduceLROnPlateau", dict(monitor="loss", factor=0.3, patience=0, min_lr=1e-4)),
    ("LearningRateScheduler", dict(schedule=lambda epoch, lr: lr * 0.9 if epoch else 0.05)),
])
def test_rates_of_real_models_as_keras(name, kwargs):
    """On real models: Keras's SGD holds its rate in a float32 variable, cconv's in a
    Python float, so the rates agree to float32's rounding, one per step (Keras compares
    min_lr in float32 for that reason)."""
    rates = []
    for lib in ("cconv", "keras"):
        if lib == "keras":
            model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
            model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        else:
            model = cconv.Sequential([cconv.layers.Input((2,)), cconv.layers.Dense(2)])
            model.compile(optimizer=cconv.optimizers.SGD(0.1),
                          loss="sparse_categorical_crossentropy")
        cb = getattr(LIBS[lib], name)(**kwargs)
        seen, _ = drive(lib, cb, epochs_of("loss", SEQUENCES["plateau"] * 2), model)
        rates.append([logs["learning_rate"] for logs, _, _ in seen])
    assert len(set(rates[0])) > 5
    np.testing.assert_allclose(rates[0], rates[1], rtol=2e-7 * len(rates[0]))
    assert rates[0] != rates[1]  # the float32 rounding is there to see
