"""Winograd F(2x2, 5x5) and F(4x4, 3x3), the path of stride-1 5x5 and 3x3 convolutions with
enough channels and filters (forward, and the input gradient, a convolution of
grad_out), and F(5x5, 2x2) for the 5x5 kernel gradient, against cconv.oracle and finite
differences: partial tiles (sizes off the tile side), tiles that straddle the image
edge, images no larger than the kernel, channel and filter counts off the vector and
panel widths, blocks of tiles that span images; and the same bits on 1, 2 and 3 threads
and for any block size."""
import numpy as np
import pytest

import cconv
from cconv import activations, ops, oracle
from conftest import DTYPES, numerical_grad, tol

# tol() as for the direct GEMM path. Winograd's float32 error on the tutorial's conv2
# (C = 32, F = 64, normal data) is about 4x below its atol forward, 2x for the input
# gradient and 1.4x for the weight gradient at a batch of 50 (the direct path: 10x to
# 15x below).

CASES = [  # (N, H, W, C, F, K): K x K kernels
    (1, 14, 14, 32, 64, 5),  # the tutorial's second conv layer, batch 1
    (3, 14, 14, 32, 64, 5),  # 147 tiles in 'same': blocks of 48 tiles span images
    (1, 9, 7, 8, 16, 5),     # odd sizes: half tiles on the bottom and right edges
    (2, 11, 6, 9, 17, 5),    # C off the vector width, F one past a float32 panel
    (1, 5, 5, 10, 33, 5),    # image as large as the kernel: 'valid' has one pixel
    (2, 3, 4, 16, 20, 5),    # image smaller than the kernel ('same' only)
    (1, 6, 13, 33, 24, 5),   # C one past four float32 vectors
    (3, 13, 13, 32, 64, 3),  # the keras.io convnet's second conv layer: 11 = 2 x 4 + 3
    (1, 9, 7, 8, 16, 3),     # tiles of 1 to 3 rows and columns past the last whole one
    (2, 10, 6, 9, 17, 3),    # C off the vector width, F one past a float32 panel
    (1, 3, 3, 10, 33, 3),    # image as large as the kernel: 'valid' has one pixel
    (2, 2, 1, 16, 20, 3),    # image smaller than the kernel ('same' only)
]


@pytest.fixture
def calls(monkeypatch):
    """Counts the calls into the Winograd kernel, so that a test knows it ran."""
    seen = []
    kernel = ops.winograd._winograd.conv_forward

    def counted(*args):
        seen.append(args[0].shape)
        return kernel(*args)

    monkeypatch.setattr(ops.winograd._winograd, "conv_forward", counted)
    return seen


# 'valid' needs an image at least as large as the kernel
CASE_PADDINGS = [(case, padding) for case in CASES for padding in ("valid", "same")
                 if padding == "same" or min(case[1], case[2]) >= case[5]]


def inputs(rng, dtype, case, padding):
    n, h, w, c, f, ksize = case
    x = rng.standard_normal((n, h, w, c)).astype(dtype)
    k = rng.standard_normal((ksize, ksize, c, f)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype)
    g = rng.standard_normal(ops.conv_output_shape(x.shape, k.shape, padding)).astype(dtype)
    return x, k, b, g


