"""Whole models in .keras files (Keras 3's zip: config.json, metadata.json,
model.weights.h5): round trips for every layer and both dtypes, resumed training bit for
bit with SGD+momentum and Adam, hostile files, and saves that never lose a file."""
import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

import cconv
from conftest import same_cconv_env
from zoo import MODELS, OPTIMIZERS, data, make, need, same_bits

h5py = need("h5py", "h5")


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def members(path):
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def rewrite(path, changes):
    """Rewrite the .keras zip at path with some members replaced (bytes) or dropped (None)."""
    content = members(path)
    content.update(changes)
    with zipfile.ZipFile(path, "w") as z:
        for name, blob in content.items():
            if blob is not None:
                z.writestr(name, blob)


def edit_h5(blob, edit):
    buf = io.BytesIO(blob)
    with h5py.File(buf, "a") as f:
        edit(f)
    return buf.getvalue()


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", MODELS)
def test_round_trip_predicts_and_resumes_bit_for_bit(tmp_path, name, dtype, optimizer):
    model = make(name, dtype, optimizer)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = cconv.models.load_model(path)
    assert loaded.get_config() == model.get_config()
    assert loaded.dtype == model.dtype and loaded.compiled
    x, y = data(name, seed=9)
    assert np.array_equal(loaded.predict(x), model.predict(x))
    assert loaded.evaluate(x, y, verbose=0) == model.evaluate(x, y, verbose=0)
    assert loaded.optimizer.iterations == model.optimizer.iterations
    for m in (model, loaded):
        m.fit(x, y, batch_size=8, epochs=3, verbose=0, seed=21)
    assert same_bits(loaded.get_weights(), model.get_weights())


def test_file_layout_is_keras(tmp_path):
    model = make("keras_layers", optimizer="adam")
    model.save(tmp_path / "m.keras")
    content = members(tmp_path / "m.keras")
    assert set(content) == {"config.json", "metadata.json", "model.weights.h5"}
    config = json.loads(content["config.json"])
    assert config["class_name"] == "Sequential" and config["module"] == "keras"
    assert config["compile_config"]["optimizer"]["class_name"] == "Adam"
    assert [l["class_name"] for l in config["config"]["layers"]] == [
        "InputLayer", "Conv2D", "MaxPooling2D", "Conv2D", "Dropout", "Flatten", "Dense",
        "Activation", "Dense"]
    with h5py.File(io.BytesIO(content["model.weights.h5"])) as f:
        kernel = f["layers/conv2d/vars/0"][()]
        assert np.array_equal(kernel, model.layers[0].params["kernel"])
        n_weights = len(model.get_weights())
        assert len(f["optimizer/vars"]) == 2 + 2 * n_weights  # iterations, lr, (m, v) each
        assert f["optimizer/vars/0"][()] == model.optimizer.iterations
        m, v = model.optimizer.slots(model.get_weights())[:2]  # the first weight's
        assert np.array_equal(f["optimizer/vars/2"][()], m)
        assert np.array_equal(f["optimizer/vars/3"][()], v)


def test_uncompiled_unbuilt_and_compile_false(tmp_path):
    plain = make("keras_layers", compiled=False, trained=False)
    plain.save(tmp_path / "plain.keras")
    loaded = cconv.models.load_model(tmp_path / "plain.keras")
    assert not loaded.compiled and same_bits(loaded.get_weights(), plain.get_weights())

    unbuilt = make("keras_layers", compiled=True, trained=False, with_input=False)
    unbuilt.save(tmp_path / "unbuilt.keras")
    loaded = cconv.models.load_model(tmp_path / "unbuilt.keras")
    assert not loaded.built and loaded.compiled
    assert loaded.get_config() == unbuilt.get_config()

    trained = make("keras_layers")
    trained.save(tmp_path / "t.keras")
    loaded = cconv.models.load_model(tmp_path / "t.keras", compile=False)
    assert not loaded.compiled and same_bits(loaded.get_weights(), trained.get_weights())


