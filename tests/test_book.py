"""examples/grokking_ch10.py --book: the book's listing replayed through cconv.ops."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np

from conftest import same_cconv_env

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "grokking_ch10.py"

BOOK_LINES = [  # the first lines printed in Grokking Deep Learning, chapter 10
    "I:0 Test-Acc:0.0288 Train-Acc:0.055",
    "I:1 Test-Acc:0.0273 Train-Acc:0.037",
    "I:2 Test-Acc:0.028 Train-Acc:0.037",
    "I:3 Test-Acc:0.0292 Train-Acc:0.04",
    "I:4 Test-Acc:0.0339 Train-Acc:0.046",
    "I:5 Test-Acc:0.0478 Train-Acc:0.068",
    "I:6 Test-Acc:0.076 Train-Acc:0.083",
    "I:7 Test-Acc:0.1316 Train-Acc:0.096",
    "I:8 Test-Acc:0.2137 Train-Acc:0.127",
]


def load_example():
    spec = importlib.util.spec_from_file_location("grokking_ch10", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def book_step_numpy(images, labels, kernels, weights_1_2, dropout_mask, alpha):
    """The listing's training step, line for line in NumPy (images: (batch, 784))."""
    def get_image_section(layer, row_from, row_to, col_from, col_to):
        section = layer[:, row_from:row_to, col_from:col_to]
        return section.reshape(-1, 1, row_to - row_from, col_to - col_from)

    batch_size = len(images)
    layer_0 = images.reshape(batch_size, 28, 28)
    sects = [get_image_section(layer_0, r, r + 3, c, c + 3)
             for r in range(28 - 3) for c in range(28 - 3)]
    expanded_input = np.concatenate(sects, axis=1)
    es = expanded_input.shape
    flattened_input = expanded_input.reshape(es[0] * es[1], -1)
    kernel_output = flattened_input.dot(kernels)
    layer_1 = np.tanh(kernel_output.reshape(es[0], -1))
    layer_1 *= dropout_mask * 2
    temp = np.exp(np.dot(layer_1, weights_1_2))
    layer_2 = temp / np.sum(temp, axis=1, keepdims=True)
    correct = int((layer_2.argmax(axis=1) == labels.argmax(axis=1)).sum())
    layer_2_delta = (labels - layer_2) / (batch_size * layer_2.shape[0])
    layer_1_delta = layer_2_delta.dot(weights_1_2.T) * (1 - layer_1 ** 2)
    layer_1_delta *= dropout_mask
    weights_1_2 = weights_1_2 + alpha * layer_1.T.dot(layer_2_delta)
    k_update = flattened_input.T.dot(layer_1_delta.reshape(kernel_output.shape))
    return correct, kernels - alpha * k_update, weights_1_2


def test_book_step_equals_plain_numpy():
    example = load_example()
    rng = np.random.default_rng(5)
    batch = 16
    images = rng.random((batch, 784))
    labels = np.eye(10)[rng.integers(0, 10, batch)]
    # Larger weights than the book's start, so the step moves everything measurably.
    kernels = rng.uniform(-0.5, 0.5, (9, 16))
    weights = rng.uniform(-0.1, 0.1, (25 * 25 * 16, 10))
    mask = rng.integers(0, 2, (batch, 25 * 25 * 16))

    want_correct, want_k, want_w = book_step_numpy(images, labels, kernels, weights, mask, 2.0)
    crop = np.ascontiguousarray(images.reshape(batch, 28, 28, 1)[:, :27, :27, :])
    got_correct, got_k, got_w = example.book_train_step(
        crop, labels, kernels.reshape(3, 3, 1, 16), weights, mask, 2.0)

    assert got_correct == want_correct
    assert not np.allclose(want_k, kernels) and not np.allclose(want_w, weights)
    np.testing.assert_allclose(got_k.reshape(9, 16), want_k, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got_w, want_w, rtol=1e-12, atol=1e-14)


def test_book_run_prints_the_books_lines(mnist_dir):
    run = subprocess.run([sys.executable, str(EXAMPLE), "--book", "--epochs", str(len(BOOK_LINES)),
                          "--data", mnist_dir], capture_output=True, text=True, timeout=600,
                         env=same_cconv_env())
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[:len(BOOK_LINES)] == BOOK_LINES
