"""The merge ops (cconv/ops/merge.py: add, subtract, multiply, average, maximum,
concatenate and their gradients) against cconv.oracle, bit for bit (the same IEEE
operations in the same order), against values worked out by hand (ties, NaN, signed
zeros) and against finite differences; the same bits on 1 and 2 threads and at every CPU
level; new arrays for every gradient; bad input named."""

import numpy as np
import pytest

import cconv
from cconv import ops, oracle
from conftest import DTYPES, assert_same_bits_at_every_level, numerical_grad, rel_error

FOLDS = ["add", "multiply", "average", "maximum"]  # n inputs of one shape
WITH_INPUTS = ["multiply", "maximum"]  # whose gradients need the inputs
# shapes: one element, a vector's tail, a block and one more, several blocks
SHAPES = [(1,), (7, 3), (4097,), (3, 5000)]


def inputs(rng, k, shape, dtype):
    return [rng.standard_normal(shape).astype(dtype) for _ in range(k)]


def backward(module, name, xs, g):
    """module's gradients of merge `name` on xs, given grad_out g."""
    if name in WITH_INPUTS:
        return getattr(module, name + "_backward")(xs, g)
    if name == "subtract":
        return module.subtract_backward(g)
    return getattr(module, name + "_backward")(g, len(xs))


def assert_same(got, want):
    """The same dtype, shape and bits (NaN where NaN, the sign of every zero)."""
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes() or np.array_equal(got, want, equal_nan=True) \
        and np.array_equal(np.signbit(got), np.signbit(want))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("k", [1, 2, 3, 5])
@pytest.mark.parametrize("name", FOLDS)
def test_fold_is_its_oracle_twin(rng, dtype, shape, k, name):
    xs = inputs(rng, k, shape, dtype)
    g = rng.standard_normal(shape).astype(dtype)
    assert_same(getattr(ops, name)(xs), getattr(oracle, name)(xs))
    got, want = backward(ops, name, xs, g), backward(oracle, name, xs, g)
    assert len(got) == len(want) == k
    for a, b in zip(got, want):
        assert_same(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_subtract_is_its_oracle_twin(rng, dtype, shape):
    a, b = inputs(rng, 2, shape, dtype)
    g = rng.standard_normal(shape).astype(dtype)
    assert_same(ops.subtract(a, b), oracle.subtract(a, b))
    for got, want in zip(ops.subtract_backward(g), oracle.subtract_backward(g)):
        assert_same(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes, axis", [
    ([(2, 3), (2, 5)], -1), ([(2, 3), (2, 5), (2, 1)], 1), ([(4, 3), (1, 3)], 0),
    ([(2, 3, 4, 5), (2, 1, 4, 5), (2, 2, 4, 5)], 1), ([(2, 3, 4, 5), (2, 3, 1, 5)], -2),
    ([(2, 3, 4, 5)], -1)])
def test_concatenate_is_its_oracle_twin(rng, dtype, shapes, axis):
    xs = [rng.standard_normal(s).astype(dtype) for s in shapes]
    y = ops.concatenate(xs, axis)
    assert_same(y, oracle.concatenate(xs, axis))
    g = rng.standard_normal(y.shape).astype(dtype)
    got = ops.concatenate_backward(g, shapes, axis)
    want = oracle.concatenate_backward(g, shapes, axis)
    assert [a.shape for a in got] == shapes
    for a, b in zip(got, want):
        assert_same(a, b)
        assert a.flags.c_contiguous


