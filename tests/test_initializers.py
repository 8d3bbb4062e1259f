"""cconv.initializers against Keras 3's formulas, written out here by hand (from
keras/src/initializers/random_initializers.py), not computed by cconv's own code: the
fans, the limits and standard deviations, the truncation, Orthogonal's QR; seeded
reproducibility; names, classes and configs, and .keras files crossed with Keras 3."""
import json
import os
import zipfile

import numpy as np
import pytest

import cconv
from cconv import initializers
from cconv.layers import Conv2D, Dense, Flatten, Input

TRUNC = 0.87962566103423978  # std of a standard normal cut at +-2: Keras divides by it


def fans(shape):
    """Keras's compute_fans, by hand."""
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    return shape[-2] * receptive, shape[-1] * receptive


# class -> (kind, the uniform limit or the normal's stddev after the cut, from the fans)
REFERENCE = {
    "GlorotUniform": ("uniform", lambda fi, fo: np.sqrt(6.0 / (fi + fo))),
    "GlorotNormal": ("truncated", lambda fi, fo: np.sqrt(2.0 / (fi + fo))),
    "HeUniform": ("uniform", lambda fi, fo: np.sqrt(6.0 / fi)),
    "HeNormal": ("truncated", lambda fi, fo: np.sqrt(2.0 / fi)),
    "LecunUniform": ("uniform", lambda fi, fo: np.sqrt(3.0 / fi)),
    "LecunNormal": ("truncated", lambda fi, fo: np.sqrt(1.0 / fi)),
    "VarianceScaling": ("truncated", lambda fi, fo: np.sqrt(1.0 / fi)),  # its defaults
    "RandomUniform": ("range", lambda fi, fo: (-0.05, 0.05)),
    "RandomNormal": ("normal", lambda fi, fo: (0.0, 0.05)),
    "TruncatedNormal": ("cut", lambda fi, fo: (0.0, 0.05)),
    "Zeros": ("constant", lambda fi, fo: 0.0),
    "Ones": ("constant", lambda fi, fo: 1.0),
    "Constant": ("constant", lambda fi, fo: 0.0),
    "Orthogonal": ("orthogonal", lambda fi, fo: 1.0),
}
SHAPES = [(400, 600), (5, 5, 32, 64)]


def test_every_class_has_a_reference():
    assert sorted(initializers.CLASSES) == sorted(REFERENCE)


def check_distribution(w, kind, scale):
    """w drawn from `kind` of `scale`, to the precision of its ~240,000 draws."""
    w = np.asarray(w, dtype=np.float64)
    if kind == "constant":
        assert np.all(w == scale)
    elif kind == "uniform":  # on [-limit, limit]: std limit / sqrt(3), reaching the ends
        assert abs(w.mean()) < 0.02 * scale
        assert np.abs(w).max() <= scale
        assert np.abs(w).max() > 0.999 * scale
        np.testing.assert_allclose(w.std(), scale / np.sqrt(3), rtol=0.01)
    elif kind == "truncated":  # std `scale` after cutting at two stds of the uncut normal
        assert abs(w.mean()) < 0.02 * scale
        bound = 2 * scale / TRUNC
        assert np.abs(w).max() <= bound * (1 + 1e-12)
        assert np.abs(w).max() > 0.99 * bound
        np.testing.assert_allclose(w.std(), scale, rtol=0.01)
    elif kind == "range":
        lo, hi = scale
        assert lo <= w.min() < lo + 0.001 * (hi - lo) and hi - 0.001 * (hi - lo) < w.max() < hi
        np.testing.assert_allclose(w.mean(), (lo + hi) / 2, atol=0.01 * (hi - lo))
        np.testing.assert_allclose(w.std(), (hi - lo) / np.sqrt(12), rtol=0.01)
    elif kind == "normal":
        mean, std = scale
        np.testing.assert_allclose(w.mean(), mean, atol=0.01 * std)
        np.testing.assert_allclose(w.std(), std, rtol=0.01)
        assert np.abs(w - mean).max() > 4 * std  # not cut
    elif kind == "cut":
        mean, std = scale
        np.testing.assert_allclose(w.mean(), mean, atol=0.01 * std)
        assert np.abs(w - mean).max() <= 2 * std
        assert np.abs(w - mean).max() > 0.999 * 2 * std
        np.testing.assert_allclose(w.std(), std * TRUNC, rtol=0.01)
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", sorted(set(REFERENCE) - {"Orthogonal"}))
def test_each_class_draws_keras_distribution(name, shape):
    kind, scale = REFERENCE[name]
    w = getattr(initializers, name)(seed=3)(shape, "float64") if kind not in (
        "constant",) else getattr(initializers, name)()(shape, "float64")
    assert w.shape == shape and w.dtype == np.float64
    check_distribution(w, kind, scale(*fans(shape)))


