"""Compiled ops against cconv.oracle, both dtypes, many shapes; 1 vs 2 threads bit-exact."""
import numpy as np
import pytest

import cconv
from cconv import ops, oracle

TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}
DTYPES = [np.float32, np.float64]

CONV_CASES = [  # (N, H, W, C, KH, KW, F)
    (1, 5, 5, 1, 3, 3, 1),
    (3, 7, 5, 2, 3, 4, 5),
    (2, 6, 6, 3, 6, 6, 4),      # kernel as large as the image
    (13, 9, 8, 3, 1, 1, 33),    # 1x1 kernels; F > 16 and not a multiple of 16
    (9, 28, 28, 1, 3, 3, 16),   # chapter 10
    (4, 10, 11, 4, 5, 5, 17),
]


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("activation", [None, "tanh", "relu"])
def test_conv2d(rng, dtype, case, padding, activation):
    n, h, w, c, kh, kw, f = case
    x = rng.standard_normal((n, h, w, c)).astype(dtype)
    k = rng.standard_normal((kh, kw, c, f)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype)
    want = oracle.conv2d(x, k, b, padding)
    want = {None: want, "tanh": oracle.tanh(want), "relu": oracle.relu(want)}[activation]
    got = ops.conv2d(x, k, b, padding, activation)
    assert got.shape == want.shape and got.dtype == dtype
    np.testing.assert_allclose(got, want, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv2d_backward(rng, dtype, case, padding):
    n, h, w, c, kh, kw, f = case
    x = rng.standard_normal((n, h, w, c)).astype(dtype)
    k = rng.standard_normal((kh, kw, c, f)).astype(dtype)
    g = rng.standard_normal(ops.conv_output_shape(x.shape, k.shape, padding)).astype(dtype)
    for got, want in zip(ops.conv2d_backward(x, k, g, padding),
                         oracle.conv2d_backward(x, k, g, padding)):
        np.testing.assert_allclose(got, want, rtol=TOL[dtype]["rtol"],
                                   atol=TOL[dtype]["atol"] * max(1, n * h * w))
    assert ops.conv2d_backward(x, k, g, padding, need_grad_x=False)[0] is None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1,), (7, 3), (4097,), (3, 5000)])
