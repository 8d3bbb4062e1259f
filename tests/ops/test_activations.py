"""Every elementwise activation of cconv/activations.py's table (ops.activation,
ops.activation_backward) against cconv.oracle, in both dtypes: errors in ulp on a dense
grid, the edges (+-0, subnormals, huge values, +-inf, NaN), the backward pass against
finite differences of the oracle's forward; the same bits at 1 and 2 threads and in
place; unknown names and codes refused; the compiled table equal to the Python one.

The tests parametrise over activations.ELEMENTWISE, so a new row is tested by itself.

Accuracy. `PYTHONPATH=. python tests/ops/test_activations.py` measures, on grid()
(linspace(-30, 30, 400001) and 20001 geometric steps from the smallest subnormal to the
largest finite value, both signs), the largest error of each activation against the
oracle (the table's formula in long double, rounded to the dtype), in ulp of the
oracle's value (the count of floats between the two):
  fwd     forward, where the oracle's value is at least 2^8 times the smallest normal;
  tiny    forward, below that: subnormal results, and results computed from subnormal
          intermediates (silu's x sigmoid(x) for x < -87 in float32), whose relative
          error is that of a subnormal number;
  bwd     backward, grad_out = 1: the derivatives that cross zero (gelu's at -0.75,
          silu's at -1.28, mish's at -1.19, hard_silu's at -1.5) or that come from the
          output as 1 - y*y (tanh near +-1) lose their relative accuracy to cancellation
          there, so for them an element also passes within
  abs     ulp of grad_out (eps |grad_out|), which is the largest absolute error.
Measured at the avx512 level (the FMA levels give the same bits, tests/test_levels.py):

  activation     float32: fwd  tiny  bwd   abs  | float64: fwd  tiny  bwd   abs
  linear                   0    0     0     0              0    0     0     0
  tanh                     5    0   1e3   0.5              1    0   3e7   0.5
  relu                     0    0     0     0              0    0     0     0
  sigmoid                  2    0     1   0.1              2    0     1   0.1
  softplus                 3    1     2   0.5              3    0     2   0.5
  softsign                 1    0     3   1.5              1    0     3   1.5
  elu                      1    0     1   0.5              2    0     1   0.5
  selu                     2    1     2     2              2    1     2     2
  celu                     1    0     1   0.5              2    0     1   0.5
  gelu                     5    8   1e5     1              6   19   7e4   1.5
  silu                     3   48   3e4     2              3   86   5e4     2
  leaky_relu               1    1     0     0              1    0     0     0
  relu6                    0    0     0     0              0    0     0     0
  hard_sigmoid             1    0     0     0              1    0     0     0
  hard_silu                2    0   6e8     1              2    0   1e14    1
  hard_tanh                0    0     0     0              0    0     0     0
  exponential              1    0     0     0              1    0     0     0
  mish                     5  142   1e4     3              4   86   6e3     1
  log_sigmoid              3    1     2   0.5              3    0     3   0.5
  tanh_shrink             16    2     9   4.5             10    1     3     1
  squareplus               3    0     4     1              3    0     4     1
  sparse_plus              2    0     0     0              1    0     0     0

  The tiny column's largest values come from dense grids near the underflow (silu and
  mish below -85 in float32, -700 in float64), where x times a subnormal rounds twice.
  The x86-64 default level, without FMA, rounds its multiply-adds twice: its errors
  stay within the same bounds.
The bounds asserted (BOUNDS) are these with a margin.

NaN. Keras 3 on jax gives NaN for NaN for every activation. cconv's kernels do too,
except where a compare-select maps NaN to a constant: relu, relu6 and hard_sigmoid give
0 (relu6's kernel says so, and hard_sigmoid is relu6(x + 3) / 6) (NAN_FORWARD). The
backward passes give NaN, or the value of the derivative's own compare-select, which is
the oracle's (relu's 0, leaky_relu's slope...), or NAN_BACKWARD's.
"""
import sys

import numpy as np
import pytest

