"""The TensorFlow tutorial's MNIST network ("Deep MNIST for experts"), through cconv.

    conv 5x5, 32 filters, 'same', ReLU -> max pool 2x2
    conv 5x5, 64 filters, 'same', ReLU -> max pool 2x2
    flatten 7x7x64 -> dense 1024, ReLU -> dropout 0.5 -> dense 10 (logits)
    softmax cross-entropy on the logits, Adam with learning rate 1e-4, batches of 50

initialised as the tutorial does: weights from a normal of stddev 0.1 cut at two
standard deviations, biases 0.1. The network is cconv.presets.build_tf, which
`cconv train --preset tf` trains too. Pixels are scaled to [0, 1]. It trains on all 60,000
training images and reports the accuracy on the 10,000 test images after every epoch.
The tutorial reaches about 99.2% after 20,000 steps of 50 (about 17 epochs). The
"train acc" printed is Keras's: counted during the epoch, with dropout on.

Run:  python examples/tf_tutorial_cnn.py [--epochs 17] [--limit 2000] [--threads 2]
Data: see cconv.datasets.mnist.load_data (e.g. --data /path/to/mnist or CCONV_DATA_DIR).
"""
import argparse
import time

import numpy as np

import cconv
from cconv.datasets import mnist
from cconv.presets import build_tf

LEARNING_RATE = 1e-4


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=17,
                   help="passes over the training images (default 17: the tutorial's "
                        "20,000 steps of 50)")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--limit", type=int, default=None,
                   help="train on only the first LIMIT training images")
    p.add_argument("--test-limit", type=int, default=None,
                   help="test on only the first TEST_LIMIT test images")
    p.add_argument("--learning-rate", type=float, default=LEARNING_RATE)
    p.add_argument("--threads", type=int, default=None,
                   help="OpenMP threads (default: $OMP_NUM_THREADS, else every core)")
    p.add_argument("--data", default=None, help="folder of the MNIST IDX files or mnist.npz")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    for name in ("epochs", "batch_size", "limit", "test_limit", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.threads:
        cconv.set_num_threads(args.threads)

    (x_train, y_train), (x_test, y_test) = mnist.load_data(args.data)
    x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    x_test, y_test = x_test[:args.test_limit], y_test[:args.test_limit]
    x_train = (x_train[..., None] / np.float32(255)).astype(np.float32)
    x_test = (x_test[..., None] / np.float32(255)).astype(np.float32)

    cconv.utils.set_random_seed(args.seed)
    model = build_tf(learning_rate=args.learning_rate)
    model.summary()
    steps = -(-len(x_train) // args.batch_size)
    print(f"{len(x_train):,} training images ({steps:,} steps of {args.batch_size} per "
          f"epoch), {len(x_test):,} test images, {cconv.get_num_threads()} threads, "
          f"Adam {args.learning_rate:g}", flush=True)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        logs = model.fit(x_train, y_train, batch_size=args.batch_size, epochs=1,
                         verbose=0).history
        t1 = time.perf_counter()
        _, test_acc = model.evaluate(x_test, y_test, batch_size=1000)
        t2 = time.perf_counter()
        print(f"epoch {epoch + 1}/{args.epochs}: loss {logs['loss'][0]:.4f}, train acc "
              f"{logs['accuracy'][0]:.4f}, test acc {test_acc:.4f}; {t1 - t0:.1f} s training "
              f"({len(x_train) / (t1 - t0):.0f} images/s), {t2 - t1:.1f} s testing",
              flush=True)
    total = time.perf_counter() - start
    print(f"\n{args.epochs} epochs in {total:.1f} s ({total / args.epochs:.1f} s per epoch); "
          f"final test accuracy {test_acc:.4f}")


if __name__ == "__main__":
    main()
