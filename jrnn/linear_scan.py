"""The parallel and chunked forms of `linear` cells: every step is the affine map `h -> a_t * h + b_t`,
and maps compose associatively. `run_parallel` composes them with `jax.lax.associative_scan` (O(log T)
depth); `run_chunked` splits time into `n` chunks of `C` steps and runs three short loops of wide steps
instead of one long loop of narrow ones (about `3 sqrt(T)` iterations instead of `T`)."""

from __future__ import annotations

import functools
import math
from typing import Optional

import jax
import jax.numpy as jnp

from jrnn.cell import lift
from jrnn.steps import tree_where


def combine(earlier, later):
    """The associative combine of two affine maps `h -> a*h + b`: first `earlier`, then `later`."""
    a1, b1 = earlier
    a2, b2 = later
    return a1 * a2, a2 * b1 + b2


def affine_steps(cell, xs: jax.Array, valid: Optional[jax.Array], resets: Optional[jax.Array],
          h_reset: Optional[jax.Array]) -> tuple[jax.Array, jax.Array]:
    """The maps `(a, b)`, each `[..., B, H]`, of `xs [..., B, I]` (any leading time axes), under the rule of
    `jrnn.steps.masked_step`: a skipped step (`valid [..., B]` False) is the identity (`a=1, b=0`), and a
    reset step maps every state to `a_t * h_reset + b_t`."""
    a, b = cell.coefficients(cell.project(xs))
    ok = None if valid is None else valid[..., None]
    if ok is not None:
        a, b = tree_where(ok, (a, b), (jnp.ones_like(a), jnp.zeros_like(b)))
    if resets is not None:
        reset = resets[..., None] if ok is None else resets[..., None] & ok
        b = jnp.where(reset, a * lift(h_reset.astype(a.dtype), a.ndim) + b, b)
        a = jnp.where(reset, jnp.zeros_like(a), a)
    return a, b


def run_parallel(cell, xs: jax.Array, h0: jax.Array, *, reverse: bool, valid: Optional[jax.Array] = None,
                 resets: Optional[jax.Array] = None, h_reset: Optional[jax.Array] = None,
                 axis_name: Optional[str] = None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`linear` `cell` over `xs [T, B, I]` (inputs already dropped out): `(ys [T, B, H], hs [T, B, H], h_T)`,
    `hs` the state after each step (kept at skipped steps) and `h_T` the final one. `h0` enters the first
    map. With `axis_name`, `xs` is this device's block of a sequence split over that mesh axis (see
    `across_devices`): `h_T` is then the whole sequence's."""
    T = xs.shape[0]
    a, b = affine_steps(cell, xs, valid, resets, h_reset)  # [T, B, H] each
    first, last = (T - 1, 0) if reverse else (0, T - 1)
    if axis_name is None:
        b = b.at[first].add(a[first] * h0.astype(a.dtype))
        _, hs = jax.lax.associative_scan(combine, (a, b), reverse=reverse, axis=0)
        h_T = hs[last]
    else:  # every prefix map, then the state entering this block through them
        A, Bp = jax.lax.associative_scan(combine, (a, b), reverse=reverse, axis=0)
        h_in, h_T = across_devices(A[last], Bp[last], h0.astype(a.dtype), reverse, axis_name)
        hs = Bp + A * h_in[None]
    hs = hs.astype(cell.state_dtype)
    ys = hs if valid is None else jnp.where(valid[..., None], hs, jnp.zeros_like(hs))
    return ys, hs, h_T.astype(cell.state_dtype)


def chunk_size(T: int) -> int:
    """`C` for `run_chunked`: the power of two nearest `sqrt(T)` (measured: bench/parallel.py)."""
    return max(1, 2 ** round(math.log2(max(T, 1)) / 2))


