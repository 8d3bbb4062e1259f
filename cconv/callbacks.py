"""Callbacks with Keras names and hooks. fit() calls, in order: on_train_begin, then per
epoch on_epoch_begin, on_train_batch_begin/end per batch, on_epoch_end(epoch, logs), and
finally on_train_end. Setting model.stop_training = True ends the epoch after the
current batch (its on_epoch_end still runs, with that epoch's partial logs) and training
with it.
evaluate() and predict() call the on_test_* and on_predict_* hooks of the callbacks
passed to them."""
import csv
import io
import math
import numbers
import os
import sys
import time

import numpy as np

from cconv import metrics, utils
from cconv._io import atomic_write


class Callback:
    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_batch_begin(self, batch, logs=None):
        pass

    def on_train_batch_end(self, batch, logs=None):
        pass

    # evaluate() and predict() call these, with Keras's names
    def on_test_begin(self, logs=None):
        pass

    def on_test_end(self, logs=None):
        pass

    def on_test_batch_begin(self, batch, logs=None):
        pass

    def on_test_batch_end(self, batch, logs=None):
        pass

    def on_predict_begin(self, logs=None):
        pass

    def on_predict_end(self, logs=None):
        pass

    def on_predict_batch_begin(self, batch, logs=None):
        pass

    def on_predict_batch_end(self, batch, logs=None):
        pass


class History(Callback):
    """Records each epoch's logs: history.history["loss"][epoch], and history.epoch."""

    def __init__(self):
        super().__init__()
        self.history = {}
        self.epoch = []

    def on_train_begin(self, logs=None):
        self.history = {}
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)


def _format_logs(logs):
    return " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())


def _format_seconds(s):
    return f"{s:.0f}s" if s >= 10 else f"{s:.2f}s" if s < 1 else f"{s:.1f}s"


def _live(stream):
    """Whether a line redrawn in place (a carriage return, then the new text) shows as
    one live line on `stream`: on a terminal, and on the output stream of a Jupyter or
    IPython kernel, which is no tty but whose front ends honour carriage returns (as
    Keras's Progbar, which looks for ipykernel). Not in a pipe, a file or a captured
    cell, where every redraw would stay."""
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        return True
    # A kernel has loaded ipykernel; elsewhere, asking must not import it
    iostream = sys.modules.get("ipykernel.iostream")
    return iostream is not None and isinstance(stream, iostream.OutStream)


class ProgbarLogger(Callback):
    """Keras-style progress for fit, evaluate and predict. verbose=1 redraws a bar in
    place as batches end, then prints the epoch's (or the evaluation's, or the
    prediction's) line; verbose=2 prints that line alone."""

    interval = 0.05  # seconds between redraws, as Keras's Progbar: a notebook's output
    # keeps every redraw sent to it, and a flush per fast batch would slow the loop

    def __init__(self, verbose=1, stream=None):
        super().__init__()
        self.verbose = verbose
        self.stream = stream or sys.stdout

    def _begin(self):
        self._started = time.perf_counter()
        self._drawn_at = None
        self._drawn_width = 0

    def _bar(self, batch, logs):
        if self.verbose != 1:
            return
        now = time.perf_counter()
        if self._drawn_at is not None and now - self._drawn_at < self.interval:
            return
        steps = self.params.get("steps", 0)
        done = batch + 1
        width = 30
        filled = int(width * done / steps) if steps else width
        bar = "=" * max(filled - 1, 0) + (">" if filled < width else "=") + "." * (width - filled)
        eta = (now - self._started) / done * (steps - done)
        text = " - ".join(filter(None, [f"{done}/{steps} [{bar}]",
                                        f"ETA: {_format_seconds(eta)}",
                                        _format_logs(logs or {})]))
        self._draw(text)
        self.stream.flush()
        self._drawn_at = now

    def _draw(self, text):
        """Over the line drawn last: padded to its width, so no tail of it is left."""
        self.stream.write("\r" + text.ljust(self._drawn_width))
        self._drawn_width = len(text)

    def _end(self, logs):
        if not self.verbose:
            return
        elapsed = time.perf_counter() - self._started
        steps = self.params.get("steps", 0)
        per_step = elapsed / steps * 1000 if steps else 0.0
        line = " - ".join(filter(None, [f"{steps}/{steps}", _format_seconds(elapsed),
                                        f"{per_step:.0f}ms/step", _format_logs(logs or {})]))
        if self.verbose == 1:
            self._draw(line)
            self.stream.write("\n")
        else:
            print(line, file=self.stream)
        self.stream.flush()

    def on_epoch_begin(self, epoch, logs=None):
        self._begin()
        if self.verbose:
            print(f"Epoch {epoch + 1}/{self.params.get('epochs', '?')}", file=self.stream)

    def on_train_batch_end(self, batch, logs=None):
        self._bar(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._end(logs)

    def on_test_begin(self, logs=None):
        self._begin()

    def on_test_batch_end(self, batch, logs=None):
        self._bar(batch, logs)

    def on_test_end(self, logs=None):
        self._end(logs)

    def on_predict_begin(self, logs=None):
        self._begin()

    def on_predict_batch_end(self, batch, logs=None):
        self._bar(batch, None)  # its logs hold the batch's outputs, not values to show

    def on_predict_end(self, logs=None):
        self._end(None)


_MODES = ("auto", "min", "max")


def _check_log_key(owner, name, value, params):
    """Fail before the first batch when fit() announced its log keys and `value` is not
    one of them."""
    available = params.get("metrics")
    if available is not None and value not in available:
        raise ValueError(f"{owner}: {name}={value!r} is not produced by this fit; "
                         f"available: {', '.join(available)}"
                         + ("" if any(k.startswith("val_") for k in available) else
                            " (val_* values need validation_data or validation_split)"))


def _finite(owner, name, value, optional=False):
    """value as a float, or a ValueError naming the argument (None allowed if optional)."""
    if optional and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value):
        raise ValueError(f"{owner}: {name}: expected a finite number"
                         f"{' or None' if optional else ''}, got {value!r}")
    return float(value)


