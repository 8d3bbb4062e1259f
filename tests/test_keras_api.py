"""Keras's arguments: those with a meaning here do what Keras documents (checked against
hand-computed expectations), those without raise a ValueError naming them."""
import io
import sys

import numpy as np
import pytest

import cconv
from cconv import layers
from zoo import data, make


def small(optimizer="adam"):
    return make("keras_layers", optimizer=optimizer, trained=False)


def test_initial_epoch_numbers_the_epochs_and_runs_the_rest():
    model = small()
    x, y = data("keras_layers")
    history = model.fit(x, y, batch_size=8, epochs=5, initial_epoch=2, verbose=0)
    assert history.epoch == [2, 3, 4]
    assert model.optimizer.iterations == 3 * 3  # 3 epochs of ceil(20 / 8) batches
    assert model.fit(x, y, epochs=2, initial_epoch=2, verbose=0).epoch == []


def test_initial_epoch_in_the_progress_lines(capsys):
    model = small()
    x, y = data("keras_layers")
    model.fit(x, y, batch_size=8, epochs=3, initial_epoch=1, verbose=2)
    out = capsys.readouterr().out
    assert "Epoch 2/3" in out and "Epoch 3/3" in out and "Epoch 1/3" not in out


def test_validation_freq_validates_every_nth_epoch():
    model = small()
    x, y = data("keras_layers")
    history = model.fit(x, y, batch_size=8, epochs=5, validation_data=(x[:6], y[:6]),
                        validation_freq=2, verbose=0)
    assert len(history.history["loss"]) == 5
    assert len(history.history["val_loss"]) == 2  # after epochs 2 and 4, as Keras


def test_validation_batch_size_and_steps():
    model = small()
    x, y = data("keras_layers")
    history = model.fit(x, y, batch_size=8, epochs=1, validation_data=(x, y),
                        validation_batch_size=3, validation_steps=2, verbose=0)
    # validation on the first 2 batches of 3: 6 samples
    want = model.evaluate(x[:6], y[:6], batch_size=6, verbose=0)[0]
    assert np.isclose(history.history["val_loss"][0], want, rtol=1e-6)


def test_steps_per_epoch_caps_the_batches():
    model = small()
    x, y = data("keras_layers")
    model.fit(x, y, batch_size=4, epochs=3, steps_per_epoch=2, verbose=0)
    # 20 samples make a pass of 5 batches, which goes on across epochs as in Keras 3:
    # 2 + 2 + the last 1 (the pass ends the third epoch early)
    assert len(x) == 20 and model.optimizer.iterations == 5
    with pytest.raises(ValueError, match="steps_per_epoch"):
        model.fit(x, y, batch_size=4, steps_per_epoch=6, verbose=0)


def test_evaluate_and_predict_steps_and_return_dict():
    model = small()
    x, y = data("keras_layers")
    got = model.evaluate(x, y, batch_size=4, steps=2, return_dict=True, verbose=0)
    probs = model.predict(x[:8])
    loss = -np.mean(np.log(probs[np.arange(8), y[:8]]))
    acc = np.mean(probs.argmax(axis=1) == y[:8])
    assert set(got) == {"loss", "accuracy"}
    assert np.isclose(got["loss"], loss, rtol=1e-5) and got["accuracy"] == acc
    assert model.predict(x, batch_size=3, steps=2).shape == (6, 5)


@pytest.mark.parametrize("verbose,printed", [(0, False), (1, True), (2, True)])
def test_predict_and_evaluate_verbose(capsys, verbose, printed):
    model = small()
    x, y = data("keras_layers")
    model.predict(x, verbose=verbose)
    model.evaluate(x, y, verbose=verbose)
    out = capsys.readouterr().out
    assert bool(out) == printed
    with pytest.raises(ValueError, match="verbose"):
        model.predict(x, verbose=3)


