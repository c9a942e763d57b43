"""What the linear-recurrence cells share: `h_t = a_t * h_{t-1} + b_t`, with `a`, `b` from `x_t` only.

Such a cell defines `coefficients(gx) -> (a, b)`; the per-step `recur` follows, and so does the
parallel form: `rnn_apply(..., mode="parallel")` composes the steps with `jax.lax.associative_scan`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jrnn.cells.base import CellBase


def g(x: jax.Array) -> jax.Array:
    """The minGRU/minLSTM paper's positive activation: `x + 0.5` for `x >= 0`, else `sigmoid(x)`.

    It keeps the candidate state positive (the paper's log-space form needs that) and is continuous
    with a continuous first derivative at 0.
    """
    return jnp.where(x >= 0, x + 0.5, jax.nn.sigmoid(jnp.minimum(x, 0)))


def combine(earlier, later):
    """The associative combine of two affine maps `h -> a*h + b`: first `earlier`, then `later`."""
    a1, b1 = earlier
    a2, b2 = later
    return a1 * a2, a2 * b1 + b2


class LinearCell(CellBase):
    """Base of cells whose recurrence is linear in the state (no recurrent matmul)."""

    linear = True

    @property
    def hidden_size(self) -> int:
        return self.kernel.shape[-1] // self.gates

    @property
    def output_size(self) -> int:
        return self.hidden_size

    def coefficients(self, gx: jax.Array) -> tuple[jax.Array, jax.Array]:
        raise NotImplementedError

    def recur(self, gx: jax.Array, h: jax.Array, rec_mask=None) -> tuple[jax.Array, jax.Array]:
        """One step `h' = a * h + b` from `gx [..., G*H]`; returns `(h', h')`. No recurrent dropout."""
        a, b = self.coefficients(gx)
        h_new = (a * h.astype(a.dtype) + b).astype(self.state_dtype)
        return h_new, h_new
