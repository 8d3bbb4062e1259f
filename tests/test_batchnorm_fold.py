"""fusion.FoldBatchNorm: at inference a BatchNormalization after a linear Conv2D or Dense is
folded into that layer's weights. Its predictions against the oracle's unfolded
computation (conv or dense, then batch_norm_inference, in float64): the fold rounds the
folded weights once to the dtype, so the two differ by rounding of a sum of
KH*KW*C (or D) products: conftest.tol(dtype, terms) with that count. Where it applies and
where not, and that the folded weights follow the weights (a fit step, set_weights)."""
import numpy as np
import pytest

import cconv
from cconv import fusion, layers, oracle
from conftest import DTYPES, tol


def model_of(first, dtype, shape, epsilon=1e-3, seed=0):
    """Input -> first -> BatchNormalization(epsilon) with non-trivial statistics."""
    cconv.utils.set_random_seed(seed)
    model = cconv.Sequential([layers.Input(shape), first,
                              layers.BatchNormalization(epsilon=epsilon)], dtype=dtype)
    model.build()
    rng = np.random.default_rng(seed)
    bn = model.layers[1]
    c = bn.input_shape[-1]
    bn.set_weights([rng.uniform(0.5, 2, c), rng.standard_normal(c), rng.standard_normal(c),
                    rng.uniform(0.01, 2, c)])
    return model


def unfolded(model, x):
    """The oracle's conv or dense, then its batch_norm_inference, in float64."""
    first, bn = model.layers
    w = first.params["kernel"].astype(np.float64)
    b = first.params.get("bias")
    x = x.astype(np.float64)
    if type(first) is layers.Conv2D:
        z = oracle.conv2d(x, w, b, first.padding, strides=first.strides,
                          dilation_rate=first.dilation_rate)
    else:
        z = x @ w + (0 if b is None else b)
    p = bn.params
    return oracle.batch_norm_inference(z, p["moving_mean"], p["moving_variance"],
                                       p.get("gamma"), p.get("beta"), bn.epsilon)


CASES = {
    "conv_no_bias": (lambda: layers.Conv2D(5, 3, use_bias=False), (7, 7, 3)),
    "conv_bias_same": (lambda: layers.Conv2D(4, 2, padding="same",
                                             bias_initializer="random_normal"), (6, 5, 2)),
    "conv_1ch": (lambda: layers.Conv2D(6, 3), (8, 8, 1)),
    "conv_strided": (lambda: layers.Conv2D(4, 3, strides=(2, 3), padding="same"), (9, 10, 2)),
    "conv_dilated": (lambda: layers.Conv2D(3, 2, dilation_rate=2), (7, 6, 3)),
    "dense": (lambda: layers.Dense(7, bias_initializer="random_normal"), (12,)),
    "dense_rank3": (lambda: layers.Dense(3, use_bias=False), (4, 9)),
}


def terms(model):
    return int(np.prod(model.layers[0].params["kernel"].shape[:-1]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("epsilon", [1e-3, 0.5])
def test_folded_predictions_against_the_oracle(dtype, case, epsilon):
    make, shape = CASES[case]
    model = model_of(make(), dtype, shape, epsilon)
    assert [type(s) for s in model._steps(False)] == [fusion.FoldBatchNorm]
    assert fusion.FoldBatchNorm not in map(type, model._steps(True))
    x = np.random.default_rng(1).standard_normal((5,) + shape).astype(dtype)
    got = model.predict(x, verbose=0)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, unfolded(model, x), **tol(dtype, terms(model)))


@pytest.mark.parametrize("case", ["conv_no_bias", "dense"])
def test_folded_weights_follow_the_weights(case):
    """set_weights, a layer's own set_weights and fit steps each change the folded
    weights: predict follows the oracle of the weights as they are."""
    make, shape = CASES[case]
    model = model_of(make(), "float64", shape)
    x = np.random.default_rng(2).standard_normal((6,) + shape)
    check = lambda: np.testing.assert_allclose(model.predict(x, verbose=0), unfolded(model, x),
                                               **tol(np.float64, terms(model)))
    check()
    weights = model.get_weights()
    weights[-1] = weights[-1] * 3  # the moving variance
    model.set_weights(weights)
    check()
    bn = model.layers[1]
    bn.set_weights([w + 0.5 for w in bn.get_weights()])
    check()
    # kept while nothing changes
    folded = model._steps(False)[0].folded_weights()
    model.predict(x, verbose=0)
    assert model._steps(False)[0].folded_weights() is folded


@pytest.mark.parametrize("case", ["conv_no_bias", "dense"])
@pytest.mark.parametrize("bn_trainable", [True, False])
def test_folded_weights_follow_fit_steps(case, bn_trainable):
    """A fit step moves the first layer's weights in place (and, unless the BN is
    frozen, its moving statistics): the next predict folds the new weights."""
    make, shape = CASES[case]
    x = np.random.default_rng(2).standard_normal((6,) + shape)
    head = cconv.Sequential([layers.Input(shape), make(),
                             layers.BatchNormalization(trainable=bn_trainable),
                             layers.Flatten(), layers.Dense(3, activation="softmax")],
                            dtype="float64")
    head.compile(cconv.optimizers.SGD(0.5), "sparse_categorical_crossentropy")
    y = np.arange(len(x)) % 3
    for _ in range(2):
        head.predict(x, verbose=0)
        head.fit(x, y, batch_size=3, epochs=1, verbose=0)
        sub = cconv.Sequential([layers.Input(shape), make(), layers.BatchNormalization()],
                               dtype="float64")
        sub.build()
        sub.set_weights(head.get_weights()[:len(sub.get_weights())])
        inner = head._steps(False)[0]
        assert type(inner) is fusion.FoldBatchNorm
        np.testing.assert_allclose(inner.forward(x), unfolded(sub, x),
                                   **tol(np.float64, terms(sub)))


def test_not_folded_after_an_activation_or_in_training():
    """relu(conv) -> BN: the normalisation comes after the activation; not folded."""
    model = cconv.Sequential([layers.Input((6, 6, 2)), layers.Conv2D(3, 3, activation="relu"),
                              layers.BatchNormalization(), layers.Flatten(),
                              layers.Dense(4, activation="relu"), layers.BatchNormalization()])
    model.build()
    assert fusion.FoldBatchNorm not in map(type, model._steps(False))
    x = np.random.default_rng(3).standard_normal((4, 6, 6, 2)).astype(np.float32)
    out = x
    for layer in model.layers:
        out = layer.forward(out)
    np.testing.assert_array_equal(model.predict(x, verbose=0), out)
