"""Side-by-side timing of competitors, each in its own process (shared by bench_ch10.py,
bench_tfnet.py and bench_cifar.py).

A row is one competitor: a cconv checkout at one CPU level, an old cconv build,
PyTorch, Keras 3 on TensorFlow, Keras 3 on JAX; and a reference row, numpy's GEMM, the
practical peak measured in the same run. Each row runs in a worker process of its own, so no two
OpenMP or Eigen thread pools spin against each other, and each gets its own threads.
The parent only orchestrates: repeat after repeat, measure after measure, it asks the
workers in turn (rotating who goes first) to time one run, and prints medians. A worker
waits on a pipe between turns, so only one row computes at a time.

A script defines its measures and `make_measures(spec) -> (info, {measure: fn})`, the
worker side; `bench(...)` below does the rest. A cconv row's info carries "flop", {measure:
FLOPs of one timed run} (benchmarks/flops.py counts them), which every row does alike:
after the table of times, a table gives each row's GFLOP/s, its percent of the FMA peak
of the CPU level it ran at (benchmarks/peak.py; competitors: the best level this CPU
runs, as their own dispatch picks) and its percent of numpy's GEMM in this run.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

import peak

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
PICKED = "picked"
# competitor kinds, and how rows and targets name them
COMPETITORS = {"torch": "PyTorch", "keras": "Keras/TF", "jax": "Keras/JAX"}


@dataclass
class Row:
    label: str
    kind: str  # "cconv", a key of COMPETITORS, or a script's own kind
    role: str  # "level", PICKED, "old", "competitor" or "reference"
    env: dict = field(default_factory=dict)
    spec: dict = field(default_factory=dict)

    @property
    def level(self):
        return self.spec.get("level")


GEMM_N = 2048
# the reference row's measures, by the dtype of the measures they are the peak of
GEMM_MEASURES = {"float32": "gemm", "float64": "gemm f64"}


@dataclass
class Measure:
    key: str
    heading: str
    images: int
    unit: str  # "img/s" (higher is better) or "s" (lower is better)
    dtype: str = "float32"  # whose peak its GFLOP/s are a percent of

    def show(self, seconds):
        return f"{self.images / seconds:.0f}" if self.unit == "img/s" else f"{seconds:.4f}"


def parser(doc, competitors=",".join(COMPETITORS)):
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 2 repeats, small sizes (under a minute)")
    p.add_argument("--capability", default="all",
                   help="cconv CPU levels, comma-separated (default,avx2,avx512), or 'all' "
                        "(every built level the CPU supports)")
    p.add_argument("--cconv-path", default=os.path.dirname(BENCH_DIR),
                   help="checkout whose in-place build is benchmarked (default: this one)")
    p.add_argument("--old", action="append", default=[], metavar="DIR",
                   help="another built checkout to add as a row at the level it picks "
                        "(e.g. an old -march=native build); repeatable")
    p.add_argument("--competitors", default=competitors,
                   help=f"comma-separated from {', '.join(COMPETITORS)} (default "
                        f"{competitors}); 'none' for cconv only")
    p.add_argument("--busy", type=int, default=0, metavar="N",
                   help="after the quiet run, time the rows again while N other processes "
                        "keep a core busy each (plain Python loops), as a user's browser or "
                        "build would, and print each row's slowdown")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p


# ---- worker side -------------------------------------------------------------------

def serve(make_measures, spec_json):
    """Build the row's measures, warm each up once, then time one run per request line
    on stdin, answering on the original stdout (libraries' own prints go to stderr)."""
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    spec = json.loads(spec_json)
    info, measures = (gemm_measures if spec["kind"] == "numpy" else make_measures)(spec)
    for fn in measures.values():
        fn()
    reply.write(json.dumps({"info": info, "measures": sorted(measures)}) + "\n")
    for line in sys.stdin:
        fn = measures[line.strip()]
        t0 = time.perf_counter()
        fn()
        reply.write(json.dumps(time.perf_counter() - t0) + "\n")


def import_cconv(spec):
    """cconv from the row's checkout, at the requested level: anything else fails loudly."""
    import cconv
    where = os.path.realpath(os.path.dirname(os.path.dirname(cconv.__file__)))
    if where != os.path.realpath(spec["path"]):
        raise RuntimeError(f"imported cconv from {where}, expected {spec['path']}")
    level = cconv.cpu_capability() if hasattr(cconv, "cpu_capability") else None
    if level != spec.get("level"):
        raise RuntimeError(f"cconv runs CPU level {level!r}, but the row asked for "
                           f"{spec.get('level')!r}")
    if spec["threads"] != visible_cores():  # else as users run it: the adapting default
        cconv.set_num_threads(spec["threads"])
    return cconv, {"version": f"cconv {cconv.__version__} at level {level or 'n/a'} "
                              f"from {spec['path']}"}


def gemm_measures(spec):
    """The reference row: numpy's GEMM of two GEMM_N x GEMM_N matrices, per dtype."""
    rng = np.random.default_rng(0)
    measures = {}
    for dtype in spec["dtypes"]:
        a, b = (rng.random((GEMM_N, GEMM_N)).astype(dtype) for _ in range(2))
        measures[GEMM_MEASURES[dtype]] = (lambda a, b, out: lambda: np.matmul(a, b, out=out))(
            a, b, np.empty_like(a))
    return {"version": f"numpy {np.__version__}"}, measures


def import_torch(spec):
    import torch
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    return torch, {"version": f"torch {torch.__version__}"}


def torch_image_measures(torch, make, x, y, xi, batch, user_batch):
    """PyTorch's four measures on channels-last images x (labels y) and xi: "train" and
    "infer" at its fastest (a plain loop in batches of `batch`, channels-last memory),
    "fit@32" and "predict@32" as users write it (DataLoaders of `user_batch`,
    channels-first). make(memory_format) -> (net, optimizer) of a new network."""
    nn = torch.nn

    def made(memory_format):
        net, opt = make(memory_format)

        def step(xb, yb):
            opt.zero_grad()
            nn.functional.cross_entropy(net(xb), yb).backward()
            opt.step()
        return net, step

    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    yt = torch.from_numpy(y.astype(np.int64))
    xit = torch.from_numpy(np.ascontiguousarray(xi.transpose(0, 3, 1, 2)))
    fast = torch.channels_last
    net, step = made(fast)
    user_net, user_step = made(torch.contiguous_format)
    xt_fast, xit_fast = xt.to(memory_format=fast), xit.to(memory_format=fast)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xt, yt),
                                         batch_size=user_batch, shuffle=True)
    infer_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xit),
                                               batch_size=user_batch)

    def train():
        net.train()
        for s in range(0, len(xt), batch):
            step(xt_fast[s:s + batch], yt[s:s + batch])

    def fit32():
        user_net.train()
        for xb, yb in loader:
            user_step(xb, yb)

    def infer():
        net.eval()
        with torch.inference_mode():
            net(xit_fast)

    def predict32():
        user_net.eval()
        with torch.inference_mode():
            torch.cat([user_net(xb) for (xb,) in infer_loader])
    return {"train": train, "infer": infer, "fit@32": fit32, "predict@32": predict32}


