"""minGRU (Feng et al., 2024, "Were RNNs All We Needed?"): gates from the input only."""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp

from jrnn.cells.base import check_init_args
from jrnn.cells.linear import LinearCell, g
from jrnn.initializers import glorot_uniform, uniform


def linear_weights(key, input_size, hidden_size, gates, use_bias, initializer, dtype):
    """`(kernel [I, G*H], bias [G*H] or None)`: glorot-uniform and zeros, or PyTorch's U(+-1/sqrt(I))."""
    k1, k2 = jax.random.split(key)
    shape = (input_size, gates * hidden_size)
    if initializer == "keras":
        return glorot_uniform(k1, shape, dtype), (jnp.zeros(shape[1:], dtype) if use_bias else None)
    bound = 1.0 / input_size**0.5  # nn.Linear's default
    return uniform(k1, shape, dtype, bound), (uniform(k2, shape[1:], dtype, bound) if use_bias else None)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MinGRU(LinearCell):
    """Params of a minGRU cell: `h' = (1 - z) * h + z * g(h~)`, `z = sigmoid(x W_z + b_z)`,
    `h~ = x W_h + b_h`, with the paper's positive `g` (its log-space form).

    Attributes:
      kernel: `[I, 2H]`, columns `z, h`.
      bias: `[2H]`, or None.
    """

    kernel: jax.Array
    bias: Optional[jax.Array]

    gates = 2

    @classmethod
    def init(cls, key: jax.Array, input_size: int, hidden_size: int, *, use_bias: bool = True,
             initializer: str = "keras", dtype=jnp.float32) -> MinGRU:
        """Makes params: glorot-uniform kernel and zero bias, or `initializer="pytorch"` (nn.Linear's)."""
        input_size, hidden_size, dtype = check_init_args(input_size, hidden_size, initializer, dtype)
        return cls(*linear_weights(key, input_size, hidden_size, 2, use_bias, initializer, dtype))

    def coefficients(self, gx: jax.Array) -> tuple[jax.Array, jax.Array]:
        """`a = 1 - z = sigmoid(-k)`, `b = z * g(h~)`; each `[..., H]`."""
        k, h_tilde = jnp.split(gx, 2, axis=-1)
        return jax.nn.sigmoid(-k), jax.nn.sigmoid(k) * g(h_tilde)
