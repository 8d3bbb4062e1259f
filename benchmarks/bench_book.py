"""The book's chapter-10 listing (NumPy loops) against `grokking_ch10.py --book` (cconv
kernels), a few epochs of each, side by side in one run, on the real MNIST files.

    CCONV_DATA_DIR=/path/to/mnist python benchmarks/bench_book.py [--epochs 2]

Both run the same float64 arithmetic from np.random.seed(1); the book's test pass goes
image by image, as printed. Prints seconds per epoch (median), the ratio, and each one's
GFLOP/s (the direct algorithm's FLOPs, flops.py: cconv's replay skips the blank
margins' windows, counted all the same) in percent of the float64 FMA peak (peak.py) at
the level each runs, on all visible cores.
"""
import argparse
import importlib.util
import os
import statistics
import time
from pathlib import Path

import numpy as np

import cconv
import flops
import peak
from cconv.datasets import mnist

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "grokking_ch10.py"
TRAIN_IMAGES, BATCH = 1000, 128


def epoch_flop(test_images):
    """FLOPs of one epoch of the book's network: 3x3x16 windows over 25x25 positions (its
    range(28 - 3)), no biases, dense 10000 -> 10; 7 batches of 128, then the test pass."""
    from cconv.layers import Conv2D, Dense, Flatten, Input
    model = cconv.Sequential([Input((27, 27, 1)), Conv2D(16, 3, use_bias=False), Flatten(),
                              Dense(10, use_bias=False)], dtype="float64")
    model.build()
    count = flops.count(model)
    return TRAIN_IMAGES // BATCH * BATCH * count.training + test_images * count.forward


def book_listing(x_train, y_train, x_test, y_test, epochs):
    """The listing as printed (restored to runnable Python); returns seconds per epoch."""
    np.random.seed(1)
    images = x_train[:TRAIN_IMAGES].reshape(TRAIN_IMAGES, 28 * 28) / 255
    labels = y_train[:TRAIN_IMAGES]
    labels = np.eye(10)[labels]
    test_images = x_test.reshape(len(x_test), 28 * 28) / 255
    test_labels = np.eye(10)[y_test]
    alpha, batch_size = 2, BATCH
    kernel_rows = kernel_cols = 3
    kernels = 0.02 * np.random.random((kernel_rows * kernel_cols, 16)) - 0.01
    weights_1_2 = 0.2 * np.random.random((25 * 25 * 16, 10)) - 0.1

    def get_image_section(layer, row_from, row_to, col_from, col_to):
        section = layer[:, row_from:row_to, col_from:col_to]
        return section.reshape(-1, 1, row_to - row_from, col_to - col_from)

    def flatten_windows(layer_0):
        sects = [get_image_section(layer_0, r, r + kernel_rows, c, c + kernel_cols)
                 for r in range(layer_0.shape[1] - kernel_rows)
                 for c in range(layer_0.shape[2] - kernel_cols)]
        expanded_input = np.concatenate(sects, axis=1)
        es = expanded_input.shape
        return expanded_input.reshape(es[0] * es[1], -1), es

    times = []
    for j in range(epochs):
        start = time.perf_counter()
        correct_cnt = 0
        for i in range(int(len(images) / batch_size)):
            batch_start, batch_end = i * batch_size, (i + 1) * batch_size
            layer_0 = images[batch_start:batch_end].reshape(batch_size, 28, 28)
            flattened_input, es = flatten_windows(layer_0)
            kernel_output = flattened_input.dot(kernels)
            layer_1 = np.tanh(kernel_output.reshape(es[0], -1))
            dropout_mask = np.random.randint(2, size=layer_1.shape)
            layer_1 *= dropout_mask * 2
            temp = np.exp(np.dot(layer_1, weights_1_2))
            layer_2 = temp / np.sum(temp, axis=1, keepdims=True)
            correct_cnt += int((layer_2.argmax(axis=1) ==
                                labels[batch_start:batch_end].argmax(axis=1)).sum())
            layer_2_delta = (labels[batch_start:batch_end] - layer_2) / (batch_size * batch_size)
            layer_1_delta = layer_2_delta.dot(weights_1_2.T) * (1 - layer_1 ** 2)
            layer_1_delta *= dropout_mask
            weights_1_2 += alpha * layer_1.T.dot(layer_2_delta)
            k_update = flattened_input.T.dot(layer_1_delta.reshape(kernel_output.shape))
            kernels -= alpha * k_update
        test_correct_cnt = 0
        for i in range(len(test_images)):
            flattened_input, es = flatten_windows(test_images[i:i + 1].reshape(1, 28, 28))
            layer_1 = np.tanh(flattened_input.dot(kernels).reshape(es[0], -1))
            layer_2 = np.dot(layer_1, weights_1_2)
            test_correct_cnt += int(np.argmax(layer_2) == np.argmax(test_labels[i:i + 1]))
        times.append(time.perf_counter() - start)
        print(f"  book listing  I:{j} Test-Acc:{test_correct_cnt / len(test_images)} "
              f"Train-Acc:{correct_cnt / len(images)}", flush=True)
    return times


def cconv_book(x_train, y_train, x_test, y_test, epochs):
    spec = importlib.util.spec_from_file_location("grokking_ch10", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    start = time.perf_counter()
    example.run_book(x_train, y_train, x_test, y_test, epochs)
    return [(time.perf_counter() - start) / epochs]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=2)
    args = p.parse_args()
    (x_train, y_train), (x_test, y_test) = mnist.load_data()
    data = (x_train, y_train, x_test, y_test)
    book = statistics.median(book_listing(*data, args.epochs))
    fast = statistics.median(cconv_book(*data, args.epochs))
    flop = epoch_flop(len(x_test))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    for label, seconds, level in (("book listing (NumPy)", book, peak.best_level()),
                                  ("cconv --book", fast, cconv.cpu_capability())):
        rate = flop / seconds / 1e9
        print(f"{label + ':':<24}{seconds:8.3f} s/epoch  {rate:7.2f} GFLOP/s  "
              f"{100 * rate / peak.peak_flops(level, cores, 'float64'):5.1f}% of the "
              f"fp64 peak at {level} on {cores} threads")
    print(f"speed-up:               {book / fast:8.1f}x  "
          f"(300 epochs: {300 * book:.0f} s vs {300 * fast:.0f} s; "
          f"{flop / 1e9:.2f} GFLOP an epoch)")


if __name__ == "__main__":
    main()
