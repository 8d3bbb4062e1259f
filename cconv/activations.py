"""Activations: the one table, and keras.activations's functions.

TABLE has one row per activation, by its Keras name. Everything else reads it:
- setup.py renders the kernels' activation codes and their dispatch from it
  (cconv/_kernels/_codes.pxd.tp, _activations.pxd.tp), so a row's `code` is the kernels'
  code and a row's name is the suffix of its two C functions on the SIMD layer,
  cconv_v?_act_NAME (forward) and cconv_v?_dact_NAME (backward);
- cconv.ops checks names against the compiled table (cconv._kernels._config);
- cconv.oracle computes each activation by its `forward` and `derivative` here;
- the layers, cconv.fusion, configs and the tests look names up here.

Columns:
- name: Keras's name, which configs write; aliases: Keras's other names for it.
- code: the kernels' code, None for softmax (not elementwise: it acts on the last axis).
- gradient_from: "output" if the derivative is computed from the activation's output y
  (so a layer need not keep its input), "input" if from its input x.
- fused: the fused kernels (a convolution's in-place activation, the dense gradient's
  gate, conv + max pool) take it. Only activations whose derivative comes from the
  output can be fused, because fused steps keep the output alone.
- forward(x), derivative(s): the NumPy formulas, the oracle twin; s is x or y as
  gradient_from says, and the gradient through the activation is grad * derivative(s).

This module imports numpy alone at its top, so that setup.py can run it before anything
is built; the functions on arrays reach cconv.ops only when called.
"""
import math
from collections import namedtuple

import numpy as np

Activation = namedtuple("Activation", "name aliases code gradient_from fused forward derivative")

# Keras 3's constants and default arguments
LEAKY_SLOPE = 0.2                       # leaky_relu(negative_slope=0.2)
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
SQUAREPLUS_B = 4.0                      # squareplus(b=4)


def _where(cond, a, b):
    return np.where(cond, a, b).astype(np.result_type(a, b), copy=False)


def _sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _softplus(x):
    return np.logaddexp(x, np.zeros_like(x))


def _phi_upper(x):
    """The standard normal's upper tail P(Z > x), accurate where it is tiny: erfc at
    x / sqrt(2) rounded to float64, corrected to first order for that rounding (which
    alone would cost 2 z^2 ulp)."""
    z_wide = np.asarray(x, np.longdouble) / np.sqrt(np.longdouble(2))
    z = z_wide.astype(np.float64)
    erfc = np.frompyfunc(math.erfc, 1, 1)(z).astype(np.longdouble)
    slope = 2 / np.sqrt(np.pi, dtype=np.longdouble) * np.exp(-z_wide * z_wide)
    with np.errstate(invalid="ignore"):
        rounding = np.where(np.isfinite(z), z_wide - z, 0)
    return 0.5 * (erfc - rounding * slope)


def _tanh_shrink(x):
    """x - tanh(x), by its series below 0.05, where the subtraction cancels."""
    series = [1 / 3, -2 / 15, 17 / 315, -62 / 2835, 1382 / 155925, -21844 / 6081075,
              929569 / 638512875]
    u = x * x
    small = sum(c * u ** k for k, c in enumerate(series)) * x * u
    return np.where(np.abs(x) < 0.05, small, x - np.tanh(x))


def _gelu(x):
    with np.errstate(invalid="ignore"):
        return np.where(np.isneginf(x), 0.0, x * _phi_upper(-x))


def _gelu_derivative(x):
    with np.errstate(over="ignore", invalid="ignore"):
        d = _phi_upper(-x) + x * np.exp(-x * x / 2) / np.sqrt(2 * np.pi)
    return np.where(np.isinf(x), (x > 0) * 1.0, d)


def _softmax(z):
    shifted = z - z.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def _hard_sigmoid(x):
    return np.clip(x + 3, 0, 6) / 6


def _squareplus_root(x):
    return np.sqrt(x * x + SQUAREPLUS_B)


def _squareplus(x):
    """(x + sqrt(x^2 + b)) / 2, as b / (2 (sqrt(x^2 + b) - x)) below 0, where the sum
    cancels."""
    root = _squareplus_root(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x < 0, SQUAREPLUS_B / (2 * (root - x)), (x + root) / 2)


def _squareplus_derivative(x):
    """(1 + x / sqrt(x^2 + b)) / 2, as b / (2 root (root - x)) below 0."""
    root = _squareplus_root(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x < 0, SQUAREPLUS_B / (2 * root * (root - x)),
                        np.where(np.isinf(x), 1.0, (1 + x / root) / 2))


