"""cconv.datasets.fashion_mnist: Keras's return values (checked against Keras's own
load_data reading the same files), lookup order, MNIST's digits refused, the offline
message, and the download from a local HTTP server. The IDX format itself is tested with
MNIST in test_datasets.py. The real-data test runs only with CCONV_FASHION_MNIST_DIR."""
import gzip
import hashlib
import os

import numpy as np
import pytest

from cconv.datasets import _common, fashion_mnist, mnist
from cconv.datasets._common import DatasetError, DatasetNotFoundError
from test_datasets import (GZ_NAMES, RAW_NAMES, assert_same, idx_bytes,  # noqa: F401
                           isolated, make_data, write_idx_folder)
from test_datasets_cifar10 import REAL_URLOPEN, server  # noqa: F401


def test_package_exports():
    import cconv.datasets
    assert cconv.datasets.__all__ == ["cifar10", "fashion_mnist", "mnist"]
    assert cconv.datasets.fashion_mnist is fashion_mnist
    assert fashion_mnist.DatasetError is mnist.DatasetError


@pytest.mark.parametrize("names", [GZ_NAMES, RAW_NAMES], ids=["gz", "raw"])
def test_load_data_from_folder(tmp_path, names):
    data = make_data(1)
    folder = write_idx_folder(tmp_path / "fashion", data, names)
    assert_same(fashion_mnist.load_data(folder), data)
    assert_same(fashion_mnist.load_data(str(folder)), data)


def test_same_arrays_as_keras(tmp_path, isolated, monkeypatch):  # noqa: F811
    """Keras's own load_data, reading the same four files from its cache folder."""
    pytest.importorskip("keras", reason='keras is not installed (pip install ".[interop]")')
    from keras.src.backend import config

    data = make_data(2, n_train=7, n_test=4)
    keras_home = tmp_path / "keras"
    write_idx_folder(keras_home / "datasets" / "fashion-mnist", data)
    monkeypatch.setattr(config, "_KERAS_DIR", str(keras_home))
    import keras
    theirs = keras.datasets.fashion_mnist.load_data()
    ours = fashion_mnist.load_data(keras_home / "datasets" / "fashion-mnist")
    for a, b in zip(ours[0] + ours[1], theirs[0] + theirs[1]):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    # the files' train and test are Keras's train and test
    assert_same(ours, data)


def test_mnist_digits_refused(tmp_path):
    data = make_data(3, n_train=25)
    data["y_train"][:20] = fashion_mnist._MNIST_FIRST_LABELS
    folder = write_idx_folder(tmp_path / "mnist", data)
    with pytest.raises(DatasetError, match="MNIST's"):
        fashion_mnist.load_data(folder)
    data["y_train"][19] = 0  # one label off: not MNIST
    assert_same(fashion_mnist.load_data(write_idx_folder(tmp_path / "f", data)), data)


def test_mnist_digits_refused_real(mnist_dir):
    """MNIST's first labels as this module knows them are the real MNIST's."""
    with pytest.raises(DatasetError, match="MNIST's"):
        fashion_mnist.load_data(mnist_dir)


def test_partial_folder_and_file(tmp_path):
    folder = write_idx_folder(tmp_path / "fashion", make_data(4))
    (folder / GZ_NAMES[2]).unlink()
    with pytest.raises(DatasetNotFoundError, match=GZ_NAMES[2]):
        fashion_mnist.load_data(folder)
    with pytest.raises(DatasetNotFoundError, match="found a file"):
        fashion_mnist.load_data(folder / GZ_NAMES[0])
    with pytest.raises(DatasetNotFoundError, match="no such folder"):
        fashion_mnist.load_data(tmp_path / "nowhere")


def test_bad_file_named(tmp_path):
    data = make_data(5)
    folder = write_idx_folder(tmp_path / "fashion", data)
    (folder / GZ_NAMES[3]).write_bytes(gzip.compress(idx_bytes(np.array([1, 2, 11]))))
    with pytest.raises(DatasetError, match=GZ_NAMES[3]):
        fashion_mnist.load_data(folder)


def test_lookup_order(tmp_path, isolated, monkeypatch):  # noqa: F811
    sources = {name: make_data(seed) for seed, name in
               enumerate(["path", "env", "keras", "cache", "mnist"], start=20)}
    given = write_idx_folder(tmp_path / "given", sources["path"])
    env = write_idx_folder(tmp_path / "env", sources["env"])
    keras = write_idx_folder(isolated / ".keras" / "datasets" / "fashion-mnist",
                             sources["keras"])
    write_idx_folder(tmp_path / "cache" / "fashion-mnist", sources["cache"])
    # MNIST's files, in the places MNIST looks: never read for Fashion-MNIST
    mnist_dir = write_idx_folder(tmp_path / "mnist", sources["mnist"])
    write_idx_folder(tmp_path / "cache", sources["mnist"])
    monkeypatch.setenv("CCONV_DATA_DIR", str(mnist_dir))
    monkeypatch.setenv("CCONV_FASHION_MNIST_DIR", str(env))
    monkeypatch.setenv("CCONV_CACHE_DIR", str(tmp_path / "cache"))

    assert_same(fashion_mnist.load_data(given), sources["path"])
    assert_same(fashion_mnist.load_data(), sources["env"])
    monkeypatch.delenv("CCONV_FASHION_MNIST_DIR")
    assert_same(fashion_mnist.load_data(), sources["keras"])
    for f in keras.iterdir():
        f.unlink()
    assert_same(fashion_mnist.load_data(), sources["cache"])