import cconv
from cconv import activations, ops, oracle
from cconv._kernels import _config, _elementwise

ELEMENTWISE = activations.ELEMENTWISE
DTYPES = [np.float32, np.float64]
DTYPE_NAMES = {np.float32: "float32", np.float64: "float64"}

# The largest errors allowed, a little above those measured (the docstring's table):
# name: {dtype: (fwd, fwd tiny, bwd, bwd abs)}, the first three in ulp of the oracle's
# value, the last in ulp of grad_out (an element of the backward pass passes when it is
# within either); a row not named here is held to DEFAULT_BOUND.
DEFAULT_BOUND = (4, 4, 4, 0)
TINY_ZONE = 2.0 ** 8  # fwd tiny: results below 2^8 times the smallest normal number
BOUNDS = {
    "tanh": {np.float32: (6, 1, 4, 1), np.float64: (2, 1, 4, 1)},
    "softsign": {np.float32: (2, 1, 4, 2), np.float64: (2, 1, 4, 2)},
    "gelu": {np.float32: (6, 12, 4, 2), np.float64: (8, 40, 4, 2)},
    "silu": {np.float32: (4, 64, 4, 3), np.float64: (4, 110, 4, 3)},
    "hard_silu": {np.float32: (3, 1, 4, 2), np.float64: (3, 1, 4, 2)},
    "mish": {np.float32: (6, 180, 4, 4), np.float64: (5, 110, 4, 2)},
    "squareplus": {np.float32: (4, 1, 6, 2), np.float64: (4, 1, 6, 2)},
    "tanh_shrink": {np.float32: (20, 3, 12, 0), np.float64: (12, 2, 4, 0)},
}

# NaN in, a value out, by a compare-select (see the docstring): forward, backward.
NAN_FORWARD = {"relu": 0.0, "relu6": 0.0, "hard_sigmoid": 0.0}
NAN_BACKWARD = {"hard_silu": 0.0}  # its slope's selects give 0, and hard_sigmoid's 0


def cases():
    """(name, dtype) for every elementwise activation and dtype."""
    return [pytest.param(name, dtype, id=f"{name}-{DTYPE_NAMES[dtype]}")
            for name in ELEMENTWISE for dtype in DTYPES]


def bounds(name, dtype):
    return BOUNDS.get(name, {}).get(dtype, DEFAULT_BOUND)


# ---- ulp ------------------------------------------------------------------------------
_INT = {np.dtype(np.float32): np.int32, np.dtype(np.float64): np.int64}


def _ordered(a):
    """The floats as integers in their order (-0 and +0 both 0)."""
    i = a.view(_INT[a.dtype]).astype(np.int64)
    return np.where(i < 0, -(i & np.iinfo(_INT[a.dtype]).max), i)


def ulp_distance(got, want):
    """How many floats of their dtype lie between got and want (as float64; 0 for two
    NaN, inf for one NaN)."""
    a, b = _ordered(np.asarray(got)), _ordered(np.asarray(want))
    same = (a >= 0) == (b >= 0)
    d = np.where(same, np.abs(np.where(same, a - b, 0)).astype(np.float64),
                 np.abs(a.astype(np.float64)) + np.abs(b.astype(np.float64)))
    nan_got, nan_want = np.isnan(got), np.isnan(want)
    return np.where(nan_got | nan_want, np.where(nan_got & nan_want, 0.0, np.inf), d)


def backward_errors(got, want, g, bound):
    """Per element, whether got is within bound[2] ulp of want or, failing that, within
    bound[3] ulp of g (an absolute allowance, for derivatives that cancel)."""
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(got.astype(np.float64) - want.astype(np.float64))
        absolute = err <= bound[3] * np.spacing(np.abs(g)).astype(np.float64)
    return (ulp_distance(got, want) <= bound[2]) | (absolute & ~np.isnan(err))


