"""The chunk walker and the per-step rule that every loop over time shares (`jrnn.loop`, `jrnn.derivative`).

Arrays are flat and time-major: `xs [T, B, I]`, every state leaf `[B, F]`, `valid` and `resets` `[T, B]`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Optional

import jax
import jax.numpy as jnp

State = Any


def tree_where(cond: jax.Array, a: State, b: State) -> State:
    """`jnp.where(cond, a, b)` leaf by leaf (`cond [B, 1]`)."""
    return jax.tree.map(functools.partial(jnp.where, cond), a, b)


def masked_step(step: Callable, h: State, ok: Optional[jax.Array], reset: Optional[jax.Array] = None,
                h_reset: Optional[State] = None) -> tuple[jax.Array, State]:
    """The one masking rule: `reset [B]` puts the state back to `h_reset` before the step, where the step
    is valid; at a padded step (`ok [B]` False) the state stays and the output is zero."""
    ok = None if ok is None else ok[:, None]
    if reset is not None:
        reset = reset[:, None] if ok is None else reset[:, None] & ok
        h = tree_where(reset, h_reset, h)
    out, h_new = step(h)
    if ok is None:
        return out, h_new
    return jnp.where(ok, out, jnp.zeros_like(out)), tree_where(ok, h_new, h)


def walk(body: Callable, h: State, seqs: tuple, k: int, reverse: bool):
    """`body(h, *block) -> (h, ys)` over consecutive blocks of `k` steps of `seqs` (time-first arrays or
    pytrees, or None), in time order or reversed: a `lax.scan` over the `T // k` full blocks, and one more
    call for the `T mod k` steps left (after the scan; before it in time order when reversed). A single
    block runs without a scan. Returns `(h, ys)`, `ys` a pytree of `[T, ...]` arrays.
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


def at(tree, j: int):
    return jax.tree.map(lambda a: a[j], tree)


def stack(items: list):
    return jax.tree.map(lambda *a: jnp.stack(a), *items)


def scan_cell(cell, xs: jax.Array, h0: State, *, k: int, reverse: bool, valid: Optional[jax.Array] = None,
              resets: Optional[jax.Array] = None, h_reset: Optional[State] = None,
              rec_mask: Optional[jax.Array] = None, trace: bool = False, states: bool = False):
    """The forward loop: per chunk of `k` steps one `project`, then `k` unrolled steps of `recur` under
    `masked_step`. Returns `(h_T, ys [T, B, F])`; with `states`, `(h_T, (ys, hs))`, `hs` the state after
    each step (`[T, B, F]` leaves); with `trace` (a `fused` cell, no resets or recurrent dropout)
    `(h_T, (ys, us, hs))`, `us` the inputs of `activate`.
    """
    def chunk(h, x_c, ok_c, reset_c):
        gx = cell.project(x_c)
        n = x_c.shape[0]
        outs, us, hs = [None] * n, [None] * n, [None] * n
        for j in (reversed(range(n)) if reverse else range(n)):
            ok = None if ok_c is None else ok_c[j]
            reset = None if reset_c is None else reset_c[j]
            if trace:
                us[j] = cell.activate_inputs(gx[j], h)
                outs[j], h = masked_step(lambda h, u=us[j]: cell.activate(*u, h), h, ok)
            else:
                outs[j], h = masked_step(lambda h, g=gx[j]: cell.recur(g, h, rec_mask), h, ok, reset, h_reset)
            hs[j] = h
        if trace:
            return h, (stack(outs), stack(us), stack(hs))
        return h, ((stack(outs), stack(hs)) if states else stack(outs))

    return walk(chunk, h0, (xs, valid, resets), k, reverse)
