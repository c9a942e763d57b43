"""jrnn.interop.cudnn: jrnn LSTMs in the flat weights of `jax.experimental.rnn.lstm`, on the CPU.

The reference is JAX's own `lstm_ref` (the pure-JAX LSTM its tests hold the cuDNN kernel to), fed the
converted weights through JAX's `unpack_lstm_weights`: it must give `rnn_apply`'s outputs and final
`(h, c)` with right-padded `lengths`, initial states included.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import rnn

import jrnn
from jrnn.interop.cudnn import CudnnLayout, from_cudnn, to_cudnn

CASES = {  # B, T, I, H, num_layers, bidirectional, lengths, use_bias
    "plain": (3, 6, 4, 5, 1, False, [6, 2, 1], True),
    "bidirectional_2_layers": (3, 7, 4, 5, 2, True, [7, 1, 4], True),
    "no_bias_stack": (2, 3, 1, 1, 2, False, [3, 3], False),  # sizes of 1; cuDNN gets zero biases
}


def make_params(key, I, H, num_layers, bidirectional, use_bias):
    kw = dict(initializer="pytorch", use_bias=use_bias)
    if num_layers == 1 and not bidirectional:
        return jrnn.LSTM.init(key, I, H, **kw)
    return jrnn.Stack.init(key, jrnn.LSTM, I, H, num_layers, bidirectional=bidirectional, **kw)


def jrnn_states(params, h0, c0):
    """jrnn's initial state from cuDNN's `h0, c0 [L*D, B, H]` (pseudo-layers forward 0, reverse 0, ...)."""
    states = [jrnn.LSTMState(h, c) for h, c in zip(h0, c0, strict=True)]
    if isinstance(params, jrnn.LSTM):
        return states[0]
    D = 2 if isinstance(params.layers[0], jrnn.Bidirectional) else 1
    return tuple(tuple(states[k:k + 2]) if D == 2 else states[k] for k in range(0, len(states), D))


def cudnn_states(state):
    """`(h [L*D, B, H], c [L*D, B, H])` from jrnn's final state, in pseudo-layer order."""
    leaves = [s for s in jax.tree.leaves(state, is_leaf=lambda s: isinstance(s, jrnn.LSTMState))]
    return jnp.stack([s.h for s in leaves]), jnp.stack([s.c for s in leaves])


@pytest.mark.parametrize("case", list(CASES))
def test_lstm_ref_matches_rnn_apply(case):
    B, T, I, H, num_layers, bidirectional, lengths, use_bias = CASES[case]
    params = make_params(jax.random.key(0), I, H, num_layers, bidirectional, use_bias)
    L = num_layers * (2 if bidirectional else 1)
    rng = np.random.default_rng(0)  # numpy: no compile per shape
    xs, h0, c0 = (jnp.asarray(rng.standard_normal(shape, np.float32)) for shape in
                  ((B, T, I), (L, B, H), (L, B, H)))
    lengths = jnp.asarray(lengths, jnp.int32)

    convert = jax.jit(to_cudnn) if bidirectional else to_cudnn  # it runs under jit (once: compiles cost)
    weights, layout = convert(params)
    assert layout == CudnnLayout(I, H, num_layers, bidirectional, use_bias)
    assert weights.shape == (rnn.get_num_params_in_lstm(**layout.lstm_kwargs),)
    with jax.default_matmul_precision("float32"):
        ys, state = jax.jit(jrnn.rnn_apply)(params, xs, jrnn_states(params, h0, c0), lengths=lengths)
        unpacked = rnn.unpack_lstm_weights(weights, **layout.lstm_kwargs)
        want_ys, want_h, want_c = rnn.lstm_ref(xs, h0, c0, *unpacked, lengths, dropout=0.0,
                                               **layout.lstm_kwargs)
    got_h, got_c = cudnn_states(state)
    np.testing.assert_allclose(ys, want_ys, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_h, want_h, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_c, want_c, rtol=1e-5, atol=1e-5)
    assert not np.any(np.asarray(ys)[1, int(lengths[1]):])  # the padding is really there, and zero

    back = from_cudnn(weights, layout)
    assert jax.tree.structure(back) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(np.asarray(a).view(np.uint32), np.asarray(b).view(np.uint32))


def test_from_cudnn_adds_both_biases():
    """cuDNN's own weights (b_hh not zero, as `init_lstm_weight` gives) give the same LSTM in jrnn."""
    I, H, B, T = 3, 4, 2, 5
    layout = CudnnLayout(I, H, 1, False)
    weights = rnn.init_lstm_weight(jax.random.key(1), I, H, 1, False)
    params = from_cudnn(weights, layout)
    xs = jnp.asarray(np.random.default_rng(1).standard_normal((B, T, I), np.float32))
    zeros = jnp.zeros((1, B, H))
    with jax.default_matmul_precision("float32"):
        want = rnn.lstm_ref(xs, zeros, zeros, *rnn.unpack_lstm_weights(weights, **layout.lstm_kwargs),
                            jnp.full((B,), T, jnp.int32), dropout=0.0, **layout.lstm_kwargs)[0]
        np.testing.assert_allclose(jax.jit(jrnn.rnn_apply)(params, xs)[0], want, rtol=1e-5, atol=1e-5)


def test_to_cudnn_refuses_what_cudnn_cannot_hold():
    key = jax.random.key(0)
    with pytest.raises(TypeError, match="LSTMs only; layer 0 is a GRU"):
        to_cudnn(jrnn.GRU.init(key, 3, 4))
    with pytest.raises(ValueError, match="no projection"):
        to_cudnn(jrnn.LSTM.init(key, 3, 4, proj_size=2))
    with pytest.raises(ValueError, match="merge"):
        to_cudnn(jrnn.Bidirectional.init(key, jrnn.LSTM, 3, 4, merge="sum"))
    with pytest.raises(ValueError, match="must be a vector of"):
        from_cudnn(jnp.zeros(7), CudnnLayout(3, 4, 1, False))
