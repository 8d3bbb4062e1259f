"""Training and inference throughput of the TensorFlow tutorial's MNIST network:
cconv float32 against PyTorch on the CPU, side by side in one run.

    conv 5x5x32 'same' relu, maxpool 2, conv 5x5x64 'same' relu, maxpool 2,
    flatten, dense 1024 relu, dropout 0.5, dense 10 (logits); Adam

Training: images/s over --train-steps batches of 50 (forward, backward, Adam step).
Inference: images/s over one batch of 1000. Both sides: the same network, the
tutorial's initialisation (truncated normal 0.1, biases 0.1), the same thread count,
random images in [0, 1) (speed does not depend on pixel values). Medians over
--repeats runs after a warm-up run.

Achieved GFLOP/s counts multiply-adds as two FLOPs over every 5x5 tap (padding
included): forward 27.77 MFLOP per image; training is forward + weight gradients +
input gradients (all but conv1's), 82.05 MFLOP per image. The machine's float32 peak
is measured in the same run, before and after the networks, as numpy's 2048x2048
matmul on the same number of threads; the better of the two counts. These are
"effective" GFLOP/s: cconv's conv2 runs Winograd F(2x2, 5x5), which does 36 products
where the direct convolution does 100, so its share can pass 100% of the peak.

    python benchmarks/bench_tfnet.py [--repeats 5] [--threads 2] [--train-steps 8]
"""
import argparse
import os


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train-steps", type=int, default=8, help="batches of 50 per timing")
    p.add_argument("--skip-torch", action="store_true")
    return p.parse_args()


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:
    # numpy's OpenBLAS reads its thread count once, when it loads.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(ARGS.threads))

import ctypes  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import cconv  # noqa: E402

from cconv.presets import build_tf  # noqa: E402

BATCH, INFER_BATCH = 50, 1000
MACS = {  # multiply-adds per image, forward
    "conv1": 28 * 28 * 32 * 5 * 5 * 1,
    "conv2": 14 * 14 * 64 * 5 * 5 * 32,
    "dense1": 7 * 7 * 64 * 1024,
    "dense2": 1024 * 10,
}
FORWARD_FLOP = 2 * sum(MACS.values())
TRAIN_FLOP = 3 * FORWARD_FLOP - 2 * MACS["conv1"]  # conv1 needs no input gradient


def median_rate(fn, images, repeats):
    """Median images/s of fn() over `repeats` runs, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return images / statistics.median(times)


def openblas_info():
    """(core name, threads) of the OpenBLAS numpy loaded, read from the library itself."""
    path = None
    with open("/proc/self/maps") as maps:
        for line in maps:
            if "openblas" in line.lower() and ".so" in line:
                path = line.split()[-1]
                break
    if path is None:
        return "unknown (no OpenBLAS library mapped)", None
    lib = ctypes.CDLL(path)
    info = []
    for suffix, restype in (("get_corename", ctypes.c_char_p), ("get_num_threads", ctypes.c_int)):
        for name in (f"scipy_openblas_{suffix}64_", f"openblas_{suffix}64_", f"openblas_{suffix}"):
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.restype = restype
                value = fn()
                info.append(value.decode() if isinstance(value, bytes) else value)
                break
        else:
            info.append(None)
    return info[0] or "unknown", info[1]


def gemm_peak(repeats):
    """float32 GFLOP/s of numpy's 2048x2048 matmul (2 n^3 FLOPs), median of repeats."""
    rng = np.random.default_rng(0)
    a = rng.random((2048, 2048), dtype=np.float32)
    b = rng.random((2048, 2048), dtype=np.float32)
    out = np.empty_like(a)
    rate = median_rate(lambda: np.matmul(a, b, out=out), 1, max(repeats, 5))
    return rate * 2 * 2048 ** 3 / 1e9


def cconv_fns(x_train, y_train, x_infer):
    cconv.utils.set_random_seed(0)
    model = build_tf()
    model.build()

    def train():
        model.fit(x_train, y_train, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)

    def infer():
        model.predict(x_infer, batch_size=INFER_BATCH)
    return train, infer


