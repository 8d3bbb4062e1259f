"""benchmarks/flops.py, the FLOP count every benchmark's GFLOP/s rest on, against hand
counts and the published ones (issue 24's 5.04 GFLOP chapter-10 epoch; the TF network's
27.77 and 82.05 MFLOP an image, once hand-written in bench_tfnet.py)."""
import importlib.util
from pathlib import Path

import pytest

import cconv
from cconv.layers import (BatchNormalization, Conv2D, Dense, Dropout, Flatten, Input,
                          MaxPooling2D)
from cconv.presets import build_tf

_spec = importlib.util.spec_from_file_location(
    "flops", Path(__file__).resolve().parents[1] / "benchmarks" / "flops.py")
flops = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(flops)


def built(layers):
    model = cconv.Sequential(layers)
    model.build()
    return model


def test_chapter10_epoch_is_the_published_5_04_gflop():
    model = built([Input((28, 28, 1)), Conv2D(16, 3, activation="tanh"), Dropout(0.5),
                   Flatten(), Dense(10, activation="softmax")])
    conv, dense = 26 * 26 * 16 * 3 * 3 * 1, 26 * 26 * 16 * 10
    count = flops.count(model)
    assert count.forward == 2 * (conv + dense) == 411_008
    # weight gradients of both; the input gradient of the dense layer only
    assert count.training == 2 * (2 * conv + 3 * dense) == 1_038_336
    epoch = 7 * 128 * count.training + 10_000 * count.forward
    assert round(epoch / 1e9, 2) == 5.04


def test_tf_tutorial_network_by_hand():
    macs = {"conv1": 28 * 28 * 32 * 5 * 5 * 1, "conv2": 14 * 14 * 64 * 5 * 5 * 32,
            "dense1": 7 * 7 * 64 * 1024, "dense2": 1024 * 10}
    model = build_tf()
    model.build()
    count = flops.count(model)
    forward = 2 * sum(macs.values())
    assert count.forward == forward
    assert count.training == 3 * forward - 2 * macs["conv1"]
    assert (round(count.forward / 1e6, 2), round(count.training / 1e6, 2)) == (27.77, 82.05)


def tiny(frozen):
    """Strides and 'same' padding, dilation, BatchNormalization, pooling, a Dense on a
    rank-3 input; the layers named in `frozen` not trainable."""
    layers = [Conv2D(4, 3, strides=2, padding="same", name="c1"),  # 12x12x3 -> 6x6x4
              BatchNormalization(name="bn"),
              Conv2D(5, 3, dilation_rate=2, name="c2"),  # span 5: 6x6x4 -> 2x2x5
              MaxPooling2D(1, name="pool"),
              Dense(6, name="d1"),  # on each of the 2x2 positions: 5 -> 6
              Flatten(name="flat"), Dense(3, name="d2")]  # 24 -> 3
    for layer in layers:
        layer.trainable = layer.name not in frozen
    return built([Input((12, 12, 3))] + layers)


# multiply-adds of c1, c2, d1, d2
C1, C2, D1, D2 = 6 * 6 * 4 * 3 * 3 * 3, 2 * 2 * 5 * 3 * 3 * 4, 2 * 2 * 5 * 6, 24 * 3


@pytest.mark.parametrize("frozen, weight_grads, input_grads", [
    ((), C1 + C2 + D1 + D2, C2 + D1 + D2),
    (("c2",), C1 + D1 + D2, C2 + D1 + D2),
    # BatchNormalization's gamma and beta train: c2 still passes gradients back to them
    (("c1",), C2 + D1 + D2, C2 + D1 + D2),
    # nothing trains before d1: only d2 needs its input's gradient
    (("c1", "bn", "c2"), D1 + D2, D2),
])
def test_tiny_network_by_hand(frozen, weight_grads, input_grads):
    count = flops.count(tiny(frozen))
    forward = C1 + C2 + D1 + D2
    assert (C1, C2, D1, D2) == (3888, 720, 120, 72)
    assert count.forward == 2 * forward
    assert count.training == 2 * (forward + weight_grads + input_grads)


def test_a_frozen_network_trains_for_the_cost_of_its_forward_pass():
    model = tiny(("c1", "bn", "c2", "d1", "d2"))
    count = flops.count(model)
    assert count.training == count.forward == 2 * (C1 + C2 + D1 + D2)


def test_layer_counts_and_bad_shapes():
    assert flops.conv2d_macs((3, 4, 5), (2, 2, 7, 5)) == 3 * 4 * 5 * 2 * 2 * 7
    assert flops.dense_macs((2, 3, 8), 5) == 2 * 3 * 8 * 5
    with pytest.raises(ValueError, match="kernel_shape: expected 5 filters"):
        flops.conv2d_macs((3, 4, 5), (2, 2, 7, 6))
