"""Every activation of cconv.activations' table against Keras 3's own (KERAS_BACKEND=jax
by default; CI installs keras, jax and h5py; skipped, saying so, when Keras is absent):
the functions on a grid in both dtypes, the same weights' predictions, one SGD step from
the same start, and .keras files both ways. Parametrised by the table, never a hand list:
a new row is tested here by itself."""
import json
import os
import zipfile

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_ENABLE_X64", "1")  # else jax computes float64 in float32
from zoo import assert_one_sgd_step_as_keras, need  # noqa: E402

need("h5py", "h5")
keras = need("keras", "interop")

import cconv  # noqa: E402
from cconv import activations  # noqa: E402
from cconv.layers import Activation, Conv2D, Dense, Flatten, Input  # noqa: E402

if keras.backend.backend() == "jax":
    import jax
    jax.config.update("jax_enable_x64", True)  # float64 below is float64 in jax too

NAMES = activations.NAMES                  # every activation, softmax included
ELEMENTWISE = activations.ELEMENTWISE      # every one but softmax
ALIASES = tuple(sorted(activations.ALIASES))  # Keras's other names: swish, hard_swish
DTYPES = [np.float32, np.float64]

# The grid: dense over [-12, 12], then zeros, tiny and large magnitudes of both signs
# (overflow to inf, as exponential's, must agree too).
_MAGNITUDES = [0.0, 1e-30, 1e-20, 1e-10, 1e-5, 15, 20, 30, 50, 100, 1e3, 1e4, 1e6]
GRID = np.concatenate([np.linspace(-12, 12, 2001), _MAGNITUDES, np.negative(_MAGNITUDES)])

# Where Keras (on jax) is accurate, cconv must agree with it to ULPS units of eps
# relative, plus the smallest normal number absolute: XLA on the CPU flushes subnormal
# results to zero (Keras's sigmoid(-100) in float32 is 0, cconv's 3.8e-44).
ULPS = 8

# Where Keras is not accurate, the extra error its formula makes, as an absolute bound
# at each x (eps is the dtype's): a bound on Keras's rounding, not on cconv's, which
# tests/ops/test_activations.py holds to a few ulp of a long-double reference there.
KERAS_EXTRA_ERROR = {
    # jax's gelu is x/2 * erfc(-x * sqrt(1/2)): no cancellation, but the product x*sqrt(1/2)
    # rounds (relative eps/2 each for it and the rounded constant), and erfc's slope
    # multiplies a relative error of its argument z by 2 z^2 = x^2 in the lower tail.
    # (Keras's docs write 0.5 x (1 + erf(x / sqrt 2)), which would cancel entirely.)
    "gelu": lambda x, y, eps: np.where(x < 0, eps * x * x * np.abs(y), 0),
    # x - tanh(x) cancels for small |x|: tanh(x)'s rounding, a few ulp of |x|, is all
    # that is left of a result of |x|^3 / 3.
    "tanh_shrink": lambda x, y, eps: 4 * eps * np.abs(x),
    # (x + sqrt(x^2 + b)) / 2 cancels below 0: the root's rounding, a few ulp of |x|,
    # against a result of b / (4 |x|).
    "squareplus": lambda x, y, eps: np.where(x < 0, 4 * eps * np.abs(x), 0),
}


def keras_dtype_tolerance(name, x, got, want):
    """assert_allclose's rtol and per-element atol for cconv's `got` against Keras's
    `want`, in the dtype Keras computed in: Keras 3.15 on jax computes tanh of float64 in
    float32 (keras.ops.tanh casts to result_type(float64, float), which is floatx), so
    there the comparison holds to float32's eps."""
    dtype = want.dtype if want.dtype.itemsize < got.dtype.itemsize else got.dtype
    eps = float(np.finfo(dtype).eps)
    atol = float(np.finfo(dtype).tiny) + np.zeros(x.shape)
    if name in KERAS_EXTRA_ERROR:
        with np.errstate(all="ignore"):
            extra = KERAS_EXTRA_ERROR[name](x.astype(np.float64), want.astype(np.float64),
                                            eps)
        atol = atol + np.nan_to_num(extra, posinf=0.0)
    return ULPS * eps, atol