@pytest.mark.parametrize("name", ["glorot_uniform", "glorot_normal", "he_uniform",
                                  "he_normal", "lecun_uniform", "lecun_normal", "zeros",
                                  "ones", "random_uniform", "random_normal",
                                  "truncated_normal", "variance_scaling"])
@pytest.mark.parametrize("layer,shape", [
    (lambda init: Dense(600, kernel_initializer=init), (400, 600)),
    # Keras's fans of a conv kernel (KH, KW, C, F): KH*KW*C in, KH*KW*F out
    (lambda init: Conv2D(64, 5, kernel_initializer=init), (5, 5, 32, 64)),
])
def test_names_in_layers_draw_keras_distribution(name, layer, shape):
    cconv.utils.set_random_seed(7)
    inp = (400,) if len(shape) == 2 else (12, 12, 32)
    model = cconv.Sequential([Input(inp), layer(name)], dtype="float64")
    kind, scale = REFERENCE[initializers.ALIASES[name].__name__]
    check_distribution(model.layers[0].params["kernel"], kind, scale(*fans(shape)))


def test_default_initializers_are_glorot_uniform_and_zeros():
    cconv.utils.set_random_seed(8)
    model = cconv.Sequential([Input((6, 6, 40)), Conv2D(80, 3), Conv2D(50, 1)],
                             dtype="float64")
    conv, pointwise = model.layers
    check_distribution(conv.params["kernel"], "uniform", np.sqrt(6.0 / (9 * 40 + 9 * 80)))
    check_distribution(pointwise.params["kernel"], "uniform", np.sqrt(6.0 / (80 + 50)))
    assert np.all(conv.params["bias"] == 0) and np.all(pointwise.params["bias"] == 0)


@pytest.mark.parametrize("mode", ["fan_in", "fan_out", "fan_avg"])
@pytest.mark.parametrize("distribution", ["truncated_normal", "untruncated_normal",
                                          "uniform"])
def test_variance_scaling_modes_and_distributions(mode, distribution):
    shape = (3, 3, 40, 90)  # fan_in 360, fan_out 810: every mode differs
    fi, fo = 9 * 40, 9 * 90
    n = {"fan_in": fi, "fan_out": fo, "fan_avg": (fi + fo) / 2}[mode]
    w = initializers.VarianceScaling(0.7, mode, distribution, seed=1)(shape, "float64")
    if distribution == "uniform":
        check_distribution(w, "uniform", np.sqrt(3 * 0.7 / n))
    elif distribution == "truncated_normal":
        check_distribution(w, "truncated", np.sqrt(0.7 / n))
    else:
        check_distribution(w, "normal", (0.0, np.sqrt(0.7 / n)))


def test_he_and_lecun_take_the_fan_in_of_a_conv_kernel():
    # a kernel whose fan_out is 12 times its fan_in: any other fan shrinks the limit
    for name, factor in (("HeUniform", 6.0), ("LecunUniform", 3.0)):
        w = getattr(initializers, name)(seed=5)((3, 3, 8, 96), "float64")
        limit = np.sqrt(factor / (3 * 3 * 8))
        assert limit * 0.995 < np.abs(w).max() <= limit


def test_glorot_normal_takes_the_mean_of_the_fans():
    w = initializers.GlorotNormal(seed=2)((3, 3, 40, 480), "float64")
    check_distribution(w, "truncated", np.sqrt(2.0 / (9 * 40 + 9 * 480)))


def test_fans_of_vectors_and_explicit_axes():
    # a bias (F,): fan_in = fan_out = F
    w = initializers.GlorotUniform(seed=4)((100000,), "float64")
    check_distribution(w, "uniform", np.sqrt(6.0 / 200000))
    w = initializers.VarianceScaling(1.0, "fan_in", "uniform", seed=4,
                                     input_axes=[0], output_axes=[1, 2])((50, 40, 30))
    assert np.abs(w).max() <= np.sqrt(3.0 / 50) and np.abs(w).max() > 0.99 * np.sqrt(3.0 / 50)


@pytest.mark.parametrize("shape", [(64, 64), (200, 30), (30, 200), (3, 3, 4, 16),
                                   (3, 3, 8, 200)])
