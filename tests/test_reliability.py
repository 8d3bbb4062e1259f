"""Corrupt weight files, interrupted writes and training, memory that stays bounded, and
concurrent predicts."""
import hashlib
import io
import os
import pickle
import sys
import threading
import tracemalloc
import zipfile

import numpy as np
import pytest

import cconv
from cconv.datasets import _common, mnist
from cconv.layers import Conv2D, Dense, Dropout, Flatten, Input


@pytest.fixture
def one_thread():
    """For tests about Python-level state: one OpenMP thread keeps them quick on a
    loaded machine (results do not depend on the thread count)."""
    before = cconv.get_num_threads()
    cconv.set_num_threads(1)
    yield
    cconv.set_num_threads(before)


def chapter10(dtype="float32", seed=0):
    cconv.utils.set_random_seed(seed)
    model = cconv.Sequential([Input((28, 28, 1)), Conv2D(16, 3, activation="tanh"),
                              Dropout(0.5), Flatten(), Dense(10, activation="softmax")],
                             dtype=dtype)
    model.compile(optimizer=cconv.optimizers.SGD(0.05),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def tiny(seed=0):
    cconv.utils.set_random_seed(seed)
    model = cconv.Sequential([Input((8, 8, 1)), Conv2D(2, 3, activation="tanh"), Dropout(0.25),
                              Flatten(), Dense(3, activation="softmax")])
    model.compile(optimizer=cconv.optimizers.SGD(0.1),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def tiny_data(n=24, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 8, 8, 1)), rng.integers(0, 3, n)


# --- corrupt weight files ---------------------------------------------------------------


def saved_arrays(model):
    return {f"{i:03d}.{layer.name}.{k}": layer.params[k]
            for i, (layer, k) in enumerate(model._weight_keys())}


def write_npz(path, arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def weight_file_cases(model):
    good = saved_arrays(model)
    first, last = sorted(good)[0], sorted(good)[-1]
    return {
        "missing array": {k: v for k, v in good.items() if k != last},
        "extra array": dict(good, **{"004.dense_9.kernel": np.zeros(3, np.float32)}),
        "reshaped array": dict(good, **{first: good[first].reshape(-1)}),
        "transposed array": dict(good, **{first: good[first].T}),
        "integer dtype": dict(good, **{last: good[last].astype(np.int32)}),
        "complex dtype": dict(good, **{last: good[last].astype(np.complex64)}),
        "string dtype": dict(good, **{last: good[last].astype(str)}),
        "NaN weights": dict(good, **{last: np.full_like(good[last], np.nan)}),
    }


@pytest.mark.parametrize("case", ["missing array", "extra array", "reshaped array",
                                  "transposed array", "integer dtype", "complex dtype",
                                  "string dtype", "NaN weights"])
def test_bad_weight_files_name_the_file_and_change_nothing(tmp_path, case):
    source = tiny(seed=1)
    path = tmp_path / f"{case.replace(' ', '-')}.npz"
    write_npz(path, weight_file_cases(source)[case])
    model = tiny(seed=2)
    before = model.get_weights()
    with pytest.raises((ValueError, TypeError)) as info:
        model.load_weights(path)
    assert str(path) in str(info.value)
    for a, b in zip(before, model.get_weights()):
        assert np.array_equal(a, b)


def test_truncated_and_bit_flipped_weight_files(tmp_path):
    model = tiny()
    path = tmp_path / "w.npz"
    model.save_weights(path)
    blob = path.read_bytes()
    with zipfile.ZipFile(path) as zf:
        info = zf.infolist()[-1]
    cases = {"truncated": blob[:len(blob) // 2], "empty": b"", "not a zip": b"hello" * 50,
             "flipped data bit": bytearray(blob)}
    cases["flipped data bit"][info.header_offset + 120] ^= 0x04  # inside the array bytes
    central = blob.find(b"PK\x01\x02")  # the first central-directory entry
    cases["encrypted flag"] = bytearray(blob)
    cases["encrypted flag"][central + 8] |= 0x01
    cases["unknown compression"] = bytearray(blob)
    cases["unknown compression"][central + 10] = 99
    for name, data in cases.items():
        path.write_bytes(bytes(data))
        with pytest.raises(ValueError, match="w.npz"):
            model.load_weights(path)


class Payload:
    """Unpickling this would leave a file behind: proof that pickle ran."""

    marker = None

    def __reduce__(self):
        return (open, (self.marker, "w"))


def pickled_object_npz(path, marker, keys):
    Payload.marker = str(marker)
    with open(path, "wb") as f:
        np.savez(f, **{k: np.array([Payload(), 1], dtype=object) for k in keys})


def test_object_array_in_weights_is_never_unpickled(tmp_path):
    model = tiny()
    marker = tmp_path / "pickle-ran"
    path = tmp_path / "w.npz"
    pickled_object_npz(path, marker, saved_arrays(model))
    with pytest.raises(ValueError, match="w.npz"):
        model.load_weights(path)
    assert not marker.exists()


def test_object_array_in_mnist_npz_is_never_unpickled(tmp_path):
    marker = tmp_path / "pickle-ran"
    path = tmp_path / "mnist.npz"
    pickled_object_npz(path, marker, ("x_train", "y_train", "x_test", "y_test"))
    with pytest.raises(mnist.DatasetError, match="mnist.npz"):
        mnist.load_data(path)
    assert not marker.exists()
    path.write_bytes(pickle.dumps(Payload()))  # a bare pickle named .npz
    with pytest.raises(mnist.DatasetError, match="mnist.npz"):
        mnist.load_data(path)
    with pytest.raises(ValueError, match="mnist.npz"):
        tiny().load_weights(path)
    assert not marker.exists()


def test_npy_header_declaring_a_huge_array(tmp_path):
    """A corrupt header that claims terabytes fails with a ValueError, not a MemoryError."""
    model = tiny()
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False,
                                               "shape": (2**40,)})
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as zf:
        for key in saved_arrays(model):
            zf.writestr(key + ".npy", buf.getvalue() + b"\0" * 64)
    with pytest.raises(ValueError, match="huge.npz"):
        model.load_weights(path)
    path = tmp_path / "mnist.npz"
    with zipfile.ZipFile(path, "w") as zf:
        for key in ("x_train", "y_train", "x_test", "y_test"):
            zf.writestr(key + ".npy", buf.getvalue().replace(b"<f4", b"|u1") + b"\0" * 64)
    with pytest.raises(mnist.DatasetError, match="mnist.npz"):
        mnist.load_data(path)


# --- nothing lost -----------------------------------------------------------------------


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_save_weights_interrupted_mid_write(tmp_path, monkeypatch, error):
    model = tiny(seed=1)
    path = tmp_path / "w.npz"
    model.save_weights(path)
    before = path.read_bytes()
    real_savez = np.savez

    def savez_then_fail(f, **arrays):
        real_savez(f, **arrays)  # the whole new file is written...
        f.flush()
        assert os.fstat(f.fileno()).st_size > 0
        raise error  # ...and then the save fails before it is complete

    other = tiny(seed=2)  # other weights, so a finished save would change the file
    monkeypatch.setattr(np, "savez", savez_then_fail)
    with pytest.raises(type(error)):
        other.save_weights(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.npz"]  # no temporary left
    monkeypatch.undo()
    model.load_weights(path)  # the old file is still a valid weights file


@pytest.mark.parametrize("error", [ConnectionResetError("connection lost"),
                                   KeyboardInterrupt()])
def test_cache_write_interrupted_mid_download(tmp_path, monkeypatch, error):
    cache = tmp_path / "cache"
    cache.mkdir()
    dest = cache / "mnist.npz"
    dest.write_bytes(b"the previous, complete file")
    blob = b"z" * 5000

    class Response(io.BytesIO):
        def read(self, size=-1):
            if self.tell() >= 2048:
                raise error
            return super().read(size)

    monkeypatch.setattr(_common, "CHUNK", 1024)
    monkeypatch.setattr(_common, "urlopen", lambda url: Response(blob))
    with pytest.raises(type(error)):
        _common.download("https://example.invalid/mnist.npz", str(dest),
                        hashlib.sha256(blob).hexdigest())
    assert dest.read_bytes() == b"the previous, complete file"
    assert os.listdir(cache) == ["mnist.npz"]


class InterruptAt(cconv.callbacks.Callback):
    """Raises KeyboardInterrupt (as Ctrl-C would) at one batch of one epoch."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.at, self.epoch = (epoch, batch), None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise KeyboardInterrupt


def test_keyboard_interrupt_during_fit_keeps_history_and_usable_weights(one_thread):
    x, y = tiny_data()
    model = tiny()
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, batch_size=4, epochs=5, verbose=0, callbacks=[InterruptAt(2, 3)])
    history = model.history.history
    assert model.history.epoch == [0, 1]
    assert len(history["loss"]) == len(history["accuracy"]) == 2
    assert all(np.isfinite(w).all() for w in model.get_weights())
    # Usable: the same weights predict, evaluate and train on.
    probs = model.predict(x)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
    assert np.isfinite(model.evaluate(x, y)).all()
    more = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert len(more.history["loss"]) == 1


# --- memory -----------------------------------------------------------------------------


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_rss_flat_over_500_fits(one_thread):
    """Each fit allocates its one-hot labels, a float copy of x per batch and gradients
    (about 60 KiB in all here); keeping any one of them alive would grow RSS by 500 times
    that. After a warm-up (the allocator's pools, numpy's caches), 500 more fits may grow
    RSS by at most 2 MiB: less than one 4 KiB page per fit."""
    x, y = tiny_data(n=64)
    model = tiny()
    for _ in range(50):
        model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    before = rss_bytes()
    for _ in range(500):
        model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    growth = rss_bytes() - before
    assert growth <= 2 << 20, f"RSS grew by {growth / 2**20:.1f} MiB over 500 fits"


def test_evaluate_memory_is_bounded_by_the_chunk_not_the_data(one_thread):
    """evaluate on 10,000 28x28x1 uint8 images (7.8 MB), at the default batch size: cconv
    picks its own chunk (cconv.model.INFERENCE_CHUNK_BYTES). Beyond the one-hot labels
    (N x 10 float32, 0.4 MB) it may hold two float copies of one chunk's images (775
    images, 4.9 MB) and 4 MiB for the rest: the fused conv -> dense step keeps no
    activation of the chunk. That bound, 9.5 MB, is below a float32 copy of all of x
    (31 MB), let alone the whole set's conv output (433 MB). Measured: 2.8 MiB."""
    n = 10_000
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)
    y = rng.integers(0, 10, n)
    model = chapter10()
    chunk = model._inference_chunk()
    model.evaluate(x[:chunk], y[:chunk])  # buffers of the first chunk
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        loss, acc = model.evaluate(x, y, batch_size=32)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    bound = n * 10 * 4 + 2 * chunk * 28 * 28 * 4 + (4 << 20)
    assert np.isfinite(loss) and 0 <= acc <= 1
    assert peak <= bound, f"evaluate peaked at {peak / 2**20:.1f} MiB, bound {bound / 2**20:.1f}"


