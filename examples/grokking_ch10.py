"""Chapter 10 of Grokking Deep Learning, done right, through cconv's Keras-like API.

The book's network: 16 kernels of 3x3 with tanh, dropout 0.5, a dense layer of 10 with
softmax; trained on the first 1,000 MNIST training images in batches of 128 and tested
on all 10,000 test images after every epoch, printing lines like the book's:

    I:0 Test-Acc:0.xxxx Train-Acc:0.xxx

"Done right" means: every 26x26 window position, gradients of one consistent sign,
inverted dropout, a stable softmax cross-entropy, Keras's initialisers, and all 1,000
images each epoch (the last batch holds 104). The step size is the book's: it updates
with alpha = 2 times a gradient divided by batch_size**2, i.e. SGD with learning rate
2 / 128 on the mean loss. Train-Acc counts the training images classified right during
the epoch, with dropout on, as the book does.

With --book it instead replays the book's own listing, quirks and all, with cconv.ops
doing the arithmetic (see run_book).

Run:  python examples/grokking_ch10.py [--book] [--epochs 300] [--threads N] [--dtype float32]
Data: see cconv.datasets.mnist.load_data (e.g. CCONV_DATA_DIR=/path/to/mnist).
"""
import argparse
import sys
import time

import numpy as np

import cconv
from cconv import ops
from cconv.callbacks import Callback
from cconv.datasets import mnist
from cconv.layers import Conv2D, Dense, Dropout, Flatten, Input

BOOK_ALPHA, BATCH_SIZE, TRAIN_IMAGES = 2.0, 128, 1000


