"""The `cconv` command, run as `python -m cconv` in a subprocess: output and exit codes.

Runs from a temporary folder so that the cconv on the path (installed, or the checkout
via PYTHONPATH) is the one tested. Training tests need the real MNIST files."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cconv import layers, oracle, presets
from conftest import same_cconv_env

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "grokking_ch10.py"


def cconv(*args, cwd, timeout=600):
    return subprocess.run([sys.executable, "-m", "cconv", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=same_cconv_env())


def test_help(tmp_path):
    run = cconv("--help", cwd=tmp_path)
    assert run.returncode == 0 and run.stderr == ""
    for word in ("train", "evaluate", "info", "cconv train --preset fixed"):
        assert word in run.stdout
    run = cconv("train", "--help", cwd=tmp_path)
    assert run.returncode == 0
    text = " ".join(run.stdout.split())  # argparse wraps to the terminal's width
    for word in ("--preset {book,fixed,tf}", "--epochs", "--threads", "--save", "--plots",
                 "--data", "--limit", "done right", "quirks included", "Deep MNIST"):
        assert word in text
    run = cconv("evaluate", "--help", cwd=tmp_path)
    assert run.returncode == 0 and "PATH" in run.stdout


def test_info_is_show_config(tmp_path):
    run = cconv("info", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "cconv" in run.stdout and "OpenMP" in run.stdout and "numpy" in run.stdout
    assert cconv("--version", cwd=tmp_path).stdout.startswith("cconv ")


def test_console_script_is_installed(tmp_path):
    exe = shutil.which("cconv")
    if exe is None:
        pytest.skip("the cconv console script is not on PATH (package not pip-installed)")
    run = subprocess.run([exe, "info"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0 and "OpenMP" in run.stdout


def bad_calls(tmp):
    not_weights = tmp / "notes.npz"
    not_weights.write_text("hello")
    plain = tmp / "plain.npz"
    np.savez(plain, a=np.zeros(3))
    calls = [
        ([], "required: COMMAND"),
        (["frob"], "invalid choice: 'frob'"),
        (["train"], "required: --preset"),
        (["train", "--preset", "nope"], "invalid choice: 'nope'"),
        (["train", "--preset", "fixed", "--epochs", "0"], "--epochs: expected a positive integer, got 0"),
        (["train", "--preset", "fixed", "--epochs", "x"], "--epochs: expected a positive integer, got 'x'"),
        (["train", "--preset", "fixed", "--threads", "-1"], "--threads"),
        (["train", "--preset", "fixed", "--limit", "0"], "--limit"),
        (["train", "--preset", "fixed", "--save", tmp / "no" / "w.npz"], "--save: the folder"),
        (["train", "--preset", "fixed", "--save", tmp], "is a folder"),
        (["train", "--preset", "fixed", "--plots", not_weights], "--plots"),
        (["train", "--preset", "fixed", "--data", tmp / "nowhere"], "--data"),
        (["evaluate"], "required: PATH"),
        (["evaluate", tmp / "missing.npz"], "missing.npz is not a file"),
        (["evaluate", not_weights], "cannot read"),
        (["evaluate", plain], "does not record a preset"),
    ]
    return calls


def test_bad_arguments_exit_2_with_one_line(tmp_path):
    for args, message in bad_calls(tmp_path):
        run = cconv(*args, cwd=tmp_path)
        assert run.returncode == 2, (args, run.stdout, run.stderr)
        lines = run.stderr.splitlines()
        assert len(lines) == 1, (args, run.stderr)
        assert re.match(r"cconv( \w+)?: error: ", lines[0]), lines[0]
        assert message in lines[0], (args, lines[0])
        assert run.stdout == "" and "Traceback" not in run.stderr


def test_evaluate_rejects_weights_of_another_shape(tmp_path):
    import cconv as lib
    from cconv import presets
    model = lib.Sequential([layers.Input((28, 28, 1)), layers.Conv2D(2, 3), layers.Flatten(),
                            layers.Dense(10, activation="softmax")])
    model.save_weights(tmp_path / "w.npz", metadata={"preset": "fixed"})
    assert presets.read_preset(tmp_path / "w.npz") == "fixed"
    run = cconv("evaluate", "w.npz", cwd=tmp_path)
    assert run.returncode == 2 and len(run.stderr.splitlines()) == 1
    assert "has shape (3, 3, 1, 2), expected (3, 3, 1, 16)" in run.stderr


def numpy_accuracy(path, mnist_dir):
    """Accuracy of the fixed network's saved weights on the test set, in plain NumPy."""
    from cconv.datasets import mnist
    _, (x_test, y_test) = mnist.load_data(mnist_dir)
    with np.load(path) as w:
        kernel, bias = w["000.conv2d.kernel"], w["001.conv2d.bias"]
        dense_w, dense_b = w["002.dense.kernel"], w["003.dense.bias"]
        assert str(w["meta.preset"]) == "fixed"
    x = x_test[..., None].astype(np.float64) / 255
    hidden = np.tanh(oracle.conv2d(x, kernel.astype(np.float64), bias.astype(np.float64)))
    logits = hidden.reshape(len(x), -1) @ dense_w.astype(np.float64) + dense_b
    return float((logits.argmax(axis=1) == y_test).mean())