def test_elementwise(rng, dtype, shape):
    x = rng.standard_normal(shape).astype(dtype) * 3
    g = rng.standard_normal(shape).astype(dtype)
    for name in ("tanh", "relu"):
        y = getattr(ops, name)(x)
        np.testing.assert_allclose(y, getattr(oracle, name)(x), **TOL[dtype])
        np.testing.assert_allclose(getattr(ops, name + "_backward")(y, g),
                                   getattr(oracle, name + "_backward")(y, g), **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rate", [0.0, 0.25, 0.5, 0.9])
def test_dropout(rng, dtype, rate):
    x = rng.standard_normal((33, 257)).astype(dtype)
    y, mask = ops.dropout(x, rate, seed=1234)
    assert np.array_equal(mask, oracle.dropout_mask(x.shape, rate, 1234))
    np.testing.assert_allclose(y, oracle.dropout(x, rate, mask=mask)[0], **TOL[dtype])
    assert abs(mask.mean() - (1 - rate)) < 0.02
    g = rng.standard_normal(x.shape).astype(dtype)
    np.testing.assert_allclose(ops.dropout_backward(g, mask, rate),
                               oracle.dropout_backward(g, mask, rate), **TOL[dtype])
    given = rng.integers(0, 2, x.shape)
    np.testing.assert_allclose(ops.dropout(x, rate, mask=given)[0],
                               oracle.dropout(x, rate, mask=given)[0], **TOL[dtype])


def test_dropout_masks_look_independent():
    """Neighbouring elements, neighbouring seeds and blocks of the kernel's work split
    must not share draws: correlations stay within a few standard errors of 0."""
    n = 1 << 20
    a = ops.dropout_mask((n,), 0.5, 7).astype(np.float64)
    b = ops.dropout_mask((n,), 0.5, 8).astype(np.float64)
    limit = 5 / np.sqrt(n)
    for lag in (1, 2, 8, 4096):
        assert abs(np.corrcoef(a[:-lag], a[lag:])[0, 1]) < limit, lag
    assert abs(np.corrcoef(a, b)[0, 1]) < limit
    for rate in (0.1, 0.9):
        kept = ops.dropout_mask((n,), rate, 3).mean()
        assert abs(kept - (1 - rate)) < 5 * np.sqrt(rate * (1 - rate) / n)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,d,u", [(1, 5, 1), (3, 1001, 10), (37, 10816, 10), (8, 64, 33)])
def test_dense(rng, dtype, n, d, u):
    x = rng.standard_normal((n, d)).astype(dtype)
    w = rng.standard_normal((d, u)).astype(dtype)
    b = rng.standard_normal(u).astype(dtype)
    g = rng.standard_normal((n, u)).astype(dtype)
    tol = dict(rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * np.sqrt(d))
    np.testing.assert_allclose(ops.dense(x, w, b), oracle.dense(x, w, b), **tol)
    for got, want in zip(ops.dense_backward(x, w, g), oracle.dense_backward(x, w, g)):
        np.testing.assert_allclose(got, want, rtol=tol["rtol"], atol=tol["atol"] * np.sqrt(n))


def test_noncontiguous_and_readonly_inputs(rng):
    x = rng.standard_normal((4, 12, 10, 3))
    k = rng.standard_normal((3, 3, 3, 5))
    view = np.asfortranarray(x)[:, ::-1][:, ::-1]
    view.setflags(write=False)
    assert np.array_equal(ops.conv2d(view, k), ops.conv2d(np.ascontiguousarray(x), k))


@pytest.mark.parametrize("call, match", [
    (lambda: ops.conv2d(np.zeros((2, 5, 5)), np.zeros((3, 3, 1, 2))), "x: expected a 4-d"),
    (lambda: ops.conv2d(np.zeros((2, 5, 5, 2)), np.zeros((3, 3, 1, 2))), "channels"),
    (lambda: ops.conv2d(np.zeros((2, 2, 5, 1)), np.zeros((3, 3, 1, 2))), "smaller than"),
    (lambda: ops.conv2d(np.zeros((2, 5, 5, 1), np.float32), np.zeros((3, 3, 1, 2))),
     "w: expected dtype float32"),
    (lambda: ops.conv2d(np.zeros((2, 5, 5, 1), complex), np.zeros((3, 3, 1, 2))),
     "x: expected dtype float32 or float64"),
    (lambda: ops.conv2d(np.zeros((2, 5, 5, 1)), np.zeros((3, 3, 1, 2)), padding="full"),
     "padding"),
    (lambda: ops.conv2d(np.zeros((2, 5, 5, 1)), np.zeros((3, 3, 1, 2)), np.zeros(3)), "b:"),
    (lambda: ops.conv2d_backward(np.zeros((2, 5, 5, 1)), np.zeros((3, 3, 1, 2)),
                                 np.zeros((2, 4, 3, 2))), "grad_out"),
    (lambda: ops.dropout(np.zeros(4), 1.0, seed=1), "rate"),
    (lambda: ops.dropout(np.zeros(4), 0.5, mask=np.array([0, 1, 2, 1])), "mask"),
    (lambda: ops.dropout(np.zeros(4), 0.5, mask=np.ones(3)), "mask"),
    (lambda: ops.tanh(np.array(["a"], dtype=object)), "x: expected dtype"),
    (lambda: ops.tanh_backward(np.zeros(3), np.zeros(4)), "grad_out"),
    (lambda: ops.dense(np.zeros((2, 3)), np.zeros((4, 2))), "features"),
])
def test_bad_input_is_named(call, match):
    with pytest.raises((TypeError, ValueError), match=match):
        call()


def test_same_bits_on_one_and_two_threads(rng, threads):
    x = rng.standard_normal((37, 20, 20, 3)).astype(np.float32)
    k = rng.standard_normal((5, 5, 3, 20)).astype(np.float32)
    g = rng.standard_normal((37, 16, 16, 20)).astype(np.float32)
    big = rng.standard_normal(300_001).astype(np.float32)
    flat, w = x.reshape(37, -1), rng.standard_normal((1200, 10)).astype(np.float32)
    results = []
    for n in (1, 2):
        cconv.set_num_threads(n)
        results.append([ops.conv2d(x, k, activation="tanh"), *ops.conv2d_backward(x, k, g),
                        ops.tanh(big), ops.dropout(big, 0.5, seed=7)[0], ops.dense(flat, w),
                        *ops.dense_backward(flat, w, flat @ w)])
    for a, b in zip(*results):
        assert np.array_equal(a, b)


def test_fit_same_bits_on_one_and_two_threads(rng, threads):
    from cconv.layers import Conv2D, Dense, Dropout, Flatten, Input
    x = rng.random((64, 12, 12, 1))
    y = rng.integers(0, 10, 64)
    weights = []
    for n in (1, 2):
        cconv.set_num_threads(n)
        cconv.utils.set_random_seed(0)
        model = cconv.Sequential([Input((12, 12, 1)), Conv2D(4, 3, activation="tanh"),
                                  Dropout(0.5), Flatten(), Dense(10, activation="softmax")])
        model.compile(optimizer=cconv.optimizers.SGD(0.1),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(x, y, batch_size=16, epochs=2, seed=3, verbose=0)
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        assert np.array_equal(a, b)


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