def build_model(dtype="float32"):
    model = cconv.Sequential([
        Input((28, 28, 1)),
        Conv2D(16, 3, activation="tanh"),
        Dropout(0.5),
        Flatten(),
        Dense(10, activation="softmax"),
    ], dtype=dtype)
    model.compile(optimizer=cconv.optimizers.SGD(learning_rate=BOOK_ALPHA / BATCH_SIZE),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


class BookLines(Callback):
    """After each epoch, test on the whole test set and print the book's line."""

    def __init__(self, x_test, y_test):
        super().__init__()
        self.x_test, self.y_test = x_test, y_test
        self.test_acc = []

    def on_epoch_end(self, epoch, logs=None):
        _, acc = self.model.evaluate(self.x_test, self.y_test, batch_size=500)
        self.test_acc.append(acc)
        print(f"I:{epoch} Test-Acc:{acc} Train-Acc:{logs['accuracy']}", flush=True)


def book_train_step(layer_0, labels, kernels, weights_1_2, dropout_mask, alpha):
    """One batch of the book's training loop. layer_0 is (batch, 27, 27, 1), kernels
    (3, 3, 1, 16), weights_1_2 (10000, 10). Returns (correct count, kernels, weights)."""
    batch_size = len(layer_0)
    layer_1 = ops.conv2d(layer_0, kernels, activation="tanh").reshape(batch_size, -1)
    layer_1, _ = ops.dropout(layer_1, 0.5, mask=dropout_mask)
    temp = np.exp(ops.dense(layer_1, weights_1_2))
    layer_2 = temp / np.sum(temp, axis=1, keepdims=True)
    correct = int((layer_2.argmax(axis=1) == labels.argmax(axis=1)).sum())
    layer_2_delta = (labels - layer_2) / (batch_size * layer_2.shape[0])
    back, dense_update, _ = ops.dense_backward(layer_1, weights_1_2, layer_2_delta)
    layer_1_delta = ops.tanh_backward(layer_1, back)
    layer_1_delta, _ = ops.dropout(layer_1_delta, 0.0, mask=dropout_mask)
    _, k_update, _ = ops.conv2d_backward(layer_0, kernels,
                                         layer_1_delta.reshape(batch_size, 25, 25, 16),
                                         need_grad_x=False)
    return correct, kernels - alpha * k_update, weights_1_2 + alpha * dense_update


def run_book(x_train, y_train, x_test, y_test, epochs):
    """The book's listing as printed, in float64, through cconv.ops. Its quirks are kept
    here on purpose, never in the library:
    - np.random.seed(1) and the book's order of draws: kernels, dense weights, then one
      randint mask per batch;
    - 7 batches of 128 (896 of the 1,000 images), yet Train-Acc divides by 1,000;
    - windows start at range(28 - 3): 25x25 positions, i.e. a 'valid' conv of the
      27x27 top-left crop; no biases;
    - a softmax without the max shift; the delta divided by batch_size**2;
    - dropout's mask and x2 applied to the layer, then the tanh derivative taken of that
      dropped, doubled layer, and the mask (without the x2) applied to the delta;
    - the kernels updated with -= while the dense weights use +=;
    - a test pass without dropout or softmax.
    """
    np.random.seed(1)
    alpha, batch_size = 2.0, 128
    images = x_train[:TRAIN_IMAGES].reshape(TRAIN_IMAGES, 28 * 28) / 255
    onehot = np.zeros((TRAIN_IMAGES, 10))
    onehot[np.arange(TRAIN_IMAGES), y_train[:TRAIN_IMAGES]] = 1
    crop = lambda flat: np.ascontiguousarray(flat.reshape(-1, 28, 28, 1)[:, :27, :27, :])
    test_images = crop(x_test.reshape(len(x_test), 28 * 28) / 255)
    kernels = (0.02 * np.random.random((3 * 3, 16)) - 0.01).reshape(3, 3, 1, 16)
    weights_1_2 = 0.2 * np.random.random((25 * 25 * 16, 10)) - 0.1
    test_acc = []
    for j in range(epochs):
        correct_cnt = 0
        for i in range(len(images) // batch_size):
            start, end = i * batch_size, (i + 1) * batch_size
            dropout_mask = np.random.randint(2, size=(batch_size, 25 * 25 * 16))
            correct, kernels, weights_1_2 = book_train_step(
                crop(images[start:end]), onehot[start:end], kernels, weights_1_2,
                dropout_mask, alpha)
            correct_cnt += correct
        test_correct_cnt = 0
        for s in range(0, len(test_images), 500):
            layer_1 = ops.conv2d(test_images[s:s + 500], kernels, activation="tanh")
            layer_2 = ops.dense(layer_1.reshape(len(layer_1), -1), weights_1_2)
            test_correct_cnt += int((layer_2.argmax(axis=1) == y_test[s:s + 500]).sum())
        test_acc.append(test_correct_cnt / float(len(test_images)))
        print("I:" + str(j) + " Test-Acc:" + str(test_acc[-1]) +
              " Train-Acc:" + str(correct_cnt / float(len(images))), flush=True)
    return test_acc


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--book", action="store_true",
                   help="replay the book's listing exactly (float64, its quirks included)")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--threads", type=int, default=None, help="OpenMP threads (default: all)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--data", default=None, help="MNIST folder or mnist.npz (default: lookup)")
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error("--epochs must be >= 1")
    if args.threads is not None:
        cconv.set_num_threads(args.threads)
    cconv.utils.set_random_seed(args.seed)

    (x_train, y_train), (x_test, y_test) = mnist.load_data(args.data)
    if args.book:
        start = time.perf_counter()
        test_acc = run_book(x_train, y_train, x_test, y_test, args.epochs)
        elapsed = time.perf_counter() - start
        print(f"\n{args.epochs} epochs (book mode) in {elapsed:.1f} s "
              f"({elapsed / args.epochs:.3f} s per epoch, {cconv.get_num_threads()} threads, "
              f"float64); final test accuracy {test_acc[-1]:.4f}")
        return 0
    # Pixels scaled to [0, 1] as in the book; cconv itself never rescales.
    images = x_train[:TRAIN_IMAGES, :, :, None] / 255.0
    labels = y_train[:TRAIN_IMAGES]
    test_images = x_test[:, :, :, None] / 255.0

    model = build_model(args.dtype)
    book = BookLines(test_images, y_test)
    start = time.perf_counter()
    model.fit(images, labels, batch_size=BATCH_SIZE, epochs=args.epochs, verbose=0,
              callbacks=[book])
    elapsed = time.perf_counter() - start
    print(f"\n{args.epochs} epochs in {elapsed:.1f} s ({elapsed / args.epochs:.3f} s per "
          f"epoch, {cconv.get_num_threads()} threads, {args.dtype}); "
          f"final test accuracy {book.test_acc[-1]:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