# --- threads ----------------------------------------------------------------------------


def test_predict_from_four_threads_matches_sequential():
    model = chapter10()
    rng = np.random.default_rng(3)
    inputs = [rng.random((n, 28, 28, 1)).astype(np.float32) for n in (37, 64, 100, 5)]
    want = [model.predict(x, batch_size=32) for x in inputs]
    got = [[None] * 4 for _ in range(5)]
    barrier = threading.Barrier(4)
    errors = []

    def work(i):
        try:
            barrier.wait()
            for r in range(5):  # repeat, so the threads overlap in every phase
                got[r][i] = model.predict(inputs[i], batch_size=32)
        except BaseException as exc:  # reported below; a thread cannot fail the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for r in range(5):
        for i in range(4):
            assert np.array_equal(got[r][i], want[i])


# --- OpenMP -----------------------------------------------------------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads ELF symbol names")
def test_kernels_call_the_openmp_runtime():
    """openmp_enabled() reads a macro; this checks the compiled kernels themselves: each
    module with a prange must call the OpenMP runtime (GOMP_parallel for gcc,
    __kmpc_fork_call for clang) when OpenMP is on, and must not when it is off."""
    from cconv._kernels import _config, _conv_1ch, _dense_narrow, _elementwise
    for module in (_conv_1ch, _dense_narrow, _elementwise):
        with open(module.__file__, "rb") as f:
            binary = f.read()
        calls_omp = b"GOMP_parallel" in binary or b"__kmpc_fork_call" in binary
        assert calls_omp == _config.openmp_enabled(), module.__file__


