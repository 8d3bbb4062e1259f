"""This CPU's limits, per cconv CPU level and thread count: the ceiling every benchmark's
GFLOP/s is a percent of.

    python benchmarks/peak.py [--threads 1 2] [--levels avx2,avx512] [--fresh]

Per level the CPU runs, peak_kernels.c is compiled with the system compiler ($CC, else
cc) and that level's flags, read from cconv/_kernels/_levels.py as setup.py reads them.
Per thread count (Python threads, each in the C loop with the GIL released):
  fp32, fp64  GFLOP/s of independent multiply-add chains held in registers, as many
              chains as cover latency x units (8, 12, 16 and 24 tried, the best kept);
              a multiply-add is 2 FLOPs. This is the level's arithmetic peak. Each
              thread's rate is over its own CPU time, and the threads' rates add up (a
              core's units are its own; without SMT siblings): other processes on the
              machine lower it less than they lower a wall-clock rate.
  triad       GB/s of a = b + s * c in float64 over arrays of twice the last-level
              cache each, counted as STREAM counts it (24 bytes an element); over wall
              time, as the threads share the memory: on a busy machine it reads low.
and, not per level (numpy's BLAS picks its own kernels), the practical peak:
  gemm32, gemm64  GFLOP/s of numpy's 2048x2048 matmul on that many BLAS threads.
Each number is the best of --repeats runs of about 0.1 s: a peak, so the best run.

Benchmarks call `measure(level, threads)`. Results are kept in this process and in a json
file ($CCONV_PEAK_CACHE, else ~/.cache/cconv/peak.json), keyed by the CPU's model name
and the C source's hash; a later measure replaces the stored one when one of its numbers is higher.
"""
import argparse
import ctypes
import functools
import hashlib
import json
import os
import platform
import runpy
import shlex
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "peak_kernels.c")
LEVELS = runpy.run_path(os.path.join(os.path.dirname(HERE), "cconv", "_kernels", "_levels.py"))
CHAINS = (8, 12, 16, 24)  # the chain counts peak_kernels.c defines
FIELDS = ("fp32", "fp64", "triad", "gemm32", "gemm64")
UNITS = {"fp32": "GFLOP/s", "fp64": "GFLOP/s", "triad": "GB/s", "gemm32": "GFLOP/s",
         "gemm64": "GFLOP/s"}
GEMM_N = 2048
TRIAD_BYTES = 24  # read b and c, write a: 3 float64 an element
_memo = {}


