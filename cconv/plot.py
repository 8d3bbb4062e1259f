"""Figures: training curves, a Conv2D layer's kernels, and its output maps on an image.

Needs matplotlib, which cconv does not depend on: `pip install "cconv[examples]"`. It is
imported when a function here is first called, never by `import cconv`.

Each function returns a matplotlib Figure that is not registered with pyplot (no window
and no global state; Jupyter shows it as a cell's value). With path=..., the figure is
also saved, atomically, in the format its extension names (PNG if it has none); the
file is exactly figsize * dpi pixels.
"""
import math
import numbers
import os
from collections.abc import Mapping

import numpy as np

from cconv import callbacks, layers, model as model_module, utils
from cconv._io import atomic_write

__all__ = ["plot_history", "plot_kernels", "plot_feature_maps"]


def _matplotlib():
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("cconv.plot needs matplotlib, which is not installed: "
                          "pip install \"cconv[examples]\" (or pip install matplotlib)"
                          ) from exc
    return matplotlib


def _figure(figsize, dpi):
    _matplotlib()
    from matplotlib.figure import Figure
    if not (isinstance(figsize, (tuple, list)) and len(figsize) == 2
            and all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                    and math.isfinite(v) and v > 0 for v in figsize)):
        raise ValueError(f"figsize: expected (width, height) in inches, two positive "
                         f"numbers, got {figsize!r}")
    if isinstance(dpi, bool) or not isinstance(dpi, numbers.Real) or not dpi > 0:
        raise ValueError(f"dpi: expected a positive number, got {dpi!r}")
    return Figure(figsize=tuple(float(v) for v in figsize), dpi=dpi)


def _check_path(path):
    """The path and its format, checked before any drawing."""
    if path is None:
        return None, None
    _matplotlib()
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(f"path: expected a str or path, got {type(path).__name__}") from None
    from matplotlib.backend_bases import FigureCanvasBase
    fmt = os.path.splitext(path)[1][1:].lower() or "png"
    formats = FigureCanvasBase.get_supported_filetypes()
    if fmt not in formats:
        raise ValueError(f"path: cannot save a figure as .{fmt} ({path}); expected one of "
                         f"{', '.join(sorted(formats))}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"path: the folder {folder} does not exist")
    return path, fmt


def _save(fig, path, fmt):
    if path is not None:
        with atomic_write(path, suffix="." + fmt + ".tmp") as f:
            fig.savefig(f, format=fmt, dpi=fig.dpi)
    return fig


# ---- history --------------------------------------------------------------------------
def plot_history(history, path=None, figsize=None, dpi=100):
    """Loss and accuracy per epoch, one panel each (a panel per metric in general), with
    the validation curve beside the training one when the history has it.

    history: the History that fit() returns, or its .history dict."""
    h = history.history if isinstance(history, callbacks.History) else history
    if not isinstance(h, Mapping):
        raise TypeError(f"history: expected a cconv.callbacks.History or a dict of "
                        f"per-epoch values, got {type(history).__name__}")
    if not h:
        raise ValueError("history: is empty (no epoch was recorded)")
    series = {}
    for key, values in h.items():
        try:
            arr = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"history[{key!r}]: expected a list of numbers, got "
                            f"{values!r}") from None
        if arr.ndim != 1 or len(arr) == 0:
            raise ValueError(f"history[{key!r}]: expected a non-empty list of numbers, "
                             f"got shape {arr.shape}")
        series[str(key)] = arr
    lengths = {k: len(v) for k, v in series.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"history: expected one value per epoch in every entry, got "
                         f"lengths {lengths}")
    names = list(dict.fromkeys(k[4:] if k.startswith("val_") else k for k in series))
    path, fmt = _check_path(path)
    fig = _figure(figsize or (4.5 * len(names), 3.4), dpi)
    from matplotlib.ticker import MaxNLocator
    epochs = np.arange(1, len(next(iter(series.values()))) + 1)
    marker = "o" if len(epochs) <= 30 else None
    for i, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), i + 1)
        if name in series:
            ax.plot(epochs, series[name], marker=marker, ms=3, label="training")
        if "val_" + name in series:
            ax.plot(epochs, series["val_" + name], marker=marker, ms=3, label="validation")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return _save(fig, path, fmt)


