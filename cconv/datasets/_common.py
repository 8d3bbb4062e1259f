"""What the data set loaders share: their errors, the cache folder, SHA-256 checks,
verified atomic downloads, the not-found message, and the IDX format with its 28x28
image sets (MNIST and Fashion-MNIST use the same files under the same names).

Trust: a download is written to a temporary file beside its destination and renamed
only once its SHA-256 matches the pinned sum, so the cache never holds partial or wrong
bytes. Local files are validated strictly, because the training kernels run without
bounds checks, and checked against a SHA256SUMS file when their folder has one."""
import gzip
import hashlib
import http.client
import math
import os
import re
import struct
import urllib.request
import zlib

import numpy as np

from cconv._io import atomic_write


class DatasetError(ValueError):
    """A data file is malformed: wrong format, size, dtype, shape, values or checksum."""


class DatasetNotFoundError(FileNotFoundError):
    """No usable source of the data set was found."""


TIMEOUT = 20  # seconds; a stalled mirror must fall through to the next source, not hang
MAX_DOWNLOAD = 64 << 20  # default cap: stops a misbehaving server filling the disk
CHUNK = 1 << 20
# what a failed download attempt raises: a mirror failing is not a bug, try the next
DOWNLOAD_ERRORS = (OSError, http.client.HTTPException, DatasetError)


def offline():
    """True when $CCONV_OFFLINE is set to anything but "" or "0"."""
    return os.environ.get("CCONV_OFFLINE", "") not in ("", "0")