@pytest.mark.parametrize("n, error", [(0, ValueError), (-1, ValueError), (10**12, ValueError),
                                      (2**63, ValueError), (2.0, TypeError), (True, TypeError),
                                      ("2", TypeError)])
def test_thread_counts_the_runtime_cannot_make_are_refused(n, error):
    before = cconv.get_num_threads()
    with pytest.raises(error, match="set_num_threads"):
        cconv.set_num_threads(n)
    assert cconv.get_num_threads() == before



def test_build_has_openmp_when_the_compiler_does(tmp_path):
    import shutil
    import subprocess
    from cconv._kernels import _config
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler on PATH to tell whether OpenMP was possible")
    src = tmp_path / "omp.c"
    src.write_text("#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n")
    built = subprocess.run([cc, "-fopenmp", str(src), "-o", str(tmp_path / "omp")],
                           capture_output=True)
    if built.returncode != 0 or subprocess.run([str(tmp_path / "omp")]).returncode != 0:
        pytest.skip("this compiler cannot build and run OpenMP programs")
    assert _config.openmp_enabled(), "the compiler supports OpenMP but cconv was built without"


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes and umask")
def test_saves_never_change_the_umask_and_keep_an_existing_files_mode(tmp_path, monkeypatch):
    """A save must not set the process umask (another thread creating a file meanwhile
    would get 0666), a new file gets the mode open() gives it (0666 less the umask), and
    an existing file keeps its mode: a 0600 checkpoint does not become world-readable."""
    model = tiny()
    old_umask = os.umask(0o027)
    try:
        calls = []
        real_umask = os.umask
        monkeypatch.setattr(os, "umask", lambda mask: calls.append(mask) or real_umask(mask))
        fresh = tmp_path / "fresh.npz"
        model.save_weights(fresh)
        assert calls == []
        assert fresh.stat().st_mode & 0o777 == 0o666 & ~0o027
        private = tmp_path / "private.npz"
        private.write_bytes(b"old")
        private.chmod(0o600)
        model.save_weights(private)
        assert private.stat().st_mode & 0o777 == 0o600
        assert private.read_bytes() != b"old"
    finally:
        monkeypatch.undo()
        os.umask(old_umask)
