"""Losses, metrics and sample/class weights against Keras 3 itself (KERAS_BACKEND=jax;
skipped, saying so, when Keras is absent): every loss's value and gradient in both dtypes
(and by finite differences), one SGD step with each loss, fits of several steps with
sample_weight and class_weight, evaluate with sample_weight, the metrics' values and
names, compile configs in .keras files both ways, and the bad inputs' errors."""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_ENABLE_X64", "1")  # as the other Keras tests: jax starts once
from conftest import numerical_grad  # noqa: E402
from zoo import assert_one_sgd_step_as_keras, need  # noqa: E402

need("h5py", "h5")
keras = need("keras", "interop")

import cconv  # noqa: E402
from cconv import layers, losses  # noqa: E402

if keras.backend.backend() == "jax":
    import jax
    jax.config.update("jax_enable_x64", True)

DTYPES = [np.float32, np.float64]
# Keras's ops.mean on JAX computes in float32 even for float64 input (its result_type of
# float64 and "float32"), so Keras's float64 losses are float32-accurate where they take
# a mean; cconv's float64 is held to finite differences below.
TOL = {np.float32: dict(rtol=2e-5, atol=1e-6), np.float64: dict(rtol=2e-7, atol=1e-9)}
N = 12


def _targets(kind, shape, rng):
    if kind == "sparse":
        return rng.integers(0, shape[-1], shape[0])
    if kind == "categorical":   # rows of any weights, some one-hot
        y = rng.uniform(0, 1, shape)
        y[: shape[0] // 2] = np.eye(shape[-1])[rng.integers(0, shape[-1], shape[0] // 2)]
        return y
    if kind == "binary":        # hard and soft labels
        y = rng.integers(0, 2, shape).astype(float)
        y[0] = rng.uniform(0, 1, shape[1:])
        return y
    return rng.standard_normal(shape)


def _outputs(case, shape, rng):
    if case.endswith("logits"):
        return rng.standard_normal(shape) * 3
    if case.startswith(("bce", "cce", "scce")):   # probabilities, some beyond the clip
        p = rng.uniform(0.02, 0.98, shape)
        p.flat[0], p.flat[-1] = 1e-9, 1 - 1e-9
        return p
    return rng.standard_normal(shape)


# id -> (loss of module L, labels' kind, output shape of a sample)
CASES = {
    "mse": (lambda L: L.MeanSquaredError(), "regression", (3,)),
    "mse_rank3": (lambda L: L.MeanSquaredError(), "regression", (2, 3)),
    "mae": (lambda L: L.MeanAbsoluteError(), "regression", (3,)),
    "mae_rank3": (lambda L: L.MeanAbsoluteError(), "regression", (4, 2)),
    "bce_probs": (lambda L: L.BinaryCrossentropy(), "binary", (1,)),
    "bce_probs_smooth": (lambda L: L.BinaryCrossentropy(label_smoothing=0.1), "binary", (3,)),
    "bce_logits": (lambda L: L.BinaryCrossentropy(from_logits=True, label_smoothing=0.2),
                   "binary", (2, 3)),
    "cce_probs_smooth": (lambda L: L.CategoricalCrossentropy(label_smoothing=0.1),
                         "categorical", (4,)),
    "cce_logits_smooth": (lambda L: L.CategoricalCrossentropy(from_logits=True,
                                                              label_smoothing=0.3),
                          "categorical", (5,)),
    "scce_probs": (lambda L: L.SparseCategoricalCrossentropy(), "sparse", (4,)),
    "scce_logits": (lambda L: L.SparseCategoricalCrossentropy(from_logits=True), "sparse",
                    (4,)),
}


def ours_mean_loss(loss, target, out):
    """(mean loss, its gradient wrt out) from cconv's loss, as the model reduces it."""
    values, grad = loss.per_sample(target, out, loss.from_logits)
    return values.mean(), grad / len(out)


def case_data(case, dtype, seed=0):
    make, kind, shape = CASES[case]
    rng = np.random.default_rng(seed)
    y = _targets(kind, (N,) + shape, rng)
    out = _outputs(case, (N,) + shape, rng).astype(dtype)
    target = np.eye(shape[-1])[y] if kind == "sparse" else y
    return make, y, target.astype(dtype), out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_loss_value_and_gradient_are_keras(case, dtype):
    make, y, target, out = case_data(case, dtype)
    theirs = make(keras.losses)
    theirs = type(theirs).from_config({**theirs.get_config(), "dtype": np.dtype(dtype).name})
    want, want_grad = jax.value_and_grad(lambda o: theirs(y, o))(out)
    got, got_grad = ours_mean_loss(make(losses), target, out)
    assert got_grad.dtype == dtype
    np.testing.assert_allclose(got, float(want), **TOL[dtype], err_msg=case)
    np.testing.assert_allclose(got_grad, np.asarray(want_grad), **TOL[dtype], err_msg=case)


@pytest.mark.parametrize("case", CASES)
def test_loss_gradient_is_the_finite_difference(case):
    """The summed loss's gradient, where the loss is smooth: probabilities inside the
    clip (the clipped ones, whose gradient is 0, are Keras's above)."""
    make, _, target, out = case_data(case, np.float64, seed=1)
    if not case.endswith("logits"):
        out[(out < 1e-3) | (out > 1 - 1e-3)] = 0.5
    loss = make(losses)
    grad = ours_mean_loss(loss, target, out)[1] * len(out)
    numeric = numerical_grad(lambda: ours_mean_loss(loss, target, out)[0] * len(out), out)
    # centred differences of a sum near 10 carry about 1e-9 of rounding
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=5e-8, err_msg=case)


