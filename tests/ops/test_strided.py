"""The strided routes: conv2d and conv2d_backward with strides or dilation_rate above 1
(cconv/ops/conv.py's im2col route), max_pool2d with strides other than pool_size, and
avg_pool2d (cconv/ops/pool.py), against cconv.oracle in both dtypes and finite
differences; odd sizes, strides 2 and 3, dilation 2, 'same' and 'valid', one and
several channels, kernels larger than the stride; the same bits on 1 and 2 threads and
whatever the grouping of images; bad input named. Keras's own outputs for the same
geometry are in tests/test_keras_strides.py, the bits across CPU levels in
tests/test_strided_levels.py."""
import numpy as np
import pytest

import cconv
from cconv import activations, ops, oracle
from cconv.ops import conv as conv_module
from conftest import DTYPES, TOL, check_op, numerical_grad, tol

STRIDED_CASES = [  # (N, H, W, C, KH, KW, F), strides, dilation_rate
    ((2, 7, 9, 1, 3, 3, 4), 2, 1),         # one channel, odd sizes, kernel > stride
    ((3, 8, 6, 3, 2, 3, 5), (3, 2), 1),    # a different stride per axis
    ((1, 11, 10, 4, 3, 1, 17), 3, 1),      # F past a float32 and two float64 panels
    ((2, 9, 7, 2, 1, 1, 3), 2, 1),         # 1x1 kernels: every other pixel
    ((2, 5, 6, 3, 2, 2, 6), (1, 3), 1),    # stride on one axis only
    ((2, 9, 10, 1, 3, 3, 8), 1, 2),        # dilation, one channel
    ((3, 10, 8, 5, 3, 2, 7), 1, (2, 3)),   # a different dilation per axis
    ((1, 6, 11, 2, 2, 3, 4), 1, (1, 2)),   # dilation on one axis only
    ((2, 4, 4, 3, 5, 5, 2), 2, 1),         # kernel larger than the image ('same' only)
]


def case_id(case):
    shape, strides, dilation = case
    return f"{shape}-s{strides}-d{dilation}"


def fits(case, padding):
    (n, h, w, c, kh, kw, f), _, dilation = case
    dh, dw = dilation if isinstance(dilation, tuple) else (dilation, dilation)
    return padding == "same" or (h >= (kh - 1) * dh + 1 and w >= (kw - 1) * dw + 1)


# Every case with each padding that has an output ('valid' needs the kernel to fit).
CONV_PARAMS = [pytest.param(case, padding, id=f"{case_id(case)}-{padding}")
               for case in STRIDED_CASES for padding in ("valid", "same") if fits(case, padding)]


def conv_inputs(rng, dtype, case, padding):
    (n, h, w, c, kh, kw, f), strides, dilation = case
    x = rng.standard_normal((n, h, w, c)).astype(dtype)
    k = rng.standard_normal((kh, kw, c, f)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype)
    shape = ops.conv_output_shape(x.shape, k.shape, padding, strides, dilation)
    g = rng.standard_normal(shape).astype(dtype)
    return x, k, b, g, dict(strides=strides, dilation_rate=dilation)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, padding", CONV_PARAMS)
def test_strided_conv2d(rng, dtype, case, padding):
    """Against the oracle; every activation applied in place is the elementwise op on the
    convolution's output, to the bit."""
    x, k, b, _, steps = conv_inputs(rng, dtype, case, padding)
    z = check_op(ops.conv2d, oracle.conv2d, (x, k, b, padding), steps, terms=k[..., 0].size)
    check_op(ops.conv2d, oracle.conv2d, (x, k, None, padding), steps, terms=k[..., 0].size)
    for activation in activations.ELEMENTWISE:
        np.testing.assert_array_equal(ops.conv2d(x, k, b, padding, activation, **steps),
                                      ops.activation(activation, z), err_msg=activation)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, padding", CONV_PARAMS)
def test_strided_conv2d_backward(rng, dtype, case, padding):
    x, k, _, g, steps = conv_inputs(rng, dtype, case, padding)
    got = ops.conv2d_backward(x, k, g, padding, **steps)
    want = oracle.conv2d_backward(x, k, g, padding, **steps)
    for name, a, b in zip(("grad_x", "grad_w", "grad_b"), got, want):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        np.testing.assert_allclose(a, b, rtol=TOL[dtype]["rtol"],
                                   atol=TOL[dtype]["atol"] * max(1, g[..., 0].size),
                                   err_msg=name)
    grad_x, grad_w, grad_b = ops.conv2d_backward(x, k, g, padding, need_grad_x=False, **steps)
    assert grad_x is None
    np.testing.assert_array_equal(grad_w, got[1])


