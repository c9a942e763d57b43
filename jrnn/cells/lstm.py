"""LSTM cell, Keras gate order `i, f, c, o`."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from jrnn.cells.base import MatmulCell, check_bool, check_init_args, pytree_dataclass
from jrnn.initializers import rnn_weights


class LSTMState(NamedTuple):
    """The LSTM state: hidden `h [..., H]` and cell `c [..., H]`."""

    h: jax.Array
    c: jax.Array


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class LSTM(MatmulCell):
    """Params of an LSTM cell (Keras `LSTMCell`, PyTorch `nn.LSTMCell` with `b_ih + b_hh` summed).

    Attributes:
      kernel: `[I, 4H]`, columns `i, f, c, o`.
      recurrent_kernel: `[H, 4H]`.
      bias: `[4H]`, or None.
    """

    kernel: jax.Array
    recurrent_kernel: jax.Array
    bias: Optional[jax.Array]

    gates = 4
    additive = True  # `activate` depends on `gx + z` only

    @classmethod
    def init(cls, key: jax.Array, input_size: int, hidden_size: int, *, use_bias: bool = True,
             unit_forget_bias: bool = True, initializer: str = "keras", dtype=jnp.float32) -> LSTM:
        """Makes params.

        With `initializer="keras"` and `unit_forget_bias`, the forget-gate bias starts at 1 (Jozefowicz
        et al., 2015: the cell remembers by default early in training), the other biases at 0. With
        `initializer="pytorch"` every array is U(+-1/sqrt(H)) and `unit_forget_bias` is ignored.
        """
        input_size, hidden_size, dtype = check_init_args(key, input_size, hidden_size, initializer, dtype)
        use_bias = check_bool("use_bias", use_bias)
        unit_forget_bias = check_bool("unit_forget_bias", unit_forget_bias)
        kernel, recurrent, bias = rnn_weights(
            key, input_size, hidden_size, 4, (4 * hidden_size,) if use_bias else None, initializer, dtype)
        if bias is not None and initializer == "keras" and unit_forget_bias:
            bias = bias.at[hidden_size:2 * hidden_size].set(1)
        return cls(kernel, recurrent, bias)

    def zero_state(self, batch_shape: tuple[int, ...] = ()) -> LSTMState:
        shape = (*batch_shape, self.hidden_size)  # two arrays, so the state can be donated to a jit
        return LSTMState(jnp.zeros(shape, self.state_dtype), jnp.zeros(shape, self.state_dtype))

    def hidden(self, state: LSTMState) -> jax.Array:
        return state.h

    def activate(self, gx: jax.Array, z: Optional[jax.Array],
                 state: LSTMState) -> tuple[jax.Array, LSTMState]:
        """The step after the recurrent matmul `z [..., 4H]` (None: already added to `gx`);
        returns `(h', LSTMState(h', c'))`."""
        i, f, g, o = jnp.split(gx if z is None else gx + z, 4, axis=-1)
        c_new = jax.nn.sigmoid(f) * state.c.astype(self.dtype) + jax.nn.sigmoid(i) * jnp.tanh(g)
        h_new = jax.nn.sigmoid(o) * jnp.tanh(c_new)
        h_new, c_new = h_new.astype(self.state_dtype), c_new.astype(self.state_dtype)
        return h_new, LSTMState(h_new, c_new)