def test_label_smoothing_by_hand():
    """Keras's formulas written out: y (1 - s) + s / classes, and y (1 - s) + s / 2."""
    y, z = np.array([[0.0, 1.0, 0.0]]), np.array([[0.5, -1.0, 2.0]])
    s = 0.3
    log_p = z - np.log(np.exp(z).sum())
    smooth = y * (1 - s) + s / 3
    got = losses.CategoricalCrossentropy(from_logits=True, label_smoothing=s).per_sample(
        y, z, True)[0]
    np.testing.assert_allclose(got, -(smooth * log_p).sum(), rtol=1e-14)
    smooth = y * (1 - s) + s / 2
    want = np.mean(smooth * np.log1p(np.exp(-z)) + (1 - smooth) * np.log1p(np.exp(z)))
    got = losses.BinaryCrossentropy(from_logits=True, label_smoothing=s).per_sample(
        y, z, True)[0]
    np.testing.assert_allclose(got, want, rtol=1e-14)


# ---- models against Keras ------------------------------------------------------------
# id -> (final activation, units, loss of module L, labels' kind)
HEADS = {
    "mse": (None, 2, lambda L: "mse", "regression"),
    "mae": ("tanh", 3, lambda L: "mean_absolute_error", "regression"),
    "bce_sigmoid": ("sigmoid", 1, lambda L: "binary_crossentropy", "binary01"),
    "bce_sigmoid_multi": ("sigmoid", 3, lambda L: L.BinaryCrossentropy(label_smoothing=0.1),
                          "binary"),
    "bce_logits": (None, 1, lambda L: L.BinaryCrossentropy(from_logits=True), "binary01"),
    "cce_smooth": ("softmax", 3, lambda L: L.CategoricalCrossentropy(label_smoothing=0.2),
                   "categorical"),
    "scce": ("softmax", 3, lambda L: "sparse_categorical_crossentropy", "sparse"),
}


def twins(head, n=20, seed=0):
    act, units, _, kind = HEADS[head]
    net = lambda L: [L.Dense(5, activation="tanh"), L.Dense(units, activation=act)]
    cconv.utils.set_random_seed(seed)
    ours = cconv.Sequential([layers.Input((4,))] + net(layers))
    theirs = keras.Sequential([keras.Input((4,))] + net(keras.layers))
    theirs.set_weights(ours.get_weights())
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    if kind == "binary01":      # (N,) labels against the (N, 1) output, as Keras expands them
        y = rng.integers(0, 2, n)
    elif kind == "sparse":
        y = rng.integers(0, units, n)
    elif kind == "categorical":
        y = np.eye(units)[rng.integers(0, units, n)]
    elif kind == "binary":
        y = rng.integers(0, 2, (n, units)).astype(np.float32)
    else:
        y = rng.standard_normal((n, units)).astype(np.float32)
    return ours, theirs, x, y


