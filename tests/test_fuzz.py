"""Generated hostile arguments against every public call.

Each call must either succeed with a correct result (held to cconv.oracle where there is
one) or raise ValueError/TypeError with a message. Anything else (another exception, a
crash, a hang, a wrong answer) fails the test.

The arguments start from a valid call and then, at random, get the wrong rank, a zero,
negative or huge dimension, NaN/inf, another numpy dtype (object, bool, complex, float16,
ints, str, datetime...), a non-contiguous, read-only, Fortran-ordered or broadcast layout,
or become lists, out-of-range labels and mismatched lengths.

CI runs the bounded "ci" profile (fixed examples, about half a minute on 2 cores).
CCONV_FUZZ_PROFILE=long runs 1,200 fresh examples per test (20,400 in all):

    CCONV_FUZZ_PROFILE=long nice -n 10 python -m pytest tests/test_fuzz.py -q \\
        -p no:cacheprovider --hypothesis-show-statistics
"""
import gzip
import io
import os
import struct
import tempfile

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import cconv  # noqa: E402
from cconv import activations, ops, oracle  # noqa: E402
from cconv.datasets import mnist  # noqa: E402
from cconv.layers import (Activation, Conv2D, Dense, Dropout, Flatten, Input,  # noqa: E402
                          KernelPooling, MaxPooling2D)

PROFILE = os.environ.get("CCONV_FUZZ_PROFILE", "ci")
LONG_EXAMPLES = 1200  # per test; 17 tests
_common = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=list(HealthCheck))
settings.register_profile("cconv-ci", derandomize=True, **_common)  # the same cases every run
settings.register_profile("cconv-long", derandomize=False, **_common)


def fuzz(ci):
    """Settings for one test: `ci` examples in CI, LONG_EXAMPLES in the long run."""
    if PROFILE not in ("ci", "long"):
        raise ValueError(f"CCONV_FUZZ_PROFILE: expected 'ci' or 'long', got {PROFILE!r}")
    return settings(settings.get_profile(f"cconv-{PROFILE}"),
                    max_examples=LONG_EXAMPLES if PROFILE == "long" else ci)


HUGE = 2**40  # any array with a dimension this large is far beyond any machine's memory
OTHER_DTYPES = [np.float16, np.longdouble, np.int8, np.int16, np.int32, np.int64, np.uint8,
                np.uint64, np.bool_, np.complex64, np.complex128, object, "U3", "S3",
                "datetime64[s]", "timedelta64[s]"]
LAYOUTS = ["c", "c", "c", "fortran", "strided", "reversed", "readonly", "list", "broadcast"]
SPECIALS = [np.nan, np.inf, -np.inf]


def outcome(call):
    """(True, result) or (False, error) for ValueError/TypeError with a message; any
    other exception propagates and fails the test."""
    try:
        result = call()
    except (ValueError, TypeError) as exc:
        assert str(exc).strip(), f"{type(exc).__name__} raised without a message"
        event(f"raised {type(exc).__name__}")
        return False, exc
    event("succeeded")
    return True, result


def cast(values, dtype):
    dtype = np.dtype(dtype)
    if dtype.kind in "Mm":
        return np.nan_to_num(values).astype(np.int64).astype(dtype)
    if dtype.kind in "iub":
        with np.errstate(invalid="ignore"):
            return np.nan_to_num(values).astype(dtype)
    if dtype.kind in "US":
        return values.astype(str).astype(dtype)
    return values.astype(dtype)


def lay_out(a, layout):
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "strided" and a.ndim:
        wide = np.repeat(a, 2, axis=-1)
        return wide[..., ::2]
    if layout == "reversed" and a.ndim:
        return np.ascontiguousarray(a[::-1])[::-1]
    if layout == "readonly":
        a = a.copy()
        a.setflags(write=False)
        return a
    if layout == "list":
        return a.tolist()
    if layout == "broadcast" and a.ndim and a.shape[0] > 0:
        return np.broadcast_to(a[:1], a.shape)
    return a


@st.composite
def shapes(draw, shape):
    """`shape`, or now and then a wrong rank, or a zero, other or huge dimension."""
    shape = list(shape)
    how = draw(st.sampled_from(["same"] * 14 + ["drop", "add", "zero", "other", "huge"]))
    if how == "drop" and shape:
        del shape[draw(st.integers(0, len(shape) - 1))]
    elif how == "add":
        shape.insert(draw(st.integers(0, len(shape))), draw(st.integers(0, 3)))
    elif how in ("zero", "other", "huge") and shape:
        i = draw(st.integers(0, len(shape) - 1))
        shape[i] = {"zero": 0, "other": draw(st.integers(1, 7)), "huge": HUGE}[how]
    return tuple(shape)


@st.composite
def arrays(draw, shape, dtype, mutate=True, special=True):
    """An argument meant to be a `dtype` array of `shape`, hostile now and then."""
    if mutate:
        shape = draw(shapes(shape))
        if draw(st.integers(0, 7)) == 0:
            dtype = draw(st.sampled_from(OTHER_DTYPES))
    if max(shape, default=0) > 10**6:  # a zero-stride view: huge, yet costs nothing
        try:
            return np.broadcast_to(np.ones(1, dtype=dtype), shape)
        except ValueError:  # numpy cannot even describe it ("iterator is too large")
            shape = tuple(min(d, 2) for d in shape)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    values = rng.uniform(-3, 3, shape)
    if special and values.size and draw(st.integers(0, 9)) == 0:
        values.flat[draw(st.integers(0, values.size - 1))] = draw(st.sampled_from(SPECIALS))
    a = cast(values, dtype)
    return lay_out(a, draw(st.sampled_from(LAYOUTS))) if mutate else a


def valid_float(a):
    """Whether ops must accept `a` as a float array (the dtype rule of ops._checks.float_array)."""
    if isinstance(a, np.ndarray):
        return a.dtype in ops.FLOAT_DTYPES
    return np.asarray(a).dtype.kind in "iubf" and np.asarray(a).dtype != np.float16


def as_float(a, dtype):
    return np.asarray(a).astype(dtype)