def test_offline_error_lists_every_option(tmp_path, isolated, monkeypatch):  # noqa: F811
    monkeypatch.setenv("CCONV_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DatasetNotFoundError) as info:
        fashion_mnist.load_data()
    message = str(info.value)
    for part in ("path=", "CCONV_FASHION_MNIST_DIR", *GZ_NAMES,
                 str(isolated / ".keras" / "datasets" / "fashion-mnist"),
                 str(tmp_path / "cache" / "fashion-mnist"), "skipped because $CCONV_OFFLINE",
                 fashion_mnist._KERAS_URL, fashion_mnist._ZALANDO_URL):
        assert part in message, part


# --- download, from a local HTTP server -----------------------------------------------------


def serve(monkeypatch, root, base, data, bad=()):
    """Serve data's four files under two mirrors, keras/ and zalando/, pinning their sums;
    the mirrors in bad serve other bytes (a wrong file for the pinned sum)."""
    sums = {}
    for key, name in zip(("x_train", "y_train", "x_test", "y_test"), GZ_NAMES):
        blob = gzip.compress(idx_bytes(data[key]))
        sums[name] = hashlib.sha256(blob).hexdigest()
        for mirror in ("keras", "zalando"):
            (root / mirror).mkdir(exist_ok=True)
            (root / mirror / name).write_bytes(blob + b"x" if mirror in bad else blob)
    monkeypatch.setattr(fashion_mnist, "_SHA256", sums)
    monkeypatch.setattr(fashion_mnist, "_KERAS_URL", base + "keras/")
    monkeypatch.setattr(fashion_mnist, "_ZALANDO_URL", base + "zalando/")
    monkeypatch.setattr(_common, "urlopen", REAL_URLOPEN)
    monkeypatch.delenv("CCONV_OFFLINE")


def test_download_then_cache(tmp_path, monkeypatch, server):  # noqa: F811
    root, base = server
    data = make_data(40)
    cache = tmp_path / "cache"
    monkeypatch.setenv("CCONV_CACHE_DIR", str(cache))
    serve(monkeypatch, root, base, data)
    assert_same(fashion_mnist.load_data(), data)
    assert sorted(os.listdir(cache / "fashion-mnist")) == sorted(GZ_NAMES)
    for mirror in ("keras", "zalando"):  # the second call must come from the cache
        for f in (root / mirror).iterdir():
            f.unlink()
    assert_same(fashion_mnist.load_data(), data)


def test_checksum_mismatch_falls_back_to_zalando(tmp_path, monkeypatch, server):  # noqa: F811
    root, base = server
    data = make_data(41)
    cache = tmp_path / "cache"
    monkeypatch.setenv("CCONV_CACHE_DIR", str(cache))
    serve(monkeypatch, root, base, data, bad=("keras",))
    assert_same(fashion_mnist.load_data(), data)
    assert sorted(os.listdir(cache / "fashion-mnist")) == sorted(GZ_NAMES)


def test_both_mirrors_wrong_leaves_nothing(tmp_path, monkeypatch, server):  # noqa: F811
    root, base = server
    cache = tmp_path / "cache"
    monkeypatch.setenv("CCONV_CACHE_DIR", str(cache))
    serve(monkeypatch, root, base, make_data(42), bad=("keras", "zalando"))
    with pytest.raises(DatasetNotFoundError) as info:
        fashion_mnist.load_data()
    message = str(info.value)
    assert "download into the cache: failed" in message and "expected SHA-256" in message
    assert base + "keras/" in message and base + "zalando/" in message
    assert os.listdir(cache / "fashion-mnist") == []


# --- real Fashion-MNIST -----------------------------------------------------------------------


def test_real_fashion_mnist():
    location = os.environ.get("CCONV_FASHION_MNIST_DIR")
    if not location:
        pytest.skip("real Fashion-MNIST not available: set CCONV_FASHION_MNIST_DIR to a "
                    "folder of its IDX files")
    (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data(location)
    assert x_train.shape == (60000, 28, 28) and y_train.shape == (60000,)
    assert x_test.shape == (10000, 28, 28) and y_test.shape == (10000,)
    assert all(a.dtype == np.uint8 for a in (x_train, y_train, x_test, y_test))
    # balanced: 6,000 and 1,000 of each class
    assert np.bincount(y_train).tolist() == [6000] * 10
    assert np.bincount(y_test).tolist() == [1000] * 10
