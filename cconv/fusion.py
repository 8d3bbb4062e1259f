"""Runs of layers that one op computes faster than layer by layer.

Sequential asks `plan(layers, training)` for the steps of a pass: each step is a layer
or a fused run standing in for several consecutive layers. A fused run computes what
its layers would (the tests hold both against the oracle), keeps the weights in its
layers and, in training, fills their grads in backward. Each rule in RULES is a Fused
class whose `match(layers, i, training)` returns a fused run of the layers from
position i, or None when it does not apply.

The contract with the layers (see cconv.layers.Layer): a fused step touches only a
layer's `params`, `grads`, `saved`, its public configuration and its forward/backward
methods (the names in Layer.CONTRACT). Each rule declares in SAVED, per layer type, the
keys of `saved` that it reads or writes; tests/test_fusion_contract.py checks that the
layers provide them and that no step touches anything else.
"""
import threading

import numpy as np

from cconv import ops
from cconv.layers import BatchNormalization, Conv2D, Dense, Dropout, Flatten, MaxPooling2D
from cconv.ops._scratch import reused


class Fused:
    """A run of consecutive layers computed as one step, with the step interface of a
    layer: forward / forward_linear / backward / backward_linear. "linear" stops before
    the activation of the run's last layer, as for a layer."""

    SAVED = {}  # {layer type: keys of its `saved` that this step reads or writes}

    def __init__(self, layers):
        self.layers = tuple(layers)
        self.activation = self.layers[-1].activation

    @classmethod
    def match(cls, layers, i, training):
        """A fused run of `layers` from position i, or None."""
        raise NotImplementedError

    def forward(self, x, training=False, rng=None):
        return self.layers[-1].activate(self.forward_linear(x, training, rng), training)

    def backward(self, grad):
        return self.backward_linear(self.layers[-1].activation_grad(grad))

    def forward_linear(self, x, training=False, rng=None):
        raise NotImplementedError

    def backward_linear(self, grad):
        raise NotImplementedError

    def weights_changed(self):
        """The layers' weights were written: drop anything derived from them."""


def plan(layers, training):
    """The steps of a forward pass over `layers` (built), fused where a rule applies."""
    steps, i = [], 0
    while i < len(layers):
        for rule in RULES:
            fused = rule.match(layers, i, training)
            if fused is not None:
                steps.append(fused)
                i += len(fused.layers)
                break
        else:
            steps.append(layers[i])
            i += 1
    return steps


def _plain_conv(layer):
    """A Conv2D of stride 1 without dilation: the only convolution the fused ops have."""
    return type(layer) is Conv2D and layer.strides == (1, 1) and layer.dilation_rate == (1, 1)


def _conv_to_dense(layers, i, max_dropouts):
    """The run Conv2D (with an activation the kernels apply) -> up to max_dropouts
    Dropout -> Flatten -> Dense starting at i, or None."""
    conv = layers[i]
    if type(conv) is not Conv2D or not conv.activation.fused:
        return None
    j = i + 1
    while j < len(layers) and j - i <= max_dropouts and type(layers[j]) is Dropout:
        j += 1
    if j + 1 < len(layers) and type(layers[j]) is Flatten and type(layers[j + 1]) is Dense:
        return layers[i:j + 2]
    return None


class ConvDense(Fused):
    """Conv2D (one input channel) -> Dropout... -> Flatten -> Dense at inference, by
    ops.conv2d_dense: the conv output never goes to memory. Dropout passes inputs through
    at inference, and Flatten only reshapes."""

    SAVED = {}

    @classmethod
    def match(cls, layers, i, training):
        if training or not _plain_conv(layers[i]) or layers[i].input_shape[2] != 1:
            return None
        run = _conv_to_dense(layers, i, len(layers))
        return None if run is None else cls(run)

    def forward_linear(self, x, training=False, rng=None):
        conv, dense = self.layers[0], self.layers[-1]
        return ops.conv2d_dense(x, conv.params["kernel"], conv.params.get("bias"),
                                dense.params["kernel"], dense.params.get("bias"),
                                conv.padding, conv.activation.name)


