"""cconv's optimizers against Keras 3's own (KERAS_BACKEND=jax): every optimizer and
option over 10 updates of the same weights and gradients, the schedules at many steps,
configs both ways, and .keras files both ways with the optimizer's slots, training on
identically. Skipped, saying so, when Keras is absent."""
import inspect
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_ENABLE_X64", "1")  # else jax computes float64 models in float32
from zoo import need  # noqa: E402

need("h5py", "h5")
keras = need("keras", "interop")

import cconv  # noqa: E402
from cconv.layers import Conv2D, Dense, Flatten, Input  # noqa: E402

SCHEDULES = {
    "exponential": ("ExponentialDecay", dict(initial_learning_rate=0.1, decay_steps=3,
                                             decay_rate=0.5)),
    "exponential_staircase": ("ExponentialDecay", dict(initial_learning_rate=0.05,
                                                       decay_steps=4, decay_rate=0.7,
                                                       staircase=True)),
    "piecewise": ("PiecewiseConstantDecay", dict(boundaries=[2, 5], values=[0.1, 0.05, 0.01])),
    "cosine": ("CosineDecay", dict(initial_learning_rate=0.1, decay_steps=8, alpha=0.1)),
    "cosine_warmup": ("CosineDecay", dict(initial_learning_rate=0.0, decay_steps=6,
                                          warmup_target=0.05, warmup_steps=4)),
    "cosine_target_no_warmup": ("CosineDecay", dict(initial_learning_rate=0.1, decay_steps=10,
                                                    warmup_target=0.2)),
}


def schedule(module, name):
    cls, kwargs = SCHEDULES[name]
    return getattr(module.optimizers.schedules, cls)(**kwargs)


# (optimizer class, its arguments); "schedule" names a learning_rate from SCHEDULES
CASES = {
    "sgd": ("SGD", dict(learning_rate=0.05)),
    "sgd_momentum": ("SGD", dict(learning_rate=0.05, momentum=0.9)),
    "sgd_nesterov": ("SGD", dict(learning_rate=0.05, momentum=0.9, nesterov=True)),
    "rmsprop": ("RMSprop", dict(learning_rate=0.01)),
    "rmsprop_rho_momentum": ("RMSprop", dict(learning_rate=0.01, rho=0.7, momentum=0.5)),
    "rmsprop_centered": ("RMSprop", dict(learning_rate=0.01, centered=True)),
    "rmsprop_centered_momentum": ("RMSprop", dict(learning_rate=0.005, rho=0.8,
                                                  momentum=0.9, centered=True, epsilon=1e-4)),
    "adam": ("Adam", dict(learning_rate=0.01)),
    "adam_amsgrad": ("Adam", dict(learning_rate=0.01, beta_2=0.9, amsgrad=True)),
    "adamw": ("AdamW", dict(learning_rate=0.01)),
    "adamw_amsgrad": ("AdamW", dict(learning_rate=0.02, weight_decay=0.1, amsgrad=True)),
    "sgd_weight_decay": ("SGD", dict(learning_rate=0.05, momentum=0.5, weight_decay=0.2)),
    "rmsprop_weight_decay": ("RMSprop", dict(learning_rate=0.01, weight_decay=0.3)),
    "adam_clipnorm": ("Adam", dict(learning_rate=0.01, clipnorm=0.5)),
    "sgd_clipnorm": ("SGD", dict(learning_rate=0.1, clipnorm=1.5)),
    "sgd_clipvalue": ("SGD", dict(learning_rate=0.1, clipvalue=0.3)),
    "rmsprop_global_clipnorm": ("RMSprop", dict(learning_rate=0.01, momentum=0.5,
                                                global_clipnorm=1.0)),
    "sgd_global_clipnorm": ("SGD", dict(learning_rate=0.1, momentum=0.9, global_clipnorm=2.0)),
    "sgd_exponential": ("SGD", dict(learning_rate="exponential", momentum=0.9)),
    "sgd_staircase": ("SGD", dict(learning_rate="exponential_staircase")),
    "rmsprop_piecewise": ("RMSprop", dict(learning_rate="piecewise")),
    "adam_cosine": ("Adam", dict(learning_rate="cosine")),
    "adamw_cosine_warmup": ("AdamW", dict(learning_rate="cosine_warmup", weight_decay=0.5)),
}
SHAPES = [(5, 7), (37,), (2, 3, 5)]  # vectors and scalar tails at every level
STEPS = 10