def assert_agrees(got, want, rtol, atol, what):
    """|got - want| <= rtol |want| + atol elementwise (inf equal to inf of its sign, NaN
    to NaN), naming the worst elements when not."""
    got64, want64 = got.astype(np.float64), want.astype(np.float64)
    same = (got64 == want64) | (np.isnan(got64) & np.isnan(want64))
    with np.errstate(invalid="ignore"):
        bad = ~same & ~(np.abs(got64 - want64) <= rtol * np.abs(want64) + atol)
    if bad.any():
        idx = np.flatnonzero(bad.ravel())[:8]
        rows = ", ".join(f"[{i}] cconv {got64.ravel()[i]!r} keras {want64.ravel()[i]!r}"
                         for i in idx)
        raise AssertionError(f"{what}: {bad.sum()} of {bad.size} elements differ beyond "
                             f"rtol={rtol:.3g} + atol: {rows}")


def keras_of(name, x):
    return np.asarray(keras.activations.get(name)(x))


# ---- (a) the functions on arrays -------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", ELEMENTWISE + ALIASES)
def test_function_matches_keras_on_a_grid(name, dtype):
    x = GRID.astype(dtype)
    got = activations.get(name)(x)
    want = keras_of(name, x)
    assert got.dtype == dtype and got.shape == x.shape
    rtol, atol = keras_dtype_tolerance(name, x, got, want)
    assert_agrees(got, want.astype(np.float64), rtol, atol, f"{name} {np.dtype(dtype)}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_softmax_matches_keras_along_the_last_axis(dtype, rng):
    x = np.concatenate([rng.standard_normal((40, 7)) * 5,
                        [[1e3, -1e3, 0, 1, 999, -5, 1e3], [-1e4] * 7, [0] * 7]]).astype(dtype)
    got = activations.get("softmax")(x)
    want = keras_of("softmax", x)
    assert got.dtype == dtype and want.dtype == dtype
    # exp's few ulp and the row sum's: 7 terms
    eps = float(np.finfo(dtype).eps)
    assert_agrees(got, want, 16 * eps, float(np.finfo(dtype).tiny),
                  f"softmax {np.dtype(dtype)}")
    np.testing.assert_allclose(got.sum(axis=-1), 1, rtol=16 * eps)


# ---- the same models in both engines ---------------------------------------------------
def input_scale(name):
    """Inputs of unit scale, but smaller for exponential: two exponentials in a row
    (Conv2D's and Activation's) would saturate the softmax, whose gradients Keras then
    clips (its crossentropy clips probabilities to [1e-7, 1 - 1e-7])."""
    return 0.25 if name == "exponential" else 1.0


def cconv_dense(name):
    return cconv.Sequential([Input((6,)), Dense(5, activation=name),
                             Dense(3, activation="softmax")])


def keras_dense(name):
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, activation=name),
                             keras.layers.Dense(3, activation="softmax")])


def cconv_conv(name):
    return cconv.Sequential([Input((6, 6, 2)), Conv2D(3, 3, activation=name),
                             Activation(name), Flatten(), Dense(3, activation="softmax")])


def keras_conv(name):
    return keras.Sequential([keras.Input((6, 6, 2)),
                             keras.layers.Conv2D(3, 3, activation=name),
                             keras.layers.Activation(name), keras.layers.Flatten(),
                             keras.layers.Dense(3, activation="softmax")])


MODELS = {"dense": (cconv_dense, keras_dense, (6,)), "conv": (cconv_conv, keras_conv, (6, 6, 2))}


def twins(kind, name, seed=0):
    """The model in cconv (its own seeded initialisation) and in Keras with cconv's
    weights, and float32 inputs and labels for it."""
    make_ours, make_theirs, shape = MODELS[kind]
    cconv.utils.set_random_seed(seed)
    ours = make_ours(name)
    theirs = make_theirs(name)
    theirs.set_weights(ours.get_weights())
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((8,) + shape) * input_scale(name)).astype(np.float32)
    y = rng.integers(0, 3, len(x))
    return ours, theirs, x, y