def assert_matches(got, want, scale, dtype):
    """got == want within rounding, relative to `scale` (the sum of |terms| behind each
    element). Where the oracle is not finite the kernels may differ (they skip padding
    that NumPy multiplies by inf), so only finite oracle values are compared."""
    want = np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == dtype, (got.dtype, dtype)
    eps = 1e-5 if dtype == np.float32 else 1e-12
    finite = np.isfinite(want) & np.isfinite(scale)
    err = np.abs(got.astype(np.float64)[finite] - want.astype(np.float64)[finite])
    assert np.all(err <= eps * (1 + np.asarray(scale)[finite])), err.max()


FLOAT = st.sampled_from([np.float32, np.float64])


# --- ops --------------------------------------------------------------------------------


@st.composite
def conv_args(draw):
    dtype = draw(FLOAT)
    n, h, w, c = (draw(st.integers(0, 3)), draw(st.integers(1, 7)), draw(st.integers(1, 7)),
                  draw(st.integers(1, 3)))
    kh, kw, f = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 18))
    padding = draw(st.sampled_from(["valid", "same"] * 4 + ["full", None, 3, ["same"]]))
    x = draw(arrays((n, h, w, c), dtype))
    k = draw(arrays((kh, kw, c, f), dtype, special=False))
    b = draw(st.none() | arrays((f,), dtype, special=False))
    return dtype, x, k, b, padding


@fuzz(100)
@given(conv_args(), st.sampled_from([None, *activations.ELEMENTWISE, "softmax", 1, ["tanh"]]))
def test_conv2d(args, activation):
    dtype, x, k, b, padding = args
    ok, got = outcome(lambda: ops.conv2d(x, k, b, padding, activation))
    if not ok:
        return
    assert valid_float(x) and valid_float(k) and padding in ("valid", "same")
    xf, kf = as_float(x, got.dtype), as_float(k, got.dtype)
    bf = None if b is None else as_float(b, got.dtype)
    want = oracle.conv2d(xf, kf, bf, padding)
    scale = oracle.conv2d(np.abs(xf), np.abs(kf), None if bf is None else np.abs(bf), padding)
    linear = ops.conv2d(x, k, b, padding)
    assert_matches(linear, want, scale, got.dtype)
    # the activation, applied in place by the kernels, is the elementwise op's to the bit
    # (tests/ops/test_activations.py holds that to the oracle, edges included)
    np.testing.assert_array_equal(got, linear if activation is None
                                  else ops.activation(activation, linear))


@fuzz(100)
@given(conv_args(), st.sampled_from([True, False]), st.data())
def test_conv2d_backward(args, need_grad_x, data):
    dtype, x, k, _, padding = args
    try:
        out_shape = ops.conv_output_shape(np.shape(x), np.shape(k), padding)
    except ValueError:  # wrong rank: any shape will do
        out_shape = (2, 3, 3, 2)
    g = data.draw(arrays(tuple(max(d, 0) for d in out_shape), dtype))
    ok, got = outcome(lambda: ops.conv2d_backward(x, k, g, padding, need_grad_x))
    if not ok:
        return
    assert valid_float(x) and valid_float(k) and valid_float(g)
    gx, gw, gb = got
    dt = gw.dtype
    xf, kf, gf = as_float(x, dt), as_float(k, dt), as_float(g, dt)
    want = oracle.conv2d_backward(xf, kf, gf, padding)
    scale = oracle.conv2d_backward(np.abs(xf), np.abs(kf), np.abs(gf), padding)
    if need_grad_x:
        assert_matches(gx, want[0], scale[0], dt)
    else:
        assert gx is None
    assert_matches(gw, want[1], scale[1], dt)
    assert_matches(gb, want[2], scale[2], dt)


# The activations ops has functions of their own for (ops.tanh, ops.relu and their
# _backward); ops.activation(name) is fuzzed through test_conv2d's in-place activations.
SHORTCUTS = [name for name in activations.ELEMENTWISE if hasattr(ops, name)]


@fuzz(100)
@given(st.sampled_from(SHORTCUTS), FLOAT, st.lists(st.integers(0, 6), max_size=4),
       st.data())
def test_elementwise(name, dtype, shape, data):
    x = data.draw(arrays(tuple(shape), dtype))
    ok, got = outcome(lambda: getattr(ops, name)(x))
    if ok:
        assert valid_float(x)
        xf = as_float(x, got.dtype)
        assert_matches(got, getattr(oracle, name)(xf), np.zeros(got.shape), got.dtype)
    y = data.draw(arrays(tuple(shape), dtype))
    g = data.draw(arrays(tuple(shape), dtype))
    ok, got = outcome(lambda: getattr(ops, name + "_backward")(y, g))
    if ok:
        assert valid_float(y) and valid_float(g)
        yf, gf = as_float(y, got.dtype), as_float(g, got.dtype)
        with np.errstate(all="ignore"):
            want = getattr(oracle, name + "_backward")(yf, gf)
            scale = np.abs(gf) * (1 + yf * yf)
        assert_matches(got, want, scale, got.dtype)


def is_small_int(a):
    return isinstance(a, np.ndarray) and a.dtype.kind in "iub" and a.size < HUGE


RATES = st.sampled_from([0.0, 0.25, 0.5, 0.99, 1.0, -0.1, np.nan, np.inf, "0.5", None, True,
                         np.float32(0.5)])
SEEDS = st.sampled_from([0, 1, 2**64 - 1, 2**64, -1, 1.5, None, True, np.uint64(7), "3"])


