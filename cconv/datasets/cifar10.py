"""CIFAR-10 (60,000 32x32 colour images in 10 classes), returned as
keras.datasets.cifar10.load_data returns them: uint8 images of shape (n, 32, 32, 3),
channels last, and uint8 labels of shape (n, 1).

load_data() uses the first source that exists, in this order:

1. the ``path`` argument (a folder, or a .tar.gz archive); when given, nothing else is tried
2. ``$CCONV_CIFAR10_DIR`` (a folder, or an archive); when set, nothing else is tried
3. Keras's folders: ``~/.keras/datasets/cifar-10-batches-py-target/cifar-10-batches-py``
   (Keras 3) and ``~/.keras/datasets/cifar-10-batches-py`` (Keras 2)
4. the cache folder: ``$CCONV_CACHE_DIR/cifar-10``, else ``~/.cache/cconv/cifar-10``
5. a download of the binary version's archive into the cache, else the python version's,
   checked against its SHA-256 (skipped when ``$CCONV_OFFLINE`` is set to anything but ""
   or "0")

Both of Toronto's versions are read. The binary version (cifar-10-binary.tar.gz, batches
data_batch_1.bin ... test_batch.bin) is plain bytes: per image a label byte, then the red,
green and blue planes. The python version (cifar-10-python.tar.gz, batches data_batch_1 ...
test_batch, what Keras and torchvision keep) is pickles, which are never unpickled: a
stand-in Unpickler lets through only dicts, lists, strings, bytes, integers and inert
stand-ins for the three numpy names a batch's array refers to, so no code of the file's
choosing runs; the array is then rebuilt from its raw bytes after checking its shape and
dtype. Downloads take the binary version first because it needs no pickle at all.

A folder may hold the six batch files of either version, the archive's folder of them
(cifar-10-batches-bin or cifar-10-batches-py), or an archive under its official name.
Archives are read in place, never extracted. Every batch must hold 10,000 images with
labels 0..9; a SHA256SUMS file in a folder is checked. Malformed data raises DatasetError
(a ValueError) naming the file, what was expected and what was found.
"""
import gzip
import io
import os
import pickle
import tarfile
import zlib
from collections import namedtuple

import numpy as np

from cconv.datasets._common import (
    CHUNK, DatasetError, DatasetNotFoundError, cache_dir, check_labels, check_sha256sums, fetch,
    first_mirror, keras_dir, not_found, read_upto, try_download)

__all__ = ["load_data", "DatasetError", "DatasetNotFoundError"]

ENV_VAR = "CCONV_CIFAR10_DIR"
_BATCH = 10000  # images per batch file
_PIXELS = 3 * 32 * 32
_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST = "test_batch"
_MAX_ARCHIVE = 256 << 20  # the archives are about 170 MB

Format = namedtuple("Format", "name folder suffix archive url sha256")
# in order of preference; the SHA-256 sums: the binary archive's as TensorFlow Datasets
# pins it, the python archive's as keras.datasets.cifar10 pins it
_FORMATS = (
    Format("binary", "cifar-10-batches-bin", ".bin", "cifar-10-binary.tar.gz",
           "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
           "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"),
    Format("python", "cifar-10-batches-py", "", "cifar-10-python.tar.gz",
           "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
           "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"),
)


def load_data(path=None):
    """Return ``((x_train, y_train), (x_test, y_test))`` as uint8 arrays of shapes
    (50000, 32, 32, 3), (50000, 1), (10000, 32, 32, 3), (10000, 1), labels 0..9 (airplane,
    automobile, bird, cat, deer, dog, frog, horse, ship, truck).

    ``path`` is a folder (see the module docstring for what it may hold) or the path of
    either .tar.gz archive. Raises DatasetError (a ValueError) for malformed data and
    DatasetNotFoundError (a FileNotFoundError) when no source works.
    """
    if path is not None:
        return _load_location(os.fspath(path), "path")
    env = os.environ.get(ENV_VAR)
    if env:
        return _load_location(env, "$" + ENV_VAR)
    tried = ["path argument: not given", f"${ENV_VAR}: not set"]

    cache = cache_dir("cifar-10")
    for folder, what in ((keras_dir("cifar-10-batches-py-target"), "Keras 3's folder"),
                         (keras_dir(), "Keras 2's folder"), (cache, "cache")):
        data = _load_folder(folder, explicit=False)
        if data is not None:
            return data
        tried.append(f"{what} {folder}: holds neither the batch files nor an archive")

    data = try_download(tried, lambda: _download(cache))
    if data is not None:
        return data
    raise not_found("CIFAR-10", tried,
        "pass load_data(path=...) either archive (" + " or ".join(
            f.archive for f in _FORMATS) + ") or a folder holding one, or holding the six "
        "batch files of either version (" + "; ".join(
            ", ".join(_names(f)) for f in _FORMATS) + ") or their folder (" + " or ".join(
            f.folder for f in _FORMATS) + f"); set {ENV_VAR} to such a folder or archive; "
        f"or go online (with CCONV_OFFLINE unset) so that it is downloaded into the cache "
        "from " + " or ".join(f.url for f in _FORMATS) + ".")


