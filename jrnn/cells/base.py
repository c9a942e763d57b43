"""What the built-in cells share: argument checks for `init`, and `MatmulCell`, the base of the cells
with a recurrent matmul (SimpleRNN, LSTM, GRU)."""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jrnn.cell import Cell, lift
from jrnn.initializers import INITIALIZERS


def check_positive_int(name: str, value) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive int; got {value!r}")
    return int(value)


def check_choice(name: str, value, choices) -> str:
    if value not in choices:
        raise ValueError(f"Unknown `{name}` {value!r}; expected one of {tuple(choices)}")
    return value


def check_init_args(input_size, hidden_size, initializer, dtype):
    """Validates the arguments every `init` takes; returns `(input_size, hidden_size, dtype)`."""
    input_size = check_positive_int("input_size", input_size)
    hidden_size = check_positive_int("hidden_size", hidden_size)
    check_choice("initializer", initializer, INITIALIZERS)
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"`dtype` must be a floating dtype; got {dtype}")
    return input_size, hidden_size, dtype


class MatmulCell(Cell):
    """Cells with `kernel [I, G*H]`, `recurrent_kernel [H, G*H]` and `bias`: sizes and dtype read off the
    arrays, `project(x) = x @ kernel + input_bias`, recurrent dropout where `hidden(h)` enters the matmul."""

    gates: ClassVar[int] = 1  # number of gate blocks G
    fused: ClassVar[bool] = True
    recurrent_dropout: ClassVar[bool] = True

    @property
    def input_size(self) -> int:
        return self.kernel.shape[-2]

    @property
    def hidden_size(self) -> int:
        return self.recurrent_kernel.shape[-2]

    @property
    def dtype(self):
        return self.kernel.dtype

    @property
    def input_bias(self):
        return self.bias

    def project(self, x: jax.Array) -> jax.Array:
        """`x [..., I] -> gx [..., G*H]`: `x @ kernel` plus the input bias."""
        gx = x.astype(self.dtype) @ self.kernel
        bias = self.input_bias
        return gx if bias is None else gx + lift(bias, gx.ndim)