@fuzz(100)
@given(FLOAT, st.lists(st.integers(0, 6), max_size=4), RATES, SEEDS, st.data())
def test_dropout(dtype, shape, rate, seed, data):
    x = data.draw(arrays(tuple(shape), dtype))
    mask = None
    if data.draw(st.booleans()):
        mask = data.draw(arrays(tuple(shape), np.uint8, special=False))
        if is_small_int(mask) and data.draw(st.booleans()):
            mask = mask % 2  # a valid 0/1 mask of some integer dtype
    ok, got = outcome(lambda: ops.dropout(x, rate, seed=seed, mask=mask))
    if ok:
        y, used = got
        assert valid_float(x) and 0 <= float(rate) < 1
        xf = as_float(x, y.dtype)
        if mask is None:
            assert np.array_equal(used, oracle.dropout_mask(xf.shape, float(rate), int(seed)))
        want, _ = oracle.dropout(xf, float(rate), mask=np.asarray(used))
        assert_matches(y, want, np.abs(xf) / (1 - float(rate)), y.dtype)
    g = data.draw(arrays(tuple(shape), dtype))
    m = data.draw(arrays(tuple(shape), np.uint8, special=False))
    if is_small_int(m) and data.draw(st.booleans()):
        m = m % 2
    ok, got = outcome(lambda: ops.dropout_backward(g, m, rate))
    if ok:
        gf = as_float(g, got.dtype)
        want = oracle.dropout_backward(gf, np.asarray(m), float(rate))
        assert_matches(got, want, np.abs(gf) / (1 - float(rate)), got.dtype)


@fuzz(100)
@given(st.one_of(st.lists(st.integers(-2, 6), max_size=4).map(tuple), st.integers(-3, 50),
                 st.just((HUGE, HUGE)), st.just("3"), st.just((2.0, 3)), st.just(None),
                 st.just((True, 2))), RATES, SEEDS)
def test_dropout_mask(shape, rate, seed):
    ok, got = outcome(lambda: ops.dropout_mask(shape, rate, seed))
    if ok:
        assert got.dtype == np.uint8
        assert np.array_equal(got, oracle.dropout_mask(got.shape, float(rate), int(seed)))
        assert got.shape == (tuple(shape) if isinstance(shape, (tuple, list)) else (shape,))


@fuzz(100)
@given(FLOAT, st.integers(0, 9), st.integers(0, 40), st.integers(0, 12),
       st.sampled_from([True, False]), st.data())
def test_dense(dtype, n, d, u, need_grad_x, data):
    x = data.draw(arrays((n, d), dtype))
    w = data.draw(arrays((d, u), dtype, special=False))
    b = data.draw(st.none() | arrays((u,), dtype, special=False))
    ok, got = outcome(lambda: ops.dense(x, w, b))
    if ok:
        assert valid_float(x) and valid_float(w)
        dt = got.dtype
        xf, wf = as_float(x, dt), as_float(w, dt)
        bf = None if b is None else as_float(b, dt)
        assert_matches(got, oracle.dense(xf, wf, bf),
                       oracle.dense(np.abs(xf), np.abs(wf), None if bf is None else np.abs(bf)),
                       dt)
    g = data.draw(arrays((n, u), dtype))
    ok, got = outcome(lambda: ops.dense_backward(x, w, g, need_grad_x))
    if ok:
        gx, gw, gb = got
        dt = gw.dtype
        xf, wf, gf = as_float(x, dt), as_float(w, dt), as_float(g, dt)
        want = oracle.dense_backward(xf, wf, gf)
        scale = oracle.dense_backward(np.abs(xf), np.abs(wf), np.abs(gf))
        if need_grad_x:
            assert_matches(gx, want[0], scale[0], dt)
        assert_matches(gw, want[1], scale[1], dt)
        assert_matches(gb, want[2], scale[2], dt)


POOL_SIZES = st.sampled_from([1, 2, 3, (2, 3), (3, 1), [2, 2]] * 3 + [
    0, -1, (0, 2), (2, -1), 2.0, "2", None, True, (2,), (2, 2, 2), np.int64(2), (HUGE, 1)])
POOL_PADDINGS = st.sampled_from(["valid", "same"] * 4 + ["full", None, 1, ["same"]])


@st.composite
def pool_args(draw):
    dtype = draw(FLOAT)
    n, h, w, c = (draw(st.integers(0, 3)), draw(st.integers(1, 7)), draw(st.integers(1, 7)),
                  draw(st.integers(1, 3)))
    return dtype, draw(arrays((n, h, w, c), dtype)), draw(POOL_SIZES), draw(POOL_PADDINGS)


def nan_windows(xf, pool_size, padding):
    """Which pooled outputs see a NaN: there the compiled max (built with -ffast-math) and
    NumPy's may pick different elements."""
    return oracle.max_pool2d(np.isnan(xf).astype(np.float64), pool_size, padding)[0] > 0


@fuzz(100)
@given(pool_args(), st.sampled_from([True, False]))
def test_max_pool2d(args, need_argmax):
    dtype, x, pool_size, padding = args
    ok, got = outcome(lambda: ops.max_pool2d(x, pool_size, padding, need_argmax))
    if not ok:
        return
    assert valid_float(x) and padding in ("valid", "same")
    y, argmax = got
    xf = as_float(x, y.dtype)
    want_y, want_arg = oracle.max_pool2d(xf, pool_size, padding)
    clean = ~nan_windows(xf, pool_size, padding)
    assert_matches(y, np.where(clean, want_y, np.nan), np.zeros(y.shape), y.dtype)
    if need_argmax:
        assert argmax.dtype == np.int32 and argmax.shape == y.shape
        assert np.array_equal(argmax[clean], want_arg[clean])
    else:
        assert argmax is None


@pytest.mark.parametrize("call, error, match", [  # found by the tests above
    (lambda: ops.pool_output_shape((1, 4, 4, 1), 0), ValueError, "pool_size"),  # was / 0
    (lambda: ops.pool_output_shape((1, 4, 4, 1), (2, 0)), ValueError, "pool_size"),
    (lambda: ops.pool_output_shape((1, -4, 4, 1), 2), ValueError, "input_shape"),
    (lambda: ops.pool_output_shape((1, 4, 4, 1), 2, "full"), ValueError, "padding"),
    (lambda: ops.max_pool2d(np.ones((1, 4, 4, 1)), (HUGE, 1), "same"),  # was OverflowError
     ValueError, "pool_size"),
    (lambda: cconv.Sequential([Input((4, 4, 1)), MaxPooling2D((HUGE, 1), padding="same")]),
     ValueError, "pool_size"),
    (lambda: ops.kernel_pool(np.ones((2, 3)), ["max"]), ValueError, "mode"),
    (lambda: KernelPooling(["max"]), ValueError, "mode"),  # was "unhashable type"
])
def test_pooling_regressions(call, error, match):
    with pytest.raises(error, match=match):
        call()