@pytest.mark.parametrize("gain", [1.0, 0.5])
def test_orthogonal_is_orthogonal(shape, gain):
    w = initializers.Orthogonal(gain=gain, seed=3)(shape, "float64")
    assert w.shape == shape
    m = w.reshape(-1, shape[-1])
    if m.shape[0] >= m.shape[1]:  # orthonormal columns
        np.testing.assert_allclose(m.T @ m, gain ** 2 * np.eye(m.shape[1]), atol=1e-12)
    else:  # orthonormal rows
        np.testing.assert_allclose(m @ m.T, gain ** 2 * np.eye(m.shape[0]), atol=1e-12)


def test_orthogonal_is_the_sign_corrected_q_of_the_seeded_normal_draw():
    """Keras: q, r = qr(a) of a (max(rows, cols), min(rows, cols)) standard normal;
    q *= sign(diag(r)); transposed when wide. With the signs corrected, q is the
    Gram-Schmidt basis of a's columns: q.T @ a is upper triangular with a positive
    diagonal. cconv's seeded draw is numpy's default_rng(seed).standard_normal."""
    for shape in [(7, 4), (4, 7)]:
        a = np.random.default_rng(11).standard_normal((7, 4))
        q = initializers.Orthogonal(seed=11)(shape, "float64")
        q = q if shape == (7, 4) else q.T
        r = q.T @ a
        np.testing.assert_allclose(np.tril(r, -1), 0, atol=1e-12)
        assert np.all(np.diag(r) > 0)


def test_orthogonal_signs_make_it_uniform_over_rotations():
    """For a Haar-distributed Q every entry has mean 0; QR without the sign correction
    gives Q's first entry one sign almost always (Householder's R has a negative
    first diagonal entry when a's first entry is positive)."""
    firsts = np.array([initializers.Orthogonal(seed=s)((3, 3), "float64")[:, 0]
                       for s in range(400)])
    assert abs(firsts.mean()) < 0.06
    assert 0.4 < (firsts[:, 0] > 0).mean() < 0.6


def test_orthogonal_needs_two_axes():
    with pytest.raises(ValueError, match="two axes"):
        initializers.Orthogonal()((5,))


def test_constant_and_dtype():
    w = initializers.Constant(0.25)((3, 4))
    assert w.dtype == np.float32 and np.all(w == 0.25)
    assert initializers.Zeros()((2,), "float64").dtype == np.float64
    with pytest.raises(ValueError, match="value"):
        initializers.Constant([1, 2])


@pytest.mark.parametrize("name", sorted(set(REFERENCE) - {"Zeros", "Ones", "Constant"}))
def test_seeded_initializers_repeat_their_bits(name):
    cls = getattr(initializers, name)
    shape = (6, 5)
    a = cls(seed=1)(shape)
    cconv.utils.set_random_seed(123)  # the global seed plays no part in a seeded draw
    assert np.array_equal(a, cls(seed=1)(shape)) and np.array_equal(a, cls(seed=1)(shape))
    assert not np.array_equal(a, cls(seed=2)(shape))
    init = cls(seed=1)
    assert np.array_equal(init(shape), init(shape))  # as Keras: an int seed repeats


def test_seeded_initializer_in_a_layer_gives_the_same_kernel_in_every_model():
    def build(global_seed):
        cconv.utils.set_random_seed(global_seed)
        return cconv.Sequential([Input((6,)), Dense(4, kernel_initializer=initializers
                                                    .HeNormal(seed=9)), Dense(3)])
    a, b = build(1), build(2)
    assert np.array_equal(a.layers[0].params["kernel"], b.layers[0].params["kernel"])
    assert not np.array_equal(a.layers[1].params["kernel"], b.layers[1].params["kernel"])


def test_unseeded_draws_come_from_the_models_generator():
    def kernels():
        cconv.utils.set_random_seed(4)
        model = cconv.Sequential([Input((5, 5, 2)),
                                  Conv2D(3, 3, kernel_initializer=initializers.HeUniform()),
                                  Flatten(), Dense(2, kernel_initializer="orthogonal")])
        return model.get_weights()
    for a, b in zip(kernels(), kernels(), strict=True):
        assert np.array_equal(a, b)


def test_user_callables_get_shape_dtype_and_the_models_generator():
    seen = []

    def init(shape, dtype, rng):
        seen.append((shape, np.dtype(dtype), type(rng)))
        return rng.uniform(-1, 1, shape)
    cconv.utils.set_random_seed(1)
    model = cconv.Sequential([Input((3,)), Dense(2, kernel_initializer=init)], "float64")
    assert seen == [((3, 2), np.dtype("float64"), np.random.Generator)]
    assert model.layers[0].params["kernel"].dtype == np.float64


