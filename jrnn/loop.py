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

from jrnn.cells.linear import combine
from jrnn.fused import run_fused

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


def valid_steps(lengths: jax.Array, T: int) -> jax.Array:
    """Bool `[T, B]`: True at the steps `t < lengths[b]` (time-major `jrnn.sequence_mask`)."""
    return jnp.arange(T, dtype=jnp.int32)[:, None] < lengths[None, :]


def run_cell(cell, xs: jax.Array, h0: State, *, k: int, reverse: bool, masks: Optional[Masks] = None,
             checkpoint: Optional[int] = None) -> tuple[jax.Array, State]:
    """Runs `cell` over `xs [T, B, I]` from `h0`; returns `(ys [T, B, H], h_T)`.

    With `checkpoint=c`, the steps run in segments of `c` under `jax.checkpoint`: the backward pass
    keeps only the state at segment boundaries and recomputes each segment (sqrt(T) memory for
    `c ~ sqrt(T)`), at the cost of a second forward pass. Cells with `fused` set run through
    `jrnn.fused` (per segment with `c < T`); `checkpoint >= T` is one segment through autodiff.
    """
    masks = Masks() if masks is None else masks
    T = xs.shape[0]
    if T == 0:
        return jnp.zeros((0, xs.shape[1], cell.output_size), cell.output_dtype), h0
    lengths = masks.lengths
    remat = checkpoint is not None and checkpoint < T
    if (cell.fused and cell.dtype == cell.state_dtype and (checkpoint is None or remat)
            and masks.resets is None and masks.rec_mask is None):
        if masks.in_mask is not None:
            xs = xs * masks.in_mask.astype(xs.dtype)[None]
        valid = None if lengths is None else valid_steps(lengths, T)

        def segment(h, x, ok):
            ys, h = run_fused(cell, x, h, k=k, reverse=reverse, valid=ok)
            return h, ys

        if remat:
            h, ys = blocks(jax.checkpoint(segment), h0, (xs, valid), checkpoint, reverse)
        else:
            h, ys = segment(h0, xs, valid)
        return ys, h
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

    def steps(h, x, t, resets):
        return blocks(chunk, h, (x, t, resets), k, reverse)

    seqs = (xs, jnp.arange(T, dtype=jnp.int32), masks.resets)
    if checkpoint is None or checkpoint >= T:
        h, ys = steps(h0, *seqs)
    else:
        h, ys = blocks(jax.checkpoint(steps), h0, seqs, checkpoint, reverse)
    return ys, h


def blocks(body, h, seqs: tuple, k: int, reverse: bool):
    """`body(h, *block) -> (h, ys)` over consecutive blocks of `k` steps of `seqs` (time-first
    arrays, or None), in time order or reversed: a `lax.scan` over the `T // k` full blocks, and one
    more call for the `T mod k` steps left (after the scan; before it in time order when reversed).
    A single block runs without a scan. Returns `(h, ys)`, `ys` a pytree of `[T, ...]` arrays.
    """
    T = jax.tree.leaves(seqs)[0].shape[0]
    k = min(k, T)
    n, r = divmod(T, k)
    main = slice(r, T) if reverse else slice(0, n * k)  # the part the scan walks, n blocks of k
    rest = slice(0, r) if reverse else slice(n * k, T)  # the other r steps
    part = lambda s: jax.tree.map(lambda a: a[s], seqs)  # noqa: E731
    if n == 1:
        h, ys_main = body(h, *part(main))
    else:
        split = jax.tree.map(lambda a: a.reshape(n, k, *a.shape[1:]), part(main))
        h, ys_main = jax.lax.scan(lambda h, c: body(h, *c), h, split, reverse=reverse)
        ys_main = jax.tree.map(lambda y: y.reshape(n * k, *y.shape[2:]), ys_main)
    if r == 0:
        return h, ys_main
    h, ys_rest = body(h, *part(rest))
    join = lambda a, b: jnp.concatenate([b, a] if reverse else [a, b])  # noqa: E731
    return h, jax.tree.map(join, ys_main, ys_rest)


def run_parallel(cell, xs: jax.Array, h0: jax.Array, *, reverse: bool,
                 masks: Optional[Masks] = None) -> tuple[jax.Array, jax.Array]:
    """A linear-recurrence cell over `xs [T, B, I]` by `jax.lax.associative_scan`: O(log T) depth.

    Every step is the affine map `h -> a_t * h + b_t`; padded steps become the identity (`a=1, b=0`),
    a reset step maps every state to `a_t * h_reset + b_t`, and `h0` enters the first map applied.
    """
    masks = Masks() if masks is None else masks
    T = xs.shape[0]
    if T == 0:
        return jnp.zeros((0, xs.shape[1], cell.output_size), cell.output_dtype), h0
    if masks.in_mask is not None:
        xs = xs * masks.in_mask.astype(xs.dtype)[None]
    a, b = cell.coefficients(cell.project(xs))  # [T, B, H] each
    valid = None
    if masks.lengths is not None:
        valid = valid_steps(masks.lengths, T)[..., None]
        a = jnp.where(valid, a, jnp.ones_like(a))
        b = jnp.where(valid, b, jnp.zeros_like(b))
    if masks.resets is not None:
        reset = masks.resets[..., None] if valid is None else masks.resets[..., None] & valid
        b = jnp.where(reset, a * masks.h_reset.astype(a.dtype)[None] + b, b)
        a = jnp.where(reset, jnp.zeros_like(a), a)
    first = T - 1 if reverse else 0
    b = b.at[first].add(a[first] * h0.astype(a.dtype))
    _, hs = jax.lax.associative_scan(combine, (a, b), reverse=reverse, axis=0)
    hs = hs.astype(cell.state_dtype)
    ys = hs if valid is None else jnp.where(valid, hs, jnp.zeros_like(hs))
    return ys, hs[0 if reverse else T - 1]
