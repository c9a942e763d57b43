"""Padding that holds garbage, and resets: against a Python loop over `cell_apply` (`tests/reference.py`)."""

import contextlib
import functools
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import apply, loop

import jrnn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import custom_cell  # noqa: E402

B, T, I, H = 2, 5, 2, 3
LENGTHS = np.array([3, 0])  # one sequence cut, one all padding
KEYS = jax.random.split(jax.random.key(0), 4)


def _garbage(xs):
    """NaN, inf and a huge value at the padded steps of `xs [B, T, I]`."""
    pad = np.arange(T)[None, :] >= LENGTHS[:, None]
    junk = np.array([np.nan, np.inf, -np.inf, 1e38, np.nan])[None, :, None]
    return jnp.where(pad[..., None], junk, xs)


def _stack():
    return jrnn.Stack((jrnn.Bidirectional.init(KEYS[1], jrnn.GRU, I, H),
                       jrnn.LSTM.init(KEYS[2], 2 * H, 2 * H)),
                      residual=True)


# (params, rnn_apply options): every mode, a composite, the corners of reverse. The SimpleRNN, MinLSTM,
# the chunked mode and the IndRNN (a whole `step`) take garbage at masked steps in test_masks_and_states.
CASES = {
    "lstm_chunks_reverse": (lambda: jrnn.LSTM.init(KEYS[0], I, H), dict(unroll=2, reverse=True)),
    "gru_python_unroll": (lambda: jrnn.GRU.init(KEYS[0], I, H), dict(unroll=True)),
    "gru_reset_before_remat": (lambda: jrnn.GRU.init(KEYS[0], I, H, reset_after=False), dict(remat=2)),
    "mingru_parallel_reverse": (lambda: jrnn.MinGRU.init(KEYS[0], I, H), dict(mode="parallel", reverse=True)),
    "lru_parallel": (lambda: jrnn.LRU.init(KEYS[0], I, H), dict(mode="parallel")),
    "stack_bidirectional_residual": (_stack, dict(unroll=2)),
    # User-defined cells (examples/custom_cell.py): project + recur, and a whole `step`.
    "custom_peephole_chunks": (lambda: custom_cell.PeepholeLSTM.init(KEYS[0], I, H), dict(unroll=2)),
}


def _promotion(name):
    """The example cells broadcast `[H]` weights over the batch, as users write them (conftest forbids it)."""
    return jax.numpy_rank_promotion("allow") if name.startswith("custom") else contextlib.nullcontext()


@functools.cache
def _run(name):
    """`(ys, grad wrt params, grad wrt xs)` of a sum of the outputs and final state, on garbage padding."""
    params, kw = CASES[name][0](), CASES[name][1]
    xs = jax.random.normal(KEYS[3], (B, T, I))

    def loss(p, xs):
        ys, h = jrnn.rnn_apply(p, xs, lengths=LENGTHS, **kw)
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(jnp.cos(jnp.real(a))) for a in jax.tree.leaves(h)), ys

    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
    with _promotion(name):
        (_, ys), (gp, gx) = step(params, _garbage(xs))
    return params, xs, kw, ys, gp, gx