def run_chunked(cell, xs: jax.Array, h0: jax.Array, *, reverse: bool, valid: Optional[jax.Array] = None,
                resets: Optional[jax.Array] = None, h_reset: Optional[jax.Array] = None,
                chunk: Optional[int] = None, axis_name: Optional[str] = None,
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`run_parallel`'s contract, computed in chunks of `C` steps (`chunk`, default `chunk_size(T)`).

    Time is padded with identity steps to `n * C` and laid out `[C, n, B, .]` (step `t = i*C + j` at
    `[j, i]`) before the projection, so that the loops below walk the chunks' steps together:

    1. over the `C` steps of every chunk at once, from a zero state: each chunk's map, `(A_i, B_i)`;
    2. over the `n` chunks: the state entering each one, `h_i = A_{i-1} h_{i-1} + B_{i-1}` from `h0`;
    3. over the `C` steps again, from the `h_i`: every state, `[C, n, B, H]`.

    About `2C + n` iterations of `[n, B, H]` (or `[B, H]`) elementwise work instead of `T` of `[B, H]`.
    """
    T, B = xs.shape[:2]
    C = min(chunk or chunk_size(T), T)
    n = -(-T // C)

    def lay(a, fill):  # [T, ...] -> [C, n, ...], padded with `fill`
        if n * C > T:
            a = jnp.concatenate([a, jnp.full((n * C - T, *a.shape[1:]), fill, a.dtype)])
        return jnp.swapaxes(a.reshape(n, C, *a.shape[1:]), 0, 1)

    ok = None if valid is None and n * C == T else lay(jnp.ones((T, B), bool) if valid is None else valid,
                                                        False)  # padding to `n * C` steps is skipped
    a, b = affine_steps(cell, lay(xs, 0), ok, None if resets is None else lay(resets, False), h_reset)

    h0 = h0.astype(a.dtype)
    if axis_name is not None:  # this block's map, then the state entering it
        (A, Bc), _ = jax.lax.scan(_compose, _identity(a[0]), (a, b), reverse=reverse)  # each chunk's
        (A, Bc), _ = jax.lax.scan(_compose, _identity(A[0]), (A, Bc), reverse=reverse)  # the block's
        h0, h_T = across_devices(A, Bc, h0, reverse, axis_name)
    hs = affine_chunks(a, b, h0, reverse)  # [C, n, B, H]
    hs = jnp.swapaxes(hs, 0, 1).reshape(n * C, B, -1)[:T].astype(cell.state_dtype)
    ys = hs if valid is None else jnp.where(valid[..., None], hs, jnp.zeros_like(hs))
    return ys, hs, (hs[0 if reverse else T - 1] if axis_name is None else h_T.astype(cell.state_dtype))


def across_devices(A: jax.Array, B: jax.Array, h0: jax.Array, reverse: bool, axis_name: str):
    """Sequence parallelism: this device holds one block of the sequence, whose steps compose to the map
    `h -> A * h + B` (`[B, H]` each). The maps of all devices along `axis_name` are gathered and folded
    in order from `h0` (from the last device when `reverse`): `(h_in, h_T)`, the state entering this
    device's block and the whole sequence's final one, the same on every device. The gather is one
    `psum` of `2 x [D, B, H]` (each device's map in its own row, zeros elsewhere): unlike `all_gather`,
    its result is known to be the same on every device, so `h_T` may leave `shard_map` replicated."""
    D, i = jax.lax.axis_size(axis_name), jax.lax.axis_index(axis_name)
    rows = lambda a: jnp.zeros((D, *a.shape), a.dtype).at[i].set(a)  # noqa: E731
    As, Bs = jax.lax.psum((rows(A), rows(B)), axis_name)  # [D, B, H] each

    def enter(h, AB):
        return AB[0] * h + AB[1], h

    h_T, starts = jax.lax.scan(enter, h0, (As, Bs), reverse=reverse)
    return starts[i], h_T


def _compose(acc, ab):
    """The map `(A, B)`, then the step `(a, b)`: `(a A, a B + b)`."""
    return (ab[0] * acc[0], ab[0] * acc[1] + ab[1]), None


def _identity(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    return jnp.ones_like(a), jnp.zeros_like(a)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3,))
def affine_chunks(a: jax.Array, b: jax.Array, h0: jax.Array, reverse: bool) -> jax.Array:
    """Every state of the steps `h -> a * h + b` laid out `[C, n, B, H]` (step `t = i*C + j` at `[j, i]`)
    from `h0 [B, H]`, in three loops:

    1. over the `C` steps of every chunk at once, from a zero state: each chunk's map, `(A_i, B_i)`;
    2. over the `n` chunks: the state entering each one, `h_i = A_{i-1} h_{i-1} + B_{i-1}` from `h0`;
    3. over the `C` steps again, from the `h_i`: every state.

    Its derivative is the same scan again: `dh_t = a_t dh_{t-1} + (da_t h_{t-1} + db_t)`, linear in the
    tangents, so forward mode works and `grad` is its transpose (three reverse loops, nothing saved per
    step but the states themselves).
    """
    return _affine_chunks(a, b, h0, reverse)[0]


def _affine_chunks(a, b, h0, reverse):
    def enter(h, AB):  # the state entering a chunk, then the one leaving it
        return AB[0] * h + AB[1], h

    def walk(h, ab):
        h = ab[0] * h + ab[1]
        return h, h

    (A, Bc), _ = jax.lax.scan(_compose, _identity(a[0]), (a, b), reverse=reverse)  # 1. [n, B, H] each
    _, starts = jax.lax.scan(enter, h0, (A, Bc), reverse=reverse)  # 2. [n, B, H]
    _, hs = jax.lax.scan(walk, starts, (a, b), reverse=reverse)  # 3. [C, n, B, H]
    return hs, starts


@affine_chunks.defjvp
def _affine_chunks_jvp(reverse, primals, tangents):
    a, b, h0 = primals
    da, db, dh0 = tangents
    hs, starts = _affine_chunks(a, b, h0, reverse)
    # The state before each step: the chunk's entering state at its first step, else the step before.
    prev = (jnp.concatenate([hs[1:], starts[None]]) if reverse else jnp.concatenate([starts[None], hs[:-1]]))
    return hs, affine_chunks(a, da * prev + db, dh0, reverse)