def torch_fns(x_train, y_train, x_infer, threads):
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    nn = torch.nn
    net = nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(7 * 7 * 64, 1024), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(1024, 10))
    with torch.no_grad():
        for module in net:
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(module.weight, std=0.1, a=-0.2, b=0.2)
                nn.init.constant_(module.bias, 0.1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4, eps=1e-7)
    loss_fn = nn.CrossEntropyLoss()
    # PyTorch's native layout is channels-first: give it that, not a transposed view.
    xt = torch.from_numpy(np.ascontiguousarray(x_train.transpose(0, 3, 1, 2)))
    yt = torch.from_numpy(y_train.astype(np.int64))
    xi = torch.from_numpy(np.ascontiguousarray(x_infer.transpose(0, 3, 1, 2)))

    def train():
        net.train()
        for s in range(0, len(xt), BATCH):
            opt.zero_grad()
            loss_fn(net(xt[s:s + BATCH]), yt[s:s + BATCH]).backward()
            opt.step()

    def infer():
        net.eval()
        with torch.no_grad():
            net(xi)
    return train, infer, torch.__version__


def main():
    args = ARGS
    cconv.set_num_threads(args.threads)
    core, blas_threads = openblas_info()
    print(f"TF-tutorial network, float32, {args.threads} threads, median of {args.repeats} "
          f"after a warm-up; training: {args.train_steps} batches of {BATCH}, Adam; "
          f"inference: one batch of {INFER_BATCH}")
    print(f"numpy {np.__version__}, OpenBLAS core {core} ({blas_threads} threads), "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    peak_before = gemm_peak(args.repeats)
    print(f"FLOPs per image: forward {FORWARD_FLOP / 1e6:.2f} M, training "
          f"{TRAIN_FLOP / 1e6:.2f} M\n")

    rng = np.random.default_rng(0)
    x_train = rng.random((args.train_steps * BATCH, 28, 28, 1), dtype=np.float32)
    y_train = rng.integers(0, 10, len(x_train))
    x_infer = rng.random((INFER_BATCH, 28, 28, 1), dtype=np.float32)

    rows = {}
    train, infer = cconv_fns(x_train, y_train, x_infer)
    rows[f"cconv {cconv.__version__}"] = (median_rate(train, len(x_train), args.repeats),
                                          median_rate(infer, INFER_BATCH, args.repeats))
    if not args.skip_torch:
        try:
            train, infer, version = torch_fns(x_train, y_train, x_infer, args.threads)
        except ImportError:
            print("(PyTorch not installed: pip install torch==2.13.0 to compare)")
        else:
            rows[f"PyTorch {version}"] = (median_rate(train, len(x_train), args.repeats),
                                          median_rate(infer, INFER_BATCH, args.repeats))

    # Measured before and after: on a shared machine the better one is nearer the peak.
    peak_after = gemm_peak(args.repeats)
    peak = max(peak_before, peak_after)
    print(f"float32 GEMM peak (numpy matmul 2048x2048): {peak:.1f} GFLOP/s "
          f"(before {peak_before:.1f}, after {peak_after:.1f})\n")
    head = (f"{'':<22}{'train img/s':>12}{'GFLOP/s':>9}{'% peak':>8}"
            f"{'infer img/s':>13}{'GFLOP/s':>9}{'% peak':>8}")
    print(head)
    print("-" * len(head))
    for name, (tr, inf) in rows.items():
        tg, ig = tr * TRAIN_FLOP / 1e9, inf * FORWARD_FLOP / 1e9
        print(f"{name:<22}{tr:>12.0f}{tg:>9.1f}{100 * tg / peak:>7.1f}%"
              f"{inf:>13.0f}{ig:>9.1f}{100 * ig / peak:>7.1f}%")
    print("(effective GFLOP/s: direct-convolution FLOPs over time; Winograd does fewer)")
    if len(rows) == 2:
        (tr_c, inf_c), (tr_t, inf_t) = rows.values()
        print(f"\ncconv / PyTorch: training {tr_c / tr_t:.2f}x, inference {inf_c / inf_t:.2f}x")


if __name__ == "__main__":
    main()
