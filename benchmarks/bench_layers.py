"""The TensorFlow-tutorial network's heavy layers, cconv against PyTorch, side by side.

    python benchmarks/bench_layers.py [--repeats 15] [--threads 2] [--dtype float32 float64]

Layers (channels-last for cconv, PyTorch's own NCHW for torch.nn.functional):
  conv2   x (N, 14, 14, 32), kernels 5x5x32x64, 'same', bias, ReLU; backward = grad of
          input, kernels and bias;
  dense1  (N, 3136) @ (3136, 1024) + bias; backward = grad_x, grad_w, grad_b;
at the training batch (50) and, forward only, the inference batch (1000).

A third column times the other strategy we weighed: im2col plus numpy's BLAS matmul
(OpenBLAS, its own threads) for the convolution, plain matmul for the dense layer. It
is what scipy's cython_blas sgemm could at best give, with no copy of ours around it.

Each cell is the median of --repeats timed calls after two warm-up calls; GFLOP/s counts
the multiply-adds of the products only (2 per term). The machine's float32 GEMM rate
(numpy, 2048 x 2048) is printed first for scale. On a shared machine wall time mostly
measures the neighbours: `--threads 1 --clock cpu` times this process's CPU seconds
instead (run it with OPENBLAS_NUM_THREADS=1 so that numpy's BLAS is on one thread too).
"""
import argparse
import os
import statistics
import time

import numpy as np

import cconv
from cconv import ops

try:
    import torch
    import torch.nn.functional as tnf
except ImportError:  # the comparison is optional
    torch = None


CLOCK = time.perf_counter


def median_seconds(fn, repeats):
    fn()
    fn()
    times = []
    for _ in range(repeats):
        t0 = CLOCK()
        fn()
        times.append(CLOCK() - t0)
    return statistics.median(times)


def im2col_conv(x, w, b, chunk=8):
    """'same' conv by im2col of `chunk` images at a time and one BLAS matmul per chunk."""
    n, h, wd, c = x.shape
    kh, kw, _, f = w.shape
    wm = w.reshape(-1, f)
    xp = np.pad(x, ((0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)))
    out = np.empty((n, h, wd, f), dtype=x.dtype)
    for i in range(0, n, chunk):
        win = np.lib.stride_tricks.sliding_window_view(xp[i:i + chunk], (kh, kw), axis=(1, 2))
        cols = win.transpose(0, 1, 2, 4, 5, 3).reshape(-1, kh * kw * c)
        np.maximum(cols @ wm + b, 0, out=out[i:i + chunk].reshape(-1, f))
    return out


def conv_cases(dtype, n, rng):
    x = rng.standard_normal((n, 14, 14, 32)).astype(dtype)
    w = (rng.standard_normal((5, 5, 32, 64)) * 0.05).astype(dtype)
    b = rng.standard_normal(64).astype(dtype)
    g = rng.standard_normal((n, 14, 14, 64)).astype(dtype)
    flops = 2.0 * n * 14 * 14 * 64 * 5 * 5 * 32
    rows = [("conv2 fwd", n, flops,
             lambda: ops.conv2d(x, w, b, "same", "relu"),
             lambda: im2col_conv(x, w, b)),
            ("conv2 bwd", n, 2 * flops,
             lambda: ops.conv2d_backward(x, w, g, "same"), None)]
    if torch is None:
        return [r + (None,) for r in rows]
    tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    tw = torch.from_numpy(w.transpose(3, 2, 0, 1).copy())
    tb = torch.from_numpy(b)
    tg = torch.from_numpy(g.transpose(0, 3, 1, 2).copy())

    def t_fwd():
        with torch.no_grad():
            tnf.relu(tnf.conv2d(tx, tw, tb, padding=2))

    def t_bwd():
        torch.ops.aten.convolution_backward(tg, tx, tw, [64], [1, 1], [2, 2], [1, 1],
                                            False, [0, 0], 1, [True, True, True])
    return [rows[0] + (t_fwd,), rows[1] + (t_bwd,)]


def dense_cases(dtype, n, rng, backward):
    x = rng.standard_normal((n, 3136)).astype(dtype)
    w = (rng.standard_normal((3136, 1024)) * 0.02).astype(dtype)
    b = rng.standard_normal(1024).astype(dtype)
    g = rng.standard_normal((n, 1024)).astype(dtype)
    flops = 2.0 * n * 3136 * 1024
    rows = [("dense1 fwd", n, flops, lambda: ops.dense(x, w, b), lambda: x @ w + b)]
    if backward:
        rows.append(("dense1 bwd", n, 2 * flops, lambda: ops.dense_backward(x, w, g),
                     lambda: (g @ w.T, x.T @ g, g.sum(axis=0))))
    if torch is None:
        return [r + (None,) for r in rows]
    tx, tw, tb, tg = (torch.from_numpy(a) for a in (x, w.T.copy(), b, g))

    def t_fwd():
        with torch.no_grad():
            tnf.linear(tx, tw, tb)

    def t_bwd():  # what autograd runs for linear
        tg @ tw, tg.t() @ tx, tg.sum(0)
    return [rows[0] + (t_fwd,)] + ([rows[1] + (t_bwd,)] if backward else [])


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
    cconv.set_num_threads(args.threads)
    if torch is not None:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2048, 2048)).astype(np.float32)
    peak = 2 * 2048.0 ** 3 / median_seconds(lambda: a @ a, 5) / 1e9
    print(f"{args.clock} clock; threads {args.threads}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '')!r}; "
          f"torch {torch.__version__ if torch else 'not installed'}")
    print(f"numpy float32 matmul 2048^2: {peak:.0f} GFLOP/s\n")
    head = (f"{'layer':<11} {'dtype':<8} {'N':>5}  {'cconv ms':>9} {'GF/s':>6}  "
            f"{'im2col/BLAS ms':>14} {'GF/s':>6}  {'torch ms':>9} {'GF/s':>6}  {'torch/cconv':>11}")
    print(head)
    print("-" * len(head))
    for name in args.dtype:
        dtype = np.dtype(name)
        cases = (conv_cases(dtype, 50, rng) + conv_cases(dtype, 1000, rng)[:1]
                 + dense_cases(dtype, 50, rng, True) + dense_cases(dtype, 1000, rng, False))
        for layer, n, flops, ours, blas, theirs in cases:
            cells = []
            for fn in (ours, blas, theirs):
                if fn is None:
                    cells.append(None)
                else:
                    cells.append(median_seconds(fn, args.repeats))
            line = f"{layer:<11} {name:<8} {n:>5}"
            for width, t in zip((9, 14, 9), cells):
                if t is None:
                    line += f"  {'-':>{width}} {'-':>6}"
                else:
                    line += f"  {t * 1e3:>{width}.2f} {flops / t / 1e9:>6.0f}"
            ratio = f"{cells[2] / cells[0]:.2f}x" if cells[2] else "-"
            print(line + f"  {ratio:>11}")


if __name__ == "__main__":
    main()
