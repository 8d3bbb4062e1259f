"""Whole networks, several SGD steps, against the oracle: the chapter-10 and the TF-tutorial
networks of cconv.presets (and a small GEMM-path one), with cconv.fusion's fused steps
and without, in float64, each step recomputed layer by layer by cconv.oracle's functions
and Keras's rules written out here. SGD moves each weight by lr times its gradient, so
a wrong magnitude anywhere in a backward pass shows (Adam's first steps are about
lr * sign(g), and hide it)."""
import numpy as np
import pytest

import cconv
from cconv import activations, fusion, oracle, presets
from cconv.layers import Activation, Conv2D, Dense, Dropout, Flatten, Input, MaxPooling2D


def activation_backward(name, z, y, g):
    """The oracle's gradient through an activation, from its output or its input as the
    table says."""
    source = y if activations.row(name).gradient_from == "output" else z
    return oracle.activation_backward(name, source, g)


def oracle_sgd_step(model, params, x, onehot, masks, lr):
    """One SGD step of the mean cross-entropy over (x, onehot), through model's layers
    (their configuration only) by the oracle's ops, from `params` (a dict per layer).
    The model's last activation must be a softmax or linear (from_logits): either way
    the gradient wrt the logits is (softmax(logits) - onehot) / N. Returns new params."""
    stack = model.layers
    tape, h = [], x
    for i, (layer, p) in enumerate(zip(stack, params)):
        kind, extra = type(layer), None
        if kind is Conv2D:
            z = oracle.conv2d(h, p["kernel"], p.get("bias"), layer.padding)
        elif kind is Dense:
            z = oracle.dense(h, p["kernel"], p.get("bias"))
        elif kind is Dropout:
            z, _ = oracle.dropout(h, layer.rate, mask=masks[layer.name])
        elif kind is Flatten:
            z = h.reshape(len(h), -1)
        elif kind is MaxPooling2D:
            z, extra = oracle.max_pool2d(h, layer.pool_size, layer.padding)
        elif kind is Activation:
            z = h
        else:
            raise TypeError(f"no oracle for {kind.__name__}")
        act = layer.activation.name if layer.activation is not None else "linear"
        last = i == len(stack) - 1
        assert not last or act in ("softmax", "linear")
        y = z if last else oracle.activation(act, z)
        tape.append((h, z, y, extra, act))
        h = y
    g = (oracle.softmax(h) - onehot) / len(x)
    new = [dict(p) for p in params]
    for i in reversed(range(len(stack))):
        layer, p = stack[i], params[i]
        inp, z, y, extra, act = tape[i]
        if i != len(stack) - 1:
            g = activation_backward(act, z, y, g)
        kind, grads = type(layer), {}
        if kind is Conv2D:
            g, grads["kernel"], grads["bias"] = oracle.conv2d_backward(
                inp, p["kernel"], g, layer.padding, need_grad_x=i > 0)
        elif kind is Dense:
            g, grads["kernel"], grads["bias"] = oracle.dense_backward(inp, p["kernel"], g)
        elif kind is Dropout:
            g = oracle.dropout_backward(g, masks[layer.name], layer.rate)
        elif kind is Flatten:
            g = g.reshape(inp.shape)
        elif kind is MaxPooling2D:
            g = oracle.max_pool2d_backward(g, extra, inp.shape, layer.pool_size, layer.padding)
        for k in p:
            new[i][k] = p[k] - lr * grads[k]
    return new


def small_gemm_net():
    """Multi-channel 3x3 convolutions (the GEMM kernels' paths, forward and backward), and
    a tanh convolution fused with its pooling."""
    model = cconv.Sequential([Input((12, 12, 1)), Conv2D(4, 3, activation="relu", padding="same"),
                              Conv2D(8, 3, activation="tanh"), MaxPooling2D(2), Flatten(),
                              Dropout(0.3), Dense(10, activation="softmax")], dtype="float64")
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    return model


def activation_net(name):
    """Every layer that takes an activation, with `name`: a conv (fused with its pooling
    when the table says the kernels take it), Activation and Dense."""
    def build():
        model = cconv.Sequential([
            Input((8, 8, 1)), Conv2D(4, 3, activation=name, padding="same"), MaxPooling2D(2),
            Activation(name), Flatten(), Dense(6, activation=name),
            Dense(10, activation="softmax")], dtype="float64")
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        return model
    return build


NETWORKS = {
    "ch10": (lambda: presets.build_fixed("float64"), (28, 28, 1), 0.1, fusion.ConvDropoutDense),
    "tf": (lambda: presets.build_tf("float64"), (28, 28, 1), 0.05, fusion.ConvPool),
    "gemm": (small_gemm_net, (12, 12, 1), 0.2, fusion.ConvPool),
    **{f"act-{name}": (activation_net(name), (8, 8, 1), 0.2,
                       fusion.ConvPool if activations.row(name).fused else None)
       for name in activations.ELEMENTWISE},
}
# Inputs in [0, SCALE): tanh_shrink's x - tanh(x) ~ x^3 / 3 shrinks small signals, three
# times over, past where an SGD step still moves the first layer's weights.
SCALE = {"act-tanh_shrink": 4.0}


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_sgd_steps_of_a_whole_network_match_the_oracle(name, fused, monkeypatch):
    build, shape, lr, fused_step = NETWORKS[name]
    if not fused:
        monkeypatch.setattr(fusion, "RULES", [])
    cconv.utils.set_random_seed(5)
    model = build()
    if fused_step is None:  # no rule takes this activation
        assert not any(isinstance(s, fusion.Fused) for s in model._steps(True))
    else:
        assert any(isinstance(s, fused_step) for s in model._steps(True)) == fused
    # SGD on the model's own loss (the tf preset trains with Adam)
    model.compile(optimizer=cconv.optimizers.SGD(lr), loss=model.loss, metrics=["accuracy"])
    rng = np.random.default_rng(6)
    steps, batch = 3, 4
    x = rng.random((steps * batch,) + shape) * SCALE.get(name, 1.0)
    y = rng.integers(0, 10, steps * batch)
    start = [{k: v.copy() for k, v in layer.params.items()} for layer in model.layers]
    want = start
    for s in range(steps):
        xb, yb = x[s * batch:(s + 1) * batch], y[s * batch:(s + 1) * batch]
        model.fit(xb, yb, batch_size=batch, epochs=1, shuffle=False, verbose=0, seed=10 + s)
        # the masks this step drew (checked against oracle.dropout_mask in tests/ops)
        masks = {l.name: l.saved["mask"] for l in model.layers if type(l) is Dropout}
        assert all(0.2 < m.mean() < 0.9 for m in masks.values())
        want = oracle_sgd_step(model, want, xb, np.eye(10)[yb], masks, lr)
    for layer, p0, p in zip(model.layers, start, want):
        for k in p:
            moved = p[k] - p0[k]
            assert np.abs(moved).max() > 0, f"{layer.name}.{k} did not train"
            err = np.abs(layer.params[k] - p[k]).max()
            assert err <= 1e-9 * np.abs(moved).max() + 1e-15, \
                f"{layer.name}.{k}: off by {err:.3g}, moved by {np.abs(moved).max():.3g}"
