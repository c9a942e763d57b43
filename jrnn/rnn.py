"""`initial_state`, `cell_apply` and `rnn_apply`: checks, layout, and the loop over time.

`rnn_apply` runs the cell in chunks of `k` steps: each chunk projects its inputs with one matrix
product of `k*B` rows, then takes its `k` recurrent steps unrolled on static slices; an outer
`lax.scan` walks the chunks. `unroll=1` is a plain scan (projection inside each step) and
`unroll=True` is a single chunk of all `T` steps (a Python loop, no scan).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from jrnn.cells.base import CellBase
from jrnn.cells.gru import GRU
from jrnn.cells.lstm import LSTM, LSTMState
from jrnn.cells.simple_rnn import SimpleRNN

Cell = Union[SimpleRNN, LSTM, GRU]
State = Any  # an array `[..., H]`, or an `LSTMState` of two


def _check_cell(params) -> None:
    if not isinstance(params, CellBase):
        raise TypeError(
            f"`params` must be jrnn cell params (SimpleRNN, LSTM, GRU); got {type(params).__name__}")


def _check_input(name: str, x, params: CellBase, min_ndim: int, layout: str) -> jax.Array:
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"`{name}` must be a floating array; got dtype {x.dtype}")
    if x.ndim < min_ndim or x.shape[-1] != params.input_size:
        raise ValueError(
            f"`{name}` must have shape {layout} with I = `input_size` (={params.input_size}); "
            f"got shape {tuple(x.shape)}")
    return x


def _check_state(name: str, h, params: CellBase, batch_shape: tuple[int, ...]) -> State:
    """Checks the structure and shapes of a state against the params and batch; casts its dtype."""
    want = params.zero_state(batch_shape)
    expected = f"shape {(*batch_shape, params.hidden_size)}"
    if isinstance(want, LSTMState):
        if not (isinstance(h, tuple) and len(h) == 2):
            raise TypeError(f"`{name}` of an LSTM must be an LSTMState(h, c), each of {expected}; "
                            f"got {type(h).__name__}")
        leaves = list(h)
    else:
        if isinstance(h, tuple) or not (hasattr(h, "shape") or isinstance(h, (list, np.ndarray))):
            raise TypeError(f"`{name}` of a {type(params).__name__} must be one array of {expected}; "
                            f"got {type(h).__name__}")
        leaves = [h]
    out = []
    for leaf in leaves:
        leaf = jnp.asarray(leaf)
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise TypeError(f"`{name}` must be floating; got dtype {leaf.dtype}")
        if tuple(leaf.shape) != (*batch_shape, params.hidden_size):
            shapes = [tuple(jnp.shape(v)) for v in leaves]
            raise ValueError(f"`{name}` must have {expected} (batch shape + `hidden_size`); "
                             f"got {shapes if len(shapes) > 1 else shapes[0]}")
        out.append(leaf.astype(params.state_dtype))
    return LSTMState(*out) if isinstance(want, LSTMState) else out[0]


def _check_unroll(unroll) -> Union[int, bool]:
    if isinstance(unroll, (bool, np.bool_)):
        return True if unroll else 1
    if isinstance(unroll, (int, np.integer)) and unroll >= 1:
        return int(unroll)
    raise ValueError(f"`unroll` must be a bool or a positive int; got {unroll!r}")


def _check_lengths(lengths, batch_shape: tuple[int, ...], T: int) -> jax.Array:
    if not hasattr(lengths, "dtype"):
        lengths = np.asarray(lengths)
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise TypeError(f"`lengths` must be an integer array; got dtype {lengths.dtype}")
    if tuple(lengths.shape) != tuple(batch_shape):
        raise ValueError(f"`lengths` must have the batch shape {tuple(batch_shape)}; "
                         f"got shape {tuple(lengths.shape)}")
    return jnp.clip(jnp.asarray(lengths), 0, T).astype(jnp.int32)


def initial_state(params: Cell, batch_shape: tuple[int, ...] = ()) -> State:
    """Zero state `[*batch_shape, H]`; for an LSTM, `LSTMState(h, c)` of two such arrays."""
    _check_cell(params)
    if isinstance(batch_shape, (int, np.integer)):
        batch_shape = (batch_shape,)
    if not (isinstance(batch_shape, tuple)
            and all(isinstance(d, (int, np.integer)) and d >= 0 for d in batch_shape)):
        raise ValueError(f"`batch_shape` must be a tuple of non-negative ints; got {batch_shape!r}")
    return params.zero_state(tuple(int(d) for d in batch_shape))


def cell_apply(params: Cell, x: jax.Array, h: State) -> tuple[jax.Array, State]:
    """One time step, like Keras' `out, h1 = cell(x, [h0])`.

    Args:
      params: cell params (`SimpleRNN`, `LSTM`, `GRU`).
      x: input `[..., I]` (any number of leading batch axes, or none).
      h: state `[..., H]` with the same batch axes (`LSTMState(h, c)` for an LSTM).

    Returns:
      `(out, h_new)`: `out [..., H]` is the new hidden state, `h_new` the new state.
    """
    _check_cell(params)
    x = _check_input("x", x, params, 1, "[..., I]")
    h = _check_state("h", h, params, tuple(x.shape[:-1]))
    return params.recur(params.project(x), h)


def rnn_apply(params: Cell, xs: jax.Array, h0: Optional[State] = None, *,
              unroll: Union[int, bool] = 1, reverse: bool = False, time_major: bool = False,
              lengths: Optional[jax.Array] = None) -> tuple[jax.Array, State]:
    """Runs a cell over a sequence.

    Args:
      params: cell params.
      xs: inputs `[..., T, I]`, or `[T, ..., I]` when `time_major`.
      h0: initial state `[..., H]` (`LSTMState` for an LSTM); None means zeros.
      unroll: 1 (or False) is a `lax.scan`; an int k takes k steps per scan iteration, their input
        projection one matrix product; True unrolls all T steps in Python (one big graph).
      reverse: run from the last step to the first; `ys` stays in the original time order.
      time_major: `xs` and `ys` are `[T, ..., *]` instead of `[..., T, *]`.
      lengths: int array of the batch shape, for right-padded sequences. Values are clipped to
        `[0, T]`. Outputs at steps `t >= length` are zero and the state stops changing after the
        last valid step; with `reverse`, only each sequence's valid part is reversed.

    Returns:
      `(ys, h_T)`: outputs `[..., T, H]` (layout as `xs`) and the final state.
    """
    _check_cell(params)
    layout = "[T, ..., I]" if time_major else "[..., T, I]"
    xs = _check_input("xs", xs, params, 2, layout)
    unroll = _check_unroll(unroll)
    if time_major:
        T, batch_shape = xs.shape[0], tuple(xs.shape[1:-1])
    else:
        T, batch_shape = xs.shape[-2], tuple(xs.shape[:-2])
        xs = jnp.moveaxis(xs, -2, 0)
    h0 = params.zero_state(batch_shape) if h0 is None else _check_state("h0", h0, params, batch_shape)
    if lengths is not None:
        lengths = _check_lengths(lengths, batch_shape, T).reshape(-1)

    B = math.prod(batch_shape)
    flat = lambda a: a.reshape(B, a.shape[-1])  # noqa: E731
    ys, h_T = _run(params, xs.reshape(T, B, params.input_size), jax.tree.map(flat, h0),
                   T if unroll is True else unroll, reverse, lengths)
    ys = ys.reshape(T, *batch_shape, params.hidden_size)
    h_T = jax.tree.map(lambda a: a.reshape(*batch_shape, a.shape[-1]), h_T)
    return (ys if time_major else jnp.moveaxis(ys, 0, -2)), h_T


def _run(params: Cell, xs: jax.Array, h0: State, k: int, reverse: bool,
         lengths: Optional[jax.Array]) -> tuple[jax.Array, State]:
    """The loop over time on flat `xs [T, B, I]`, `h0 [B, H]`, in chunks of `k` steps."""
    T = xs.shape[0]
    if T == 0:
        return jnp.zeros((0, xs.shape[1], params.hidden_size), params.state_dtype), h0
    k = min(k, T)
    n, r = divmod(T, k)

    def chunk(h, x_c, t_c):
        """`k'` steps on `x_c [k', B, I]` at times `t_c [k']`: one projection, unrolled steps."""
        gx = params.project(x_c)
        outs = [None] * x_c.shape[0]
        for j in (reversed(range(len(outs))) if reverse else range(len(outs))):
            out, h_new = params.recur(gx[j], h)
            if lengths is not None:
                valid = (t_c[j] < lengths)[:, None]
                h_new = jax.tree.map(functools.partial(jnp.where, valid), h_new, h)
                out = jnp.where(valid, out, jnp.zeros_like(out))
            h, outs[j] = h_new, out
        return h, jnp.stack(outs)

    ts = jnp.arange(T, dtype=jnp.int32)
    main = slice(r, T) if reverse else slice(0, n * k)  # the part the scan walks, n chunks of k
    rest = slice(0, r) if reverse else slice(n * k, T)  # the last r steps processed
    if n == 1:
        h, ys_main = chunk(h0, xs[main], ts[main])
    else:
        h, ys_main = jax.lax.scan(
            lambda h, c: chunk(h, *c), h0,
            (xs[main].reshape(n, k, *xs.shape[1:]), ts[main].reshape(n, k)), reverse=reverse)
        ys_main = ys_main.reshape(n * k, *ys_main.shape[2:])
    if r == 0:
        return ys_main, h
    h, ys_rest = chunk(h, xs[rest], ts[rest])
    return jnp.concatenate([ys_rest, ys_main] if reverse else [ys_main, ys_rest]), h
