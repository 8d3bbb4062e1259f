"""FLOPs of a network's work, counted once for every benchmark.

The direct algorithm's arithmetic, a multiply-add counting 2 FLOPs: a convolution that
runs Winograd is counted as the direct convolution it replaces, so its GFLOP/s are
"effective" and can pass the peak. Counted:
  Conv2D  output positions x filters x kernel height x width x input channels
          multiply-adds (strides and dilation counted as they fall: only the taps a
          direct convolution computes, padding's zeros included);
  Dense   positions (all axes but the last) x input units x units multiply-adds.
Every other layer counts 0: biases, activations, pooling, dropout, batch normalization
and the loss are a few operations an element, bound by memory, not arithmetic; they
show in the time, not in the count.

Training one image is its forward FLOPs, plus each trainable Conv2D or Dense layer's
weight gradient (as many multiply-adds as its forward), plus the input gradient (as many
again) of every layer that has a layer with trainable weights before it: the first
layers' input gradients feed nothing and are not computed.
"""
from dataclasses import dataclass

import numpy as np


def conv2d_macs(output_shape, kernel_shape):
    """Multiply-adds of one image's direct convolution: output (OH, OW, F), kernel
    (KH, KW, C, F)."""
    oh, ow, f = output_shape
    kh, kw, c, kf = kernel_shape
    if kf != f:
        raise ValueError(f"kernel_shape: expected {f} filters to match output_shape "
                         f"{tuple(output_shape)}, got {tuple(kernel_shape)}")
    return oh * ow * f * kh * kw * c


def dense_macs(input_shape, units):
    """Multiply-adds of one sample's dense layer on input (..., in_units)."""
    return int(np.prod(input_shape)) * units


def layer_macs(layer):
    """Forward multiply-adds per sample of a built cconv layer (0 but for Conv2D and
    Dense)."""
    kind = type(layer).__name__
    if kind == "Conv2D":
        return conv2d_macs(layer.output_shape, layer.params["kernel"].shape)
    if kind == "Dense":
        return dense_macs(layer.input_shape, layer.units)
    return 0


@dataclass(frozen=True)
class Count:
    forward: int  # FLOPs of one sample's forward pass
    training: int  # FLOPs of one sample's training step (forward and backward)


def per_layer(model):
    """[(layer, Count)] of a built cconv model's layers, per sample."""
    counts = []
    trainable_before = False
    for layer in model.layers:
        macs = layer_macs(layer)
        trains = layer.trainable and any(name not in layer.non_trainable_names
                                         for name in layer.params)
        backward = macs * (trains + trainable_before)  # weight and input gradients
        counts.append((layer, Count(2 * macs, 2 * (macs + backward))))
        trainable_before = trainable_before or trains
    return counts


def count(model):
    """Count of a built cconv model, per sample."""
    counts = [c for _, c in per_layer(model)]
    return Count(sum(c.forward for c in counts), sum(c.training for c in counts))