def cache_dir(*sub):
    """$CCONV_CACHE_DIR, else ~/.cache/cconv; joined with sub."""
    root = os.environ.get("CCONV_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "cconv")
    return os.path.join(root, *sub)


def keras_dir(*sub):
    """Where Keras's get_file keeps data sets: ~/.keras/datasets, joined with sub."""
    return os.path.join(os.path.expanduser("~"), ".keras", "datasets", *sub)


def not_found(title, tried, fixes):
    """The error when no source worked: every source tried, in order, then the fixes."""
    return DatasetNotFoundError(
        f"{title} was not found. Tried, in order:\n  - " + "\n  - ".join(tried) + "\n"
        "To fix, do one of: " + fixes)


def try_download(tried, fetch):
    """fetch()'s data, or None after noting in tried why there was no download."""
    if offline():
        tried.append("download into the cache: skipped because $CCONV_OFFLINE is set")
        return None
    try:
        return fetch()
    except OSError as exc:
        tried.append(f"download into the cache: failed ({exc})")
        return None


def first_mirror(attempts):
    """The result of the first (label, callable) that succeeds. Raises OSError naming
    every attempt's failure."""
    failures = []
    for label, attempt in attempts:
        try:
            return attempt()
        except DOWNLOAD_ERRORS as exc:
            failures.append(f"{label}: {exc}")
    raise OSError("; ".join(failures))


def read_upto(f, n):
    """Read up to n bytes in chunks, so a header claiming a huge size allocates nothing big."""
    buf = bytearray()
    while len(buf) < n:
        chunk = f.read(min(CHUNK, n - len(buf)))
        if not chunk:
            break
        buf += chunk
    return buf


# --- checksums ------------------------------------------------------------------------


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_sha256sums(path):
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


def check_sha256sums(folder, paths):
    """Check each of paths (files in folder) that folder's SHA256SUMS lists, if it has one."""
    sums_path = os.path.join(folder, "SHA256SUMS")
    if not os.path.isfile(sums_path):
        return
    sums = read_sha256sums(sums_path)
    for path in paths:
        expected = sums.get(os.path.basename(path))
        if expected is not None:
            actual = sha256_file(path)
            if actual != expected:
                raise DatasetError(f"{path}: expected SHA-256 {expected} (listed in "
                                   f"{sums_path}), found {actual}")


# --- download ---------------------------------------------------------------------------


def urlopen(url):
    """Open url for reading (a module-level hook, so tests can serve bytes from memory)."""
    return urllib.request.urlopen(url, timeout=TIMEOUT)


def download(url, dest, sha256, max_bytes=None):
    """Fetch url into dest. The bytes go to a temporary file beside dest and are renamed
    to dest only once their SHA-256 matches, so dest never holds partial or wrong data.
    max_bytes defaults to MAX_DOWNLOAD."""
    limit = MAX_DOWNLOAD if max_bytes is None else max_bytes
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    prefix = f".{os.path.basename(dest)}."
    with atomic_write(dest, prefix=prefix, suffix=".part") as out, urlopen(url) as response:
        digest, size = hashlib.sha256(), 0
        for chunk in iter(lambda: response.read(CHUNK), b""):
            size += len(chunk)
            if size > limit:
                raise DatasetError(f"{url}: expected at most {limit} bytes, the server "
                                   "sent more")
            digest.update(chunk)
            out.write(chunk)
        if digest.hexdigest() != sha256:
            raise DatasetError(f"{url}: expected SHA-256 {sha256}, found "
                               f"{digest.hexdigest()} ({size} bytes); nothing was saved")


def fetch(url, dest, sha256, max_bytes=None):
    """download(), unless dest already holds the right bytes (kept from an earlier,
    interrupted attempt)."""
    if not (os.path.isfile(dest) and sha256_file(dest) == sha256):
        download(url, dest, sha256, max_bytes)


# --- IDX files --------------------------------------------------------------------------

_IDX_NDIM = {2049: 1, 2051: 3}  # magic number -> dimensions: labels, images


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


def _parse_idx(f, path):
    head = bytes(read_upto(f, 4))
    magic = struct.unpack(">I", head)[0] if len(head) == 4 else None
    ndim = _IDX_NDIM.get(magic)
    if ndim is None:
        found = f"only {len(head)} bytes" if magic is None else f"{magic} (0x{magic:08x})"
        raise DatasetError(f"{path}: expected IDX magic number 2049 (labels) or 2051 "
                           f"(images), found {found}")
    raw_dims = read_upto(f, 4 * ndim)
    if len(raw_dims) != 4 * ndim:
        raise DatasetError(f"{path}: expected {ndim} 4-byte dimension sizes after magic "
                           f"{magic}, found {len(raw_dims)} bytes")
    dims = struct.unpack(f">{ndim}I", raw_dims)
    size = math.prod(dims)
    data = read_upto(f, size + 1)  # one byte more than declared, to catch trailing data
    if len(data) != size:
        found = f"only {len(data)}" if len(data) < size else "more (trailing data)"
        raise DatasetError(f"{path}: header declares dimensions {'x'.join(map(str, dims))}, "
                           f"so {size} data bytes, found {found}")
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


# --- 28x28 image sets: four arrays, as MNIST and Fashion-MNIST come ------------------------

KEYS = ("x_train", "y_train", "x_test", "y_test")
# accepted names of each IDX file, in order of preference
IDX_NAMES = {
    "x_train": ("train-images-idx3-ubyte.gz", "train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "y_train": ("train-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "x_test": ("t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "y_test": ("t10k-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def find_idx_files(folder):
    """{key: path} of the IDX files present in folder, each by its first name found."""
    found = {}
    for key, names in IDX_NAMES.items():
        for name in names:
            candidate = os.path.join(folder, name)
            if os.path.isfile(candidate):
                found[key] = candidate
                break
    return found


def missing_idx_error(title, folder, found):
    missing = ", ".join(IDX_NAMES[key][0] for key in IDX_NAMES if key not in found)
    return DatasetNotFoundError(f"{folder}: expected all four {title} IDX files, found only "
                                f"{len(found)}; missing {missing} (or unzipped)")


def load_idx_set(folder, paths):
    """The four IDX files paths[key] of folder, checked against its SHA256SUMS if any."""
    check_sha256sums(folder, paths.values())
    return checked_28x28({key: load_idx(path) for key, path in paths.items()}, paths)


def checked_28x28(arrays, names):
    """Validate the four arrays as train and test splits of 28x28 images labelled 0..9 and
    return them C-contiguous, Keras-shaped; names[key] names each array's source."""
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
        check_labels(y, names[yk])
    x_train, y_train, x_test, y_test = (np.ascontiguousarray(arrays[k]) for k in KEYS)
    return (x_train, y_train), (x_test, y_test)


def check_labels(y, name, classes=10):
    if y.size and y.max() >= classes:
        bad = int(np.argmax(y >= classes))
        raise DatasetError(f"{name}: expected labels 0..{classes - 1}, found {y[bad]} at "
                           f"index {bad}")