TABLE = tuple(Activation(*row) for row in (
    # name, aliases, code, gradient_from, fused, forward, derivative
    ("linear", (), 0, "output", True, lambda x: x, lambda y: np.ones_like(y)),
    ("tanh", (), 1, "output", True, np.tanh, lambda y: 1 - y * y),
    ("relu", (), 2, "output", True, lambda x: np.maximum(x, 0), lambda y: (y > 0) * 1.0),
    ("sigmoid", (), 3, "output", True, _sigmoid, lambda y: y * (1 - y)),
    ("softplus", (), 4, "input", False, _softplus, _sigmoid),
    ("softsign", (), 5, "input", False, lambda x: x / (1 + np.abs(x)),
     lambda x: 1 / (1 + np.abs(x)) ** 2),
    ("elu", (), 6, "input", False, lambda x: _where(x > 0, x, np.expm1(x)),
     lambda x: _where(x > 0, 1.0, np.exp(x))),
    ("selu", (), 7, "input", False,
     lambda x: SELU_SCALE * _where(x > 0, x, SELU_ALPHA * np.expm1(x)),
     lambda x: SELU_SCALE * _where(x > 0, 1.0, SELU_ALPHA * np.exp(x))),
    ("celu", (), 8, "input", False, lambda x: _where(x > 0, x, np.expm1(x)),
     lambda x: _where(x > 0, 1.0, np.exp(x))),
    ("gelu", (), 9, "input", False, _gelu, _gelu_derivative),
    ("silu", ("swish",), 10, "input", False, lambda x: x * _sigmoid(x),
     lambda x: _sigmoid(x) * (1 + x * (1 - _sigmoid(x)))),
    ("leaky_relu", (), 11, "output", True, lambda x: _where(x >= 0, x, LEAKY_SLOPE * x),
     lambda y: _where(y >= 0, 1.0, LEAKY_SLOPE)),
    ("relu6", (), 12, "output", True, lambda x: np.clip(x, 0, 6),
     lambda y: ((y > 0) & (y < 6)) * 1.0),
    ("hard_sigmoid", (), 13, "output", True, _hard_sigmoid,
     lambda y: ((y > 0) & (y < 1)) / 6.0),
    ("hard_silu", ("hard_swish",), 14, "input", False, lambda x: x * _hard_sigmoid(x),
     lambda x: _hard_sigmoid(x) + x * (((x > -3) & (x < 3)) / 6.0)),
    ("hard_tanh", (), 15, "input", False, lambda x: np.clip(x, -1, 1),
     lambda x: (np.abs(x) <= 1) * 1.0),
    ("exponential", (), 16, "output", True, np.exp, lambda y: y),
    ("mish", (), 17, "input", False, lambda x: x * np.tanh(_softplus(x)),
     lambda x: np.tanh(_softplus(x)) + x * (1 - np.tanh(_softplus(x)) ** 2) * _sigmoid(x)),
    ("log_sigmoid", (), 18, "input", False, lambda x: -_softplus(-x), lambda x: _sigmoid(-x)),
    ("tanh_shrink", (), 19, "input", False, _tanh_shrink,
     lambda x: np.tanh(x) ** 2),
    ("squareplus", (), 20, "input", False, _squareplus, _squareplus_derivative),
    ("sparse_plus", (), 21, "input", False,
     lambda x: _where(x <= -1, 0.0, _where(x >= 1, x, (x + 1) ** 2 / 4)),
     lambda x: _where(x <= -1, 0.0, _where(x >= 1, 1.0, (x + 1) / 2))),
    ("softmax", (), None, "output", False, _softmax, None),
))

BY_NAME = {row.name: row for row in TABLE}
NAMES = tuple(BY_NAME)
ALIASES = {alias: row.name for row in TABLE for alias in row.aliases}
ELEMENTWISE = tuple(row.name for row in TABLE if row.code is not None)
FUSED = tuple(row.name for row in TABLE if row.fused)


def canonical(name):
    """The table's name for `name` or one of its aliases; None means "linear"."""
    if name is None:
        return "linear"
    if isinstance(name, str):
        if name in BY_NAME:
            return name
        if name in ALIASES:
            return ALIASES[name]
    raise ValueError(f"activation: expected one of {list(NAMES) + sorted(ALIASES)} or None, "
                     f"got {name!r}")


def row(name):
    """The table's row for an activation name, alias or None."""
    return BY_NAME[canonical(name)]


# ---- keras.activations's functions, on arrays ------------------------------------------
def _apply(name):
    def activation(x):
        from cconv import ops  # below this module; only the functions need it
        return ops.activation(name, x)
    activation.__name__ = activation.__qualname__ = name
    activation.__doc__ = f"The {name} activation of an array, elementwise" + (
        " (softmax: along the last axis)." if name == "softmax" else ".")
    return activation


FUNCTIONS = {name: _apply(name) for name in NAMES}
globals().update(FUNCTIONS)
globals().update({alias: FUNCTIONS[name] for alias, name in ALIASES.items()})


def get(identifier):
    """The activation function for a name, an alias, a config dict, None (linear) or a
    function of this module."""
    if identifier is None:
        return FUNCTIONS["linear"]
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if callable(identifier) and getattr(identifier, "__name__", None) in FUNCTIONS \
            and FUNCTIONS[identifier.__name__] is identifier:
        return identifier
    if isinstance(identifier, str):
        return FUNCTIONS[canonical(identifier)]
    raise ValueError(f"activation: expected a name, one of cconv.activations' functions or "
                     f"None, got {identifier!r}")


def serialize(activation):
    """The name a Keras config gives the activation."""
    return get(activation).__name__


def deserialize(config, custom_objects=None):
    """The activation a config names: a string, or Keras's dict form of a function."""
    if isinstance(config, dict):
        name = config.get("config", config.get("class_name"))
        if not isinstance(name, str):
            raise ValueError(f"activation: expected a config naming an activation, got "
                             f"{config!r}")
        config = name
    if custom_objects and config in custom_objects:
        raise ValueError(f"activation: {config!r} from custom_objects is not supported: "
                         f"cconv's kernels run its own activations only")
    return get(config)