@pytest.mark.parametrize("name", list(CASES))
def test_garbage_in_the_padding_reaches_no_output_and_no_gradient(name):
    params, xs, kw, ys, gp, gx = _run(name)
    reverse = kw.get("reverse", False)
    lengths = LENGTHS

    def ref_loss(p, xs):  # the loop sees only clean inputs: padded steps are zeros
        want, h = apply(p, xs, reverse=reverse, lengths=lengths)
        return jnp.sum(jnp.sin(want)) + sum(jnp.sum(jnp.cos(jnp.real(a))) for a in jax.tree.leaves(h)), want

    if isinstance(params, jrnn.Stack):  # apply() knows no residual: compare with the layers by hand
        def ref_loss(p, xs):  # noqa: F811
            y1, h1 = apply(p.layers[0], xs, reverse=reverse, lengths=lengths)
            y2, h2 = apply(p.layers[1], y1, reverse=reverse, lengths=lengths)
            want = y2 + y1  # residual where the widths agree, zeros at padded steps on both sides
            loss = jnp.sum(jnp.sin(want)) + sum(jnp.sum(jnp.cos(a)) for a in jax.tree.leaves((h1, h2)))
            return loss, want

    clean = jnp.where((np.arange(T)[None, :] < lengths[:, None])[..., None], xs, 0.0)
    with _promotion(name):
        (_, want), (gp_want, gx_want) = jax.value_and_grad(ref_loss, argnums=(0, 1), has_aux=True)(
            params, clean)
    np.testing.assert_allclose(ys, want, rtol=2e-5, atol=2e-6)
    for g, w in zip(jax.tree.leaves(gp), jax.tree.leaves(gp_want), strict=True):
        np.testing.assert_allclose(g, w, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(gx, gx_want, rtol=2e-4, atol=2e-5)
    pad = np.arange(T)[None, :] >= lengths[:, None]
    assert np.all(np.asarray(gx)[pad] == 0.0)  # exactly zero, not only finite


def test_issue_example_gru_grad_with_nan_padding_is_finite():
    xs = jnp.ones((1, 3, 2)).at[0, 2:].set(jnp.nan)
    p = jrnn.GRU.init(jax.random.key(0), 2, 3)
    g = jax.grad(lambda p: jrnn.rnn_apply(p, xs, lengths=jnp.array([2]))[0].sum())(p)
    g_clean = jax.grad(lambda p: jrnn.rnn_apply(p, xs[:, :2])[0].sum())(p)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_clean), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Resets


def test_reverse_run_ignores_a_reset_flag_on_the_first_padded_step():
    """The issue's case: a flag at t == length must not make a reverse run start from `reset_state`."""
    p = jrnn.GRU.init(jax.random.key(0), 2, 3)
    xs, h0, rs = jnp.ones((1, 4, 2)), jnp.full((1, 3), .5), jnp.zeros((1, 3))
    kw = dict(lengths=jnp.array([2]), reset_state=rs, reverse=True)
    flags = jnp.zeros((1, 4), bool).at[0, 2].set(True)
    want, h_want = loop(lambda x, h: jrnn.cell_apply(p, x, h), xs, h0, reverse=True, lengths=[2],
                        resets=flags, reset_state=rs)
    for mode in ({}, dict(unroll=True)):
        got, h = jrnn.rnn_apply(p, xs, h0, resets=flags, **kw, **mode)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(h, h_want, rtol=1e-6, atol=1e-6)
    plain = jrnn.rnn_apply(p, xs[:, :2], h0, reverse=True)[0]  # the same as no flag at all
    np.testing.assert_allclose(got[:, :2], plain, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("reverse", [False, True])
def test_resets_restore_zeros_by_default_and_parallel_agrees(reverse):
    """Haiku's `ResetCore`: without `reset_state`, an episode starts from zeros, not from the carried `h0`."""
    p = jrnn.MinGRU.init(jax.random.key(1), I, H)
    xs = jax.random.normal(jax.random.key(2), (B, T, I))
    carried = jnp.full((B, H), 2.0)
    flags = jnp.zeros((B, T), bool).at[0, 2].set(True).at[1, 0].set(True)
    lengths = np.array([5, 4])
    want, h_want = loop(lambda x, h: jrnn.cell_apply(p, x, h), xs, carried, reverse=reverse, lengths=lengths,
                        resets=flags, reset_state=jnp.zeros((B, H)))
    for mode in ("sequential", "parallel"):
        got, h = jrnn.rnn_apply(p, xs, carried, resets=flags, lengths=lengths, reverse=reverse, mode=mode)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(h, h_want, rtol=1e-5, atol=1e-6)


def test_cell_apply_reset_is_the_rule_of_rnn_apply():
    """An acting loop over `cell_apply(..., reset=)` equals the learner's `rnn_apply(..., resets=)`."""
    p = jrnn.LSTM.init(jax.random.key(3), I, H)
    xs = jax.random.normal(jax.random.key(4), (B, T, I))
    carried = jrnn.LSTMState(jnp.ones((B, H)), -jnp.ones((B, H)))
    flags = np.zeros((B, T), bool)
    flags[0, [0, 3]] = flags[1, 2] = True
    learned = jrnn.LSTMState(jnp.full((H,), 0.3), jnp.full((H,), -0.2))
    for reset_state in (None, learned):
        ys, h_T = jrnn.rnn_apply(p, xs, carried, resets=flags, reset_state=reset_state)
        h, outs = carried, []
        for t in range(T):
            out, h = jrnn.cell_apply(p, xs[:, t], h, reset=flags[:, t], reset_state=reset_state)
            outs.append(out)
        target = jrnn.initial_state(p, (B,)) if reset_state is None else learned
        want, h_want = loop(lambda x, h: jrnn.cell_apply(p, x, h), xs, carried, resets=flags,
                            reset_state=jax.tree.map(lambda a: jnp.broadcast_to(a, (B, H)), target))
        np.testing.assert_allclose(jnp.stack(outs, 1), want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ys, want, rtol=1e-5, atol=1e-6)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                     (h, h_T), (h_want,) * 2)