# Every activation of the table, which the output transform applies in place: that code
# is the same at every tile, and the cases are there for the tiling, so the activations
# are spread over the cases (each tries the next PER_CASE of the table in turn, every one
# tried at least once per dtype) rather than multiplying them.
PER_CASE = -(-len(activations.ELEMENTWISE) // len(CASE_PADDINGS))
FORWARD_CASES = [(case, padding, tuple(activations.ELEMENTWISE[(i * PER_CASE + j)
                                                               % len(activations.ELEMENTWISE)]
                                       for j in range(PER_CASE)))
                 for i, (case, padding) in enumerate(CASE_PADDINGS)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case,padding,names", FORWARD_CASES,
                         ids=[f"case{CASES.index(c)}-{p}-{'+'.join(a)}"
                              for c, p, a in FORWARD_CASES])
def test_forward(rng, calls, dtype, case, padding, names):
    """Against the oracle; then with activations of the table, applied in place: the
    same bits as the elementwise op on the convolution's output
    (tests/ops/test_activations.py holds that op to the oracle)."""
    n, h, w, c, f, ksize = case
    x, k, b, _ = inputs(rng, dtype, case, padding)
    got = ops.conv2d(x, k, b, padding)
    assert calls == [x.shape]
    assert got.dtype == dtype
    np.testing.assert_allclose(got, oracle.conv2d(x, k, b, padding),
                               **tol(dtype, ksize * ksize * c))
    for activation in names:
        np.testing.assert_array_equal(ops.conv2d(x, k, b, padding, activation),
                                      ops.activation(activation, got),
                                      err_msg=f"activation={activation}")
    assert calls == [x.shape] * (1 + len(names))


def test_forward_cases_try_every_activation():
    assert {a for _, _, names in FORWARD_CASES for a in names} == set(activations.ELEMENTWISE)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ksize", [3, 5])
def test_forward_without_bias(rng, calls, dtype, ksize):
    x, k, _, _ = inputs(rng, dtype, (2, 10, 9, 12, 18, ksize), "same")
    np.testing.assert_allclose(ops.conv2d(x, k, None, "same"), oracle.conv2d(x, k, None, "same"),
                               **tol(dtype, ksize * ksize * 12))
    assert calls


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case,padding", CASE_PADDINGS)
def test_input_gradient(rng, calls, dtype, case, padding):
    n, h, w, c, f, ksize = case
    x, k, _, g = inputs(rng, dtype, case, padding)
    got = ops.conv2d_backward(x, k, g, padding)
    want = oracle.conv2d_backward(x, k, g, padding)
    if c >= ops.winograd.WINOGRAD_MIN_FILTERS:  # grad_out has F channels and gives C outputs
        assert g.shape in calls
    for arr, ref, terms in zip(got, want, (ksize * ksize * f, n * g.shape[1] * g.shape[2],
                                           n * g.shape[1] * g.shape[2])):
        assert arr.dtype == dtype and arr.shape == ref.shape
        np.testing.assert_allclose(arr, ref, **tol(dtype, terms))


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("ksize", [3, 5])
def test_finite_differences(rng, calls, padding, ksize):
    x, k, b, r = inputs(rng, np.float64, (2, 6, 7, 16, 16, ksize), padding)
    loss = lambda: float((oracle.conv2d(x, k, b, padding) * r).sum())
    grad_x, grad_w, _ = ops.conv2d_backward(x, k, r, padding)
    assert r.shape in calls  # the input gradient took Winograd
    # atol 1e-6: the loss sums ~700 terms of size ~10, and the centred differences of
    # such a sum carry ~1e-7 of rounding themselves.
    for got, arr in ((grad_x, x), (grad_w, k)):
        np.testing.assert_allclose(got, numerical_grad(loss, arr), rtol=1e-6, atol=1e-6)


def test_kernel_gradient_of_a_training_batch(rng, monkeypatch):
    """The tutorial's conv2 at its batch of 50, where the kernel gradient sums 2450
    tiles: in float32 per image, images in float64."""
    seen = []
    kernel = ops.winograd._winograd.conv5_backward_weights
    monkeypatch.setattr(ops.winograd._winograd, "conv5_backward_weights",
                        lambda *args: seen.append(1) or kernel(*args))
    x, k, _, g = inputs(rng, np.float32, (50, 14, 14, 32, 64, 5), "same")
    got = ops.conv2d_backward(x, k, g, "same", need_grad_x=False)[1]
    assert seen
    want = oracle.conv2d_backward(x.astype(np.float64), k.astype(np.float64),
                                  g.astype(np.float64), "same")[1]
    np.testing.assert_allclose(got, want, **tol(np.float32, 50 * 14 * 14))


# The integer transforms of _winograd.pyx.tp's docstring: B^T, shared, and A^T per kernel
# side (F(2, 5) and F(4, 3)).
BT = np.array([[2, 3, -4, -3, 2, 0], [0, 2, 5, 1, -2, 0], [0, 2, 1, -5, 2, 0],
               [0, -1, -2, 1, 2, 0], [0, -2, 1, 2, -1, 0], [0, 2, 3, -4, -3, 2]], dtype=float)
AT = {5: np.array([[1, 1, 1, 1, 2, 0], [0, 1, -1, 2, -1, 1]], dtype=float),
      3: np.array([[1, 1, 1, 1, 8, 0], [0, 1, -1, 2, -4, 0], [0, 1, 1, 4, 2, 0],
                   [0, 1, -1, 8, -1, 1]], dtype=float)}


@pytest.mark.parametrize("ksize", [3, 5])
def test_kernel_transform_is_exact(ksize):
    """G w G^T, sent through the integer input and output transforms, must give back
    w's correlation: the 1-D F(m, K) in exact float64 on small integers."""
    at = AT[ksize]
    rng = np.random.default_rng(0)
    d, g = rng.integers(-9, 9, 6).astype(float), rng.integers(-9, 9, ksize).astype(float)
    want = [g @ d[i:i + ksize] for i in range(len(at))]
    got = at @ ((ops.winograd.WINOGRAD_G[ksize] @ g) * (BT @ d))
    np.testing.assert_allclose(got, want, rtol=1e-14)


@pytest.mark.parametrize("ksize", [3, 5])
def test_kernel_transform_is_the_solution(ksize):
    """G is determined by B^T and A^T: A^T diag(G[:, j]) B^T must be the shift by j, a
    linear system solved here in float64, independently of the table in winograd.py."""
    at = AT[ksize]
    m = len(at)
    system = np.einsum("ki,il->kli", at, BT).reshape(m * 6, 6)
    for j in range(ksize):
        shift = np.eye(m, 6, j).ravel()
        solved = np.linalg.lstsq(system, shift, rcond=None)[0]
        np.testing.assert_allclose(system @ solved, shift, atol=1e-13)
        np.testing.assert_allclose(ops.winograd.WINOGRAD_G[ksize][:, j], solved, atol=1e-13)


@pytest.mark.parametrize("dtype", DTYPES)
def test_routing(rng, calls, dtype):
    """Few channels or filters, or another kernel size, stay on the direct path."""
    for c, f, kh in ((7, 64, 5), (32, 15, 5), (32, 64, 3), (32, 64, 4)):
        x = rng.standard_normal((1, 8, 8, c)).astype(dtype)
        k = rng.standard_normal((kh, 5, c, f)).astype(dtype)
        np.testing.assert_allclose(ops.conv2d(x, k, None, "same"),
                                   oracle.conv2d(x, k, None, "same"), **tol(dtype, 25 * c))
    assert calls == []


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ksize", [3, 5])
def test_same_bits_on_1_2_3_threads_and_any_block(rng, dtype, threads, monkeypatch, ksize):
    x, k, b, g = inputs(rng, dtype, (7, 13, 15, 24, 40, ksize), "same")
    results = []
    for n, block in ((1, 24), (2, 24), (3, 24), (2, 6), (3, 96)):
        cconv.set_num_threads(n)
        monkeypatch.setattr(ops.winograd, "WINOGRAD_BLOCK", block)
        results.append([ops.conv2d(x, k, b, "same", "relu"),
                        *ops.conv2d_backward(x, k, g, "same")])
    for other in results[1:]:
        for a, c in zip(results[0], other):
            assert np.array_equal(a, c)


@pytest.mark.parametrize("ksize", [3, 5])
def test_each_image_alone(rng, ksize):
    """An image's output does not depend on the others in its block."""
    x, k, b, _ = inputs(rng, np.float32, (5, 14, 14, 32, 64, ksize), "same")
    batch = ops.conv2d(x, k, b, "same")
    for i in range(5):
        assert np.array_equal(ops.conv2d(x[i:i + 1], k, b, "same")[0], batch[i])
