"""The parallel form of `linear` cells: every step is the affine map `h -> a_t * h + b_t`, and maps
compose associatively, so `jax.lax.associative_scan` runs them in O(log T) depth."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from jrnn.steps import tree_where


def combine(earlier, later):
    """The associative combine of two affine maps `h -> a*h + b`: first `earlier`, then `later`."""
    a1, b1 = earlier
    a2, b2 = later
    return a1 * a2, a2 * b1 + b2


def run_parallel(cell, xs: jax.Array, h0: jax.Array, *, reverse: bool, valid: Optional[jax.Array] = None,
                 resets: Optional[jax.Array] = None, h_reset: Optional[jax.Array] = None,
                 ) -> tuple[jax.Array, jax.Array]:
    """`linear` `cell` over `xs [T, B, I]` (inputs already dropped out): `(ys [T, B, H], hs [T, B, H])`,
    `hs` the state after each step (kept at padded steps: the final state is `hs[-1]`, `hs[0]` reversed).

    The same rule as `jrnn.steps.masked_step`: padded steps (`valid [T, B]` False) are the identity
    (`a=1, b=0`), a reset step maps every state to `a_t * h_reset + b_t`, and `h0` enters the first map.
    """
    T = xs.shape[0]
    a, b = cell.coefficients(cell.project(xs))  # [T, B, H] each
    ok = None if valid is None else valid[..., None]
    if ok is not None:
        a, b = tree_where(ok, (a, b), (jnp.ones_like(a), jnp.zeros_like(b)))
    if resets is not None:
        reset = resets[..., None] if ok is None else resets[..., None] & ok
        b = jnp.where(reset, a * h_reset.astype(a.dtype)[None] + b, b)
        a = jnp.where(reset, jnp.zeros_like(a), a)
    first = T - 1 if reverse else 0
    b = b.at[first].add(a[first] * h0.astype(a.dtype))
    _, hs = jax.lax.associative_scan(combine, (a, b), reverse=reverse, axis=0)
    hs = hs.astype(cell.state_dtype)
    ys = hs if ok is None else jnp.where(ok, hs, jnp.zeros_like(hs))
    return ys, hs
