"""Keras 3's initializers (keras.initializers), by name and by class, and the TF
tutorial's two.

    Dense(64, kernel_initializer="he_normal")
    Dense(64, kernel_initializer=HeNormal(seed=1))
    Conv2D(8, 3, kernel_initializer=VarianceScaling(2.0, "fan_out", "uniform"))

Each class follows Keras 3's formulas (keras/src/initializers/random_initializers.py):
the fans of a kernel are Keras's (a conv kernel (KH, KW, C, F) has KH*KW*C in and
KH*KW*F out), a truncated normal is cut at two standard deviations and VarianceScaling
divides its stddev by 0.87962566103423978 (the stddev of a standard normal so cut), and
Orthogonal takes the QR of a normal draw with the signs of R's diagonal moved into Q.

Where the numbers come from:
- An unseeded initializer in a layer draws from the model's generator (seeded by
  cconv.utils.set_random_seed), in the model's order of weights, so a seeded model is
  the same bits from run to run; called on its own, `init(shape)` draws from the next
  generator of cconv.utils' global sequence.
- A seeded initializer (seed=int) draws from its own numpy Generator,
  np.random.default_rng(seed), made anew at each call: the same seed gives the same
  array every time, and another seed another array. The bits are numpy's, not those of
  Keras's backend RNG: Keras and cconv give different arrays for the same seed (with
  the same distribution).
Draws are made in float64 and cast to the dtype asked for.

Besides these objects, a layer takes any callable `(shape, dtype, rng) -> array`, where
rng is the model's numpy Generator (cconv's own convention: `tutorial_normal` and
`tutorial_bias` are two such functions).

Configs are Keras's: serialize writes {"module": "keras.initializers", "class_name":
"GlorotUniform", "config": {"seed": None}, "registered_name": None}, and deserialize
reads Keras 3's configs, seeds and options included. Nothing a config names is imported:
classes and functions are looked up in the fixed tables below (others come through
custom_objects).
"""
import math
import numbers

import numpy as np

from cconv import utils

TRUNCATION_STDDEV = 0.87962566103423978  # stddev of a standard normal cut at +-2


def _truncated_standard_normal(rng, shape):
    """Standard normal draws, those beyond two standard deviations drawn again."""
    out = rng.standard_normal(shape)
    bad = np.abs(out) > 2
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 2
    return out


def compute_fans(shape, input_axes=None, output_axes=None):
    """(fan_in, fan_out) of a weight of this shape, as Keras computes them: a vector's
    length for both, a matrix's rows and columns, and for a conv kernel (..., C, F) the
    receptive field times C in and times F out. input_axes/output_axes, when both are
    given, name the axes whose sizes multiply into each fan."""
    shape = tuple(int(s) for s in shape)
    if input_axes is not None and output_axes is not None:
        return (math.prod(shape[a] for a in input_axes),
                math.prod(shape[a] for a in output_axes))
    if not shape:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def _seed(seed):
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int or None, got {seed!r} (a "
                         f"keras.random.SeedGenerator is not supported by cconv)")
    return int(seed)


