"""The loop over time for one cell, on flat time-major arrays: `xs [T, B, I]`, every state leaf `[B, F]`.

The loop runs in chunks of `k` steps (`jrnn.steps`): each chunk projects its inputs with one matrix
product of `k*B` rows, then takes its `k` recurrent steps unrolled on static slices; an outer `lax.scan`
walks the chunks, and a last chunk of `T mod k` steps runs after it (before it, in reverse). `k = 1` is a
plain scan, `k = T` a Python loop over every step. `jrnn.policy` picks the derivative and the scan.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jrnn import policy
from jrnn.derivative import run_fused
from jrnn.linear_scan import run_chunked, run_parallel
from jrnn.steps import scan_cell, walk

State = Any


class Masks(NamedTuple):
    """What varies per sequence: all optional, all flat over the batch `B`.

    valid: `[T, B]` bool, False at padded steps (`t >= length`).
    resets: `[T, B]` bool, reset the state to `h_reset` before processing step `t` (already shifted
      by one step for a reverse run, see `jrnn.layers.run`).
    h_reset: the state that `resets` restores.
    in_mask: `[B, I]` scaled dropout mask on the inputs, the same at every step.
    rec_mask: `[B, Hh]` scaled dropout mask on the state entering the recurrent matmul.
    """

    valid: Optional[jax.Array] = None
    resets: Optional[jax.Array] = None
    h_reset: Optional[State] = None
    in_mask: Optional[jax.Array] = None
    rec_mask: Optional[jax.Array] = None


def valid_steps(lengths: jax.Array, T: int, offset=0) -> jax.Array:
    """Bool `[T, B]`: True at the steps `offset + t < lengths[b]` (time-major `jrnn.sequence_mask`;
    `offset` the first step's index in the whole sequence, for a block of it)."""
    return (jnp.arange(T, dtype=jnp.int32) + offset)[:, None] < lengths[None, :]


def run_cell(cell, xs: jax.Array, h0: State, *, k: int, reverse: bool, masks: Optional[Masks] = None,
             remat: Optional[int] = None, mode: str = "auto", states: bool = False,
             axis_name: Optional[str] = None) -> tuple[jax.Array, Any]:
    """Runs `cell` over `xs [T, B, I]` from `h0`; returns `(ys [T, B, F], h_T)`, `ys` after `readout`;
    with `states`, `(ys, hs)` instead, `hs` the state after each step (`[T, B, F]` leaves; at a masked
    step the state it keeps).

    With `remat=c`, the steps run in segments of `c` under `jax.checkpoint`: the backward pass keeps only
    the state at segment boundaries and recomputes each segment (sqrt(T) memory for `c ~ sqrt(T)`), at
    the cost of a second forward pass. With `axis_name` (linear cells), `xs` is this device's block of a
    sequence split over that mesh axis (`jrnn.linear_scan.across_devices`).
    """
    masks = Masks() if masks is None else masks
    T = xs.shape[0]
    if T == 0:
        ys = jnp.zeros((0, xs.shape[1], cell.output_size), cell.output_dtype)
        return ys, (jax.tree.map(lambda a: a[None][:0], h0) if states else h0)
    x_in = xs if masks.in_mask is None else xs * masks.in_mask.astype(xs.dtype)[None]
    scan = policy.linear_scan(cell, mode, T, across_devices=axis_name is not None)
    if scan is not None:
        run = run_parallel if scan == "parallel" else run_chunked
        ys, hs, h = run(cell, x_in, h0, reverse=reverse, valid=masks.valid, resets=masks.resets,
                        h_reset=masks.h_reset, axis_name=axis_name)
    else:
        if policy.use_derivative(cell, resets=masks.resets, rec_mask=masks.rec_mask):
            def segment(h, x, ok, _):
                ys, h = run_fused(cell, x, h, k=k, reverse=reverse, valid=ok, states=states)
                return h, ys
        else:
            def segment(h, x, ok, reset):
                return scan_cell(cell, x, h, k=k, reverse=reverse, valid=ok, resets=reset,
                                 h_reset=masks.h_reset, rec_mask=masks.rec_mask, states=states)
        seqs = (x_in, masks.valid, masks.resets)
        if remat is None or remat >= T:
            h, ys = segment(h0, *seqs)
        else:
            h, ys = walk(jax.checkpoint(segment), h0, seqs, remat, reverse)
        ys, hs = ys if states else (ys, None)
    if cell.has_readout:  # a readout from the states and inputs of all steps at once
        ys = cell.readout(ys, x_in)
        if masks.valid is not None:
            ys = jnp.where(masks.valid[..., None], ys, jnp.zeros_like(ys))
    return ys, (hs if states else h)
