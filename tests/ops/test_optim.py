"""adam_update (cconv/ops/optim.py) and cconv.optimizers.Adam against Keras's Adam
written out in float64; the same bits on 1 and 2 threads; bad input named."""
import numpy as np
import pytest

import cconv
from cconv import ops, oracle
from conftest import DTYPES, keras_adam


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