def test_get_takes_names_classes_objects_and_callables():
    assert isinstance(initializers.get("he_normal"), initializers.HeNormal)
    assert isinstance(initializers.get("HeNormal"), initializers.HeNormal)
    assert isinstance(initializers.get(initializers.Orthogonal), initializers.Orthogonal)
    assert isinstance(initializers.get("normal"), initializers.RandomNormal)
    init = initializers.Constant(2.0)
    assert initializers.get(init) is init
    assert initializers.get(initializers.tutorial_bias) is initializers.tutorial_bias
    for bad in ["nope", 3, None]:
        with pytest.raises(ValueError):
            initializers.get(bad)
    with pytest.raises(ValueError, match="kernel_initializer"):
        Dense(2, kernel_initializer="nope")


EXAMPLES = [
    initializers.GlorotUniform(), initializers.GlorotUniform(seed=1),
    initializers.GlorotNormal(seed=2), initializers.HeUniform(seed=3),
    initializers.HeNormal(), initializers.LecunUniform(seed=4), initializers.LecunNormal(),
    initializers.RandomUniform(-0.2, 0.3, seed=5), initializers.RandomNormal(0.1, 0.2),
    initializers.TruncatedNormal(-0.1, 0.3, seed=6),
    initializers.VarianceScaling(0.5, "fan_out", "uniform", seed=7),
    initializers.VarianceScaling(2.0, "fan_avg", "untruncated_normal"),
    initializers.Orthogonal(0.5, seed=8), initializers.Zeros(), initializers.Ones(),
    initializers.Constant(0.25)]


@pytest.mark.parametrize("init", EXAMPLES, ids=repr)
def test_configs_round_trip(init):
    config = initializers.serialize(init)
    assert config["module"] == "keras.initializers" and config["registered_name"] is None
    assert config["class_name"] == type(init).__name__
    json.dumps(config)
    again = initializers.deserialize(config)
    assert type(again) is type(init) and again.get_config() == init.get_config()
    layer = Dense(3, kernel_initializer=init, bias_initializer=init.clone())
    twin = Dense.from_config(layer.get_config())
    assert twin.kernel_initializer == init and twin.bias_initializer == init


def test_serialize_writes_keras_configs():
    assert initializers.serialize(initializers.GlorotUniform(seed=1)) == {
        "module": "keras.initializers", "class_name": "GlorotUniform",
        "config": {"seed": 1}, "registered_name": None}
    assert initializers.serialize("zeros")["config"] == {}
    assert initializers.serialize(initializers.VarianceScaling())["config"] == {
        "seed": None, "scale": 1.0, "mode": "fan_in", "distribution": "truncated_normal"}
    assert initializers.serialize(initializers.Orthogonal(2.0, seed=3))["config"] == {
        "seed": 3, "gain": 2.0}


def test_keras_configs_with_every_option_are_read():
    # Keras 3.15 writes the axes of the VarianceScaling family
    init = initializers.deserialize({"module": "keras.initializers", "class_name": "HeNormal",
                                     "config": {"seed": 4, "input_axes": None,
                                                "output_axes": None},
                                     "registered_name": None})
    assert isinstance(init, initializers.HeNormal) and init.seed == 4
    init = initializers.deserialize({"class_name": "VarianceScaling", "config": {
        "scale": 3.0, "mode": "fan_avg", "distribution": "normal", "seed": None}})
    assert (init.scale, init.mode, init.distribution) == (3.0, "fan_avg", "truncated_normal")
    init = initializers.deserialize({"class_name": "Constant", "config": {"value": 0.5}})
    assert init.value == 0.5
    for config, named in [({"class_name": "HeNormal", "config": {"seed": -1}}, "seed"),
                          ({"class_name": "Orthogonal", "config": {"gian": 1}}, "gian"),
                          ({"class_name": "Identity", "config": {}}, "Identity")]:
        with pytest.raises(ValueError, match=named):
            initializers.deserialize(config)


def tf_model():
    from cconv import presets
    return presets.build_tf()


def test_tutorial_initializers_round_trip_by_name_and_by_their_legacy_names():
    model = tf_model()
    config = model.get_config()
    kernel = config["layers"][1]["config"]["kernel_initializer"]
    assert kernel["registered_name"] == "cconv.initializers>tutorial_normal"
    twin = cconv.Sequential.from_config(config)
    assert twin.layers[0].kernel_initializer is initializers.tutorial_normal
    # what cconv wrote before the initializers had their own module
    text = json.dumps(config).replace('"cconv.initializers"', '"cconv.presets"').replace(
        "cconv.initializers>", "cconv.presets>")
    assert "cconv.presets>tutorial_bias" in text
    twin = cconv.Sequential.from_config(json.loads(text))
    assert twin.layers[0].kernel_initializer is initializers.tutorial_normal
    assert twin.layers[0].bias_initializer is initializers.tutorial_bias


