"""The optimizer kernels (cconv/ops/optim.py: adam_update, sgd_update, rmsprop_update):
Adam against Keras's Adam written out in float64; each update, every variant, against
its oracle twin (the same arithmetic in NumPy, so the same bits); the same bits on 1
and 2 threads and at every CPU level; bad input named. The optimizers themselves are
tested against Keras in tests/test_keras_optimizers.py."""

import numpy as np
import pytest

import cconv
from cconv import ops, oracle
from conftest import DTYPES, assert_same_bits_at_every_level, keras_adam


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("module", [ops, oracle])
@pytest.mark.parametrize("size", [1, 37, 4096, 10_001])
def test_adam_update_is_keras(rng, dtype, module, size):
    w0 = rng.standard_normal(size).astype(dtype)
    grads = [(rng.standard_normal(size) * 10.0 ** rng.integers(-8, 2)).astype(dtype)
             for _ in range(6)]
    hyper = dict(learning_rate=0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-6)
    w, m, v = w0.copy(), np.zeros_like(w0), np.zeros_like(w0)
    for t, g in enumerate(grads, start=1):
        module.adam_update(w, g, m, v, t, **hyper)
    want = keras_adam(w0, [g.astype(np.float64) for g in grads], *hyper.values())
    # A step moves w by at most about learning_rate; float32 rounds that to ~1e-7.
    atol = {np.float32: 2e-6, np.float64: 1e-13}[dtype]
    np.testing.assert_allclose(w, want, rtol=0, atol=atol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_with_tiny_gradients(dtype):
    """float32 gradients below ~1e-18 make v subnormal; a fast-math vector sqrt returned
    NaN there (seen on MNIST after one step). Tiny steps must stay tiny, and exact zeros
    must leave the weights alone."""
    g = np.tile(np.array([0.0, 1e-19, -3e-25, 1e-30, 1e-44, 2e-3], dtype), 700)
    w = np.ones_like(g)
    m, v = np.zeros_like(g), np.zeros_like(g)
    for t in (1, 2, 3):
        ops.adam_update(w, g, m, v, t)
    want = keras_adam(np.ones_like(g), [g.astype(np.float64)] * 3, 0.001, 0.9, 0.999, 1e-7)
    assert np.isfinite(w).all() and np.isfinite(v).all()
    np.testing.assert_allclose(w, want, rtol=0, atol=1e-7)
    assert (w[g == 0] == 1).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_optimizer_is_keras(rng, dtype):
    params = [rng.standard_normal(s).astype(dtype) for s in [(3, 4), (4,), (2, 2, 2, 5)]]
    start = [p.copy() for p in params]
    opt = cconv.optimizers.Adam(learning_rate=0.003)
    history = [[] for _ in params]
    for _ in range(4):
        grads = [rng.standard_normal(p.shape).astype(dtype) for p in params]
        for h, g in zip(history, grads):
            h.append(g.astype(np.float64))
        opt.update(params, grads)
    assert opt.iterations == 4
    for p, p0, gs in zip(params, start, history):
        want = keras_adam(p0, gs, 0.003, 0.9, 0.999, 1e-7)
        np.testing.assert_allclose(p, want, rtol=0, atol={np.float32: 2e-6,
                                                          np.float64: 1e-13}[dtype])
    assert isinstance(cconv.optimizers.get("adam"), cconv.optimizers.Adam)
    assert isinstance(cconv.optimizers.get("Adam"), cconv.optimizers.Adam)


def test_same_bits_on_one_and_two_threads(rng, threads):
    p = rng.standard_normal(300_001).astype(np.float32)
    g = rng.standard_normal(p.size).astype(np.float32)
    results = []
    for n in (1, 2):
        cconv.set_num_threads(n)
        w, m, v = p.copy(), np.zeros_like(p), np.zeros_like(p)
        for t in (1, 2):
            ops.adam_update(w, g, m, v, t)
        results.append([w, m, v])
    for a, b in zip(*results):
        assert np.array_equal(a, b)


def _adam(**changes):
    p = np.zeros(4)
    args = dict(param=p, grad=np.zeros(4), m=np.zeros(4), v=np.zeros(4), step=1)
    args.update(changes)
    return lambda: ops.adam_update(**args)


@pytest.mark.parametrize("call, error, match", [
    (_adam(m=np.zeros(5)), ValueError, "m: expected shape"),
    (_adam(v=np.zeros(4, np.float32)), ValueError, "v: expected shape"),
    (_adam(grad=np.zeros(3)), ValueError, "grad: expected shape"),
    (_adam(param=np.zeros(8)[::2]), ValueError, "param: expected a writeable, C-contiguous"),
    (_adam(param=[0.0, 0, 0, 0]), TypeError, "param: expected a numpy array"),
    (_adam(param=np.zeros(4, int)), TypeError, "param: expected dtype"),
    (_adam(step=0), ValueError, "step: expected an int >= 1"),
    (_adam(learning_rate=-1.0), ValueError, "learning_rate"),
    (_adam(beta_1=1.0), ValueError, r"beta_1: expected a float in \[0.0, 1.0\)"),
    (_adam(beta_2=-0.1), ValueError, "beta_2"),
    (_adam(epsilon=0), ValueError, "epsilon"),
    (_adam(epsilon="1e-7"), TypeError, "epsilon: expected a float"),
])
def test_bad_adam_input_is_named(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_adam_rejects_aliased_state():
    p = np.zeros(4)
    with pytest.raises(ValueError, match="m: must not share memory with param"):
        ops.adam_update(p, np.zeros(4), p, np.zeros(4), 1)
    v = np.zeros(4)
    with pytest.raises(ValueError, match="v: must not share memory with m"):
        ops.adam_update(np.zeros(4), np.zeros(4), v, v, 1)


def test_adam_refuses_weights_of_another_shape():
    opt = cconv.optimizers.Adam()
    opt.update([np.zeros(3)], [np.ones(3)])
    with pytest.raises(ValueError, match="changed shape"):
        opt.update([np.zeros(4)], [np.ones(4)])


# ---- every variant against its oracle twin ------------------------------------------
# (op name, slots it keeps, keyword arguments); the oracle does the same float
# operations in the same order, so the kernel must give its bits exactly
VARIANTS = {
    "sgd": ("sgd_update", [], dict(learning_rate=0.1)),
    "sgd_momentum": ("sgd_update", ["momentums"], dict(learning_rate=0.1, momentum=0.9)),
    "sgd_nesterov": ("sgd_update", ["momentums"], dict(learning_rate=0.1, momentum=0.9,
                                                         nesterov=True)),
    "rmsprop": ("rmsprop_update", ["velocity"], dict(learning_rate=0.01, rho=0.8)),
    "rmsprop_momentum": ("rmsprop_update", ["velocity", "momentums"],
                         dict(learning_rate=0.01, rho=0.7, momentum=0.5)),
    "rmsprop_centered": ("rmsprop_update", ["velocity", "average_gradient"],
                         dict(learning_rate=0.01, centered=True, epsilon=1e-3)),
    "rmsprop_centered_momentum": ("rmsprop_update",
                                  ["velocity", "momentums", "average_gradient"],
                                  dict(learning_rate=0.01, momentum=0.9, centered=True)),
    "adam_amsgrad": ("adam_update", ["m", "v", "v_hat"], dict(learning_rate=0.01,
                                                               beta_2=0.9, amsgrad=True)),
}


def run_variant(module, name, w, grads):
    """w after len(grads) updates of the variant, and its slots."""
    op, slot_names, kwargs = VARIANTS[name]
    slots = {n: np.zeros_like(w) for n in slot_names}
    for t, g in enumerate(grads, start=1):
        step = (t,) if op == "adam_update" else ()
        if op == "adam_update":
            getattr(module, op)(w, g, slots["m"], slots["v"], *step, v_hat=slots["v_hat"],
                                **kwargs)
        else:
            getattr(module, op)(w, g, **slots, **kwargs)
    return [w, *slots.values()]


def shrinking_grads(rng, size, dtype, steps=5):
    """Gradients that shrink after the first steps, so that amsgrad's maximum is not v."""
    return [(rng.standard_normal(size) * k).astype(dtype) for k in (3.0, 1.0, 0.5, 0.2, 0.1)
            ][:steps]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [1, 37, 4096, 10_001])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_update_is_its_oracle_twin(rng, dtype, size, name):
    w0 = rng.standard_normal(size).astype(dtype)
    grads = shrinking_grads(rng, size, dtype)
    got = run_variant(ops, name, w0.copy(), grads)
    want = run_variant(oracle, name, w0.copy(), grads)
    assert not np.array_equal(got[0], w0), "nothing moved: the test compares nothing"
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.dtype == b.dtype and np.array_equal(a, b), f"{name}: array {i}"


@pytest.mark.parametrize("name", list(VARIANTS))
def test_updates_same_bits_on_one_and_two_threads(rng, threads, name):
    w0 = rng.standard_normal(50_001).astype(np.float32)
    grads = shrinking_grads(rng, w0.size, np.float32, steps=3)
    results = []
    for n in (1, 2):
        cconv.set_num_threads(n)
        results.append(run_variant(ops, name, w0.copy(), grads))
    for a, b in zip(*results):
        assert np.array_equal(a, b)


LEVEL_SCRIPT = """
import sys
import numpy as np
sys.path[:0] = [sys.argv[2], sys.argv[3]]  # tests/ops and tests
from test_optim import VARIANTS, run_variant, shrinking_grads
from cconv import ops
out = {}
for dtype in (np.float32, np.float64):
    for name in VARIANTS:
        rng = np.random.default_rng(3)
        w = rng.standard_normal(4099).astype(dtype)
        for i, a in enumerate(run_variant(ops, name, w, shrinking_grads(rng, w.size, dtype))):
            out[f"{name}.{np.dtype(dtype).name}.{i}"] = a
np.savez(sys.argv[1], **out)
"""


def test_updates_same_bits_at_every_level(tmp_path):
    """No fma and IEEE division and square root: every level's vectors and scalar tail
    give the same bits, the x86-64 default's included."""
    assert_same_bits_at_every_level(tmp_path, LEVEL_SCRIPT)


def _sgd(**changes):
    args = dict(param=np.zeros(4), grad=np.zeros(4), momentums=np.zeros(4), momentum=0.9)
    args.update(changes)
    return lambda: ops.sgd_update(**args)


def _rms(**changes):
    args = dict(param=np.zeros(4), grad=np.zeros(4), velocity=np.zeros(4))
    args.update(changes)
    return lambda: ops.rmsprop_update(**args)


@pytest.mark.parametrize("call, error, match", [
    (_sgd(momentums=None), ValueError, "momentums: expected an array exactly when"),
    (_sgd(momentum=0.0), ValueError, "momentums: expected an array exactly when"),
    (_sgd(momentum=1.0), ValueError, r"momentum: expected a float in \[0.0, 1.0\)"),
    (_sgd(momentums=np.zeros(5)), ValueError, "momentums: expected shape"),
    (_sgd(momentums=np.zeros(4, np.float32)), ValueError, "momentums: expected shape"),
    (_sgd(grad=np.zeros(3)), ValueError, "grad: expected shape"),
    (_sgd(nesterov=1), TypeError, "nesterov: expected a bool"),
    (_sgd(learning_rate=-0.1), ValueError, "learning_rate"),
    (_sgd(param=np.zeros(8)[::2]), ValueError, "param: expected a writeable, C-contiguous"),
    (_rms(velocity=None), TypeError, "velocity: expected a numpy array"),
    (_rms(velocity=np.zeros(3)), ValueError, "velocity: expected shape"),
    (_rms(momentums=np.zeros(4)), ValueError, "momentums: expected an array exactly when"),
    (_rms(centered=True), ValueError, "average_gradient: expected an array exactly when"),
    (_rms(average_gradient=np.zeros(4)), ValueError, "average_gradient: expected an array"),
    (_rms(rho=1.0), ValueError, "rho"),
    (_rms(epsilon=0.0), ValueError, "epsilon"),
    (_rms(centered="no"), TypeError, "centered: expected a bool"),
    (_adam(amsgrad=True), ValueError, "v_hat: expected an array exactly when amsgrad"),
    (_adam(v_hat=np.zeros(4)), ValueError, "v_hat: expected an array exactly when amsgrad"),
    (_adam(amsgrad=True, v_hat=np.zeros(3)), ValueError, "v_hat: expected shape"),
])
def test_bad_update_input_is_named(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_updates_reject_aliased_slots():
    p, s = np.zeros(4), np.zeros(4)
    with pytest.raises(ValueError, match="momentums: must not share memory with param"):
        ops.sgd_update(p, np.zeros(4), p, momentum=0.5)
    with pytest.raises(ValueError, match="average_gradient: must not share memory with velocity"):
        ops.rmsprop_update(p, np.zeros(4), s, average_gradient=s, centered=True)
    with pytest.raises(ValueError, match="v_hat: must not share memory with v"):
        ops.adam_update(p, np.zeros(4), np.zeros(4), s, 1, amsgrad=True, v_hat=s)


def test_adam_amsgrad_optimizer_keeps_the_largest_v(rng):
    """cconv.optimizers.Adam(amsgrad=True) over shrinking gradients against Keras's
    amsgrad written out in float64: v_hat, the largest v so far, replaces v."""
    w0 = rng.standard_normal(40)
    grads = shrinking_grads(rng, 40, np.float64)
    opt = cconv.optimizers.Adam(learning_rate=0.01, beta_2=0.9, amsgrad=True)
    w = w0.copy()
    for g in grads:
        opt.update([w], [g])
    want, m, v, v_hat = w0.copy(), 0.0, 0.0, 0.0
    for t, g in enumerate(grads, start=1):
        m = 0.9 * m + 0.1 * g
        v = 0.9 * v + 0.1 * g * g
        v_hat = np.maximum(v_hat, v)
        want -= 0.01 * np.sqrt(1 - 0.9 ** t) / (1 - 0.9 ** t) * m / (np.sqrt(v_hat) + 1e-7)
    assert (v_hat > v).any(), "v never shrank: amsgrad changes nothing here"
    np.testing.assert_allclose(w, want, rtol=0, atol=1e-13)
    np.testing.assert_allclose(opt.slots([w])[2], v_hat, rtol=1e-13)