def test_cell_apply_reset_on_a_stack_resets_every_layer():
    stack = jrnn.Stack.init(jax.random.key(5), jrnn.GRU, I, H, num_layers=2)
    x = jnp.ones((B, I))
    h = jrnn.initial_state(stack, (B,))
    h = jax.tree.map(lambda a: a + 1.0, h)
    reset = jnp.array([True, False])
    out, h_new = jrnn.cell_apply(stack, x, h, reset=reset)
    out0, _ = jrnn.cell_apply(stack, x[:1], jrnn.initial_state(stack, (1,)))
    out1, _ = jrnn.cell_apply(stack, x[1:], jax.tree.map(lambda a: a[1:], h))
    np.testing.assert_allclose(out, jnp.concatenate([out0, out1]), rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Dropout at rate 1 and lengths beyond int32


def test_dropout_rate_one_drops_everything_with_finite_gradients():
    p = jrnn.Stack.init(jax.random.key(6), jrnn.LSTM, I, H, num_layers=2)
    xs = jax.random.normal(jax.random.key(7), (B, T, I))
    key = jax.random.key(8)
    zeros = jrnn.rnn_apply(p, jnp.zeros_like(xs))[0]  # every input dropped = zero inputs
    got = jrnn.rnn_apply(p, xs, key=key, dropout=1.0)[0]
    np.testing.assert_allclose(got, zeros, rtol=1e-6, atol=1e-6)
    # layer_dropout=1: the second layer sees zeros; its output equals the second layer alone on zeros.
    last = jrnn.rnn_apply(p.layers[1], jnp.zeros((B, T, H)))[0]
    got = jrnn.rnn_apply(p, xs, key=key, layer_dropout=1.0)[0]
    np.testing.assert_allclose(got, last, rtol=1e-6, atol=1e-6)
    # recurrent_dropout=1: the recurrent matmul sees zeros, so each step is the step from a zero `h`.
    cell = p.layers[0]
    got = jrnn.rnn_apply(cell, xs, key=key, recurrent_dropout=1.0)[0]
    h = jrnn.initial_state(cell, (B,))
    for t in range(T):  # the cell state c still carries over; only h's entry into the matmul is zero
        gx = cell.project(xs[:, t])
        want, h = cell.recur(gx, h, rec_mask=jnp.zeros((B, H)))
        np.testing.assert_allclose(got[:, t], want, rtol=1e-5, atol=1e-6)
    rate = jnp.float32(1.0)  # traced rates too
    g = jax.jit(jax.grad(lambda p, r: jrnn.rnn_apply(p, xs, key=key, dropout=r, recurrent_dropout=r,
                                                      layer_dropout=r)[0].sum()))(p, rate)
    assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves(g))


def test_lengths_beyond_int32_are_clipped_not_wrapped():
    p = jrnn.GRU.init(jax.random.key(0), I, H)
    xs = jax.random.normal(jax.random.key(1), (B, T, I))
    got = jrnn.rnn_apply(p, xs, lengths=np.array([2**32 + 1, 3]))[0]
    want = jrnn.rnn_apply(p, xs, lengths=np.array([T, 3]))[0]
    np.testing.assert_array_equal(got, want)