def assert_close(got, want, start, label):
    """Keras keeps float32 weights, slots and learning rate; cconv's float64 differs
    from them by float32's rounding over the steps, and its float32 by the same plus the
    order of a few roundings (clipping norms, alpha, the schedule): each value within
    2e-5 relative plus 1e-5 of the largest change from start (Adam's m / sqrt(v) passes
    on its inputs' relative error as a share of each step)."""
    change = max(np.abs(w.astype(np.float64) - s).max() for w, s in zip(want, start))
    assert change > 1e-3, f"{label}: nothing moved: the test compares nothing"
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=1e-5 * change + 1e-7,
                                   err_msg=f"{label} {i}")


def make(module, case):
    cls, kwargs = CASES[case]
    kwargs = dict(kwargs)
    if isinstance(kwargs["learning_rate"], str):
        kwargs["learning_rate"] = schedule(module, kwargs["learning_rate"])
    return getattr(module.optimizers, cls)(**kwargs)


def gradients(rng):
    """STEPS lists of gradients, shrinking after the first steps (so that amsgrad's
    maximum differs from v) and large enough for the clipping options to bite."""
    scales = [3.0, 2.0, 2.5, 1.0, 0.5, 0.3, 0.2, 0.2, 0.1, 0.05]
    return [[(rng.standard_normal(s) * k).astype(np.float32) for s in SHAPES] for k in scales]


def keras_run(case, start, grads):
    """Keras's weights, its slot variables and its learning rate before each update."""
    opt = make(keras, case)
    variables = [keras.Variable(w) for w in start]
    opt.build(variables)
    rates = []
    for gs in grads:
        rates.append(float(np.asarray(opt.learning_rate)))
        opt.apply([keras.ops.convert_to_tensor(g) for g in gs], variables)
    n_scalars = 1 if isinstance(opt._learning_rate,
                                keras.optimizers.schedules.LearningRateSchedule) else 2
    return ([np.asarray(v) for v in variables],
            [np.asarray(v) for v in opt.variables[n_scalars:]], rates)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", list(CASES))
def test_ten_updates_are_keras(case, dtype):
    rng = np.random.default_rng(list(CASES).index(case))
    start = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    grads = gradients(rng)
    want, want_slots, want_rates = keras_run(case, start, grads)
    opt = make(cconv, case)
    params = [w.astype(dtype) for w in start]
    rates = []
    for gs in grads:
        rates.append(opt.learning_rate)
        opt.update(params, [g.astype(dtype) for g in gs])
    assert opt.iterations == STEPS
    np.testing.assert_allclose(rates, want_rates, rtol=1e-6)
    assert_close(params, want, start, f"{case}: weight")
    slots = opt.slots(params)
    assert len(slots) == len(want_slots)
    if want_slots:
        assert_close(slots, want_slots, [np.zeros_like(w) for w in want_slots],
                     f"{case}: slot")


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedules_are_keras_at_many_steps(name):
    ours, theirs = schedule(cconv, name), schedule(keras, name)
    steps = list(range(0, 40)) + [57, 100, 1000, 10**6]
    got = [ours(s) for s in steps]
    want = [float(np.asarray(theirs(s))) for s in steps]  # Keras computes in float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    assert len(set(got)) > 2, "the schedule never changed: the test compares nothing"


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedule_configs_both_ways(name):
    ours, theirs = schedule(cconv, name), schedule(keras, name)
    written = cconv.optimizers.schedules.serialize(ours)
    assert written == keras.optimizers.schedules.serialize(theirs)
    assert keras.optimizers.schedules.deserialize(written).get_config() == theirs.get_config()
    back = cconv.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(theirs))
    assert type(back) is type(ours) and back.get_config() == ours.get_config()