def in_window(argmax, x_shape, pool_size, padding):
    """Whether each index names an element of its own pooling window and channel."""
    _, _, w, c = x_shape
    rows, cols = oracle._pool_geometry(x_shape, pool_size, padding)
    r0, r1 = (np.array([r[i] for r in rows]).reshape(1, -1, 1, 1) for i in (0, 1))
    c0, c1 = (np.array([q[i] for q in cols]).reshape(1, 1, -1, 1) for i in (0, 1))
    a = argmax.astype(np.int64)
    pixel, channel = a // c, a % c
    row, col = pixel // w, pixel % w
    return ((a >= 0) & (channel == np.arange(c)) & (r0 <= row) & (row < r1) & (c0 <= col)
            & (col < c1))


@st.composite
def corrupt_argmax(draw, argmax):
    """argmax as max_pool2d gave it, or with an index moved, of another dtype or shape."""
    how = draw(st.sampled_from(["same"] * 10 + ["nudge", "negative", "huge", "swap", "dtype",
                                               "shape", "list", "strided", "readonly",
                                               "fortran"]))
    a = argmax.copy()
    if how in ("nudge", "negative", "huge") and a.size:
        i = draw(st.integers(0, a.size - 1))
        a.flat[i] = {"nudge": a.flat[i] + draw(st.sampled_from([-1, 1, 7, -7])),
                     "negative": -draw(st.integers(1, 2**31)), "huge": 2**31 - 1}[how]
    elif how == "swap" and a.size > 1:  # another element's index, maybe still in window
        i, j = draw(st.integers(0, a.size - 1)), draw(st.integers(0, a.size - 1))
        a.flat[i] = a.flat[j]
    elif how == "dtype":
        dtype = draw(st.sampled_from([np.int64, np.uint8, np.int16, np.uint64, np.float32,
                                      np.bool_, object]))
        with np.errstate(all="ignore"):
            a = a.astype(dtype)
    elif how == "shape":  # small indices in any shape, dtype and layout
        a = draw(arrays(a.shape, np.int32, special=False))
    elif how in ("list", "strided", "readonly", "fortran"):
        a = lay_out(a, how)
    return a


@fuzz(100)
@given(st.sampled_from([True, False]), st.data())
def test_max_pool2d_backward(valid_shape, data):
    dtype = data.draw(FLOAT)
    n, h, w, c = (data.draw(st.integers(0, 3)), data.draw(st.integers(1, 7)),
                  data.draw(st.integers(1, 7)), data.draw(st.integers(1, 3)))
    x_shape = (n, h, w, c) if valid_shape else data.draw(
        shapes((n, h, w, c)) | st.sampled_from([(1, 2.0, 2, 1), (1, -2, 2, 1), "x", None]))
    pool_size, padding = data.draw(POOL_SIZES), data.draw(POOL_PADDINGS)
    try:
        ref_shape = ops.pool_output_shape(x_shape, pool_size, padding)
        x = np.random.default_rng(0).uniform(-1, 1, x_shape)  # distinct values: no ties
        argmax = oracle.max_pool2d(x, pool_size, padding)[1]
    except (ValueError, TypeError, MemoryError):  # the call must refuse these arguments
        ref_shape, argmax = (1, 2, 2, 1), np.zeros((1, 2, 2, 1), dtype=np.int32)
    g = data.draw(arrays(tuple(max(d, 0) for d in ref_shape), dtype))
    a = data.draw(corrupt_argmax(argmax))
    # out is a view into a guarded buffer: a write out of bounds would change the guards
    guard = 64
    out, buf = None, None
    if isinstance(x_shape, tuple) and len(x_shape) == 4 and \
            all(isinstance(d, int) and 0 <= d < 100 for d in x_shape):
        size = int(np.prod(x_shape))
        buf = np.full(size + 2 * guard, -7.0, dtype=np.asarray(g).dtype if valid_float(g)
                      else dtype)
        out = buf[guard:guard + size].reshape(x_shape)
    ok, got = outcome(lambda: ops.max_pool2d_backward(g, a, x_shape, pool_size, padding,
                                                      out=out))
    if buf is not None:
        assert np.all(buf[:guard] == -7) and np.all(buf[-guard:] == -7)
    if not ok:
        return
    assert valid_float(g) and isinstance(a, np.ndarray) and a.dtype.kind in "iu"
    assert np.all(in_window(a, x_shape, pool_size, padding))  # else it must have raised
    gf = as_float(g, got.dtype)
    want = oracle.max_pool2d_backward(gf, a, x_shape, pool_size, padding)
    assert_matches(got, want, np.zeros(got.shape), got.dtype)
    if out is not None:
        assert got is out


@fuzz(100)
@given(st.one_of(st.lists(st.integers(0, 9), min_size=4, max_size=4).map(tuple),
                 st.lists(st.integers(0, 9), min_size=4, max_size=4).map(tuple),
                 st.lists(st.integers(-2, 9), min_size=3, max_size=5).map(tuple),
                 st.just((1, HUGE, HUGE, 1)), st.just((1, 4.0, 4, 1)), st.just("abcd"),
                 st.just(None), st.just((True, 2, 2, 1)), st.just([2, 4, 6, 1])),
       POOL_SIZES, POOL_PADDINGS)
def test_pool_output_shape(input_shape, pool_size, padding):
    ok, got = outcome(lambda: ops.pool_output_shape(input_shape, pool_size, padding))
    if ok:
        assert all(isinstance(d, int) and d >= 0 for d in input_shape)
        assert padding in ("valid", "same")
        rows, cols = oracle._pool_geometry(
            (1, min(input_shape[1], 50), min(input_shape[2], 50), 1), pool_size, padding)
        n, h, w, c = input_shape
        if h <= 50 and w <= 50:
            assert got == (n, len(rows), len(cols), c)
        else:
            assert got[0] == n and got[3] == c


