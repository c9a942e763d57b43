"""minGRU (Feng et al., 2024, "Were RNNs All We Needed?"): gates from the input only."""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp

from jrnn.cells.base import pytree_dataclass
from jrnn.cells.linear import MinCell, g


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class MinGRU(MinCell):
    """Params of a minGRU cell: `h' = (1 - z) * h + z * g(h~)`, `z = sigmoid(x W_z + b_z)`,
    `h~ = x W_h + b_h`, with the paper's positive `g` (its log-space form).

    Attributes:
      kernel: `[I, 2H]`, columns `z, h`.
      bias: `[2H]`, or None.
    """

    kernel: jax.Array
    bias: Optional[jax.Array]

    gates = 2

    def coefficients(self, gx: jax.Array) -> tuple[jax.Array, jax.Array]:
        """`a = 1 - z = sigmoid(-k)`, `b = z * g(h~)`; each `[..., H]`."""
        k, h_tilde = jnp.split(gx, 2, axis=-1)
        return jax.nn.sigmoid(-k), jax.nn.sigmoid(k) * g(h_tilde)