def _names(fmt):
    return [name + fmt.suffix for name in _TRAIN + (_TEST,)]


def _max_batch_bytes():
    # a batch's pixels and labels, plus room for a python batch's file names
    return _BATCH * (_PIXELS + 64) + (64 << 10)


def _load_location(location, source):
    """Load from a folder or archive named by the user; anything but success is an error."""
    if os.path.isdir(location):
        data = _load_folder(location, explicit=True)
        if data is None:
            raise DatasetNotFoundError(
                f"{source} {location}: expected CIFAR-10's six batch files, their folder ("
                + " or ".join(f.folder for f in _FORMATS) + ") or an archive ("
                + " or ".join(f.archive for f in _FORMATS) + ") in this folder, found none")
        return data
    if os.path.isfile(location):
        return _load_archive(location)
    raise DatasetNotFoundError(f"{source} {location}: no such file or folder")


def _load_folder(folder, explicit):
    """The data from folder's batch files, else its batch folders, else its archives;
    None when it holds none of them. Some batch files but not all are an error only in a
    folder the user named."""
    if not os.path.isdir(folder):
        return None
    for fmt in _FORMATS:
        for where in (folder, os.path.join(folder, fmt.folder)):
            paths = [os.path.join(where, name) for name in _names(fmt)]
            present = [p for p in paths if os.path.isfile(p)]
            if len(present) == len(paths):
                check_sha256sums(where, paths)
                return _assemble({name: _read_file(p) for name, p in zip(_names(fmt), paths)},
                                 fmt, {name: p for name, p in zip(_names(fmt), paths)})
            if present and explicit:
                missing = ", ".join(os.path.basename(p) for p in paths if p not in present)
                raise DatasetNotFoundError(f"{where}: expected CIFAR-10's six {fmt.name} "
                                           f"batch files, found {len(present)}; missing "
                                           f"{missing}")
    for fmt in _FORMATS:
        archive = os.path.join(folder, fmt.archive)
        if os.path.isfile(archive):
            check_sha256sums(folder, [archive])
            return _load_archive(archive)
    return None


def _read_file(path):
    with open(path, "rb") as f:
        data = read_upto(f, _max_batch_bytes() + 1)
    if len(data) > _max_batch_bytes():
        raise DatasetError(f"{path}: expected a CIFAR-10 batch of at most "
                           f"{_max_batch_bytes()} bytes, found a larger file")
    return bytes(data)


def _load_archive(path):
    """Read the six batches of either version straight from a .tar.gz, extracting nothing."""
    wanted = {f"{fmt.folder}/{name}": (fmt, name) for fmt in _FORMATS for name in _names(fmt)}
    found = {}
    try:
        # a stream: one pass over the gzip data, whatever order the members come in;
        # GzipFile, not tarfile's "r|gz", because only it checks the gzip CRC
        with gzip.open(path, "rb") as gz, tarfile.open(fileobj=gz, mode="r|") as tar:
            for member in tar:
                key = wanted.get(member.name)
                if key is None:
                    continue
                if member.name in found or not member.isreg():
                    raise DatasetError(f"{path}: member {member.name}: expected one regular "
                                       "file, found a duplicate or a link")
                if member.size > _max_batch_bytes():
                    raise DatasetError(f"{path}: member {member.name}: expected at most "
                                       f"{_max_batch_bytes()} bytes, found {member.size}")
                found[member.name] = (key, tar.extractfile(member).read())
            while gz.read(CHUNK):  # to the end, where the CRC is checked
                pass
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DatasetError(f"{path}: expected an intact .tar.gz archive of the CIFAR-10 "
                           f"batches, found a corrupt or truncated one ({exc})") from exc
    for fmt in _FORMATS:
        blobs = {name: blob for (f, name), blob in found.values() if f is fmt}
        if blobs:
            missing = [n for n in _names(fmt) if n not in blobs]
            if missing:
                raise DatasetError(f"{path}: expected the six batches in {fmt.folder}/, "
                                   f"missing {', '.join(missing)}")
            return _assemble(blobs, fmt, {n: f"{path} [{fmt.folder}/{n}]" for n in blobs})
    raise DatasetError(f"{path}: expected the CIFAR-10 batches in " + " or ".join(
        f"{f.folder}/" for f in _FORMATS) + ", found neither")


def _download(cache):
    """Download an archive into the cache, the first version whose download works, and
    load it. Raises OSError naming every failure."""
    def attempt(fmt):
        dest = os.path.join(cache, fmt.archive)
        fetch(fmt.url, dest, fmt.sha256, max_bytes=_MAX_ARCHIVE)
        return _load_archive(dest)

    return first_mirror([(fmt.url, lambda fmt=fmt: attempt(fmt)) for fmt in _FORMATS])


