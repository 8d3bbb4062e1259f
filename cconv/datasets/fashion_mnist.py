"""Fashion-MNIST (Zalando's 28x28 clothing images), returned as
keras.datasets.fashion_mnist.load_data returns them.

load_data() uses the first source that exists, in this order:

1. the ``path`` argument (a folder); when given, nothing else is tried
2. ``$CCONV_FASHION_MNIST_DIR`` (a folder); when set, nothing else is tried
3. ``~/.keras/datasets/fashion-mnist/``, where Keras's own load_data keeps the files
4. the cache folder: ``$CCONV_CACHE_DIR/fashion-mnist``, else ``~/.cache/cconv/fashion-mnist``
5. a download into the cache from Keras's mirror, else Zalando's, each file checked
   against the SHA-256 of Zalando's published files (skipped when ``$CCONV_OFFLINE`` is
   set to anything but "" or "0")

A folder holds the four IDX files (gzipped or raw) under the names MNIST uses, which is
why Fashion-MNIST has its own variable and cache folder: MNIST's $CCONV_DATA_DIR names
MNIST's folder itself, and its files would be read as clothes. MNIST's digits are refused
by their labels. Files are validated as MNIST's are (see cconv.datasets.mnist), and
checked against a SHA256SUMS file in their folder when there is one.
"""
import os

from cconv.datasets._common import (
    IDX_NAMES, DatasetError, DatasetNotFoundError, cache_dir, fetch, find_idx_files,
    first_mirror, keras_dir, load_idx_set, missing_idx_error, not_found, try_download)

__all__ = ["load_data", "DatasetError", "DatasetNotFoundError"]

ENV_VAR = "CCONV_FASHION_MNIST_DIR"
_KERAS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
_ZALANDO_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# Zalando's files (MD5s in github.com/zalandoresearch/fashion-mnist's README); these
# SHA-256 sums are the ones torchvision and others pin for them
_SHA256 = {
    "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
}
# MNIST's first training labels: the same file names in the wrong folder give these
_MNIST_FIRST_LABELS = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4, 3, 5, 3, 6, 1, 7, 2, 8, 6, 9]


def load_data(path=None):
    """Return ``((x_train, y_train), (x_test, y_test))`` as uint8 arrays of shapes
    (60000, 28, 28), (60000,), (10000, 28, 28), (10000,), labels 0..9 (T-shirt/top,
    Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot).

    ``path`` is a folder holding the four IDX files. See the module docstring for where it
    looks when ``path`` is None. Raises DatasetError (a ValueError) for malformed data and
    DatasetNotFoundError (a FileNotFoundError) when no source works.
    """
    if path is not None:
        return _load_location(os.fspath(path), "path")
    env = os.environ.get(ENV_VAR)
    if env:
        return _load_location(env, "$" + ENV_VAR)
    tried = ["path argument: not given", f"${ENV_VAR}: not set"]

    for folder, what in ((keras_dir("fashion-mnist"), "Keras's folder"),
                         (cache_dir("fashion-mnist"), "cache")):
        data = _load_folder(folder, explicit=False)
        if data is not None:
            return data
        tried.append(f"{what} {folder}: does not hold the four IDX files")

    cache = cache_dir("fashion-mnist")
    data = try_download(tried, lambda: _download(cache))
    if data is not None:
        return data
    names = ", ".join(_SHA256)
    raise not_found("Fashion-MNIST", tried,
        f"pass load_data(path=...) a folder holding the four IDX files ({names}, gzipped "
        f"or not); set {ENV_VAR} to such a folder; put them in {keras_dir('fashion-mnist')}; "
        f"or go online (with CCONV_OFFLINE unset) so that they are downloaded into the "
        f"cache from {_KERAS_URL} or {_ZALANDO_URL}.")


def _load_location(location, source):
    """Load from a folder named by the user; anything but success is an error."""
    if os.path.isdir(location):
        data = _load_folder(location, explicit=True)
        if data is None:
            names = ", ".join(names[0] for names in IDX_NAMES.values())
            raise DatasetNotFoundError(f"{source} {location}: expected the four "
                                       f"Fashion-MNIST IDX files ({names}, or unzipped) in "
                                       "this folder, found none")
        return data
    if os.path.exists(location):
        raise DatasetNotFoundError(f"{source} {location}: expected a folder holding the four "
                                   "Fashion-MNIST IDX files, found a file")
    raise DatasetNotFoundError(f"{source} {location}: no such folder")


def _load_folder(folder, explicit):
    """The four IDX files of folder, or None when it holds none (or, unless the user named
    it, only some: what an interrupted download leaves, and the download completes)."""
    if not os.path.isdir(folder):
        return None
    found = find_idx_files(folder)
    if len(found) == len(IDX_NAMES):
        data = load_idx_set(folder, found)
        if data[0][1][:len(_MNIST_FIRST_LABELS)].tolist() == _MNIST_FIRST_LABELS:
            raise DatasetError(f"{found['y_train']}: expected Fashion-MNIST's labels, found "
                               "MNIST's (these are the digits: their files have the same "
                               "names)")
        return data
    if found and explicit:
        raise missing_idx_error("Fashion-MNIST", folder, found)
    return None


def _download(cache):
    """Download the four files into the cache from the first mirror that works and load
    them. Raises OSError naming every mirror's failure."""
    def from_mirror(base):
        for name, sha256 in _SHA256.items():
            fetch(base + name, os.path.join(cache, name), sha256)
        return _load_folder(cache, explicit=True)

    return first_mirror([(base, lambda base=base: from_mirror(base))
                         for base in (_KERAS_URL, _ZALANDO_URL)])

