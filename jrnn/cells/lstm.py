"""LSTM cell, Keras gate order `i, f, c, o`, with PyTorch's optional output projection (`proj_size`)."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jrnn.cells.base import MatmulCell, check_bool, check_init_args, pytree_dataclass
from jrnn.initializers import glorot_uniform, rnn_weights, uniform


class LSTMState(NamedTuple):
    """The LSTM state: hidden `h [..., H]` (`[..., P]` with a projection) and cell `c [..., H]`."""

    h: jax.Array
    c: jax.Array


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class LSTM(MatmulCell):
    """Params of an LSTM cell (Keras `LSTMCell`, PyTorch `nn.LSTMCell` with `b_ih + b_hh` summed), with an
    optional output projection (PyTorch's `nn.LSTM(proj_size=P)`, Sak et al., 2014):

        i, f, g, o = split(x @ kernel + h @ recurrent_kernel + bias)        # each [..., H]
        c' = sigmoid(f) * c + sigmoid(i) * tanh(g)
        h' = sigmoid(o) * tanh(c')                    without a projection:  h' [..., H]
        h' = (sigmoid(o) * tanh(c')) @ projection     with one:              h' [..., P]

    Attributes:
      kernel: `[I, 4H]`, columns `i, f, c, o`.
      recurrent_kernel: `[H, 4H]`, or `[P, 4H]` with a projection.
      bias: `[4H]`, or None.
      projection: `[H, P]` (PyTorch's `weight_hr.T`), or None (the default: no projection).

    The state is `LSTMState(h [..., P or H], c [..., H])`; the output is `h'`, `output_size` P or H.
    """

    kernel: jax.Array
    recurrent_kernel: jax.Array
    bias: Optional[jax.Array]
    projection: Optional[jax.Array] = None

    gates = 4
    additive = True  # `activate` depends on `gx + z` only
    optional_fields = ("bias", "projection")

    @property
    def fused(self) -> bool:
        """Declared from the static structure (whether `projection` is None is in the treedef, so it is
        fixed under jit), as the GRU declares it from `reset_after`. A plain LSTM is `fused`: its step is
        `activate(gx + h @ recurrent_kernel)`, which trains by jrnn's own derivative. With a projection
        the step ends in a matmul by a weight that derivative does not model: plain autodiff of the loop.
        (One class rather than a second one returned by `init`: PyTorch's `nn.LSTM` holds both, and
        `from_torch`, `save` and `isinstance(p, jrnn.LSTM)` stay one case.)"""
        return self.projection is None

    def layout(self) -> tuple:
        """With a projection the recurrent kernel has `P` rows, and `projection` is `[H, P]`."""
        if self.projection is None:
            return super().layout()
        return (("recurrent_kernel", ("P", ("H", 4))), ("kernel", ("I", ("H", 4))),
                ("bias", (("H", 4),)), ("projection", ("H", "P")))

    @classmethod
    def init(cls, key: jax.Array, input_size: int, hidden_size: int, *, use_bias: bool = True,
             unit_forget_bias: bool = True, proj_size: Optional[int] = None, initializer: str = "keras",
             dtype=jnp.float32) -> LSTM:
        """Makes params.

        With `initializer="keras"` and `unit_forget_bias`, the forget-gate bias starts at 1 (Jozefowicz
        et al., 2015: the cell remembers by default early in training), the other biases at 0. With
        `initializer="pytorch"` every array is U(+-1/sqrt(H)) and `unit_forget_bias` is ignored.

        `proj_size=P` (a positive int; None or 0: none) adds `projection [H, P]`: the state's `h` and the
        output are `[..., P]` and `recurrent_kernel` is `[P, 4H]`. The projection starts glorot-uniform
        with "keras" (Keras has no projection: its kernels' default), U(+-1/sqrt(H)) with "pytorch".
        """
        input_size, hidden_size, dtype = check_init_args(key, input_size, hidden_size, initializer, dtype)
        use_bias = check_bool("use_bias", use_bias)
        unit_forget_bias = check_bool("unit_forget_bias", unit_forget_bias)
        proj_size = check_proj_size(proj_size)
        if proj_size:  # the plain LSTM keeps its key use (and so its values) unchanged
            key, k_proj = jax.random.split(key)
        kernel, recurrent, bias = rnn_weights(
            key, input_size, hidden_size, 4, (4 * hidden_size,) if use_bias else None, initializer, dtype,
            recurrent_rows=proj_size or None)
        if bias is not None and initializer == "keras" and unit_forget_bias:
            bias = bias.at[hidden_size:2 * hidden_size].set(1)
        if not proj_size:
            return cls(kernel, recurrent, bias)
        shape = (hidden_size, proj_size)
        projection = (glorot_uniform(k_proj, shape, dtype) if initializer == "keras"
                      else uniform(k_proj, shape, dtype, 1.0 / hidden_size**0.5))
        return cls(kernel, recurrent, bias, projection)

    @property
    def hidden_size(self) -> int:
        """`H`, the width of `c` (and of `h` without a projection)."""
        return self.recurrent_kernel.shape[-1] // 4

    @property
    def proj_size(self) -> int:
        """`P`, the width of `h` and of the output, with a projection; 0 without (as PyTorch)."""
        return 0 if self.projection is None else self.projection.shape[-1]

    @property
    def output_size(self) -> int:
        return self.proj_size or self.hidden_size

    def zero_state(self, batch_shape: tuple[int, ...] = ()) -> LSTMState:
        # two arrays, so the state can be donated to a jit
        return LSTMState(jnp.zeros((*batch_shape, self.output_size), self.state_dtype),
                         jnp.zeros((*batch_shape, self.hidden_size), self.state_dtype))

    def hidden(self, state: LSTMState) -> jax.Array:
        return state.h

    def recur(self, gx: jax.Array, state: LSTMState,
              rec_mask: Optional[jax.Array] = None) -> tuple[jax.Array, LSTMState]:
        """One step from `gx [..., 4H]`; returns `(h', LSTMState(h', c'))`, `h'` projected when there is
        a `projection`."""
        if self.projection is None:
            return super().recur(gx, state, rec_mask)
        m, c_new = self._gates(gx + self.recurrent(state, rec_mask), state.c)
        h_new = (m @ self.projection).astype(self.state_dtype)
        return h_new, LSTMState(h_new, c_new.astype(self.state_dtype))

    def activate(self, gx: jax.Array, z: Optional[jax.Array],
                 state: LSTMState) -> tuple[jax.Array, LSTMState]:
        """The step after the recurrent matmul `z [..., 4H]` (None: already added to `gx`);
        returns `(h', LSTMState(h', c'))` (no projection: `fused` cells only)."""
        h_new, c_new = self._gates(gx if z is None else gx + z, state.c)
        h_new, c_new = h_new.astype(self.state_dtype), c_new.astype(self.state_dtype)
        return h_new, LSTMState(h_new, c_new)

    def _gates(self, u: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
        """`(sigmoid(o) * tanh(c'), c')` in the compute dtype from the pre-activations `u [..., 4H]`."""
        i, f, g, o = jnp.split(u, 4, axis=-1)
        c_new = jax.nn.sigmoid(f) * c.astype(self.dtype) + jax.nn.sigmoid(i) * jnp.tanh(g)
        return jax.nn.sigmoid(o) * jnp.tanh(c_new), c_new


def check_proj_size(value) -> int:
    """`proj_size`: None or 0 (no projection, returned as 0) or a positive int."""
    if value is None:
        return 0
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"`proj_size` must be None, 0 or a positive int; got {value!r}")
    return int(value)
