"""Thread count for the kernels, and a report of how this build was made."""
import os
import platform
import sys

import numpy as np

from cconv import _kernels
from cconv._kernels import _config, _levels

_num_threads = None
MAX_THREADS = 1024


def _visible_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _default_threads():
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return min(int(env), MAX_THREADS)
    return _visible_cores()


def set_num_threads(n):
    """Set how many OpenMP threads the kernels use. Results do not depend on it."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"set_num_threads: n must be an int, got {type(n).__name__}")
    if not 1 <= n <= MAX_THREADS:  # libgomp aborts the process when it cannot make them
        raise ValueError(f"set_num_threads: n must be in [1, {MAX_THREADS}], got {n}")
    _num_threads = int(n)


def get_num_threads():
    """Threads the kernels use: set_num_threads(), else $OMP_NUM_THREADS, else the cores."""
    if _num_threads is None:
        return _default_threads()
    return _num_threads


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
    from cconv import __version__

    file = file or sys.stdout
    lines = [
        f"cconv {__version__}",
        f"  python:       {platform.python_version()} ({sys.executable})",
        f"  cpu level:    {_cpu_line()}",
        f"  openmp:       {'yes' if _config.openmp_enabled() else 'NO (kernels run serially)'}",
        f"  threads:      {get_num_threads()} (cores visible: {_visible_cores()})",
        f"  numpy:        {np.__version__}",
        f"  numpy blas:   {_blas_info()}",
        f"  OPENBLAS_CORETYPE: {os.environ.get('OPENBLAS_CORETYPE', '(unset)')}",
        "  blas use:     none on the training path (numpy's BLAS threads would compete "
        "with OpenMP's)",
    ]
    print("\n".join(lines), file=file)

