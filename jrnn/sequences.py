"""Helpers for padded sequences that every training loop needs: masks, masked means, last outputs."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp


def _check(ys, lengths, time_major):
    if ys.ndim < 2:
        raise ValueError(f"`ys` must have shape [..., T, F] (or [T, ..., F]); got shape {tuple(ys.shape)}")
    batch = ys.shape[1:-1] if time_major else ys.shape[:-2]
    if lengths is not None:
        if not jnp.issubdtype(jnp.asarray(lengths).dtype, jnp.integer):
            raise TypeError(f"`lengths` must be an integer array; got dtype {jnp.asarray(lengths).dtype}")
        if tuple(jnp.shape(lengths)) != tuple(batch):
            raise ValueError(f"`lengths` must have the batch shape {tuple(batch)}; "
                             f"got shape {tuple(jnp.shape(lengths))}")
    return ys.shape[0] if time_major else ys.shape[-2]


def sequence_mask(lengths: jax.Array, T: int) -> jax.Array:
    """Bool `[..., T]`: True at steps `t < length` (lengths of any batch shape)."""
    lengths = jnp.asarray(lengths)
    return jnp.arange(T).reshape((1,) * lengths.ndim + (T,)) < lengths[..., None]


def masked_mean(ys: jax.Array, lengths: Optional[jax.Array] = None, *, time_major: bool = False) -> jax.Array:
    """Mean over the valid steps of `ys [..., T, F]`: `[..., F]` (zeros for a length-0 sequence)."""
    T = _check(ys, lengths, time_major)
    if lengths is None:
        return ys.mean(axis=0 if time_major else -2)
    mask = sequence_mask(jnp.clip(lengths, 0, T), T)  # [..., T]
    mask = jnp.moveaxis(mask, -1, 0) if time_major else mask
    total = jnp.where(mask[..., None], ys, jnp.zeros_like(ys)).sum(axis=0 if time_major else -2)
    count = jnp.maximum(jnp.clip(lengths, 0, T), 1).astype(ys.dtype)[..., None]
    return total / count


def last_valid(ys: jax.Array, lengths: Optional[jax.Array] = None, *, time_major: bool = False) -> jax.Array:
    """The output at each sequence's last valid step `length - 1`: `[..., F]` (zeros for length 0)."""
    T = _check(ys, lengths, time_major)
    ys = jnp.moveaxis(ys, 0, -2) if time_major else ys
    if lengths is None:
        return ys[..., -1, :]
    lengths = jnp.clip(jnp.asarray(lengths), 0, T)
    idx = jnp.maximum(lengths - 1, 0)[..., None, None]
    idx = jnp.broadcast_to(idx, (*idx.shape[:-1], ys.shape[-1]))
    picked = jnp.take_along_axis(ys, idx, axis=-2)[..., 0, :]
    return jnp.where((lengths > 0)[..., None], picked, jnp.zeros_like(picked))