def _number(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return value


class Initializer:
    """Base class, as keras.initializers.Initializer: `init(shape, dtype=None)` returns
    a new array; get_config/from_config give and take the constructor's arguments.
    Subclasses implement `_draw(shape, rng)`, which returns float64 values."""

    seed = None
    draws = True  # whether _draw uses its rng (the constants do not)

    def __call__(self, shape, dtype=None):
        return self.sample(shape, dtype)

    def sample(self, shape, dtype=None, rng=None):
        """A new array of this shape and dtype (float32 when None, as Keras's floatx).
        A seeded initializer draws from np.random.default_rng(seed); an unseeded one
        from rng, else from the next generator of cconv.utils' global sequence."""
        shape = tuple(int(s) for s in shape)
        if self.seed is not None:
            rng = np.random.default_rng(self.seed)
        elif rng is None and self.draws:
            rng = utils._rng()
        return np.ascontiguousarray(self._draw(shape, rng),
                                    dtype=np.dtype(dtype or "float32"))

    def _draw(self, shape, rng):
        raise NotImplementedError

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def clone(self):
        return type(self).from_config(self.get_config())

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash(type(self).__name__)


class Zeros(Initializer):
    draws = False

    def _draw(self, shape, rng):
        return np.zeros(shape)


class Ones(Initializer):
    draws = False

    def _draw(self, shape, rng):
        return np.ones(shape)


class Constant(Initializer):
    """Every element `value` (a number)."""

    draws = False

    def __init__(self, value=0.0):
        self.value = _number("value", value)

    def _draw(self, shape, rng):
        return np.full(shape, float(self.value))

    def get_config(self):
        return {"value": self.value}


class RandomInitializer(Initializer):
    def __init__(self, seed=None):
        self.seed = _seed(seed)

    def get_config(self):
        return {"seed": self.seed}


class RandomUniform(RandomInitializer):
    """Uniform on [minval, maxval)."""

    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        self.minval, self.maxval = _number("minval", minval), _number("maxval", maxval)
        super().__init__(seed)

    def _draw(self, shape, rng):
        return rng.uniform(self.minval, self.maxval, shape)

    def get_config(self):
        return {**super().get_config(), "minval": self.minval, "maxval": self.maxval}


class RandomNormal(RandomInitializer):
    """Normal of this mean and stddev."""

    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        self.mean, self.stddev = _number("mean", mean), _number("stddev", stddev)
        super().__init__(seed)

    def _draw(self, shape, rng):
        return rng.standard_normal(shape) * self.stddev + self.mean

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "stddev": self.stddev}


class TruncatedNormal(RandomNormal):
    """Normal of this mean and stddev, draws more than two stddevs from the mean drawn
    again (so the result's stddev is about 0.88 * stddev)."""

    def _draw(self, shape, rng):
        return _truncated_standard_normal(rng, shape) * self.stddev + self.mean


_MODES = ("fan_in", "fan_out", "fan_avg")
_DISTRIBUTIONS = ("truncated_normal", "untruncated_normal", "uniform")


class VarianceScaling(RandomInitializer):
    """Keras's VarianceScaling: with n the fan of `mode` (fan_in, fan_out or their
    mean, at least 1), a truncated normal whose stddev after the cut is sqrt(scale / n),
    an untruncated normal of that stddev, or a uniform on [-limit, limit] with
    limit = sqrt(3 * scale / n)."""

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None,
                 input_axes=None, output_axes=None):
        scale = _number("scale", scale)
        if scale <= 0:
            raise ValueError(f"scale: expected a positive number, got {scale!r}")
        if mode not in _MODES:
            raise ValueError(f"mode: expected one of {_MODES}, got {mode!r}")
        if not isinstance(distribution, str):
            raise ValueError(f"distribution: expected one of {_DISTRIBUTIONS}, got "
                             f"{distribution!r}")
        distribution = distribution.lower()
        if distribution == "normal":  # Keras's old name
            distribution = "truncated_normal"
        if distribution not in _DISTRIBUTIONS:
            raise ValueError(f"distribution: expected one of {_DISTRIBUTIONS}, got "
                             f"{distribution!r}")
        for name, axes in (("input_axes", input_axes), ("output_axes", output_axes)):
            if axes is not None and (not isinstance(axes, (list, tuple)) or not all(
                    isinstance(a, numbers.Integral) and not isinstance(a, bool)
                    for a in axes)):
                raise ValueError(f"{name}: expected a list of ints or None, got {axes!r}")
        self.scale, self.mode, self.distribution = scale, mode, distribution
        self.input_axes = None if input_axes is None else [int(a) for a in input_axes]
        self.output_axes = None if output_axes is None else [int(a) for a in output_axes]
        super().__init__(seed)

    def _scale_and_fan(self, shape):
        """(scale, n): the variance is scale / n, computed as one division."""
        fan_in, fan_out = compute_fans(shape, self.input_axes, self.output_axes)
        n = {"fan_in": fan_in, "fan_out": fan_out,
             "fan_avg": (fan_in + fan_out) / 2.0}[self.mode]
        return self.scale, max(1.0, n)

    def _draw(self, shape, rng):
        scale, n = self._scale_and_fan(shape)
        if self.distribution == "uniform":
            limit = math.sqrt(3.0 * scale / n)
            return rng.uniform(-limit, limit, shape)
        stddev = math.sqrt(scale / n)
        if self.distribution == "untruncated_normal":
            return rng.standard_normal(shape) * stddev
        return _truncated_standard_normal(rng, shape) * (stddev / TRUNCATION_STDDEV)

    def _axes_config(self):
        # Keras 3.15 writes the axes; earlier Keras 3 releases refuse them, so they are
        # written only when set
        return {k: v for k, v in (("input_axes", self.input_axes),
                                  ("output_axes", self.output_axes)) if v is not None}

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "mode": self.mode,
                "distribution": self.distribution, **self._axes_config()}


