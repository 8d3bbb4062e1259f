"""trainable on every layer (Keras 3's rule, cconv.layers.Layer.trainable): frozen weights
never move and get no optimizer slots, gradients still flow through a frozen layer to the
layers before it, a frozen BatchNormalization runs in inference mode in fit, the
optimizer takes the trainable weights at the first fit after compile, configs, copies,
.keras files and summary counts. Keras itself: tests/test_keras_batchnorm.py."""
import copy
import pickle
import zipfile

import numpy as np
import pytest

import cconv
from cconv import layers, oracle
from zoo import need, same_bits

SHAPE = (6, 6, 2)


def make(frozen=(), optimizer=None, dtype="float32", seed=0):
    """A small conv net with BN; the layers at the positions in `frozen` frozen (some by
    the constructor, some by the attribute)."""
    cconv.utils.set_random_seed(seed)
    net = [layers.Conv2D(3, 3, use_bias=False), layers.BatchNormalization(momentum=0.8),
           layers.Activation("relu"), layers.Flatten(), layers.Dense(6, activation="tanh"),
           layers.Dense(4, activation="softmax")]
    for i in frozen:
        if i % 2:
            net[i].trainable = False
        else:
            kwargs = net[i].get_config()
            net[i] = type(net[i]).from_config({**kwargs, "trainable": False})
    model = cconv.Sequential([layers.Input(SHAPE)] + net, dtype=dtype)
    model.compile(optimizer or cconv.optimizers.SGD(0.1, momentum=0.9),
                  "sparse_categorical_crossentropy")
    return model


def data(n=24, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n,) + SHAPE) * 2 + 1, rng.integers(0, 4, n)


def fit(model, epochs=2, seed=0):
    x, y = data(seed=seed)
    model.fit(x, y, batch_size=8, epochs=epochs, shuffle=False, verbose=0)


def moved(before, model):
    return [(layer.name, k, not np.array_equal(w, layer.params[k]))
            for (layer, k), w in zip(model._weight_keys(), before)]


@pytest.mark.parametrize("frozen", [(0,), (1,), (4,), (0, 1, 5)])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_frozen_weights_never_move_and_get_no_slots(frozen, optimizer):
    opt = cconv.optimizers.SGD(0.1, momentum=0.9) if optimizer == "sgd" else \
        cconv.optimizers.Adam(0.01)
    model = make(frozen, opt)
    before = model.get_weights()
    fit(model)
    frozen_layers = {model.layers[i] for i in frozen}
    for name, k, changed in moved(before, model):
        layer = next(l for l in model.layers if l.name == name)
        assert changed == (layer not in frozen_layers), (name, k, changed)
    # slots: one (SGD momentum) or two (Adam) per trainable weight of a trainable layer;
    # BN's moving statistics have none
    trainable = [(l.name, k) for l, k in model._weight_keys()
                 if l not in frozen_layers and k in ("kernel", "bias", "gamma", "beta")]
    keys = [(l.name, k) for l, k in model._optimizer_keys()]
    assert keys == trainable
    params = [l.params[k] for l, k in model._optimizer_keys()]
    per_weight = 1 if optimizer == "sgd" else 2
    assert len(model.optimizer.slots(params)) == per_weight * len(trainable)


def test_gradients_flow_through_a_frozen_layer():
    """A frozen Dense in the middle: the layers before it take the same steps, to the bit,
    as in the same model with nothing frozen (its backward pass is the same)."""
    frozen, free = make((4,), cconv.optimizers.SGD(0.1)), make((), cconv.optimizers.SGD(0.1))
    before = frozen.get_weights()
    x, y = data()
    for model in (frozen, free):  # one step: the models still compute the same forward
        model.fit(x[:8], y[:8], batch_size=8, epochs=1, shuffle=False, verbose=0)
    for layer in (0, 1):  # the conv and the BN before the frozen Dense
        a, b = frozen.layers[layer], free.layers[layer]
        for k in a.params:
            assert np.array_equal(a.params[k], b.params[k]), (a.name, k)
    assert not same_bits(before[:1], frozen.get_weights()[:1])