def _cpuinfo():
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                name, _, value = line.partition(":")
                fields[name.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_name():
    return _cpuinfo().get("model name") or platform.processor() or "unknown CPU"


def cpu_key():
    """What the cache file keys on: the model name alone is not enough (a virtual
    machine's "AMD EPYC" is any of five generations), nor is the model without the
    cores the process may use."""
    info = _cpuinfo()
    model = "/".join(info.get(k, "?") for k in ("cpu family", "model", "stepping"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu_name()} (family/model/stepping {model}; {cores} cores)"


def levels():
    """The cconv levels this CPU runs, lowest first."""
    return LEVELS["supported"]()


def best_level():
    return levels()[-1]


def _source_hash():
    with open(SOURCE, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def _flags(level):
    table = {name: gcc for name, _, gcc, _ in LEVELS["levels"]()}
    if level not in table:
        raise ValueError(f"level: expected one of {list(table)}, got {level!r}")
    return table[level]


@functools.lru_cache(maxsize=None)
def _compile(level):
    """peak_kernels.c built with the level's flags, loaded."""
    if os.name == "nt":
        raise RuntimeError("peak.py compiles with gcc or clang flags: not on Windows")
    with tempfile.TemporaryDirectory(prefix="cconv-peak-") as tmp:
        out = os.path.join(tmp, f"peak_{level}.so")
        cmd = (shlex.split(os.environ.get("CC", "cc")) + ["-O3", "-ffp-contract=fast",
               "-shared", "-fPIC"] + _flags(level) + [SOURCE, "-o", out])
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode:
            raise RuntimeError(f"compiling the peak probe failed: {shlex.join(cmd)}\n"
                               f"{run.stderr}")
        lib = ctypes.CDLL(out)  # loaded, it outlives its file; CDLL releases the GIL
    for dtype in ("f32", "f64"):
        for n in CHAINS:
            fn = getattr(lib, f"fma_{dtype}_{n}")
            fn.argtypes, fn.restype = [ctypes.c_long], ctypes.c_double
    lib.triad.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_double, ctypes.c_long]
    lib.triad.restype = None
    return lib


def _parallel(threads, work):
    """(wall seconds from the moment all `threads` threads start work(t) to the last's
    end, [each thread's CPU seconds in work(t)])."""
    barrier = threading.Barrier(threads)
    spans, cpu = [None] * threads, [None] * threads

    def run(t):
        barrier.wait()
        t0, c0 = time.perf_counter(), time.thread_time()
        work(t)
        cpu[t] = time.thread_time() - c0
        spans[t] = (t0, time.perf_counter())
    pool = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    return max(e for _, e in spans) - min(s for s, _ in spans), cpu


def _fma_rate(lib, dtype, threads, seconds, repeats):
    """GFLOP/s: one run per chain count, then more runs of the best one."""
    lanes = lib.vector_bytes() // (4 if dtype == "f32" else 8)

    def rate(n):
        fn = getattr(lib, f"fma_{dtype}_{n}")
        t, _ = _parallel(1, lambda _: fn(10_000))
        iters = max(1000, int(10_000 * seconds / max(t, 1e-6)))
        _, cpu = _parallel(threads, lambda _: fn(iters))
        return sum(iters * n * lanes * 2 / c for c in cpu) / 1e9
    rates = {n: rate(n) for n in CHAINS}
    best = max(rates, key=rates.get)
    return max([rates[best]] + [rate(best) for _ in range(repeats - 1)])


def _last_cache_bytes():
    for name in ("SC_LEVEL3_CACHE_SIZE", "SC_LEVEL2_CACHE_SIZE"):
        try:
            size = os.sysconf(name)
        except (ValueError, OSError):
            continue
        if size > 0:
            return size
    return 32 << 20


def _triad_rate(lib, threads, repeats):
    n = max(2 * _last_cache_bytes(), 32 << 20) // 8  # per array
    n -= n % threads
    a, b, c = np.zeros(n), np.ones(n), np.full(n, 2.0)  # written: the pages exist
    part = n // threads

    def work(t):
        off = t * part * 8
        lib.triad(a.ctypes.data + off, b.ctypes.data + off, c.ctypes.data + off, 3.0, part)
    work_all = lambda: _parallel(threads, work)[0]
    work_all()
    best = min(work_all() for _ in range(repeats))
    return TRIAD_BYTES * n / best / 1e9


def _gemm_rates(threads, repeats):
    """numpy's float32 and float64 GEMM on `threads` BLAS threads, in a fresh process
    (BLAS fixes its thread count when it loads)."""
    code = (f"import numpy as np, time, json\nn = {GEMM_N}\nout = {{}}\n"
            "for name, dt in (('gemm32', np.float32), ('gemm64', np.float64)):\n"
            "    a = np.random.default_rng(0).random((n, n)).astype(dt)\n"
            "    a @ a\n"
            "    ts = []\n"
            f"    for _ in range({repeats}):\n"
            "        t0 = time.perf_counter(); a @ a; ts.append(time.perf_counter() - t0)\n"
            "    out[name] = 2 * n ** 3 / min(ts) / 1e9\n"
            "print(json.dumps(out))")
    env = dict(os.environ, **{v: str(threads) for v in
                              ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if run.returncode:
        raise RuntimeError(f"the GEMM probe failed:\n{run.stderr}")
    return json.loads(run.stdout.splitlines()[-1])


def cache_path():
    return os.environ.get("CCONV_PEAK_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "cconv", "peak.json")


def _load_cache():
    try:
        with open(cache_path()) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _store(key, numbers):
    """Store numbers as the cache file's entry `key` unless the stored one is better
    everywhere; returns the entry kept."""
    path = cache_path()
    cache = _load_cache()
    mine = cache.get(cpu_key())
    if not mine or mine.get("source") != _source_hash():
        mine = cache[cpu_key()] = {"source": _source_hash(), "entries": {}}
    entry = mine["entries"].setdefault(key, {})
    better = any(numbers[f] > entry.get(f, 0.0) for f in FIELDS if f in numbers)
    if better:  # a peak: keep the best measure, with its own load and date
        entry.update(numbers)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(cache, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
    return entry


def _cached(key):
    mine = _load_cache().get(cpu_key(), {})
    return mine.get("entries", {}).get(key) if mine.get("source") == _source_hash() else None


def _part(key, fresh, run):
    """The cache entry `key`: from this process's memo, else the cache file, else run()
    now (fresh: run() now, once per process)."""
    if key in _memo:
        return _memo[key]
    found = None if fresh else _cached(key)
    if found is None:
        found = _store(key, dict(run(), load=os.getloadavg()[0],
                                 date=time.strftime("%Y-%m-%d %H:%M")))
    _memo[key] = found
    return found


def measure(level=None, threads=1, fresh=False, repeats=5, seconds=0.1):
    """{"fp32", "fp64": GFLOP/s; "triad": GB/s; "gemm32", "gemm64": GFLOP/s; "load",
    "gemm load": the 1-minute load averages when measured} at cconv CPU level `level`
    (default: the best this CPU runs) on `threads` threads, from this process's memo,
    else the cache file, else measured now (fresh=True: measured now whatever is
    stored). GEMM does not depend on the level: measured once per thread count."""
    level = level or best_level()
    if level not in levels():
        raise ValueError(f"level: this CPU runs {levels()}, got {level!r}")
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads: expected a positive int, got {threads!r}")
    lib = lambda: _compile(level)
    fma = _part(f"{level}/{threads}", fresh, lambda: {
        "fp32": _fma_rate(lib(), "f32", threads, seconds, repeats),
        "fp64": _fma_rate(lib(), "f64", threads, seconds, repeats),
        "triad": _triad_rate(lib(), threads, repeats)})
    gemm = _part(f"gemm/{threads}", fresh, lambda: _gemm_rates(threads, repeats))
    return {**{f: fma[f] for f in ("fp32", "fp64", "triad")},
            **{f: gemm[f] for f in ("gemm32", "gemm64")},
            "load": fma["load"], "gemm load": gemm["load"]}


def peak_flops(level, threads, dtype):
    """The level's FMA peak for a numpy dtype name ("float32" or "float64"), GFLOP/s."""
    return measure(level, threads)[{"float32": "fp32", "float64": "fp64"}[str(dtype)]]


def gemm_flops(threads, dtype):
    """numpy's GEMM rate for a dtype name, GFLOP/s: the practical peak."""
    return measure(None, threads)[{"float32": "gemm32", "float64": "gemm64"}[str(dtype)]]


def print_table(results, file=sys.stdout):
    """results: {(level, threads): measure(...)}."""
    head = f"{'level':<9}{'threads':>8}" + "".join(
        f"{f'{f} {UNITS[f]}':>16}" for f in FIELDS) + f"{'load':>7}{'gemm load':>10}"
    print(head, file=file)
    print("-" * len(head), file=file)
    for (level, threads), r in results.items():
        print(f"{level:<9}{threads:>8}" + "".join(f"{r[f]:>16.1f}" for f in FIELDS)
              + f"{r['load']:>7.2f}{r['gemm load']:>10.2f}", file=file)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--levels", default="all",
                   help=f"comma-separated from {levels()}, or 'all'")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--fresh", action="store_true", help="measure again, whatever is cached")
    args = p.parse_args()
    wanted = levels() if args.levels == "all" else args.levels.split(",")
    results = {(level, t): measure(level, t, fresh=args.fresh, repeats=args.repeats)
               for level in wanted for t in args.threads}
    print(f"{cpu_key()}; compiler {os.environ.get('CC', 'cc')}; "
          f"cache {cache_path()}")
    print_table(results)
    print("fp32/fp64: multiply-add chains in registers (2 FLOPs each); triad: a = b + s*c "
          "(24 B an element); gemm: numpy 2048x2048 matmul, the same for every level; "
          "each the best run; load: 1-minute load average when measured")


if __name__ == "__main__":
    main()