@fuzz(100)
@given(FLOAT, st.lists(st.integers(0, 5), min_size=0, max_size=4),
       st.sampled_from(["max", "mean", "sum"] * 3 + ["min", None, 0, ["max"], "MAX"]),
       st.data())
def test_kernel_pool(dtype, shape, mode, data):
    x = data.draw(arrays(tuple(shape), dtype))
    ok, got = outcome(lambda: ops.kernel_pool(x, mode))
    if ok:
        assert valid_float(x) and mode in ("max", "mean", "sum")
        xf = as_float(x, got.dtype)
        with np.errstate(all="ignore"):
            want = oracle.kernel_pool(xf, mode)
        nan = np.isnan(xf).any(axis=-1, keepdims=True)
        assert_matches(got, np.where(nan, np.nan, want),
                       np.abs(xf).sum(axis=-1, keepdims=True), got.dtype)
    g = data.draw(arrays(tuple(shape[:-1]) + (1,) if shape else (), dtype))
    ok, got = outcome(lambda: ops.kernel_pool_backward(x, g, mode))
    if ok:
        assert valid_float(x) and valid_float(g) and mode in ("max", "mean", "sum")
        xf, gf = as_float(x, got.dtype), as_float(g, got.dtype)
        with np.errstate(all="ignore"):
            want = oracle.kernel_pool_backward(xf, gf, mode)
        if mode == "max":  # with a NaN among the kernels, which one wins is unspecified
            want = np.where(np.isnan(xf).any(axis=-1, keepdims=True), np.nan, want)
        assert_matches(got, want, np.abs(gf) * np.ones(got.shape), got.dtype)


def is_small(a):
    return isinstance(a, np.ndarray) and a.size < 10**6


HYPER = st.sampled_from([0.001, 0.1, 0.9, 0.999, 0.0, 1e-7, np.float32(0.5)] * 6 + [
    1.0, -0.1, 2.0, 1e-300, 1e300, np.nan, np.inf, "0.9", None, True])
STEPS = st.sampled_from([1, 2, 10, 10**6, 2**70, np.int64(3)] * 2 + [0, -1, 1.0, "1", None,
                                                                   True])


def adam_scale(p, g, m, v, alpha, b1, b2, eps):
    """The size of the terms behind one Adam step, for assert_matches: rounding in v's
    update is amplified by 1 / sqrt(v) in the step."""
    with np.errstate(all="ignore"):
        m2 = np.abs(m) + np.abs(g)
        v1 = v + (g * g - v) * (1 - b2)
        v2 = np.abs(v) + g * g
        step = abs(alpha) * m2 / (np.sqrt(np.abs(v1)) + eps) * (1 + v2 / (np.abs(v1) + eps * eps))
        return np.abs(p) + step, m2, v2


@fuzz(100)
@given(FLOAT, st.lists(st.integers(0, 6), max_size=3), STEPS, HYPER, HYPER, HYPER, HYPER,
       st.sampled_from(["none"] * 12 + ["m=param", "grad=v", "view"]), st.data())
def test_adam_update(dtype, shape, step, lr, b1, b2, eps, alias, data):
    shape = tuple(shape)
    # four arrays hostile at once would leave too few calls that succeed
    hostile = data.draw(st.booleans())
    p = data.draw(arrays(shape, dtype, mutate=hostile))
    g = data.draw(arrays(shape, dtype, mutate=hostile))
    m = data.draw(arrays(shape, dtype, mutate=hostile, special=False))
    v = data.draw(arrays(shape, dtype, mutate=hostile, special=False))
    if isinstance(v, np.ndarray) and v.dtype in ops.FLOAT_DTYPES and v.flags.writeable:
        np.abs(v, out=v)  # a second moment is never negative
    if alias == "m=param":
        m = p
    elif alias == "grad=v":
        g = v
    elif alias == "view" and isinstance(p, np.ndarray) and p.ndim:
        g = p[::-1]
    before = [a.copy() if is_small(a) else a for a in (p, g, m, v)]
    ok, _ = outcome(lambda: ops.adam_update(p, g, m, v, step, lr, b1, b2, eps))
    if not ok:  # a refused update writes nothing
        for a, b in zip((p, g, m, v), before):
            if is_small(a):
                assert a.tobytes() == b.tobytes()
        return
    assert 0 < float(lr) < np.inf and 0 <= float(b1) < 1 and 0 <= float(b2) < 1
    assert int(step) >= 1 and 0 < float(eps) < np.inf
    p0, m0, v0 = before[0], before[2], before[3]
    gf = as_float(before[1], p.dtype)  # g may be a view of p, updated since
    wp, wm, wv = p0.copy(), m0.copy(), v0.copy()
    with np.errstate(all="ignore"):
        oracle.adam_update(wp, gf, wm, wv, int(step), float(lr), float(b1), float(b2),
                           float(eps))
        alpha = float(lr) * np.sqrt(1 - float(b2) ** int(step)) / (1 - float(b1) ** int(step))
    sp, sm, sv = adam_scale(p0.astype(np.float64), gf.astype(np.float64),
                            m0.astype(np.float64), v0.astype(np.float64), alpha, float(b1),
                            float(b2), float(eps))
    assert_matches(m, wm, sm, p.dtype)
    assert_matches(v, wv, sv, p.dtype)
    if np.all(np.isfinite(sp)):
        assert_matches(p, wp, sp, p.dtype)


# --- layers and models ------------------------------------------------------------------

ODD = st.sampled_from([0, -1, 1, 2, 3, 10**12, 2**63, 1.5, np.nan, np.inf, True, None, "3",
                       (3,), (2, 2), (2, 3, 4), [1, 1], (0, 2), (HUGE, 1), np.int64(2), b"x"])


@fuzz(100)
@given(st.sampled_from(["conv", "dense", "dropout", "activation", "input"]), ODD, ODD,
       st.sampled_from([None, *activations.NAMES, *activations.ALIASES, "glu", 3, ["tanh"]]),
       st.sampled_from(["valid", "same", "full", None, 1]),
       st.sampled_from(["glorot_uniform", "he_normal", "zeros", "nope", None, 3]))
