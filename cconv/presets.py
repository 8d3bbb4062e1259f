"""The networks that the examples and the command line train, each defined once.

- "fixed": chapter 10 of *Grokking Deep Learning* done right: 16 kernels of 3x3 with
  tanh, dropout 0.5, a dense layer of 10 with softmax; SGD with the book's step size on
  the first 1,000 MNIST training images in batches of 128.
- "book": the book's own listing replayed with its quirks (run_book). What it trains is
  stored and evaluated as `build_book()`, the model that its test pass computes.
- "tf": the network of TensorFlow's "Deep MNIST for experts" tutorial: conv 5x5x32 and
  conv 5x5x64 ("same", relu), each followed by 2x2 max pooling, dense 1024 relu,
  dropout 0.5, dense 10 logits; Adam(1e-4), batches of 50, all 60,000 images. Its
  weights start as the tutorial's do: a normal of stddev 0.1 cut at two standard
  deviations, and biases of 0.1.

Images go in as MNIST's uint8 (N, 28, 28) arrays; `Preset.prepare` turns them into
what the model takes (a channel axis, pixels / 255, and for "book" the 27x27 crop).
A weights file saved by `save` records its preset's name, so `load` can rebuild it.
"""
from collections import namedtuple

import numpy as np

from cconv import layers, losses, ops, optimizers, saving
from cconv._version import __version__
from cconv.initializers import tutorial_bias, tutorial_normal  # noqa: F401 (presets' API)
from cconv.models import Sequential

BOOK_ALPHA, BATCH_SIZE, TRAIN_IMAGES = 2.0, 128, 1000
TF_BATCH_SIZE = 50


