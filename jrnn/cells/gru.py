"""GRU cell, Keras gate order `z, r, h`, both `reset_after` variants."""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp

from jrnn.cells.base import MatmulCell, check_bool, check_init_args, pytree_dataclass
from jrnn.initializers import rnn_weights


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class GRU(MatmulCell):
    """Params of a GRU cell (Keras `GRUCell`; `reset_after=True` is PyTorch's `nn.GRUCell`).

    `h' = z * h + (1 - z) * hh`, with `hh = tanh(x W_h + b_h + r * (h U_h + b'_h))` when
    `reset_after` (the reset gate applied after the recurrent matmul, as cuDNN and PyTorch do), and
    `hh = tanh(x W_h + b_h + (r * h) U_h)` otherwise.

    Attributes:
      kernel: `[I, 3H]`, columns `z, r, h`.
      recurrent_kernel: `[H, 3H]`.
      bias: `[2, 3H]` (row 0 input bias, row 1 recurrent bias) when `reset_after`, else `[3H]`; or None.
      reset_after: static.
    """

    kernel: jax.Array
    recurrent_kernel: jax.Array
    bias: Optional[jax.Array]
    reset_after: bool = dataclasses.field(default=True, metadata=dict(static=True))

    gates = 3

    def check_settings(self) -> None:
        # A static setting: a plain bool (np.bool_ becomes one), so that jit caches one entry per value.
        object.__setattr__(self, "reset_after", check_bool("reset_after", self.reset_after))

    def describe(self) -> str:
        return f"GRU(reset_after={self.reset_after})"

    def bias_layout(self) -> tuple:
        """`[2, 3H]` (input and recurrent bias) with `reset_after`, else `[3H]`."""
        return (2, ("H", 3)) if self.reset_after else (("H", 3),)

    @classmethod
    def init(cls, key: jax.Array, input_size: int, hidden_size: int, *, reset_after: bool = True,
             use_bias: bool = True, initializer: str = "keras", dtype=jnp.float32) -> GRU:
        """Makes params: Keras' initializers by default, `initializer="pytorch"` for U(+-1/sqrt(H))."""
        input_size, hidden_size, dtype = check_init_args(key, input_size, hidden_size, initializer, dtype)
        reset_after = check_bool("reset_after", reset_after)
        use_bias = check_bool("use_bias", use_bias)
        bias_shape = ((2, 3 * hidden_size) if reset_after else (3 * hidden_size,)) if use_bias else None
        kernel, recurrent, bias = rnn_weights(
            key, input_size, hidden_size, 3, bias_shape, initializer, dtype)
        return cls(kernel, recurrent, bias, reset_after)

    @property
    def fused(self) -> bool:
        return self.reset_after

    @property
    def recurrent_bias(self):
        return self.bias[1] if self.bias is not None and self.reset_after else None

    @property
    def input_bias(self):
        if self.bias is None or not self.reset_after:
            return self.bias
        return self.bias[0]

    def recur(self, gx: jax.Array, h: jax.Array, rec_mask=None) -> tuple[jax.Array, jax.Array]:
        """One step from `gx [..., 3H]` and `h [..., H]`; returns `(h', h')`.

        `rec_mask [..., H]` (recurrent dropout) scales `h` where it enters the recurrent matmuls; the
        interpolation `z * h` uses the unmasked state.
        """
        if self.reset_after:
            return super().recur(gx, h, rec_mask)
        hm = self.masked(h, rec_mask)
        H = self.hidden_size
        zr = jax.nn.sigmoid(gx[..., :2 * H] + hm @ self.recurrent_kernel[:, :2 * H])
        z, r = zr[..., :H], zr[..., H:]
        cand = jnp.tanh(gx[..., 2 * H:] + (r * hm) @ self.recurrent_kernel[:, 2 * H:])
        return self._mix(z, h, cand)

    def activate(self, gx: jax.Array, inner: jax.Array, h: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The `reset_after` step after the recurrent matmul `inner [..., 3H]` (recurrent bias included)."""
        xz, xr, xh = jnp.split(gx, 3, axis=-1)
        hz, hr, hh = jnp.split(inner, 3, axis=-1)
        z = jax.nn.sigmoid(xz + hz)
        r = jax.nn.sigmoid(xr + hr)
        return self._mix(z, h, jnp.tanh(xh + r * hh))

    def _mix(self, z, h, cand):
        h_new = (z * h.astype(self.dtype) + (1 - z) * cand).astype(self.state_dtype)
        return h_new, h_new
