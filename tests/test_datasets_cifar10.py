"""cconv.datasets.cifar10: both of Toronto's formats (built here as the official files are
laid out), the python batches' pickles read without unpickling, archives, validation,
lookup order, and the download from a local HTTP server.

Batches hold BATCH images here instead of 10,000 (the module's constant is patched); the
images are drawn channels last, as Keras returns them, and written into the files plane
by plane as Toronto documents, so the loader's transposition is checked against that
description, not against itself. The real-data test runs only with CCONV_CIFAR10_DIR."""
import functools
import hashlib
import http.server
import io
import os
import pickle
import struct
import tarfile
import threading

import numpy as np
import pytest

from cconv.datasets import _common, cifar10
from cconv.datasets._common import DatasetError, DatasetNotFoundError
from test_datasets import isolated  # noqa: F401  (autouse: HOME, env, no network)

BATCH = 3
REAL_URLOPEN = _common.urlopen
TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
NAMES = TRAIN + ["test_batch"]


@pytest.fixture(autouse=True)
def small_batches(monkeypatch):
    monkeypatch.setattr(cifar10, "_BATCH", BATCH)


def make_batches(seed):
    """{name: (images (BATCH, 32, 32, 3) channels last, labels (BATCH,))}; each batch's
    labels differ from the others', so a batch out of place shows."""
    rng = np.random.default_rng(seed)
    return {name: (rng.integers(0, 256, (BATCH, 32, 32, 3), dtype=np.uint8),
                   np.array([(i + k) % 10 for k in range(BATCH)], dtype=np.uint8))
            for i, name in enumerate(NAMES)}


def expected(batches):
    x_train = np.concatenate([batches[n][0] for n in TRAIN])
    y_train = np.concatenate([batches[n][1] for n in TRAIN]).reshape(-1, 1)
    return (x_train, y_train), (batches["test_batch"][0], batches["test_batch"][1][:, None])


def planes(image):
    """Toronto's row of one image: 1024 red values, then green, then blue, each in row-major
    order over the 32x32 pixels."""
    return b"".join(image[:, :, channel].tobytes() for channel in range(3))


def binary_batch(images, labels):
    return b"".join(bytes([label]) + planes(image) for image, label in zip(images, labels))


def _op_str(s):
    """A Python 2 str (what the official batches hold) as cPickle writes it."""
    s = s.encode("latin-1") if isinstance(s, str) else s
    return (b"U" + bytes([len(s)]) + s) if len(s) < 256 else b"T" + struct.pack("<I", len(s)) + s


def _op_int(v):
    return b"K" + bytes([v]) if v < 256 else b"M" + struct.pack("<H", v) if v < 65536 \
        else b"J" + struct.pack("<i", v)