def test_frozen_batchnorm_runs_in_inference_mode_in_fit():
    model = make((1,), cconv.optimizers.SGD(0.1))
    bn = model.layers[1]
    bn.params["moving_mean"] = np.full(3, 0.25, np.float32)
    bn.params["moving_variance"] = np.full(3, 2.0, np.float32)
    x = np.random.default_rng(1).standard_normal((5, 4, 4, 3)).astype(np.float32)
    want = oracle.batch_norm_inference(x, bn.params["moving_mean"],
                                       bn.params["moving_variance"], bn.params["gamma"],
                                       bn.params["beta"], bn.epsilon)
    np.testing.assert_allclose(bn.forward(x, training=True), want, rtol=1e-6, atol=1e-6)
    before = bn.get_weights()
    fit(model)
    assert same_bits(before, bn.get_weights())
    # and its backward pass: the inference-mode gradient, no batch statistics
    g = np.cos(x)
    bn.forward(x, training=True)
    got = bn.backward(g)
    want = oracle.batch_norm_backward(x, g, bn.params["moving_mean"],
                                      bn.params["moving_variance"], bn.params["gamma"],
                                      bn.epsilon, batch_statistics=False)[0]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_trainable_batchnorm_moves_its_statistics_in_fit_only():
    model = make((), cconv.optimizers.SGD(0.1))
    bn = model.layers[1]
    x, y = data()
    before = bn.get_weights()
    model.predict(x, verbose=0)
    model.evaluate(x, y, verbose=0)
    assert same_bits(before, bn.get_weights())
    model.fit(x[:8], y[:8], batch_size=8, epochs=1, shuffle=False, verbose=0)
    # one step: moving = moving * 0.8 + batch * 0.2, the batch's statistics those of
    # the conv's output on the 8 images (before the step moved the conv)
    kernel = make((), cconv.optimizers.SGD(0.1)).layers[0].params["kernel"]  # before the step
    _, mean, var = oracle.batch_norm(oracle.conv2d(x[:8].astype(np.float32), kernel))
    m0, v0 = before[2], before[3]
    np.testing.assert_allclose(bn.params["moving_mean"], m0 * 0.8 + mean * 0.2, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(bn.params["moving_variance"], v0 * 0.8 + var * 0.2,
                               rtol=1e-5, atol=1e-6)


def test_trainable_changed_after_the_optimizer_took_the_weights_is_refused(tmp_path):
    model = make((), cconv.optimizers.SGD(0.1, momentum=0.9))
    model.layers[4].trainable = False  # before the first fit: taken into account, as Keras
    before = model.get_weights()
    fit(model, epochs=1)
    assert not any(changed for name, _, changed in moved(before, model) if name == "dense")
    model.layers[0].trainable = False
    with pytest.raises(ValueError, match=r"trainable of layers \['conv2d'\].*compile\(\)"):
        fit(model, epochs=1)
    # nor saved: the file's optimizer slots would not match its layers' configs
    with pytest.raises(ValueError, match=r"save: the trainable of layers \['conv2d'\]"):
        model.save(tmp_path / "m.keras")
    assert not (tmp_path / "m.keras").exists()
    model.compile(cconv.optimizers.SGD(0.1, momentum=0.9), "sparse_categorical_crossentropy")
    before = model.get_weights()
    fit(model, epochs=1)
    changes = {(name, k): changed for name, k, changed in moved(before, model)}
    assert not changes[("conv2d", "kernel")] and not changes[("dense", "kernel")]
    assert changes[("dense_1", "kernel")]
    model.save(tmp_path / "m.keras")  # recompiled: the file loads and trains on
    cconv.models.load_model(tmp_path / "m.keras")


def test_summary_counts():
    model = make((4,))
    lines = []
    model.summary(print_fn=lines.append)
    text = lines[0]
    # conv 3*3*2*3 = 54; BN 4 * 3 = 12, 6 moving; dense (4*4*3)*6 + 6 = 294 frozen;
    # dense_1 6*4 + 4 = 28
    assert "Total params: 388" in text
    assert "Trainable params: 88" in text  # 54 + 6 (gamma, beta) + 28
    assert "Non-trainable params: 300" in text  # 6 moving statistics + the frozen 294


def test_summary_show_trainable_column():
    """Keras's column: Y for a trainable layer with weights, N for a frozen one, - for a
    layer without weights."""
    lines = []
    make((4,)).summary(print_fn=lines.append, show_trainable=True)
    rows = {line.split()[0]: line.split()[-1] for line in lines[0].splitlines()
            if line.split() and line.split()[0] in ("conv2d", "batch_normalization",
                                                     "activation", "flatten", "dense",
                                                     "dense_1")}
    assert rows == {"conv2d": "Y", "batch_normalization": "Y", "activation": "-",
                    "flatten": "-", "dense": "N", "dense_1": "Y"}


def test_attribute_constructor_and_config():
    for cls in list(layers.KERAS_LAYERS.values()) + list(layers.CCONV_LAYERS.values()):
        args = {"Conv2D": (2, 3), "Dense": (2,), "Activation": ("relu",), "Dropout": (0.5,),
                "Rescaling": (0.5,), "Reshape": ((-1,),),
                "AveragePooling2D": (2,)}.get(cls.__name__, ())
        layer = cls(*args, trainable=False)
        assert layer.trainable is False and layer.get_config()["trainable"] is False
        again = cls.from_config(layer.get_config())
        assert again.trainable is False
        layer.trainable = True
        assert layer.get_config()["trainable"] is True
    with pytest.raises(TypeError, match="trainable: expected True or False"):
        layers.Dense(2, trainable="no")
    with pytest.raises(TypeError, match="trainable"):
        layers.Dense(2).trainable = None


def test_order_of_weights_does_not_change_when_frozen():
    a, b = make(()), make((1, 4))
    assert [(l.name, k) for l, k in a._weight_keys()] == \
        [(l.name, k) for l, k in b._weight_keys()]
    assert same_bits(a.get_weights(), b.get_weights())


@pytest.mark.parametrize("copier", [lambda m: pickle.loads(pickle.dumps(m)), copy.deepcopy])
def test_copies_keep_trainable_and_train_on_the_same(copier):
    model = make((0, 1))
    fit(model, epochs=1)
    twin = copier(model)
    assert [l.trainable for l in twin.layers] == [l.trainable for l in model.layers]
    fit(model, epochs=1, seed=1)
    fit(twin, epochs=1, seed=1)
    assert same_bits(model.get_weights(), twin.get_weights())


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_keras_file_with_frozen_layers_trains_on_the_same(tmp_path, optimizer):
    h5py = need("h5py", "h5")
    opt = cconv.optimizers.SGD(0.1, momentum=0.9) if optimizer == "sgd" else \
        cconv.optimizers.Adam(0.01)
    model = make((0, 4), opt, dtype="float64")
    fit(model, epochs=1)
    model.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as z, h5py.File(z.open("model.weights.h5")) as f:
        # iterations, learning rate, then slots for BN's gamma, beta and the last Dense
        assert len(f["optimizer/vars"]) == 2 + (1 if optimizer == "sgd" else 2) * 4
    loaded = cconv.models.load_model(tmp_path / "m.keras")
    assert [l.trainable for l in loaded.layers] == [l.trainable for l in model.layers]
    assert same_bits(loaded.get_weights(), model.get_weights())
    fit(model, epochs=1, seed=2)
    fit(loaded, epochs=1, seed=2)
    assert same_bits(loaded.get_weights(), model.get_weights())
    x = data(seed=3)[0]
    assert np.array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