class _Monitor(Callback):
    """Shared by EarlyStopping, ModelCheckpoint and ReduceLROnPlateau: which log value to
    watch, and whether lower or higher is better ("auto": lower for losses, higher for
    accuracies)."""

    def __init__(self, owner, monitor, mode):
        super().__init__()
        if not isinstance(monitor, str) or not monitor:
            raise TypeError(f"{owner}: monitor: expected a log name such as 'val_loss', "
                            f"got {monitor!r}")
        if mode not in _MODES:
            raise ValueError(f"{owner}: mode: expected one of {_MODES}, got {mode!r}")
        self._owner = owner
        self.monitor = monitor
        self.mode = mode

    def _lower_is_better(self):
        if self.mode != "auto":
            return self.mode == "min"
        base = self.monitor[4:] if self.monitor.startswith("val_") else self.monitor
        higher = metrics.higher_is_better(base)
        if higher is not None:
            return not higher
        raise ValueError(f"{self._owner}: cannot tell whether {self.monitor!r} should go "
                         f"up or down; pass mode='min' or mode='max'")

    def _better(self, value, reference, delta=0.0):
        """Whether value beats reference (None: nothing to beat) by more than delta. As
        in Keras, a NaN never beats anything, and a NaN best is never beaten."""
        if reference is None:
            return True
        if self._lower_is_better():
            return value + delta < reference
        return value - delta > reference

    def on_train_begin(self, logs=None):
        # a misspelled name is reported with the names available before the direction
        _check_log_key(self._owner, "monitor", self.monitor, self.params)
        self._lower_is_better()

    def _current(self, logs):
        """The monitored value, or None on an epoch without validation (validation_freq
        > 1) when it watches a val_* value: as in Keras, that epoch is skipped."""
        logs = logs or {}
        if self.monitor.startswith("val_") and not any(k.startswith("val_") for k in logs):
            return None
        if self.monitor not in logs:
            raise ValueError(f"{self._owner}: monitor={self.monitor!r} is not in this "
                             f"epoch's logs; available: {', '.join(logs) or 'none'}")
        return float(logs[self.monitor])


