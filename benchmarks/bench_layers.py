"""The heavy layers of the TF-tutorial and chapter-10 networks, cconv against PyTorch,
side by side, each in GFLOP/s, percent of peak and bytes moved per FLOP.

    python benchmarks/bench_layers.py [--repeats 15] [--threads 2] [--dtype float32 float64]

Layers (channels-last for cconv, PyTorch's own NCHW for torch.nn.functional):
  conv2     the TF tutorial's: x (N, 14, 14, 32), kernels 5x5x32x64, 'same', bias, ReLU;
            backward = grad of input, kernels and bias; N = 50 and, forward only, 1000;
  ch10conv  chapter 10's: x (N, 28, 28, 1), kernels 3x3x1x16, 'valid', bias, tanh;
            backward = grad of kernels and bias (a first layer: no input gradient);
            N = 128 and, forward only, 500;
  dense1    the TF tutorial's: (N, 3136) @ (3136, 1024) + bias; backward = grad_x,
            grad_w, grad_b; N = 50 and, forward only, 1000.

A third column times the other strategy we weighed: im2col plus numpy's BLAS matmul
(OpenBLAS, its own threads) for the convolution, plain matmul for the dense layer. It
is what scipy's cython_blas sgemm could at best give, with no copy of ours around it.

Each cell is the median of --repeats timed calls after two warm-up calls. GF/s: the
direct algorithm's FLOPs (flops.py; a multiply-add counts 2, the activation 0) over the
time; %pk: cconv's percent of the FMA peak of the level it runs, on these threads
(peak.py, which also prints numpy's GEMM rate); B/F: the bytes the op must read and
write (its input and output arrays, once) per FLOP. Against the balance printed
above each dtype's rows (triad bytes/s over FMA FLOP/s), an op above it is bound by
memory at best, one below it by arithmetic. On a shared machine wall time mostly
measures the neighbours: `--threads 1 --clock cpu` times this process's CPU seconds
instead (run it with OPENBLAS_NUM_THREADS=1 so that numpy's BLAS is on one thread too).
"""
import argparse
import os
import statistics
import time

from typing import Callable, NamedTuple, Optional

import numpy as np

import cconv
import flops
import peak
from cconv import ops

try:
    import torch
    import torch.nn.functional as tnf
except ImportError:  # the comparison is optional
    torch = None


CLOCK = time.perf_counter


class Case(NamedTuple):
    layer: str
    n: int
    flop: float  # the direct algorithm's, a multiply-add counting 2
    inputs: tuple  # the arrays the op reads
    ours: Callable
    blas: Optional[Callable]
    torch: Optional[Callable] = None


def median_seconds(fn, repeats):
    fn()
    fn()
    times = []
    for _ in range(repeats):
        t0 = CLOCK()
        fn()
        times.append(CLOCK() - t0)
    return statistics.median(times)


def im2col_conv(x, w, b, padding, act, chunk=8):
    """Convolution by im2col of `chunk` images at a time and one BLAS matmul per chunk."""
    n = x.shape[0]
    kh, kw, c, f = w.shape
    wm = w.reshape(-1, f)
    if padding == "same":
        x = np.pad(x, ((0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)))
    oh, ow = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    out = np.empty((n, oh, ow, f), dtype=x.dtype)
    for i in range(0, n, chunk):
        win = np.lib.stride_tricks.sliding_window_view(x[i:i + chunk], (kh, kw), axis=(1, 2))
        cols = win.transpose(0, 1, 2, 4, 5, 3).reshape(-1, kh * kw * c)
        act(cols @ wm + b, out=out[i:i + chunk].reshape(-1, f))
    return out


# (name, input (H, W, C), kernel (KH, KW, F), padding, activation, need_grad_x)
CONVS = {
    "conv2": ((14, 14, 32), (5, 5, 64), "same", "relu", True),  # the TF tutorial's
    "ch10conv": ((28, 28, 1), (3, 3, 16), "valid", "tanh", False),  # chapter 10's, first
}
NUMPY_ACT = {"relu": lambda z, out: np.maximum(z, 0, out=out), "tanh": np.tanh}