def _same_config(got, want):
    """Configs equal but for the name (Keras numbers its instances: adam, adam_1, ...)
    and the learning rate, which Keras keeps in float32."""
    got, want = dict(got), dict(want)
    assert want.pop("name").startswith(got.pop("name"))
    lr, their_lr = got.pop("learning_rate"), want.pop("learning_rate")
    if isinstance(lr, dict):
        assert lr == their_lr
    else:
        assert np.float32(lr) == np.float32(their_lr)
    assert got == want


@pytest.mark.parametrize("case", list(CASES))
def test_optimizer_configs_both_ways(case):
    ours, theirs = make(cconv, case), make(keras, case)
    _same_config(ours.get_config(), theirs.get_config())
    from_keras = cconv.optimizers.deserialize(keras.optimizers.serialize(theirs))
    assert type(from_keras) is type(ours)
    _same_config(from_keras.get_config(), theirs.get_config())
    to_keras = keras.optimizers.deserialize(cconv.optimizers.serialize(ours))
    assert type(to_keras) is type(theirs)
    _same_config(ours.get_config(), to_keras.get_config())


def test_learning_rate_reads_and_sets_as_keras():
    for module in (cconv, keras):
        opt = module.optimizers.SGD(0.1)
        opt.learning_rate = 0.25
        assert float(np.asarray(opt.learning_rate)) == 0.25
        scheduled = make(module, "sgd_staircase")
        with pytest.raises(TypeError, match="LearningRateSchedule"):
            scheduled.learning_rate = 0.25
    # cconv's schedule is read at the iteration count, before each update
    opt = make(cconv, "sgd_staircase")
    ours = schedule(cconv, "exponential_staircase")
    for step in range(9):
        assert opt.learning_rate == ours(step)
        opt.update([np.zeros(3)], [np.ones(3)])
    # a new float rate is the next update's
    opt = cconv.optimizers.SGD(0.1)
    opt.learning_rate = 0.5
    w = np.zeros(3)
    opt.update([w], [np.ones(3)])
    assert np.array_equal(w, -0.5 * np.ones(3))


@pytest.mark.parametrize("kwargs", [dict(clipnorm=1.0, clipvalue=1.0),
                                    dict(clipnorm=1.0, global_clipnorm=1.0),
                                    dict(clipvalue=1.0, global_clipnorm=1.0)])
def test_one_clipping_option_at_a_time_as_keras(kwargs):
    for module in (cconv, keras):
        with pytest.raises(ValueError, match="Only one of"):
            module.optimizers.Adam(**kwargs)


@pytest.mark.parametrize("make_bad, named", [
    (lambda: cconv.optimizers.AdamW(weight_decay=None), "weight_decay"),
    (lambda: cconv.optimizers.SGD(nesterov="yes"), "nesterov"),
    (lambda: cconv.optimizers.RMSprop(rho=1.0), "rho"),
    (lambda: cconv.optimizers.RMSprop(centered=1), "centered"),
    (lambda: cconv.optimizers.Adam(amsgrad=None), "amsgrad"),
    (lambda: cconv.optimizers.Adam(clipnorm=-1.0), "clipnorm"),
    (lambda: cconv.optimizers.SGD(weight_decay="0.1"), "weight_decay"),
    (lambda: cconv.optimizers.SGD(use_ema=True), "use_ema"),
    (lambda: cconv.optimizers.schedules.ExponentialDecay(0.1, 0, 0.5), "decay_steps"),
    (lambda: cconv.optimizers.schedules.PiecewiseConstantDecay([1, 2], [0.1]), "boundaries"),
    (lambda: cconv.optimizers.SGD.from_config(
        {"learning_rate": {"class_name": "InverseTimeDecay", "config": {}}}),
     "InverseTimeDecay"),
])
def test_bad_arguments_are_named(make_bad, named):
    with pytest.raises(ValueError, match=named):
        make_bad()


def test_compile_defaults_to_rmsprop_as_keras():
    model = cconv.Sequential([Input((4,)), Dense(2)])
    model.compile(loss="categorical_crossentropy")
    theirs = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    theirs.compile(loss="categorical_crossentropy")
    assert type(model.optimizer).__name__ == type(theirs.optimizer).__name__ == "RMSprop"
    _same_config(model.optimizer.get_config(), theirs.optimizer.get_config())