@pytest.mark.parametrize("module", [ops, oracle])
def test_values_worked_out_by_hand(module):
    a = np.array([1.0, 5.0, 2.0, -1.0])
    b = np.array([1.0, 5.0, 7.0, 0.5])
    c = np.array([0.0, 5.0, 7.0, 4.0])
    g = np.array([10.0, 20.0, 30.0, 40.0])
    xs = [a, b, c]
    np.testing.assert_array_equal(module.add(xs), [2.0, 15.0, 16.0, 3.5])
    np.testing.assert_array_equal(module.subtract(a, b), [0.0, 0.0, -5.0, -1.5])
    np.testing.assert_array_equal(module.multiply(xs), [0.0, 125.0, 98.0, -2.0])
    np.testing.assert_array_equal(module.average(xs), [2 / 3, 5.0, 16 / 3, 3.5 / 3])
    np.testing.assert_array_equal(module.maximum(xs), [1.0, 5.0, 7.0, 4.0])
    # ties go to the first input holding the maximum, whole
    want = [[10.0, 20.0, 0.0, 0.0], [0.0, 0.0, 30.0, 0.0], [0.0, 0.0, 0.0, 40.0]]
    for got, w in zip(module.maximum_backward(xs, g), want):
        np.testing.assert_array_equal(got, w)
    # d(abc)/da = bc, and so on
    for got, w in zip(module.multiply_backward(xs, g), (b * c * g, a * c * g, a * b * g)):
        np.testing.assert_array_equal(got, w)
    for got, w in zip(module.subtract_backward(g), (g, -g)):
        np.testing.assert_array_equal(got, w)
    for got in module.average_backward(g, 3):
        np.testing.assert_array_equal(got, g / 3)
    for got in module.add_backward(g, 3):
        np.testing.assert_array_equal(got, g)
    np.testing.assert_array_equal(module.concatenate([a[None], b[None, :2]], axis=-1),
                                  [[1.0, 5.0, 2.0, -1.0, 1.0, 5.0]])
    first, second = module.concatenate_backward(np.arange(12.0).reshape(2, 6),
                                                [(2, 4), (2, 2)], axis=1)
    np.testing.assert_array_equal(first, [[0, 1, 2, 3], [6, 7, 8, 9]])
    np.testing.assert_array_equal(second, [[4, 5], [10, 11]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_maximum_of_nan_and_signed_zeros(dtype):
    """NaN wins wherever an input has it (np.maximum's rule), and its gradient goes to the
    first NaN; of -0 and +0, which compare equal, the first input's is kept."""
    nan = np.nan
    a = np.array([nan, 1.0, -0.0, 0.0, 2.0], dtype)
    b = np.array([3.0, nan, 0.0, -0.0, nan], dtype)
    c = np.array([nan, nan, 0.0, 0.0, 1.0], dtype)
    g = np.array([1.0, 2.0, 3.0, 4.0, 5.0], dtype)
    y = ops.maximum([a, b, c])
    assert np.array_equal(y, [nan, nan, 0.0, 0.0, nan], equal_nan=True)
    assert list(np.signbit(y[2:4])) == [True, False]
    want = [[1, 0, 3, 4, 0], [0, 2, 0, 0, 5], [0, 0, 0, 0, 0]]
    for module in (ops, oracle):
        for got, w in zip(module.maximum_backward([a, b, c], g), want):
            np.testing.assert_array_equal(got, np.array(w, dtype))
    assert_same(y, oracle.maximum([a, b, c]))


def test_average_divides_as_keras():
    """(a + b + c) / 3, rounded once: not the sum times 1/3, which rounds twice."""
    x = [np.float32([2, 4, 7, 9]), np.float32([1, 2, 3, 4]), np.float32([2, 1, 0, 1])]
    total = np.float32([5, 7, 10, 14])
    assert not np.any(total * np.float32(1 / 3) == total / np.float32(3))
    np.testing.assert_array_equal(ops.average(x), total / np.float32(3))


@pytest.mark.parametrize("module", [ops, oracle])
@pytest.mark.parametrize("name, k", [("add", 3), ("multiply", 1), ("multiply", 2),
                                     ("multiply", 4), ("average", 3), ("maximum", 1),
                                     ("maximum", 3), ("subtract", 2)])
def test_gradients_are_finite_differences(module, name, k):
    rng = np.random.default_rng(5)
    xs = inputs(rng, k, (3, 4), np.float64)
    r = rng.standard_normal((3, 4))
    forward = (lambda: module.subtract(*xs)) if name == "subtract" else \
        (lambda: getattr(module, name)(xs))
    loss = lambda: float((forward() * r).sum())
    for x, grad in zip(xs, backward(module, name, xs, r)):
        assert rel_error(grad, numerical_grad(loss, x)) < 1e-7


@pytest.mark.parametrize("module", [ops, oracle])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concatenate_gradient_is_finite_differences(module, axis):
    rng = np.random.default_rng(6)
    shapes = [(2, 3, 2), (2, 3, 2), (2, 3, 2)]
    shapes = [tuple(s[i] + j * (i == axis % 3) for i in range(3)) for j, s in
              enumerate(shapes)]
    xs = [rng.standard_normal(s) for s in shapes]
    r = rng.standard_normal(module.concatenate(xs, axis).shape)
    loss = lambda: float((module.concatenate(xs, axis) * r).sum())
    for x, grad in zip(xs, module.concatenate_backward(r, shapes, axis)):
        assert rel_error(grad, numerical_grad(loss, x)) < 1e-7


@pytest.mark.parametrize("name", ["add", "subtract", "multiply", "average", "maximum",
                                  "concatenate"])
def test_every_gradient_is_a_new_array(rng, name):
    """The caller may add into each gradient in place: none may be grad_out, another
    input's gradient, or an input."""
    xs = inputs(rng, 2 if name == "subtract" else 3, (4, 5), np.float32)
    g = rng.standard_normal((4, 5 * len(xs) if name == "concatenate" else 5)).astype(
        np.float32)
    grads = ops.concatenate_backward(g, [x.shape for x in xs]) if name == "concatenate" \
        else backward(ops, name, xs, g)
    others = [g, *xs]
    for i, a in enumerate(grads):
        for b in grads[i + 1:] + others:
            assert not np.may_share_memory(a, b)


def test_strided_and_list_inputs(rng):
    x = rng.standard_normal((6, 8))
    y = rng.standard_normal((6, 4))
    assert_same(ops.add([x[:, ::2], y]), x[:, ::2] + y)
    assert_same(ops.maximum([[1, 4], [3, 2]]), np.array([3.0, 4.0]))


def test_merges_same_bits_on_one_and_two_threads(rng, threads):
    xs = inputs(rng, 3, (5, 20_011), np.float32)
    g = rng.standard_normal(xs[0].shape).astype(np.float32)
    results = []
    for n in (1, 2):
        cconv.set_num_threads(n)
        results.append([ops.subtract(xs[0], xs[1])]
                       + [getattr(ops, name)(xs) for name in FOLDS]
                       + [a for name in WITH_INPUTS for a in backward(ops, name, xs, g)])
    for a, b in zip(*results):
        assert_same(a, b)


LEVEL_SCRIPT = """
import sys
import numpy as np
from cconv import ops
out = {}
for dtype in (np.float32, np.float64):
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal(9001).astype(dtype) for _ in range(4)]
    xs[1][::7] = xs[0][::7]  # ties
    g = rng.standard_normal(9001).astype(dtype)
    name = np.dtype(dtype).name
    out[name + ".subtract"] = ops.subtract(xs[0], xs[1])
    for op in ("add", "multiply", "average", "maximum"):
        out[f"{name}.{op}"] = getattr(ops, op)(xs)
    for op in ("multiply_backward", "maximum_backward"):
        for i, a in enumerate(getattr(ops, op)(xs, g)):
            out[f"{name}.{op}.{i}"] = a
np.savez(sys.argv[1], **out)
"""


def test_merges_same_bits_at_every_level(tmp_path):
    """Plain IEEE operations, nothing fused: every level, the x86-64 default's included,
    gives the same bits."""
    assert_same_bits_at_every_level(tmp_path, LEVEL_SCRIPT)


ONE = np.ones(3)
F32 = np.ones(3, np.float32)


@pytest.mark.parametrize("call, error, match", [
    (lambda: ops.add([]), ValueError, r"xs: expected at least 1 array, got 0"),
    (lambda: ops.maximum(ONE), TypeError, r"xs: expected a list of arrays, got ndarray"),
    (lambda: ops.multiply([ONE, F32]), TypeError, r"xs\[1\]: expected dtype float64"),
    (lambda: ops.average([ONE, np.ones(4)]), ValueError,
     r"xs\[1\]: expected shape \(3,\) to match xs\[0\], got \(4,\)"),
    (lambda: ops.add([ONE, ONE, np.ones((3, 1))]), ValueError,
     r"xs\[2\]: expected shape \(3,\)"),
    (lambda: ops.add([np.ones(3, np.int32)]), TypeError, r"xs\[0\]: expected dtype float32 or"),
    (lambda: ops.subtract(ONE, np.ones(4)), ValueError, r"b: expected shape \(3,\) to match a"),
    (lambda: ops.subtract(ONE, F32), TypeError, r"b: expected dtype float64"),
    (lambda: ops.multiply_backward([ONE, ONE], np.ones(4)), ValueError,
     r"grad_out: expected shape \(3,\) to match xs"),
    (lambda: ops.maximum_backward([ONE, ONE], F32), TypeError, r"grad_out: expected dtype"),
    (lambda: ops.maximum_backward([], ONE), ValueError, r"xs: expected at least 1"),
    (lambda: ops.add_backward(ONE, 0), ValueError, r"n: expected the number of inputs"),
    (lambda: ops.average_backward(ONE, 2.0), ValueError, r"n: expected the number of inputs"),
    (lambda: ops.concatenate([], -1), ValueError, r"xs: expected at least 1 array"),
    (lambda: ops.concatenate([np.ones((2, 3)), np.ones((3, 3))], -1), ValueError,
     r"xs\[1\]: expected shape \(2, 3\) on every axis but -1"),
    (lambda: ops.concatenate([np.ones((2, 3)), np.ones((2, 3, 1))]), ValueError,
     r"xs\[1\]: expected shape \(2, 3\)"),
    (lambda: ops.concatenate([np.ones((2, 3))], 2), ValueError,
     r"axis: expected an int in \[-2, 2\) for arrays of 2 dimensions, got 2"),
    (lambda: ops.concatenate([np.ones((2, 3))], 1.0), TypeError, r"axis: expected an int"),
    (lambda: ops.concatenate([np.float64(1.0)]), ValueError, r"xs\[0\]: expected an array of"),
    (lambda: ops.concatenate_backward(np.ones((2, 5)), [(2, 3), (2, 3)]), ValueError,
     r"x_shapes: their sizes along axis -1 add up to 6, grad_out has 5"),
    (lambda: ops.concatenate_backward(np.ones((2, 5)), [(2, 3), (3, 2)]), ValueError,
     r"x_shapes\[1\]: expected shape \(2, 5\) on every axis but -1"),
    (lambda: ops.concatenate_backward(np.ones((2, 5)), (2, 5)), TypeError,
     r"x_shapes: expected a non-empty list of shapes"),
])
def test_bad_merge_input_is_named(call, error, match):
    with pytest.raises(error, match=match):
        call()
