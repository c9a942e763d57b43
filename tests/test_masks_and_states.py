"""`mask` (holes, left padding) and `return_states`: against Keras' masking and a Python loop over
`cell_apply` (`tests/reference.py`)."""

import functools
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest
from reference import apply, loop
from test_keras_parity import keras_layer, keras_mode, make, rand_state, rand_xs

import jrnn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import custom_cell  # noqa: E402

B, T, I, H = 3, 6, 2, 3
MASK = np.array([[1, 0, 1, 1, 0, 1],  # holes
                 [0, 0, 1, 1, 1, 1],  # left padding, as batched generation pads
                 [0, 0, 0, 0, 0, 0]], bool)  # nothing to run
RESETS = np.zeros((B, T), bool)
RESETS[0, [2, 4]] = RESETS[1, 3] = True  # after a hole; on a masked step (ignored); mid-sequence
KEYS = jax.random.split(jax.random.key(0), 4)
STEPS = np.arange(T, dtype=np.float32)[None, :, None]  # weighs the states of each step differently


# ---------------------------------------------------------------------------------------------
# Keras: the same layer with the same weights and mask (`zero_output_for_mask=True`: Keras' default
# repeats the previous output at a masked step, Keras' `Bidirectional` forces zeros, as jrnn does).

@pytest.mark.parametrize("kind, go_backwards", [("lstm", False), ("gru", True), ("simple_tanh", True)])
def test_mask_matches_keras(kind, go_backwards):
    params = make(kind, I, H)
    xs, h0 = rand_xs(B, T, I), rand_state(params, B)
    layer = keras_layer(kind, params, B, T, zero_output_for_mask=True, go_backwards=go_backwards)
    with keras_mode():
        outs = layer(xs, initial_state=[np.asarray(s) for s in jax.tree.leaves(h0)], mask=MASK)
    ys_keras = np.asarray(outs[0])[:, ::-1] if go_backwards else np.asarray(outs[0])
    ys, h_T = jrnn.rnn_apply(params, xs, h0, mask=MASK, reverse=go_backwards)
    np.testing.assert_allclose(ys, ys_keras, rtol=1e-5, atol=1e-5)
    for got, want in zip(jax.tree.leaves(h_T), outs[1:], strict=True):
        np.testing.assert_allclose(got, np.asarray(want), rtol=1e-5, atol=1e-5)


def test_mask_from_keras_masking_layer_in_a_model():
    """`keras.layers.Masking` makes the mask from the inputs: jrnn takes the same mask as an argument."""
    params = make("lstm", I, H)
    xs = np.where(MASK[..., None], rand_xs(B, T, I), 0.0).astype(np.float32)
    with keras_mode():
        model = keras.Sequential([keras.Input((T, I)), keras.layers.Masking(0.0),
                                  keras.layers.LSTM(H, return_sequences=False)])
        model.layers[-1].set_weights([np.asarray(w) for w in (params.kernel, params.recurrent_kernel,
                                                               params.bias)])
        want = np.asarray(model(xs))
    _, h_T = jrnn.rnn_apply(params, xs, mask=np.any(xs != 0, axis=-1))
    np.testing.assert_allclose(h_T.h, want, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# A Python loop over `cell_apply`: values, final states, per-step states and gradients, with garbage
# (NaN, inf) at the masked steps, for every kind of path: the fused derivative, autodiff with resets,
# remat, the parallel and chunked scans, a readout, a composite and a user's cell.

def _stack():
    return jrnn.Stack((jrnn.Bidirectional.init(KEYS[1], jrnn.GRU, I, H), jrnn.LSTM.init(KEYS[2], 2 * H, H)))


CASES = {
    "lstm_derivative_reverse": (lambda: jrnn.LSTM.init(KEYS[0], I, H), dict(unroll=2, reverse=True)),
    "gru_resets_reverse_lengths": (lambda: jrnn.GRU.init(KEYS[0], I, H),
                                   dict(resets=RESETS, reverse=True, lengths=np.array([6, 5, 6]))),
    "simple_remat_time_major": (lambda: jrnn.SimpleRNN.init(KEYS[0], I, H), dict(remat=4, time_major=True)),
    "mingru_parallel_resets_reverse": (lambda: jrnn.MinGRU.init(KEYS[0], I, H),
                                       dict(mode="parallel", resets=RESETS, reverse=True)),
    "lru_chunked": (lambda: jrnn.LRU.init(KEYS[0], I, H), dict(mode="chunked")),
    "stack_bidirectional": (_stack, dict(unroll=3)),
    "custom_indrnn_step": (lambda: custom_cell.IndRNN.init(KEYS[0], I, H), dict(resets=RESETS)),
}


# Where `h_T` (return_states=False) comes from its own place: the fused derivative, the loop with resets,
# the chunked scan, a composite.
FINAL = ("lstm_derivative_reverse", "gru_resets_reverse_lengths", "lru_chunked", "stack_bidirectional")


def _promotion(name):
    """The example cells broadcast `[H]` weights over the batch, as users write them (conftest forbids it)."""
    return jax.numpy_rank_promotion("allow" if name.startswith("custom") else "raise")


def _loss(ys, states):
    return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(jnp.cos(jnp.real(a)) * STEPS)
                                      for a in jax.tree.leaves(states))


