"""minLSTM (Feng et al., 2024): input-only forget and input gates, normalised to sum to one."""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp

from jrnn.cells.base import pytree_dataclass
from jrnn.cells.linear import MinCell, g


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class MinLSTM(MinCell):
    """Params of a minLSTM cell: `h' = f' * h + i' * g(h~)` with `f = sigmoid(x W_f + b_f)`,
    `i = sigmoid(x W_i + b_i)`, `f' = f / (f + i)`, `i' = i / (f + i)`, `h~ = x W_h + b_h`.

    Attributes:
      kernel: `[I, 3H]`, columns `f, i, h`.
      bias: `[3H]`, or None.
    """

    kernel: jax.Array
    bias: Optional[jax.Array]

    gates = 3

    def coefficients(self, gx: jax.Array) -> tuple[jax.Array, jax.Array]:
        """`a = f'`, `b = i' * g(h~)`, the normalised gates in the paper's log-space form:
        `f' = sigmoid(log f - log i) = sigmoid(softplus(-k_i) - softplus(-k_f))`."""
        kf, ki, h_tilde = jnp.split(gx, 3, axis=-1)
        d = jax.nn.softplus(-ki) - jax.nn.softplus(-kf)  # log f - log i
        return jax.nn.sigmoid(d), jax.nn.sigmoid(-d) * g(h_tilde)