def compile_both(ours, theirs, head, lr=0.1, **kwargs):
    loss = HEADS[head][2]
    ours.compile(optimizer=cconv.optimizers.SGD(lr), loss=loss(cconv.losses), **kwargs)
    theirs.compile(optimizer=keras.optimizers.SGD(lr), loss=loss(keras.losses), **kwargs)


def assert_logs_close(got, want, label, rtol=1e-5):
    """The same names (Keras's dicts come sorted by name; cconv's keep compile's order,
    as Keras's evaluate lists them) and values."""
    assert set(got) == set(want), f"{label}: {list(got)} vs {list(want)}"
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=rtol, atol=1e-6,
                                   err_msg=f"{label}: {key}")


def assert_weights_close(ours, theirs, start, label):
    """Each weight within 1e-5 of its largest change from `start`, plus float32 rounding."""
    for i, (w0, got, want) in enumerate(zip(start, ours.get_weights(), theirs.get_weights())):
        change = np.abs(want.astype(np.float64) - w0).max()
        assert change > 0, f"{label}: weight {i} did not move"
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * change + 1e-6,
                                   err_msg=f"{label}: weight {i}")


@pytest.mark.parametrize("head", HEADS)
def test_one_sgd_step_with_each_loss_is_keras(head):
    ours, theirs, x, y = twins(head, n=8)
    assert_one_sgd_step_as_keras(ours, theirs, x, y, head, loss=HEADS[head][2])


CLASS_HEADS = ["bce_sigmoid", "bce_logits", "cce_smooth", "scce"]
METRICS = {"regression": ["mae", "accuracy"], "binary01": ["acc", "binary_accuracy", "mse"],
           "binary": ["accuracy", "mae"], "categorical": ["accuracy", "mean_squared_error"],
           "sparse": ["accuracy", "sparse_categorical_accuracy"]}


def fit_both(head, weighting, epochs=3):
    ours, theirs, x, y = twins(head)
    rng = np.random.default_rng(5)
    kwargs = {}
    if weighting == "sample_weight":
        w = rng.uniform(0, 2, len(x))
        w[3] = 0.0
        kwargs["sample_weight"] = w
    elif weighting == "class_weight":
        kwargs["class_weight"] = {0: 0.25, 1: 3.0}   # class 2, when there is one, weighs 1
    metrics = METRICS[HEADS[head][3]]
    extra = [] if HEADS[head][3] == "sparse" else ["mse"]  # Keras: no mse on sparse labels
    compile_both(ours, theirs, head, metrics=metrics, weighted_metrics=metrics[:1] + extra)
    start = ours.get_weights()
    xv, yv = x[:7] * 0.5, y[:7]
    wv = rng.uniform(0, 3, len(xv))
    common = dict(batch_size=8, epochs=epochs, shuffle=False, verbose=0,
                  validation_data=(xv, yv, wv), **kwargs)
    got = ours.fit(x, y, **common).history
    want = theirs.fit(x, y, **common).history
    return ours, theirs, start, got, want


@pytest.mark.parametrize("head,weighting", [(h, "sample_weight") for h in HEADS]
                         + [(h, "class_weight") for h in CLASS_HEADS])
def test_weighted_fit_is_keras(head, weighting):
    """Three epochs of SGD over 20 samples in batches of 8 (the last one short), with
    weights and weighted validation data: the same weights (1e-5 of their change) and
    the same logs, plain and weighted metrics, under Keras's names (rtol 1e-5)."""
    ours, theirs, start, got, want = fit_both(head, weighting)
    label = f"{head}, {weighting}"
    assert_logs_close({k: np.array(v) for k, v in got.items()},
                      {k: np.array(v) for k, v in want.items()}, label)
    assert_weights_close(ours, theirs, start, label)


@pytest.mark.parametrize("head", HEADS)
def test_evaluate_with_sample_weight_is_keras(head):
    ours, theirs, x, y = twins(head, n=37, seed=3)
    metrics = METRICS[HEADS[head][3]]
    # Keras cannot take mae against sparse labels
    extra = [] if HEADS[head][3] == "sparse" else ["mae"]
    compile_both(ours, theirs, head, metrics=metrics, weighted_metrics=metrics + extra)
    w = np.random.default_rng(9).uniform(0, 4, len(x))
    for sample_weight in (None, w):
        got = ours.evaluate(x, y, sample_weight=sample_weight, batch_size=8, verbose=0,
                            return_dict=True)
        want = theirs.evaluate(x, y, sample_weight=sample_weight, batch_size=8, verbose=0,
                               return_dict=True)
        assert_logs_close(got, want, f"{head}, weights {sample_weight is not None}")


