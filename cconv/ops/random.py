"""Draws from numpy's legacy random stream (kernels: _random.pyx), for replaying a
script written against np.random, such as the book's listing (cconv.presets.run_book)."""
import numbers

import numpy as np

from cconv._kernels import _random
from cconv.ops._checks import empty


def legacy_coin_flips(shape, random_state=None):
    """What `random_state.randint(2, size=shape)` returns, as uint8, leaving random_state
    where that call leaves it: the same draws from the same MT19937 stream, about three
    times as fast. random_state is a np.random.RandomState, by default np.random's own
    (the one np.random.seed seeds)."""
    dims = (shape,) if isinstance(shape, numbers.Integral) else shape
    if not isinstance(dims, (tuple, list)) or any(
            isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 0 for d in dims):
        raise ValueError(f"shape: expected a non-negative int or a tuple of them, got {shape!r}")
    if random_state is None:  # np.random's functions act on its own RandomState
        get_state, set_state = np.random.get_state, np.random.set_state
    elif isinstance(random_state, np.random.RandomState):
        get_state, set_state = random_state.get_state, random_state.set_state
    else:
        raise TypeError(f"random_state: expected a numpy.random.RandomState or None, got "
                        f"{type(random_state).__name__}")
    state = get_state(legacy=False)
    if state.get("bit_generator") != "MT19937":
        raise ValueError(f"random_state: expected one drawing from MT19937, got one drawing "
                         f"from {state.get('bit_generator')}")
    out = empty("legacy_coin_flips output", tuple(int(d) for d in dims), np.uint8)
    key = np.array(state["state"]["key"], dtype=np.uint32)
    state["state"]["pos"] = _random.low_bits(key, int(state["state"]["pos"]),
                                             out.reshape(-1))
    state["state"]["key"] = key
    set_state(state)
    return out
