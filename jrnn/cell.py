"""`jrnn.Cell`: the interface every cell meets, built in or written by a user."""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import jax
import jax.numpy as jnp

State = Any  # a pytree of arrays, each `[..., F]` (an array, `LSTMState(h, c)`, a tuple or dict of arrays)


def lift(a: jax.Array, ndim: int) -> jax.Array:
    """`a [..., n]` with leading axes of size 1 up to `ndim` (explicit, so rank promotion can be strict)."""
    return a.reshape((1,) * (ndim - a.ndim) + a.shape)


class Cell:
    """Base of every cell's params: a pytree (a frozen dataclass registered with
    `jax.tree_util.register_dataclass`) whose arrays are the weights and whose static fields are settings.

    A cell is an input projection plus a recurrence:

        gx = cell.project(x)                  # x [..., I] -> gx [..., G]   once per chunk of steps
        out, state = cell.recur(gx, state)    # one step: out [..., F]     once per step

    `jrnn.cell_apply(cell, x, h)` is `out, h = cell.recur(cell.project(x), h)`, then `cell.readout(out, x)`;
    `jrnn.rnn_apply` projects each chunk of `k` steps with one call of `project` on `[k, B, I]`, runs
    `recur` step by step, and does everything else itself: lengths, reverse, resets, dropout on the
    inputs, remat, `Stack`, `Bidirectional`, `vmap`. A subclass defines:

    - `input_size`, `hidden_size` (ints, read off the arrays; `output_size` defaults to `hidden_size`);
    - either `project` and `recur`, or only `step(x, state) -> (out, new_state)`: then `project` is
      the identity and `recur` is `step` (no chunked projection, nothing else lost);
    - `zero_state(batch_shape)` when the state is not one array `[*batch_shape, hidden_size]`. Every
      leaf of a state is `[..., F]`: batch axes first, one feature axis last.

    The params' dtype (`dtype`, by default the first leaf's) is the compute dtype; the carried state is
    `state_dtype` (at least float32). `recur(gx, state, rec_mask)` gets the recurrent dropout mask
    `rec_mask [..., Hh]` or None; a cell that applies it to `hidden(state)` where that enters its
    recurrent matmul (see `masked`) declares `recurrent_dropout = True`.

    Capabilities, declared on the class (never probed), each unlocking a fast path:

    - `fused`: `recur(gx, h) = activate(gx, recurrent(h), h)`, with `recurrent(h) = hidden(h) @
      recurrent_kernel + recurrent_bias` and `activate(gx, z, h) -> (out, new_state)` elementwise and
      holding no weights. Unlocks jrnn's own derivative of the loop (`jrnn/derivative.py`): every
      transform still works, reverse mode with one matrix product per step and the weight gradients
      as one product each after the loop. `additive` adds that `activate` depends on `gx + z` only
      (it is then called as `activate(gx + z, None, h)`), which halves what is saved.
    - `linear`: `coefficients(gx) -> (a, b)` with `recur` the affine map `h -> a * h + b` (elementwise;
      one-array state). Unlocks `mode="chunked"`, `mode="parallel"` (`jax.lax.associative_scan`) and
      sequence parallelism (`rnn_apply(..., axis_name=...)`).
    - `has_readout`: `readout(out, x)` maps each step's `out` and input to the output; `rnn_apply`
      applies it after the loop, to all steps at once.

    A user cell is registered with `jrnn.register` for `jrnn.save`/`jrnn.load`. See
    `examples/custom_cell.py` for a peephole and a layer-normalised LSTM.
    """

    fused: ClassVar[bool] = False
    additive: ClassVar[bool] = False
    linear: ClassVar[bool] = False
    has_readout: ClassVar[bool] = False
    recurrent_dropout: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = lambda name: getattr(cls, name) is not getattr(Cell, name)  # noqa: E731
        if not (own("step") or own("recur") or cls.fused or cls.linear):
            raise TypeError(f"{cls.__name__} must define `step(x, state)`, or `project` and "
                            "`recur(gx, state, rec_mask=None)`")

    # --- sizes and dtypes -----------------------------------------------------------------------------
    @property
    def input_size(self) -> int:
        """`I`, the width of `x`."""
        raise NotImplementedError(f"{type(self).__name__} must define `input_size`")

    @property
    def hidden_size(self) -> int:
        """`H`, the width of the state (of each of its leaves by default)."""
        raise NotImplementedError(f"{type(self).__name__} must define `hidden_size`")

    @property
    def output_size(self) -> int:
        """`F`, the width of `out` (after `readout`)."""
        return self.hidden_size

    # --- the shapes users see at `rnn_apply`/`cell_apply`/`initial_state` -------------------------------
    # The loop sees one feature axis; a cell whose inputs, outputs or state have spatial axes (ConvLSTM)
    # takes them flat (`x [..., prod(input_shape)]`) and declares them here: `rnn_apply` flattens
    # `xs [..., T, *input_shape]` on entry and gives back `ys [..., T, *output_shape]` and state leaves
    # `[..., *state_shape]`.
    @property
    def input_shape(self) -> tuple[int, ...]:
        """The trailing axes of one step's input as users pass it: `(input_size,)` by default."""
        return (self.input_size,)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """The trailing axes of one step's output as users get it: `(output_size,)` by default."""
        return (self.output_size,)

    @property
    def state_shape(self) -> Optional[tuple[int, ...]]:
        """The trailing axes every state leaf has as users see it, or None (the default): each leaf
        keeps its one feature axis `[..., F]`."""
        return None

    @property
    def dtype(self):
        """The compute dtype: the params' (by default their first leaf's)."""
        return jax.tree.leaves(self)[0].dtype

    @property
    def state_dtype(self):
        """The carried state's dtype: at least float32 (bfloat16 params carry a float32 state)."""
        dtype = jnp.dtype(self.dtype)
        return dtype if dtype.itemsize >= 4 else jnp.dtype(jnp.float32)

    @property
    def output_dtype(self):
        """The dtype of the outputs `ys`."""
        return self.state_dtype

    def zero_state(self, batch_shape: tuple[int, ...] = ()) -> State:
        """The initial state: zeros `[*batch_shape, hidden_size]` in `state_dtype`."""
        return jnp.zeros((*batch_shape, self.hidden_size), self.state_dtype)

    # --- the step ---------------------------------------------------------------------------------------
    def project(self, x: jax.Array) -> jax.Array:
        """The input projection `x [..., I] -> gx [..., G]`, run once per chunk of steps on `[k, B, I]`.
        Must not depend on the time step. The default is the identity (a cell that defines `step`)."""
        return x

    def recur(self, gx: jax.Array, state: State,
              rec_mask: Optional[jax.Array] = None) -> tuple[jax.Array, State]:
        """One step from the projected input `gx [..., G]`: `(out [..., F], new_state)`."""
        if self.fused:
            return self.activate(*self.activate_inputs(gx, state, rec_mask), state)
        if self.linear:
            a, b = self.coefficients(gx)
            h = (a * state.astype(a.dtype) + b).astype(self.state_dtype)
            return h, h
        return self.step(gx, state)

    def step(self, x: jax.Array, state: State) -> tuple[jax.Array, State]:
        """One whole step `x [..., I] -> (out, new_state)`; by default `recur(project(x), state)`."""
        return self.recur(self.project(x), state)

    def hidden(self, state: State) -> jax.Array:
        """The part of the state that enters the recurrent matmul (`state.h` for an LSTM). Linear."""
        return state

    def masked(self, h: jax.Array, rec_mask: Optional[jax.Array]) -> jax.Array:
        """`h` in the compute dtype, times the recurrent dropout mask when there is one."""
        h = h.astype(self.dtype)
        return h if rec_mask is None else h * rec_mask.astype(self.dtype)

    def readout(self, out: jax.Array, x: jax.Array) -> jax.Array:
        """The output from a step's `out` and its input `x` (`has_readout` cells); the identity here."""
        return out

    # --- `fused` cells ----------------------------------------------------------------------------------
    recurrent_bias: Optional[jax.Array] = None

    def recurrent(self, state: State, rec_mask: Optional[jax.Array] = None) -> jax.Array:
        """`fused` cells: `z = masked(hidden(state), rec_mask) @ recurrent_kernel + recurrent_bias`."""
        z = self.masked(self.hidden(state), rec_mask) @ self.recurrent_kernel
        return z if self.recurrent_bias is None else z + lift(self.recurrent_bias, z.ndim)

    def activate_inputs(self, gx: jax.Array, state: State, rec_mask: Optional[jax.Array] = None) -> tuple:
        """`fused` cells: the arguments of `activate` besides the state, `(gx + z, None)` when `additive`,
        else `(gx, z)`."""
        z = self.recurrent(state, rec_mask)
        return (gx + z, None) if self.additive else (gx, z)

    def activate(self, gx: jax.Array, z: Optional[jax.Array], state: State) -> tuple[jax.Array, State]:
        """`fused` cells: the elementwise rest of the step after the recurrent matmul `z`."""
        raise NotImplementedError(f"{type(self).__name__} declares `fused` and must define `activate`")

    # --- `linear` cells ---------------------------------------------------------------------------------
    def coefficients(self, gx: jax.Array) -> tuple[jax.Array, jax.Array]:
        """`linear` cells: `(a, b)`, each `[..., H]`, of the step `h -> a * h + b`."""
        raise NotImplementedError(f"{type(self).__name__} declares `linear` and must define `coefficients`")