def _reference(params, xs, kw, states):
    """The loop over `cell_apply` on batch-major `xs`: `(ys, hs or h_T)`."""
    opts = dict(reverse=kw.get("reverse", False), lengths=kw.get("lengths"), mask=MASK, states=states)
    if "resets" in kw:
        step = lambda x, h: jrnn.cell_apply(params, x, h)  # noqa: E731
        return loop(step, xs, jrnn.initial_state(params, (B,)), resets=kw["resets"], **opts)
    return apply(params, xs, **opts)


@functools.cache
def _run(name):
    params, kw = CASES[name][0](), CASES[name][1]
    xs = jax.random.normal(KEYS[3], (B, T, I))
    junk = jnp.array([np.nan, np.inf, -np.inf, 1e38, np.nan, 0.0])[None, :, None]
    garbage = jnp.where(MASK[..., None], xs, junk)
    tm = kw.get("time_major", False)
    swap = (lambda a: jnp.swapaxes(a, 0, 1)) if tm else (lambda a: a)  # noqa: E731
    opts = {**kw, "mask": swap(MASK)}
    if "resets" in kw:
        opts["resets"] = swap(kw["resets"])

    def loss(p, xs):
        ys, hs = jrnn.rnn_apply(p, swap(xs), return_states=True, **opts)
        ys, hs = swap(ys), jax.tree.map(swap, hs)
        return _loss(ys, hs), (ys, hs)

    def final(p, xs):
        ys, h_T = jrnn.rnn_apply(p, swap(xs), **opts)
        return swap(ys), h_T

    with _promotion(name):
        got = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(params, garbage)
        return params, xs, kw, got, (jax.jit(final)(params, garbage) if name in FINAL else None)


@pytest.mark.parametrize("name", list(CASES))
def test_mask_and_states_equal_the_python_loop(name):
    params, xs, kw, ((_, (ys, hs)), (gp, gx)), final = _run(name)
    clean = jnp.where(MASK[..., None], xs, 0.0)

    def ref_loss(p, xs):
        want, states = _reference(p, xs, kw, states=True)
        return _loss(want, states), (want, states)

    with _promotion(name):
        (_, (want, states)), (gp_want, gx_want) = jax.value_and_grad(ref_loss, argnums=(0, 1), has_aux=True)(
            params, clean)
        _, h_want = _reference(params, clean, kw, states=False)
    close = functools.partial(np.testing.assert_allclose, rtol=2e-5, atol=2e-6)
    close(ys, want)
    jax.tree.map(close, hs, states)
    if final is not None:
        close(final[0], want)
        jax.tree.map(close, final[1], h_want)
    for g, w in zip(jax.tree.leaves(gp), jax.tree.leaves(gp_want), strict=True):
        np.testing.assert_allclose(g, w, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(gx, gx_want, rtol=2e-4, atol=2e-5)
    assert np.all(np.asarray(gx)[~MASK] == 0.0)  # a masked input gets exactly no gradient
    assert np.any(MASK[:, :, None] & (np.asarray(ys) != 0))  # the case ran some steps


def test_states_of_the_derivative_in_forward_mode():
    """`jvp` of the per-step states through the fused derivative equals the loop's `jvp`."""
    params, xs = jrnn.LSTM.init(KEYS[0], I, H), jax.random.normal(KEYS[3], (B, T, I))
    dparams = jax.tree.map(jnp.ones_like, params)
    run = lambda p: jrnn.rnn_apply(p, xs, mask=MASK, unroll=3, return_states=True)  # noqa: E731
    ref = lambda p: apply(p, xs, mask=MASK, states=True)  # noqa: E731
    got, want = jax.jvp(run, (params,), (dparams,)), jax.jvp(ref, (params,), (dparams,))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6), got, want)


def test_states_layout_and_structure():
    """Per-step states come in the layout of `ys` and the structure of `h0`, for any batch axes."""
    stack = _stack()
    xs = jnp.ones((2, B, T, I))
    ys, hs = jrnn.rnn_apply(stack, xs, return_states=True)
    assert jax.tree.structure(hs) == jax.tree.structure(jrnn.initial_state(stack, (2, B)))
    assert [a.shape for a in jax.tree.leaves(hs)] == [(2, B, T, H)] * 4
    ys_tm, hs_tm = jrnn.rnn_apply(stack, jnp.moveaxis(xs, 2, 0), time_major=True, return_states=True)
    np.testing.assert_allclose(jnp.moveaxis(hs_tm[1].c, 0, 2), hs[1].c, rtol=1e-6, atol=1e-6)
    _, h_T = jrnn.rnn_apply(stack, xs)
    np.testing.assert_allclose(hs[1].h[..., -1, :], h_T[1].h, rtol=1e-6, atol=1e-6)  # forward: last entry
    np.testing.assert_allclose(hs[0][1][..., 0, :], h_T[0][1], rtol=1e-6, atol=1e-6)  # reverse: first