@pytest.mark.parametrize("case", [STRIDED_CASES[0], STRIDED_CASES[1], STRIDED_CASES[5],
                                  STRIDED_CASES[6]], ids=case_id)
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_strided_conv2d_gradients_by_finite_differences(rng, case, padding):
    """d sum(conv2d(x, w, b) * g) by centred differences, in float64."""
    x, k, b, g, steps = conv_inputs(rng, np.float64, case, padding)
    grad_x, grad_w, grad_b = ops.conv2d_backward(x, k, g, padding, **steps)
    loss = lambda: float((ops.conv2d(x, k, b, padding, **steps) * g).sum())
    for got, arr in ((grad_x, x), (grad_w, k), (grad_b, b)):
        np.testing.assert_allclose(got, numerical_grad(loss, arr), rtol=1e-6, atol=1e-6)


def test_image_groups_change_no_bit(rng, monkeypatch):
    """Patches are gathered a group of images at a time; groups of 1, 2 and all images
    give the same forward bits (each output row is one product) and the oracle's
    gradients (the groups' weight gradients add up in order)."""
    x, k, b, g, steps = conv_inputs(rng, np.float64, ((5, 9, 8, 3, 3, 3, 6), 2, 1), "same")
    results = {}
    per_image = 5 * 4 * 27
    for images in (1, 2, 5):
        monkeypatch.setattr(conv_module, "IM2COL_ELEMENTS", images * per_image)
        results[images] = (ops.conv2d(x, k, b, "same", "relu", **steps),
                           ops.conv2d_backward(x, k, g, "same", **steps))
    want = oracle.conv2d_backward(x, k, g, "same", **steps)
    for images, (y, grads) in results.items():
        np.testing.assert_array_equal(y, results[5][0])
        np.testing.assert_array_equal(grads[0], results[5][1][0])  # col2im: one row per pixel
        for got, ref in zip(grads, want):
            np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12 * 20)


@pytest.mark.parametrize("dtype", DTYPES)
def test_strided_conv_same_bits_on_one_and_two_threads(rng, dtype, threads):
    runs = []
    for case in (((6, 13, 12, 3, 3, 3, 20), 2, 1), ((4, 12, 11, 1, 3, 3, 16), 1, 2)):
        x, k, b, g, steps = conv_inputs(rng, dtype, case, "same")
        for n in (1, 2):
            cconv.set_num_threads(n)
            runs.append((n, ops.conv2d(x, k, b, "same", "tanh", **steps),
                         *ops.conv2d_backward(x, k, g, "same", **steps)))
    for one, two in zip(runs[::2], runs[1::2]):
        for a, b in zip(one[1:], two[1:]):
            np.testing.assert_array_equal(a, b)


def test_stride_one_keeps_its_route(rng, monkeypatch):
    """strides=1, dilation_rate=1 (as ints or pairs) never reach the im2col route."""
    x, k, b, g, _ = conv_inputs(rng, np.float32, ((2, 7, 6, 3, 3, 3, 5), 1, 1), "same")
    want = ops.conv2d(x, k, b, "same"), ops.conv2d_backward(x, k, g, "same")

    def refuse(*args):
        raise AssertionError("the im2col route was taken")

    monkeypatch.setattr(conv_module, "_conv_im2col", refuse)
    monkeypatch.setattr(conv_module, "_backward_im2col", refuse)
    for steps in (dict(strides=1, dilation_rate=1), dict(strides=(1, 1), dilation_rate=[1, 1])):
        np.testing.assert_array_equal(ops.conv2d(x, k, b, "same", **steps), want[0])
        for a, w in zip(ops.conv2d_backward(x, k, g, "same", **steps), want[1]):
            np.testing.assert_array_equal(a, w)


