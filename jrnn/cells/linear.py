"""What the linear-recurrence cells share: `h_t = a_t * h_{t-1} + b_t`, with `a`, `b` from `x_t` only.

Such a cell declares `linear` and defines `coefficients(gx) -> (a, b)`; `Cell.recur` follows, and so
do the parallel and chunked forms (`rnn_apply(..., mode="parallel")`, `"chunked"`, `jrnn/linear_scan.py`).
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp

from jrnn.cell import Cell, lift
from jrnn.cells.base import check_bool, check_fields, check_init_args
from jrnn.initializers import glorot_uniform, uniform


def g(x: jax.Array) -> jax.Array:
    """The minGRU/minLSTM paper's positive activation: `x + 0.5` for `x >= 0`, else `sigmoid(x)`.

    It keeps the candidate state positive (the paper's log-space form needs that) and is continuous
    with a continuous first derivative at 0.
    """
    return jnp.where(x >= 0, x + 0.5, jax.nn.sigmoid(jnp.minimum(x, 0)))


class MinCell(Cell):
    """MinGRU and MinLSTM: `kernel [I, G*H]` and `bias [G*H]`, a linear recurrence (no recurrent matmul)."""

    gates: ClassVar[int] = 1
    linear: ClassVar[bool] = True

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raises `TypeError`/`ValueError` naming the field when the params do not fit together: run
        where the params are built (their constructor, `dataclasses.replace`, `jrnn.load`)."""
        G = self.gates
        check_fields(self, type(self).__name__, (("kernel", ("I", ("H", G))), ("bias", (("H", G),))),
                     optional=("bias",))

    @classmethod
    def init(cls, key: jax.Array, input_size: int, hidden_size: int, *, use_bias: bool = True,
             initializer: str = "keras", dtype=jnp.float32):
        """Makes params: glorot-uniform kernel and zero bias, or `initializer="pytorch"` (nn.Linear's
        U(+-1/sqrt(I)))."""
        input_size, hidden_size, dtype = check_init_args(key, input_size, hidden_size, initializer, dtype)
        use_bias = check_bool("use_bias", use_bias)
        k1, k2 = jax.random.split(key)
        shape = (input_size, cls.gates * hidden_size)
        if initializer == "keras":
            return cls(glorot_uniform(k1, shape, dtype), jnp.zeros(shape[1:], dtype) if use_bias else None)
        bound = 1.0 / input_size**0.5
        bias = uniform(k2, shape[1:], dtype, bound) if use_bias else None
        return cls(uniform(k1, shape, dtype, bound), bias)

    @property
    def hidden_size(self) -> int:
        return self.kernel.shape[-1] // self.gates

    @property
    def input_size(self) -> int:
        return self.kernel.shape[-2]

    @property
    def dtype(self):
        return self.kernel.dtype

    def project(self, x: jax.Array) -> jax.Array:
        """`x [..., I] -> gx [..., G*H]`: `x @ kernel + bias`."""
        gx = x.astype(self.dtype) @ self.kernel
        return gx if self.bias is None else gx + lift(self.bias, gx.ndim)
