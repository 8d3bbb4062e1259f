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


class ProgbarLogger(Callback):
    """Keras-style progress: verbose=1 redraws a bar after each batch, verbose=2 prints
    one line per epoch."""

    def __init__(self, verbose=1, stream=None):
        super().__init__()
        self.verbose = verbose
        self.stream = stream or sys.stdout

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()
        if self.verbose:
            print(f"Epoch {epoch + 1}/{self.params.get('epochs', '?')}", file=self.stream)

    def on_train_batch_end(self, batch, logs=None):
        if self.verbose != 1:
            return
        steps = self.params.get("steps", 0)
        done = batch + 1
        width = 30
        filled = int(width * done / steps) if steps else width
        bar = "=" * max(filled - 1, 0) + (">" if filled < width else "=") + "." * (width - filled)
        elapsed = time.perf_counter() - self.epoch_start
        eta = elapsed / done * (steps - done)
        text = f"\r{done}/{steps} [{bar}] - ETA: {_format_seconds(eta)} - {_format_logs(logs or {})}"
        self.stream.write(text)
        self.stream.flush()

    def on_epoch_end(self, epoch, logs=None):
        if not self.verbose:
            return
        elapsed = time.perf_counter() - self.epoch_start
        steps = self.params.get("steps", 0)
        per_step = elapsed / steps * 1000 if steps else 0.0
        line = (f"{steps}/{steps} - {_format_seconds(elapsed)} - {per_step:.0f}ms/step - "
                f"{_format_logs(logs or {})}")
        if self.verbose == 1:
            self.stream.write("\r" + line + "\n")
        else:
            print(line, file=self.stream)
        self.stream.flush()


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


class _Monitor(Callback):
    """Shared by EarlyStopping and ModelCheckpoint: which log value to watch, and whether
    lower or higher is better ("auto": lower for losses, higher for accuracies)."""

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
        """Whether value beats reference (None: nothing to beat) by more than delta."""
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
        if isinstance(min_delta, bool) or not isinstance(min_delta, numbers.Real) \
                or not math.isfinite(min_delta):
            raise ValueError(f"EarlyStopping: min_delta: expected a finite number, got "
                             f"{min_delta!r}")
        if baseline is not None and (isinstance(baseline, bool)
                                     or not isinstance(baseline, numbers.Real)):
            raise ValueError(f"EarlyStopping: baseline: expected a number or None, got "
                             f"{baseline!r}")
        self.min_delta = abs(float(min_delta))
        self.patience = utils._non_negative_int("EarlyStopping: patience", patience)
        self.start_from_epoch = utils._non_negative_int("EarlyStopping: start_from_epoch",
                                                        start_from_epoch)
        self.verbose = verbose
        self.baseline = None if baseline is None else float(baseline)
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


class ModelCheckpoint(_Monitor):
    """Save the weights after every epoch, or only when `monitor` improves
    (save_best_only=True), with model.save_weights: an .npz file written atomically.
    With save_weights_only=False, the whole model with model.save: a .keras file, as
    Keras's default (cconv's default stays weights only).

    filepath may hold format fields filled from the epoch (counted from 1) and the
    epoch's logs, e.g. "ckpt-{epoch:02d}-{val_loss:.4f}.npz"; its folder is created if
    needed."""

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False,
                 save_weights_only=True, mode="auto"):
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
        self.verbose = verbose
        self.save_best_only = bool(save_best_only)
        self.save_weights_only = bool(save_weights_only)
        # kept across fit() calls, as in Keras: a later fit never overwrites a better file
        self.best = None

    def on_train_begin(self, logs=None):
        if self.save_best_only:
            super().on_train_begin(logs)
        keys = self.params.get("metrics")
        if keys is not None:  # a bad {field} fails now, not after the first epoch
            try:
                self.filepath.format(epoch=1, **{k: 0.0 for k in keys})
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(f"ModelCheckpoint: filepath {self.filepath!r} cannot be "
                                 f"formatted ({type(exc).__name__}: {exc}); fields "
                                 f"available: epoch, {', '.join(keys)}") from None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        current = self._current(logs) if self.save_best_only else None
        if self.save_best_only and current is None:
            return  # no validation this epoch: nothing to compare, nothing to save
        try:
            path = self.filepath.format(epoch=epoch + 1, **logs)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"ModelCheckpoint: filepath {self.filepath!r} cannot be "
                             f"formatted ({type(exc).__name__}: {exc}); fields available: "
                             f"epoch, {', '.join(logs)}") from None
        if self.save_best_only:
            if not self._better(current, self.best):
                if self.verbose:
                    print(f"Epoch {epoch + 1}: {self.monitor} did not improve from "
                          f"{self.best:.5f}")
                return
            if self.verbose:
                print(f"Epoch {epoch + 1}: {self.monitor} improved from {self.best} to "
                      f"{current:.5f}, saving model to {path}")
            self.best = current
        elif self.verbose:
            print(f"Epoch {epoch + 1}: saving model to {path}")
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)


class CSVLogger(Callback):
    """Write each epoch's logs as a row of a CSV file: a header "epoch,<sorted log
    names>", then one row per epoch (epochs counted from 0, as Keras does).

    The whole file is rewritten atomically after every epoch, so it is always a complete
    table. With append=True, rows go after those already in the file (its header is
    kept)."""

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
        self._text = ""
        self.keys = None
        if self.append and os.path.exists(self.filename):
            with open(self.filename, newline="") as f:
                self._text = f.read()
            if self._text and not self._text.endswith("\n"):
                self._text += "\n"
            if self._text:
                header = next(csv.reader([self._text.splitlines()[0]],
                                         delimiter=self.separator))
                self.keys = header[1:]

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        buf = io.StringIO()
        writer = csv.writer(buf, delimiter=self.separator, lineterminator="\n")
        if self.keys is None:
            self.keys = sorted(logs)
            writer.writerow(["epoch"] + self.keys)
        writer.writerow([epoch] + [repr(float(logs[k])) if k in logs else "NA"
                                   for k in self.keys])
        self._text += buf.getvalue()
        with atomic_write(self.filename, suffix=".csv.tmp") as f:
            f.write(self._text.encode("utf-8"))