def grid(dtype):
    """linspace(-30, 30, 400001), and 20001 geometric steps from the smallest subnormal
    to the largest finite value, both signs."""
    info = np.finfo(dtype)
    with np.errstate(over="ignore"):
        far = np.geomspace(float(info.smallest_subnormal), float(info.max), 20001)
    x = np.concatenate([np.linspace(-30, 30, 400001), far, -far]).astype(dtype)
    return x[np.isfinite(x)]


def source(name, x, y):
    """What activation_backward takes for `name`: its input x or its output y."""
    return x if ops.gradient_from(name) == "input" else y


def measure(name, dtype, x=None, g=None):
    """The errors of the docstring's table on x (grid() by default), and the elements
    within bounds(name, dtype): fwd, fwd tiny, bwd, bwd abs, ok."""
    x = grid(dtype) if x is None else x
    g = np.ones_like(x) if g is None else g
    with np.errstate(all="ignore"):
        y, y_want = ops.activation(name, x), oracle.activation(name, x)
        s = source(name, x, y)
        b, b_want = ops.activation_backward(name, s, g), oracle.activation_backward(name, s, g)
        fwd = ulp_distance(y, y_want)
        tiny = np.abs(y_want) < TINY_ZONE * np.finfo(dtype).tiny
        bwd = ulp_distance(b, b_want)
        bwd_abs = np.abs(b.astype(np.float64) - b_want) / np.spacing(np.abs(g))
    bwd_abs = np.where(b == b_want, 0.0, bwd_abs)
    bound = bounds(name, dtype)
    ok = np.where(tiny, fwd <= bound[1], fwd <= bound[0]) & backward_errors(b, b_want, g, bound)
    return (float(np.max(fwd[~tiny], initial=0)), float(np.max(fwd[tiny], initial=0)),
            float(np.max(bwd)), float(np.max(bwd_abs)), ok)


@pytest.mark.parametrize("name, dtype", cases())
def test_accuracy_in_ulp_on_a_dense_grid(name, dtype):
    *errors, ok = measure(name, dtype)
    x = grid(dtype)
    assert ok.all(), f"{name} {DTYPE_NAMES[dtype]}: errors (fwd, fwd tiny, bwd, bwd abs) " \
                     f"{errors} ulp, bounds {bounds(name, dtype)}, first at x = {x[~ok][:5]}"


@pytest.mark.parametrize("name, dtype", cases())
@pytest.mark.parametrize("size", [1, 7, 33, 4096 * 2 + 5])
def test_random_data_against_the_oracle(rng, name, dtype, size):
    """Random inputs (with the shapes' tails a lane at a time) and random grad_out,
    which the grid's grad_out = 1 does not exercise."""
    x = (rng.standard_normal(size) * rng.choice([1, 4, 12], size)).astype(dtype)
    g = rng.standard_normal(size).astype(dtype)
    y = ops.activation(name, x)
    assert y.dtype == x.dtype and y.shape == x.shape
    *errors, ok = measure(name, dtype, x, g)
    assert ok.all(), f"errors {errors} ulp, bounds {bounds(name, dtype)}, at x = {x[~ok][:5]}"
    assert ops.activation(name, x.reshape(size, 1, 1)).tobytes() == y.tobytes()


def edges(dtype):
    info = np.finfo(dtype)
    big = [1e4, 1e30, 3e38] if dtype == np.float32 else [1e4, 1e30, 1e300]
    values = [0.0, info.smallest_subnormal, info.tiny / 3, info.tiny, 1e-30, 1e-10, *big,
              float(info.max), np.inf]
    return np.array(values + [-v for v in values], dtype)


def expected_at(function, x, s):
    """function(s) by the oracle; at +-inf, where the formula gives NaN (inf / inf, 0 *
    inf), its limit: the value at +-max."""
    with np.errstate(all="ignore"):
        want = function(s)
        limit = function(np.where(np.isinf(s), np.copysign(np.finfo(s.dtype).max, s), s))
    return np.where(np.isnan(want) & np.isinf(s), limit, want)