def test_a_keras_file_naming_the_legacy_tutorial_initializers_loads(tmp_path):
    pytest.importorskip("h5py")
    model = tf_model()
    model.save(tmp_path / "new.keras")
    with zipfile.ZipFile(tmp_path / "new.keras") as src, \
            zipfile.ZipFile(tmp_path / "old.keras", "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "config.json":
                data = data.replace(b'"cconv.initializers"', b'"cconv.presets"').replace(
                    b"cconv.initializers>", b"cconv.presets>")
            dst.writestr(info, data)
    loaded = cconv.models.load_model(tmp_path / "old.keras")
    assert loaded.layers[0].kernel_initializer is initializers.tutorial_normal
    for a, b in zip(loaded.get_weights(), model.get_weights(), strict=True):
        assert np.array_equal(a, b)


def test_seeded_initializers_cross_a_keras_file(tmp_path):
    pytest.importorskip("h5py")
    model = cconv.Sequential([Input((6, 6, 2)),
                              Conv2D(3, 3, kernel_initializer=initializers.Orthogonal(
                                  0.5, seed=2), bias_initializer=initializers.Constant(0.1)),
                              Flatten(),
                              Dense(4, kernel_initializer=initializers.VarianceScaling(
                                  2.0, "fan_out", "uniform", seed=3))])
    model.save(tmp_path / "m.keras")
    loaded = cconv.models.load_model(tmp_path / "m.keras")
    for a, b in zip(loaded.layers, model.layers):
        assert getattr(a, "kernel_initializer", None) == getattr(b, "kernel_initializer", None)
        assert getattr(a, "bias_initializer", None) == getattr(b, "bias_initializer", None)
    clone = cconv.models.clone_model(model)  # fresh weights: the seeded ones repeat
    assert np.array_equal(clone.layers[0].params["kernel"], model.layers[0].params["kernel"])
    assert np.array_equal(clone.layers[2].params["kernel"], model.layers[2].params["kernel"])


# ---- with Keras 3 itself ---------------------------------------------------------------
def keras_or_skip():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    pytest.importorskip("h5py")
    from zoo import need
    return need("keras", "interop")


@pytest.mark.parametrize("init", EXAMPLES, ids=repr)
def test_keras_loads_each_initializer_cconv_saves(tmp_path, init):
    keras = keras_or_skip()
    model = cconv.Sequential([Input((4, 4, 2)), Conv2D(3, 2, kernel_initializer=init),
                              Flatten(), Dense(2, kernel_initializer=init.clone())])
    model.save(tmp_path / "m.keras")
    theirs = keras.models.load_model(tmp_path / "m.keras")
    for layer in (theirs.layers[0], theirs.layers[2]):
        got = layer.kernel_initializer
        assert type(got).__name__ == type(init).__name__
        want = init.get_config()
        assert {k: v for k, v in got.get_config().items() if k in want} == want
        assert {k: v for k, v in got.get_config().items() if k not in want} in (
            {}, {"input_axes": None, "output_axes": None})
    for a, b in zip(theirs.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)


def keras_initializer(keras, init):
    config = init.get_config()
    return getattr(keras.initializers, type(init).__name__)(**config)


@pytest.mark.parametrize("init", EXAMPLES, ids=repr)
def test_cconv_loads_each_initializer_keras_saves(tmp_path, init):
    keras = keras_or_skip()
    # a bias is a vector, which Orthogonal refuses
    bias = initializers.Zeros() if isinstance(init, initializers.Orthogonal) else init
    theirs = keras.Sequential([
        keras.Input((4, 4, 2)),
        keras.layers.Conv2D(3, 2, kernel_initializer=keras_initializer(keras, init)),
        keras.layers.Flatten(),
        keras.layers.Dense(2, kernel_initializer=keras_initializer(keras, init),
                           bias_initializer=keras_initializer(keras, bias))])
    theirs.save(tmp_path / "k.keras")
    ours = cconv.models.load_model(tmp_path / "k.keras")
    assert ours.layers[0].kernel_initializer == init
    assert ours.layers[2].kernel_initializer == init
    assert ours.layers[2].bias_initializer == bias
    for a, b in zip(ours.get_weights(), theirs.get_weights(), strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))
