"""cconv.plot: figures rendered to PNG with Agg, decoded, and their data checked against
NumPy (the oracle's conv, tanh and max)."""
import os
import sys

import numpy as np
import pytest

import cconv
from cconv import oracle
from cconv.layers import Conv2D, Dense, Dropout, Flatten, Input

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
from matplotlib.image import imread  # noqa: E402

from cconv import plot  # noqa: E402
from conftest import same_cconv_env  # noqa: E402


def conv_model(channels=1, filters=6, activation="tanh", size=9):
    cconv.utils.set_random_seed(4)
    model = cconv.Sequential([Input((size, size, channels)),
                              Conv2D(filters, 3, activation=activation), Dropout(0.5),
                              Flatten(), Dense(3, activation="softmax")], dtype="float64")
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def check_png(path, height, width):
    """The file exists, decodes to height x width pixels and is not a blank canvas."""
    assert os.path.isfile(path)
    pixels = imread(path)
    assert pixels.shape[:2] == (height, width)
    colours = np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)
    assert len(colours) > 20
    return pixels


def axes_titled(fig, title):
    found = [ax for ax in fig.axes if ax.get_title() == title]
    assert len(found) == 1, [ax.get_title() for ax in fig.axes]
    return found[0]


def test_history_from_a_fit_and_from_a_dict(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((20, 9, 9, 1)), rng.integers(0, 3, 20)
    history = conv_model().fit(x, y, epochs=3, verbose=0, validation_data=(x, y))
    fig = plot.plot_history(history, path=tmp_path / "h.png", figsize=(6, 3), dpi=50)
    check_png(tmp_path / "h.png", 150, 300)
    loss = axes_titled(fig, "loss")
    assert [line.get_label() for line in loss.get_lines()] == ["training", "validation"]
    np.testing.assert_array_equal(loss.get_lines()[1].get_ydata(), history.history["val_loss"])
    np.testing.assert_array_equal(loss.get_lines()[0].get_xdata(), [1, 2, 3])
    acc = axes_titled(fig, "accuracy")
    np.testing.assert_array_equal(acc.get_lines()[0].get_ydata(), history.history["accuracy"])
    # a plain dict without validation: one curve per panel
    fig = plot.plot_history({"loss": [3.0, 2.0, 1.5, 1.4]}, path=tmp_path / "d.png",
                            figsize=(4, 3), dpi=40)
    check_png(tmp_path / "d.png", 120, 160)
    assert len(fig.axes) == 1 and len(fig.axes[0].get_lines()) == 1


def test_kernels_one_image_per_filter(tmp_path):
    model = conv_model(filters=6)
    fig = plot.plot_kernels(model, path=tmp_path / "k.png", figsize=(5, 4), dpi=60)
    check_png(tmp_path / "k.png", 240, 300)
    kernel = model.layers[0].params["kernel"]
    for f in range(6):
        shown = axes_titled(fig, str(f)).images[0].get_array()
        np.testing.assert_array_equal(shown, kernel[:, :, 0, f])
    # the layer itself works too, and with no path nothing is written
    assert plot.plot_kernels(model.layers[0]).axes
    assert os.listdir(tmp_path) == ["k.png"]


def test_kernels_of_a_deep_layer_show_the_channel_mean(tmp_path):
    model = conv_model(channels=3, filters=4)
    fig = plot.plot_kernels(model, layer="conv2d", path=tmp_path / "k.png", dpi=50)
    width, height = fig.get_size_inches() * 50
    check_png(tmp_path / "k.png", round(height), round(width))
    kernel = model.layers[0].params["kernel"]
    for f in range(4):
        want = (kernel[:, :, 0, f] + kernel[:, :, 1, f] + kernel[:, :, 2, f]) / 3
        np.testing.assert_allclose(axes_titled(fig, str(f)).images[0].get_array(), want,
                                   rtol=1e-12)
    assert "mean over 3 input channels" in fig._suptitle.get_text()


@pytest.mark.parametrize("activation, act", [("tanh", np.tanh),
                                             ("relu", lambda z: np.maximum(z, 0))])
def test_feature_maps_and_their_max(tmp_path, activation, act):
    model = conv_model(filters=5, activation=activation)
    image = np.zeros((9, 9))
    image[2, 1:8] = 1.0   # a crude 2: top bar, diagonal, bottom bar
    for i in range(3, 7):
        image[i, 8 - i] = 1.0
    image[7, 1:8] = 1.0
    fig = plot.plot_feature_maps(model, image, path=tmp_path / "f.png", figsize=(7, 4),
                                 dpi=50)
    check_png(tmp_path / "f.png", 200, 350)
    conv = model.layers[0]
    want = act(oracle.conv2d(image[None, :, :, None], conv.params["kernel"],
                             conv.params["bias"]))[0]
    for f in range(5):
        np.testing.assert_allclose(axes_titled(fig, str(f)).images[0].get_array(),
                                   want[:, :, f], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(axes_titled(fig, "max over kernels").images[0].get_array(),
                               want.max(axis=-1), rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(axes_titled(fig, "image").images[0].get_array(), image)
    # (H, W, 1) is the same image
    again = plot.plot_feature_maps(model, image[:, :, None])
    np.testing.assert_array_equal(axes_titled(again, "0").images[0].get_array(),
                                  axes_titled(fig, "0").images[0].get_array())


def test_saving_is_atomic(tmp_path, monkeypatch):
    from matplotlib.figure import Figure
    path = tmp_path / "k.png"
    path.write_bytes(b"old")

    def broken(self, *args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        plot.plot_kernels(conv_model(), path=path)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["k.png"]


def no_conv_model():
    model = cconv.Sequential([Input((4, 4, 1)), Flatten(), Dense(2, activation="softmax")])
    return model


@pytest.mark.parametrize("call, error, match", [
    (lambda m: plot.plot_kernels(no_conv_model()), ValueError, "no Conv2D layer"),
    (lambda m: plot.plot_feature_maps(no_conv_model(), np.zeros((4, 4))), ValueError,
     "no Conv2D layer"),
    (lambda m: plot.plot_kernels("model"), TypeError, "model_or_layer"),
    (lambda m: plot.plot_kernels(cconv.Sequential([Conv2D(2, 3)])), ValueError,
     "no weights yet"),
    (lambda m: plot.plot_kernels(m, layer="dense"), ValueError, "'dense' is a Dense"),
    (lambda m: plot.plot_kernels(m, layer="conv9"), ValueError, "no layer named 'conv9'"),
    (lambda m: plot.plot_kernels(m, layer=7), ValueError, "out of range"),
    (lambda m: plot.plot_feature_maps(m, np.zeros((8, 9))), ValueError,
     r"image: expected one sample of shape \(9, 9, 1\) or \(9, 9\), got shape \(8, 9\)"),
    (lambda m: plot.plot_feature_maps(m, np.zeros((1, 9, 9, 1))), ValueError, "image"),
    (lambda m: plot.plot_feature_maps(m, np.full((9, 9), np.nan)), ValueError, "NaN"),
    (lambda m: plot.plot_feature_maps(m, np.zeros((9, 9), dtype=object)), TypeError, "image"),
    (lambda m: plot.plot_feature_maps(m.layers[0], np.zeros((9, 9))), TypeError, "model"),
    (lambda m: plot.plot_history({}), ValueError, "history: is empty"),
    (lambda m: plot.plot_history([1, 2]), TypeError, "history"),
    (lambda m: plot.plot_history({"loss": [1, 2], "val_loss": [1]}), ValueError, "lengths"),
    (lambda m: plot.plot_history({"loss": ["a"]}), TypeError, "history\\['loss'\\]"),
    (lambda m: plot.plot_kernels(m, path="k.docx"), ValueError, "cannot save a figure as"),
    (lambda m: plot.plot_kernels(m, path="/no/such/folder/k.png"), ValueError,
     "does not exist"),
    (lambda m: plot.plot_kernels(m, figsize=(0, 3)), ValueError, "figsize"),
    (lambda m: plot.plot_kernels(m, dpi=-1), ValueError, "dpi"),
])
def test_bad_arguments_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call(conv_model())


def test_without_matplotlib_the_error_says_what_to_install(monkeypatch):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"cconv\[examples\]"):
        plot.plot_history({"loss": [1.0]})


def test_import_cconv_does_not_import_matplotlib(tmp_path):
    import subprocess
    code = "import sys, cconv, cconv.plot; print('matplotlib' in sys.modules)"
    # from outside the checkout, so that the tested cconv is the one on the path
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=tmp_path, env=same_cconv_env())
    assert out.stdout.strip() == "False"