# ---- .keras files ----------------------------------------------------------------------
FILE_CASES = ["rmsprop_centered_momentum", "sgd_nesterov", "adam_amsgrad", "adamw",
              "sgd_exponential", "adam_clipnorm"]


def _data(n=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 6, 6, 1)).astype(np.float32), rng.integers(0, 4, n)


def _ours():
    cconv.utils.set_random_seed(5)
    return cconv.Sequential([Input((6, 6, 1)), Conv2D(3, 3, activation="tanh"), Flatten(),
                             Dense(4, activation="softmax")])


def _theirs():
    keras.utils.set_random_seed(5)
    return keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(3, 3, activation="tanh"),
                             keras.layers.Flatten(),
                             keras.layers.Dense(4, activation="softmax")])


def _train_on_as_each_other(ours, theirs, x, y):
    """One more update in each engine from the same state: the same weights and slots
    after it (the engines' float32 gradients differ in their last bits: each slot within
    1e-4 of its largest value)."""
    ours.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    theirs.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    for got, want in zip(ours.get_weights(), theirs.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    first = len(ours.optimizer.scalars())
    their_slots = [np.asarray(v) for v in theirs.optimizer.variables[first:]]
    for i, (got, want) in enumerate(zip(ours.optimizer.slots(ours.get_weights()),
                                        their_slots, strict=True)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max(),
                                   err_msg=f"slot {i}")


@pytest.mark.parametrize("case", FILE_CASES)
def test_keras_loads_what_cconv_saves_with_its_slots(tmp_path, case):
    x, y = _data()
    ours = _ours()
    ours.compile(optimizer=make(cconv, case), loss="sparse_categorical_crossentropy")
    ours.fit(x, y, batch_size=6, epochs=2, shuffle=False, verbose=0)
    ours.save(tmp_path / "m.keras")
    theirs = keras.models.load_model(tmp_path / "m.keras")
    assert type(theirs.optimizer).__name__ == type(ours.optimizer).__name__
    assert int(np.asarray(theirs.optimizer.iterations)) == ours.optimizer.iterations == 4
    first = len(ours.optimizer.scalars())
    their_slots = [np.asarray(v) for v in theirs.optimizer.variables[first:]]
    for got, want in zip(their_slots, ours.optimizer.slots(ours.get_weights()), strict=True):
        np.testing.assert_array_equal(got, want)
    _train_on_as_each_other(ours, theirs, x, y)


@pytest.mark.parametrize("case", FILE_CASES)
def test_cconv_loads_what_keras_saves_with_its_slots(tmp_path, case):
    x, y = _data(seed=1)
    theirs = _theirs()
    theirs.compile(optimizer=make(keras, case), loss="sparse_categorical_crossentropy")
    theirs.fit(x, y, batch_size=6, epochs=2, shuffle=False, verbose=0)
    theirs.save(tmp_path / "k.keras")
    ours = cconv.models.load_model(tmp_path / "k.keras")
    assert type(ours.optimizer).__name__ == type(theirs.optimizer).__name__
    assert ours.optimizer.iterations == 4
    first = len(ours.optimizer.scalars())
    their_slots = [np.asarray(v) for v in theirs.optimizer.variables[first:]]
    for got, want in zip(ours.optimizer.slots(ours.get_weights()), their_slots, strict=True):
        np.testing.assert_array_equal(got, want)
    _train_on_as_each_other(ours, theirs, x, y)


@pytest.mark.parametrize("name", ["SGD", "RMSprop", "Adam", "AdamW", "schedules.ExponentialDecay",
                                  "schedules.PiecewiseConstantDecay", "schedules.CosineDecay"])
def test_signatures_are_keras(name):
    def arguments(module):
        cls = module.optimizers
        for part in name.split("."):
            cls = getattr(cls, part)
        return [(p.name, p.default) for p in inspect.signature(cls).parameters.values()
                if p.kind is not p.VAR_KEYWORD]
    assert arguments(cconv) == arguments(keras)
