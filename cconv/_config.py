"""Thread count for the kernels, and a report of how this build was made."""
import os
import platform
import sys
import threading
import time

try:
    import resource
except ImportError:  # not on POSIX
    resource = None

import numpy as np

from cconv import _kernels
from cconv._kernels import _config, _levels

_num_threads = None
MAX_THREADS = 1024
# Settings of the OpenMP runtime that mean someone chose how its threads wait or how
# many there are: then the thread count never adapts (see Governor). Read once, at
# import, as the runtime reads them when it loads.
USER_SETTINGS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
_USER_ENV = {k: os.environ[k] for k in USER_SETTINGS if k in os.environ}


def _visible_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _env_threads():
    env = _USER_ENV.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return min(int(env), MAX_THREADS)
    return None


_ENV_THREADS = _env_threads()


class Governor:
    """The thread count when nobody chose one: every visible core while the kernels run
    unhindered, fewer while other processes hold cores.

    Each step (a training batch, an inference chunk) is timed, and read in windows of
    at least WINDOW seconds. OpenMP's threads spin while they wait (the runtime's
    default), so on a quiet machine t threads burn about t seconds of CPU per second.
    When the scheduler parks one of them to run another process, the others wait for it
    at every barrier: the CPU time falls short of LOW x t per second, and the process
    counts involuntary context switches. Both at once, in two windows in a row, and the
    count drops to what the process got (a shortfall alone is a thread asleep between
    parallel regions). From PROBE_FIRST seconds on, it tries one more thread for a
    window and keeps it if neither shows; each try that fails doubles the wait, up to
    PROBE_MAX. Results never depend on the count, so switching costs only time."""

    WINDOW = 0.004           # s of step wall time per reading
    LOW = 0.8                # CPU time / (threads x wall time) that counts as held up
    PROBE_FIRST, PROBE_MAX = 0.05, 0.5  # s between tries of one more thread

    def __init__(self, count_cores):
        self.count_cores = count_cores  # the affinity may change: asked at each reading
        self.cores = self.threads = count_cores()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._wall = self._cpu = 0.0
        self._preempted = 0
        self._strikes = 0
        self._probing = False
        self._interval = self.PROBE_FIRST
        self._next_probe = 0.0

    def __enter__(self):
        with self._lock:
            self._in_flight += 1
            self._start = (time.perf_counter(), time.process_time(), _preemptions()) \
                if self._in_flight == 1 else None
        return self

    def __exit__(self, *exc):
        wall_end, cpu_end, preempted = time.perf_counter(), time.process_time(), _preemptions()
        with self._lock:
            self._in_flight -= 1
            start, self._start = self._start, None
            # Steps of two Python threads at once share the process's CPU time: no reading.
            if start is None or self._in_flight:
                return False
            self._wall += wall_end - start[0]
            self._cpu += cpu_end - start[1]
            self._preempted += preempted - start[2]
            if self._wall >= self.WINDOW:
                self._read(wall_end)
        return False

    def _read(self, now):
        self.cores = self.count_cores()
        self.threads = min(self.threads, self.cores)
        held_up = self._cpu < self.LOW * self.threads * self._wall and self._preempted > 0
        got = max(1, round(self._cpu / self._wall))
        self._wall = self._cpu = 0.0
        self._preempted = 0
        if self._probing:  # one reading decides a try
            self._probing = False
            if held_up:
                self.threads -= 1
                self._interval = min(2 * self._interval, self.PROBE_MAX)
            else:
                self._interval = self.PROBE_FIRST
            self._next_probe = now + self._interval
            return
        self._strikes = self._strikes + 1 if held_up and self.threads > 1 else 0
        if self._strikes >= 2:
            self._strikes = 0
            self.threads = max(1, min(self.threads - 1, got))
            self._next_probe = now + self._interval
        elif self.threads < self.cores and now >= self._next_probe:
            self.threads += 1
            self._probing = True


def _preemptions():
    """How many times the scheduler has taken a core from this process's threads to run
    something else (involuntary context switches); 0 where that is not counted."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw if resource else 0


_governor = None


def _forget_governor():
    global _governor
    _governor = None  # a forked child starts afresh, its lock free and its readings its own


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_governor)


def governor():
    """The Governor to time steps with (a context manager), or a no-op one when the
    thread count is someone's choice."""
    global _governor
    if _num_threads is not None or _USER_ENV:
        return _FIXED
    if _governor is None:
        _governor = Governor(_visible_cores)
    return _governor


class _Fixed:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_FIXED = _Fixed()


def set_num_threads(n):
    """Set how many OpenMP threads the kernels use. Results do not depend on it.
    None goes back to the default: the visible cores, fewer while other processes take
    them (unless $OMP_NUM_THREADS or the runtime's wait settings say otherwise)."""
    global _num_threads
    if n is None:
        _num_threads = None
        return
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"set_num_threads: n must be an int or None, got {type(n).__name__}")
    if not 1 <= n <= MAX_THREADS:  # libgomp aborts the process when it cannot make them
        raise ValueError(f"set_num_threads: n must be in [1, {MAX_THREADS}], got {n}")
    _num_threads = int(n)


def get_num_threads():
    """Threads the kernels use: set_num_threads(), else $OMP_NUM_THREADS, else the
    visible cores, fewer while other processes hold some (see Governor)."""
    if _num_threads is not None:
        return _num_threads
    if _ENV_THREADS is not None:
        return _ENV_THREADS
    gov = governor()
    return gov.threads if gov is not _FIXED else _visible_cores()


def _threads_line():
    if _num_threads is not None:
        why = "set_num_threads"
    elif _USER_ENV:
        why = "fixed: " + ", ".join(f"{k}={v}" for k, v in _USER_ENV.items())
    else:
        why = "adapting: fewer while other processes hold cores"
    return f"{get_num_threads()} ({why}; cores visible: {_visible_cores()})"


def cpu_capability():
    """The CPU level whose kernels are in use: 'default', 'avx2' or 'avx512' on x86-64
    ('default' elsewhere). The best one the CPU supports, unless $CCONV_CPU_CAPABILITY
    asks for a lower one."""
    return _kernels.LEVEL


def _cpu_line():
    forced = _levels.requested().strip()
    why = f"{_levels.ENV}={forced}" if forced else "the best built level this CPU supports"
    return (f"{cpu_capability()} ({why}; CPU supports: {', '.join(_levels.supported())}; "
            f"built: {', '.join(_kernels.BUILT)})")


def _blas_info():
    try:
        cfg = np.show_config(mode="dicts")
    except TypeError:  # numpy < 1.26 has no dict mode
        return "unknown"
    blas = cfg.get("Build Dependencies", {}).get("blas", {})
    name = blas.get("name", "unknown")
    version = blas.get("version", "")
    return f"{name} {version}".strip()


def show_config(file=None):
    """Print the version, the CPU level, OpenMP, threads, numpy and its BLAS."""
    from cconv._version import __version__

    file = file or sys.stdout
    lines = [
        f"cconv {__version__}",
        f"  python:       {platform.python_version()} ({sys.executable})",
        f"  cpu level:    {_cpu_line()}",
        f"  openmp:       {'yes' if _config.openmp_enabled() else 'NO (kernels run serially)'}",
        f"  threads:      {_threads_line()}",
        f"  numpy:        {np.__version__}",
        f"  numpy blas:   {_blas_info()}",
        f"  OPENBLAS_CORETYPE: {os.environ.get('OPENBLAS_CORETYPE', '(unset)')}",
        "  blas use:     none on the training path (numpy's BLAS threads would compete "
        "with OpenMP's)",
    ]
    print("\n".join(lines), file=file)