PREDICT_TOL = dict(rtol=1e-5, atol=1e-7)  # float32: the probabilities, each <= 1


# ---- (b) the same weights give the same predictions ------------------------------------
@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("name", NAMES)
def test_same_weights_same_predictions(name, kind):
    ours, theirs, x, _ = twins(kind, name)
    np.testing.assert_allclose(ours.predict(x, verbose=0), theirs.predict(x, verbose=0),
                               **PREDICT_TOL)


# ---- (c) one SGD step from the same start gives the same weights -----------------------
@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("name", NAMES)
def test_one_sgd_step_gives_keras_weights(name, kind):
    ours, theirs, x, y = twins(kind, name, seed=1)
    assert_one_sgd_step_as_keras(ours, theirs, x, y, f"{name} {kind}")


# ---- (d) .keras files both ways --------------------------------------------------------
def config_activations(path):
    """The activation names a .keras file's config gives its layers, in order."""
    with zipfile.ZipFile(path) as z:
        config = json.loads(z.read("config.json"))
    return [layer["config"]["activation"] for layer in config["config"]["layers"]
            if "activation" in layer["config"]]


def keras_name(name):
    """The name Keras's configs give the activation (aliases: the canonical one)."""
    return keras.activations.serialize(keras.activations.get(name))


def file_model_layers(name):
    """Dense with the activation, an Activation layer of it, and a softmax Dense."""
    return [(Dense, dict(units=5, activation=name)), (Activation, dict(activation=name)),
            (Dense, dict(units=3, activation="softmax"))]


def file_inputs(name):
    rng = np.random.default_rng(5)
    return (rng.standard_normal((8, 6)) * input_scale(name)).astype(np.float32)


@pytest.mark.parametrize("name", NAMES + ALIASES)
def test_keras_loads_what_cconv_saves(tmp_path, name):
    cconv.utils.set_random_seed(2)
    ours = cconv.Sequential([Input((6,))] + [cls(**kw) for cls, kw in file_model_layers(name)])
    path = tmp_path / "m.keras"
    ours.save(path)
    canonical = activations.canonical(name)
    assert keras_name(name) == canonical  # the table's names are Keras's
    assert config_activations(path) == [canonical, canonical, "softmax"]
    theirs = keras.models.load_model(path)
    assert [l.get_config()["activation"] for l in theirs.layers] == [canonical, canonical,
                                                                      "softmax"]
    x = file_inputs(name)
    np.testing.assert_allclose(ours.predict(x, verbose=0), theirs.predict(x, verbose=0),
                               **PREDICT_TOL)


@pytest.mark.parametrize("name", NAMES + ALIASES)
def test_cconv_loads_what_keras_saves(tmp_path, name):
    keras.utils.set_random_seed(2)  # Keras's own initialisation
    theirs = keras.Sequential([keras.Input((6,))] + [
        getattr(keras.layers, cls.__name__)(**kw) for cls, kw in file_model_layers(name)])
    path = tmp_path / "k.keras"
    theirs.save(path)
    canonical = keras_name(name)
    assert config_activations(path) == [canonical, canonical, "softmax"]
    ours = cconv.models.load_model(path)
    assert [l.get_config()["activation"] for l in ours.layers] == [canonical, canonical,
                                                                    "softmax"]
    assert [l.activation.name for l in ours.layers] == [activations.canonical(name)] * 2 + [
        "softmax"]
    x = file_inputs(name)
    np.testing.assert_allclose(ours.predict(x, verbose=0), theirs.predict(x, verbose=0),
                               **PREDICT_TOL)
    # and back: what cconv saves of it, Keras loads with the same names
    again = tmp_path / "again.keras"
    ours.save(again)
    assert config_activations(again) == [canonical, canonical, "softmax"]