def test_save_refuses_other_names_and_overwrite_false(tmp_path):
    model = make("keras_layers", trained=False)
    with pytest.raises(ValueError, match=r"\.keras"):
        model.save(tmp_path / "m.h5")
    model.save(tmp_path / "m.keras")
    with pytest.raises(FileExistsError, match="overwrite"):
        model.save(tmp_path / "m.keras", overwrite=False)
    with pytest.raises(ValueError, match="zipped"):
        model.save(tmp_path / "n.keras", zipped=False)
    with pytest.raises(ValueError, match="include_optimizer=False"):
        model.save(tmp_path / "n.keras", include_optimizer=False)
    model.save(tmp_path / "n.keras", include_optimizer=True)  # Keras's default
    assert cconv.models.load_model(tmp_path / "n.keras").compiled


# ---- hostile files -------------------------------------------------------------------
def _saved(tmp_path):
    model = make("keras_layers", optimizer="sgd_momentum")
    path = tmp_path / "m.keras"
    model.save(path)
    return path, members(path)


def _weights_edit(edit):
    return lambda content: {"model.weights.h5": edit_h5(content["model.weights.h5"], edit)}


def _config_edit(edit):
    def change(content):
        config = json.loads(content["config.json"])
        edit(config)
        return {"config.json": json.dumps(config).encode()}
    return change


def _set_layer_option(config, key, value, index=1):
    config["config"]["layers"][index]["config"][key] = value


def _reshape(f):
    del f["layers/dense/vars/0"]
    f["layers/dense/vars/0"] = np.zeros((3, 3), np.float32)


def _initializer_named(registered):
    module, _, qualname = registered.partition(">")
    return _config_edit(lambda c: _set_layer_option(c, "kernel_initializer", {
        "module": module, "class_name": qualname, "config": {},
        "registered_name": registered}))


def _drop_slots(f):
    for key in [k for k in f["optimizer/vars"] if int(k) >= 2]:
        del f["optimizer/vars"][key]
    f["optimizer/vars/0"][()] = 2