class EarlyStopping(_Monitor):
    """Stop training when `monitor` has not improved for `patience` epochs (Keras's).

    An epoch improves when its value beats the best so far by more than `min_delta`
    (lower is better for losses, higher for accuracies; mode="min"/"max" to say so).
    With `baseline`, the patience counter only restarts on values that also beat the
    baseline. With restore_best_weights=True, the weights of the best epoch are put back
    when training ends, whether or not it stopped early. The first `start_from_epoch`
    epochs are not watched."""

    def __init__(self, monitor="val_loss", min_delta=0, patience=0, verbose=0, mode="auto",
                 baseline=None, restore_best_weights=False, start_from_epoch=0):
        super().__init__("EarlyStopping", monitor, mode)
        self.min_delta = abs(_finite("EarlyStopping", "min_delta", min_delta))
        self.baseline = _finite("EarlyStopping", "baseline", baseline, optional=True)
        self.patience = utils._non_negative_int("EarlyStopping: patience", patience)
        self.start_from_epoch = utils._non_negative_int("EarlyStopping: start_from_epoch",
                                                        start_from_epoch)
        self.verbose = verbose
        self.restore_best_weights = bool(restore_best_weights)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_epoch = 0
        self.best_weights = None

    def on_epoch_end(self, epoch, logs=None):
        current = self._current(logs)
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            # until something improves, the first watched epoch is the best one
            self.best_weights = self.model.get_weights()
            self.best_epoch = epoch
        self.wait += 1
        if self._better(current, self.best, self.min_delta):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._better(current, self.baseline, self.min_delta):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose:
                print(f"Restoring model weights from the end of the best epoch: "
                      f"{self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)


# Messages are Keras's, to the character; those of ModelCheckpoint, ReduceLROnPlateau and
# LearningRateScheduler start with a line end, which ends a progress bar's line.


class ModelCheckpoint(_Monitor):
    """Save the weights after every epoch, or only when `monitor` improves
    (save_best_only=True), with model.save_weights: an .npz file written atomically.
    With save_weights_only=False, the whole model with model.save: a .keras file, as
    Keras's default (cconv's default stays weights only).

    save_freq="epoch" saves at the end of each epoch; an int N saves after every N
    training batches, counted across epochs and fits (as Keras), comparing the batch's
    logs (loss, accuracy) when save_best_only. `best` starts at initial_value_threshold
    (None: the first value is the best) and is kept across fit() calls, as in Keras: a
    later fit never overwrites a better file.

    filepath may hold format fields filled from the epoch (counted from 1), the epoch's
    logs and, with save_freq=N, the batch (counted from 1), e.g.
    "ckpt-{epoch:02d}-{val_loss:.4f}.npz"; its folder is created if needed.

    Unlike Keras, save_best_only skips an epoch without validation (validation_freq > 1)
    when it watches a val_* value (Keras saves it, having nothing to compare), so that
    the file kept is always the best validated one."""

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False,
                 save_weights_only=True, mode="auto", save_freq="epoch",
                 initial_value_threshold=None):
        super().__init__("ModelCheckpoint", monitor, mode)
        try:
            self.filepath = os.fspath(filepath)
        except TypeError:
            raise TypeError(f"ModelCheckpoint: filepath: expected a str or path, got "
                            f"{type(filepath).__name__}") from None
        if not self.filepath:
            raise ValueError("ModelCheckpoint: filepath: expected a file name, got ''")
        if not save_weights_only and not self.filepath.endswith(".keras"):
            raise ValueError(f"ModelCheckpoint: save_weights_only=False saves the whole "
                             f"model, to a .keras file; filepath {self.filepath!r} does "
                             f"not end in .keras")
        if not (isinstance(save_freq, str) and save_freq == "epoch"
                or isinstance(save_freq, numbers.Integral)
                and not isinstance(save_freq, bool) and save_freq >= 1):
            raise ValueError(f"ModelCheckpoint: save_freq: expected 'epoch' or a number "
                             f"of batches (an int >= 1), got {save_freq!r}")
        if save_best_only and save_freq != "epoch" and monitor.startswith("val_"):
            raise ValueError(f"ModelCheckpoint: save_best_only with save_freq={save_freq} "
                             f"compares batch logs, which hold no val_* values; "
                             f"monitor={monitor!r} would never be seen: monitor 'loss' "
                             f"(or a metric), or save once per epoch (save_freq='epoch')")
        self.verbose = verbose
        self.save_best_only = bool(save_best_only)
        self.save_weights_only = bool(save_weights_only)
        self.save_freq = save_freq if save_freq == "epoch" else int(save_freq)
        self.best = _finite("ModelCheckpoint", "initial_value_threshold",
                            initial_value_threshold, optional=True)
        self._batches_seen_since_last_saving = 0
        self._last_batch_seen = None
        self._current_epoch = 0

    def _by_batch(self):
        return self.save_freq != "epoch"

    def on_train_begin(self, logs=None):
        if self.save_best_only:
            super().on_train_begin(logs)
        keys = self.params.get("metrics")
        if keys is not None:  # a bad {field} fails now, not after the first save
            if self._by_batch():
                keys = [k for k in keys if not k.startswith("val_")]
            self._path(0, 0 if self._by_batch() else None, dict.fromkeys(keys, 0.0))

    def _path(self, epoch, batch, logs):
        """filepath filled in as Keras does: epoch and batch counted from 1; a log named
        "batch" wins over the batch counter."""
        fields = dict(logs)
        if batch is not None:
            fields.setdefault("batch", batch + 1)
        try:
            return self.filepath.format(epoch=epoch + 1, **fields)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"ModelCheckpoint: filepath {self.filepath!r} cannot be "
                             f"formatted ({type(exc).__name__}: {exc}); fields available: "
                             f"{', '.join(['epoch', *fields])}") from None

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if not self._by_batch():
            return
        # batch numbers restart each epoch: a number not above the last one seen starts
        # a new count of batch + 1
        last = self._last_batch_seen
        self._batches_seen_since_last_saving += (batch + 1 if last is None or batch <= last
                                                 else batch - last)
        self._last_batch_seen = batch
        if self._batches_seen_since_last_saving >= self.save_freq:
            self._batches_seen_since_last_saving = 0
            self._save(self._current_epoch, batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        if not self._by_batch():
            self._save(epoch, None, logs)

    def _save(self, epoch, batch, logs):
        logs = logs or {}
        current = self._current(logs) if self.save_best_only else None
        if self.save_best_only and current is None:
            return  # no validation this epoch: nothing to compare, nothing to save
        path = self._path(epoch, batch, logs)
        if self.save_best_only:
            best = "None" if self.best is None else f"{self.best:.5f}"
            if not self._better(current, self.best):
                if self.verbose:
                    print(f"\nEpoch {epoch + 1}: {self.monitor} did not improve from {best}")
                return
            if self.verbose:
                print(f"\nEpoch {epoch + 1}: {self.monitor} improved from {best} to "
                      f"{current:.5f}, saving model to {path}")
            self.best = current
        elif self.verbose:
            print(f"\nEpoch {epoch + 1}: saving model to {path}")
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)
        if self.verbose:
            print(f"\nEpoch {epoch + 1}: finished saving model to {path}")