# ---- kernels and feature maps -------------------------------------------------------
def _conv_layer(obj, layer, argname):
    """The Conv2D to draw: `obj` itself, or the model's layer chosen by index or name
    (default: its first Conv2D). Returns (conv layer, its index in the model or None)."""
    if isinstance(obj, layers.Conv2D):
        if layer is not None:
            raise ValueError(f"layer: only for a model; {argname} is already a Conv2D")
        if not obj.built:
            raise ValueError(f"{argname}: the Conv2D layer has no weights yet; build its "
                             f"model first")
        return obj, None
    if not isinstance(obj, model_module.Sequential):
        raise TypeError(f"{argname}: expected a cconv.Sequential or a "
                        f"cconv.layers.Conv2D, got {type(obj).__name__}")
    if not obj.built:
        raise ValueError(f"{argname}: the model has no weights yet; start it with "
                         f"Input(shape), or fit or build it first")
    convs = [i for i, l in enumerate(obj.layers) if isinstance(l, layers.Conv2D)]
    if not convs:
        kinds = ", ".join(type(l).__name__ for l in obj.layers)
        raise ValueError(f"{argname}: the model has no Conv2D layer (its layers: {kinds})")
    if layer is None:
        index = convs[0]
    elif isinstance(layer, str):
        names = [l.name for l in obj.layers]
        if layer not in names:
            raise ValueError(f"layer: no layer named {layer!r}; the model has "
                             f"{', '.join(names)}")
        index = names.index(layer)
    elif isinstance(layer, numbers.Integral) and not isinstance(layer, bool):
        if not -len(obj.layers) <= layer < len(obj.layers):
            raise ValueError(f"layer: index {layer} is out of range for a model of "
                             f"{len(obj.layers)} layers")
        index = int(layer) % len(obj.layers)
    else:
        raise TypeError(f"layer: expected a layer index, a layer name or None, got "
                        f"{type(layer).__name__}")
    if index not in convs:
        raise ValueError(f"layer: {obj.layers[index].name!r} is a "
                         f"{type(obj.layers[index]).__name__}, not a Conv2D (Conv2D "
                         f"layers: {', '.join(obj.layers[i].name for i in convs)})")
    return obj.layers[index], index


def _grid(n):
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


def _bare(ax):
    ax.set_xticks([])
    ax.set_yticks([])