HOSTILE = {
    # a file must not choose what is imported or called
    "initializer runs a module": (_initializer_named("cconv.__main__>main"),
                                  "cconv.__main__>main"),
    "initializer is os.system": (_initializer_named("cconv.model>os.system"),
                                 "cconv.model>os.system"),
    # every part of config.json of the wrong JSON type
    "deep json": (lambda c: {"config.json": b"[" * 100_000 + b"]" * 100_000},
                  "config.json is nested too deeply"),
    "layer config a list": (_config_edit(lambda c: c["config"]["layers"][1].update(
        config=[1, 2])), r"layers\[1\] is not a layer's config dict"),
    "layer config a string": (_config_edit(lambda c: c["config"]["layers"][1].update(
        config="conv")), r"layers\[1\] is not a layer's config dict"),
    "class name a list": (_config_edit(lambda c: c["config"]["layers"][1].update(
        class_name=["Dense"])), "class_name"),
    "dtype config a list": (_config_edit(lambda c: _set_layer_option(c, "dtype", {
        "class_name": "DTypePolicy", "config": ["float32"]})), "dtype"),
    "initializer config a list": (_config_edit(lambda c: _set_layer_option(
        c, "kernel_initializer", {"class_name": "GlorotUniform", "config": [1]})),
        "kernel_initializer"),
    "initializer name a list": (_config_edit(lambda c: _set_layer_option(
        c, "kernel_initializer", {"class_name": "GlorotUniform", "registered_name": [1]})),
        "kernel_initializer"),
    "build_config a list": (_config_edit(lambda c: (
        c["config"]["layers"].pop(0), c["config"].pop("build_input_shape"),
        c.update(build_config=[1]))), "build_config should be a dict"),
    "build shape of strings": (_config_edit(lambda c: (
        c["config"]["layers"].pop(0), c["config"].update(build_input_shape=[None, "a"]))),
        "build_input_shape"),
    "kernel_size a string": (_config_edit(lambda c: _set_layer_option(c, "kernel_size", "x")),
                             "kernel_size"),
    "metrics a number": (_config_edit(lambda c: c["compile_config"].update(metrics=5)),
                         "metrics"),
    "not a zip": (lambda c: None, "not a readable .keras zip"),
    "invalid json": (lambda c: {"config.json": b"{not json"}, "not valid JSON"),
    "no config": (lambda c: {"config.json": None}, "no config.json"),
    "no weights": (lambda c: {"model.weights.h5": None}, "no model.weights.h5"),
    "stray member": (lambda c: {"evil.pkl": b"x"}, "evil.pkl"),
    "functional model": (_config_edit(lambda c: c.update(class_name="Functional")),
                         "Functional"),
    "unknown layer": (_config_edit(lambda c: c["config"]["layers"][1].update(
        class_name="LayerNormalization")), "LayerNormalization"),
    "groups": (_config_edit(lambda c: _set_layer_option(c, "groups", 2)), "groups"),
    "activation": (_config_edit(lambda c: _set_layer_option(c, "activation", "hard_shrink")), "hard_shrink"),
    "mixed dtype": (_config_edit(lambda c: _set_layer_option(c, "dtype", "float16")), "float16"),
    "use_ema": (_config_edit(lambda c: c["compile_config"]["optimizer"]["config"].update(
        use_ema=True)), "use_ema"),
    "not an h5": (lambda c: {"model.weights.h5": b"\x89HDF\r\n" + b"\0" * 20000},
                  "not a readable HDF5"),
    "wrong shape": (_weights_edit(_reshape), r"layers/dense/vars/0 has shape \(3, 3\)"),
    "missing dataset": (_weights_edit(lambda f: f.__delitem__("layers/conv2d/vars/1")),
                        "missing layers/conv2d/vars/1"),
    "extra dataset": (_weights_edit(lambda f: f.create_dataset("layers/conv2d/vars/2",
                                                               data=np.zeros(3))),
                      "unexpected layers/conv2d/vars/2"),
    "missing optimizer slot": (_weights_edit(lambda f: f.__delitem__("optimizer/vars/4")),
                               "missing optimizer/vars/4"),
    # Adam would resume with zero moments but step-N bias correction
    "iterations without state": (_weights_edit(_drop_slots), "iterations is 2.* no state"),
    "negative iterations": (_weights_edit(lambda f: f["optimizer/vars/0"].__setitem__(
        (), -3)), "iterations is -3"),
    "nan": (_weights_edit(lambda f: f["layers/conv2d/vars/1"].__setitem__(0, np.nan)),
            "NaN"),
    "string dataset": (_weights_edit(lambda f: (f.__delitem__("layers/conv2d/vars/1"),
                                                f.create_dataset("layers/conv2d/vars/1",
                                                                 data=["a", "b", "c", "d"]))),
                       "dtype"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_file_is_refused_naming_it(tmp_path, case):
    path, content = _saved(tmp_path)
    change, message = HOSTILE[case]
    changes = change(content)
    if changes is None:
        path.write_bytes(b"PK\x03\x04 truncated nonsense")
    else:
        rewrite(path, changes)
    before = digest(path)
    with pytest.raises(ValueError, match=message) as info:
        cconv.models.load_model(path)
    assert str(path) in str(info.value)
    assert digest(path) == before and os.listdir(tmp_path) == ["m.keras"]


def _external(secret):
    secret.write_bytes(np.arange(4, dtype=np.float32).tobytes())

    def edit(f):
        del f["layers/conv2d/vars/1"]
        f.create_dataset("layers/conv2d/vars/1", shape=(4,), dtype=np.float32,
                         external=[(str(secret), 0, 16)])
    return edit


def _virtual(secret):
    with h5py.File(secret, "w") as g:
        g["x"] = np.arange(4, dtype=np.float32)

    def edit(f):
        del f["layers/conv2d/vars/1"]
        layout = h5py.VirtualLayout(shape=(4,), dtype=np.float32)
        layout[:] = h5py.VirtualSource(str(secret), "x", shape=(4,))
        f.create_virtual_dataset("layers/conv2d/vars/1", layout)
    return edit


@pytest.mark.parametrize("kind, edit", [("external", _external), ("virtual", _virtual)])
def test_weights_never_read_other_files(tmp_path, kind, edit):
    """A dataset whose data live in another file (external raw storage, a virtual
    dataset) would read any path the file names on this machine into the weights."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    path, content = _saved(tmp_path)
    rewrite(path, {"model.weights.h5": edit_h5(content["model.weights.h5"],
                                               edit(secrets / "secret"))})
    with pytest.raises(ValueError, match=f"layers/conv2d/vars/1 .*{kind}") as info:
        cconv.models.load_model(path)
    assert str(path) in str(info.value)


def test_config_bomb_is_refused_before_any_weight_is_made(tmp_path):
    """A tiny config can ask for huge layers: the weights member must hold them all
    before any memory is spent on them."""
    path = tmp_path / "m.keras"
    cconv.Sequential([cconv.Input((1000,)), cconv.layers.Dense(1)]).save(path)
    config = json.loads(members(path)["config.json"])
    config["config"]["layers"][1]["config"]["units"] = 20_000
    rewrite(path, {"config.json": json.dumps(config).encode()})
    need = (1000 * 20_000 + 20_000) * 4  # kernel and bias, float32
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=f"fewer than the {need:,} the config") as info:
            cconv.models.load_model(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(path) in str(info.value)
    assert peak < need / 10


def test_load_draws_nothing_from_the_global_seed(tmp_path):
    path, _ = _saved(tmp_path)

    def fresh():
        return cconv.Sequential([cconv.Input((3,)), cconv.layers.Dense(2)]).get_weights()[0]
    cconv.utils.set_random_seed(5)
    expected = fresh()
    cconv.utils.set_random_seed(5)
    cconv.models.load_model(path)
    np.testing.assert_array_equal(fresh(), expected)


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9, 0.999])
def test_truncated_file(tmp_path, cut):
    path, _ = _saved(tmp_path)
    blob = path.read_bytes()
    path.write_bytes(blob[:int(len(blob) * cut)])
    with pytest.raises(ValueError, match=str(path)):
        cconv.models.load_model(path)


def test_flipped_bit_in_weights_fails_the_crc(tmp_path):
    path, _ = _saved(tmp_path)
    blob = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("model.weights.h5")
    # the member is stored: its data follow the local header (30 bytes + name + extra)
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    blob[start + info.compress_size // 2] ^= 0x10
    path.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=str(path)):
        cconv.models.load_model(path)


def test_zip_bomb_is_refused_before_it_expands(tmp_path):
    path, content = _saved(tmp_path)
    bomb = zipfile.ZipInfo("model.weights.h5")
    bomb.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", content["config.json"])
        # 1 GB of zeros, about 1 MB compressed
        with z.open(bomb, "w", force_zip64=True) as f:
            chunk = bytes(1 << 24)
            for _ in range(64):
                f.write(chunk)
    assert path.stat().st_size < 20 << 20
    started = time.perf_counter()
    with pytest.raises(ValueError, match="zip bomb"):
        cconv.models.load_model(path)
    assert time.perf_counter() - started < 1.0  # refused from the header, not by inflating


def test_missing_h5py_names_the_extra(tmp_path, monkeypatch):
    model = make("keras_layers", trained=False)
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match=r'pip install "cconv\[h5\]"'):
        model.save(tmp_path / "m.keras")
    assert os.listdir(tmp_path) == []


# ---- saves that lose nothing ---------------------------------------------------------
@pytest.mark.parametrize("exc", [OSError("disk full"), KeyboardInterrupt()])
def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch, exc):
    path, _ = _saved(tmp_path)
    before = digest(path)
    real = zipfile.ZipFile.writestr

    def failing(self, info, data, *args, **kwargs):
        name = info.filename if isinstance(info, zipfile.ZipInfo) else info
        if name == "model.weights.h5":
            raise exc
        return real(self, info, data, *args, **kwargs)
    monkeypatch.setattr(zipfile.ZipFile, "writestr", failing)
    with pytest.raises(type(exc)):
        make("keras_layers", optimizer="adam").save(path)
    assert digest(path) == before and os.listdir(tmp_path) == ["m.keras"]


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_next_save_removes_temporaries_of_dead_writers_only(tmp_path):
    host = socket.gethostname()
    dead = tmp_path / f".cconv-{host}-{_dead_pid()}-abc123.keras.tmp"
    live = tmp_path / f".cconv-{host}-{os.getpid()}-def456.keras.tmp"  # a save in progress
    elsewhere = tmp_path / f".cconv-otherhost-{_dead_pid()}-ghi789.keras.tmp"
    not_ours = tmp_path / f"notes-{host}-1.keras.tmp"
    for p in (dead, live, elsewhere, not_ours):
        p.write_bytes(b"partial")
    make("keras_layers", trained=False).save(tmp_path / "m.keras")
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["m.keras", live.name, elsewhere.name, not_ours.name])


@pytest.mark.skipif(os.name != "posix", reason="kill -9 is POSIX")
def test_kill_9_during_saves_never_damages_the_file(tmp_path):
    """A process saving a 16 MB model in a loop is killed; the file loads, and the next
    save removes the killed process's temporary file."""
    path = tmp_path / "big.keras"
    script = textwrap.dedent(f"""
        import cconv, sys
        from cconv.layers import Input, Dense
        model = cconv.Sequential([Input((2000,)), Dense(2000)])
        model.save({str(path)!r})
        print("ready", flush=True)
        while True:
            model.save({str(path)!r})
    """)
    env = same_cconv_env()
    killed_with_temporary = False
    for attempt in range(20):  # a busy machine stretches the moments between writes
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                env=env, cwd=tmp_path)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(0.3 + 0.07 * (attempt % 5))
        proc.kill()
        proc.wait()
        proc.stdout.close()
        cconv.models.load_model(path)  # intact: the old file or the new one
        killed_with_temporary |= any(n.endswith(".keras.tmp") for n in os.listdir(tmp_path))
        if killed_with_temporary:
            break
    assert killed_with_temporary, "no kill landed during a write; the test saw nothing"
    cconv.Sequential([cconv.Input((2,)), cconv.layers.Dense(1)]).save(tmp_path / "small.keras")
    assert sorted(os.listdir(tmp_path)) == ["big.keras", "small.keras"]


def test_model_checkpoint_saves_whole_models(tmp_path):
    model = make("keras_layers", optimizer="adam", trained=False)
    x, y = data("keras_layers")
    ckpt = cconv.callbacks.ModelCheckpoint(str(tmp_path / "ckpt-{epoch}.keras"),
                                           save_weights_only=False)
    model.fit(x, y, batch_size=8, epochs=3, verbose=0, seed=4, callbacks=[ckpt])
    assert sorted(os.listdir(tmp_path)) == [f"ckpt-{e}.keras" for e in (1, 2, 3)]
    second = cconv.models.load_model(tmp_path / "ckpt-2.keras")
    final = cconv.models.load_model(tmp_path / "ckpt-3.keras")
    redo = make("keras_layers", optimizer="adam", trained=False)
    redo.fit(x, y, batch_size=8, epochs=3, verbose=0, seed=4)
    assert same_bits(final.get_weights(), redo.get_weights())
    assert second.optimizer.iterations == 2 * 3 and final.optimizer.iterations == 3 * 3