@pytest.mark.parametrize("h, k, s, d, padding, out, top", [
    (7, 3, 2, 1, "same", 4, 1),    # total padding 2: one on each side
    (8, 3, 2, 1, "same", 4, 0),    # total padding 1: at the bottom
    (8, 4, 3, 1, "same", 3, 1),    # total (3 - 1) * 3 + 4 - 8 = 2: one on each side
    (9, 3, 1, 2, "same", 9, 2),    # dilated span 5: 2 + 2
    (10, 2, 1, 3, "same", 10, 1),  # dilated span 4: 1 on top, 2 at the bottom
    (7, 3, 2, 1, "valid", 3, 0), (8, 3, 3, 1, "valid", 2, 0), (9, 3, 1, 2, "valid", 5, 0),
])
def test_conv_geometry_is_keras(h, k, s, d, padding, out, top):
    """Output size and the padding before the image, worked out by hand from Keras's
    rule (compute_conv_output_shape and XLA's 'SAME')."""
    x = np.zeros((1, h, h, 1))
    w = np.zeros((k, k, 1, 1))
    assert ops.conv_output_shape(x.shape, w.shape, padding, s, d) == (1, out, out, 1)
    assert conv_module.check_conv(x, w, padding, (s, s), (d, d))[2] == (top, top)