def test_layer_construction_and_use(kind, a, b, activation, padding, init):
    make = {
        "conv": lambda: Conv2D(a, b, activation=activation, padding=padding,
                               kernel_initializer=init),
        "dense": lambda: Dense(a, activation=activation, kernel_initializer=init),
        "dropout": lambda: Dropout(a),
        "activation": lambda: Activation(activation),
        "input": lambda: Input(a),
    }[kind]
    ok, layer = outcome(make)
    if not ok:
        return
    if kind == "input":
        assert layer.shape[0] is None  # a KerasTensor's batch axis
        assert all(isinstance(s, int) and 0 < s for s in layer.shape[1:])
        return
    stack = [Input((5, 5, 2)), layer, Flatten(), Dense(3, activation="softmax")]
    if kind == "dense":
        stack = [Input((5, 5, 2)), Flatten(), layer, Dense(3, activation="softmax")]
    ok, model = outcome(lambda: cconv.Sequential(stack))
    if not ok:
        return
    x = np.random.default_rng(0).uniform(-1, 1, (4, 5, 5, 2))
    ok, probs = outcome(lambda: model.predict(x))
    assert ok, probs  # a model that built must run on valid data
    np.testing.assert_allclose(probs, reference_predict(model, x), rtol=1e-4, atol=1e-5)


def reference_predict(model, x):
    """The model's inference output from its weights, in NumPy (oracle) float64."""
    out = np.asarray(x, dtype=np.float64)
    for layer in model.layers:
        p = {k: v.astype(np.float64) for k, v in layer.params.items()}
        if isinstance(layer, Conv2D):
            out = oracle.conv2d(out, p["kernel"], p.get("bias"), layer.padding,
                                strides=layer.strides, dilation_rate=layer.dilation_rate)
        elif isinstance(layer, Dense):
            out = oracle.dense(out, p["kernel"], p.get("bias"))
        elif isinstance(layer, Flatten):
            out = out.reshape(len(out), -1)
        elif isinstance(layer, MaxPooling2D):
            out = oracle.max_pool2d(out, layer.pool_size, layer.padding,
                                    strides=layer.strides)[0]
        elif isinstance(layer, KernelPooling):
            out = oracle.kernel_pool(out, layer.mode)
        if layer.activation is not None:
            out = oracle.activation(layer.activation.name, out)
    return out


SMALL_MODEL_LR = 0.1


def small_model(dtype, padding, loss):
    cconv.utils.set_random_seed(0)
    model = cconv.Sequential([Input((6, 5, 2)), Conv2D(3, 3, activation="tanh",
                                                       padding=padding),
                              Dropout(0.5), Flatten(), Dense(4, activation="softmax")],
                             dtype=dtype)
    model.compile(optimizer=cconv.optimizers.SGD(SMALL_MODEL_LR), loss=loss,
                  metrics=["accuracy"])
    return model


LABEL_DTYPES = [np.int64, np.uint8, np.int8, np.float32, np.float64, np.bool_, np.float16,
                object, "U2", "datetime64[s]", np.complex64]
BATCH = st.sampled_from([1, 3, 32, 10**12, None, 0, -2, 2.5, "8", True, np.int32(2)])


def one_hot_reference(y):
    """Labels as float64 one-hot rows of 4 classes, as the model reads them."""
    yv = np.asarray(y).astype(np.float64)
    return yv if yv.ndim == 2 and yv.shape[1] == 4 else np.eye(4)[yv.astype(int).ravel()]


def sgd_step_reference(model, weights, x, y, lr):
    """small_model's weights after one SGD step over all of (x, y), in the float64 oracle,
    with the dropout mask the step drew."""
    k, kb, w, wb = (a.astype(np.float64) for a in weights)
    x = np.asarray(x, dtype=np.float64)
    n, padding, mask = len(x), model.layers[0].padding, model.layers[1].saved["mask"]
    h = oracle.tanh(oracle.conv2d(x, k, kb, padding))
    d, _ = oracle.dropout(h, 0.5, mask=mask)
    z = oracle.dense(d.reshape(n, -1), w, wb)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    onehot = one_hot_reference(y)  # categorical rows may be any weights: p * sum(y) - y
    gd, gw, gwb = oracle.dense_backward(d.reshape(n, -1), w,
                                        (p * onehot.sum(axis=1, keepdims=True) - onehot) / n)
    gh = oracle.tanh_backward(h, oracle.dropout_backward(gd.reshape(h.shape), mask, 0.5))
    _, gk, gkb = oracle.conv2d_backward(x, k, gh, padding, need_grad_x=False)
    return [a - lr * g for a, g in zip((k, kb, w, wb), (gk, gkb, gw, gwb))]


def fit_and_predict(model, x, y, batch_size, epochs, dtype, one_step_lr=None):
    """fit either trains (finite weights that moved; given one_step_lr, the fit does not
    shuffle and, when it is one SGD step over all of x, must give the oracle's weights) or
    refuses and leaves the weights alone; predict either refuses or matches the NumPy
    reference."""
    before = model.get_weights()
    ok, history = outcome(lambda: model.fit(x, y, batch_size=batch_size, epochs=epochs,
                                            verbose=0, seed=1, shuffle=one_step_lr is None))
    if ok:
        assert len(history.history["loss"]) == epochs
        assert all(np.isfinite(w).all() for w in model.get_weights())
        assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
        one_batch = (32 if batch_size is None else int(batch_size)) >= len(np.asarray(x))
        if one_step_lr is not None and epochs == 1 and one_batch:
            event("fit: one SGD step checked against the oracle")
            want = sgd_step_reference(model, before, x, y, one_step_lr)
            tolerance = dict(rtol=1e-4, atol=1e-5) if dtype == "float32" else dict(rtol=1e-9)
            for got, exp in zip(model.get_weights(), want):
                np.testing.assert_allclose(got, exp, **tolerance)
    else:  # a refused fit leaves the weights alone
        assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    ok, probs = outcome(lambda: model.predict(x, batch_size=batch_size))
    if ok:
        xf = np.asarray(x, dtype=np.float64)
        assert probs.dtype == np.dtype(dtype) and probs.shape == (len(xf), 4)
        np.testing.assert_allclose(probs, reference_predict(model, xf), rtol=1e-4, atol=1e-5)