class _Preset(VarianceScaling):
    """A VarianceScaling of fixed scale, mode and distribution (Glorot, He, LeCun)."""

    _args = None

    def __init__(self, seed=None, input_axes=None, output_axes=None):
        super().__init__(*self._args, seed=seed, input_axes=input_axes,
                         output_axes=output_axes)

    def get_config(self):
        return {"seed": self.seed, **self._axes_config()}


class GlorotUniform(_Preset):
    """Uniform on [-limit, limit], limit = sqrt(6 / (fan_in + fan_out))."""
    _args = (1.0, "fan_avg", "uniform")


class GlorotNormal(_Preset):
    """Truncated normal of stddev sqrt(2 / (fan_in + fan_out)) after the cut."""
    _args = (1.0, "fan_avg", "truncated_normal")


class HeUniform(_Preset):
    """Uniform on [-limit, limit], limit = sqrt(6 / fan_in)."""
    _args = (2.0, "fan_in", "uniform")


class HeNormal(_Preset):
    """Truncated normal of stddev sqrt(2 / fan_in) after the cut."""
    _args = (2.0, "fan_in", "truncated_normal")


class LecunUniform(_Preset):
    """Uniform on [-limit, limit], limit = sqrt(3 / fan_in)."""
    _args = (1.0, "fan_in", "uniform")


class LecunNormal(_Preset):
    """Truncated normal of stddev sqrt(1 / fan_in) after the cut."""
    _args = (1.0, "fan_in", "truncated_normal")


