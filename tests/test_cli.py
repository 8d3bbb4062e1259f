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

from cconv import layers, oracle

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "grokking_ch10.py"


def cconv(*args, cwd, timeout=600):
    return subprocess.run([sys.executable, "-m", "cconv", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


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


def test_train_fixed_is_the_examples_network(tmp_path, mnist_dir):
    """The CLI and examples/grokking_ch10.py share one definition: same seed, same test
    accuracy after an epoch."""
    run = cconv("train", "--preset", "fixed", "--epochs", "1", "--data", mnist_dir,
                cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    cli_acc = re.search(r"val_accuracy: ([0-9.]+)$", run.stdout, re.M).group(1)
    example = subprocess.run([sys.executable, str(EXAMPLE), "--epochs", "1", "--data",
                              mnist_dir], capture_output=True, text=True, timeout=600,
                             cwd=tmp_path)
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


def test_train_tf_preset(tmp_path, mnist_dir):
    run = cconv("train", "--preset", "tf", "--epochs", "1", "--limit", "100", "--save",
                "tf.npz", "--data", mnist_dir, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "100 training and 100 test images, 1 epoch, batch 50" in run.stdout
    assert re.search(r"^2/2 - .* val_accuracy: [0-9.]+$", run.stdout, re.M), run.stdout
    run = cconv("evaluate", "tf.npz", "--data", mnist_dir, "--limit", "100", cwd=tmp_path)
    assert run.returncode == 0 and run.stdout.startswith("preset tf, 100 test images")