def _learning_rate(owner, model):
    """The optimizer and its learning rate as a float. An optimizer built on a schedule
    refuses a new learning rate in its own setter, as Keras's does."""
    optimizer = getattr(model, "optimizer", None)
    if not hasattr(optimizer, "learning_rate"):
        raise ValueError(f"{owner}: the model's optimizer ({type(optimizer).__name__}) "
                         f"has no learning_rate attribute; compile the model first")
    return optimizer, float(optimizer.learning_rate)


class ReduceLROnPlateau(_Monitor):
    """Multiply the optimizer's learning rate by `factor` (never below `min_lr`) once
    `monitor` has not improved by more than `min_delta` for `patience` epochs; then wait
    `cooldown` epochs, counting nothing, before watching again (Keras's rules). Each
    epoch's logs get the learning rate the epoch trained with, as "learning_rate".

    Keras compares the learning rate with float32(min_lr), because its optimizers hold
    the rate in float32; cconv's hold a Python float, compared with min_lr itself."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto",
                 min_delta=1e-4, cooldown=0, min_lr=0.0):
        super().__init__("ReduceLROnPlateau", monitor, mode)
        self.factor = _finite("ReduceLROnPlateau", "factor", factor)
        if self.factor >= 1.0:
            raise ValueError(f"ReduceLROnPlateau: factor: expected a number < 1.0 (the new "
                             f"learning rate is lr * factor), got {factor!r}")
        self.min_delta = abs(_finite("ReduceLROnPlateau", "min_delta", min_delta))
        self.min_lr = _finite("ReduceLROnPlateau", "min_lr", min_lr)
        self.patience = utils._non_negative_int("ReduceLROnPlateau: patience", patience)
        self.cooldown = utils._non_negative_int("ReduceLROnPlateau: cooldown", cooldown)
        self.verbose = verbose
        self.best = None
        self.wait = 0
        self.cooldown_counter = 0

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.best = None
        self.wait = 0
        self.cooldown_counter = 0

    def in_cooldown(self):
        return self.cooldown_counter > 0

    def on_epoch_end(self, epoch, logs=None):
        logs = {} if logs is None else logs
        optimizer, lr = _learning_rate("ReduceLROnPlateau", self.model)
        logs["learning_rate"] = lr
        current = self._current(logs)
        if current is None:
            return
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self._better(current, self.best, self.min_delta):
            self.best = current
            self.wait = 0
        elif not self.in_cooldown():  # the last epoch of cooldown already counts
            self.wait += 1
            if self.wait >= self.patience and lr > self.min_lr:
                new_lr = max(lr * self.factor, self.min_lr)
                optimizer.learning_rate = new_lr
                if self.verbose:
                    print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate "
                          f"to {new_lr}.")
                self.cooldown_counter = self.cooldown
                self.wait = 0


class LearningRateScheduler(Callback):
    """Before each epoch, set the optimizer's learning rate to schedule(epoch, lr):
    epoch counted from 0, lr the current rate; a schedule(epoch) of one argument is
    called so when the two-argument call raises a TypeError (Keras's rule). The schedule
    must return a float (a Python, NumPy float32 or float64 one). Each epoch's logs get
    the rate as "learning_rate"."""

    def __init__(self, schedule, verbose=0):
        super().__init__()
        if not callable(schedule):
            raise TypeError(f"LearningRateScheduler: schedule: expected a function of "
                            f"(epoch, lr) or of (epoch), got {type(schedule).__name__}")
        self.schedule = schedule
        self.verbose = verbose

    def on_epoch_begin(self, epoch, logs=None):
        optimizer, lr = _learning_rate("LearningRateScheduler", self.model)
        try:
            new_lr = self.schedule(epoch, lr)
        except TypeError:
            new_lr = self.schedule(epoch)
        if not isinstance(new_lr, (float, np.float32, np.float64)):
            raise ValueError(f"LearningRateScheduler: schedule: expected it to return a "
                             f"float, got {new_lr!r} at epoch {epoch}")
        optimizer.learning_rate = float(new_lr)
        if self.verbose:
            print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to "
                  f"{new_lr}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = _learning_rate("LearningRateScheduler", self.model)[1]


def _csv_cell(value):
    """A log value as Keras writes it: Keras's callbacks receive float(value) when there
    is one; its CSVLogger writes a string as it is and a sequence as "[a, b]"."""
    try:
        return repr(float(value))
    except (TypeError, ValueError):
        pass
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        return str(value)
    return f'"[{", ".join(map(str, value))}]"'


class CSVLogger(Callback):
    """Write each epoch's logs as a row of a CSV file, as Keras's CSVLogger: a header
    "epoch" + the first epoch's log names, sorted (and, when none of them is a val_*
    name, the val_ twin of each, so that a fit validating every few epochs has columns
    for it), then one row per epoch (epochs counted from 0, NA for a missing value),
    lines ending in \\r\\n (Python csv's "excel" dialect).

    The whole file is rewritten atomically at the start of training and after every
    epoch, so it is always a complete table. With append=True, an existing file's bytes
    are kept and rows go after them, with the header only if the file was empty (Keras's
    rule: the columns are this run's, never read back from the file). Unlike Keras, a
    file that does not end with a line end gets one before the first row."""

    def __init__(self, filename, separator=",", append=False):
        super().__init__()
        try:
            self.filename = os.fspath(filename)
        except TypeError:
            raise TypeError(f"CSVLogger: filename: expected a str or path, got "
                            f"{type(filename).__name__}") from None
        if not isinstance(separator, str) or len(separator) != 1:
            raise ValueError(f"CSVLogger: separator: expected one character, got "
                             f"{separator!r}")
        self.separator = separator
        self.append = bool(append)

    def on_train_begin(self, logs=None):
        self._data = b""
        if self.append and os.path.exists(self.filename):
            with open(self.filename, "rb") as f:
                self._data = f.read()
        self._write_header = not self._data
        if self._data and not self._data.endswith(b"\n"):
            self._data += b"\r\n"
        self.keys = None
        self._flush()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        buf = io.StringIO()
        writer = csv.writer(buf, delimiter=self.separator, lineterminator="\r\n")
        if self.keys is None:
            self.keys = sorted(logs)
            if not any(k.startswith("val_") for k in self.keys):
                self.keys += ["val_" + k for k in self.keys]
            if self._write_header:
                writer.writerow(["epoch"] + self.keys)
        writer.writerow([epoch] + [_csv_cell(logs[k]) if k in logs else "NA"
                                   for k in self.keys])
        self._data += buf.getvalue().encode("utf-8")
        self._flush()

    def _flush(self):
        with atomic_write(self.filename, suffix=".csv.tmp") as f:
            f.write(self._data)
