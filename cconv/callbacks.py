"""Callbacks with Keras names and hooks. fit() calls, in order: on_train_begin, then per
epoch on_epoch_begin, on_train_batch_begin/end per batch, on_epoch_end(epoch, logs), and
finally on_train_end. Setting model.stop_training = True ends training after the epoch."""
import sys
import time


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