def test_train_fixed_save_plots_then_evaluate(tmp_path, mnist_dir):
    matplotlib = pytest.importorskip("matplotlib")
    from matplotlib.image import imread
    del matplotlib
    run = cconv("train", "--preset", "fixed", "--epochs", "2", "--limit", "300",
                "--threads", "1", "--save", "w.npz", "--plots", "figs", "--data", mnist_dir,
                cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "300 training and 300 test images, 2 epochs, batch 128, 1 thread\n" in out
    assert "Total params: 108,330" in out
    # not a terminal: one line per epoch, no carriage-return redraws
    assert "\r" not in out
    epochs = re.findall(r"^3/3 - .* - loss: ([0-9.]+) - accuracy: ([0-9.]+) - "
                        r"val_loss: ([0-9.]+) - val_accuracy: ([0-9.]+)$", out, re.M)
    assert len(epochs) == 2, out
    assert "saved weights to w.npz (preset fixed)" in out
    for name in ("history.png", "kernels.png", "feature_maps.png"):
        pixels = imread(tmp_path / "figs" / name)
        assert pixels.shape[0] > 200 and pixels.shape[1] > 300
        assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 20
    # evaluate on all 10,000 test images agrees with plain NumPy on the saved weights
    run = cconv("evaluate", "w.npz", "--data", mnist_dir, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    got = re.fullmatch(r"preset fixed, 10000 test images: loss ([0-9.]+), "
                       r"accuracy ([0-9.]+)\n", run.stdout)
    assert got, run.stdout
    assert float(got.group(2)) == pytest.approx(numpy_accuracy(tmp_path / "w.npz", mnist_dir),
                                                abs=2e-4)
    # on the same 300 test images it reproduces training's last validation numbers
    run = cconv("evaluate", "w.npz", "--data", mnist_dir, "--limit", "300", cwd=tmp_path)
    got = re.fullmatch(r"preset fixed, 300 test images: loss ([0-9.]+), accuracy ([0-9.]+)\n",
                       run.stdout)
    assert got.group(2) == epochs[-1][3]
    assert float(got.group(1)) == pytest.approx(float(epochs[-1][2]), abs=1.01e-4)


def describe(model):
    """A model's layers and training setup, as plain values to compare with a literal."""
    out = []
    for layer in model.layers:
        config = {k: getattr(layer, k) for k in ("filters", "kernel_size", "padding", "units",
                                                 "rate", "pool_size", "use_bias")
                  if hasattr(layer, k)}
        if layer.activation is not None:
            config["activation"] = layer.activation.name
        out.append((type(layer).__name__, config, layer.output_shape))
    opt = model.optimizer
    return out, (type(opt).__name__, opt.learning_rate, getattr(opt, "momentum", None),
                 type(model.loss).__name__, model.loss.from_logits)


def test_presets_are_the_chapter_and_the_tutorial_networks():
    """The networks written out from their sources, not from cconv.presets: chapter 10
    (16 3x3 tanh kernels, dropout 0.5, dense 10 softmax, SGD with the book's 2 / 128 on
    batches of 128 of the first 1,000 images) and TensorFlow's tutorial (two 5x5 'same'
    relu convolutions of 32 and 64 with 2x2 max pooling, dense 1024 relu, dropout 0.5,
    dense 10 logits, Adam 1e-4, batches of 50 of all 60,000 images)."""
    fixed = presets.get("fixed")
    assert describe(fixed.build()) == ([
        ("Conv2D", dict(filters=16, kernel_size=(3, 3), padding="valid", use_bias=True,
                        activation="tanh"), (26, 26, 16)),
        ("Dropout", dict(rate=0.5), (26, 26, 16)),
        ("Flatten", {}, (10816,)),
        ("Dense", dict(units=10, use_bias=True, activation="softmax"), (10,)),
    ], ("SGD", 2 / 128, 0.0, "SparseCategoricalCrossentropy", False))
    assert (fixed.batch_size, fixed.train_images) == (128, 1000)
    tf = presets.get("tf")
    conv = dict(kernel_size=(5, 5), padding="same", use_bias=True, activation="relu")
    assert describe(tf.build()) == ([
        ("Conv2D", dict(filters=32, **conv), (28, 28, 32)),
        ("MaxPooling2D", dict(pool_size=(2, 2), padding="valid"), (14, 14, 32)),
        ("Conv2D", dict(filters=64, **conv), (14, 14, 64)),
        ("MaxPooling2D", dict(pool_size=(2, 2), padding="valid"), (7, 7, 64)),
        ("Flatten", {}, (3136,)),
        ("Dense", dict(units=1024, use_bias=True, activation="relu"), (1024,)),
        ("Dropout", dict(rate=0.5), (1024,)),
        ("Dense", dict(units=10, use_bias=True, activation="linear"), (10,)),
    ], ("Adam", 1e-4, None, "SparseCategoricalCrossentropy", True))
    assert (tf.batch_size, tf.train_images) == (50, 60000)


def test_train_fixed_is_the_examples_network(tmp_path, mnist_dir):
    """The CLI and examples/grokking_ch10.py train the same network the same way: same
    seed, same test accuracy after an epoch. (What that network is, is checked against
    the chapter by test_presets_are_the_chapter_and_the_tutorial_networks.)"""
    run = cconv("train", "--preset", "fixed", "--epochs", "1", "--data", mnist_dir,
                cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    cli_acc = re.search(r"val_accuracy: ([0-9.]+)$", run.stdout, re.M).group(1)
    example = subprocess.run([sys.executable, str(EXAMPLE), "--epochs", "1", "--data",
                              mnist_dir], capture_output=True, text=True, timeout=600,
                             cwd=tmp_path, env=same_cconv_env())
    assert example.returncode == 0, example.stderr
    book_line = re.search(r"^I:0 Test-Acc:([0-9.]+) ", example.stdout, re.M).group(1)
    assert f"{float(book_line):.4f}" == cli_acc


def test_train_book_prints_the_books_numbers(tmp_path, mnist_dir):
    """The book printed I:0 Test-Acc:0.0288 Train-Acc:0.055; the saved weights, rebuilt
    by evaluate, give the same test accuracy."""
    run = cconv("train", "--preset", "book", "--epochs", "1", "--save", "book.npz",
                "--data", mnist_dir, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "I:0 Test-Acc:0.0288 Train-Acc:0.055\n" in run.stdout
    run = cconv("evaluate", "book.npz", "--data", mnist_dir, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert re.fullmatch(r"preset book, 10000 test images: loss [0-9.]+, accuracy 0\.0288\n",
                        run.stdout), run.stdout


def numpy_tf_accuracy(path, mnist_dir, limit):
    """Accuracy of the tf preset's saved weights on the first `limit` test images, layer
    by layer in the float64 oracle."""
    from cconv.datasets import mnist
    _, (x_test, y_test) = mnist.load_data(mnist_dir)
    with np.load(path) as w:
        k1, b1, k2, b2, w3, b3, w4, b4 = (w[f"{i:03d}.{name}"].astype(np.float64) for i, name
                                          in enumerate(["conv2d.kernel", "conv2d.bias",
                                                        "conv2d_1.kernel", "conv2d_1.bias",
                                                        "dense.kernel", "dense.bias",
                                                        "dense_1.kernel", "dense_1.bias"]))
        assert str(w["meta.preset"]) == "tf"
    h = x_test[:limit, :, :, None].astype(np.float64) / 255
    h, _ = oracle.max_pool2d(oracle.conv2d(h, k1, b1, "same", "relu"), 2)
    h, _ = oracle.max_pool2d(oracle.conv2d(h, k2, b2, "same", "relu"), 2)
    h = oracle.relu(h.reshape(limit, -1) @ w3 + b3)
    return float(((h @ w4 + b4).argmax(axis=1) == y_test[:limit]).mean())


def test_train_tf_preset(tmp_path, mnist_dir):
    """The val_accuracy that training prints and the accuracy that evaluate prints are
    both the saved weights' accuracy on those 100 test images, worked out in NumPy."""
    run = cconv("train", "--preset", "tf", "--epochs", "1", "--limit", "100", "--save",
                "tf.npz", "--data", mnist_dir, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "100 training and 100 test images, 1 epoch, batch 50" in run.stdout
    trained = re.search(r"^2/2 - .* val_accuracy: ([0-9.]+)$", run.stdout, re.M)
    assert trained, run.stdout
    want = numpy_tf_accuracy(tmp_path / "tf.npz", mnist_dir, 100)
    assert float(trained.group(1)) == pytest.approx(want, abs=1e-4)
    run = cconv("evaluate", "tf.npz", "--data", mnist_dir, "--limit", "100", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    got = re.fullmatch(r"preset tf, 100 test images: loss [0-9.]+, accuracy ([0-9.]+)\n",
                       run.stdout)
    assert got, run.stdout
    assert float(got.group(1)) == pytest.approx(want, abs=1e-4)
