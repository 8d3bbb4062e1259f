"""Sliding-window geometry shared by the convolutions and the poolings, as Keras (on
jax, XLA) has it: windows of k taps `dilation` apart, starting every `stride` pixels.

'valid' keeps the windows that fit: floor((size - span) / stride) + 1 of them, span =
(k - 1) * dilation + 1. 'same' keeps ceil(size / stride) windows, padding the image by
what the last one overhangs; of that padding the smaller half goes first (top, left),
any odd pixel at the end (bottom, right)."""
import numbers

from cconv.ops._checks import INT32_MAX, check_padding


def int_pair(name, value):
    """An int or a pair of ints, each in [1, 2**31), as (rows, columns)."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        values = tuple(value)
    elif isinstance(value, (tuple, list)):
        raise ValueError(f"{name}: expected an int or a pair of ints, got {value!r}")
    else:
        values = (value, value)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name}: expected positive ints, got {value!r}")
        if not 1 <= v <= INT32_MAX:
            raise ValueError(f"{name}: expected positive ints below 2**31, got {value!r}")
    return int(values[0]), int(values[1])


def span(k, dilation=1):
    """Pixels from a window's first tap to its last, inclusive."""
    return (k - 1) * dilation + 1


def out_size(size, k, stride, dilation, padding):
    """The number of windows along an axis of `size` pixels (0 when 'valid' fits none)."""
    if check_padding(padding) == "same":
        return -(-size // stride)
    return max(size - span(k, dilation), -1) // stride + 1


def pad_before(size, k, stride, dilation, padding):
    """The padding before an axis's first pixel (top or left)."""
    if padding != "same":
        return 0
    total = (out_size(size, k, stride, dilation, padding) - 1) * stride + span(k, dilation)
    return max(total - size, 0) // 2