def _assemble(blobs, fmt, sources):
    """Parse the six batches of format fmt ({name: bytes}) into Keras's arrays."""
    parse = _parse_binary if fmt.name == "binary" else _parse_python
    batches = {name: parse(blob, sources[name]) for name, blob in blobs.items()}
    train = [batches[name + fmt.suffix] for name in _TRAIN]
    test = batches[_TEST + fmt.suffix]
    # the batches store each image channels first (3, 32, 32); Keras returns channels last
    x_train = np.concatenate([x for x, _ in train]).transpose(0, 2, 3, 1)
    y_train = np.concatenate([y for _, y in train]).reshape(-1, 1)
    x_test, y_test = test[0].transpose(0, 2, 3, 1), test[1].reshape(-1, 1)
    return ((np.ascontiguousarray(x_train), y_train),
            (np.ascontiguousarray(x_test), y_test))


def _parse_binary(blob, source):
    """One binary batch: per image, its label byte then 3x32x32 pixel bytes."""
    size = _BATCH * (1 + _PIXELS)
    if len(blob) != size:
        raise DatasetError(f"{source}: expected {_BATCH} records of {1 + _PIXELS} bytes "
                           f"({size} bytes), found {len(blob)} bytes")
    records = np.frombuffer(blob, dtype=np.uint8).reshape(_BATCH, 1 + _PIXELS)
    labels = records[:, 0].copy()
    check_labels(labels, source)
    return records[:, 1:].reshape(_BATCH, 3, 32, 32), labels


# --- python batches: pickles read without unpickling -----------------------------------


class _StandIn:
    """What a numpy name in the pickle becomes: it records its arguments and the state the
    pickle gives it, and does nothing else."""

    def __init__(self, kind, args):
        self.kind, self.args, self.state = kind, args, None

    def __setstate__(self, state):
        self.state = state


# only ever an argument of _reconstruct; a bare object, so a pickle cannot give it state
_NDARRAY = object()


def _stand_in(kind):
    return lambda *args: _StandIn(kind, args)


# the only globals a CIFAR-10 python batch names (numpy 2 renamed numpy.core)
_GLOBALS = {("numpy.core.multiarray", "_reconstruct"): _stand_in("array"),
            ("numpy._core.multiarray", "_reconstruct"): _stand_in("array"),
            ("numpy", "ndarray"): _NDARRAY,
            ("numpy", "dtype"): _stand_in("dtype")}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}: only numpy's "
                                         "array names may appear") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refused a persistent id")


def _parse_python(blob, source):
    """One python batch: a pickled dict whose b"data" is a (10000, 3072) uint8 array (each
    row an image's red, green and blue planes) and b"labels" a list of 10000 ints."""
    try:
        batch = _BatchUnpickler(io.BytesIO(blob), encoding="bytes").load()
    # whatever a malformed or hostile pickle makes the unpickler raise
    except Exception as exc:
        raise DatasetError(f"{source}: expected a CIFAR-10 python batch (a pickled dict of "
                           f"plain values and one numpy array), found one that cannot be "
                           f"read safely ({type(exc).__name__}: {exc})") from exc
    if not isinstance(batch, dict):
        raise DatasetError(f"{source}: expected a pickled dict, found {type(batch).__name__}")
    batch = {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    images = _array_bytes(batch.get("data"), source)
    labels = batch.get("labels")
    if (not isinstance(labels, list) or len(labels) != _BATCH
            or not all(type(v) is int and 0 <= v < 256 for v in labels)):
        raise DatasetError(f"{source}: expected 'labels', a list of {_BATCH} ints, found "
                           f"{_describe(labels)}")
    labels = np.array(labels, dtype=np.uint8)
    check_labels(labels, source)
    return np.frombuffer(images, dtype=np.uint8).reshape(_BATCH, 3, 32, 32), labels


def _array_bytes(data, source):
    """The raw bytes of the pickled array stand-in data, after checking that it is a
    C-ordered uint8 array of shape (_BATCH, 3072)."""
    expected = f"'data', a C-ordered uint8 array of shape ({_BATCH}, {_PIXELS})"
    state = data.state if isinstance(data, _StandIn) and data.kind == "array" else None
    if (data is None or not isinstance(state, tuple) or len(state) != 5
            or not data.args or data.args[0] is not _NDARRAY):
        raise DatasetError(f"{source}: expected {expected}, found {_describe(data)}")
    _, shape, dtype, fortran, raw = state
    code = dtype.args[0] if isinstance(dtype, _StandIn) and dtype.kind == "dtype" else None
    if code not in (b"u1", "u1") or fortran is not False:
        raise DatasetError(f"{source}: expected {expected}, found dtype {code!r} "
                           f"{'Fortran' if fortran else 'C'}-ordered")
    if shape != (_BATCH, _PIXELS):
        raise DatasetError(f"{source}: expected {expected}, found shape {shape!r}")
    if not isinstance(raw, bytes) or len(raw) != _BATCH * _PIXELS:
        found = f"{len(raw)} bytes" if isinstance(raw, bytes) else type(raw).__name__
        raise DatasetError(f"{source}: expected {expected} ({_BATCH * _PIXELS} bytes of "
                           f"pixels), found {found}")
    return raw


def _describe(value):
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return "nothing" if value is None else type(value).__name__
