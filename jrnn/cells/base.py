"""What every cell shares: argument checks for `init`, sizes read off the arrays, the state dtype."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

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


def lift(a: jnp.ndarray, ndim: int) -> jnp.ndarray:
    """`a [..., n]` with leading axes of size 1 up to `ndim` (explicit, so rank promotion can be strict)."""
    return a.reshape((1,) * (ndim - a.ndim) + a.shape)


class CellBase:
    """Mixin for the params dataclasses: sizes come from the arrays, so they are never out of sync."""

    gates: int = 1  # number of gate blocks G in `kernel [I, G*H]`
    # True where `recur` is `activate(gx, hidden(h) @ recurrent_kernel + recurrent_bias, h)` and
    # `activate` holds no weights: then `jrnn.fused` can take its gradient (see there).
    fused: bool = False
    additive: bool = False  # `activate(gx, z, h)` depends on `gx + z` only (then `z` may be None)
    recurrent_bias = None

    def hidden(self, state):
        """The part of the state that enters the recurrent matmul."""
        return state

    def recurrent(self, state, rec_mask=None):
        """`z = hidden(state) @ recurrent_kernel + recurrent_bias`, `rec_mask` (recurrent dropout)
        scaling the state where it enters the matmul."""
        z = self.masked(self.hidden(state), rec_mask) @ self.recurrent_kernel
        return z if self.recurrent_bias is None else z + lift(self.recurrent_bias, z.ndim)

    def recur(self, gx, state, rec_mask=None):
        """One step from the projected input `gx [..., G*H]`; returns `(out, new_state)`."""
        return self.activate(gx, self.recurrent(state, rec_mask), state)

    @property
    def input_size(self) -> int:
        return self.kernel.shape[-2]

    @property
    def hidden_size(self) -> int:
        return self.recurrent_kernel.shape[-2]

    @property
    def output_size(self) -> int:
        return self.recurrent_kernel.shape[-2]

    @property
    def dtype(self):
        return self.kernel.dtype

    @property
    def state_dtype(self):
        """The carried state stays at least float32 (bfloat16 params still carry a float32 state)."""
        dtype = jnp.dtype(self.kernel.dtype)
        return dtype if dtype.itemsize >= 4 else jnp.dtype(jnp.float32)

    @property
    def output_dtype(self):
        """The dtype of the outputs `ys` (the state's, unless a `readout` maps the state)."""
        return self.state_dtype

    has_readout = False  # True where `readout` is more than the identity (the LRU)

    def readout(self, out, x):
        """The output from the step's `out` and its input `x`, applied after the loop over time."""
        return out

    def zero_state(self, batch_shape: tuple[int, ...] = ()):
        """Zeros `[*batch_shape, H]` (an `LSTMState` of two for the LSTM)."""
        return jnp.zeros((*batch_shape, self.hidden_size), self.state_dtype)

    def masked(self, h: jnp.ndarray, rec_mask) -> jnp.ndarray:
        """`h` in the compute dtype, times the recurrent dropout mask when there is one."""
        h = h.astype(self.dtype)
        return h if rec_mask is None else h * rec_mask.astype(self.dtype)

    def project(self, x: jnp.ndarray) -> jnp.ndarray:
        """Input projection `x [..., I] -> gx [..., G*H]`: `x @ kernel` plus the input bias."""
        gx = x.astype(self.dtype) @ self.kernel
        bias = self.input_bias
        return gx if bias is None else gx + lift(bias, gx.ndim)

    @property
    def input_bias(self):
        return self.bias
