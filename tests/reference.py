"""The definition of `rnn_apply`, as a Python loop one step at a time: the reference of the tests."""

import jax
import jax.numpy as jnp
import numpy as np

import jrnn


def loop(step, xs, h0, *, reverse=False, lengths=None, resets=None, reset_state=None):
    """`step(x [B, I], h) -> (out, h)` over `xs [B, T, I]`. A reverse run takes each sequence's valid steps
    last to first (numpy indices); a reset flag at step t restores `reset_state` before step t (forward)
    or after it (reverse), zeros when `reset_state` is None; padded steps leave the state alone and output
    zeros."""
    Bn, Tn = xs.shape[:2]
    lengths = np.full(Bn, Tn) if lengths is None else np.clip(np.asarray(lengths), 0, Tn)
    order = np.tile(np.arange(Tn), (Bn, 1))  # order[b, n]: the time step run n-th
    if reverse:
        for b in range(Bn):
            order[b, :lengths[b]] = order[b, :lengths[b]][::-1]
    rows = np.arange(Bn)[:, None]
    flags = np.zeros((Bn, Tn), bool) if resets is None else np.asarray(resets)[rows, order]
    if reverse:  # after the step, i.e. before the next one run
        flags = np.concatenate([np.zeros((Bn, 1), bool), flags[:, :-1]], axis=1)
    where = lambda c, a, b: jax.tree.map(lambda u, v: jnp.where(c.reshape(-1, 1), u, v), a, b)  # noqa: E731
    if reset_state is None:
        reset_state = jax.tree.map(jnp.zeros_like, h0)
    h, outs = h0, [None] * Tn
    for n in range(Tn):
        ok = n < lengths
        if resets is not None:
            h = where(flags[:, n] & ok, reset_state, h)
        out, h_new = step(xs[np.arange(Bn), order[:, n]], h)
        h = where(ok, h_new, h)
        outs[n] = jnp.where(ok[:, None], out, jnp.zeros_like(out))
    if not Tn:  # no step: the output width from one traced step
        out = jax.eval_shape(step, jnp.zeros((Bn,) + xs.shape[2:], xs.dtype), h)[0]
        return jnp.zeros((Bn, 0) + out.shape[1:], out.dtype), h
    ys = jnp.stack(outs, axis=1)
    return ys[rows, np.argsort(order, axis=1)], h


def apply(params, xs, h0=None, *, reverse=False, lengths=None):
    """`rnn_apply` for cells, concatenating `Bidirectional` pairs and `Stack`s: `jrnn.cell_apply` loops."""
    B = xs.shape[0]
    if isinstance(params, jrnn.Stack):
        h0 = (None,) * len(params.layers) if h0 is None else h0
        states = []
        for layer, h in zip(params.layers, h0, strict=True):
            xs, h = apply(layer, xs, h, reverse=reverse, lengths=lengths)
            states.append(h)
        return xs, tuple(states)
    if isinstance(params, jrnn.Bidirectional):
        h0 = (None, None) if h0 is None else h0
        yf, hf = apply(params.forward, xs, h0[0], reverse=reverse, lengths=lengths)
        yb, hb = apply(params.backward, xs, h0[1], reverse=not reverse, lengths=lengths)
        return jnp.concatenate([yf, yb], -1), (hf, hb)
    h0 = jrnn.initial_state(params, (B,)) if h0 is None else h0
    return loop(lambda x, h: jrnn.cell_apply(params, x, h), xs, h0, reverse=reverse, lengths=lengths)