def test_class_weight_is_per_sample_weights_by_class():
    """class_weight gives the fit of the same sample_weight: by the label (sparse), the
    argmax of a one-hot row, a binary label rounded; missing classes weigh 1."""
    for head, cw in [("scce", {0: 0.5, 2: 4.0}), ("cce_smooth", {1: 2.5, 2: 0.0}),
                     ("bce_sigmoid", {0: 3.0, 1: 0.5})]:
        fits = []
        for weighting in ("class", "sample"):
            ours, _, x, y = twins(head)
            labels = np.asarray(y).argmax(axis=1) if np.ndim(y) == 2 else np.asarray(y)
            ours.compile(optimizer=cconv.optimizers.SGD(0.1), loss=HEADS[head][2](losses))
            kwargs = ({"class_weight": cw} if weighting == "class" else
                      {"sample_weight": np.array([cw.get(int(c), 1.0) for c in labels])})
            h = ours.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, **kwargs)
            fits.append((h.history["loss"], ours.get_weights()))
        assert fits[0][0] == fits[1][0], head
        assert all(np.array_equal(a, b) for a, b in zip(fits[0][1], fits[1][1])), head


def test_weights_reduce_over_the_sample_count():
    """sum(w * loss) / N, as Keras's "sum_over_batch_size", not / sum(w); plain metrics
    unweighted, weighted ones sum(w * value) / sum(w)."""
    ours, _, x, y = twins("mse", n=10)
    ours.compile(loss="mse", metrics=["mae"], weighted_metrics=["mae"])
    out = ours.predict(x, verbose=0).astype(np.float64)
    w = np.linspace(0, 3, len(x))
    per_sample = ((out - y) ** 2).mean(axis=1)
    abs_err = np.abs(out - y).mean(axis=1)
    logs = ours.evaluate(x, y, sample_weight=w, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["loss"], (w * per_sample).sum() / len(x), rtol=1e-6)
    np.testing.assert_allclose(logs["mae"], abs_err.mean(), rtol=1e-6)
    np.testing.assert_allclose(logs["weighted_mae"], (w * abs_err).sum() / w.sum(), rtol=1e-6)


def test_sample_weight_scales_the_step():
    """Weights 2 everywhere make the SGD step of weights 1 twice as long; weights 0
    leave the model where it was."""
    steps = []
    for scale in (1.0, 2.0, 0.0):
        ours, _, x, y = twins("bce_sigmoid", n=8)
        start = ours.get_weights()
        ours.compile(optimizer=cconv.optimizers.SGD(0.1), loss="binary_crossentropy")
        ours.fit(x, y, batch_size=8, shuffle=False, verbose=0,
                 sample_weight=np.full(len(x), scale))
        steps.append([a.astype(np.float64) - b for a, b in zip(ours.get_weights(), start)])
    for one, two, zero in zip(*steps):
        np.testing.assert_allclose(two, 2 * one, rtol=1e-4, atol=1e-7)
        assert not zero.any()


# ---- the folded sigmoid against Keras's clipped probabilities ------------------------
def test_folded_sigmoid_where_it_differs_from_keras():
    """A sigmoid folded into binary cross-entropy reads the logits: inside Keras's clip
    (p in [1e-7, 1 - 1e-7]) the loss is Keras's up to rounding; beyond it Keras's loss
    stops at -log(1e-7) (about 16.1) with a zero gradient, cconv's goes on (|z| for a
    confident wrong answer) with gradient p - y."""
    model = cconv.Sequential([layers.Input((1,)), layers.Dense(1, activation="sigmoid")],
                             dtype="float64")
    model.compile(loss="binary_crossentropy")
    model.set_weights([np.ones((1, 1)), np.zeros(1)])
    theirs = keras.losses.BinaryCrossentropy(dtype="float64")
    z = np.array([[-3.0], [0.5], [10.0], [30.0]])
    y = np.zeros((4, 1))
    losses_, _, (grad,), _, _ = model._loss_and_grad([y], [z], None, False, None)
    keras_losses = [float(theirs(y[i:i + 1], 1 / (1 + np.exp(-z[i:i + 1])))) for i in range(4)]
    np.testing.assert_allclose(losses_[:3], keras_losses[:3], rtol=1e-7)  # see TOL
    np.testing.assert_allclose(keras_losses[3], -np.log(1e-7), rtol=1e-6)
    np.testing.assert_allclose(losses_[3], 30.0, rtol=1e-12)
    np.testing.assert_allclose(grad[3, 0], 1 / 4, rtol=1e-12)  # (p - y) / N, p = 1


