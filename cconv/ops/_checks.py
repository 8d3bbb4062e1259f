"""Argument checks shared by the ops, and the memory guard.

The kernels run without bounds checks, so every argument is checked here first: type,
rank, shape and dtype, with a message that names the argument, what was expected and
what was received."""
import math
import numbers
import os

import numpy as np

from cconv._kernels import _config

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
PADDINGS = ("valid", "same")
# The elementwise activations the kernels apply, by their codes (rendered into _config
# from cconv/activations.py's table); None means linear.
KERNEL_ACTIVATIONS = {None: _config.ACTIVATION_CODES["linear"], **_config.ACTIVATION_CODES}
INT32_MAX = 2**31 - 1  # the kernels take C ints for sizes and argmax indices


def _physical_memory():
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): no guard
        return None


# No array larger than the machine's memory is ever attempted: a huge shape fails at once
# with a ValueError instead of a MemoryError or hours of swapping.
MAX_BYTES = _physical_memory()


def check_size(name, shape, dtype):
    """Raise ValueError when an array of `shape` and `dtype` could not fit in memory."""
    nbytes = math.prod(int(s) for s in shape) * np.dtype(dtype).itemsize
    if MAX_BYTES is not None and nbytes > MAX_BYTES:
        raise ValueError(f"{name}: an array of shape {tuple(shape)} and dtype "
                         f"{np.dtype(dtype)} would need {nbytes / 2**30:,.1f} GiB, more than "
                         f"this machine's {MAX_BYTES / 2**30:,.1f} GiB of memory")


def empty(name, shape, dtype):
    """np.empty behind the memory guard."""
    check_size(name, shape, dtype)
    return np.empty(shape, dtype=dtype)


def float_array(name, a, ndim=None, dtype=None):
    """`a` as a C-contiguous float32/float64 ndarray, or a clear TypeError/ValueError."""
    if not isinstance(a, np.ndarray):
        if not isinstance(a, (list, tuple, numbers.Number)):
            raise TypeError(f"{name}: expected a numpy array, got {type(a).__name__}")
        try:
            a = np.asarray(a)
        except ValueError as exc:  # ragged nested lists
            raise ValueError(f"{name}: expected a rectangular array, got {exc}") from None
        if a.dtype.kind in "iub":
            a = a.astype(np.float64 if dtype is None else dtype)
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected dtype float32 or float64, got {a.dtype}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {np.dtype(dtype)} to match the other "
                        f"arguments, got {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-d array, got shape {a.shape}")
    if a.flags.c_contiguous:
        return a  # (np.ascontiguousarray would turn a 0-d array into shape (1,))
    check_size(name, a.shape, a.dtype)  # a copy follows, and a broadcast view may be huge
    return np.ascontiguousarray(a)


def flat_pair(name_a, a, name_b, b):
    """Two float arrays of one shape and dtype."""
    a = float_array(name_a, a)
    b = float_array(name_b, b, dtype=a.dtype)
    if a.shape != b.shape:
        raise ValueError(f"{name_b}: expected shape {a.shape} to match {name_a}, got {b.shape}")
    return a, b


def check_padding(padding, name="padding"):
    if not isinstance(padding, str) or padding not in PADDINGS:
        raise ValueError(f"{name}: expected one of {PADDINGS}, got {padding!r}")
    return padding


def check_out(out, shape, dtype, reads=None, in_place=None):
    """A caller's `out` array: the right shape and dtype, writeable, C-contiguous. `reads`
    names the arrays the op reads ({name: array}), which out must not overlap (the
    kernels would read what they had already written), except in_place, an elementwise
    op's input, which out may be exactly."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out: expected a numpy array, got {type(out).__name__}")
    if out.shape != shape or out.dtype != dtype:
        raise ValueError(f"out: expected shape {shape} and dtype {np.dtype(dtype)}, got "
                         f"{out.shape} and {out.dtype}")
    if not (out.flags.c_contiguous and out.flags.writeable):
        raise ValueError("out: expected a writeable, C-contiguous array")
    for name, a in (reads or {}).items():
        if np.may_share_memory(out, a) and not (a is in_place and _start(a) == _start(out)):
            raise ValueError(f"out: must not overlap {name}"
                             + (" (except by being it)" if a is in_place else ""))
    return out


def _start(a):
    return a.__array_interface__["data"][0]


def output(name, out, shape, dtype, reads=None, in_place=None):
    """`out` checked (see check_out), or a new array when the caller gave none."""
    if out is None:
        return empty(name, shape, dtype)
    return check_out(out, shape, dtype, reads, in_place)


def check_activation(activation, from_output=False):
    """The kernels' code for an elementwise activation's name; with from_output, only an
    activation whose gradient the kernels compute from its output is taken."""
    if not (activation is None or isinstance(activation, str)) \
            or activation not in KERNEL_ACTIVATIONS:
        raise ValueError(f"activation: expected one of {list(KERNEL_ACTIVATIONS)}, "
                         f"got {activation!r}")
    if from_output and gradient_from(activation) != "output":
        takes = [name for name in _config.ACTIVATIONS if gradient_from(name) == "output"]
        raise ValueError(f"activation: expected one whose gradient comes from its output "
                         f"({[None] + takes}), got {activation!r}, whose gradient needs its "
                         f"input")
    return KERNEL_ACTIVATIONS[activation]


def gradient_from(activation):
    """"output" or "input": what activation_backward takes for this activation."""
    return "output" if activation is None else _config.ACTIVATIONS[activation][1]


def bias(name, b, n, dtype, what):
    """b checked as (n,), or an empty array for no bias."""
    if b is None:
        return np.empty(0, dtype=dtype)
    b = float_array(name, b, ndim=1, dtype=dtype)
    if b.shape[0] != n:
        raise ValueError(f"{name}: expected shape ({n},) to match {what}, got {b.shape}")
    return b


def check_rate(rate):
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        raise TypeError(f"rate: expected a float in [0, 1), got {type(rate).__name__}")
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"rate: expected a float in [0, 1), got {rate}")
    return float(rate)


def int_array(name, a, shape, kinds, expected, dtype, high, range_error, always=False):
    """An integer array of `shape` with values in [0, high], as C-contiguous `dtype`.
    The range is checked when a conversion is needed, or `always`."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(a).__name__}")
    if a.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {a.shape}")
    if a.dtype.kind not in kinds:
        raise TypeError(f"{name}: expected {expected}, got {a.dtype}")
    if a.dtype != dtype or always:
        if a.size and ((a.dtype.kind == "i" and a.min() < 0) or a.max() > high):
            raise ValueError(range_error)
        a = a.astype(dtype, copy=False)
    return np.ascontiguousarray(a)


def check_mask(mask, shape):
    """A dropout mask of 0s and 1s as C-contiguous uint8."""
    return int_array("mask", mask, shape, "biu", "a bool or integer array of 0s and 1s",
                     np.uint8, 1, "mask: expected only 0s and 1s", always=True)


def check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed: expected an int in [0, 2**64), got {seed}")


def check_shape_tuple(name, shape, ndim):
    if not isinstance(shape, (tuple, list)) or len(shape) != ndim or not all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 0
            for s in shape):
        raise ValueError(f"{name}: expected a tuple of {ndim} non-negative ints, got {shape!r}")
    return tuple(int(s) for s in shape)
