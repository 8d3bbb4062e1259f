"""The contract between cconv.fusion and the layers (cconv.layers.Layer): fused steps
touch only the names in Layer.CONTRACT, each rule's SAVED declares the `saved` keys it
uses, and the layers provide those keys after a training forward pass. A layer that
renames what it saves, or a fused step that reaches past the contract, fails here."""
import sys

import numpy as np
import pytest

import cconv
from cconv import fusion
from cconv.layers import (BatchNormalization, Conv2D, Dense, Dropout, Flatten, Input, Layer,
                          MaxPooling2D)


def network(rule):
    """A small built model in which `rule` applies, and whether it applies in training."""
    cconv.utils.set_random_seed(0)
    if rule is fusion.ConvPool:
        layers = [Input((8, 8, 2)), Conv2D(4, 3, activation="relu"), MaxPooling2D(2),
                  Flatten(), Dense(3)]
    elif rule is fusion.FoldBatchNorm:
        layers = [Input((8, 8, 2)), Conv2D(4, 3, use_bias=False), BatchNormalization(),
                  Flatten(), Dense(3)]
    else:
        layers = [Input((8, 8, 1)), Conv2D(4, 3, activation="tanh"), Dropout(0.5),
                  Flatten(), Dense(3, activation="softmax")]
    model = cconv.Sequential(layers)
    model.build()
    return model, rule not in (fusion.ConvDense, fusion.FoldBatchNorm)  # inference only


def fused_step(model, rule, training):
    steps = [s for s in fusion.plan(model.layers, training) if type(s) is rule]
    assert len(steps) == 1, f"{rule.__name__} no longer applies to its test network"
    return steps[0]


def run_steps(model, training):
    """A forward pass over the plan's steps and, in training, a backward pass."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (3,) + model.input_shape).astype(np.float32)
    steps = fusion.plan(model.layers, training)
    for step in steps:
        x = step.forward(x, training, rng)
    if training:
        grad = np.ones_like(x)
        for step in reversed(steps):
            grad = step.backward(grad)


@pytest.mark.parametrize("rule", fusion.RULES, ids=lambda r: r.__name__)
def test_layers_provide_the_saved_keys_each_rule_declares(rule):
    """Layer by layer, as the layers run without fusion, every key a rule declares must
    be in the layer's `saved`."""
    model, training = network(rule)
    step = fused_step(model, rule, training)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (3,) + model.input_shape).astype(np.float32)
    for layer in model.layers:
        x = layer.forward(x, True, rng)
    for layer in step.layers:
        missing = set(rule.SAVED.get(type(layer), ())) - set(layer.saved)
        assert not missing, (f"{type(layer).__name__} no longer saves {sorted(missing)}, "
                             f"which fusion.{rule.__name__} needs; update the rule and "
                             f"Layer's docstring with the layer")


class RecordingDict(dict):
    """A layer's `saved` that records the keys code in fusion.py reads or writes."""

    def __init__(self, data, seen):
        super().__init__(data)
        self.seen = seen

    def _record(self, key):
        if sys._getframe(2).f_code.co_filename == fusion.__file__:
            self.seen.add(key)

    def __getitem__(self, key):
        self._record(key)
        return super().__getitem__(key)

    def __setitem__(self, key, value):
        self._record(key)
        super().__setitem__(key, value)

    def get(self, key, default=None):
        self._record(key)
        return super().get(key, default)


@pytest.mark.parametrize("rule", fusion.RULES, ids=lambda r: r.__name__)
def test_rules_use_only_the_saved_keys_they_declare(rule):
    model, training = network(rule)
    seen = {layer: set() for layer in model.layers}
    for layer in model.layers:
        layer.saved = RecordingDict(layer.saved, seen[layer])
    run_steps(model, training)
    for layer in fused_step(model, rule, training).layers:
        undeclared = seen[layer] - set(rule.SAVED.get(type(layer), ()))
        assert not undeclared, (f"fusion.{rule.__name__} uses {sorted(undeclared)} of "
                                f"{type(layer).__name__}.saved without declaring it in SAVED")


@pytest.mark.parametrize("rule", fusion.RULES, ids=lambda r: r.__name__)
def test_fused_steps_touch_only_the_contract(rule, monkeypatch):
    """Every attribute that code in fusion.py gets or sets on a layer is in
    Layer.CONTRACT."""
    touched = set()

    def record(layer, name):
        if sys._getframe(2).f_code.co_filename == fusion.__file__:
            touched.add((type(layer).__name__, name))

    def getattribute(layer, name):
        record(layer, name)
        return object.__getattribute__(layer, name)

    def setattr_(layer, name, value):
        record(layer, name)
        object.__setattr__(layer, name, value)

    model, training = network(rule)
    monkeypatch.setattr(Layer, "__getattribute__", getattribute)
    monkeypatch.setattr(Layer, "__setattr__", setattr_)
    run_steps(model, training)
    monkeypatch.undo()
    assert touched, "the recording saw nothing: the test no longer watches fusion.py"
    outside = sorted((cls, name) for cls, name in touched if name not in Layer.CONTRACT)
    assert not outside, f"fusion.py touches layer attributes outside Layer.CONTRACT: {outside}"
