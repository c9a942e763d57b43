"""SimpleRNN (Elman) cell: `h' = act(x @ kernel + h @ recurrent_kernel + bias)`."""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp

from jrnn.cells.base import MatmulCell, check_bool, check_choice, check_init_args, pytree_dataclass
from jrnn.initializers import rnn_weights

ACTIVATIONS = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "linear": lambda z: z,
}


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class SimpleRNN(MatmulCell):
    """Params of a SimpleRNN cell (Keras `SimpleRNNCell`, PyTorch `nn.RNNCell`).

    Attributes:
      kernel: `[I, H]`.
      recurrent_kernel: `[H, H]`.
      bias: `[H]`, or None.
      activation: static; one of "tanh", "relu", "sigmoid", "linear".
    """

    kernel: jax.Array
    recurrent_kernel: jax.Array
    bias: Optional[jax.Array]
    activation: str = dataclasses.field(default="tanh", metadata=dict(static=True))

    additive = True  # `activate` depends on `gx + z` only

    def check_settings(self) -> None:
        if not isinstance(self.activation, str):
            raise TypeError(f"`activation` of SimpleRNN must be a name, one of {tuple(ACTIVATIONS)}; "
                            f"got {self.activation!r}")
        check_choice("activation", self.activation, ACTIVATIONS)

    @classmethod
    def init(cls, key: jax.Array, input_size: int, hidden_size: int, *, activation: str = "tanh",
             use_bias: bool = True, initializer: str = "keras", dtype=jnp.float32) -> SimpleRNN:
        """Makes params: Keras' initializers by default, `initializer="pytorch"` for U(+-1/sqrt(H))."""
        input_size, hidden_size, dtype = check_init_args(key, input_size, hidden_size, initializer, dtype)
        check_choice("activation", activation, ACTIVATIONS)
        use_bias = check_bool("use_bias", use_bias)
        kernel, recurrent, bias = rnn_weights(
            key, input_size, hidden_size, 1, (hidden_size,) if use_bias else None, initializer, dtype)
        return cls(kernel, recurrent, bias, activation)

    def activate(self, gx: jax.Array, z: Optional[jax.Array], h: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The step after the recurrent matmul `z [..., H]` (None: already added to `gx`); `(h', h')`."""
        h_new = ACTIVATIONS[self.activation](gx if z is None else gx + z).astype(self.state_dtype)
        return h_new, h_new
