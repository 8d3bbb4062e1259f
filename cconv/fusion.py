"""Runs of layers that one op computes faster than layer by layer.

Sequential asks `plan(layers, training)` for the steps of a pass: each step is a layer
or a fused run standing in for several consecutive layers. A fused run computes what
its layers would (the tests hold both against the oracle), keeps the weights in its
layers and, in training, fills their grads in backward. Each rule in RULES looks at the
layers from position i and returns a fused run, or None when it does not apply.
"""
import threading

import numpy as np

from cconv import ops
from cconv.layers import Conv2D, Dense, Dropout, Flatten, MaxPooling2D, _reused


class Fused:
    """A run of consecutive layers computed as one step, with the step interface of a
    layer: forward / forward_linear / backward / backward_linear. "linear" stops before
    the activation of the run's last layer, as for a layer."""

    def __init__(self, layers):
        self.layers = tuple(layers)
        self.activation = self.layers[-1].activation

    def forward(self, x, training=False, rng=None):
        z = self.forward_linear(x, training, rng)
        return z if self.activation is None else self.activation.forward(z, training)

    def backward(self, grad):
        if self.activation is not None:
            grad = self.activation.backward(grad)
        return self.backward_linear(grad)

    def forward_linear(self, x, training=False, rng=None):
        raise NotImplementedError

    def backward_linear(self, grad):
        raise NotImplementedError


RULES = []


def plan(layers, training):
    """The steps of a forward pass over `layers` (built), fused where a rule applies."""
    steps, i = [], 0
    while i < len(layers):
        for rule in RULES:
            fused = rule(layers, i, training)
            if fused is not None:
                steps.append(fused)
                i += len(fused.layers)
                break
        else:
            steps.append(layers[i])
            i += 1
    return steps


class ConvDense(Fused):
    """Conv2D (one input channel) -> Dropout... -> Flatten -> Dense at inference, by
    ops.conv2d_dense: the conv output never goes to memory. Dropout passes inputs through
    at inference, and Flatten only reshapes."""

    def forward_linear(self, x, training=False, rng=None):
        conv, dense = self.layers[0], self.layers[-1]
        return ops.conv2d_dense(x, conv.params["kernel"], conv.params.get("bias"),
                                dense.params["kernel"], dense.params.get("bias"),
                                conv.padding, conv.activation.name)


def _conv_to_dense(layers, i, max_dropouts):
    """The run Conv2D (with a fused activation) -> up to max_dropouts Dropout -> Flatten
    -> Dense starting at i, or None."""
    conv = layers[i]
    if type(conv) is not Conv2D or conv.activation.name not in ops.FUSED_ACTIVATIONS:
        return None
    j = i + 1
    while j < len(layers) and j - i <= max_dropouts and type(layers[j]) is Dropout:
        j += 1
    if j + 1 < len(layers) and type(layers[j]) is Flatten and type(layers[j + 1]) is Dense:
        return layers[i:j + 2]
    return None


def conv_dense_rule(layers, i, training):
    if training or type(layers[i]) is not Conv2D or layers[i].input_shape[2] != 1:
        return None
    run = _conv_to_dense(layers, i, len(layers))
    return None if run is None else ConvDense(run)


RULES.append(conv_dense_rule)


class ConvDropoutDense(Fused):
    """Conv2D -> [Dropout] -> Flatten -> Dense in training. Forward runs the layers one
    by one; backward goes back through the dense layer, the dropout and the conv's
    activation in one op (ops.dense_backward_gated), which for a narrow dense layer reads
    the dropout mask and the activation's output once instead of making two more passes
    over memory."""

    def forward_linear(self, x, training=False, rng=None):
        for layer in self.layers[:-1]:
            x = layer.forward(x, training, rng)
        return self.layers[-1].forward_linear(x, training, rng)

    def backward_linear(self, grad):
        conv, dense = self.layers[0], self.layers[-1]
        dropout = self.layers[1] if len(self.layers) == 4 else None
        _, dense.grads["kernel"], grad_b = ops.dense_backward(dense.x, dense.params["kernel"],
                                                              grad, need_grad_x=False)
        if dense.use_bias:
            dense.grads["bias"] = grad_b
        y = conv.activation.y
        n = len(y)
        mask = None if dropout is None or dropout.mask is None else dropout.mask.reshape(n, -1)
        grad_z = ops.dense_backward_gated(grad, dense.params["kernel"], y.reshape(n, -1), mask,
                                          dropout.rate if dropout is not None else 0.0,
                                          conv.activation.name)
        return conv.backward_linear(grad_z.reshape(y.shape))


def conv_dropout_dense_rule(layers, i, training):
    run = _conv_to_dense(layers, i, 1) if training else None
    return None if run is None else ConvDropoutDense(run)


RULES.append(conv_dropout_dense_rule)


class ConvPool(Fused):
    """Conv2D (linear, tanh or relu) then MaxPooling2D, by ops.conv2d_maxpool: unless the
    convolution takes Winograd, its full-size output is never stored, in training or
    inference."""

    def __init__(self, conv, pool):
        super().__init__((conv, pool))
        self._buffers = threading.local()

    def forward_linear(self, x, training=False, rng=None):
        conv, pool = self.layers
        shape = (len(x),) + pool.output_shape
        out = _reused(self._buffers, "out", shape, conv.dtype)
        argmax = _reused(self._buffers, "argmax", shape, np.int32) if training else None
        y, argmax = ops.conv2d_maxpool(
            x, conv.params["kernel"], conv.params.get("bias"), conv.padding,
            conv.activation.name, pool.pool_size, pool.padding, need_argmax=training,
            out=out, out_argmax=argmax)
        if training:
            conv.x, self.y, self.argmax = x, y, argmax
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
        if conv.activation.name == "relu":
            grad = ops.relu_backward(self.y, grad)
        elif conv.activation.name == "tanh":
            grad = ops.tanh_backward(self.y, grad)
        conv_shape = (len(grad),) + conv.output_shape
        grad_z = ops.max_pool2d_backward(
            grad, self.argmax, conv_shape, pool.pool_size, pool.padding,
            out=_reused(self._buffers, "grad_z", conv_shape, conv.dtype))
        return conv.backward_linear(grad_z)


def conv_pool_rule(layers, i, training):
    """A Conv2D whose activation the kernels apply, followed by a MaxPooling2D."""
    if i + 1 >= len(layers):
        return None
    conv, pool = layers[i], layers[i + 1]
    if type(conv) is Conv2D and type(pool) is MaxPooling2D \
            and conv.activation.name in ops.FUSED_ACTIVATIONS:
        return ConvPool(conv, pool)
    return None


RULES.append(conv_pool_rule)
