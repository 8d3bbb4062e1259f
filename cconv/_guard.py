"""Who is using a model, across threads.

The rule: one thread trains a model at a time. While it does, another thread's fit,
evaluate, save, compile, set_weights or pickling raises ModelBusyError naming the model
and what runs; the training thread itself (its callbacks) may do any of them. predict
from other threads waits for the weight update in progress, and the next update waits
for the predicts that started: each predict sees one set of weights. set_weights (and
load_weights, EarlyStopping's restore) is such an update. A thread that already reads
(a callback of its predict or evaluate) reads again without waiting, and may update:
its update waits for the other threads' reads only.
"""
import contextlib
import threading


class ModelBusyError(RuntimeError):
    """A model was asked to do something while another thread trains it."""


class ModelGuard:
    def __init__(self):
        self._cond = threading.Condition()
        self._owner = None      # (thread, what) of the thread training the model
        self._depth = 0         # nested claims by the owner (fit from a callback)
        self._readers = 0       # predicts/evaluates/saves reading the weights
        self._updating = False  # an optimizer step is writing them
        self._waiting = 0       # updates waiting for readers to finish
        self._stuck = 0         # of those, updates by threads that read themselves
        self._local = threading.local()  # .depth: this thread's reads in progress

    def check(self, model_name, what):
        """Raise when another thread trains the model."""
        with self._cond:
            self._check(model_name, what)

    def _check(self, model_name, what):
        if self._owner is not None and self._owner[0] is not threading.current_thread():
            thread, running = self._owner
            raise ModelBusyError(
                f"{what}: model {model_name!r} is running {running} in thread "
                f"{thread.name!r}; a model trains in one thread at a time. Wait for it "
                f"to finish, or do this from a callback of that {running}, or work on "
                f"a copy (copy.deepcopy(model)) made before it started")

    @contextlib.contextmanager
    def claim(self, model_name, what):
        """Hold the model for training (fit) in this thread."""
        with self._cond:
            self._check(model_name, what)
            if self._owner is None:
                self._owner = (threading.current_thread(), what)
            self._depth += 1
        try:
            yield
        finally:
            with self._cond:
                self._depth -= 1
                if self._depth == 0:
                    self._owner = None

    @contextlib.contextmanager
    def reading(self, model_name=None, what=None):
        """Read the weights: waits for an update in progress (or queued) to finish.
        With what=..., first refuse if another thread trains the model."""
        with self._cond:
            if what is not None:
                self._check(model_name, what)
            mine = self._owner is not None and self._owner[0] is threading.current_thread()
            # a thread that already reads must not wait: the update it would wait for
            # waits for that thread's read to end
            while not mine and not self._depth_here() and (self._updating or self._waiting):
                self._cond.wait()
            self._readers += 1
            self._local.depth = self._depth_here() + 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._local.depth -= 1
                self._cond.notify_all()

    def _depth_here(self):
        return getattr(self._local, "depth", 0)

    @contextlib.contextmanager
    def updating(self):
        """Write the weights (an optimizer step, set_weights): waits for the other
        threads' readers to finish."""
        with self._cond:
            own = self._depth_here()
            if own and self._stuck:
                raise RuntimeError("two threads update a model's weights from inside "
                                   "their own predict/evaluate (callbacks): each would "
                                   "wait for the other's read to end")
            self._waiting += 1
            self._stuck += bool(own)
            try:
                while self._readers > own or self._updating:
                    self._cond.wait()
            finally:
                self._waiting -= 1
                self._stuck -= bool(own)
            self._updating = True
        try:
            yield
        finally:
            with self._cond:
                self._updating = False
                self._cond.notify_all()