def test_auto_verbosity_is_quiet_off_a_terminal(capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    model = small()
    x, y = data("keras_layers")
    model.predict(x)
    model.evaluate(x, y)
    assert sys.stdout.getvalue() == ""


def test_evaluate_and_predict_callbacks_get_keras_hooks():
    calls = []

    class Spy(cconv.callbacks.Callback):
        def on_test_begin(self, logs=None):
            calls.append("test_begin")

        def on_test_batch_end(self, batch, logs=None):
            calls.append(("test_batch", batch))

        def on_test_end(self, logs=None):
            calls.append(("test_end", sorted(logs)))

        def on_predict_begin(self, logs=None):
            calls.append("predict_begin")

        def on_predict_batch_end(self, batch, logs=None):
            calls.append(("predict_batch", batch, logs["outputs"].shape))

        def on_predict_end(self, logs=None):
            calls.append("predict_end")
    model = small()
    x, y = data("keras_layers")
    model.evaluate(x, y, batch_size=10, callbacks=[Spy()], verbose=0)
    model.predict(x, batch_size=15, callbacks=[Spy()], verbose=0)
    assert calls == ["test_begin", ("test_batch", 0), ("test_batch", 1),
                     ("test_end", ["accuracy", "loss"]), "predict_begin",
                     ("predict_batch", 0, (15, 5)), ("predict_batch", 1, (5, 5)),
                     "predict_end"]


REFUSED = [
    # bad weights are named before any step (test_keras_losses has the weights' meaning)
    (lambda m, x, y: m.fit(x, y, class_weight="balanced"), "class_weight"),
    (lambda m, x, y: m.fit(x, y, sample_weight=np.ones((len(x), 2))), "sample_weight"),
    (lambda m, x, y: m.fit(x, y, validation_data=(x, y, np.full(len(x), np.nan))),
     "validation_data\\[2\\]"),
    (lambda m, x, y: m.evaluate(x, y, sample_weight=np.ones(len(x) - 1)), "sample_weight"),
    (lambda m, x, y: m.compile(weighted_metrics=["auc"]), "weighted_metrics"),
    (lambda m, x, y: m.summary(line_length=80), "line_length"),
    (lambda m, x, y: m.summary(positions=[0.3, 0.6, 1.0]), "positions"),
    (lambda m, x, y: m.save("m.keras", zipped=False), "zipped"),
    (lambda m, x, y: m.save("m.keras", include_optimizer=False), "include_optimizer"),
    (lambda m, x, y: cconv.models.clone_model(m, input_tensors=[1]), "input_tensors"),
    (lambda m, x, y: cconv.Input((4,), batch_size=8), "batch_size"),
    (lambda m, x, y: cconv.Input((4,), sparse=True), "sparse"),
    (lambda m, x, y: m.fit(x, y, validation_freq=0), "validation_freq"),
    (lambda m, x, y: m.fit(x, y, initial_epoch=-1), "initial_epoch"),
]


@pytest.mark.parametrize("call,named", REFUSED, ids=[r[1] for r in REFUSED])
def test_arguments_without_a_meaning_here_are_named(call, named):
    model = small()
    x, y = data("keras_layers")
    before = model.get_weights()
    with pytest.raises(ValueError, match=named):
        call(model, x, y)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_accepted_no_op_arguments():
    model = small()
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"],
                  run_eagerly=True, steps_per_execution=4, jit_compile=False,
                  auto_scale_loss=False, loss_weights=None)
    lines = []
    model.summary(print_fn=lines.append, expand_nested=True, show_trainable=True)
    assert "max_pooling2d (MaxPooling2D)" in lines[0]


def test_default_names_follow_keras():
    model = cconv.Sequential([cconv.Input((12, 12, 1)), layers.Conv2D(2, 3),
                              layers.MaxPooling2D(), layers.Conv2D(2, 3),
                              layers.KernelPooling(), layers.Flatten(), layers.Dense(2)])
    assert [l.name for l in model.layers] == ["conv2d", "max_pooling2d", "conv2d_1",
                                              "kernel_pooling", "flatten", "dense"]


def test_input_accepts_keras_forms():
    """cconv.Input gives a KerasTensor whose shape has the batch axis, as keras.Input's."""
    keras = pytest.importorskip("keras")
    for args, kwargs in [(((28, 28, 1),), {}), ((), {"batch_shape": (None, 5)}), (((7,),), {})]:
        assert cconv.Input(*args, **kwargs).shape == tuple(keras.Input(*args, **kwargs).shape)
    pixels = cconv.Input((3,), dtype="uint8", name="pixels").node.layer
    assert pixels.get_config()["dtype"] == "uint8" and pixels.name == "pixels"
    assert cconv.Input is layers.Input


def test_clone_model_has_the_layers_and_fresh_weights():
    model = make("keras_layers")
    cconv.utils.set_random_seed(99)
    clone = cconv.models.clone_model(model)
    assert clone.get_config() == model.get_config() and not clone.compiled
    assert not any(np.array_equal(a, b) for a, b in zip(clone.get_weights()[:1],
                                                         model.get_weights()[:1]))
    assert all(l1 is not l2 for l1, l2 in zip(clone.layers, model.layers))
    renamed = cconv.models.clone_model(
        model, clone_function=lambda l: type(l).from_config({**l.get_config(),
                                                             "name": "c_" + l.name}))
    assert renamed.layers[0].name == "c_conv2d"
