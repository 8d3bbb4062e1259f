"""The fused ops of cconv/ops/fused.py against the oracle: conv2d_dense (Conv2D ->
Flatten -> Dense at inference, without the conv output in memory), dense_backward_gated
(back through Dense, Dropout and the conv's activation) and conv2d_maxpool (convolution
fused with max pooling: its argmax against max_pool2d's on the unfused output); 1/2/3
threads bit-exact; bad input named. The fusion rules that run them are tested in
tests/test_fusion.py."""
import numpy as np
import pytest

import cconv
from cconv import activations, ops, oracle
from conftest import DTYPES, TOL, assert_close


# ---- conv2d_dense -------------------------------------------------------------------

DENSE_CASES = [  # (N, H, W, KH, KW, F, U): the kernel's groups of 8 images, pairs, unit fives
    (1, 28, 28, 3, 3, 16, 10),   # chapter 10, one image
    (2, 5, 3, 3, 3, 20, 17),     # 'valid' rows of one pixel; 16 + 4 filters; 17 units
    (9, 7, 9, 1, 3, 9, 10),      # a full group and one image left over; 9 filters
    (3, 6, 6, 6, 6, 8, 1),       # kernel as large as the image; one unit
    (17, 4, 5, 3, 2, 3, 1),      # two groups and one; 3 filters, rows shorter than a block
    (2, 12, 10, 5, 5, 32, 10),   # 25 taps, two filter blocks
    (11, 5, 7, 2, 4, 5, 7),      # an odd group of three; strips of 5 * F not a SIMD multiple
]


def weights(rng, x_shape, kh, kw, f, units, padding, dtype):
    _, oh, ow, _ = ops.conv_output_shape(x_shape, (kh, kw, x_shape[3], f), padding)
    w = rng.uniform(-0.5, 0.5, (kh, kw, x_shape[3], f)).astype(dtype)
    b = rng.uniform(-0.5, 0.5, f).astype(dtype)
    dense_w = rng.uniform(-0.1, 0.1, (oh * ow * f, units)).astype(dtype)
    dense_b = rng.uniform(-0.5, 0.5, units).astype(dtype)
    return w, b, dense_w, dense_b


