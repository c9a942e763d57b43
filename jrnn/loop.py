"""The loop over time for one cell, on flat time-major arrays: `xs [T, B, I]`, state `[B, H]`.

The loop runs in chunks of `k` steps: each chunk projects its inputs with one matrix product of
`k*B` rows, then takes its `k` recurrent steps unrolled on static slices; an outer `lax.scan` walks
the chunks, and a last chunk of `T mod k` steps runs after it (before it, in reverse). `k = 1` is a
plain scan, `k = T` a Python loop over every step (no scan).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

State = Any  # an array `[B, H]`, or an `LSTMState` of two


class Masks(NamedTuple):
    """What varies per sequence: all optional, all flat over the batch `B`.

    lengths: `[B]` int32, valid steps per sequence (steps `t >= length` are padding).
    resets: `[T, B]` bool, reset the state to `h_reset` before processing step `t` (already shifted
      by one step for a reverse run, see `rnn_apply`).
    h_reset: the state that `resets` restores, `[B, H]`.
    in_mask: `[B, I]` scaled dropout mask on the inputs, the same at every step.
    rec_mask: `[B, H]` scaled dropout mask on the state entering the recurrent matmul.
    """

    lengths: Optional[jax.Array] = None
    resets: Optional[jax.Array] = None
    h_reset: Optional[State] = None
    in_mask: Optional[jax.Array] = None
    rec_mask: Optional[jax.Array] = None


def run_cell(cell, xs: jax.Array, h0: State, *, k: int, reverse: bool,
             masks: Optional[Masks] = None) -> tuple[jax.Array, State]:
    """Runs `cell` over `xs [T, B, I]` from `h0`; returns `(ys [T, B, H], h_T)`."""
    masks = Masks() if masks is None else masks
    T = xs.shape[0]
    if T == 0:
        return jnp.zeros((0, xs.shape[1], cell.output_size), cell.state_dtype), h0
    k = min(k, T)
    n, r = divmod(T, k)
    lengths, resets = masks.lengths, masks.resets
    where = lambda c, a, b: jax.tree.map(functools.partial(jnp.where, c), a, b)  # noqa: E731

    def chunk(h, x_c, t_c, reset_c):
        """Steps on `x_c [k', B, I]` at times `t_c [k']`: one projection, then unrolled steps."""
        if masks.in_mask is not None:
            x_c = x_c * masks.in_mask.astype(x_c.dtype)[None]
        gx = cell.project(x_c)
        outs = [None] * x_c.shape[0]
        for j in (reversed(range(len(outs))) if reverse else range(len(outs))):
            valid = None if lengths is None else (t_c[j] < lengths)[:, None]
            if reset_c is not None:
                reset = reset_c[j][:, None] if valid is None else reset_c[j][:, None] & valid
                h = where(reset, masks.h_reset, h)
            out, h_new = cell.recur(gx[j], h, masks.rec_mask)
            if valid is not None:
                h_new = where(valid, h_new, h)
                out = jnp.where(valid, out, jnp.zeros_like(out))
            h, outs[j] = h_new, out
        return h, jnp.stack(outs)

    ts = jnp.arange(T, dtype=jnp.int32)
    main = slice(r, T) if reverse else slice(0, n * k)  # the part the scan walks, n chunks of k
    rest = slice(0, r) if reverse else slice(n * k, T)  # the other r steps
    part = lambda a, s: None if a is None else a[s]  # noqa: E731
    if n == 1:
        h, ys_main = chunk(h0, xs[main], ts[main], part(resets, main))
    else:
        split = lambda a: None if a is None else a[main].reshape(n, k, *a.shape[1:])  # noqa: E731
        h, ys_main = jax.lax.scan(lambda h, c: chunk(h, *c), h0,
                                  (split(xs), split(ts), split(resets)), reverse=reverse)
        ys_main = ys_main.reshape(n * k, *ys_main.shape[2:])
    if r == 0:
        return ys_main, h
    h, ys_rest = chunk(h, xs[rest], ts[rest], part(resets, rest))
    return jnp.concatenate([ys_rest, ys_main] if reverse else [ys_main, ys_rest]), h
