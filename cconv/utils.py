"""Small utilities in the spirit of keras.utils."""
import contextlib
import inspect
import numbers
import re
import threading

import numpy as np

_global_seed = None
_seed_draws = 0
_seeded_lock = threading.RLock()  # reentrant: a model builder may itself use _seeded


def set_random_seed(seed):
    """Seed weight initialisation, shuffling and dropout for everything that follows.
    fit(seed=...) overrides it for one call."""
    global _global_seed, _seed_draws
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    _global_seed = int(seed)
    _seed_draws = 0


def _rng(seed=None):
    """A Generator: from `seed` when given, else the next in the global seeded sequence,
    else fresh OS entropy."""
    global _seed_draws
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"seed: expected a non-negative int or None, got {seed!r}")
        return np.random.default_rng(int(seed))
    if _global_seed is None:
        return np.random.default_rng()
    _seed_draws += 1
    return np.random.default_rng([_global_seed, _seed_draws])


@contextlib.contextmanager
def _seeded(seed):
    """Draws inside come from `seed` as after set_random_seed(seed); afterwards the
    global sequence goes on as if they had not happened. seed None: no change. Two
    threads take turns (scikit-learn's threading backend builds models side by side);
    a draw elsewhere meanwhile, not under _seeded, still reads the borrowed seed."""
    global _global_seed, _seed_draws
    if seed is None:
        yield
        return
    with _seeded_lock:
        saved = _global_seed, _seed_draws
        set_random_seed(seed)
        try:
            yield
        finally:
            _global_seed, _seed_draws = saved


def _positive_int(name, value):
    """value as an int >= 1, or a TypeError/ValueError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected a positive int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value}")
    return int(value)


def _non_negative_int(name, value):
    """value as an int >= 0, or a ValueError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name}: expected an int >= 0, got {value!r}")
    return int(value)


def _same_option(a, b):
    """Config values equal, a list and a tuple of the same items included (JSON has no
    tuples)."""
    norm = lambda v: tuple(v) if isinstance(v, (list, tuple)) else v  # noqa: E731
    return norm(a) == norm(b)


def _keras_options(label, cls, config, fixed=None, ignored=()):
    """The arguments of cls(...) that a Keras config dict gives. Options cconv has at one
    value only (fixed: {option: that value}) are refused at any other value; those in
    `ignored` are dropped; any other that is not an argument of cls is refused unless
    None. Every refusal is a ValueError naming label and the option."""
    if not isinstance(config, dict):
        raise ValueError(f"{label}: expected a config dict, got {config!r}")
    fixed = fixed or {}
    accepted = inspect.signature(cls.__init__).parameters
    kwargs = {}
    for key, value in config.items():
        if key in ignored:
            continue
        if key in fixed:
            if value is not None and not _same_option(value, fixed[key]):
                raise ValueError(f"{label}: {key}={value!r} is not supported by cconv "
                                 f"(only {fixed[key]!r})")
        elif key in accepted and key != "self":
            kwargs[key] = value
        elif value is not None:
            raise ValueError(f"{label}: option {key}={value!r} is not supported by cconv")
    return kwargs


def _construct(label, cls, kwargs):
    """cls(**kwargs), its argument errors as ValueErrors naming label."""
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{label}: {exc}") from exc


def dtype_policy(dtype):
    """A dtype as Keras writes it in a layer's config."""
    return {"module": "keras", "class_name": "DTypePolicy",
            "config": {"name": np.dtype(dtype).name}, "registered_name": None}


def policy_name(what, value):
    """The dtype name in a config's "dtype" entry (a policy dict, a string or None)."""
    if isinstance(value, dict):
        config = value.get("config") or {}
        if not isinstance(config, dict):
            raise ValueError(f"{what}: expected a policy's config dict, got {config!r}")
        value = config.get("name")
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"{what}: expected a dtype name or policy, got {value!r}")


def default_name(cls):
    """Keras's default name of an object of class cls: the class name in snake case, a
    word starting at each capital before a lower-case letter and at each lower-case
    letter before a capital (MaxPooling2D -> max_pooling2d, ReLU -> re_lu)."""
    words = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", cls.__name__)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", words).lower()


def _numeric_array(name, a, what="a numeric array"):
    """a (or a list of numbers) as a numeric ndarray; a TypeError naming `name` else."""
    if isinstance(a, (list, tuple)):
        a = np.asarray(a)
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(a).__name__}")
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected {what}, got dtype {a.dtype}")
    return a


def to_categorical(y, num_classes=None, dtype="float32"):
    """Integer class labels (N,) -> one-hot rows (N, num_classes)."""
    y = np.asarray(y)
    if y.dtype.kind not in "iu" and not (y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0)):
        raise TypeError(f"y: expected integer class labels, got dtype {y.dtype}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"y: expected a 1-d array of labels, got shape {y.shape}")
    y = y.astype(np.intp)
    if y.size and y.min() < 0:
        raise ValueError(f"y: labels must be >= 0, got {y.min()}")
    if num_classes is None:
        num_classes = int(y.max()) + 1 if y.size else 0
    elif y.size and y.max() >= num_classes:
        raise ValueError(f"y: labels must be < num_classes={num_classes}, got {y.max()}")
    out = np.zeros((len(y), num_classes), dtype=dtype)
    out[np.arange(len(y)), y] = 1
    return out