@pytest.mark.parametrize("name, dtype", cases())
def test_edges(name, dtype):
    """+-0, subnormals, 1e-30, 1e4, 1e30, 3e38 (float32) or 1e300, +-max, +-inf: the
    oracle's values (at +-inf their limits) within the grid's bounds; NaN gives NaN
    or the documented value, never an error."""
    x = edges(dtype)
    g = np.full_like(x, 1.5)
    bound = bounds(name, dtype)
    with np.errstate(all="ignore"):
        y = ops.activation(name, x)
        want = expected_at(lambda a: oracle.activation(name, a), x, x)
        fwd = ulp_distance(y, want)
        assert np.all(fwd <= max(bound[:2])), \
            f"{name}: at x = {x[fwd > max(bound[:2])]} got {y[fwd > max(bound[:2])]}, " \
            f"want {want[fwd > max(bound[:2])]}"
        s = source(name, x, y)
        b = ops.activation_backward(name, s, g)
        b_want = expected_at(lambda a: oracle.activation_backward(name, a, g), s, s)
        ok = backward_errors(b, b_want, g, bound)
        assert ok.all(), f"{name}': at s = {s[~ok]} got {b[~ok]}, want {b_want[~ok]}"
        nan = np.array([np.nan, -np.nan], dtype)
        y_nan = ops.activation(name, nan)
        if name in NAN_FORWARD:
            assert np.all(y_nan == NAN_FORWARD[name]), y_nan
        else:
            assert np.all(np.isnan(y_nan)), y_nan
        s_nan = y_nan if ops.gradient_from(name) == "output" else nan
        b_nan = ops.activation_backward(name, s_nan, np.ones_like(nan))
        b_nan_want = NAN_BACKWARD.get(name, oracle.activation_backward(name, s_nan,
                                                                       np.ones_like(nan)))
        assert np.all(np.isnan(b_nan) | (b_nan == b_nan_want)), (b_nan, b_nan_want)


def test_nan_exceptions_name_activations_of_the_table():
    assert set(NAN_FORWARD) | set(NAN_BACKWARD) <= set(ELEMENTWISE)
    assert set(BOUNDS) <= set(ELEMENTWISE)


# ---- finite differences ----------------------------------------------------------------
FD_RANGE = 5.0
FD_STEP = 1e-5


def kinks(name):
    """Where the oracle's forward bends sharply on [-FD_RANGE - 0.5, FD_RANGE + 0.5]: its
    second difference at a step of 1e-4 above 0.05 (smooth curvature gives at most
    1e-4 max|f''|, 0.017 for exp(5); a jump J of the slope gives up to J)."""
    step = 1e-4
    t = np.arange(-FD_RANGE - 0.5, FD_RANGE + 0.5, step)
    f = oracle.activation(name, t)
    bend = np.abs(f[2:] - 2 * f[1:-1] + f[:-2]) / step
    return t[1:-1][bend > 0.05]


@pytest.mark.parametrize("name, dtype", cases())
def test_backward_against_finite_differences_of_the_oracle(rng, name, dtype):
    """grad_out * (f(x + h) - f(x - h)) / 2h in float64 (f the oracle's forward), at
    points more than 1e-3 from the kinks of relu-like activations."""
    x = rng.uniform(-FD_RANGE, FD_RANGE, 3000).astype(dtype)
    bent = kinks(name)
    if bent.size:
        near = np.abs(x[:, None].astype(np.float64) - bent[None, :]).min(axis=1) < 1e-3
        x = x[~near]
    g = rng.standard_normal(x.shape).astype(dtype)
    x64 = x.astype(np.float64)
    slope = (oracle.activation(name, x64 + FD_STEP)
             - oracle.activation(name, x64 - FD_STEP)) / (2 * FD_STEP)
    want = g.astype(np.float64) * slope
    got = ops.activation_backward(name, source(name, x, ops.activation(name, x)), g)
    # float32: the output y an activation's derivative is taken from is rounded (1e-7)
    rtol, atol = (1e-5, 2e-6) if dtype == np.float32 else (1e-7, 1e-8)
    err = np.abs(got - want)
    bad = err > rtol * np.abs(want) + atol * np.abs(g.astype(np.float64))
    assert not bad.any(), f"{name}' at x = {x[bad][:5]}: got {got[bad][:5]}, " \
                          f"finite differences {want[bad][:5]}"