class ConvDropoutDense(Fused):
    """Conv2D -> [Dropout] -> Flatten -> Dense in training. Forward runs the layers one
    by one; backward goes back through the dense layer, the dropout and the conv's
    activation in one op (ops.dense_backward_gated), which for a narrow dense layer reads
    the dropout mask and the activation's output once instead of making two more passes
    over memory."""

    # conv.saved["x"] is read by conv.backward_linear
    SAVED = {Conv2D: ("x", "y"), Dropout: ("mask",), Dense: ("x",)}

    def __init__(self, layers):
        super().__init__(layers)
        self.conv, self.dense = self.layers[0], self.layers[-1]
        dropouts = [layer for layer in self.layers if type(layer) is Dropout]
        self.dropout = dropouts[0] if dropouts else None

    @classmethod
    def match(cls, layers, i, training):
        run = _conv_to_dense(layers, i, 1) if training else None
        return None if run is None else cls(run)

    def forward_linear(self, x, training=False, rng=None):
        for layer in self.layers[:-1]:
            x = layer.forward(x, training, rng)
        return self.layers[-1].forward_linear(x, training, rng)

    def backward_linear(self, grad):
        conv, dense, dropout = self.conv, self.dense, self.dropout
        _, dense.grads["kernel"], grad_b = ops.dense_backward(
            dense.saved["x"], dense.params["kernel"], grad, need_grad_x=False)
        if dense.use_bias:
            dense.grads["bias"] = grad_b
        y = conv.saved["y"]
        n = len(y)
        mask = None if dropout is None else dropout.saved["mask"]
        grad_z = ops.dense_backward_gated(
            grad, dense.params["kernel"], y.reshape(n, -1),
            None if mask is None else mask.reshape(n, -1),
            0.0 if dropout is None else dropout.rate, conv.activation.name)
        return conv.backward_linear(grad_z.reshape(y.shape))


class ConvPool(Fused):
    """Conv2D (linear, tanh or relu) then MaxPooling2D, by ops.conv2d_maxpool: unless the
    convolution takes Winograd, its full-size output is never stored, in training or
    inference. The pooled output and its argmax are this step's own `saved`."""

    # conv.saved["x"]: written here, read by conv.backward_linear
    SAVED = {Conv2D: ("x",)}

    def __init__(self, layers):
        super().__init__(layers)
        self.saved = {}
        self._buffers = threading.local()

    @classmethod
    def match(cls, layers, i, training):
        """A Conv2D of stride 1 without dilation whose activation the kernels apply,
        followed by a MaxPooling2D of windows side by side (strides = pool_size)."""
        if i + 1 >= len(layers):
            return None
        conv, pool = layers[i], layers[i + 1]
        if _plain_conv(conv) and type(pool) is MaxPooling2D \
                and pool.strides == pool.pool_size and conv.activation.fused:
            return cls((conv, pool))
        return None

    def forward_linear(self, x, training=False, rng=None):
        conv, pool = self.layers
        shape = (len(x),) + pool.output_shape
        out = reused(self._buffers, "out", shape, conv.dtype)
        argmax = reused(self._buffers, "argmax", shape, np.int32) if training else None
        y, argmax = ops.conv2d_maxpool(
            x, conv.params["kernel"], conv.params.get("bias"), conv.padding,
            conv.activation.name, pool.pool_size, pool.padding, need_argmax=training,
            out=out, out_argmax=argmax)
        if training:
            conv.saved["x"] = x
            self.saved["y"], self.saved["argmax"] = y, argmax
        return y

    def backward_linear(self, grad):
        # Unfused, the pooling's gradient is grad at each window's argmax and 0 elsewhere,
        # and the activation's backward multiplies it elementwise by act'(h), h the conv
        # output. Zeros stay zeros, and at an argmax h is the pooled value y, so applying
        # the activation's backward to (y, grad) first and then scattering gives the same
        # numbers, from the same operations on the same operands. Ties change nothing:
        # argmax names one pixel per window either way (the first, as max_pool2d picks
        # it on the activated values). Nor do relu's zeros: a window of non-positive
        # values pools to y = 0, whose relu gradient is 0, exactly as at the pixel the
        # unfused pooling would have routed grad to.
        conv, pool = self.layers
        grad = ops.activation_backward(conv.activation.name, self.saved["y"], grad)
        conv_shape = (len(grad),) + conv.output_shape
        grad_z = ops.max_pool2d_backward(
            grad, self.saved["argmax"], conv_shape, pool.pool_size, pool.padding,
            out=reused(self._buffers, "grad_z", conv_shape, conv.dtype))
        return conv.backward_linear(grad_z)


