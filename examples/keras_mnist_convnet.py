"""keras.io's "Simple MNIST convnet" (by fchollet, a Keras 3 example), ported to cconv by
changing its imports and nothing else: `import keras` became `import cconv as keras`
and `from keras import layers` became `from cconv import layers`. Every call below is
a call the Keras example makes, with the same arguments; the last lines add what a
Keras user does next, saving the model to a .keras file and loading it back
(keras.models.load_model there, cconv.models.load_model here, reached as
keras.models.load_model through the import).

Two 3x3 ReLU convolutions (32 and 64 filters), each followed by 2x2 max pooling, then
dropout 0.5 and a softmax over 10 classes; Adam, batches of 128, 15 epochs, the last
10% of the training images held out for validation. Keras reports about 99% test
accuracy for it.

Run:  python examples/keras_mnist_convnet.py      (data: see cconv.datasets.mnist)
"""
import numpy as np

import cconv as keras
from cconv import layers

num_classes = 10
input_shape = (28, 28, 1)

# MNIST as uint8 arrays, split into training and test sets
(x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()

# pixels from 0..255 to floats in [0, 1]; then a trailing channel axis: (N, 28, 28, 1)
x_train = x_train.astype("float32") / 255
x_test = x_test.astype("float32") / 255
x_train = np.expand_dims(x_train, -1)
x_test = np.expand_dims(x_test, -1)
print("x_train shape:", x_train.shape)
print(x_train.shape[0], "train samples")
print(x_test.shape[0], "test samples")

# the labels as one-hot rows, for categorical cross-entropy
y_train = keras.utils.to_categorical(y_train, num_classes)
y_test = keras.utils.to_categorical(y_test, num_classes)

model = keras.Sequential(
    [
        keras.Input(shape=input_shape),
        layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Flatten(),
        layers.Dropout(0.5),
        layers.Dense(num_classes, activation="softmax"),
    ]
)
model.summary()

batch_size = 128
epochs = 15
model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, validation_split=0.1)

score = model.evaluate(x_test, y_test, verbose=0)
print("Test loss:", score[0])
print("Test accuracy:", score[1])

# The whole model in one file, and back: same predictions.
model.save("mnist_convnet.keras")
restored = keras.models.load_model("mnist_convnet.keras")
same = np.array_equal(restored.predict(x_test, verbose=0), model.predict(x_test, verbose=0))
print("Reloaded from mnist_convnet.keras; same predictions:", same)
