"""Stacks with functions between layers and skip connections (Haiku's `DeepRNN` and
`deep_rnn_with_skip_connections`, on Haiku's numbers), and `Bidirectional.final_output` (Keras'
`Bidirectional` with `return_sequences=False`)."""

import functools

import haiku as hk
import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest
from reference import loop

import jrnn

T, B, I = 5, 2, 3
XS = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)  # time-major, as Haiku


def _from_haiku_lstm(p) -> jrnn.LSTM:
    """`hk.LSTM`'s `linear` (`w [I+H, 4H]` on `[x, h]`, gates i, g, f, o, +1 on f) as jrnn's LSTM."""
    w, b = np.asarray(p["w"]), np.asarray(p["b"])
    H = b.shape[0] // 4
    order = np.concatenate([np.arange(H) + k * H for k in (0, 2, 1, 3)])  # i, f, g, o
    b = b[order]
    b[H:2 * H] += 1.0
    return jrnn.LSTM(jnp.asarray(w[:-H][:, order]), jnp.asarray(w[-H:][:, order]), jnp.asarray(b))


def _haiku(make_core, names):
    """Haiku's outputs and all states of `make_core()` over `XS`, and its LSTMs' params (random biases)."""
    def unroll(xs):
        core = make_core()
        return hk.dynamic_unroll(core, xs, core.initial_state(B), return_all_states=True)

    f = hk.transform(unroll)
    with jax.numpy_rank_promotion("allow"):  # Haiku's Linear adds `b [n]` to `[B, n]`
        params = f.init(jax.random.key(0), XS)
        keys = iter(jax.random.split(jax.random.key(1), len(params)))
        params = {k: {**v, "b": 0.5 * jax.random.normal(next(keys), v["b"].shape)} for k, v in params.items()}
        ys, states = f.apply(params, None, XS)
    return ys, states, [_from_haiku_lstm(params[f"{n}/linear"]) for n in names]


def _close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def test_deep_rnn_with_a_function_between_layers_matches_haiku():
    ys, states, (l0, l1) = _haiku(
        lambda: hk.DeepRNN([hk.LSTM(4, name="l0"), jax.nn.relu, hk.LSTM(3, name="l1")]), ["l0", "l1"])
    stack = jrnn.Stack((l0, jax.nn.relu, l1))
    got, hs = jrnn.rnn_apply(stack, XS, time_major=True, return_states=True)
    _close(got, ys)
    assert hs[1] is None  # a function has no state
    for mine, theirs in ((hs[0], states[0]), (hs[2], states[1])):
        _close(mine.h, theirs.hidden)
        _close(mine.c, theirs.cell)


def test_deep_rnn_with_skip_connections_matches_haiku():
    ys, states, cells = _haiku(lambda: hk.deep_rnn_with_skip_connections(
        [hk.LSTM(4, name="l0"), hk.LSTM(3, name="l1"), hk.LSTM(2, name="l2")]), ["l0", "l1", "l2"])
    stack = jrnn.Stack(tuple(cells), skip=True)
    assert stack.output_size == 9 and stack.widths()[1:3] == (3 + 4, 3 + 3)
    got, h_T = jrnn.rnn_apply(stack, XS, time_major=True)
    _close(got, ys)  # every layer's output, concatenated
    for mine, theirs in zip(h_T, states, strict=True):
        _close(mine.h, theirs.hidden[-1])
        _close(mine.c, theirs.cell[-1])


# ---------------------------------------------------------------------------------------------
# Against a Python loop over `cell_apply` of the whole stack (which steps the same layers once
# each): values and gradients, with lengths, reverse and a chunked unroll.

def _stacks():
    k = jax.random.split(jax.random.key(2), 4)
    widen = lambda y: jnp.concatenate([jnp.tanh(y), y * y], axis=-1)  # noqa: E731  [..., F] -> [..., 2F]
    return {
        "function_widens": jrnn.Stack((jrnn.LSTM.init(k[0], I, 3), widen, jrnn.GRU.init(k[1], 6, 4))),
        "skip": jrnn.Stack.init(k[2], jrnn.GRU, I, 3, 3, skip=True, initializer="pytorch"),
    }


