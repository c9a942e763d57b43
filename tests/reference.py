"""The definition of `rnn_apply`, as a Python loop one step at a time: the reference of the tests."""

import jax
import jax.numpy as jnp
import numpy as np

import jrnn


def loop(step, xs, h0, *, reverse=False, lengths=None, resets=None, reset_state=None, mask=None,
         states=False):
    """`step(x [B, I], h) -> (out, h)` over `xs [B, T, I]`, one time step at a time, from the last to the
    first when `reverse`. A step runs where it is valid (`t < lengths[b]` and `mask[b, t]`); a skipped step
    leaves the state alone and outputs zeros. A reset flag at a valid step t restores `reset_state` (zeros
    when None) before step t (forward) or before the next valid step run after it (reverse). Returns
    `(ys, h_T)`, or with `states` `(ys, hs)`: the state after every step, each leaf `[B, T, F]`."""
    Bn, Tn = xs.shape[:2]
    valid = np.ones((Bn, Tn), bool)
    if lengths is not None:
        valid &= np.arange(Tn)[None, :] < np.clip(np.asarray(lengths), 0, Tn)[:, None]
    if mask is not None:
        valid &= np.asarray(mask)
    flags = np.zeros((Bn, Tn), bool) if resets is None else np.asarray(resets) & valid
    where = lambda c, a, b: jax.tree.map(lambda u, v: jnp.where(c.reshape(-1, 1), u, v), a, b)  # noqa: E731
    if reset_state is None:
        reset_state = jax.tree.map(jnp.zeros_like, h0)
    h, outs, hs = h0, [None] * Tn, [None] * Tn
    pending = np.zeros(Bn, bool)  # reverse: the last valid step run starts an episode
    for t in (reversed(range(Tn)) if reverse else range(Tn)):
        ok = valid[:, t]
        h = where((pending & ok) if reverse else flags[:, t], reset_state, h)
        pending = np.where(ok, flags[:, t], pending)
        out, h_new = step(xs[:, t], h)
        h = where(ok, h_new, h)
        outs[t], hs[t] = jnp.where(ok[:, None], out, jnp.zeros_like(out)), h
    if not Tn:  # no step: the output width from one traced step
        out = jax.eval_shape(step, jnp.zeros((Bn,) + xs.shape[2:], xs.dtype), h)[0]
        ys = jnp.zeros((Bn, 0) + out.shape[1:], out.dtype)
        return (ys, jax.tree.map(lambda a: a[:, None][:, :0], h)) if states else (ys, h)
    ys = jnp.stack(outs, axis=1)
    return (ys, jax.tree.map(lambda *a: jnp.stack(a, axis=1), *hs)) if states else (ys, h)


def apply(params, xs, h0=None, *, reverse=False, lengths=None, mask=None, states=False):
    """`rnn_apply` for cells, concatenating `Bidirectional` pairs and `Stack`s: `jrnn.cell_apply` loops."""
    kw = dict(reverse=reverse, lengths=lengths, mask=mask, states=states)
    B = xs.shape[0]
    if isinstance(params, jrnn.Stack):
        h0 = (None,) * len(params.layers) if h0 is None else h0
        finals = []
        for layer, h in zip(params.layers, h0, strict=True):
            xs, h = apply(layer, xs, h, **kw)
            finals.append(h)
        return xs, tuple(finals)
    if isinstance(params, jrnn.Bidirectional):
        h0 = (None, None) if h0 is None else h0
        yf, hf = apply(params.forward, xs, h0[0], **kw)
        yb, hb = apply(params.backward, xs, h0[1], **{**kw, "reverse": not reverse})
        return jnp.concatenate([yf, yb], -1), (hf, hb)
    h0 = jrnn.initial_state(params, (B,)) if h0 is None else h0
    return loop(lambda x, h: jrnn.cell_apply(params, x, h), xs, h0, **kw)