@pytest.mark.parametrize("call, match", [
    (lambda: ops.conv2d(np.zeros((1, 5, 5, 1)), np.zeros((3, 3, 1, 1)), strides=2,
                        dilation_rate=2), "strides.*dilation_rate"),
    (lambda: ops.conv2d(np.zeros((1, 5, 5, 1)), np.zeros((3, 3, 1, 1)), strides=0),
     "strides"),
    (lambda: ops.conv2d(np.zeros((1, 5, 5, 1)), np.zeros((3, 3, 1, 1)), strides=(2, 2, 2)),
     "strides"),
    (lambda: ops.conv2d(np.zeros((1, 5, 5, 1)), np.zeros((3, 3, 1, 1)), dilation_rate=1.5),
     "dilation_rate"),
    (lambda: ops.conv2d(np.zeros((1, 5, 5, 1)), np.zeros((3, 3, 1, 1)), dilation_rate=3),
     "dilated by"),
    (lambda: ops.conv2d_backward(np.zeros((1, 5, 5, 1)), np.zeros((3, 3, 1, 1)),
                                 np.zeros((1, 3, 3, 1)), strides=2), "grad_out"),
    (lambda: ops.max_pool2d(np.zeros((1, 5, 5, 1)), 2, strides=0), "strides"),
    (lambda: ops.avg_pool2d(np.zeros((1, 5, 5, 1)), 2, strides=(1, 2, 3)), "strides"),
    (lambda: ops.avg_pool2d(np.zeros((1, 5, 5, 1)), 6), "pool_size"),
    (lambda: ops.avg_pool2d(np.zeros((1, 5, 5, 1)), 2, "full"), "padding"),
    (lambda: ops.avg_pool2d_backward(np.zeros((1, 2, 2, 1)), (1, 5, 5, 1), 2, strides=1),
     "grad_out"),
])
def test_bad_input_is_named(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


# ---- pooling ----------------------------------------------------------------------------
POOL_CASES = [  # (N, H, W, C), pool_size, strides
    ((2, 7, 9, 3), 3, 2),           # overlapping windows, odd sizes
    ((1, 6, 6, 1), 2, 1),           # every window overlaps its neighbours
    ((2, 5, 8, 17), (2, 3), (1, 2)),
    ((3, 8, 7, 4), 2, 3),           # gaps between windows
    ((2, 9, 9, 2), 3, (3, 1)),      # side by side down, overlapping across
    ((1, 4, 5, 5), 5, 2),           # a window larger than the image ('same' only)
    ((2, 7, 5, 3), 2, None),        # strides = pool_size (avg_pool2d)
]


def pool_id(case):
    shape, pool, strides = case
    return f"{shape}-p{pool}-s{strides}"


def pool_fits(case, padding):
    (_, h, w, _), pool, _ = case
    ph, pw = pool if isinstance(pool, tuple) else (pool, pool)
    return padding == "same" or (h >= ph and w >= pw)


POOL_PARAMS = [pytest.param(case, padding, id=f"{pool_id(case)}-{padding}")
               for case in POOL_CASES for padding in ("valid", "same")
               if pool_fits(case, padding)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, padding", POOL_PARAMS)
@pytest.mark.parametrize("ties", [False, True])
def test_strided_max_pool2d(rng, dtype, case, padding, ties):
    """No arithmetic forward: the oracle's values and winners exactly (ties to the first
    in row-major order); backward, winners shared by overlapping windows add up."""
    shape, pool, strides = case
    x = (rng.integers(0, 3, shape) if ties else rng.standard_normal(shape)).astype(dtype)
    y, argmax = ops.max_pool2d(x, pool, padding, strides=strides)
    want_y, want_argmax = oracle.max_pool2d(x, pool, padding, strides=strides)
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(argmax, want_argmax)
    assert ops.max_pool2d(x, pool, padding, need_argmax=False, strides=strides)[1] is None
    g = rng.standard_normal(y.shape).astype(dtype)
    np.testing.assert_allclose(
        ops.max_pool2d_backward(g, argmax, shape, pool, padding, strides=strides),
        oracle.max_pool2d_backward(g, want_argmax, shape, pool, padding, strides=strides),
        **tol(dtype, 4))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, padding", POOL_PARAMS)
def test_avg_pool2d(rng, dtype, case, padding):
    shape, pool, strides = case
    x = rng.standard_normal(shape).astype(dtype)
    y = check_op(ops.avg_pool2d, oracle.avg_pool2d, (x, pool, padding), dict(strides=strides),
                 terms=25)
    g = rng.standard_normal(y.shape).astype(dtype)
    check_op(ops.avg_pool2d_backward, oracle.avg_pool2d_backward, (g, shape, pool, padding),
             dict(strides=strides), terms=25)


def test_avg_pool2d_counts_only_the_image_at_the_border():
    """'same': a corner window of a 3x3 pool, stride 2, on a 4x4 image of ones holds 2x2
    or 2x1 pixels; the average of ones is 1 whatever the window's size in the image,
    and the sum rule gives sum / count, not sum / 9."""
    x = np.arange(16.0).reshape(1, 4, 4, 1)
    y = ops.avg_pool2d(x, 3, "same", strides=2)[0, :, :, 0]
    # pad_top = ((2 - 1) * 2 + 3 - 4) // 2 = 0: windows rows [0, 3) and [2, 4)
    want = [[x[0, 0:3, 0:3].mean(), x[0, 0:3, 2:4].mean()],
            [x[0, 2:4, 0:3].mean(), x[0, 2:4, 2:4].mean()]]
    np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("case", POOL_CASES[:5], ids=pool_id)
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_pool_gradients_by_finite_differences(rng, case, padding):
    shape, pool, strides = case
    x = rng.standard_normal(shape)
    y, argmax = ops.max_pool2d(x, pool, padding, strides=strides)
    g = rng.standard_normal(y.shape)
    want_avg = numerical_grad(
        lambda: float((ops.avg_pool2d(x, pool, padding, strides=strides) * g).sum()), x)
    want_max = numerical_grad(
        lambda: float((ops.max_pool2d(x, pool, padding, strides=strides)[0] * g).sum()), x)
    np.testing.assert_allclose(ops.avg_pool2d_backward(g, shape, pool, padding,
                                                       strides=strides), want_avg,
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ops.max_pool2d_backward(g, argmax, shape, pool, padding,
                                                       strides=strides), want_max,
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pools_same_bits_on_one_and_two_threads(rng, dtype, threads):
    # Large enough for the pools to use every thread (ops._scratch.threads_for).
    x = rng.standard_normal((16, 30, 29, 9)).astype(dtype)
    runs = []
    for n in (1, 2):
        cconv.set_num_threads(n)
        y, argmax = ops.max_pool2d(x, 3, "same", strides=2)
        a = ops.avg_pool2d(x, 3, "same", strides=2)
        runs.append((y, argmax, ops.max_pool2d_backward(y, argmax, x.shape, 3, "same",
                                                        strides=2),
                     a, ops.avg_pool2d_backward(a, x.shape, 3, "same", strides=2)))
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_strided_max_pool_argmax_outside_its_window_raises(rng):
    x = rng.standard_normal((2, 7, 7, 3))
    y, argmax = ops.max_pool2d(x, 3, "valid", strides=2)
    g = np.ones_like(y)
    for bad in (argmax[0, 0, 0, 0] + 3 * 7 * 3,  # the right channel, three rows down
                argmax[0, 0, 0, 0] + 1):         # the next channel
        corrupt = argmax.copy()
        corrupt[0, 0, 0, 0] = bad
        with pytest.raises(ValueError, match="argmax"):
            ops.max_pool2d_backward(g, corrupt, x.shape, 3, "valid", strides=2)


def test_pool_strides_default_to_the_pool_size(rng):
    x = rng.standard_normal((2, 7, 6, 3))
    for padding in ("valid", "same"):
        for a, b in zip(ops.max_pool2d(x, (2, 3), padding),
                        ops.max_pool2d(x, (2, 3), padding, strides=(2, 3))):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ops.avg_pool2d(x, 2, padding),
                                      oracle.avg_pool2d(x, 2, padding, strides=2))
