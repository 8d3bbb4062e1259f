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
doing the arithmetic (see cconv.presets.run_book). `cconv train --preset fixed|book`
trains the same networks from the command line.

Run:  python examples/grokking_ch10.py [--book] [--epochs 300] [--threads N] [--dtype float32]
Data: see cconv.datasets.mnist.load_data (e.g. CCONV_DATA_DIR=/path/to/mnist).
"""
import argparse
import sys
import time

import cconv
from cconv.callbacks import Callback
from cconv.datasets import mnist
# The network and the book's replay live in the package, shared with `cconv train`.
from cconv.presets import BATCH_SIZE, TRAIN_IMAGES, book_train_step, run_book  # noqa: F401
from cconv.presets import build_fixed as build_model


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
        test_acc = run_book(x_train, y_train, x_test, y_test, args.epochs).test_acc
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