def import_keras(spec):
    """Keras 3 with the row's threads: (keras, tensorflow, info) on TensorFlow (oneDNN
    on, from the environment), (keras, None, info) on JAX (jit-compiled, XLA's own
    threads)."""
    import keras
    keras.utils.set_random_seed(0)
    if spec["kind"] == "jax":
        import jax
        return keras, None, {"version": f"keras {keras.__version__}, jax {jax.__version__}"}
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(spec["threads"])
    tf.config.threading.set_inter_op_parallelism_threads(1)  # one op at a time: few cores
    return keras, tf, {"version": f"keras {keras.__version__}, tensorflow {tf.__version__}"}


def keras_compile(keras, model, **kwargs):
    """model.compile(**kwargs), jit-compiled on JAX (XLA), not on TensorFlow: XLA on the
    CPU measured 1.8x slower there (the TF-tutorial network's training)."""
    model.compile(jit_compile=keras.backend.backend() == "jax", **kwargs)


# ---- parent side -------------------------------------------------------------------

def _pythonpath(path):
    return os.pathsep.join(p for p in (path, os.environ.get("PYTHONPATH")) if p)


def probe(path, threads):
    """What the checkout at `path` builds and picks, and its show_config() text."""
    code = ("import json, io, cconv; s = io.StringIO(); cconv.show_config(file=s)\n"
            "try:\n from cconv._kernels import BUILT, _levels\n"
            " levels = [l for l in _levels.supported() if l in BUILT]\n"
            "except ImportError:\n levels = []\n"
            "print(json.dumps({'config': s.getvalue(), 'levels': levels,"
            " 'picked': getattr(cconv, 'cpu_capability', lambda: None)()}))")
    env = dict(os.environ, PYTHONPATH=_pythonpath(path), OMP_NUM_THREADS=str(threads))
    env.pop("CCONV_CPU_CAPABILITY", None)
    if threads == visible_cores():  # as the rows run (see Worker)
        env.pop("OMP_NUM_THREADS")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, cwd=tempfile.gettempdir())
    if out.returncode:
        sys.exit(f"cannot import cconv from {path} (built in place?):\n{out.stderr}")
    return json.loads(out.stdout.splitlines()[-1])