def plot_kernels(model_or_layer, path=None, layer=None, figsize=None, dpi=100):
    """A Conv2D layer's kernels, one small image per filter, on one colour scale
    symmetric about zero (red positive, blue negative).

    model_or_layer: a built Sequential (its first Conv2D, or the one `layer` names by
    index or name) or a Conv2D layer. When the layer reads C > 1 input channels, each
    filter is shown as the mean of its C channel slices: one image per filter, whatever
    the depth."""
    conv, _ = _conv_layer(model_or_layer, layer, "model_or_layer")
    kernel = np.asarray(conv.params["kernel"], dtype=np.float64)
    kh, kw, channels, filters = kernel.shape
    images = kernel.mean(axis=2)  # (KH, KW, F); the identity when C == 1
    path, fmt = _check_path(path)
    rows, cols = _grid(filters)
    fig = _figure(figsize or (1.1 * cols + 1.2, 1.1 * rows + 0.7), dpi)
    scale = float(np.abs(images).max()) or 1.0
    grid = fig.add_gridspec(rows, cols + 1, width_ratios=[1] * cols + [0.25], left=0.04,
                            right=0.9, bottom=0.04, top=0.86)
    for f in range(filters):
        ax = fig.add_subplot(grid[f // cols, f % cols])
        shown = ax.imshow(images[:, :, f], cmap="RdBu_r", vmin=-scale, vmax=scale,
                          interpolation="nearest")
        ax.set_title(str(f), fontsize=8, pad=2)
        _bare(ax)
    fig.colorbar(shown, cax=fig.add_subplot(grid[:, cols]))
    what = f"{filters} kernels of {kh}x{kw}"
    if channels > 1:
        what += f", mean over {channels} input channels"
    fig.suptitle(f"{conv.name}: {what}", fontsize=10)
    return _save(fig, path, fmt)


def _check_image(model, image):
    shape = model.input_shape
    image = utils._numeric_array("image", image)
    if image.shape != shape and not (shape[-1] == 1 and image.shape == shape[:-1]):
        also = f" or {shape[:-1]}" if shape[-1] == 1 else ""
        raise ValueError(f"image: expected one sample of shape {shape}{also}, got shape "
                         f"{image.shape}")
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise ValueError("image: contains NaN or inf")
    return image.reshape(shape)


def plot_feature_maps(model, image, path=None, layer=None, figsize=None, dpi=100):
    """The image, each kernel's output map on it, and the elementwise max across the
    kernels' maps, as in chapter 10's figure of kernels run over an image of a 2.

    image: one sample as the model takes it, (H, W, C), or (H, W) for one channel; it
    is not rescaled (pass pixels / 255 if the model was trained on that). The maps are
    the Conv2D layer's outputs, after its activation, in inference mode; `layer` picks
    the Conv2D by index or name (default: the first). Maps and max share one colour
    scale."""
    if not isinstance(model, model_module.Sequential):
        raise TypeError(f"model: expected a cconv.Sequential, got {type(model).__name__}")
    conv, index = _conv_layer(model, layer, "model")
    image = _check_image(model, image)
    path, fmt = _check_path(path)
    out = image[None].astype(model.dtype)
    for l in model.layers[:index + 1]:
        out = l.forward(out, training=False)
    maps = np.array(out[0], dtype=np.float64)  # a copy: Conv2D reuses its output buffer
    pooled = maps.max(axis=-1)
    filters = maps.shape[-1]
    rows, cols = _grid(filters)
    fig = _figure(figsize or (1.1 * (cols + rows / 2) + 1.2, 1.1 * rows + 0.8), dpi)
    outer = fig.add_gridspec(1, 3, width_ratios=[rows / 2, cols, 0.25], wspace=0.15,
                             left=0.03, right=0.93, bottom=0.04, top=0.86)
    left = outer[0, 0].subgridspec(2, 1, hspace=0.25)
    right = outer[0, 1].subgridspec(rows, cols)
    ax = fig.add_subplot(left[0, 0])
    if image.shape[-1] in (3, 4):
        pixels = image.astype(np.float64)
        span = pixels.max() - pixels.min()
        ax.imshow((pixels - pixels.min()) / (span or 1.0), interpolation="nearest")
    else:
        ax.imshow(image.astype(np.float64).mean(axis=-1), cmap="gray",
                  interpolation="nearest")
    ax.set_title("image", fontsize=9, pad=2)
    _bare(ax)
    low, high = float(maps.min()), float(maps.max())
    if low == high:
        low, high = low - 0.5, high + 0.5
    ax = fig.add_subplot(left[1, 0])
    shown = ax.imshow(pooled, cmap="viridis", vmin=low, vmax=high, interpolation="nearest")
    ax.set_title("max over kernels", fontsize=9, pad=2)
    _bare(ax)
    for f in range(filters):
        ax = fig.add_subplot(right[f // cols, f % cols])
        ax.imshow(maps[:, :, f], cmap="viridis", vmin=low, vmax=high,
                  interpolation="nearest")
        ax.set_title(str(f), fontsize=8, pad=2)
        _bare(ax)
    fig.colorbar(shown, cax=fig.add_subplot(outer[0, 2]))
    oh, ow = maps.shape[:2]
    fig.suptitle(f"{conv.name}: each kernel's {oh}x{ow} output map, and their "
                 f"elementwise max", fontsize=10)
    return _save(fig, path, fmt)