@st.composite
def labels(draw, n, loss):
    n = draw(st.sampled_from([n] * 6 + [max(n - 1, 0), n + 1, 0]))
    if loss == "categorical_crossentropy":
        y = np.eye(4)[np.random.default_rng(n).integers(0, 4, n)]
        if draw(st.integers(0, 5)) == 0:
            y = y[:, :3]
    else:
        y = np.asarray(draw(st.lists(st.integers(-1, 4) if draw(st.integers(0, 4)) == 0
                                     else st.integers(0, 3), min_size=n, max_size=n)))
    dtype = draw(st.sampled_from([np.int64] * 6 + LABEL_DTYPES))
    y = cast(y.astype(np.float64), dtype)
    if draw(st.integers(0, 9)) == 0:
        y = y.astype(np.float64) + 0.5 if y.dtype.kind in "iuf" else y
    return lay_out(y, draw(st.sampled_from(["c", "c", "list", "readonly", "strided"])))


@fuzz(40)
@given(st.sampled_from(["float32", "float64"]), st.sampled_from(["valid", "same"]),
       st.sampled_from(["sparse_categorical_crossentropy", "categorical_crossentropy"]),
       st.integers(1, 9), BATCH, st.sampled_from([1, 2, 0, -1, 1.0, None]), st.data())
def test_fit_evaluate_predict(dtype, padding, loss, n, batch_size, epochs, data):
    model = small_model(dtype, padding, loss)
    x = data.draw(arrays((n, 6, 5, 2), np.float64))
    y = data.draw(labels(n, loss))
    fit_and_predict(model, x, y, batch_size, epochs, dtype)

    ok, result = outcome(lambda: model.evaluate(x, y, batch_size=batch_size))
    if ok:
        xf = np.asarray(x, dtype=np.float64)
        p = reference_predict(model, xf)
        onehot = one_hot_reference(y)
        want_loss = -np.mean(np.sum(onehot * np.log(p), axis=1))
        want_acc = np.mean(p.argmax(1) == onehot.argmax(1))
        assert result[0] == pytest.approx(want_loss, rel=1e-4, abs=1e-5)
        # a near tie may flip one argmax in float32
        assert abs(result[1] - want_acc) <= (1 / len(xf) if dtype == "float32" else 0)


@fuzz(50)
@given(st.sampled_from(["float32", "float64"]), st.sampled_from(["valid", "same"]),
       st.sampled_from(["sparse_categorical_crossentropy", "categorical_crossentropy"]),
       st.integers(1, 9), st.data())
def test_one_fit_step_is_the_oracles(dtype, padding, loss, n, data):
    """Inputs in every layout and dtype, labels in every form: a fit of one SGD step over
    all of them either refuses or moves the weights as the oracle does."""
    model = small_model(dtype, padding, loss)
    x = data.draw(arrays((n, 6, 5, 2), np.float64, mutate=False))
    y = data.draw(labels(n, loss))
    fit_and_predict(model, x, y, None, 1, dtype, one_step_lr=SMALL_MODEL_LR)


@fuzz(60)
@given(st.sampled_from(["maxpool", "kernelpool", "adam"]), POOL_SIZES, POOL_SIZES,
       POOL_PADDINGS, st.sampled_from(["max", "mean", "sum", "min", None, ["max"], 0]),
       HYPER, HYPER, HYPER, HYPER)
def test_pooling_layers_and_adam_construction(kind, pool_size, strides, padding, mode,
                                              lr, b1, b2, eps):
    make = {
        "maxpool": lambda: MaxPooling2D(pool_size, strides=strides, padding=padding),
        "kernelpool": lambda: KernelPooling(mode),
        "adam": lambda: cconv.optimizers.Adam(lr, b1, b2, eps),
    }[kind]
    ok, made = outcome(make)
    if not ok:
        return
    if kind == "adam":  # two steps on one array agree with the oracle's Adam
        assert 0 < lr < np.inf and 0 <= b1 < 1 and 0 <= b2 < 1 and 0 < eps < np.inf
        rng = np.random.default_rng(0)
        p, want = rng.uniform(-1, 1, 6), None
        want, m, v = p.copy(), np.zeros(6), np.zeros(6)
        for t in (1, 2):
            g = rng.uniform(-1, 1, 6)
            made.update([p], [g])
            with np.errstate(all="ignore"):
                oracle.adam_update(want, g, m, v, t, float(lr), float(b1), float(b2),
                                   float(eps))
        np.testing.assert_allclose(p, want, rtol=1e-9, atol=1e-12)
        return
    model_layers = [Input((5, 4, 3)), made, Flatten(), Dense(3, activation="softmax")]
    ok, model = outcome(lambda: cconv.Sequential(model_layers))
    if not ok:
        return
    x = np.random.default_rng(0).uniform(-1, 1, (4, 5, 4, 3))
    ok, probs = outcome(lambda: model.predict(x))
    assert ok, probs  # a model that built must run on valid data
    np.testing.assert_allclose(probs, reference_predict(model, x), rtol=1e-4, atol=1e-5)


def pool_model(dtype, pool_size, padding, mode, optimizer):
    cconv.utils.set_random_seed(0)
    model = cconv.Sequential([Input((6, 5, 2)), Conv2D(3, 3, activation="tanh",
                                                       padding="same"),
                              MaxPooling2D(pool_size, padding=padding), KernelPooling(mode),
                              Flatten(), Dense(4, activation="softmax")], dtype=dtype)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    return model


@fuzz(30)
@given(st.sampled_from(["float32", "float64"]), st.sampled_from([1, 2, (2, 3), (3, 1)]),
       st.sampled_from(["valid", "same"]), st.sampled_from(["max", "mean", "sum"]),
       st.sampled_from([1e-3, 0.1, 10.0]), st.integers(1, 9), BATCH,
       st.sampled_from([1, 2, 0, None]), st.data())