# ---- compile configs in .keras files, both ways ---------------------------------------
COMPILES = {
    "names": dict(loss="mse", metrics=["mae", "acc"], weighted_metrics=["mse"]),
    "objects": dict(loss=lambda L: L.BinaryCrossentropy(from_logits=True,
                                                        label_smoothing=0.25),
                    metrics=["binary_accuracy", "mean_absolute_error"]),
    "smoothing": dict(loss=lambda L: L.CategoricalCrossentropy(label_smoothing=0.1),
                      metrics=["accuracy"], weighted_metrics=["categorical_accuracy", "mae"]),
}


def _compile(model, module, optimizer, spec):
    spec = {k: v(module) if callable(v) else v for k, v in spec.items()}
    model.compile(optimizer=optimizer, **spec)


def _keys(config):
    return {k: config[k] for k in ("loss", "metrics", "weighted_metrics")}


@pytest.mark.parametrize("spec", COMPILES)
def test_compile_config_crosses_both_ways(spec, tmp_path):
    ours, theirs, x, y = twins("bce_sigmoid_multi" if spec != "smoothing" else "cce_smooth")
    _compile(ours, cconv.losses, cconv.optimizers.SGD(0.1), COMPILES[spec])
    _compile(theirs, keras.losses, keras.optimizers.SGD(0.1), COMPILES[spec])
    want = _keys(theirs.get_compile_config())
    assert _keys(cconv.saving.compile_config(ours)) == want
    ours.save(tmp_path / "ours.keras")
    loaded = keras.models.load_model(tmp_path / "ours.keras")
    assert _keys(loaded.get_compile_config()) == want
    assert_logs_close(ours.evaluate(x, y, verbose=0, return_dict=True),
                      loaded.evaluate(x, y, verbose=0, return_dict=True), spec)
    theirs.save(tmp_path / "theirs.keras")
    back = cconv.models.load_model(tmp_path / "theirs.keras")
    assert _keys(cconv.saving.compile_config(back)) == want
    assert back.loss.get_config() == ours.loss.get_config()
    assert_logs_close(back.evaluate(x, y, verbose=0, return_dict=True),
                      theirs.evaluate(x, y, verbose=0, return_dict=True), spec)


def test_loss_configs_are_keras():
    for name, cls in losses.LOSSES.items():
        for kwargs in ({}, {"from_logits": True, "label_smoothing": 0.2}):
            if kwargs and "label_smoothing" not in cls.__init__.__code__.co_varnames:
                continue
            theirs = getattr(keras.losses, name)(**kwargs)
            ours = cls(**kwargs)
            assert ours.get_config() == theirs.get_config(), name
            assert losses.serialize(ours) == keras.saving.serialize_keras_object(theirs)
            assert losses.deserialize(losses.serialize(ours)).get_config() == ours.get_config()
    for alias in ("mse", "mae", "bce", "mean_squared_error", "binary_crossentropy"):
        assert type(losses.get(alias)).__name__ == type(keras.losses.get(alias)).__name__ \
            or keras.losses.get(alias).__name__ == losses.get(alias).name


# ---- bad input ------------------------------------------------------------------------
def _model(head):
    ours, _, x, y = twins(head, n=6)
    ours.compile(loss=HEADS[head][2](losses))
    return ours, x, y