def conv_cases(name, dtype, n, rng, backward):
    (h, wd, c), (kh, kw, f), padding, act, need_grad_x = CONVS[name]
    x = rng.standard_normal((n, h, wd, c)).astype(dtype)
    w = (rng.standard_normal((kh, kw, c, f)) * 0.05).astype(dtype)
    b = rng.standard_normal(f).astype(dtype)
    out_shape = ops.conv_output_shape(x.shape, w.shape, padding)
    g = rng.standard_normal(out_shape).astype(dtype)
    flop = 2.0 * n * flops.conv2d_macs(out_shape[1:], w.shape)
    cases = [Case(f"{name} fwd", n, flop, (x, w, b),
                  lambda: ops.conv2d(x, w, b, padding, act),
                  lambda: im2col_conv(x, w, b, padding, NUMPY_ACT[act]))]
    if backward:  # weight (and bias) gradients, and the input's when a layer needs it
        cases.append(Case(f"{name} bwd", n, flop * (1 + need_grad_x), (x, w, g),
                          lambda: ops.conv2d_backward(x, w, g, padding, need_grad_x), None))
    if torch is None:
        return cases
    tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    tw = torch.from_numpy(w.transpose(3, 2, 0, 1).copy())
    tb = torch.from_numpy(b)
    tg = torch.from_numpy(g.transpose(0, 3, 1, 2).copy())
    tact = {"relu": tnf.relu, "tanh": torch.tanh}[act]
    pad = [kh // 2, kw // 2] if padding == "same" else [0, 0]

    def t_fwd():
        with torch.no_grad():
            tact(tnf.conv2d(tx, tw, tb, padding=padding))

    def t_bwd():
        torch.ops.aten.convolution_backward(tg, tx, tw, [f], [1, 1], pad, [1, 1],
                                            False, [0, 0], 1, [need_grad_x, True, True])
    cases[0] = cases[0]._replace(torch=t_fwd)
    if backward:
        cases[1] = cases[1]._replace(torch=t_bwd)
    return cases


def dense_cases(dtype, n, rng, backward):
    x = rng.standard_normal((n, 3136)).astype(dtype)
    w = (rng.standard_normal((3136, 1024)) * 0.02).astype(dtype)
    b = rng.standard_normal(1024).astype(dtype)
    g = rng.standard_normal((n, 1024)).astype(dtype)
    flop = 2.0 * n * flops.dense_macs(x.shape[1:], w.shape[1])
    cases = [Case("dense1 fwd", n, flop, (x, w, b), lambda: ops.dense(x, w, b),
                  lambda: x @ w + b)]
    if backward:
        cases.append(Case("dense1 bwd", n, 2 * flop, (x, w, g),
                          lambda: ops.dense_backward(x, w, g),
                          lambda: (g @ w.T, x.T @ g, g.sum(axis=0))))
    if torch is None:
        return cases
    tx, tw, tb, tg = (torch.from_numpy(a) for a in (x, w.T.copy(), b, g))

    def t_fwd():
        with torch.no_grad():
            tnf.linear(tx, tw, tb)

    def t_bwd():  # what autograd runs for linear
        tg @ tw, tg.t() @ tx, tg.sum(0)
    cases[0] = cases[0]._replace(torch=t_fwd)
    if backward:
        cases[1] = cases[1]._replace(torch=t_bwd)
    return cases


def bytes_moved(case):
    """The op's compulsory traffic: its inputs read once, its outputs written once."""
    out = case.ours()
    outs = out if isinstance(out, tuple) else (out,)
    return sum(a.nbytes for a in case.inputs + tuple(o for o in outs if o is not None))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", nargs="+", default=["float32", "float64"])
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: process CPU time, for --threads 1 on a busy machine")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    level = cconv.cpu_capability()
    limits = peak.measure(level, args.threads)  # before any thread pool spins
    cconv.set_num_threads(args.threads)
    if torch is not None:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"{args.clock} clock; threads {args.threads}; cconv level {level}; "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '')!r}; "
          f"torch {torch.__version__ if torch else 'not installed'}")
    print(f"peak at {level} on {args.threads} thread(s) (benchmarks/peak.py): FMA fp32 "
          f"{limits['fp32']:.0f}, fp64 {limits['fp64']:.0f} GFLOP/s; triad "
          f"{limits['triad']:.1f} GB/s; numpy GEMM 2048^2 fp32 {limits['gemm32']:.0f}, "
          f"fp64 {limits['gemm64']:.0f} GFLOP/s")
    print("GF/s: the direct algorithm's FLOPs (multiply-add = 2) over time; %pk: of the FMA "
          "peak; B/F: bytes the op must read and write per FLOP (the machine balance is "
          "triad GB/s / FMA GFLOP/s)\n")
    head = (f"{'layer':<13} {'dtype':<8} {'N':>5} {'B/F':>6}  {'cconv ms':>9} {'GF/s':>6} "
            f"{'%pk':>4}  {'im2col/BLAS ms':>14} {'GF/s':>6}  {'torch ms':>9} {'GF/s':>6}  "
            f"{'torch/cconv':>11}")
    print(head)
    print("-" * len(head))
    for name in args.dtype:
        dtype = np.dtype(name)
        fma = limits["fp32" if dtype == np.float32 else "fp64"]
        print(f"{'balance':<13} {name:<8} {'':>5} {limits['triad'] / fma:>6.3f}")
        cases = (conv_cases("conv2", dtype, 50, rng, True)
                 + conv_cases("conv2", dtype, 1000, rng, False)
                 + conv_cases("ch10conv", dtype, 128, rng, True)
                 + conv_cases("ch10conv", dtype, 500, rng, False)
                 + dense_cases(dtype, 50, rng, True) + dense_cases(dtype, 1000, rng, False))
        for case in cases:
            cells = [None if fn is None else median_seconds(fn, args.repeats)
                     for fn in (case.ours, case.blas, case.torch)]
            line = (f"{case.layer:<13} {name:<8} {case.n:>5} "
                    f"{bytes_moved(case) / case.flop:>6.3f}")
            for i, (width, t) in enumerate(zip((9, 14, 9), cells)):
                if t is None:
                    line += f"  {'-':>{width}} {'-':>6}" + ("     " if i == 0 else "")
                else:
                    line += f"  {t * 1e3:>{width}.2f} {case.flop / t / 1e9:>6.0f}"
                    if i == 0:
                        line += f" {100 * case.flop / t / 1e9 / fma:>3.0f}%"
            ratio = f"{cells[2] / cells[0]:.2f}x" if cells[2] else "-"
            print(line + f"  {ratio:>11}")


if __name__ == "__main__":
    main()
