"""TensorFlow's "Convolutional Neural Network (CNN)" tutorial
(https://www.tensorflow.org/tutorials/images/cnn) through cconv: CIFAR-10, three 3x3 ReLU
convolutions (32, 64, 64 filters) with 2x2 max pooling after the first two, then Dense 64
ReLU and Dense 10 logits; Adam, sparse categorical cross-entropy from logits, 10 epochs
validated on the test images. The tutorial's code below is as it writes it; only its
imports changed: `from tensorflow.keras import datasets, layers, models` became
`from cconv import ...`, and its `tf.keras` is cconv. Its matplotlib plots are left out.
The tutorial reports about 70% test accuracy.

Without CIFAR-10 (see cconv.datasets.cifar10: CCONV_CIFAR10_DIR, ~/.keras/datasets, the
cache, a download) it says so and trains on random images of CIFAR-10's shape whose label
is where a brighter square sits: a task the network can learn, so training still shows.

Run:  python examples/tf_cifar10_cnn.py [--epochs 10] [--samples N]
      (--samples: train and test on the first N images of each)
"""
import argparse
import types

import numpy as np

import cconv
from cconv import datasets, layers, models

tf = types.SimpleNamespace(keras=cconv)  # the tutorial's tf.keras

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--epochs", type=int, default=10, help="passes over the training images "
                    "(default 10, the tutorial's)")
parser.add_argument("--samples", type=int, default=None,
                    help="use only the first SAMPLES training and test images")
args = parser.parse_args()
for name in ("epochs", "samples"):
    if getattr(args, name) is not None and getattr(args, name) < 1:
        parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")


def random_cifar10(n, seed):
    """n random uint8 images (n, 32, 32, 3) and labels (n, 1) shaped as CIFAR-10's: noise,
    plus a brighter 8x8 square at one of ten places, the place being the label."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, (n, 1)).astype(np.uint8)
    images = rng.integers(0, 160, (n, 32, 32, 3)).astype(np.uint8)
    for image, (label,) in zip(images, labels):
        row, col = 4 + 16 * (label // 5), 1 + 6 * (label % 5)
        image[row:row + 8, col:col + 8] += 95
    return images, labels


try:
    (train_images, train_labels), (test_images, test_labels) = datasets.cifar10.load_data()
except datasets.cifar10.DatasetNotFoundError as exc:
    print(f"CIFAR-10 not found ({str(exc).splitlines()[0]}): training on RANDOM images of "
          "CIFAR-10's shape, labelled by where a brighter square is; see "
          "cconv.datasets.cifar10 for where to put the real files")
    n_train, n_test = (args.samples or 50000), (args.samples or 10000)
    (train_images, train_labels), (test_images, test_labels) = (
        random_cifar10(n_train, 0), random_cifar10(n_test, 1))
train_images, train_labels = train_images[:args.samples], train_labels[:args.samples]
test_images, test_labels = test_images[:args.samples], test_labels[:args.samples]
epochs = args.epochs

# --- the tutorial ----------------------------------------------------------------------

# Normalize pixel values to be between 0 and 1
train_images, test_images = train_images / 255.0, test_images / 255.0

class_names = ['airplane', 'automobile', 'bird', 'cat', 'deer',
               'dog', 'frog', 'horse', 'ship', 'truck']

model = models.Sequential()
model.add(layers.Conv2D(32, (3, 3), activation='relu', input_shape=(32, 32, 3)))
model.add(layers.MaxPooling2D((2, 2)))
model.add(layers.Conv2D(64, (3, 3), activation='relu'))
model.add(layers.MaxPooling2D((2, 2)))
model.add(layers.Conv2D(64, (3, 3), activation='relu'))

model.summary()

model.add(layers.Flatten())
model.add(layers.Dense(64, activation='relu'))
model.add(layers.Dense(10))

model.summary()

model.compile(optimizer='adam',
              loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=['accuracy'])

history = model.fit(train_images, train_labels, epochs=epochs,
                    validation_data=(test_images, test_labels))

test_loss, test_acc = model.evaluate(test_images, test_labels, verbose=2)

print(test_acc)
