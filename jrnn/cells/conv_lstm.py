"""Convolutional LSTM cell (Shi et al., 2015), Keras' `ConvLSTM1D`/`ConvLSTM2D`/`ConvLSTM3D`: gate order
`i, f, c, o`, channels last.

The loop sees one feature axis, so the cell takes its spatial arrays flat at the cell interface:
`x [..., S*C]`, state leaves `[..., S'*F]` (`S` the input's spatial size, `S'` the output's), and
declares `input_shape = (*spatial, C)`, `output_shape = state_shape = (*spatial', F)`: `jrnn.rnn_apply`
and `jrnn.cell_apply` take `xs [..., T, *spatial, C]` and give `ys [..., T, *spatial', F]` and
`LSTMState(h, c)` with leaves `[..., *spatial', F]`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jrnn.cell import Cell
from jrnn.cells.base import (
    check_bool,
    check_choice,
    check_dtype,
    check_fields,
    check_key,
    check_positive_int,
    pytree_dataclass,
)
from jrnn.cells.lstm import LSTMState
from jrnn.initializers import glorot_uniform, orthogonal

PADDINGS = ("same", "valid")
_LAYOUTS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}


def _ints(name: str, value, rank: int) -> tuple[int, ...]:
    """An int or a tuple of `rank` positive ints, as a tuple (Keras' `standardize_tuple`)."""
    items = (value,) * rank if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else value
    if not isinstance(items, (tuple, list)) or len(items) != rank:
        raise ValueError(f"`{name}` must be a positive int or a tuple of {rank}; got {value!r}")
    try:
        return tuple(check_positive_int(name, v) for v in items)
    except ValueError:
        raise ValueError(f"`{name}` must be a positive int or a tuple of {rank}; got {value!r}") from None


def conv_output_size(size: int, kernel: int, stride: int, dilation: int, padding: str) -> int:
    """The output length of one spatial axis (`lax.conv_general_dilated`'s "SAME" and "VALID")."""
    if padding == "same":
        return -(-size // stride)
    return (size - (kernel - 1) * dilation - 1) // stride + 1


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class ConvLSTM(Cell):
    """Params of a convolutional LSTM cell (Keras' `ConvLSTMCell`, channels last).

    Per step, with `*` an N-D convolution (`strides`, `padding`, `dilation`) and `(*)` the recurrent
    one (stride 1, "same" padding, no dilation, no bias, as Keras):

        i, f, g, o = split(x * kernel + bias + h (*) recurrent_kernel, 4, axis=-1)
        c' = sigmoid(f) c + sigmoid(i) tanh(g);   h' = sigmoid(o) tanh(c')

    Attributes:
      kernel: `[*k, C, 4F]`, output channels `i, f, c, o` (k the kernel size, one per spatial axis).
      recurrent_kernel: `[*k, F, 4F]`.
      bias: `[4F]`, or None.
      spatial_shape: the input's spatial axes, `(W,)` (1D), `(H, W)` (2D) or `(D, H, W)` (3D).
      strides, dilation: tuples of one int per spatial axis (of the input convolution).
      padding: "same" or "valid" (of the input convolution).
    """

    kernel: jax.Array
    recurrent_kernel: jax.Array
    bias: Optional[jax.Array]
    spatial_shape: tuple[int, ...] = dataclasses.field(metadata=dict(static=True))
    strides: tuple[int, ...] = dataclasses.field(default=1, metadata=dict(static=True))
    padding: str = dataclasses.field(default="same", metadata=dict(static=True))
    dilation: tuple[int, ...] = dataclasses.field(default=1, metadata=dict(static=True))

    recurrent_dropout = True  # `recur` applies `rec_mask [..., S'*F]` to h before the recurrent conv

    def __post_init__(self):
        shape = self.spatial_shape
        if not isinstance(shape, (tuple, list)) or not 1 <= len(shape) <= 3:
            raise ValueError(f"`spatial_shape` of ConvLSTM must be a tuple of 1 to 3 positive ints; "
                             f"got {shape!r}")
        rank = len(shape)
        object.__setattr__(self, "spatial_shape", _ints("spatial_shape", shape, rank))
        object.__setattr__(self, "strides", _ints("strides", self.strides, rank))
        object.__setattr__(self, "dilation", _ints("dilation", self.dilation, rank))
        check_choice("padding", self.padding, PADDINGS)
        what = f"ConvLSTM ({rank}D)"
        ks = tuple(f"k{i}" for i in range(rank))
        check_fields(self, what, (("recurrent_kernel", (*ks, "F", ("F", 4))),
                                  ("kernel", (*ks, "C", ("F", 4))),
                                  ("bias", (("F", 4),))), optional=("bias",))
        if hasattr(self.kernel, "shape") and min(self.conv_output_shape, default=1) < 1:
            raise ValueError(f"`kernel` of {what}: a kernel of size {self.kernel_size} (dilation "
                             f"{self.dilation}) does not fit `spatial_shape` {self.spatial_shape} with "
                             f'padding="valid"')

    @classmethod
    def init(cls, key: jax.Array, input_shape: tuple[int, ...], filters: int, kernel_size, *, strides=1,
             padding: str = "same", dilation=1, use_bias: bool = True, unit_forget_bias: bool = True,
             dtype=jnp.float32) -> ConvLSTM:
        """Makes params with Keras' initializers: glorot-uniform `kernel` (fans `prod(k) * C` and
        `prod(k) * 4F`), orthogonal `recurrent_kernel` (as a `[prod(k) * F, 4F]` matrix), zero bias with
        the forget gate's at 1 when `unit_forget_bias` (Jozefowicz et al., 2015).

        Args:
          key: a PRNG key.
          input_shape: one step's input without batch axes, `(W, C)` (1D), `(H, W, C)` (2D) or
            `(D, H, W, C)` (3D).
          filters: `F`, the state's channels.
          kernel_size, strides, dilation: an int, or a tuple of one per spatial axis.
          padding: "same" or "valid", of the input convolution (the recurrent one is always "same").
        """
        check_key(key)
        if not isinstance(input_shape, (tuple, list)) or not 2 <= len(input_shape) <= 4:
            raise ValueError(f"`input_shape` must be (W, C), (H, W, C) or (D, H, W, C); got {input_shape!r}")
        *spatial, channels = (check_positive_int("input_shape", d) for d in input_shape)
        rank = len(spatial)
        filters = check_positive_int("filters", filters)
        ks = _ints("kernel_size", kernel_size, rank)
        check_choice("padding", padding, PADDINGS)
        use_bias = check_bool("use_bias", use_bias)
        unit_forget_bias = check_bool("unit_forget_bias", unit_forget_bias)
        dtype = check_dtype(dtype)
        k1, k2 = jax.random.split(key)
        kernel = glorot_uniform(k1, (*ks, channels, 4 * filters), dtype)
        recurrent = orthogonal(k2, (*ks, filters, 4 * filters), dtype)
        bias = None
        if use_bias:
            bias = jnp.zeros((4 * filters,), dtype)
            if unit_forget_bias:
                bias = bias.at[filters:2 * filters].set(1)
        return cls(kernel, recurrent, bias, tuple(spatial), strides, padding, dilation)

    # --- sizes ------------------------------------------------------------------------------------------
    @property
    def kernel_size(self) -> tuple[int, ...]:
        return tuple(self.kernel.shape[-2 - len(self.spatial_shape):-2])

    @property
    def channels(self) -> int:
        """`C`, the input's channels."""
        return self.kernel.shape[-2]

    @property
    def filters(self) -> int:
        """`F`, the state's channels."""
        return self.recurrent_kernel.shape[-2]

    @property
    def conv_output_shape(self) -> tuple[int, ...]:
        """`spatial'`, the spatial axes of the output and the state."""
        return tuple(conv_output_size(*a, self.padding) for a in zip(
            self.spatial_shape, self.kernel_size, self.strides, self.dilation, strict=True))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (*self.spatial_shape, self.channels)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (*self.conv_output_shape, self.filters)

    @property
    def state_shape(self) -> tuple[int, ...]:
        return self.output_shape

    @property
    def input_size(self) -> int:
        return math.prod(self.input_shape)

    @property
    def hidden_size(self) -> int:
        return math.prod(self.output_shape)

    @property
    def dtype(self):
        return self.kernel.dtype

    # --- the step ---------------------------------------------------------------------------------------
    def zero_state(self, batch_shape: tuple[int, ...] = ()) -> LSTMState:
        """`LSTMState(h, c)`, each zeros `[*batch_shape, S'*F]` (flat; `jrnn.initial_state` unflattens)."""
        shape = (*batch_shape, self.hidden_size)
        return LSTMState(jnp.zeros(shape, self.state_dtype), jnp.zeros(shape, self.state_dtype))

    def hidden(self, state: LSTMState) -> jax.Array:
        return state.h

    def _conv(self, a: jax.Array, shape: tuple[int, ...], kernel: jax.Array, recurrent: bool) -> jax.Array:
        """`a [..., prod(shape)]` as images `[N, *shape]`, convolved with `kernel`: `[N, *spatial', 4F]`.
        One convolution for all leading axes."""
        rank = len(self.spatial_shape)
        images = a.reshape(math.prod(a.shape[:-1]), *shape)
        ones = (1,) * rank
        return jax.lax.conv_general_dilated(
            images, kernel, window_strides=ones if recurrent else self.strides,
            padding="SAME" if recurrent else self.padding.upper(),
            rhs_dilation=ones if recurrent else self.dilation, dimension_numbers=_LAYOUTS[rank])

    def project(self, x: jax.Array) -> jax.Array:
        """`x [..., S*C] -> gx [..., S'*4F]`: the input convolution plus bias, one convolution over all
        leading axes (the `k*B` frames of a chunk)."""
        gx = self._conv(x.astype(self.dtype), self.input_shape, self.kernel, recurrent=False)
        if self.bias is not None:
            gx = gx + self.bias.reshape((1,) * (gx.ndim - 1) + (-1,))
        return gx.reshape(*x.shape[:-1], -1)

    def recur(self, gx: jax.Array, state: LSTMState,
              rec_mask: Optional[jax.Array] = None) -> tuple[jax.Array, LSTMState]:
        """One step from `gx [..., S'*4F]`: `(h', LSTMState(h', c'))`, each `[..., S'*F]`."""
        lead = gx.shape[:-1]
        h = self.masked(self.hidden(state), rec_mask)
        z = self._conv(h, self.state_shape, self.recurrent_kernel, recurrent=True)
        u = gx.reshape(z.shape) + z
        i, f, g, o = jnp.split(u, 4, axis=-1)
        c = state.c.astype(self.dtype).reshape(i.shape)
        c_new = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h_new = jax.nn.sigmoid(o) * jnp.tanh(c_new)
        h_new, c_new = (a.reshape(*lead, -1).astype(self.state_dtype) for a in (h_new, c_new))
        return h_new, LSTMState(h_new, c_new)