class Orthogonal(RandomInitializer):
    """A (semi-)orthogonal matrix times gain, reshaped: the Q of the QR decomposition of
    a standard normal matrix of (rows, cols) = (prod(shape[:-1]), shape[-1]) (taken
    tall, then transposed back when wide), each column's sign set so that R's diagonal
    is positive, which makes Q uniformly distributed among orthogonal matrices."""

    def __init__(self, gain=1.0, seed=None):
        self.gain = _number("gain", gain)
        super().__init__(seed)

    def _draw(self, shape, rng):
        if len(shape) < 2:
            raise ValueError(f"Orthogonal: the weight must have at least two axes, got "
                             f"shape {shape}")
        rows, cols = math.prod(shape[:-1]), shape[-1]
        a = rng.standard_normal((max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q = q * np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        return self.gain * q.reshape(shape)

    def get_config(self):
        return {**super().get_config(), "gain": self.gain}


# ---- the TF tutorial's initializers: (shape, dtype, rng) functions ----------------------
def tutorial_normal(shape, dtype, rng):
    """tf.truncated_normal(stddev=0.1): draws beyond two standard deviations are redrawn."""
    return (_truncated_standard_normal(rng, shape) * 0.1).astype(dtype)


def tutorial_bias(shape, dtype, rng):
    """tf.constant(0.1)."""
    return np.full(shape, 0.1, dtype=dtype)


# ---- names and configs -------------------------------------------------------------------
CLASSES = {cls.__name__: cls for cls in (
    Zeros, Ones, Constant, RandomUniform, RandomNormal, TruncatedNormal, VarianceScaling,
    GlorotUniform, GlorotNormal, HeUniform, HeNormal, LecunUniform, LecunNormal,
    Orthogonal)}
# keras.initializers's snake-case names and other spellings of the same classes
ALIASES = {utils.default_name(cls): cls for cls in CLASSES.values()}
ALIASES.update({"normal": RandomNormal, "uniform": RandomUniform, "one": Ones,
                "zero": Zeros, "OrthogonalInitializer": Orthogonal})
# cconv's own (shape, dtype, rng) functions, by the registered name configs give them
FUNCTIONS = {f"{f.__module__}>{f.__qualname__}": f for f in (tutorial_normal, tutorial_bias)}
# the registered names files saved by earlier cconv releases give the same functions
LEGACY_NAMES = {"cconv.presets>tutorial_normal": tutorial_normal,
                "cconv.presets>tutorial_bias": tutorial_bias}


def get(identifier):
    """An initializer from a name ("he_normal", "HeNormal"), a config dict, a class, an
    Initializer (returned as is) or a callable (shape, dtype, rng) -> array (returned as
    is), as keras.initializers.get. Anything else is a ValueError."""
    if isinstance(identifier, str):
        return deserialize(identifier)
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, type) and issubclass(identifier, Initializer):
        return identifier()
    if callable(identifier):
        return identifier
    raise ValueError(f"initializer: expected one of {sorted(ALIASES)}, an Initializer, or a "
                     f"callable (shape, dtype, rng) -> array, got {identifier!r}")


def serialize(initializer):
    """The config Keras 3 writes for an initializer in a layer's config. One of cconv's
    functions (or another top-level function) is named by module>qualname."""
    if isinstance(initializer, str):
        initializer = get(initializer)
    if isinstance(initializer, Initializer):
        if CLASSES.get(type(initializer).__name__) is not type(initializer):
            raise ValueError(f"initializer: {type(initializer).__name__} is not one of "
                             f"cconv's classes, so no config can name it")
        return {"module": "keras.initializers", "class_name": type(initializer).__name__,
                "config": initializer.get_config(), "registered_name": None}
    module = getattr(initializer, "__module__", None)
    qualname = getattr(initializer, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        raise ValueError(f"initializer: {initializer!r} has no importable name, so no "
                         f"config can name it; use a function defined at a module's top "
                         f"level")
    return {"module": module, "class_name": qualname, "config": {},
            "registered_name": f"{module}>{qualname}"}


def deserialize(config, custom_objects=None, what="initializer"):
    """The initializer a config (or a name) describes: one of Keras's classes with its
    options and seed, one in custom_objects (by registered or class name), or one of
    cconv's functions (FUNCTIONS, LEGACY_NAMES). Nothing is imported by a name in the
    file; anything else is a ValueError naming `what`."""
    custom_objects = custom_objects or {}
    if isinstance(config, str):
        config = {"class_name": config, "config": {}}
    if not isinstance(config, dict) or not isinstance(config.get("class_name"), str):
        raise ValueError(f"{what}: expected an initializer's name or config dict, got "
                         f"{config!r}")
    class_name, registered = config["class_name"], config.get("registered_name")
    options = config.get("config")
    if not isinstance(registered, (str, type(None))) or not isinstance(options,
                                                                       (dict, type(None))):
        raise ValueError(f"{what}: expected a string registered_name and a dict config, "
                         f"got {registered!r} and {options!r}")
    for key in (registered, class_name):
        if key in custom_objects:
            found = custom_objects[key]
            if isinstance(found, type) and issubclass(found, Initializer):
                return found.from_config(options or {})
            return found
    if isinstance(registered, str) and registered in {**FUNCTIONS, **LEGACY_NAMES}:
        return {**FUNCTIONS, **LEGACY_NAMES}[registered]
    cls = CLASSES.get(class_name) or ALIASES.get(class_name)
    if cls is not None and config.get("module", "keras.initializers") in (
            "keras.initializers", "keras.src.initializers"):
        options = dict(options or {})
        if isinstance(options.get("seed"), dict):
            raise ValueError(f"{what}: {class_name} with a SeedGenerator seed is not "
                             f"supported by cconv (only an int seed or None)")
        kwargs = utils._keras_options(f"{what}: {class_name}", cls, options)
        return utils._construct(f"{what}: {class_name}", cls, kwargs)
    raise ValueError(f"{what}: initializer {registered or class_name!r} is not one cconv "
                     f"has ({', '.join(CLASSES)}); pass it in "
                     f"custom_objects={{{(registered or class_name)!r}: function}}")


def sample(init, shape, dtype, rng):
    """A weight drawn by init, an Initializer or a callable (shape, dtype, rng) ->
    array; unseeded draws come from rng (the model's generator)."""
    if isinstance(init, Initializer):
        return init.sample(shape, dtype, rng)
    return init(shape, dtype, rng)
