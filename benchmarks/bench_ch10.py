"""Seconds per epoch of the chapter-10 network, side by side in one run.

One epoch = 7 training batches of 128 images (forward, backward, SGD step) plus a test
pass over 10,000 images (in batches of --test-batch). Competitors:
  cconv float32, cconv float64, the NumPy oracle (cconv.oracle, float32), and PyTorch
  float32 on the CPU when it is installed (same network, same batches, same threads).

Images are random in [0, 1): speed does not depend on the pixel values.

    python benchmarks/bench_ch10.py [--repeats 5] [--threads 2]

Prints the median over --repeats epochs (after one warm-up epoch) for each competitor, the
ratios, and the machine's load average. The competitors take turns epoch by epoch, so the
ratios hold even when other processes come and go on a shared machine.
"""
import argparse
import os
import statistics
import time

import numpy as np

import cconv
from cconv import oracle
from cconv.layers import Conv2D, Dense, Dropout, Flatten, Input

TRAIN_BATCHES, BATCH, TEST_IMAGES, LR = 7, 128, 10_000, 2.0 / 128


def cconv_epoch_fn(dtype, x_train, y_train, x_test, y_test, test_batch):
    cconv.utils.set_random_seed(0)
    model = cconv.Sequential([Input((28, 28, 1)), Conv2D(16, 3, activation="tanh"),
                              Dropout(0.5), Flatten(), Dense(10, activation="softmax")],
                             dtype=dtype)
    model.compile(optimizer=cconv.optimizers.SGD(LR), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])

    def epoch():
        model.fit(x_train, y_train, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        model.evaluate(x_test, y_test, batch_size=test_batch)
    return epoch


def oracle_epoch_fn(x_train, y_train, x_test, y_test, test_batch):
    """The same network written directly with cconv.oracle (plain NumPy)."""
    rng = np.random.default_rng(0)
    kernels = rng.uniform(-0.3, 0.3, (3, 3, 1, 16)).astype(np.float32)
    bias = np.zeros(16, np.float32)
    dense_w = rng.uniform(-0.02, 0.02, (26 * 26 * 16, 10)).astype(np.float32)
    dense_b = np.zeros(10, np.float32)
    onehot = np.eye(10, dtype=np.float32)[y_train]

    def softmax(z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def epoch():
        nonlocal kernels, bias, dense_w, dense_b
        for i in range(TRAIN_BATCHES):
            xb, yb = x_train[i * BATCH:(i + 1) * BATCH], onehot[i * BATCH:(i + 1) * BATCH]
            h = oracle.tanh(oracle.conv2d(xb, kernels, bias))
            d, mask = oracle.dropout(h, 0.5, seed=i)
            p = softmax(oracle.dense(d.reshape(len(xb), -1), dense_w, dense_b))
            g = (p - yb) / len(xb)
            gd, gw, gb = oracle.dense_backward(d.reshape(len(xb), -1), dense_w, g)
            gh = oracle.tanh_backward(h, oracle.dropout_backward(gd.reshape(h.shape), mask, 0.5))
            _, gk, gkb = oracle.conv2d_backward(xb, kernels, gh, need_grad_x=False)
            dense_w -= LR * gw
            dense_b -= LR * gb
            kernels -= LR * gk
            bias -= LR * gkb
        for s in range(0, len(x_test), test_batch):
            h = oracle.tanh(oracle.conv2d(x_test[s:s + test_batch], kernels, bias))
            oracle.dense(h.reshape(len(h), -1), dense_w, dense_b).argmax(axis=1)
    return epoch


def torch_epoch_fn(x_train, y_train, x_test, y_test, test_batch, threads):
    try:
        import torch
    except ImportError:
        return None, None
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3), torch.nn.Tanh(), torch.nn.Dropout(0.5),
                              torch.nn.Flatten(), torch.nn.Linear(26 * 26 * 16, 10))
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    # PyTorch's native layout is channels-first; give it that, not a transposed view.
    xt = torch.from_numpy(np.ascontiguousarray(x_train.transpose(0, 3, 1, 2)))
    yt = torch.from_numpy(y_train.astype(np.int64))
    xs = torch.from_numpy(np.ascontiguousarray(x_test.transpose(0, 3, 1, 2)))

    def epoch():
        net.train()
        for i in range(TRAIN_BATCHES):
            opt.zero_grad()
            loss = loss_fn(net(xt[i * BATCH:(i + 1) * BATCH]), yt[i * BATCH:(i + 1) * BATCH])
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            for s in range(0, len(xs), test_batch):
                net(xs[s:s + test_batch]).argmax(dim=1)
    return epoch, torch.__version__


def median_seconds(epochs, repeats):
    """{name: median seconds per epoch}. Each competitor runs one warm-up epoch (first-touch
    page faults, thread pools), then the competitors take turns, one epoch each, so that a
    change in the machine's load between phases of the run hits them all alike."""
    for fn in epochs.values():
        fn()
    times = {name: [] for name in epochs}
    for _ in range(repeats):
        for name, fn in epochs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--test-batch", type=int, default=500)
    p.add_argument("--skip-oracle", action="store_true")
    args = p.parse_args()
    cconv.set_num_threads(args.threads)
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    rng = np.random.default_rng(0)
    x_train = rng.random((TRAIN_BATCHES * BATCH, 28, 28, 1), dtype=np.float32)
    y_train = rng.integers(0, 10, len(x_train))
    x_test = rng.random((TEST_IMAGES, 28, 28, 1), dtype=np.float32)
    y_test = rng.integers(0, 10, TEST_IMAGES)
    data = (x_train, y_train, x_test, y_test, args.test_batch)

    print(f"chapter-10 network, seconds per epoch ({TRAIN_BATCHES} x {BATCH} train + "
          f"{TEST_IMAGES} test images, test batch {args.test_batch}), median of "
          f"{args.repeats}, {args.threads} threads, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    epochs = {"cconv float32": cconv_epoch_fn("float32", *data),
              "cconv float64": cconv_epoch_fn("float64", x_train.astype(np.float64), y_train,
                                              x_test.astype(np.float64), y_test,
                                              args.test_batch)}
    if not args.skip_oracle:
        epochs["oracle (NumPy) float32"] = oracle_epoch_fn(*data)
    torch_fn, torch_version = torch_epoch_fn(*data, args.threads)
    if torch_fn is not None:
        epochs[f"PyTorch {torch_version} float32"] = torch_fn
    else:
        print("(PyTorch not installed: pip install torch==2.13.0 to include it)")
    results = median_seconds(epochs, args.repeats)

    base = results["cconv float32"]
    for name, seconds in results.items():
        print(f"  {name:<28} {seconds:8.4f} s/epoch   {seconds / base:6.2f}x cconv float32")
    if hasattr(os, "getloadavg"):
        # Other processes on the same cores slow every competitor, unevenly: say so.
        print(f"load average (1 min) at start {load_start:.2f}, at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