def python_batch(images, labels, dtype=b"u1", shape=None, module="numpy.core.multiarray",
                 data=None, fortran=False):
    """A batch pickled as Python 2's cPickle wrote the official ones (protocol 2): a dict
    of batch_label, labels (a list), data (a numpy array of shape (n, 3072), rows as
    planes()) and filenames."""
    raw = b"".join(planes(image) for image in images) if data is None else data
    n, width = shape or (len(images), 3072)
    array = (b"c" + module.encode() + b"\n_reconstruct\ncnumpy\nndarray\n" + _op_int(0)
             + b"\x85" + _op_str("b") + b"\x87R"
             + b"(" + _op_int(1) + _op_int(n) + _op_int(width) + b"\x86"
             + b"cnumpy\ndtype\n" + _op_str(dtype) + _op_int(0) + _op_int(1) + b"\x87R"
             + b"(" + _op_int(3) + _op_str("|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xff"
             + _op_int(0) + b"tb" + (b"\x88" if fortran else b"\x89") + _op_str(raw) + b"tb")
    label_list = b"](" + b"".join(_op_int(int(v)) for v in labels) + b"e"
    names = b"](" + b"".join(_op_str(f"img_{i}.png") for i in range(len(labels))) + b"e"
    return (b"\x80\x02}(" + _op_str("batch_label") + _op_str("training batch 1 of 5")
            + _op_str("labels") + label_list + _op_str("data") + array
            + _op_str("filenames") + names + b"u.")


FORMATS = {"binary": (".bin", "cifar-10-batches-bin", "cifar-10-binary.tar.gz", binary_batch),
           "python": ("", "cifar-10-batches-py", "cifar-10-python.tar.gz", python_batch)}


def write_batches(folder, batches, fmt):
    suffix, _, _, encode = FORMATS[fmt]
    folder.mkdir(parents=True, exist_ok=True)
    for name, (images, labels) in batches.items():
        (folder / (name + suffix)).write_bytes(encode(images, labels))
    return folder


def archive_bytes(batches, fmt, extra=()):
    """The official archive's layout: <folder>/<batch> members beside a readme and meta file."""
    suffix, folder, _, encode = FORMATS[fmt]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        members = [(f"{folder}/readme.html", b"<html></html>")]
        members += [(f"{folder}/{name}{suffix}", encode(*batches[name])) for name in
                    reversed(NAMES)]  # any order
        for name, blob in members + list(extra):
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return buf.getvalue()


def assert_keras_shaped(loaded, want):
    (x_train, y_train), (x_test, y_test) = loaded
    assert x_train.shape == (5 * BATCH, 32, 32, 3) and y_train.shape == (5 * BATCH, 1)
    assert x_test.shape == (BATCH, 32, 32, 3) and y_test.shape == (BATCH, 1)
    got = (x_train, y_train, x_test, y_test)
    for arr, ref in zip(got, (want[0][0], want[0][1], want[1][0], want[1][1])):
        assert arr.dtype == np.uint8 and arr.flags.c_contiguous
        np.testing.assert_array_equal(arr, ref)


# --- formats --------------------------------------------------------------------------


def test_fake_python_batch_is_a_real_numpy_pickle():
    """The builder above writes what numpy reads: our own bytes, so pickle may load them."""
    images, labels = make_batches(0)["data_batch_1"]
    batch = pickle.loads(python_batch(images, labels), encoding="bytes")
    assert batch[b"labels"] == labels.tolist()
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape == (BATCH, 3072)
    # Toronto: "the first 1024 entries contain the red channel values, the next 1024 the
    # green, and the final 1024 the blue", row-major
    assert batch[b"data"][1, 1024 + 32 * 5 + 7] == images[1, 5, 7, 1]


def test_python_batch_parsed_as_keras_parses_it(tmp_path):
    keras_cifar = pytest.importorskip("keras.src.datasets.cifar", reason="keras is not "
                                      'installed (pip install ".[interop]")')
    images, labels = make_batches(1)["test_batch"]
    path = tmp_path / "test_batch"
    path.write_bytes(python_batch(images, labels))
    data, keras_labels = keras_cifar.load_batch(str(path))
    ours, our_labels = cifar10._parse_python(path.read_bytes(), str(path))
    np.testing.assert_array_equal(ours, data.reshape(BATCH, 3, 32, 32))
    assert our_labels.tolist() == list(keras_labels)


@pytest.mark.parametrize("fmt", ["binary", "python"])
@pytest.mark.parametrize("layout", ["files", "batch folder", "archive in folder", "archive"])
def test_load_data_every_layout(tmp_path, fmt, layout):
    batches = make_batches(2)
    _, folder_name, archive_name, _ = FORMATS[fmt]
    if layout == "files":
        location = write_batches(tmp_path / "cifar", batches, fmt)
    elif layout == "batch folder":
        write_batches(tmp_path / "cifar" / folder_name, batches, fmt)
        location = tmp_path / "cifar"
    else:
        (tmp_path / "cifar").mkdir()
        archive = tmp_path / "cifar" / archive_name
        archive.write_bytes(archive_bytes(batches, fmt))
        location = tmp_path / "cifar" if layout == "archive in folder" else archive
    assert_keras_shaped(cifar10.load_data(location), expected(batches))
    assert_keras_shaped(cifar10.load_data(str(location)), expected(batches))


def test_channels_last_pixel_by_pixel(tmp_path):
    """One image written byte by byte from Toronto's description, read back channels last."""
    raw = bytes((7 * r + 3 * c + 101 * ch) % 256 for ch in range(3) for r in range(32)
                for c in range(32))
    batches = {name: (np.zeros((BATCH, 32, 32, 3), np.uint8), np.zeros(BATCH, np.uint8))
               for name in NAMES}
    folder = write_batches(tmp_path / "cifar", batches, "binary")
    blob = bytearray((folder / "test_batch.bin").read_bytes())
    blob[1:1 + 3072] = raw  # the first image of the test batch
    (folder / "test_batch.bin").write_bytes(bytes(blob))
    _, (x_test, _) = cifar10.load_data(folder)
    for r, c, ch in [(0, 0, 0), (0, 1, 0), (1, 0, 0), (5, 9, 1), (31, 30, 2)]:
        assert x_test[0, r, c, ch] == (7 * r + 3 * c + 101 * ch) % 256, (r, c, ch)


def test_binary_and_python_give_the_same_arrays(tmp_path):
    batches = make_batches(3)
    a = cifar10.load_data(write_batches(tmp_path / "bin", batches, "binary"))
    b = cifar10.load_data(write_batches(tmp_path / "py", batches, "python"))
    assert_keras_shaped(a, expected(batches))
    assert_keras_shaped(b, expected(batches))


# --- validation -------------------------------------------------------------------------


def binary_corruptions(images, labels):
    good = binary_batch(images, labels)
    return {"truncated": good[:-1], "extra byte": good + b"\0",
            "label 10": binary_batch(images, [10] + list(labels[1:])),
            "one image short": good[:-3073], "empty": b""}


@pytest.mark.parametrize("case", list(binary_corruptions(*make_batches(0)["test_batch"])))
def test_bad_binary_batch(tmp_path, case):
    batches = make_batches(4)
    folder = write_batches(tmp_path / "cifar", batches, "binary")
    bad = folder / "data_batch_3.bin"
    bad.write_bytes(binary_corruptions(*batches["data_batch_3"])[case])
    with pytest.raises(DatasetError) as info:
        cifar10.load_data(folder)
    assert str(bad) in str(info.value)


class Evil:
    """A pickle that would run os.system: it must be refused before anything runs."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def python_corruptions(images, labels, marker):
    raw = b"".join(planes(image) for image in images)
    labels = list(labels)
    return {
        "os.system": pickle.dumps({b"data": Evil(marker)}, protocol=2),
        "builtins.eval": pickle.dumps(eval, protocol=2),
        "not a dict": pickle.dumps([1, 2, 3], protocol=2),
        "no data": pickle.dumps({b"labels": labels}, protocol=2),
        "int32 data": python_batch(images, labels, dtype=b"i4"),
        "flat shape": python_batch(images, labels, shape=(1, BATCH * 3072)),
        "fortran order": python_batch(images, labels, fortran=True),
        "short pixels": python_batch(images, labels, data=raw[:-1]),
        "label 10": python_batch(images, [10] + labels[1:]),
        "one label short": python_batch(images[:BATCH], labels[:-1]),
        "other module": python_batch(images, labels, module="os"),
        "state given to numpy.ndarray": b"\x80\x02cnumpy\nndarray\n}b.",
        "truncated": python_batch(images, labels)[:-20],
        "empty": b"",
    }


@pytest.mark.parametrize("case", list(python_corruptions(*make_batches(0)["test_batch"], "m")))
def test_bad_python_batch_is_refused_without_running_anything(tmp_path, case):
    batches = make_batches(5)
    folder = write_batches(tmp_path / "cifar", batches, "python")
    marker = tmp_path / "ran"
    bad = folder / "data_batch_1"  # read first: nothing before it can fail
    bad.write_bytes(python_corruptions(*batches["data_batch_1"], marker)[case])
    with pytest.raises(DatasetError) as info:
        cifar10.load_data(folder)
    assert str(bad) in str(info.value)
    assert not marker.exists()


def test_numpy_is_never_called_to_unpickle(tmp_path, monkeypatch):
    """The loader rebuilds the array from its bytes: numpy's unpickling helper never runs."""
    def forbidden(*args):
        pytest.fail("numpy's _reconstruct ran")

    import importlib
    import warnings
    for name in ("numpy._core.multiarray", "numpy.core.multiarray"):  # numpy 2, numpy 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # numpy 2's numpy.core
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
        monkeypatch.setattr(module, "_reconstruct", forbidden)
    batches = make_batches(6)
    assert_keras_shaped(cifar10.load_data(write_batches(tmp_path / "c", batches, "python")),
                        expected(batches))


def test_archive_truncated(tmp_path):
    path = tmp_path / "cifar-10-binary.tar.gz"
    blob = archive_bytes(make_batches(7), "binary")
    path.write_bytes(blob[:len(blob) // 2])
    with pytest.raises(DatasetError, match="corrupt or truncated"):
        cifar10.load_data(path)


def test_archive_bit_flip(tmp_path):
    path = tmp_path / "cifar-10-binary.tar.gz"
    blob = bytearray(archive_bytes(make_batches(7), "binary"))
    blob[len(blob) // 2] ^= 0x10
    path.write_bytes(bytes(blob))
    with pytest.raises(DatasetError, match=str(path)):
        cifar10.load_data(path)


@pytest.mark.parametrize("case", ["missing batch", "duplicate", "link", "not gzip"])
def test_archive_members_checked(tmp_path, case):
    batches = make_batches(8)
    path = tmp_path / "cifar-10-binary.tar.gz"
    if case == "missing batch":
        del batches["data_batch_4"]
        blob = archive_bytes(dict(batches, data_batch_4=batches["data_batch_5"]), "binary")
        buf = io.BytesIO()
        with tarfile.open(fileobj=io.BytesIO(blob)) as src, \
                tarfile.open(fileobj=buf, mode="w:gz") as dst:
            for m in src.getmembers():
                if not m.name.endswith("data_batch_4.bin"):
                    dst.addfile(m, src.extractfile(m))
        blob, match = buf.getvalue(), "missing data_batch_4.bin"
    elif case == "duplicate":
        blob = archive_bytes(batches, "binary", extra=[(
            "cifar-10-batches-bin/test_batch.bin", binary_batch(*batches["test_batch"]))])
        match = "duplicate"
    elif case == "link":
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            info = tarfile.TarInfo("cifar-10-batches-bin/data_batch_1.bin")
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        blob, match = buf.getvalue(), "link"
    else:
        blob, match = b"plain bytes, not an archive" * 10, "corrupt"
    path.write_bytes(blob)
    with pytest.raises(DatasetError, match=match):
        cifar10.load_data(path)


def test_partial_batch_folder_names_missing(tmp_path):
    folder = write_batches(tmp_path / "cifar", make_batches(9), "binary")
    (folder / "data_batch_2.bin").unlink()
    with pytest.raises(DatasetNotFoundError, match="missing data_batch_2.bin"):
        cifar10.load_data(folder)


def test_sha256sums_checked(tmp_path):
    batches = make_batches(10)
    folder = tmp_path / "cifar"
    folder.mkdir()
    (folder / "cifar-10-binary.tar.gz").write_bytes(archive_bytes(batches, "binary"))
    (folder / "SHA256SUMS").write_text(f"{'0' * 64}  cifar-10-binary.tar.gz\n")
    with pytest.raises(DatasetError, match="SHA-256"):
        cifar10.load_data(folder)
    digest = hashlib.sha256((folder / "cifar-10-binary.tar.gz").read_bytes()).hexdigest()
    (folder / "SHA256SUMS").write_text(f"{digest}  cifar-10-binary.tar.gz\n")
    assert_keras_shaped(cifar10.load_data(folder), expected(batches))


# --- lookup order -------------------------------------------------------------------------


def test_lookup_order(tmp_path, isolated, monkeypatch):  # noqa: F811
    data = {name: make_batches(seed) for seed, name in
            enumerate(["path", "env", "keras3", "keras2", "cache"], start=20)}
    given = write_batches(tmp_path / "given", data["path"], "binary")
    env = tmp_path / "env.tar.gz"
    env.write_bytes(archive_bytes(data["env"], "python"))
    keras = isolated / ".keras" / "datasets"
    keras3 = write_batches(keras / "cifar-10-batches-py-target" / "cifar-10-batches-py",
                           data["keras3"], "python")
    write_batches(keras / "cifar-10-batches-py", data["keras2"], "python")
    cache = tmp_path / "cache"
    (cache / "cifar-10").mkdir(parents=True)
    (cache / "cifar-10" / "cifar-10-binary.tar.gz").write_bytes(
        archive_bytes(data["cache"], "binary"))
    monkeypatch.setenv("CCONV_CIFAR10_DIR", str(env))
    monkeypatch.setenv("CCONV_CACHE_DIR", str(cache))
    monkeypatch.setenv("CCONV_DATA_DIR", str(given))  # MNIST's variable: never read here

    assert_keras_shaped(cifar10.load_data(given), expected(data["path"]))
    assert_keras_shaped(cifar10.load_data(), expected(data["env"]))
    monkeypatch.delenv("CCONV_CIFAR10_DIR")
    assert_keras_shaped(cifar10.load_data(), expected(data["keras3"]))
    for f in keras3.iterdir():
        f.unlink()
    assert_keras_shaped(cifar10.load_data(), expected(data["keras2"]))
    for f in (keras / "cifar-10-batches-py").iterdir():
        f.unlink()
    assert_keras_shaped(cifar10.load_data(), expected(data["cache"]))


def test_given_location_is_the_only_source(tmp_path, isolated):  # noqa: F811
    write_batches(isolated / ".keras" / "datasets" / "cifar-10-batches-py", make_batches(1),
                  "python")
    with pytest.raises(DatasetNotFoundError, match="no such file or folder"):
        cifar10.load_data(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="found none"):
        cifar10.load_data(tmp_path / "empty")


def test_offline_error_lists_every_option(tmp_path, isolated, monkeypatch):  # noqa: F811
    monkeypatch.setenv("CCONV_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DatasetNotFoundError) as info:
        cifar10.load_data()
    message = str(info.value)
    for part in ("path=", "CCONV_CIFAR10_DIR", "cifar-10-binary.tar.gz",
                 "cifar-10-python.tar.gz", "data_batch_1.bin", "test_batch",
                 "cifar-10-batches-py", str(isolated / ".keras" / "datasets"),
                 str(tmp_path / "cache" / "cifar-10"), "skipped because $CCONV_OFFLINE",
                 "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"):
        assert part in message, part


# --- download, from a local HTTP server ---------------------------------------------------


@pytest.fixture
def server(tmp_path):
    """A local HTTP server of the folder it yields, and its base URL."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve_formats(monkeypatch, root, base, blobs, sha_of=None):
    """Point both formats at the server; blobs[fmt] is what it serves (None: a 404);
    each pinned sum is that of sha_of[fmt], else of the served bytes."""
    formats = []
    for fmt in cifar10._FORMATS:
        blob = blobs.get(fmt.name)
        if blob is not None:
            (root / fmt.archive).write_bytes(blob)
        pinned = (sha_of or {}).get(fmt.name, blob) or b""
        formats.append(fmt._replace(url=base + fmt.archive,
                                    sha256=hashlib.sha256(pinned).hexdigest()))
    monkeypatch.setattr(cifar10, "_FORMATS", tuple(formats))
    monkeypatch.setattr(_common, "urlopen", REAL_URLOPEN)
    monkeypatch.delenv("CCONV_OFFLINE")


def test_download_then_cache(tmp_path, monkeypatch, server):
    root, base = server
    batches = make_batches(30)
    cache = tmp_path / "cache"
    monkeypatch.setenv("CCONV_CACHE_DIR", str(cache))
    serve_formats(monkeypatch, root, base, {"binary": archive_bytes(batches, "binary")})
    assert_keras_shaped(cifar10.load_data(), expected(batches))
    assert os.listdir(cache / "cifar-10") == ["cifar-10-binary.tar.gz"]
    (root / "cifar-10-binary.tar.gz").unlink()  # the second call must come from the cache
    assert_keras_shaped(cifar10.load_data(), expected(batches))


def test_checksum_mismatch_rejected_then_python_version(tmp_path, monkeypatch, server):
    root, base = server
    batches, other = make_batches(31), make_batches(32)
    cache = tmp_path / "cache"
    monkeypatch.setenv("CCONV_CACHE_DIR", str(cache))
    serve_formats(monkeypatch, root, base,
                  {"binary": archive_bytes(other, "binary"),
                   "python": archive_bytes(batches, "python")},
                  sha_of={"binary": b"the archive the sum was published for"})
    assert_keras_shaped(cifar10.load_data(), expected(batches))
    assert os.listdir(cache / "cifar-10") == ["cifar-10-python.tar.gz"]


@pytest.mark.parametrize("failure", ["checksum", "truncated", "missing"])
def test_failed_download_leaves_nothing(tmp_path, monkeypatch, server, failure):
    root, base = server
    blob = archive_bytes(make_batches(33), "binary")
    cache = tmp_path / "cache"
    monkeypatch.setenv("CCONV_CACHE_DIR", str(cache))
    if failure == "checksum":
        blobs, sha_of = {"binary": blob}, {"binary": blob + b"!"}
    elif failure == "truncated":  # the server sends part of the file the sum names
        blobs, sha_of = {"binary": blob[:len(blob) // 2]}, {"binary": blob}
    else:
        blobs, sha_of = {}, {"binary": blob}
    serve_formats(monkeypatch, root, base, blobs, sha_of)
    with pytest.raises(DatasetNotFoundError) as info:
        cifar10.load_data()
    assert "download into the cache: failed" in str(info.value)
    assert base + "cifar-10-binary.tar.gz" in str(info.value)
    assert os.listdir(cache / "cifar-10") == []


def test_download_size_cap(tmp_path, monkeypatch, server):
    root, base = server
    blob = archive_bytes(make_batches(34), "binary")
    monkeypatch.setenv("CCONV_CACHE_DIR", str(tmp_path / "cache"))
    serve_formats(monkeypatch, root, base, {"binary": blob})
    monkeypatch.setattr(cifar10, "_MAX_ARCHIVE", len(blob) - 1)
    with pytest.raises(DatasetNotFoundError, match="expected at most"):
        cifar10.load_data()


# --- real CIFAR-10 --------------------------------------------------------------------------


def test_real_cifar10(monkeypatch):
    location = os.environ.get("CCONV_CIFAR10_DIR")
    if not location:
        pytest.skip("real CIFAR-10 not available: set CCONV_CIFAR10_DIR to its folder or "
                    "archive")
    monkeypatch.setattr(cifar10, "_BATCH", 10000)
    (x_train, y_train), (x_test, y_test) = cifar10.load_data(location)
    assert x_train.shape == (50000, 32, 32, 3) and y_train.shape == (50000, 1)
    assert x_test.shape == (10000, 32, 32, 3) and y_test.shape == (10000, 1)
    assert all(a.dtype == np.uint8 for a in (x_train, y_train, x_test, y_test))
    # the classes are balanced: 5,000 and 1,000 of each
    assert np.bincount(y_train[:, 0]).tolist() == [5000] * 10
    assert np.bincount(y_test[:, 0]).tolist() == [1000] * 10
    assert y_train[:10, 0].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert y_test[:10, 0].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