def reference(x, w, b, dense_w, dense_b, padding, activation):
    """The oracle in float64, whatever the dtype of the arguments."""
    def f64(a):
        return None if a is None else a.astype(np.float64)
    return oracle.conv2d_dense(f64(x), f64(w), f64(b), f64(dense_w), f64(dense_b), padding,
                               activation)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", DENSE_CASES)
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv2d_dense_matches_oracle(rng, dtype, case, padding):
    n, h, w_, kh, kw, f, units = case
    x = rng.uniform(0, 1, (n, h, w_, 1)).astype(dtype)
    w, b, dense_w, dense_b = weights(rng, x.shape, kh, kw, f, units, padding, dtype)
    for activation in [None, *activations.ELEMENTWISE]:
        for cb, db in [(b, dense_b), (None, dense_b), (b, None), (None, None)]:
            got = ops.conv2d_dense(x, w, cb, dense_w, db, padding, activation)
            assert got.shape == (n, units) and got.dtype == dtype
            assert_close(got, reference(x, w, cb, dense_w, db, padding, activation), dtype,
                         dense_w.shape[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_dense_is_the_unfused_layers(rng, dtype):
    """Same values as conv2d then dense, and an image's logits do not depend on the
    images around it in the batch."""
    x = rng.uniform(0, 1, (13, 28, 28, 1)).astype(dtype)
    w, b, dense_w, dense_b = weights(rng, x.shape, 3, 3, 16, 10, "valid", dtype)
    fused = ops.conv2d_dense(x, w, b, dense_w, dense_b, "valid", "tanh")
    h = ops.conv2d(x, w, b, "valid", "tanh")
    assert_close(fused, ops.dense(h.reshape(13, -1), dense_w, dense_b), dtype, 10816)
    for i in [0, 7, 8, 12]:
        alone = ops.conv2d_dense(x[i:i + 1], w, b, dense_w, dense_b, "valid", "tanh")
        np.testing.assert_array_equal(alone[0], fused[i])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv2d_dense_several_channels(rng, dtype, padding):
    """More channels than one go layer by layer, with the same result."""
    x = rng.uniform(0, 1, (5, 6, 7, 3)).astype(dtype)
    w, b, dense_w, dense_b = weights(rng, x.shape, 3, 2, 4, 6, padding, dtype)
    got = ops.conv2d_dense(x, w, b, dense_w, dense_b, padding, "tanh")
    assert_close(got, reference(x, w, b, dense_w, dense_b, padding, "tanh"), dtype,
                 dense_w.shape[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_dense_empty(rng, dtype):
    x = np.zeros((0, 6, 6, 1), dtype)
    w, b, dense_w, dense_b = weights(rng, x.shape, 3, 3, 4, 5, "valid", dtype)
    assert ops.conv2d_dense(x, w, b, dense_w, dense_b).shape == (0, 5)
    x = np.zeros((2, 0, 6, 1), dtype)  # 'same' on empty images: the logits are the bias
    w, b, dense_w, dense_b = weights(rng, x.shape, 3, 3, 4, 5, "same", dtype)
    got = ops.conv2d_dense(x, w, b, dense_w, dense_b, "same")
    np.testing.assert_array_equal(got, np.broadcast_to(dense_b, (2, 5)))


def test_conv2d_dense_strided_inputs(rng):
    """Non-contiguous arguments are copied, not misread."""
    x = rng.uniform(0, 1, (4, 9, 8, 2)).astype(np.float32)[..., :1]
    w, b, dense_w, dense_b = weights(rng, x.shape, 3, 3, 5, 6, "valid", np.float32)
    dense_w_f = np.asfortranarray(dense_w)
    got = ops.conv2d_dense(x, w, b, dense_w_f, dense_b[::-1].copy()[::-1])
    assert_close(got, reference(x, w, b, dense_w, dense_b, "valid", None), np.float32,
                 dense_w.shape[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv2d_dense_thread_count_invariant(rng, threads, dtype, padding):
    x = rng.uniform(0, 1, (37, 14, 13, 1)).astype(dtype)
    w, b, dense_w, dense_b = weights(rng, x.shape, 3, 3, 16, 10, padding, dtype)
    results = []
    for t in (1, 2, 3):
        cconv.set_num_threads(t)
        results.append(ops.conv2d_dense(x, w, b, dense_w, dense_b, padding, "tanh"))
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])


def blank_margins(rng, n, h, w, dtype):
    """Images that are zero outside a random box (a digit on MNIST's blank margins),
    some all zero, some with a lone pixel in a corner or on an edge."""
    x = np.zeros((n, h, w, 1), dtype)
    for i in range(n):
        top, left = rng.integers(0, h), rng.integers(0, w)
        bottom, right = rng.integers(top, h + 1), rng.integers(left, w + 1)
        x[i, top:bottom, left:right, 0] = rng.uniform(0, 1, (bottom - top, right - left))
    x[1] = 0
    x[2, 0, w - 1, 0], x[3, h - 1, 0, 0], x[4, h // 2, 0, 0] = 0.5, -0.25, 1.0
    x[5, :, :, 0] *= rng.uniform(0, 1, (h, w)) < 0.3  # scattered pixels inside its box
    x[6, 2, 3, 0] = -0.0
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,kernel,padding", [((27, 27), (3, 3), "valid"),
                                                  ((28, 28), (3, 3), "same"),
                                                  ((12, 19), (2, 4), "valid"),
                                                  ((9, 11), (5, 5), "same")])
def test_conv2d_dense_skips_blank_windows_exactly(rng, dtype, shape, kernel, padding):
    """Without a conv bias, windows of zeros are skipped: the logits must match the
    oracle, and have the bits of the path that computes every window (a bias of zeros
    turns the skipping off)."""
    x = blank_margins(rng, 21, *shape, dtype)
    w, _, dense_w, dense_b = weights(rng, x.shape, *kernel, 10, 7, padding, dtype)
    zero_bias = np.zeros(10, dtype)
    for activation in [None, *activations.ELEMENTWISE]:
        got = ops.conv2d_dense(x, w, None, dense_w, dense_b, padding, activation)
        assert_close(got, reference(x, w, None, dense_w, dense_b, padding, activation), dtype,
                     dense_w.shape[0])
        every = ops.conv2d_dense(x, w, zero_bias, dense_w, dense_b, padding, activation)
        np.testing.assert_array_equal(got, every)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_dense_each_image_alone(rng, dtype):
    """An image's logits have the same bits in any batch: the kernel dots the strips of
    several images at once, over the union of their live spans, and each image's blank
    margins differ. Compared with each image sent alone, and with the oracle."""
    x = blank_margins(rng, 21, 28, 28, dtype)
    w, _, dense_w, dense_b = weights(rng, x.shape, 3, 3, 16, 10, "valid", dtype)
    batch = ops.conv2d_dense(x, w, None, dense_w, dense_b, "valid", "tanh")
    for i in range(len(x)):
        alone = ops.conv2d_dense(x[i:i + 1], w, None, dense_w, dense_b, "valid", "tanh")
        np.testing.assert_array_equal(batch[i], alone[0], err_msg=f"image {i}")
    assert_close(batch, reference(x, w, None, dense_w, dense_b, "valid", "tanh"), dtype,
                 dense_w.shape[0])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_conv2d_dense_blank_windows_meet_nonfinite_weights(rng, bad):
    """0 * inf is NaN: with a non-finite weight no window is skipped, so the NaNs that
    the unfused layers give are there."""
    x = blank_margins(rng, 9, 12, 12, np.float64)
    w, _, dense_w, _ = weights(rng, x.shape, 3, 3, 4, 3, "valid", np.float64)
    dense_w[0, 1] = bad  # read by the top-left window, blank in most images
    got = ops.conv2d_dense(x, w, None, dense_w, None, "valid", "tanh")
    h = ops.conv2d(x, w, None, "valid", "tanh")
    want = ops.dense(h.reshape(len(x), -1), dense_w)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(got[1, 1])
    w[0, 0, 0, 0] = bad
    np.testing.assert_array_equal(
        np.isnan(ops.conv2d_dense(x, w, None, dense_w, None, "valid", "tanh")), True)


def test_conv2d_dense_bad_input(rng):
    x = rng.uniform(0, 1, (2, 6, 6, 1)).astype(np.float32)
    w, b, dense_w, dense_b = weights(rng, x.shape, 3, 3, 4, 5, "valid", np.float32)
    bad = [
        (dict(x=x[0]), ValueError, "x: expected a 4-d array"),
        (dict(x=x.astype(np.int32).astype(np.complex64)), TypeError, "x: expected dtype"),
        (dict(w=w.astype(np.float64)), TypeError, "w: expected dtype float32"),
        (dict(w=w[:, :, :, :, None]), ValueError, "w: expected a 4-d array"),
        (dict(x=x[:, :2]), ValueError, "x: images of 2x6 are smaller"),
        (dict(b=b[:3]), ValueError, r"b: expected shape \(4,\)"),
        (dict(b=b.astype(np.float64)), TypeError, "b: expected dtype float32"),
        (dict(dense_w=None), TypeError, "dense_w: expected a numpy array"),
        (dict(dense_w=dense_w[:-1]), ValueError, "dense_w: expected 64 rows"),
        (dict(dense_w=dense_w[:, 0]), ValueError, "dense_w: expected a 2-d array"),
        (dict(dense_w=dense_w.astype(np.float64)), TypeError, "dense_w: expected dtype"),
        (dict(dense_b=dense_b[:4]), ValueError, r"dense_b: expected shape \(5,\)"),
        (dict(dense_b=dense_b.astype(np.float64)), TypeError, "dense_b: expected dtype"),
        (dict(padding="full"), ValueError, "padding: expected one of"),
        (dict(activation="softmax"), ValueError, "activation: expected one of"),
    ]
    for change, error, message in bad:
        args = dict(x=x, w=w, b=b, dense_w=dense_w, dense_b=dense_b, padding="valid",
                    activation="tanh")
        args.update(change)
        with pytest.raises(error, match=message):
            ops.conv2d_dense(**args)

GATED_CASES = [(1, 37, 1), (4, 64, 10), (5, 100, 17), (2, 31, 5), (7, 10816 // 16, 10)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,d,units", GATED_CASES)
def test_dense_backward_gated_matches_oracle(rng, dtype, n, d, units):
    g = rng.standard_normal((n, units)).astype(dtype)
    w = rng.standard_normal((d, units)).astype(dtype)
    z = rng.standard_normal((n, d)).astype(dtype)
    mask = (rng.uniform(0, 1, (n, d)) >= 0.3).astype(np.uint8)
    for activation in [None, *activations.FUSED]:  # the gate takes these, from their output
        y = oracle.activation(activation, z)
        for m, rate in [(mask, 0.3), (None, 0.0), (mask.astype(bool), 0.6)]:
            got = ops.dense_backward_gated(g, w, y, m, rate, activation)
            want = oracle.dense_backward_gated(g.astype(np.float64), w.astype(np.float64),
                                               y.astype(np.float64), m, rate, activation)
            assert got.shape == (n, d) and got.dtype == dtype
            assert_close(got, want, dtype, units)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_backward_gated_thread_count_invariant(rng, threads, dtype):
    g = rng.standard_normal((23, 10)).astype(dtype)
    w = rng.standard_normal((333, 10)).astype(dtype)
    y = np.tanh(rng.standard_normal((23, 333))).astype(dtype)
    mask = (rng.uniform(0, 1, y.shape) >= 0.5).astype(np.uint8)
    results = []
    for t in (1, 2, 3):
        cconv.set_num_threads(t)
        results.append(ops.dense_backward_gated(g, w, y, mask, 0.5, "tanh"))
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])


@pytest.mark.parametrize("units", [10, 20])  # the narrow kernel and the GEMM path
def test_dense_backward_gated_into_out(rng, units):
    g = rng.standard_normal((6, units))
    w = rng.standard_normal((40, units))
    y = np.tanh(rng.standard_normal((6, 40)))
    mask = (rng.uniform(0, 1, y.shape) >= 0.5).astype(np.uint8)
    out = np.full(y.shape, np.nan)
    got = ops.dense_backward_gated(g, w, y, mask, 0.5, "tanh", out=out)
    assert got is out
    np.testing.assert_array_equal(out, ops.dense_backward_gated(g, w, y, mask, 0.5, "tanh"))
    with pytest.raises(ValueError, match="out: must not overlap y"):
        ops.dense_backward_gated(g, w, y, mask, 0.5, "tanh", out=y)
    with pytest.raises(ValueError, match="out: expected shape"):
        ops.dense_backward_gated(g, w, y, mask, 0.5, "tanh", out=out[:, 1:])


def test_dense_backward_gated_bad_input(rng):
    g = rng.standard_normal((3, 4)).astype(np.float32)
    w = rng.standard_normal((6, 4)).astype(np.float32)
    y = rng.standard_normal((3, 6)).astype(np.float32)
    mask = np.ones((3, 6), np.uint8)
    bad = [
        (dict(grad_out=g[:2]), ValueError, "grad_out: expected shape"),
        (dict(w=w[:5]), ValueError, "grad_out: expected shape"),
        (dict(w=w.astype(np.float64)), TypeError, "w: expected dtype float32"),
        (dict(y=y[None]), ValueError, "y: expected a 2-d array"),
        (dict(mask=mask[:2]), ValueError, "mask: expected shape"),
        (dict(mask=mask * 2), ValueError, "mask: expected only 0s and 1s"),
        (dict(rate=1.0), ValueError, "rate: expected a float in"),
        (dict(activation="softmax"), ValueError, "activation: expected one of"),
    ]
    for change, error, message in bad:
        args = dict(grad_out=g, w=w, y=y, mask=mask, rate=0.5, activation="tanh")
        args.update(change)
        with pytest.raises(error, match=message):
            ops.dense_backward_gated(**args)


# ---- conv2d_maxpool -----------------------------------------------------------------

POOL_CASES = [  # (N, H, W, C), (KH, KW, F), padding, pool_size, pool_padding
    ((1, 6, 6, 1), (3, 3, 5), "valid", 2, "valid"),
    ((2, 28, 28, 1), (5, 5, 32), "same", 2, "valid"),     # the tutorial's conv1 and pool
    ((2, 14, 14, 32), (5, 5, 64), "same", 2, "valid"),    # its conv2 and pool
    ((3, 9, 7, 1), (3, 3, 4), "same", 2, "same"),         # odd sizes, 'same' pooling
    ((2, 9, 7, 3), (3, 2, 17), "valid", 2, "valid"),      # 7x6 output, a row dropped
    ((1, 11, 10, 5), (3, 3, 20), "same", 3, "same"),
    ((2, 8, 9, 2), (2, 2, 7), "valid", (2, 3), "valid"),  # 7x8: a row and 2 columns dropped
    ((2, 8, 9, 1), (2, 3, 33), "same", (2, 3), "same"),
    ((1, 5, 5, 4), (5, 5, 3), "valid", 1, "valid"),       # a 1x1 output
    ((1, 4, 4, 2), (3, 3, 8), "same", 5, "same"),         # a window larger than the image
    ((2, 30, 31, 3), (3, 3, 16), "same", 2, "valid"),     # several bands per image
    ((1, 7, 5, 1), (1, 1, 1), "valid", 3, "same"),        # one filter
    ((2, 13, 6, 1), (4, 3, 17), "same", (3, 2), "same"),  # PX-wide blocks do not fit rows
]

# Every activation of the table (and None), spread over the cases: each case tries the
# next PER_CASE in turn (every one tried on two cases or more), rather than multiplying
# the cases by them.
ACTIVATIONS = [None, *activations.ELEMENTWISE]
PER_CASE = max(4, -(-len(ACTIVATIONS) // len(POOL_CASES)))
POOL_CASE_ACTIVATIONS = [(case, ACTIVATIONS[(i * PER_CASE + j) % len(ACTIVATIONS)])
                         for i, case in enumerate(POOL_CASES) for j in range(PER_CASE)]


def inputs(rng, case, dtype, bias=True):
    xs, (kh, kw, f) = case[0], case[1]
    x = rng.standard_normal(xs).astype(dtype)
    w = (rng.standard_normal((kh, kw, xs[3], f)) / np.sqrt(kh * kw * xs[3])).astype(dtype)
    b = rng.standard_normal(f).astype(dtype) if bias else None
    return x, w, b


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case,activation", POOL_CASE_ACTIVATIONS)
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_maxpool_is_conv_then_pool(rng, dtype, case, activation, bias):
    _, _, padding, pool, pool_padding = case
    x, w, b = inputs(rng, case, dtype, bias)
    y, argmax = ops.conv2d_maxpool(x, w, b, padding, activation, pool, pool_padding,
                                   need_argmax=True)
    want, _ = oracle.conv2d_maxpool(x.astype(np.float64), w.astype(np.float64),
                                    None if b is None else b.astype(np.float64), padding,
                                    activation, pool, pool_padding)
    assert y.dtype == dtype and argmax.dtype == np.int32 and y.shape == want.shape
    terms = w.shape[0] * w.shape[1] * w.shape[2] + 1
    np.testing.assert_allclose(y, want, rtol=0, atol=TOL[dtype]["eps"] * terms * 4)
    # The unfused ops give the same bits: the same sums, then the same pooling.
    h = ops.conv2d(x, w, b, padding, activation)
    want_y, want_argmax = ops.max_pool2d(h, pool, pool_padding)
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(argmax, want_argmax)
    # argmax names, in the oracle's convolution, an element holding the pooled value.
    h_oracle = oracle.conv2d_maxpool(x, w, b, padding, activation, 1)[0]
    picked = np.take_along_axis(h_oracle.reshape(len(x), -1),
                                argmax.reshape(len(x), -1).astype(np.intp), axis=1)
    np.testing.assert_allclose(picked.reshape(y.shape), want, rtol=0,
                               atol=TOL[dtype]["eps"] * terms * 4)
    y2, none = ops.conv2d_maxpool(x, w, b, padding, activation, pool, pool_padding)
    assert none is None
    np.testing.assert_array_equal(y2, y)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [POOL_CASES[1], POOL_CASES[2], POOL_CASES[3], POOL_CASES[7]])
@pytest.mark.parametrize("activation", [None, "relu"])
def test_ties_go_to_the_first_like_the_oracle(rng, dtype, case, activation, monkeypatch):
    """Small integers: every sum is exact, many windows tie (all of relu's negative ones
    at 0), and the argmax must be the oracle's, which picks the first. Winograd's
    transforms round even integer sums, so it is kept out: this tests the fused path."""
    monkeypatch.setattr(ops.winograd, "WINOGRAD_MIN_CHANNELS", 10**9)
    xs, (kh, kw, f), padding, pool, pool_padding = case
    x = rng.integers(-1, 2, xs).astype(dtype)
    w = rng.integers(-1, 2, (kh, kw, xs[3], f)).astype(dtype)
    b = rng.integers(-2, 3, f).astype(dtype)
    y, argmax = ops.conv2d_maxpool(x, w, b, padding, activation, pool, pool_padding,
                                   need_argmax=True)
    want_y, want_argmax = oracle.conv2d_maxpool(x, w, b, padding, activation, pool,
                                                pool_padding, need_argmax=True)
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(argmax, want_argmax)


@pytest.mark.parametrize("case", [POOL_CASES[2], POOL_CASES[10], POOL_CASES[12]])
def test_any_band_height_gives_the_same_bits(rng, case, monkeypatch):
    """Bands of one pooled row each, against the default bands (of the fused path, so
    without Winograd)."""
    monkeypatch.setattr(ops.winograd, "WINOGRAD_MIN_CHANNELS", 10**9)
    _, _, padding, pool, pool_padding = case
    x, w, b = inputs(rng, case, np.float32)
    want = ops.conv2d_maxpool(x, w, b, padding, "relu", pool, pool_padding, True)
    monkeypatch.setattr(ops.fused, "CONV_POOL_BAND_BYTES", 1)
    got = ops.conv2d_maxpool(x, w, b, padding, "relu", pool, pool_padding, True)
    for g, e in zip(got, want):
        np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("case", [POOL_CASES[1], POOL_CASES[2], POOL_CASES[5]])
@pytest.mark.parametrize("activation", activations.FUSED)
def test_same_bits_on_one_two_and_three_threads(rng, case, activation, threads):
    _, _, padding, pool, pool_padding = case
    x, w, b = inputs(rng, case, np.float32)
    x = np.concatenate([x] * 4)  # more images than threads
    results = []
    for n in (1, 2, 3):
        cconv.set_num_threads(n)
        results.append(ops.conv2d_maxpool(x, w, b, padding, activation, pool, pool_padding,
                                          need_argmax=True))
    for y, a in results[1:]:
        assert np.array_equal(y, results[0][0]) and np.array_equal(a, results[0][1])


def test_empty_batch_and_given_buffers(rng):
    x, w, b = inputs(rng, POOL_CASES[3], np.float32)
    y, a = ops.conv2d_maxpool(x[:0], w, b, "same", "relu", 2, "same", need_argmax=True)
    assert y.shape == (0, 5, 4, 4) and a.shape == y.shape
    out = np.full((3, 5, 4, 4), np.nan, np.float32)
    arg = np.full(out.shape, -1, np.int32)
    y, a = ops.conv2d_maxpool(x, w, b, "same", "relu", 2, "same", True, out=out,
                              out_argmax=arg)
    assert y is out and a is arg
    want_y, want_a = ops.max_pool2d(ops.conv2d(x, w, b, "same", "relu"), 2, "same")
    assert np.array_equal(out, want_y) and np.array_equal(arg, want_a)


@pytest.mark.parametrize("call,error,match", [
    (lambda x, w, b: ops.conv2d_maxpool(x.astype(np.int8), w, b), TypeError, "x: expected dtype"),
    (lambda x, w, b: ops.conv2d_maxpool(x, w.astype(np.float32), b), TypeError, "w: expected"),
    (lambda x, w, b: ops.conv2d_maxpool(x[..., 0], w, b), ValueError, "x: expected a 4-d"),
    (lambda x, w, b: ops.conv2d_maxpool(x, w[:, :, :1], b), ValueError, "x: expected 1 channels"),
    (lambda x, w, b: ops.conv2d_maxpool(x, w, b[:2]), ValueError, "b: expected shape"),
    (lambda x, w, b: ops.conv2d_maxpool(x, w, b, "full"), ValueError, "padding: expected"),
    (lambda x, w, b: ops.conv2d_maxpool(x, w, b, activation="softmax"), ValueError,
     "activation: expected"),
    (lambda x, w, b: ops.conv2d_maxpool(x, w, b, pool_size=0), ValueError, "pool_size"),
    (lambda x, w, b: ops.conv2d_maxpool(x, w, b, pool_size=2.0), TypeError, "pool_size"),
    (lambda x, w, b: ops.conv2d_maxpool(x, w, b, pool_size=(2, 2, 2)), ValueError,
     "pool_size"),
    (lambda x, w, b: ops.conv2d_maxpool(x, w, b, pool_size=7), ValueError,
     "pool_size: a 7x7 window is larger than the 6x5 convolution output"),
    (lambda x, w, b: ops.conv2d_maxpool(x, w, b, pool_padding="full"), ValueError,
     "pool_padding: expected"),
    (lambda x, w, b: ops.conv2d_maxpool(x, w, b, out=np.empty((3, 3, 3, 4))), ValueError,
     "out: expected shape"),
    (lambda x, w, b: ops.conv2d_maxpool(x, w, b, need_argmax=True,
                                        out_argmax=np.empty((3, 3, 2, 4))), ValueError,
     "out_argmax: expected"),
    (lambda x, w, b: ops.conv2d_maxpool(x, w, b, need_argmax=True, out_argmax=[0]),
     TypeError, "out_argmax: expected a numpy array"),
])
def test_conv2d_maxpool_bad_input_is_named(call, error, match):
    x = np.zeros((3, 8, 7, 2))
    w = np.zeros((3, 3, 2, 4))
    b = np.zeros(4)
    with pytest.raises(error, match=match):
        call(x, w, b)