def test_pool_model_fit_predict(dtype, pool_size, padding, mode, lr, n, batch_size, epochs,
                                data):
    model = pool_model(dtype, pool_size, padding, mode, cconv.optimizers.Adam(lr))
    x = data.draw(arrays((n, 6, 5, 2), np.float64))
    y = data.draw(labels(n, "sparse_categorical_crossentropy"))
    fit_and_predict(model, x, y, batch_size, epochs, dtype)



# --- files ------------------------------------------------------------------------------


def weights_model():
    cconv.utils.set_random_seed(1)
    return cconv.Sequential([Input((5, 5, 1)), Conv2D(2, 3, activation="tanh"), Flatten(),
                             Dense(3, activation="softmax")])


@st.composite
def damaged(draw, blob):
    """blob truncated, with a bit flipped, with bytes overwritten, or replaced."""
    how = draw(st.sampled_from(["truncate", "flip", "flip", "overwrite", "random", "append"]))
    b = bytearray(blob)
    if how == "truncate":
        return bytes(b[:draw(st.integers(0, len(b) - 1))])
    if how == "flip":
        i = draw(st.integers(0, len(b) - 1))
        b[i] ^= 1 << draw(st.integers(0, 7))
        return bytes(b)
    if how == "overwrite":
        i = draw(st.integers(0, len(b) - 1))
        chunk = draw(st.binary(min_size=1, max_size=16))
        b[i:i + len(chunk)] = chunk
        return bytes(b)
    if how == "append":
        return bytes(b) + draw(st.binary(min_size=1, max_size=32))
    return draw(st.binary(max_size=300))


@st.composite
def weight_arrays(draw):
    """A weights file's arrays with some missing, extra, reshaped or of another dtype."""
    model = weights_model()
    arrays_ = {f"{i:03d}.{layer.name}.{k}": layer.params[k]
               for i, (layer, k) in enumerate(model._weight_keys())}
    keys = sorted(arrays_)
    key = draw(st.sampled_from(keys))
    how = draw(st.sampled_from(["drop", "extra", "reshape", "dtype", "nan", "rename"]))
    if how == "drop":
        del arrays_[key]
    elif how == "extra":
        arrays_["999.extra.kernel"] = np.zeros(3)
    elif how == "reshape":
        arrays_[key] = arrays_[key].reshape(-1)[:max(arrays_[key].size - 1, 1)]
    elif how == "dtype":
        dtype = draw(st.sampled_from(OTHER_DTYPES))
        arrays_[key] = cast(arrays_[key].astype(np.float64), dtype)
    elif how == "nan":
        arrays_[key] = arrays_[key].copy()
        arrays_[key].flat[0] = np.nan
    else:
        arrays_[key.replace(".", "_", 1)] = arrays_.pop(key)
    return arrays_


@fuzz(60)
@given(st.data())
def test_load_weights_of_damaged_files(data):
    model = weights_model()
    saved = model.get_weights()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "w.npz")
        written = None
        if data.draw(st.booleans()):
            model.save_weights(path)
            with open(path, "rb") as f:
                blob = data.draw(damaged(f.read()))
        else:
            buf = io.BytesIO()
            written = data.draw(weight_arrays())
            np.savez(buf, **written)
            blob = buf.getvalue()
        with open(path, "wb") as f:
            f.write(blob)
        target = weights_model()
        target.set_weights([np.zeros_like(w) for w in saved])
        ok, err = outcome(lambda: target.load_weights(path))
        if ok:  # the damage missed the data (zip CRCs guard it): the file's weights loaded
            if written is not None:  # another float dtype (float16...) is valid: it is cast
                saved = [written[k].astype(w.dtype) for k, w in zip(sorted(written), saved)]
            for a, b in zip(saved, target.get_weights()):
                assert np.array_equal(a, b)
        else:
            assert path in str(err)
            assert all(not w.any() for w in target.get_weights())  # left as they were


def idx_blob(arr, gz):
    raw = struct.pack(f">I{arr.ndim}I", 2051 if arr.ndim == 3 else 2049, *arr.shape)
    raw += arr.tobytes()
    return gzip.compress(raw, mtime=0) if gz else raw


IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")


@fuzz(60)
@given(st.sampled_from(["gz", "raw", "npz"]), st.integers(0, 3), st.data())
def test_load_data_of_damaged_files(kind, which, data):
    rng = np.random.default_rng(which)
    arrays_ = {"x_train": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
               "y_train": rng.integers(0, 10, 3, dtype=np.uint8),
               "x_test": rng.integers(0, 256, (2, 28, 28), dtype=np.uint8),
               "y_test": rng.integers(0, 10, 2, dtype=np.uint8)}
    keys = list(arrays_)
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "npz":
            buf = io.BytesIO()
            np.savez(buf, **arrays_)
            with open(os.path.join(tmp, "mnist.npz"), "wb") as f:
                f.write(data.draw(damaged(buf.getvalue())))
            names = ["mnist.npz"]
        else:
            names = [n + (".gz" if kind == "gz" else "") for n in IDX_NAMES]
            for i, (key, name) in enumerate(zip(keys, names)):
                blob = idx_blob(arrays_[key], kind == "gz")
                if i == which:
                    blob = data.draw(damaged(blob))
                with open(os.path.join(tmp, name), "wb") as f:
                    f.write(blob)
        try:
            (xtr, ytr), (xte, yte) = mnist.load_data(tmp)
        except mnist.DatasetError as exc:
            damaged_name = names[0] if kind == "npz" else names[which]
            assert damaged_name in str(exc)
            return
        except mnist.DatasetNotFoundError:  # a damaged zip may look like no npz at all
            assert kind == "npz"
            return
        got = {"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte}
        for key in keys:
            assert got[key].dtype == np.uint8 and got[key].flags.c_contiguous
        if kind != "raw":  # gzip and zip carry CRCs: success means the data is intact
            for key in keys:
                assert np.array_equal(got[key], arrays_[key])
        else:  # raw IDX has no checksum: a flipped pixel loads, but every check holds
            assert xtr.shape[1:] == (28, 28) and len(xtr) == len(ytr) and ytr.max() <= 9
