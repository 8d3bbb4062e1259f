"""Runs of layers that one op computes faster than layer by layer.

Sequential asks `plan(layers, training)` for the steps of a pass: each step is a layer
or a fused run standing in for several consecutive layers. A fused run computes what
its layers would (the tests hold both against the oracle), keeps the weights in its
layers and, in training, fills their grads in backward. Each rule in RULES looks at the
layers from position i and returns a fused run, or None when it does not apply.
"""
from cconv import ops
from cconv.layers import Conv2D, Dense, Dropout, Flatten


class Fused:
    """A run of consecutive layers computed as one step, with the step interface of a
    layer: forward / forward_linear / backward / backward_linear. "linear" stops before
    the activation of the run's last layer, as for a layer."""

    def __init__(self, layers):
        self.layers = tuple(layers)
        self.activation = self.layers[-1].activation

    @property
    def need_input_grad(self):
        return self.layers[0].need_input_grad

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


def conv_dense_rule(layers, i, training):
    conv = layers[i]
    if training or type(conv) is not Conv2D or conv.input_shape[2] != 1 \
            or conv.activation.name not in ops.FUSED_ACTIVATIONS:
        return None
    j = i + 1
    while j < len(layers) and type(layers[j]) is Dropout:
        j += 1
    if j + 1 < len(layers) and type(layers[j]) is Flatten and type(layers[j + 1]) is Dense:
        return ConvDense(layers[i:j + 2])
    return None


RULES.append(conv_dense_rule)


class ConvDropoutDense(Fused):
    """Conv2D -> [Dropout] -> Flatten -> Dense in training. Forward runs the layers one
    by one; backward goes back through the dense layer, the dropout and the conv's
    activation in one op (ops.dense_backward_gated), which reads the dropout mask and the
    activation's output once instead of making two more passes over memory."""

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
    conv = layers[i]
    if not training or type(conv) is not Conv2D \
            or conv.activation.name not in ops.FUSED_ACTIVATIONS:
        return None
    j = i + 1
    if j < len(layers) and type(layers[j]) is Dropout:
        j += 1
    if j + 1 < len(layers) and type(layers[j]) is Flatten and type(layers[j + 1]) is Dense:
        return ConvDropoutDense(layers[i:j + 2])
    return None


RULES.append(conv_dropout_dense_rule)
