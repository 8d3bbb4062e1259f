"""A small residual CNN on MNIST, written in Keras's functional style: two residual
blocks (conv -> conv, added to the block's input), global average pooling and a softmax
head. Prints the test accuracy after each epoch, then images per second of training and
inference; with --compare, the same network's speed in PyTorch and in Keras 3 (each in
its own process, 2 threads, when installed).

    python examples/resnet_mnist.py [--epochs 3] [--train 60000] [--compare]

Reads MNIST as cconv.datasets.mnist does (CCONV_DATA_DIR=/path/to/mnist)."""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

BATCH, FILTERS = 128, 16


def residual_net(keras):
    """The network, with keras = cconv, or the keras package itself."""
    layers = keras.layers
    inputs = keras.Input((28, 28, 1))
    x = layers.Conv2D(FILTERS, 3, padding="same", activation="relu")(inputs)
    for _ in range(2):
        y = layers.Conv2D(FILTERS, 3, padding="same", activation="relu")(x)
        y = layers.Conv2D(FILTERS, 3, padding="same")(y)
        x = layers.Activation("relu")(layers.Add()([x, y]))
        x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="resnet_mnist")


def images_per_second(run, n, repeats=3):
    """The best of `repeats` timings of run() over n images."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return n / best


def measure_keras(n):
    import keras
    net = residual_net(keras)
    net.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).random((n, 28, 28, 1), dtype=np.float32)
    y = np.arange(n) % 10
    net.fit(x[:BATCH], y[:BATCH], batch_size=BATCH, verbose=0)  # compile the step
    return (images_per_second(lambda: net.fit(x, y, batch_size=BATCH, verbose=0), n),
            images_per_second(lambda: net.predict(x, batch_size=BATCH, verbose=0), n))


def measure_torch(n):
    import torch
    torch.set_num_threads(2)
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(FILTERS, FILTERS, 3, padding=1)
            self.b = nn.Conv2d(FILTERS, FILTERS, 3, padding=1)

        def forward(self, x):
            return nn.functional.max_pool2d(torch.relu(x + self.b(torch.relu(self.a(x)))), 2)

    net = nn.Sequential(nn.Conv2d(1, FILTERS, 3, padding=1), nn.ReLU(), Block(), Block(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(FILTERS, 10))
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    x = torch.rand(n, 1, 28, 28)
    y = torch.arange(n) % 10

    def train():
        for i in range(0, n, BATCH):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[i:i + BATCH]), y[i:i + BATCH]).backward()
            opt.step()

    def infer():
        with torch.no_grad():
            for i in range(0, n, BATCH):
                net(x[i:i + BATCH])
    return images_per_second(train, n), images_per_second(infer, n)


def compare(n):
    """Each competitor in its own process: {name: (train img/s, inference img/s)}."""
    out = {}
    for name in ("torch", "keras"):
        env = dict(os.environ, OMP_NUM_THREADS="2", KERAS_BACKEND=os.environ.get(
            "KERAS_BACKEND", "jax"), XLA_FLAGS="--xla_cpu_multi_thread_eigen=true")
        done = subprocess.run([sys.executable, __file__, "--engine", name, "--n", str(n)],
                              capture_output=True, text=True, env=env)
        if done.returncode == 0:
            out[name] = json.loads(done.stdout.strip().splitlines()[-1])
        else:
            print(f"{name}: not measured ({done.stderr.strip().splitlines()[-1:]})")
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train", type=int, default=60000, help="training images used")
    parser.add_argument("--compare", action="store_true",
                        help="also time PyTorch and Keras on the same network")
    parser.add_argument("--engine", choices=["torch", "keras"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=2048, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:
        print(json.dumps((measure_torch if args.engine == "torch" else measure_keras)(args.n)))
        return

    import cconv
    from cconv.datasets import mnist
    (x_train, y_train), (x_test, y_test) = mnist.load_data()
    x_train = x_train[:args.train, ..., None] / 255.0
    y_train = y_train[:args.train]
    x_test = x_test[..., None] / 255.0

    cconv.utils.set_random_seed(1)
    model = residual_net(cconv)
    model.compile(cconv.optimizers.Adam(0.003),
                  "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.summary()
    started = time.perf_counter()
    for epoch in range(args.epochs):
        model.fit(x_train, y_train, batch_size=BATCH, epochs=1, verbose=0, seed=epoch)
        _, acc = model.evaluate(x_test, y_test, verbose=0)
        print(f"epoch {epoch + 1}: test accuracy {acc:.4f}")
    print(f"{args.epochs} epochs in {time.perf_counter() - started:.1f} s; final test "
          f"accuracy {acc:.4f}")

    n = args.n
    xs = np.random.default_rng(0).random((n, 28, 28, 1), dtype=np.float32)
    ys = np.arange(n) % 10
    rates = {"cconv": (
        images_per_second(lambda: model.fit(xs, ys, batch_size=BATCH, verbose=0), n),
        images_per_second(lambda: model.predict(xs, verbose=0), n))}
    if args.compare:
        rates.update(compare(n))
    for name, (train, infer) in rates.items():
        ratio = "" if name == "cconv" else (f"  (cconv {rates['cconv'][0] / train:.2f}x / "
                                            f"{rates['cconv'][1] / infer:.2f}x)")
        print(f"{name:6s} train {train:7.0f} img/s, inference {infer:7.0f} img/s{ratio}")


if __name__ == "__main__":
    main()