@pytest.mark.parametrize("head,call,match", [
    ("mse", lambda m, x, y: m.fit(x, y[:, :1], verbose=0), r"y: mean_squared_error expects "
     r"targets of the model's output shape \(6, 2\), got shape \(6, 1\)"),
    ("bce_sigmoid", lambda m, x, y: m.fit(x, y + 1, verbose=0), r"labels in \[0, 1\]"),
    ("bce_sigmoid", lambda m, x, y: m.fit(x, np.stack([y, y], 1), verbose=0),
     r"\(N,\) or \(N, 1\)"),
    ("mse", lambda m, x, y: m.fit(x, np.where(y > 0, np.nan, y), verbose=0), "NaN"),
    ("scce", lambda m, x, y: m.fit(x, y, class_weight={0: 1}, sample_weight=np.ones(6)),
     "class_weight and sample_weight"),
    ("scce", lambda m, x, y: m.fit(x, y, class_weight={"0": 1}), "class_weight: keys"),
    ("scce", lambda m, x, y: m.fit(x, y, class_weight={0: np.inf}), "class_weight"),
    ("mse", lambda m, x, y: m.fit(x, y, class_weight={0: 2.0}, verbose=0), None),
    ("mse", lambda m, x, y: m.evaluate(x, y, sample_weight=np.ones(5)),
     r"sample_weight: expected one weight per sample, shape \(6,\)"),
    ("mse", lambda m, x, y: m.evaluate(x, y, sample_weight=[1, 2, 3, "a", 5, 6]),
     "sample_weight"),
    ("mse", lambda m, x, y: m.fit(x, y, validation_data=(x, y, np.ones(3))),
     r"validation_data\[2\]"),
    ("mse", lambda m, x, y: m.compile(metrics="mae"), "metrics: expected a list"),
    ("mse", lambda m, x, y: losses.BinaryCrossentropy(label_smoothing=1.5), "label_smoothing"),
    ("mse", lambda m, x, y: losses.MeanSquaredError(reduction="sum"), "reduction"),
    ("mse", lambda m, x, y: losses.BinaryCrossentropy(axis=1), "axis"),
])
def test_bad_targets_and_weights_are_named(head, call, match):
    model, x, y = _model(head)
    before = model.get_weights()
    if match is None:   # a regression target rounded to a class, as Keras does: it runs
        call(model, x, y)
        return
    with pytest.raises((TypeError, ValueError), match=match):
        call(model, x, y)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_sample_weight_on_a_rank3_output_is_refused():
    model = cconv.Sequential([layers.Input((3, 4)), layers.Dense(2)])
    model.compile(loss="mse")
    x, y = np.ones((5, 3, 4)), np.zeros((5, 3, 2))
    model.fit(x, y, verbose=0)   # unweighted, any rank
    with pytest.raises(ValueError, match=r"sample_weight: per-sample weights need an "
                                         r"output of shape \(N, d\)"):
        model.fit(x, y, sample_weight=np.ones(5), verbose=0)


def test_weighted_fit_same_bits_on_one_and_two_threads(threads):
    """Weights, folded sigmoid and metrics add nothing that depends on the thread count."""
    runs = []
    for n in (1, 2):
        cconv.set_num_threads(n)
        cconv.utils.set_random_seed(3)
        model = cconv.Sequential([layers.Input((8, 8, 2)),
                                  layers.Conv2D(4, 3, activation="relu"), layers.Flatten(),
                                  layers.Dense(3, activation="sigmoid")])
        model.compile(optimizer=cconv.optimizers.SGD(0.1),
                      loss=cconv.losses.BinaryCrossentropy(label_smoothing=0.1),
                      metrics=["accuracy"], weighted_metrics=["mae"])
        rng = np.random.default_rng(4)
        x, y = rng.standard_normal((40, 8, 8, 2)), rng.integers(0, 2, (40, 3))
        h = model.fit(x, y, batch_size=16, epochs=2, verbose=0, seed=2,
                      sample_weight=rng.uniform(0, 2, 40), validation_split=0.25)
        runs.append((h.history, model.get_weights()))
    assert runs[0][0] == runs[1][0]
    assert all(np.array_equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))


def test_mae_gradient_at_a_tie_is_zero():
    """|out - y| has no derivative where out == y: cconv takes 0 there (TensorFlow's
    choice; Keras on JAX takes -1), elsewhere sign(out - y) / elements."""
    out, y = np.array([[1.0, 2.0, 3.0, -1.0]]), np.array([[1.0, 1.5, 3.5, -1.0]])
    _, grad = losses.MeanAbsoluteError().per_sample(y, out, False)
    np.testing.assert_array_equal(grad, [[0.0, 0.25, -0.25, 0.0]])