class FoldBatchNorm(Fused):
    """A linear Conv2D or Dense (no activation), then BatchNormalization, at inference:
    one convolution or dense layer with the normalisation folded into its weights,
    w' = w * k and b' = (b - moving_mean) * k + beta, k = gamma / sqrt(moving_variance +
    epsilon), per output channel, in float64 and rounded once. Keras's usual
    Conv2D(use_bias=False) -> BatchNormalization -> Activation("relu") takes it. Not
    folded: a Conv2D or Dense with an activation (the normalisation comes after the
    activation, which does not commute with it), and training (batch statistics, moving
    averages and gradients; a frozen BatchNormalization too). The folded weights are
    made when first needed and kept while the arrays are the same objects and the model
    has not said its weights changed (weights_changed: a fit step, set_weights)."""

    SAVED = {}

    def __init__(self, layers):
        super().__init__(layers)
        self._folded = None  # (the arrays folded, (kernel, bias))

    @classmethod
    def match(cls, layers, i, training):
        if training or i + 1 >= len(layers):
            return None
        first, norm = layers[i], layers[i + 1]
        if type(first) in (Conv2D, Dense) and first.activation.name == "linear" \
                and type(norm) is BatchNormalization:
            return cls((first, norm))
        return None

    def weights_changed(self):
        self._folded = None

    def folded_weights(self):
        """(kernel, bias) of the folded layer."""
        first, norm = self.layers
        sources = (first.params["kernel"], first.params.get("bias"),
                   norm.params.get("gamma"), norm.params.get("beta"),
                   norm.params["moving_mean"], norm.params["moving_variance"])
        cached = self._folded
        if cached is not None and all(a is b for a, b in zip(cached[0], sources)):
            return cached[1]
        kernel, bias, gamma, beta, mean, var = sources
        k = 1.0 / np.sqrt(var.astype(np.float64) + norm.epsilon)
        if gamma is not None:
            k = k * gamma
        b = -mean.astype(np.float64) if bias is None else bias - mean.astype(np.float64)
        b = b * k if beta is None else b * k + beta
        folded = ((kernel * k).astype(kernel.dtype), b.astype(kernel.dtype))
        self._folded = (sources, folded)
        return folded

    def forward_linear(self, x, training=False, rng=None):
        first = self.layers[0]
        kernel, bias = self.folded_weights()
        if type(first) is Conv2D:
            return ops.conv2d(x, kernel, bias, first.padding, strides=first.strides,
                              dilation_rate=first.dilation_rate)
        rows = x.reshape(-1, x.shape[-1])  # Dense on any rank: the rows of the last axis
        return ops.dense(rows, kernel, bias).reshape(x.shape[:-1] + (kernel.shape[1],))


def weights_changed(steps):
    """Tell the fused steps among `steps` that the layers' weights were written."""
    for step in steps:
        if isinstance(step, Fused):
            step.weights_changed()


RULES = [ConvDense, ConvDropoutDense, ConvPool, FoldBatchNorm]
