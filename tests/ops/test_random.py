"""legacy_coin_flips (cconv/ops/random.py) against numpy itself: the same values as
RandomState.randint(2, size=...) and the same state afterwards, so that draws of any
kind that follow agree too; bad input named."""
import numpy as np
import pytest

from cconv import ops, oracle

# Across the 624-word state refills: none, one exactly, several, from every position.
SIZES = [0, 1, 7, 623, 624, 625, 1249, 5000, (3, 0), (128, 37)]


@pytest.mark.parametrize("seed", [0, 1, 2**32 - 1])
def test_same_draws_and_state_as_numpy(seed):
    mine, theirs = np.random.RandomState(seed), np.random.RandomState(seed)
    theirs.random(3)  # a position inside the state, and a gaussian cached below
    mine.random(3)
    mine.standard_normal(), theirs.standard_normal()
    for size in SIZES:
        got = ops.legacy_coin_flips(size, mine)
        want = oracle.legacy_coin_flips(size, theirs)
        assert got.dtype == np.uint8 and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    assert mine.standard_normal() == theirs.standard_normal()  # the cached gaussian
    np.testing.assert_array_equal(mine.randint(0, 2**32, 2000, dtype=np.uint64),
                                  theirs.randint(0, 2**32, 2000, dtype=np.uint64))


def test_global_state_by_default():
    np.random.seed(1)
    got = ops.legacy_coin_flips((128, 100))
    after = np.random.random(5)
    np.random.seed(1)
    want = np.random.randint(2, size=(128, 100))
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(after, np.random.random(5))


def test_bad_input_named():
    with pytest.raises(ValueError, match="shape"):
        ops.legacy_coin_flips((-1, 3))
    with pytest.raises(ValueError, match="shape"):
        ops.legacy_coin_flips(2.5)
    with pytest.raises(TypeError, match="random_state: expected a numpy.random.RandomState"):
        ops.legacy_coin_flips(3, np.random.default_rng(0))
    with pytest.raises(ValueError, match="random_state: expected one drawing from MT19937"):
        ops.legacy_coin_flips(3, np.random.RandomState(np.random.PCG64(0)))