# ---- determinism, in place -------------------------------------------------------------
@pytest.mark.parametrize("name, dtype", cases())
def test_same_bits_at_1_and_2_threads_and_in_place(rng, threads, name, dtype):
    n = 4096 * 3 + 37  # several of the kernels' blocks, and a tail
    x = (rng.standard_normal(n) * 10).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    results = []
    for count in (1, 2):
        cconv.set_num_threads(count)
        y = ops.activation(name, x)
        results.append((y, ops.activation_backward(name, source(name, x, y), g)))
    (y1, b1), (y2, b2) = results
    assert y1.tobytes() == y2.tobytes() and b1.tobytes() == b2.tobytes()
    out = np.full_like(x, np.nan)
    assert ops.activation(name, x, out=out) is out
    assert out.tobytes() == y1.tobytes()
    z = x.copy()
    assert ops.activation(name, z, out=z) is z
    assert z.tobytes() == y1.tobytes()


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_activations_module_functions_are_the_ops(rng, name):
    x = rng.standard_normal(50)
    want = ops.activation(name, x)
    row = activations.row(name)
    for alias in (name,) + row.aliases:
        assert activations.get(alias)(x).tobytes() == want.tobytes()
        assert getattr(activations, alias)(x).tobytes() == want.tobytes()
        assert activations.canonical(alias) == name


# ---- refusals, the compiled table ------------------------------------------------------
@pytest.mark.parametrize("bad", ["not_an_activation", "Tanh", "", 3])
def test_unknown_name_is_refused_naming_it(bad):
    x = np.ones(5, np.float32)
    with pytest.raises(ValueError, match=repr(bad).replace("(", r"\(")):
        ops.activation(bad, x)
    with pytest.raises(ValueError, match=repr(bad).replace("(", r"\(")):
        ops.activation_backward(bad, x, x)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("code", [-1, len(ELEMENTWISE), 999])
def test_kernel_refuses_an_unknown_code(dtype, code):
    """Never a linear copy, never a silent write: ValueError, out untouched."""
    x = np.linspace(-2, 2, 37).astype(dtype)
    out = np.full_like(x, 7.0)
    with pytest.raises(ValueError, match=str(code)):
        _elementwise.activation_forward(code, x, out, 1)
    assert np.all(out == 7.0)
    with pytest.raises(ValueError, match=str(code)):
        _elementwise.activation_backward(code, x, x, out, 1)
    assert np.all(out == 7.0)


def test_compiled_table_is_the_table():
    """setup.py renders the codes into the kernels at build time: a build older than the
    table (rebuild) or a renderer that drops a row fails here."""
    table = {row.name: (row.code, row.gradient_from) for row in activations.TABLE
             if row.code is not None}
    assert _config.ACTIVATIONS == table
    assert set(table) == set(ELEMENTWISE)
    # The kernels refuse codes outside 0..N-1, so the codes must be exactly those.
    assert sorted(code for code, _ in table.values()) == list(range(len(table)))
    for name in ELEMENTWISE:
        assert ops.gradient_from(name) == activations.row(name).gradient_from
        assert ops.KERNEL_ACTIVATIONS[name] == activations.row(name).code
    # A fused kernel keeps the output alone.
    assert all(activations.row(name).gradient_from == "output" for name in activations.FUSED)


def main():
    print("  activation     float32: fwd  sub  bwd  abs | float64: fwd  sub  bwd  abs")
    for name in ELEMENTWISE:
        cells = []
        for dtype in DTYPES:
            cells.append(" ".join(f"{v:4.3g}" for v in measure(name, dtype)[:4]))
        print(f"  {name:14s}        {cells[0]}          {cells[1]}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