def build_fixed(dtype="float32"):
    """Chapter 10 done right, compiled. The book updates with alpha = 2 times a gradient
    divided by batch_size**2, i.e. SGD with learning rate 2 / 128 on the mean loss."""
    model = Sequential([
        layers.Input((28, 28, 1)),
        layers.Conv2D(16, 3, activation="tanh"),
        layers.Dropout(0.5),
        layers.Flatten(),
        layers.Dense(10, activation="softmax"),
    ], dtype=dtype)
    model.compile(optimizer=optimizers.SGD(learning_rate=BOOK_ALPHA / BATCH_SIZE),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def build_book(dtype="float64"):
    """The network the book's test pass computes: a 'valid' 3x3 conv of the 27x27
    top-left crop without biases, tanh, a dense layer without biases. Its argmax is the
    book's prediction; the softmax only adds a loss to report."""
    model = Sequential([
        layers.Input((27, 27, 1)),
        layers.Conv2D(16, 3, activation="tanh", use_bias=False),
        layers.Flatten(),
        layers.Dense(10, activation="softmax", use_bias=False),
    ], dtype=dtype)
    model.compile(optimizer=optimizers.SGD(learning_rate=BOOK_ALPHA),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def build_tf(dtype="float32", learning_rate=1e-4):
    init = dict(kernel_initializer=tutorial_normal, bias_initializer=tutorial_bias)
    model = Sequential([
        layers.Input((28, 28, 1)),
        layers.Conv2D(32, 5, activation="relu", padding="same", **init),
        layers.MaxPooling2D(pool_size=2),
        layers.Conv2D(64, 5, activation="relu", padding="same", **init),
        layers.MaxPooling2D(pool_size=2),
        layers.Flatten(),
        layers.Dense(1024, activation="relu", **init),
        layers.Dropout(0.5),
        layers.Dense(10, **init),
    ], dtype=dtype)
    model.compile(optimizer=optimizers.Adam(learning_rate=learning_rate),
                  loss=losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def _scaled(x, dtype):
    out = np.asarray(x)[..., None].astype(dtype)
    out /= out.dtype.type(255)
    return out


def _book_crop(x, dtype):
    return np.ascontiguousarray(_scaled(x, dtype)[:, :27, :27, :])


Preset = namedtuple("Preset", "name description build prepare batch_size train_images "
                              "epochs")
Preset.__doc__ = """A named network: build() -> compiled model, prepare(uint8 images,
dtype) -> model input, batch_size, train_images (how many of MNIST's training images it
learns from) and its default number of epochs."""

PRESETS = {
    "fixed": Preset("fixed", "chapter 10 of Grokking Deep Learning, done right",
                    build_fixed, _scaled, BATCH_SIZE, TRAIN_IMAGES, 300),
    "book": Preset("book", "chapter 10's listing replayed as printed, quirks included",
                   build_book, _book_crop, BATCH_SIZE, TRAIN_IMAGES, 300),
    # 17 epochs of 1,200 batches: about the tutorial's 20,000 steps of 50
    "tf": Preset("tf", "TensorFlow's 'Deep MNIST for experts' network",
                 build_tf, _scaled, TF_BATCH_SIZE, 60000, 17),
}


def get(name):
    if name not in PRESETS:
        raise ValueError(f"preset: expected one of {sorted(PRESETS)}, got {name!r}")
    return PRESETS[name]


def save(model, preset, path):
    """model.save_weights(path), recording the preset's name in the file."""
    get(preset)
    model.save_weights(path, metadata={"preset": preset, "cconv_version": __version__})


def read_preset(path):
    """The preset name recorded in a weights file by `save`."""
    name = saving.read_metadata(
        path, "preset", "does not record a preset (it was not saved by 'cconv train "
        "--save'); load it with Sequential.load_weights")
    if name not in PRESETS:
        raise ValueError(f"{path} was saved for preset {name!r}, which this cconv does not "
                         f"know (known: {', '.join(sorted(PRESETS))})")
    return name


def load(path):
    """(preset name, compiled model with the saved weights) from a file written by save."""
    name = read_preset(path)
    model = PRESETS[name].build()
    model.load_weights(path)
    return name, model


# ---- the book's listing ------------------------------------------------------------------
BookRun = namedtuple("BookRun", "train_acc test_acc kernels weights_1_2")
BookBuffers = namedtuple("BookBuffers", "layer_1 layer_1_delta")


def book_buffers(batch_size):
    """Memory that book_train_step reuses from batch to batch: here, touching fresh
    pages costs more than the arithmetic done in them."""
    return BookBuffers(np.empty((batch_size, 25, 25, 16)), np.empty((batch_size, 25 * 25 * 16)))


def book_train_step(layer_0, labels, kernels, weights_1_2, dropout_mask, alpha,
                    buffers=None):
    """One batch of the book's training loop. layer_0 is (batch, 27, 27, 1), kernels
    (3, 3, 1, 16), weights_1_2 (10000, 10); buffers from book_buffers(batch), or None for
    new ones. Returns (correct count, kernels, weights)."""
    batch_size = len(layer_0)
    buffers = buffers or book_buffers(batch_size)
    layer_1 = ops.conv2d(layer_0, kernels, activation="tanh", out=buffers.layer_1)
    layer_1 = layer_1.reshape(batch_size, -1)
    # in place; mask comes back as uint8
    layer_1, mask = ops.dropout(layer_1, 0.5, mask=dropout_mask, out=layer_1)
    temp = np.exp(ops.dense(layer_1, weights_1_2))
    layer_2 = temp / np.sum(temp, axis=1, keepdims=True)
    correct = int((layer_2.argmax(axis=1) == labels.argmax(axis=1)).sum())
    layer_2_delta = (labels - layer_2) / (batch_size * layer_2.shape[0])
    _, dense_update, _ = ops.dense_backward(layer_1, weights_1_2, layer_2_delta,
                                            need_grad_x=False)
    # The book's tanh_backward(layer_1, back) then the mask (rate 0: no x2), in one pass
    # over memory; a 0/1 mask and a x1 scale are exact in either order.
    layer_1_delta = ops.dense_backward_gated(layer_2_delta, weights_1_2, layer_1, mask,
                                             rate=0.0, activation="tanh",
                                             out=buffers.layer_1_delta)
    _, k_update, _ = ops.conv2d_backward(layer_0, kernels,
                                         layer_1_delta.reshape(batch_size, 25, 25, 16),
                                         need_grad_x=False)
    return correct, kernels - alpha * k_update, weights_1_2 + alpha * dense_update


def run_book(x_train, y_train, x_test, y_test, epochs):
    """The book's listing as printed, in float64, through cconv.ops, printing its
    'I:j Test-Acc:... Train-Acc:...' lines. Returns a BookRun (accuracies per epoch and
    the final kernels and dense weights, which build_book's model takes as its weights).

    Its quirks are kept here on purpose, never in the library:
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
    alpha, batch_size = BOOK_ALPHA, BATCH_SIZE
    n = min(len(x_train), TRAIN_IMAGES)
    images = x_train[:n].reshape(n, 28 * 28) / 255
    onehot = np.zeros((n, 10))
    onehot[np.arange(n), y_train[:n]] = 1
    crop = lambda flat: np.ascontiguousarray(flat.reshape(-1, 28, 28, 1)[:, :27, :27, :])
    test_images = crop(x_test.reshape(len(x_test), 28 * 28) / 255)
    kernels = (0.02 * np.random.random((3 * 3, 16)) - 0.01).reshape(3, 3, 1, 16)
    weights_1_2 = 0.2 * np.random.random((25 * 25 * 16, 10)) - 0.1
    train_acc, test_acc = [], []
    buffers = book_buffers(batch_size)
    for j in range(epochs):
        correct_cnt = 0
        for i in range(len(images) // batch_size):
            start, end = i * batch_size, (i + 1) * batch_size
            # np.random.randint(2, size=(batch_size, 25 * 25 * 16)), drawn faster
            dropout_mask = ops.legacy_coin_flips((batch_size, 25 * 25 * 16))
            correct, kernels, weights_1_2 = book_train_step(
                crop(images[start:end]), onehot[start:end], kernels, weights_1_2,
                dropout_mask, alpha, buffers)
            correct_cnt += correct
        # tanh(conv) then dense, fused: the test pass never stores the conv output
        layer_2 = ops.conv2d_dense(test_images, kernels, None, weights_1_2, None,
                                   activation="tanh")
        test_correct_cnt = int((layer_2.argmax(axis=1) == y_test).sum())
        test_acc.append(test_correct_cnt / float(len(test_images)))
        train_acc.append(correct_cnt / float(len(images)))
        print("I:" + str(j) + " Test-Acc:" + str(test_acc[-1]) +
              " Train-Acc:" + str(train_acc[-1]), flush=True)
    return BookRun(train_acc, test_acc, kernels, weights_1_2)
