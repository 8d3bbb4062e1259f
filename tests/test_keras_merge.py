"""The merge layers (Add, Subtract, Multiply, Average, Maximum, Concatenate) against
Keras 3 itself (KERAS_BACKEND=jax; skipped, saying so, without Keras): outputs, output
shapes and the gradients wrt every input (jax.grad through Keras's layer) on random
inputs; configs, default names and the .keras entry's class against Keras's own; the
protocol the model's graph calls them by (lists in, a list of new gradients out); bad
input shapes refused, naming the layer, where Keras refuses them too (and Keras's
broadcasting, which cconv does not do)."""
import os
import re

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_ENABLE_X64", "1")  # as the other Keras tests: jax starts once
from zoo import need, unnamed  # noqa: E402

keras = need("keras", "interop")
jax = need("jax", "interop")

from cconv import layers, saving, utils  # noqa: E402

NAMES = ["Add", "Subtract", "Multiply", "Average", "Maximum", "Concatenate"]
# Keras's rounding and ours agree to the last bits; the margin allows another XLA
TOL = {np.float32: dict(rtol=2e-6, atol=1e-7), np.float64: dict(rtol=1e-14, atol=1e-15)}


def keras_run(name, kwargs, xs, r, dtype):
    """Keras's layer on xs: its output, and the gradients of sum(output * r) wrt xs."""
    layer = getattr(keras.layers, name)(dtype=np.dtype(dtype).name, **kwargs)
    loss = lambda *args: (layer(list(args)) * r).sum()
    grads = jax.grad(loss, argnums=tuple(range(len(xs))))(*xs)
    return np.asarray(layer(list(xs))), [np.asarray(g) for g in grads]


def ours_run(name, kwargs, xs, r, dtype):
    layer = getattr(layers, name)(**kwargs)
    layer.build([x.shape[1:] for x in xs], dtype, None)
    y = layer.forward(list(xs), training=True)
    return layer, y, layer.backward(r)


