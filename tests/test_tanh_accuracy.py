"""Accuracy of cconv's own tanh (cconv/_kernels/_simd.pxd), at the level this run picked.

float64: error <= 2 ulp against np.tanh in long double (x87's 64-bit significand on
x86-64, quad on aarch64 Linux: its own error is far below a float64 ulp). Where long
double is plain double, the reference is libm's tanh (< 1 ulp) and the bound 3 ulp.
float32: error < 3.7e-7 against float64 tanh (< 3.9e-7 on the x86-64 default level, which
has no FMA), never past +-1, odd; tools/check_tanh.py checks every float32 in [0, 12] at
every built level.
"""
import platform

import numpy as np

import cconv
from cconv import ops

LONG_DOUBLE = np.finfo(np.longdouble).nmant > np.finfo(np.float64).nmant
MAX_ULP = 2.0 if LONG_DOUBLE else 3.0
SMALL = 0.625   # the float64 kernel's switch from its polynomial to exp
SATURATE = 19.5  # past it the kernel clamps; tanh rounds to 1 from 19.06
NO_FMA = cconv.cpu_capability() == "default" and platform.machine() in ("x86_64", "AMD64")
FLOAT32_BOUND = 3.9e-7 if NO_FMA else 3.7e-7


def ulp_error(x):
    """|cconv tanh - reference| in ulps of the reference (the smaller ulp at a power of
    two, so an error is never undercounted)."""
    got = ops.tanh(x)
    ref = np.tanh(x.astype(np.longdouble))
    ulp = np.spacing(np.nextafter(np.abs(ref.astype(np.float64)), 0))
    return got, np.abs(got.astype(np.longdouble) - ref) / ulp.astype(np.longdouble)


def around(v, steps):
    """v and its neighbours up to `steps` float64 ulps away on each side."""
    v = np.float64(v)
    up, down = [v], [v]
    for _ in range(steps):
        up.append(np.nextafter(up[-1], np.inf))
        down.append(np.nextafter(down[-1], -np.inf))
    return np.array(down[::-1] + up[1:])


def float64_points():
    rng = np.random.default_rng(11)
    magnitude = 2.0 ** rng.uniform(-1074, 6, 200_000)  # every binade, subnormals to 64
    return np.concatenate([
        magnitude * rng.choice([-1.0, 1.0], magnitude.size),
        rng.uniform(-1, 1, 200_000),
        rng.uniform(-SATURATE - 1, SATURATE + 1, 200_000),
        around(SMALL, 2000), -around(SMALL, 2000),
        around(19.06, 500), around(SATURATE, 50),
        around(2.0 ** -27, 50), around(2.0 ** -26, 50),
        # where exp's reduction j = round(2|x| / ln2) steps
        np.concatenate([around((k + 0.5) * np.log(2) / 2, 20) for k in range(1, 57)]),
    ])


def test_float64_within_2_ulp():
    x = float64_points()
    got, err = ulp_error(x)
    worst = int(np.argmax(err))
    assert err[worst] <= MAX_ULP, f"tanh({x[worst]!r}) = {got[worst]!r}: {float(err[worst]):.3f} ulp"
    assert np.all(np.abs(got) <= 1)


def test_float64_vector_body_and_scalar_tail_agree():
    # an odd length leaves a tail at every vector width; one element is all tail
    x = float64_points()[:100_001]
    whole = ops.tanh(x)
    one_by_one = np.concatenate([ops.tanh(x[i:i + 1]) for i in range(0, x.size, 997)])
    assert np.array_equal(whole[::997].view(np.uint64), one_by_one.view(np.uint64))


def test_float64_special_values():
    tiny = np.array([5e-324, 1e-310, 2.2250738585072014e-308, 1e-300, 1e-20, 2.0 ** -28])
    x = np.concatenate([tiny, -tiny])
    assert np.array_equal(ops.tanh(x), x)  # tanh(x) rounds to x; subnormals kept
    zeros = ops.tanh(np.array([0.0, -0.0]))
    assert np.array_equal(np.signbit(zeros), [False, True]) and np.all(zeros == 0)
    big = np.array([19.07, 19.5, 20.0, 710.0, 1e300, np.inf])
    assert np.array_equal(ops.tanh(np.concatenate([big, -big])),
                          np.concatenate([np.ones(6), -np.ones(6)]))


def test_float64_odd():
    x = float64_points()
    assert np.array_equal(ops.tanh(-x), -ops.tanh(x))


def float32_sample():
    # a stride through every float32 bit pattern of [0, 12], plus its negation
    bits = np.arange(0, np.float32(12).view(np.uint32) + 1, 251, dtype=np.uint32)
    x = bits.view(np.float32)
    return np.concatenate([x, -x])


def test_float32_accuracy_claim():
    x = float32_sample()
    got = ops.tanh(x)
    err = np.abs(got.astype(np.float64) - np.tanh(x.astype(np.float64)))
    worst = int(np.argmax(err))
    assert err[worst] < FLOAT32_BOUND, f"tanh({x[worst]!r}) = {got[worst]!r}: error {err[worst]:.3g}"
    assert np.all(np.abs(got) <= 1)
    assert np.array_equal(ops.tanh(-x), -got)