def _commit(path):
    out = subprocess.run(["git", "-C", path, "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True)
    return out.stdout.strip() or os.path.basename(path)


def cconv_rows(args):
    """A row per requested level of --cconv-path, then one per --old checkout."""
    main = probe(args.cconv_path, args.threads)
    wanted = (main["levels"] if args.capability == "all"
              else [c.strip() for c in args.capability.split(",")])
    rows = []
    for level in wanted:
        picked = level == main["picked"]
        # The picked level runs as users run it: with no $CCONV_CPU_CAPABILITY.
        env = {} if picked else {"CCONV_CPU_CAPABILITY": level}
        rows.append(Row(f"cconv {level}" + (" (picked)" if picked else ""), "cconv",
                        PICKED if picked else "level", env,
                        {"path": args.cconv_path, "level": level}))
    for path in args.old:
        old = probe(path, args.threads)
        level = old["picked"] or "level n/a"  # built before per-level modules
        rows.append(Row(f"cconv @{_commit(path)} ({level})", "cconv", "old", {},
                        {"path": path, "level": old["picked"]}))
    return main["config"], rows


def competitor_rows(args):
    wanted = [] if args.competitors == "none" else args.competitors.split(",")
    unknown = [k for k in wanted if k not in COMPETITORS]
    if unknown:
        sys.exit(f"--competitors: expected names from {', '.join(COMPETITORS)}, got {unknown}")
    return [Row(COMPETITORS[k], k, "competitor") for k in wanted]


def visible_cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


class Worker:
    def __init__(self, script, row, threads, params, log_dir):
        env = dict(os.environ, **row.env,
                   OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
                   MKL_NUM_THREADS=str(threads), TF_ENABLE_ONEDNN_OPTS="1",
                   TF_CPP_MIN_LOG_LEVEL="2",
                   KERAS_BACKEND="jax" if row.kind == "jax" else "tensorflow")
        if row.kind == "cconv" and threads == visible_cores():
            # as users run it: $OMP_NUM_THREADS would fix the count, which otherwise
            # adapts when other processes hold cores (cconv._config.Governor)
            env.pop("OMP_NUM_THREADS")
        if "CCONV_CPU_CAPABILITY" not in row.env:
            env.pop("CCONV_CPU_CAPABILITY", None)
        if "path" in row.spec:
            env["PYTHONPATH"] = _pythonpath(row.spec["path"])
        spec = dict(row.spec, kind=row.kind, threads=threads, **params)
        self.row = row
        self.log = os.path.join(log_dir, f"{row.kind}-{len(os.listdir(log_dir))}.log")
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen([sys.executable, script, "--worker", json.dumps(spec)],
                                         env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=err, text=True, cwd=tempfile.gettempdir())
        ready = self._answer()
        self.info, self.measures = ready["info"], set(ready["measures"])

    def _answer(self):
        line = self.proc.stdout.readline()
        if not line:
            with open(self.log) as f:
                tail = f.read()[-3000:]
            sys.exit(f"\nrow '{self.row.label}' failed (log {self.log}):\n{tail}")
        return json.loads(line)

    def time(self, measure):
        self.proc.stdin.write(measure + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def _time_rounds(workers, measure_keys, repeats):
    """{(row label, measure): [seconds, ...]}: `repeats` rounds, each worker timing one run
    of each measure in turn, who goes first rotating."""
    times = {(w.row.label, m): [] for w in workers for m in measure_keys if m in w.measures}
    for r in range(repeats):
        for m in measure_keys:
            for w in workers[r % len(workers):] + workers[:r % len(workers)]:
                if m in w.measures:
                    time.sleep(0.02)  # let the last worker's pool stop spinning
                    times[w.row.label, m].append(w.time(m))
    return times


def _medians(workers, times):
    medians = {w.row.label: {} for w in workers}
    for (label, m), ts in times.items():
        medians[label][m] = statistics.median(ts)
    return medians


def run(script, rows, measure_keys, args, params):
    """({row label: {measure: median seconds}}, {row label: worker info}, busy), where
    busy is None, or with --busy N the times of a second run beside N busy processes,
    {(row label, measure): [seconds, ...]}. Workers start one at a time (so warm-ups do
    not overlap), then take turns, one run each."""
    log_dir = tempfile.mkdtemp(prefix="cconv-bench-")
    workers = []
    for row in rows:
        print(f"  starting {row.label} ...", file=sys.stderr, flush=True)
        workers.append(Worker(script, row, args.threads, params, log_dir))
    quiet = _time_rounds(workers, measure_keys, args.repeats)
    busy_times = None
    if args.busy:
        print(f"  again beside {args.busy} busy process(es) ...", file=sys.stderr, flush=True)
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(args.busy)]
        try:
            busy_times = _time_rounds(workers, measure_keys, args.repeats)
        finally:
            for b in busy:
                b.kill()
                b.wait()
    for w in workers:
        w.close()
    return _medians(workers, quiet), {w.row.label: w.info for w in workers}, busy_times


class Results:
    """Medians of one run, {row label: {measure: seconds}}, with the summary printers."""

    def __init__(self, rows, medians, infos, load_start, busy=None, n_busy=0):
        self.rows, self.medians, self.infos = rows, medians, infos
        self.load_start = load_start
        self.busy, self.n_busy = busy, n_busy  # times beside n_busy busy processes

    def find(self, **attrs):
        return next((r for r in self.rows
                     if all(getattr(r, k) == v for k, v in attrs.items())), None)

    def speedup(self, mine, theirs, key, their_key=None):
        """How many times faster row `mine` is on `key` than row `theirs` on `their_key`
        (by default the same measure); None: n/a."""
        a = self.medians[mine.label].get(key)
        b = self.medians[theirs.label].get(their_key or key)
        return None if a is None or b is None else b / a

    def _ratios(self, mine, theirs, keys, their_key=None):
        return ", ".join(f"{k}{f' vs their {their_key}' if their_key else ''} {x:.2f}x"
                         for k in keys
                         if (x := self.speedup(mine, theirs, k, their_key)) is not None)

    def label_width(self):
        return max(len(r.label) for r in self.rows) + 2

    def print_ratios(self, keys):
        """Every cconv row of the checkout against every other build and competitor."""
        print("how many times faster (competitor's median time / cconv's):")
        for a in self.rows:
            for b in self.rows:
                if a.role in ("level", PICKED) and b.role in ("old", "competitor"):
                    print(f"  {a.label} vs {b.label}: {self._ratios(a, b, keys)}")

    def print_target(self, mine, theirs, keys, goal, what, their_key=None):
        """One summary line: row `mine` at least `goal` times as fast as `theirs` (on
        their_key, when it is another measure of theirs)."""
        if mine is None or theirs is None:
            print(f"TARGET {what}: NOT MEASURED (a row is missing: see --help)")
            return
        met = all((self.speedup(mine, theirs, k, their_key) or 0) >= goal for k in keys)
        print(f"TARGET {what}: {mine.label} vs {theirs.label}: "
              f"{self._ratios(mine, theirs, keys, their_key)}: {'MET' if met else 'NOT MET'}")

    def slowdown(self, row, key):
        """(median, worst) of row's times beside the busy processes over its quiet median."""
        ts = self.busy.get((row.label, key)) if self.busy else None
        if not ts:
            return None
        quiet = self.medians[row.label][key]
        return statistics.median(ts) / quiet, max(ts) / quiet

    def print_slowdowns(self, measures):
        print(f"\nbeside {self.n_busy} busy process(es): each row's median time over its "
              f"quiet median (worst run in brackets)")
        width = self.label_width()
        for r in self.rows:
            cells = [f"{m.key} {x[0]:.2f}x ({x[1]:.2f}x)" for m in measures
                     if (x := self.slowdown(r, m.key))]
            if cells:
                print(f"  {r.label:<{width}}" + "   ".join(cells))

    def print_busy_target(self, row, key, goals):
        """The slowdown target: goals maps a busy-process count to its median bound; the
        worst run stays under worst_goal whatever the count."""
        what = f"{key} beside {self.n_busy} busy process(es)"
        x = self.slowdown(row, key) if row and self.n_busy in goals else None
        if x is None:
            print(f"TARGET {what}: NOT MEASURED (run with --busy 1 or --busy 2)")
            return
        goal, worst_goal = goals[self.n_busy]
        met = x[0] <= goal and x[1] <= worst_goal
        print(f"TARGET {what}: {row.label} {x[0]:.2f}x slower (worst {x[1]:.2f}x), goal <= "
              f"{goal}x (worst <= {worst_goal}x): {'MET' if met else 'NOT MET'}")

    def gflops(self, row, measure):
        """GFLOP/s of row on measure, None when not measured or not counted."""
        flop = next((i["flop"] for i in self.infos.values() if "flop" in i), {})
        seconds = self.medians[row.label].get(measure.key)
        if seconds is None or measure.key not in flop:
            return None
        return flop[measure.key] / seconds / 1e9

    def print_rates(self, measures, peaks, threads):
        """Every row's GFLOP/s on the counted measures, in percent of its level's FMA
        peak and of numpy's GEMM in this run."""
        ref = self.find(role="reference")
        gemm = {d: 2 * GEMM_N ** 3 / self.medians[ref.label][GEMM_MEASURES[d]] / 1e9
                for d in {m.dtype for m in measures}}
        counted = [m for m in measures if any(self.gflops(r, m) for r in self.rows)]
        print(f"peak on {threads} thread(s) (benchmarks/peak.py; GFLOP/s): "
              + "; ".join(f"{level} fp32 {p['fp32']:.1f}, fp64 {p['fp64']:.1f}"
                          for level, p in peaks.items()))
        print("numpy GEMM 2048x2048 in this run (GFLOP/s): "
              + ", ".join(f"{d} {g:.1f}" for d, g in sorted(gemm.items())))
        print("GFLOP/s (direct algorithm, multiply-add = 2; benchmarks/flops.py), % of the "
              "row's level's FMA peak, % of numpy's GEMM:")
        width = self.label_width()
        cols = [max(len(m.key) + 6, 10) for m in counted]
        print(f"{'':<{width}}" + "".join(f"{m.key + ' GF/s':>{c}}{'%peak':>7}{'%gemm':>7}"
                                         for m, c in zip(counted, cols)))
        for r in self.rows:
            if r.role == "reference":
                continue
            line = f"{r.label:<{width}}"
            for m, c in zip(counted, cols):
                g = self.gflops(r, m)
                fma = peaks[peak_level(r)]["fp32" if m.dtype == "float32" else "fp64"]
                line += (f"{g:>{c}.1f}{100 * g / fma:>6.0f}%{100 * g / gemm[m.dtype]:>6.0f}%"
                         if g else f"{'n/a':>{c}}{'':>14}")
            print(line)

    def print_load(self):
        # Other processes on the same cores slow the rows, unevenly: say how busy it was.
        print(f"load average (1 min) at start {self.load_start:.2f}, at end {os.getloadavg()[0]:.2f}")


def print_table(rows, medians, measures):
    labels = [r.label for r in rows if r.role != "reference"]
    shown = [m for m in measures if any(m.key in medians[label] for label in labels)]
    width = max(map(len, labels)) + 2
    cols = [max(len(m.heading), 8) + 2 for m in shown]
    head = f"{'':<{width}}" + "".join(f"{m.heading:>{c}}" for m, c in zip(shown, cols))
    print(head)
    print("-" * len(head))
    for label in labels:
        cells = [m.show(medians[label][m.key]) if m.key in medians[label] else "n/a"
                 for m in shown]
        print(f"{label:<{width}}" + "".join(f"{cell:>{c}}" for cell, c in zip(cells, cols)))


def peak_level(row):
    """The CPU level whose peak a row's GFLOP/s are a percent of."""
    return row.level if row.kind == "cconv" and row.level else peak.best_level()


def bench(script, args, params, title, measures, extra_rows=()):
    """Run every row of the command line (plus the script's extra rows and numpy's GEMM),
    print the machine statement, the table of medians and the table of GFLOP/s, and
    return the Results."""
    config, rows = cconv_rows(args)
    rows += competitor_rows(args) + list(extra_rows)
    dtypes = sorted({m.dtype for m in measures})
    rows.append(Row("numpy matmul", "numpy", "reference", spec={"dtypes": dtypes}))
    # the peak probe first (cached after its first run), so that no row competes with it
    peaks = {level: peak.measure(level, args.threads) for level in map(peak_level, rows)}
    load_start = os.getloadavg()[0]
    medians, infos, busy = run(script, rows, [m.key for m in measures]
                               + [GEMM_MEASURES[d] for d in dtypes], args, params)
    print(title)
    print(f"machine: {peak.cpu_name()}, {os.cpu_count()} cores; {args.threads} threads per row, "
          f"each row in its own process, taking turns; median of {args.repeats}"
          + (f"; then again beside {args.busy} busy process(es)" if args.busy else ""))
    print(config.rstrip())
    for label, info in infos.items():
        print(f"  {label}: {info['version']}")
    print()
    print_table(rows, medians, measures)
    res = Results(rows, medians, infos, load_start, busy, args.busy)
    print()
    res.print_rates(measures, peaks, args.threads)
    if busy:
        res.print_slowdowns(measures)
    return res
