"""`sequence_mask`, `masked_mean`, `last_valid` against hand-computed NumPy values."""

import jax.numpy as jnp
import numpy as np
import pytest

import jrnn

YS = np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3)


def test_sequence_mask():
    np.testing.assert_array_equal(jrnn.sequence_mask(jnp.array([2, 0]), 3), [[1, 1, 0], [0, 0, 0]])


def test_masked_mean_and_last_valid_by_hand():
    lengths = jnp.array([3, 0])
    np.testing.assert_allclose(jrnn.masked_mean(YS, lengths), [YS[0, :3].mean(0), np.zeros(3)])
    np.testing.assert_allclose(jrnn.last_valid(YS, lengths), [YS[0, 2], np.zeros(3)])
    np.testing.assert_allclose(jrnn.masked_mean(YS), YS.mean(1))
    np.testing.assert_allclose(jrnn.last_valid(YS), YS[:, -1])
    tm = np.moveaxis(YS, 1, 0)
    np.testing.assert_allclose(jrnn.last_valid(tm, jnp.array([4, 1]), time_major=True), [YS[0, 3], YS[1, 0]])
    np.testing.assert_allclose(jrnn.masked_mean(tm, jnp.array([4, 1]), time_major=True),
                               [YS[0].mean(0), YS[1, 0]])


def test_errors():
    with pytest.raises(ValueError, match=r"`lengths` must have the batch shape \(2,\); got shape \(3,\)"):
        jrnn.masked_mean(YS, jnp.array([1, 2, 3]))
    with pytest.raises(TypeError, match=r"`lengths` must be an integer array"):
        jrnn.last_valid(YS, jnp.array([1.0, 2.0]))