@pytest.mark.parametrize("name, kw", [("function_widens", dict(unroll=2)),
                                      ("skip", dict(reverse=True))])
def test_stack_equals_the_loop_over_cell_apply(name, kw):
    stack = _stacks()[name]
    xs = jnp.swapaxes(jnp.asarray(XS), 0, 1)
    lengths = np.array([5, 3])

    def loss(run, p, xs):
        ys, h = run(p, xs)
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(jnp.cos(a)) for a in jax.tree.leaves(h))

    def ours(p, xs):
        return jrnn.rnn_apply(p, xs, lengths=lengths, **kw)

    def ref(p, xs):
        return loop(lambda x, h: jrnn.cell_apply(p, x, h), xs, jrnn.initial_state(p, (B,)),
                    lengths=lengths, reverse=kw.get("reverse", False))

    got = jax.jit(jax.value_and_grad(functools.partial(loss, ours), argnums=(0, 1)))(stack, xs)
    want = jax.value_and_grad(functools.partial(loss, ref), argnums=(0, 1))(stack, xs)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=2e-4, atol=2e-5)


# ---------------------------------------------------------------------------------------------
# Keras' Bidirectional with `return_sequences=False`: the merged final output, with a mask.

@pytest.mark.parametrize("merge", ["concat", "sum"])
def test_bidirectional_final_output_matches_keras(merge):
    pair = jrnn.Bidirectional.init(jax.random.key(3), jrnn.GRU, I, 4, merge=merge, initializer="pytorch")
    xs = jnp.swapaxes(jnp.asarray(XS), 0, 1)
    mask = np.array([[1, 0, 1, 1, 0], [0, 1, 1, 0, 0]], bool)
    with jax.numpy_rank_promotion("allow"):
        layer = keras.layers.Bidirectional(keras.layers.GRU(4), merge_mode=merge)
        layer.build((B, T, I))
        layer.set_weights(jrnn.to_keras(pair))
        want = layer(np.asarray(xs), mask=mask)
    _, h_T = jrnn.rnn_apply(pair, xs, mask=mask)
    _close(pair.final_output(h_T), want)


# ---------------------------------------------------------------------------------------------
# Errors

def test_errors(tmp_path):
    k = jax.random.key(4)
    gru = jrnn.GRU.init(k, I, 3)
    with pytest.raises(ValueError, match=r"`Stack.layers\[0\]` is a function: a stack starts with a cell"):
        jrnn.Stack((jnp.tanh, gru))
    with pytest.raises(ValueError, match=r"`Stack.layers\[1\]` is a function: `skip` connects cell layers"):
        jrnn.Stack((gru, jnp.tanh, jrnn.GRU.init(k, 6, 3)), skip=True)
    with pytest.raises(ValueError, match=r"`Stack` takes `residual` or `skip`, not both"):
        jrnn.Stack((gru, gru), residual=True, skip=True)
    with pytest.raises(ValueError, match=r"`Stack.layers\[1\]` takes 3 input features but the input \(3\) "
                                         r"and `Stack.layers\[0\]`'s output together give 6"):
        jrnn.Stack((gru, gru), skip=True)
    with pytest.raises(TypeError, match=r"`Stack.layers\[1\]` must map an array \[\.\.\., F\] to one array"):
        jrnn.Stack((gru, lambda y: (y, y), gru))
    stack = jrnn.Stack((gru, jnp.tanh, gru))
    with pytest.raises(TypeError, match=r"`h0\[1\]` of a function layer must be None"):
        jrnn.rnn_apply(stack, jnp.ones((B, T, I)), (None, jnp.zeros((B, 3)), None))
    for convert in (jrnn.to_torch, jrnn.to_keras):
        with pytest.raises(ValueError, match=r"`params.layers\[1\]` is a function"):
            convert(stack)
    with pytest.raises(TypeError, match=r"Cannot save `params.layers\[1\].fn`: a static setting must be"):
        jrnn.save(tmp_path / "stack.jrnn", stack)
    lru = jrnn.Bidirectional.init(k, jrnn.LRU, I, 3, merge="sum")
    with pytest.raises(TypeError, match=r"`final_output` needs cells whose output is their state; LRU"):
        lru.final_output(jrnn.initial_state(lru, (B,)))