CASES = [(name, {}, [(4, 6)] * k) for name in NAMES if name != "Subtract"
         for k in (1, 2, 3)] + [
    ("Subtract", {}, [(4, 6)] * 2),
    ("Add", {}, [(3, 5, 4, 2)] * 4),
    ("Multiply", {}, [(3, 5, 4, 2)] * 4),
    ("Maximum", {}, [(3, 5, 4, 2)] * 4),
    ("Average", {}, [(3, 5, 4, 2)] * 4),
    ("Concatenate", {}, [(3, 5, 4, 2), (3, 5, 4, 1), (3, 5, 4, 3)]),
    ("Concatenate", {"axis": 1}, [(3, 5, 4, 2), (3, 1, 4, 2)]),
    ("Concatenate", {"axis": 2}, [(3, 5, 4, 2), (3, 5, 2, 2), (3, 5, 1, 2)]),
    ("Concatenate", {"axis": -3}, [(3, 5, 4, 2), (3, 2, 4, 2)]),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, kwargs, shapes", CASES)
def test_output_and_input_gradients_are_keras(name, kwargs, shapes, dtype):
    rng = np.random.default_rng(len(shapes))
    xs = [rng.standard_normal(s).astype(dtype) for s in shapes]
    r = rng.standard_normal((shapes[0][0], *keras_shape(name, kwargs, shapes)[1:])).astype(
        dtype)
    want_y, want_grads = keras_run(name, kwargs, xs, r, dtype)
    layer, y, grads = ours_run(name, kwargs, xs, r, dtype)
    assert y.shape == want_y.shape and y.dtype == want_y.dtype == dtype
    assert layer.output_shape == want_y.shape[1:]
    np.testing.assert_allclose(y, want_y, **TOL[dtype])
    assert isinstance(grads, list) and len(grads) == len(xs)
    for g, want in zip(grads, want_grads):
        assert g.shape == want.shape and g.dtype == dtype
        np.testing.assert_allclose(g, want, **TOL[dtype])


def keras_shape(name, kwargs, shapes):
    """Keras's own output shape for inputs of shapes (batch axis included)."""
    return getattr(keras.layers, name)(**kwargs).compute_output_shape(list(shapes))


@pytest.mark.parametrize("name, kwargs, shapes", CASES)
def test_output_shape_is_keras(name, kwargs, shapes):
    layer = getattr(layers, name)(**kwargs)
    assert layer.compute_output_shape([s[1:] for s in shapes]) == \
        tuple(keras_shape(name, kwargs, shapes))[1:]


def test_maximum_gradient_of_a_tie_goes_to_the_first_input():
    """Keras on jax splits a tie's gradient; cconv gives it, whole, to the first input
    holding the maximum (as ops.maximum_backward documents)."""
    a = np.float32([[1.0, 2.0, 3.0]])
    b = np.float32([[1.0, 0.0, 3.0]])
    c = np.float32([[0.0, 2.0, 3.0]])
    layer, _, grads = ours_run("Maximum", {}, [a, b, c], np.float32([[1.0, 2.0, 4.0]]),
                               np.float32)
    np.testing.assert_array_equal(np.concatenate(grads), [[1, 2, 4], [0, 0, 0], [0, 0, 0]])
    _, theirs = keras_run("Maximum", {}, [a, b, c], np.float32([[1.0, 2.0, 4.0]]),
                          np.float32)
    np.testing.assert_allclose(sum(theirs), [[1, 2, 4]])  # Keras: the same total, split


@pytest.mark.parametrize("name", NAMES)
def test_protocol_lists_in_new_gradients_out(name):
    cls = getattr(layers, name)
    assert cls.MULTI_INPUT is True
    k = 2 if name == "Subtract" else 3
    layer = cls()
    layer.build([[2, 3]] * k, "float64", None)
    assert layer.input_shape == ((2, 3),) * k
    assert layer.output_shape == ((2, 3 * k) if name == "Concatenate" else (2, 3))
    xs = [np.random.default_rng(i).standard_normal((4, 2, 3)) for i in range(k)]
    y = layer.forward(xs)
    assert layer.saved == {}, "inference keeps nothing"
    y = layer.forward(xs, training=True)
    grad = np.ones_like(y)
    grads = layer.backward(grad)
    assert [g.shape for g in grads] == [x.shape for x in xs]
    for i, g in enumerate(grads):
        for other in grads[i + 1:] + [grad, y, *xs]:
            assert not np.may_share_memory(g, other)
    assert layer.count_params() == 0 and layer.get_weights() == []


@pytest.mark.parametrize("name, kwargs", [(name, {}) for name in NAMES]
                         + [("Concatenate", {"axis": 2}), ("Concatenate", {"axis": -2})])
def test_config_round_trips_with_keras(name, kwargs):
    theirs = getattr(keras.layers, name)(**kwargs)
    ours = getattr(layers, name)(**kwargs)
    assert ours.get_config().keys() == theirs.get_config().keys()
    from_theirs = getattr(layers, name).from_config(theirs.get_config())
    assert from_theirs.get_config() == {**theirs.get_config(),
                                        "dtype": from_theirs.get_config()["dtype"]}
    assert unnamed(from_theirs.get_config()) == unnamed(theirs.get_config())
    back = getattr(keras.layers, name).from_config(ours.get_config())
    assert unnamed(back.get_config()) == unnamed(ours.get_config())
    assert layers.KERAS_LAYERS[name] is getattr(layers, name)
    assert utils.default_name(getattr(layers, name)) == re.sub(r"_\d+$", "", theirs.name)
    entry = saving.serialize_layer(ours, np.float32)
    keras_entry = keras.saving.serialize_keras_object(theirs)
    for key in ("module", "class_name", "registered_name"):
        assert entry[key] == keras_entry[key], key


@pytest.mark.parametrize("name, kwargs, shapes, match", [
    ("Add", {}, [(4,), (5,)], r"Add: inputs have incompatible shapes, received shapes "
                              r"\[\(4,\), \(5,\)\]"),
    ("Maximum", {}, [(2, 4), (2, 5)], "Maximum: inputs have incompatible shapes"),
    ("Subtract", {}, [(4,)] * 3, "Subtract: a `Subtract` layer should be called on exactly "
                                 "2 inputs"),
    ("Subtract", {}, [(4,)], "exactly 2 inputs"),
    ("Concatenate", {}, [(2, 3), (3, 3)], "Concatenate: a `Concatenate` layer requires "
                                          "inputs with matching shapes"),
    ("Concatenate", {}, [(2, 3), (2, 3, 1)], "matching shapes except for the concatenation"),
])
def test_shapes_keras_refuses_are_refused(name, kwargs, shapes, match):
    with pytest.raises(ValueError):
        getattr(keras.layers, name)(**kwargs).build([(None, *s) for s in shapes])
    with pytest.raises(ValueError, match=match):
        getattr(layers, name)(**kwargs).build(shapes, "float32", None)


@pytest.mark.parametrize("name", ["Add", "Multiply", "Average", "Maximum"])
def test_broadcasting_is_refused_saying_so(name):
    """Keras broadcasts inputs whose shapes differ by 1s or by rank; cconv does not."""
    assert keras_shape(name, {}, [(None, 4, 3), (None, 1, 3)]) == (None, 4, 3)
    with pytest.raises(ValueError, match="it does not broadcast them as Keras does"):
        getattr(layers, name)(name="m").compute_output_shape([(4, 3), (1, 3)])
    with pytest.raises(ValueError, match=f"{name} 'm': inputs have incompatible shapes"):
        getattr(layers, name)(name="m").compute_output_shape([(4, 3), (3,)])


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="Concatenate: axis=0 is the batch axis"):
        layers.Concatenate(axis=0).compute_output_shape([(3,), (4,)])
    with pytest.raises(ValueError, match=r"axis=3 is out of range for inputs of 3 dim"):
        layers.Concatenate(axis=3).compute_output_shape([(3, 2), (4, 2)])
    with pytest.raises(TypeError, match="axis: expected an int"):
        layers.Concatenate(axis="last")
    with pytest.raises(ValueError, match="should be called on a list of inputs"):
        layers.Add().compute_output_shape((3, 4))
    with pytest.raises(ValueError, match="at least 1 input, received input_shape=\\[\\]"):
        layers.Add().compute_output_shape([])
    add = layers.Add(name="add")
    add.build([(3,), (3,)], "float32", None)
    with pytest.raises(TypeError, match="Add 'add': expected a list of input arrays, got "
                                        "ndarray"):
        add.forward(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="Add 'add': built for 2 inputs, received 3"):
        add.forward([np.ones((2, 3), np.float32)] * 3)
