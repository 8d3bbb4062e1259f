"""Learning-rate schedules, as keras.optimizers.schedules has them: a schedule maps the
optimizer's iteration count (the updates made before this one) to a learning rate.
Configs and the serialized form inside an optimizer's config are Keras's."""
import math
import numbers

MODULE = "keras.optimizers.schedules"  # the "module" Keras writes for a schedule


def _number(cls, name, value, positive=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value) or (positive and value <= 0):
        expected = "a number > 0" if positive else "a finite number"
        raise ValueError(f"{cls}: {name}: expected {expected}, got {value!r}")
    return value


class LearningRateSchedule:
    """The base: a subclass defines __call__(step) and get_config()."""

    def __call__(self, step):
        raise NotImplementedError(f"{type(self).__name__} must define __call__(step)")

    def get_config(self):
        raise NotImplementedError(f"{type(self).__name__} must define get_config()")

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class ExponentialDecay(LearningRateSchedule):
    """initial_learning_rate * decay_rate ** (step / decay_steps), the exponent floored
    when staircase."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False,
                 name="ExponentialDecay"):
        label = type(self).__name__
        self.initial_learning_rate = _number(label, "initial_learning_rate",
                                             initial_learning_rate)
        self.decay_steps = _number(label, "decay_steps", decay_steps, positive=True)
        self.decay_rate = _number(label, "decay_rate", decay_rate)
        self.staircase = staircase
        self.name = name

    def __call__(self, step):
        p = step / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        return self.initial_learning_rate * self.decay_rate ** p

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "decay_rate": self.decay_rate,
                "staircase": self.staircase, "name": self.name}


class PiecewiseConstantDecay(LearningRateSchedule):
    """values[0] while step <= boundaries[0], values[i] while boundaries[i-1] < step <=
    boundaries[i], values[-1] after the last boundary."""

    def __init__(self, boundaries, values, name="PiecewiseConstant"):
        label = type(self).__name__
        if not isinstance(boundaries, (list, tuple)) or not isinstance(values, (list, tuple)) \
                or len(boundaries) != len(values) - 1:
            raise ValueError(f"{label}: expected one value more than boundaries, got "
                             f"boundaries={boundaries!r} and values={values!r}")
        for b in boundaries:
            _number(label, "boundaries", b)
        for v in values:
            _number(label, "values", v)
        self.boundaries = boundaries
        self.values = values
        self.name = name

    def __call__(self, step):
        for boundary, value in zip(self.boundaries, self.values):
            if step <= boundary:
                return value
        return self.values[-1]

    def get_config(self):
        return {"boundaries": self.boundaries, "values": self.values, "name": self.name}


class CosineDecay(LearningRateSchedule):
    """Without warmup_target: initial_learning_rate * ((1 - alpha) * c + alpha), c =
    (1 + cos(pi * min(step, decay_steps) / decay_steps)) / 2. With it: a linear rise from
    initial_learning_rate to warmup_target over warmup_steps, then that cosine decay from
    warmup_target over decay_steps."""

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, name="CosineDecay",
                 warmup_target=None, warmup_steps=0):
        label = type(self).__name__
        self.initial_learning_rate = _number(label, "initial_learning_rate",
                                             initial_learning_rate)
        self.decay_steps = _number(label, "decay_steps", decay_steps, positive=True)
        self.alpha = _number(label, "alpha", alpha)
        self.name = name
        self.warmup_target = None if warmup_target is None else \
            _number(label, "warmup_target", warmup_target)
        self.warmup_steps = _number(label, "warmup_steps", warmup_steps)

    def _decay(self, step, start):
        cosine = 0.5 * (1.0 + math.cos(math.pi * (step / self.decay_steps)))
        return start * ((1 - self.alpha) * cosine + self.alpha)

    def __call__(self, step):
        if self.warmup_target is None:
            return self._decay(min(step, self.decay_steps), self.initial_learning_rate)
        step = min(step, self.decay_steps + self.warmup_steps)
        if step < self.warmup_steps:
            rise = self.warmup_target - self.initial_learning_rate
            return rise * (step / self.warmup_steps) + self.initial_learning_rate
        return self._decay(step - self.warmup_steps, self.warmup_target)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "alpha": self.alpha, "name": self.name,
                "warmup_target": self.warmup_target, "warmup_steps": self.warmup_steps}


SCHEDULES = {cls.__name__: cls for cls in (ExponentialDecay, PiecewiseConstantDecay,
                                           CosineDecay)}


def serialize(schedule):
    """The dict Keras writes for a schedule (inside an optimizer's config)."""
    return {"module": MODULE, "class_name": type(schedule).__name__,
            "config": schedule.get_config(), "registered_name": None}


def deserialize(config):
    """The schedule a serialized dict describes; a schedule cconv lacks raises."""
    name = config.get("class_name") if isinstance(config, dict) else None
    cls = SCHEDULES.get(name)
    if cls is None:
        raise ValueError(f"learning_rate: schedule {name or config!r} is not one cconv has "
                         f"({', '.join(SCHEDULES)})")
    inner = config.get("config") or {}
    if not isinstance(inner, dict):
        raise ValueError(f"learning_rate: {name}: expected a config dict, got {inner!r}")
    try:
        return cls.from_config(inner)
    except TypeError as exc:
        raise ValueError(f"learning_rate: {name}: {exc}") from exc
